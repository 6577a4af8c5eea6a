/*
 * The sort behind `tide sort`: generate, sort and verify 64-bit keys with
 * several threads, on memory that may be paged (tide or a kernel mmap) or
 * plain. docs/sort.md explains why the algorithm has this shape.
 */
#ifndef TIDE_SORT_ALGO_H
#define TIDE_SORT_ALGO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli.h"

struct sort_job {
	uint64_t *data;          /* n keys; sorted in place */
	uint64_t *scratch;       /* n keys of the same kind of memory as data */
	size_t n;
	size_t run;              /* keys per initial run, sorted while resident */
	unsigned threads;
	struct cli_progress *progress;
};

/* Order-independent fingerprint of a multiset of keys. */
struct sort_sum {
	uint64_t sum;            /* sum of mix(key) */
	uint64_t xor;            /* xor of mix2(key) */
	uint64_t count;
};

/* Merge passes over runs of job->run keys that the sort will make. */
unsigned sort_merge_passes(const struct sort_job *job);

/* Fill data with keys from the seeded generator; *sum receives their fingerprint. */
int sort_generate(struct sort_job *job, uint64_t seed, struct sort_sum *sum);

/* Sort data in place, using scratch. Returns 0 or -errno (threads). */
int sort_keys(struct sort_job *job);

/* Count adjacent pairs out of order into *inversions and fingerprint the keys. */
int sort_verify(struct sort_job *job, uint64_t *inversions, struct sort_sum *sum);

#endif
