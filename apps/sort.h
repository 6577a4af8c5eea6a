/* tide sort: the run's settings and measurements, shared by sort.c and sort_report.c. */
#ifndef TIDE_SORT_H
#define TIDE_SORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>

#include "sort_algo.h"
#include "tide.h"

enum backend { BACKEND_TIDE, BACKEND_MMAP, BACKEND_MEMORY, BACKEND_COUNT };
extern const char *const sort_backend_names[];

enum phase { PH_GENERATE, PH_SORT, PH_VERIFY, PH_WRITEBACK, PH_CLEANUP, PH_COUNT };
extern const char *const sort_phase_names[], *const sort_phase_keys[];

struct sort_args {
	uint64_t size, pool, page_size, seed;
	unsigned threads;
	enum tide_writeback writeback;
	enum backend backend;
	const char *file;
	bool signal_faults;      /* the sorting threads serve their own faults */
	bool keep, json, pool_set, page_size_set, writeback_set;
	bool signal_faults_set;  /* chosen by --signal-faults or TIDE_SIGNAL_FAULTS, not by default */
};

/* What the run used and measured. */
struct sort_run {
	struct sort_args a;
	char path[4096];
	int fd, scratch_fd;
	bool created;            /* we created the data file (and may remove it) */
	bool written;            /* the data file's contents have been replaced */
	uint64_t *data, *scratch;
	tide_pool *pool;
	size_t run_bytes;
	unsigned merges;
	uint64_t phase_ns[PH_COUNT];
	struct sort_sum before, after;
	uint64_t inversions;
	struct tide_stats ts;
	bool have_tide_stats;
	uint64_t io_read0, io_write0, io_read, io_write;
	struct rusage ru0, ru;
	uint64_t vm_hwm;
};

/* Print the summary (text, or JSON with --json). Returns the exit status:
 * 0 when the data is sorted and its fingerprint unchanged, else 1. */
int sort_report(const struct sort_run *r);

#endif
