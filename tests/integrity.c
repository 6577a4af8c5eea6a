/* Integrity under eviction: threads read and write a region 8x the pool
 * through tide; after unmap the file holds exactly what the model says. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "tide.h"

#define THREADS 4

struct world {
	uint64_t *base;          /* the region */
	uint64_t *model;         /* what every word must hold */
	size_t page_words, npages;
	unsigned ops;
};

struct worker {
	struct world *w;
	unsigned id;
	uint64_t rng;
	unsigned mismatches;
};

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Each thread owns the pages p with p % THREADS == id, so the model needs no
 * lock; all threads still compete for the same pool. */
static void *work(void *arg)
{
	struct worker *k = arg;
	struct world *w = k->w;
	size_t mine = w->npages / THREADS;

	for (unsigned i = 0; i < w->ops; i++) {
		uint64_t r = next_rand(&k->rng);
		size_t page = (r % mine) * THREADS + k->id;
		size_t word = page * w->page_words + (r >> 32) % w->page_words;

		if (r & (1ull << 20)) {
			uint64_t v = next_rand(&k->rng);

			w->base[word] = v;
			w->model[word] = v;
		} else if (w->base[word] != w->model[word]) {
			k->mismatches++;
		}
	}
	return NULL;
}

static void run(size_t page_size, size_t budget, enum tide_writeback wb, unsigned ops)
{
	size_t length = 8 * budget + 4 * page_size;
	struct tide_options o;
	struct tide_stats st;
	struct world w = { 0 };
	struct worker k[THREADS];
	pthread_t t[THREADS];
	tide_pool *pool;
	uint64_t *disk;
	int fd, ret;

	test_require_writeback(wb);
	fd = test_file(length, 42);
	tide_options_init(&o);
	/* `budget` for each service thread (TIDE_SERVICE_THREADS in the
	 * environment splits it): the region is 8x what one of them starts with. */
	o.budget = budget * o.service_threads;
	o.page_size = page_size;
	o.writeback = wb;
	ret = tide_pool_create(&pool, &o);
	cr_assert_eq(ret, 0, "tide_pool_create: %s (%s)", strerror(-ret), tide_last_error());

	w.base = tide_map(pool, fd, 0, length, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(w.base, "tide_map: %s (%s)", strerror(errno), tide_last_error());
	w.model = malloc(length);
	cr_assert_not_null(w.model);
	for (size_t i = 0; i < length / 8; i++)
		w.model[i] = test_word(i, 42);
	w.page_words = page_size / 8;
	w.npages = length / page_size;
	w.ops = ops;

	for (unsigned i = 0; i < THREADS; i++) {
		k[i] = (struct worker){ .w = &w, .id = i, .rng = 0x1234567u * (i + 1) };
		cr_assert_eq(pthread_create(&t[i], NULL, work, &k[i]), 0);
	}
	for (unsigned i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(k[i].mismatches, 0, "thread %u read %u words that differ from the model",
			     i, k[i].mismatches);
	}

	cr_assert_eq(tide_pool_stats(pool, &st), 0);
	cr_expect_leq(st.peak_resident_bytes, o.budget, "peak resident %llu > budget %zu",
		      (unsigned long long)st.peak_resident_bytes, o.budget);
	cr_expect_gt(st.evictions, 0, "no page was evicted");
	cr_expect_gt(st.evictions_dirty, 0, "no dirty page was written back on eviction");
	cr_expect_eq(st.writeback, wb);
	cr_expect_eq(st.writeback_errors, 0);

	ret = tide_unmap(w.base);
	cr_assert_eq(ret, 0, "tide_unmap: %s (%s)", strerror(-ret), tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0);

	disk = malloc(length);
	cr_assert_not_null(disk);
	test_pread(fd, disk, length, 0);
	for (size_t i = 0; i < length / 8; i++)
		if (disk[i] != w.model[i])
			cr_assert_fail("file word %zu (page %zu) is %#llx, model says %#llx", i,
				       i / w.page_words, (unsigned long long)disk[i],
				       (unsigned long long)w.model[i]);
	free(disk);
	free(w.model);
	close(fd);
}

Test(integrity, fixed_4k) { run(4 * KiB, 1 * MiB, TIDE_WRITEBACK_FIXED, 6000); }
Test(integrity, direct_4k) { run(4 * KiB, 1 * MiB, TIDE_WRITEBACK_DIRECT, 6000); }
Test(integrity, fixed_64k) { run(64 * KiB, 4 * MiB, TIDE_WRITEBACK_FIXED, 6000); }
Test(integrity, direct_64k) { run(64 * KiB, 4 * MiB, TIDE_WRITEBACK_DIRECT, 6000); }
Test(integrity, fixed_2m) { run(2 * MiB, 8 * MiB, TIDE_WRITEBACK_FIXED, 1500); }
Test(integrity, direct_2m) { run(2 * MiB, 8 * MiB, TIDE_WRITEBACK_DIRECT, 1500); }
