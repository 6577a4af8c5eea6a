/* Helpers shared by the test files: scratch files, kernel probes, watchdogs. */
#ifndef TIDE_TEST_COMMON_H
#define TIDE_TEST_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tide.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

/* A scratch file of `size` bytes in $TIDE_TEST_DIR (default /var/tmp, a real
 * disk so O_DIRECT works), unlinked at once: only the fd keeps it. Filled with
 * test_word(off/8, seed) when seed != 0, zeros (sparse) otherwise.
 * Aborts the test on failure. */
int test_file(uint64_t size, uint64_t seed);

/* The word a seeded file holds at word index i. */
static inline uint64_t test_word(uint64_t i, uint64_t seed)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	return x ^ (x >> 29);
}

/* Skips the calling test with the reason when userfaultfd (with WP) cannot be used. */
void test_require_uffd(void);
/* Skip a test that counts keeper threads where none start: one CPU, or a
 * guest kernel that polls idle vCPUs itself (runtime/keeper.c). */
void test_require_keepers(void);
/* Skips unless a pool would keep idle CPUs polling by a CPU latency request
 * (root, a polling idle state on every CPU, the kernel not polling itself). */
void test_require_wake_qos(void);
/* The same, and for TIDE_WRITEBACK_DIRECT the start-up probe must call it
 * safe here (on 5.8 it hangs the service thread): skip with its reason. */
void test_require_writeback(enum tide_writeback wb);

/* The pool's counters, asserting the call works. */
struct tide_stats test_stats(tide_pool *pool);

/* Runs fn(arg) in a forked child. Returns the child's exit status (0..255),
 * 128+signal if it died of a signal, or -1 if it was still running after
 * timeout_ms (it is then killed). Never hangs. */
int test_in_child(void (*fn)(void *), void *arg, int timeout_ms);
/* The same in two steps, for a parent that works while the child runs. */
pid_t test_child_start(void (*fn)(void *), void *arg);
int test_child_wait(pid_t pid, int timeout_ms);

/* In a child that expects to die of `sig`: the default action, even under
 * AddressSanitizer, which otherwise reports the signal and exits. */
void test_default_signal(int sig);

/* A second, read-only open file description of fd's file, so checks read
 * the file itself and nothing the mapping holds. Aborts the test on failure. */
int test_reopen(int fd);

/* The entries of a directory such as /proc/self/fd or /proc/self/task
 * (with . and ..): a count to compare before and after. */
int test_dir_entries(const char *path);

/* pread the whole range or abort the test. */
void test_pread(int fd, void *buf, size_t len, off_t off);

/* A thread of this process, from /proc/self/task. */
struct test_thread {
	pid_t tid;
	char name[16];
	int cpu;                  /* the one CPU it may run on, -1 if several */
	unsigned long switches;   /* voluntary + involuntary context switches */
};

/* The threads whose name starts with `prefix`; fills s[] (at most max,
 * sorted by name) if not NULL. */
int test_threads_named(const char *prefix, struct test_thread *s, int max);

#endif
