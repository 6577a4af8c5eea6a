/* The install thread: read-ahead and prefetched pages that nobody waits for
 * are put in place by a second thread; the service thread does the
 * bookkeeping when they come back. What a program sees must not change:
 * the bytes, the dirty tracking, prefetch returning with the pages in. */
#include <criterion/criterion.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "tide.h"

static void require_two_cpus(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) < 2)
		cr_skip_test("one CPU: tide runs no install thread there");
}

static tide_pool *make_pool(size_t budget, size_t ps, bool install_thread)
{
	struct tide_options o;
	tide_pool *pool;

	test_require_writeback(TIDE_WRITEBACK_FIXED);
	tide_options_init(&o);
	o.budget = budget;
	o.page_size = ps;
	o.writeback = TIDE_WRITEBACK_FIXED;
	o.flush_interval_ms = 0;   /* pages are written when evicted, flushed or unmapped */
	o.install_thread = install_thread;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	return pool;
}

/* Stream through a file four times the budget, checking every word. */
static struct tide_stats stream(bool install_thread, size_t ps)
{
	size_t budget = 4 * MiB, len = 4 * budget, bad = 0;
	int fd = test_file(len, 11);
	tide_pool *pool = make_pool(budget, ps, install_thread);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	struct tide_stats st;

	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t i = 0; i < len / 8; i++)
		bad += p[i] != test_word(i, 11);
	st = test_stats(pool);
	cr_expect_eq(bad, 0, "%zu words differ from the file", bad);
	cr_expect_geq(st.fills, len / ps, "%llu fills for %zu pages", (unsigned long long)st.fills,
		      len / ps);
	cr_expect_gt(st.evictions, 0);
	cr_expect_leq(st.peak_resident_bytes, budget);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
	return st;
}

Test(installer, stream_reads_through_it)
{
	struct tide_stats st;

	require_two_cpus();
	st = stream(true, 4 * KiB);
	cr_expect_gt(st.fills_handed_off, st.fills / 2, "%llu of %llu fills handed off",
		     (unsigned long long)st.fills_handed_off, (unsigned long long)st.fills);
	cr_expect_leq(st.fills_handed_off, st.prefetched, "a demand fill was handed off");
	st = stream(true, 64 * KiB);
	cr_expect_gt(st.fills_handed_off, 0);
}

Test(installer, off_hands_nothing)
{
	struct tide_stats st = stream(false, 4 * KiB);

	cr_expect_eq(st.fills_handed_off, 0);
	cr_expect_gt(st.prefetched, 0, "the stream had no read-ahead to hand off");
}

/*
 * A reader's read-ahead is installed write-protected, and once its run is
 * going the app writes a few pages ahead of where it reads: those writes
 * meet pages the install thread may be putting in place, and must not be
 * lost. Every byte is checked in the file after unmap, through another file
 * description.
 */
static void write_ahead_of_reads(bool holes)
{
	size_t ps = 4 * KiB, budget = 4 * MiB, len = 8 * budget, words = ps / 8, bad = 0;
	int fd = test_file(len, holes ? 0 : 13), other;
	tide_pool *pool = make_pool(budget, ps, true);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	uint64_t *disk = malloc(len), sink = 0;
	struct tide_stats st;

	cr_assert_not_null(p, "%s", tide_last_error());
	cr_assert_not_null(disk);
	for (size_t pg = 0; pg < len / ps; pg++) {
		sink += ((volatile uint64_t *)p)[pg * words];
		if (pg >= 16 && pg % 3 == 0 && pg + 5 < len / ps)
			p[(pg + 5) * words + 1] = ~(uint64_t)pg;
	}
	st = test_stats(pool);
	cr_expect_gt(st.fills_handed_off, 0, "nothing was handed off: %llu fills, %llu ahead, %llu faults, %llu coalesced, %llu wp", (unsigned long long)st.fills, (unsigned long long)st.prefetched, (unsigned long long)st.faults, (unsigned long long)st.faults_coalesced, (unsigned long long)st.faults_wp);
	cr_expect_gt(st.evictions_dirty, 0);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	other = test_reopen(fd);
	test_pread(other, disk, len, 0);
	for (size_t i = 0; i < len / 8; i++) {
		size_t pg = i / words, w = i % words;
		uint64_t want = holes ? 0 : test_word(i, 13);

		if (w == 1 && pg >= 21 && (pg - 5) % 3 == 0)
			want = ~(uint64_t)(pg - 5);
		bad += disk[i] != want;
	}
	cr_expect_eq(bad, 0, "%zu words of the file are wrong", bad);
	(void)sink;
	close(other);
	close(fd);
	free(disk);
	tide_pool_destroy(pool);
}

Test(installer, writes_ahead_of_reads_reach_the_file)
{
	require_two_cpus();
	write_ahead_of_reads(false);
}

Test(installer, writes_ahead_of_reads_over_holes)
{
	require_two_cpus();
	write_ahead_of_reads(true);
}

/*
 * A sequential writer gets the pages ahead of it installed dirty, here by
 * the install thread: a flush waits for them (their region is busy until
 * they are back) and writes every one, although the app wrote only a few.
 */
Test(installer, writer_pages_ahead_are_dirty)
{
	size_t ps = 4 * KiB, budget = 4 * MiB, len = 4 * budget, words = ps / 8, written = 32;
	int fd = test_file(len, 0);
	tide_pool *pool;
	uint64_t *p;
	struct tide_stats a, b;

	require_two_cpus();
	pool = make_pool(budget, ps, true);
	p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t pg = 0; pg < written; pg++)
		p[pg * words] = pg + 1;
	a = test_stats(pool);
	cr_assert_eq(tide_flush(p, len), 0, "%s", tide_last_error());
	b = test_stats(pool);
	cr_expect_gt(b.fills_handed_off, 0, "the write-ahead was not handed off");
	cr_expect_gt(b.writebacks - a.writebacks, written, "%llu pages flushed for %zu written",
		     (unsigned long long)(b.writebacks - a.writebacks), written);
	cr_expect_eq(b.dirty_bytes, 0);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	tide_pool_destroy(pool);
	close(fd);
}

/* tide_prefetch returns once the pages are in, handed off or not: reading
 * the range afterwards takes no fault. */
Test(installer, prefetch_returns_with_the_pages_in)
{
	size_t ps = 4 * KiB, budget = 16 * MiB, len = 4 * MiB, bad = 0;
	int fd = test_file(len, 17);
	tide_pool *pool;
	uint64_t *p;
	struct tide_stats a, b;

	require_two_cpus();
	pool = make_pool(budget, ps, true);
	p = tide_map(pool, fd, 0, len, TIDE_PROT_READ, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	cr_assert_eq(tide_prefetch(p, len), 0, "%s", tide_last_error());
	a = test_stats(pool);
	for (size_t i = 0; i < len / 8; i++)
		bad += p[i] != test_word(i, 17);
	b = test_stats(pool);
	cr_expect_eq(bad, 0);
	cr_expect_gt(a.fills_handed_off, 0, "prefetch handed nothing off");
	cr_expect_eq(a.fills, len / ps);
	cr_expect_eq(b.faults, a.faults, "%llu faults after prefetch returned",
		     (unsigned long long)(b.faults - a.faults));
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	tide_pool_destroy(pool);
	close(fd);
}
