/* Flush durability: what was written and flushed is in the file, read
 * through another open file description, and the pages stay resident. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "tide.h"

static tide_pool *make_pool(enum tide_writeback wb, size_t ps)
{
	struct tide_options o;
	tide_pool *pool;
	int ret;

	test_require_writeback(wb);
	tide_options_init(&o);
	/* Four pages, at least 4 MiB, for each service thread (TIDE_SERVICE_THREADS
	 * in the environment splits the budget). */
	o.budget = (ps * 4 > 4 * MiB ? ps * 4 : 4 * MiB) * o.service_threads;
	o.page_size = ps;
	o.writeback = wb;
	o.flush_interval_ms = 0;   /* only the flushes under test write */
	ret = tide_pool_create(&pool, &o);
	cr_assert_eq(ret, 0, "%s", tide_last_error());
	return pool;
}

static void durable(enum tide_writeback wb, size_t ps)
{
	size_t len = 2 * MiB;
	int fd = test_file(len, 7), other;
	tide_pool *pool = make_pool(wb, ps);
	struct tide_stats before, after;
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	uint64_t *disk = malloc(len);

	cr_assert_not_null(p, "%s", tide_last_error());
	other = test_reopen(fd);
	/* Dirty every other page with words the file never held. */
	for (size_t pg = 0; pg < len / ps; pg += 2)
		for (size_t i = 0; i < ps / 8; i += 64)
			p[pg * ps / 8 + i] = ~test_word(pg * ps / 8 + i, 7);
	cr_assert_eq(tide_pool_stats(pool, &before), 0);
	cr_assert_eq(tide_flush(p, len), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_stats(pool, &after), 0);
	cr_expect_eq(after.evictions, before.evictions, "flush evicted pages");
	cr_expect_eq(after.resident_bytes, before.resident_bytes, "flush changed residency");
	cr_expect_eq(after.dirty_bytes, 0, "dirty bytes left after flush");
	cr_expect_gt(after.flushes, before.flushes, "no fdatasync was issued");
	cr_expect_geq(after.writebacks - before.writebacks, len / ps / 2);

	test_pread(other, disk, len, 0);
	for (size_t i = 0; i < len / 8; i++) {
		size_t pg = i * 8 / ps;
		uint64_t want = (pg % 2 == 0 && (i % (ps / 8)) % 64 == 0) ? ~test_word(i, 7) : test_word(i, 7);

		if (disk[i] != want)
			cr_assert_fail("word %zu of page %zu: file %#llx, want %#llx", i, pg,
				       (unsigned long long)disk[i], (unsigned long long)want);
	}

	/* A clean page is protected again: a new write is seen and flushed too. */
	p[1] = 0x5eed;
	cr_assert_eq(tide_flush(p, ps), 0);
	test_pread(other, disk, 16, 0);
	cr_expect_eq(disk[1], 0x5eed, "second write after a flush did not reach the file");

	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	free(disk);
	close(other);
	close(fd);
}

Test(flush, fixed_4k) { durable(TIDE_WRITEBACK_FIXED, 4 * KiB); }
Test(flush, direct_4k) { durable(TIDE_WRITEBACK_DIRECT, 4 * KiB); }
Test(flush, fixed_64k) { durable(TIDE_WRITEBACK_FIXED, 64 * KiB); }
Test(flush, direct_2m) { durable(TIDE_WRITEBACK_DIRECT, 2 * MiB); }

Test(flush, range_only)
{
	size_t ps = 4 * KiB;
	int fd = test_file(1 * MiB, 3), other;
	tide_pool *pool = make_pool(TIDE_WRITEBACK_FIXED, ps);
	uint64_t *p = tide_map(pool, fd, 0, 1 * MiB, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	uint64_t w;

	cr_assert_not_null(p);
	other = test_reopen(fd);
	p[0] = 1;             /* page 0 */
	p[ps / 8 * 10] = 2;   /* page 10 */
	cr_assert_eq(tide_flush(p, ps), 0);
	test_pread(other, &w, 8, 0);
	cr_expect_eq(w, 1);
	test_pread(other, &w, 8, 10 * ps);
	cr_expect_eq(w, test_word(ps / 8 * 10, 3), "a page outside the flushed range was written");
	cr_assert_eq(tide_unmap(p), 0);
	test_pread(other, &w, 8, 10 * ps);
	cr_expect_eq(w, 2, "unmap did not write the last dirty page");
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(other);
	close(fd);
}

Test(flush, prefetch_fills_without_faults)
{
	size_t ps = 64 * KiB, len = 2 * MiB;
	int fd = test_file(len, 5);
	tide_pool *pool = make_pool(TIDE_WRITEBACK_FIXED, ps);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ, 0);
	struct tide_stats st;
	uint64_t sum = 0, want = 0;

	cr_assert_not_null(p);
	cr_assert_eq(tide_prefetch(p, len), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_stats(pool, &st), 0);
	cr_expect_eq(st.fills, len / ps);
	cr_expect_eq(st.prefetched, len / ps);
	for (size_t i = 0; i < len / 8; i++) {
		sum += p[i];
		want += test_word(i, 5);
	}
	cr_expect_eq(sum, want);
	cr_assert_eq(tide_pool_stats(pool, &st), 0);
	cr_expect_eq(st.faults, 0, "%llu faults after prefetch", (unsigned long long)st.faults);
	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
}
