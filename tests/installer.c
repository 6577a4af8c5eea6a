/*
 * The install thread (TIDE_INSTALL_THREAD, runtime/installer.c): read-ahead
 * pages put in place by a second thread while the service thread serves
 * faults. What a user must never see: a page with the wrong data, a write to
 * a page that went in this way lost (by eviction, flush or unmap), an unmap
 * that leaves while such a page is on its way, or the thread where it was
 * turned off.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"
#include "tide.h"

#define PS     (64 * KiB)
#define WORDS  (PS / 8)
#define SEED   0x1a57a11ull

static tide_pool *make_pool(size_t budget, int install_thread)
{
	struct tide_options o;
	tide_pool *pool;

	test_require_uffd();
	tide_options_init(&o);
	o.budget = budget;
	o.page_size = PS;
	o.install_thread = install_thread;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	if (install_thread && !test_stats(pool).install_thread) {
		tide_pool_destroy(pool);
		cr_skip_test("no install thread here: one allowed CPU, or TIDE_SIGNAL_FAULTS or "
			     "TIDE_SERVICE_THREADS > 1 in the environment");
	}
	return pool;
}

/* Read every word of a region sequentially; each must be the file's. */
static void scan_checks(const uint64_t *w, size_t len)
{
	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != test_word(i, SEED))
			cr_assert_fail("word %zu (page %zu): %#llx, want %#llx", i, i / WORDS,
				       (unsigned long long)w[i],
				       (unsigned long long)test_word(i, SEED));
}

static void scan(int install_thread, int prot)
{
	size_t len = 64 * MiB, budget = 16 * MiB;
	int fd = test_file(len, SEED);
	tide_pool *pool = make_pool(budget, install_thread);
	uint64_t *w = tide_map(pool, fd, 0, len, prot, 0);
	struct tide_stats st;

	cr_assert_not_null(w, "%s", tide_last_error());
	scan_checks(w, len);
	/* The app may have read pages the install thread put in before the
	 * service thread took their fills back: the snapshot waits for them. */
	st = test_stats(pool);
	cr_expect_geq(st.fills, len / PS, "a snapshot right after the scan missed fills");
	cr_assert_eq(tide_unmap(w), 0, "%s", tide_last_error());
	st = test_stats(pool);
	cr_expect_eq(st.read_errors, 0);
	cr_expect_leq(st.peak_resident_bytes, budget, "peak resident %llu > budget %zu",
		      (unsigned long long)st.peak_resident_bytes, budget);
	cr_expect_geq(st.fills, len / PS, "every page is filled at least once");
	if (install_thread) {
		cr_expect_eq(st.install_thread, 1);
		cr_expect_eq(test_threads_named("tide-install", NULL, 0), 1);
		/* A sequential scan is read ahead; the fills nobody waits for
		 * yet go in on the install thread. */
		cr_expect_gt(st.fills_offloaded, 0, "none of %llu fills (%llu read ahead) offloaded",
			     (unsigned long long)st.fills, (unsigned long long)st.prefetched);
		cr_log_info("%llu fills, %llu read ahead, %llu offloaded", (unsigned long long)st.fills,
			    (unsigned long long)st.prefetched, (unsigned long long)st.fills_offloaded);
		cr_expect_leq(st.fills_offloaded, st.prefetched, "only read-ahead is offloaded");
	} else {
		cr_expect_eq(st.install_thread, 0);
		cr_expect_eq(st.fills_offloaded, 0);
		cr_expect_eq(test_threads_named("tide-install", NULL, 0), 0);
	}
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	cr_expect_eq(test_threads_named("tide-install", NULL, 0), 0, "the thread outlived its pool");
	close(fd);
}

Test(installer, sequential_scan_reads_the_file)
{
	scan(1, TIDE_PROT_READ | TIDE_PROT_WRITE);
}

/* Pages of a read-only region go in without write protection. */
Test(installer, read_only_region)
{
	scan(1, TIDE_PROT_READ);
}

Test(installer, off_by_option)
{
	scan(0, TIDE_PROT_READ | TIDE_PROT_WRITE);
}

static uint64_t mark(size_t page)
{
	return test_word(page, 0x3a7c4ull) | 1;
}

/*
 * A sequential reader that writes a few pages ahead of itself: its writes
 * land on pages in every state of a read-ahead fill (being read, on their
 * way in on the install thread, just in), and the pool evicts behind it.
 * After unmap the file holds every write and nothing else changed.
 */
Test(installer, writes_ahead_of_a_scan_are_kept)
{
	size_t len = 48 * MiB, budget = 8 * MiB, pages = len / PS;
	int fd = test_file(len, SEED);
	tide_pool *pool = make_pool(budget, 1);
	uint64_t *w = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	volatile uint64_t sum = 0;
	uint64_t *buf;
	struct tide_stats st;
	int rfd;

	cr_assert_not_null(w, "%s", tide_last_error());
	for (size_t p = 0; p < pages; p++) {
		sum += w[p * WORDS];
		if (p + 3 < pages)
			w[(p + 3) * WORDS + 1] = mark(p + 3);
	}
	st = test_stats(pool);
	cr_expect_gt(st.fills_offloaded, 0);
	cr_expect_gt(st.evictions_dirty, 0, "the pool wrote pages back as it went");
	cr_expect_leq(st.peak_resident_bytes, budget);
	cr_assert_eq(tide_unmap(w), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());

	rfd = test_reopen(fd);
	buf = malloc(len);
	cr_assert_not_null(buf);
	test_pread(rfd, buf, len, 0);
	for (size_t i = 0; i < len / 8; i++) {
		size_t p = i / WORDS;
		uint64_t want = i % WORDS == 1 && p >= 3 ? mark(p) : test_word(i, SEED);

		if (buf[i] != want)
			cr_assert_fail("file word %zu (page %zu): %#llx, want %#llx", i, p,
				       (unsigned long long)buf[i], (unsigned long long)want);
	}
	free(buf);
	close(rfd);
	close(fd);
}

/*
 * tide_flush right after a write to a page read ahead moments before: the
 * write is in the file when the flush returns (msync), whichever thread
 * put the page in and whether or not the service thread had taken it back.
 */
Test(installer, flush_after_a_write_ahead_has_it)
{
	size_t len = 32 * MiB, pages = len / PS;
	int fd = test_file(len, SEED);
	int rfd = test_reopen(fd);
	tide_pool *pool = make_pool(64 * MiB, 1);
	uint64_t *w = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	volatile uint64_t sum = 0;

	cr_assert_not_null(w, "%s", tide_last_error());
	for (size_t p = 0; p + 2 < pages; p += 5) {
		uint64_t got;

		sum += w[p * WORDS];
		sum += w[(p + 1) * WORDS];
		w[(p + 2) * WORDS + 7] = mark(p);
		cr_assert_eq(tide_flush(&w[(p + 2) * WORDS], PS), 0, "%s", tide_last_error());
		test_pread(rfd, &got, sizeof(got), (off_t)((p + 2) * PS + 7 * 8));
		cr_assert_eq(got, mark(p), "page %zu: the flush returned without the write", p + 2);
	}
	cr_expect_gt(test_stats(pool).fills_offloaded, 0);
	cr_assert_eq(tide_unmap(w), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	close(rfd);
	close(fd);
}

/* Unmap while read-ahead is on its way in: it waits for the install
 * thread, and nothing of the region stays behind. */
Test(installer, unmap_while_pages_go_in)
{
	size_t len = 16 * MiB;
	int fd = test_file(len, SEED);
	tide_pool *pool = make_pool(32 * MiB, 1);
	uint64_t offloaded = 0;
	struct tide_stats st;

	for (int round = 0; round < 40; round++) {
		uint64_t *w = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);

		cr_assert_not_null(w, "%s", tide_last_error());
		/* A run of four faults starts read-ahead; unmap at once. */
		for (size_t p = 0; p < 4; p++)
			cr_assert_eq(w[p * WORDS + 3], test_word(p * WORDS + 3, SEED));
		cr_assert_eq(tide_unmap(w), 0, "round %d: %s", round, tide_last_error());
		st = test_stats(pool);
		cr_assert_eq(st.resident_bytes, 0, "round %d: %llu bytes left resident", round,
			     (unsigned long long)st.resident_bytes);
		cr_assert_eq(st.regions, 0);
		offloaded = st.fills_offloaded;
	}
	cr_expect_gt(offloaded, 0, "no read-ahead went in on the install thread");
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	close(fd);
}

/* Where the install thread does not apply, the pool says so and runs
 * without one: faults served on the faulting thread, and shards. */
Test(installer, none_with_signal_faults_or_shards)
{
	struct tide_options o;
	tide_pool *pool;
	char why[160];
	int ret;

	test_require_uffd();
	tide_options_init(&o);
	o.install_thread = 1;
	o.signal_faults = 1;
	o.service_threads = 1;
	cr_expect(!tide__installer_plan(&o, why, sizeof(why)));
	cr_expect(strstr(why, "TIDE_SIGNAL_FAULTS"), "%s", why);
	ret = tide_pool_create(&pool, &o);
	if (ret == 0) {
		cr_expect_eq(test_stats(pool).install_thread, 0);
		cr_expect_eq(test_threads_named("tide-install", NULL, 0), 0);
		cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	} else {
		cr_expect_eq(ret, -ENOSYS, "%s", tide_last_error());
	}

	o.signal_faults = 0;
	o.service_threads = 2;
	o.budget = 64 * MiB;
	cr_expect(!tide__installer_plan(&o, why, sizeof(why)));
	cr_expect(strstr(why, "TIDE_SERVICE_THREADS"), "%s", why);
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	cr_expect_eq(test_stats(pool).install_thread, 0);
	cr_expect_eq(test_threads_named("tide-install", NULL, 0), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());

	o.service_threads = 1;
	o.install_thread = 0;
	cr_expect(!tide__installer_plan(&o, why, sizeof(why)));
	cr_expect(strstr(why, "TIDE_INSTALL_THREAD=0"), "%s", why);
}
