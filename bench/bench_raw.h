/*
 * bench_raw's shared parts: the settings of a run, the data file, and the
 * minimal uffd handler that the round-trip tests (bench_raw.c) and the
 * dirty-tracking test (raw_wpasync.c) both use; the tests in the other
 * raw_*.c files.
 */
#ifndef TIDE_BENCH_RAW_H
#define TIDE_BENCH_RAW_H

#include <pthread.h>
#include <stdbool.h>

#include "bench_util.h"
#include "uffd.h"

extern double secs;              /* per measurement */
extern const char *file;         /* --file: the data file */
extern uint64_t file_size;       /* its size (open_file), or --size for mkfile */
extern uint64_t budget;          /* --budget */

/* --file opened with `flags`; file_size becomes its size. Dies without it. */
int open_file(int flags);

/* The handler serves every fault of its uffd until it has served the one on
 * its stop page: a blocking read() cannot be interrupted otherwise, and a
 * flag alone would let a polling handler leave a fault unserved. */
struct handler {
	int uffd;
	int cpu;                 /* -1: unpinned */
	bool poll;               /* busy-poll a non-blocking uffd */
	size_t page;
	char *src;               /* the bytes every fill copies */
	char *stop_page;
	/* The "minimal pager" variant: read the page from --file (page cache)
	 * first, and keep at most `keep` pages resident, dropping the oldest
	 * with MADV_DONTNEED, as a pool at its budget must on every fill. */
	int fd;
	char *stage;             /* pager_move: pread lands here, UFFDIO_MOVE takes it */
	size_t keep, kept, oldest;   /* oldest: next slot of the FIFO to reuse */
	char **resident;
	pthread_t thread;
};

/* Serve faults of a new uffd on `cpu` (-1: unpinned) until handler_stop. */
void handler_start(struct handler *h, int cpu, bool poll, size_t page);
void handler_stop(struct handler *h);

void test_wpasync(void);  /* raw_wpasync.c */
void test_uring(void);    /* raw_uring.c */
void test_uringw(void);
void test_uringwf(void);
void test_mmap(void);     /* raw_mmap.c */
void test_share(void);    /* raw_share.c */

#endif /* TIDE_BENCH_RAW_H */
