/* Clean eviction and read-ahead, through the counters the runtime keeps:
 * sequential scans read ahead and drop in few calls, a random pattern does
 * not read ahead, and every byte read is the file's. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"
#include "tide.h"

#define BUDGET (4 * MiB)
#define LEN (32 * MiB)
#define SEED 0x5eedull

static tide_pool *pool;
static int fd = -1;
static uint64_t *map;

/* A 4 KiB-page pool of BUDGET over a seeded file of LEN, mapped with prot. */
static uint64_t *pool_and_map(int prot)
{
	struct tide_options o;
	uint64_t *m;

	test_require_uffd();
	tide_options_init(&o);
	o.budget = BUDGET;
	o.page_size = 4 * KiB;
	o.flush_interval_ms = 0;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	fd = test_file(LEN, SEED);
	m = tide_map(pool, fd, 0, LEN, prot, 0);
	cr_assert_not_null(m, "%s", tide_last_error());
	return m;
}

static void setup(void)
{
	map = pool_and_map(TIDE_PROT_READ);
}

static void teardown(void)
{
	if (map)
		cr_expect_eq(tide_unmap(map), 0, "%s", tide_last_error());
	if (pool)
		cr_expect_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	if (fd >= 0)
		close(fd);
}

static void read_page(uint64_t pg)
{
	uint64_t i = pg * 4 * KiB / 8;

	cr_assert_eq(map[i], test_word(i, SEED), "page %lu first word", (unsigned long)pg);
	cr_assert_eq(map[i + 511], test_word(i + 511, SEED), "page %lu last word",
		     (unsigned long)pg);
}

/* Does this kernel take MADV_DONTNEED through process_madvise for the
 * caller itself (6.13+)? Then random victims leave in one call per batch. */
static bool have_process_madvise_self(void)
{
	char *p = mmap(NULL, 8 * KiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0U);
	struct iovec iov[2] = { { p, 4 * KiB }, { p + 4 * KiB, 4 * KiB } };
	bool ok;

	cr_assert(p != MAP_FAILED);
	ok = pidfd >= 0 &&
	     syscall(SYS_process_madvise, pidfd, iov, (size_t)2, MADV_DONTNEED, 0U) == 8 * KiB;
	if (pidfd >= 0)
		close(pidfd);
	munmap(p, 8 * KiB);
	return ok;
}

Test(evict, sequential_reads_ahead_and_drops_in_runs, .init = setup, .fini = teardown)
{
	struct tide_stats s;

	for (uint64_t pg = 0; pg < LEN / (4 * KiB); pg++)
		read_page(pg);
	cr_assert_eq(tide_pool_stats(pool, &s), 0);
	cr_expect_leq(s.peak_resident_bytes, BUDGET);
	cr_expect_geq(s.evictions, (LEN - BUDGET) / (4 * KiB), "evictions %lu",
		      (unsigned long)s.evictions);
	/* Read-ahead fills most pages before the app asks for them. */
	cr_expect_geq(s.prefetched * 10, s.fills * 8, "prefetched %lu of %lu fills",
		      (unsigned long)s.prefetched, (unsigned long)s.fills);
	/* Pages read ahead arrive in runs, several per read. */
	cr_expect_leq(s.store_reads * 8, s.fills, "%lu reads for %lu fills",
		      (unsigned long)s.store_reads, (unsigned long)s.fills);
	/* Victims of a scan are adjacent: whole runs leave per call. */
	cr_expect_leq(s.drop_calls * 16, s.evictions, "%lu drop calls for %lu evictions",
		      (unsigned long)s.drop_calls, (unsigned long)s.evictions);
}

/* A run's window is topped up before the app reaches its end (the trigger
 * page half a window back, or the reads completing while the app waits on
 * them): after the first faults of the scan, no page is ever read on
 * demand. Without it every window ended in one (LEN / 1 MiB of them). */
Test(evict, sequential_scan_never_waits_on_a_demand_read, .init = setup, .fini = teardown)
{
	struct tide_stats s;

	for (uint64_t pg = 0; pg < LEN / (4 * KiB); pg++)
		read_page(pg);
	cr_assert_eq(tide_pool_stats(pool, &s), 0);
	cr_expect_leq(s.fills - s.prefetched, 4, "%lu pages read on demand in a scan of %lu",
		      (unsigned long)(s.fills - s.prefetched), (unsigned long)(LEN / (4 * KiB)));
	cr_expect_geq(s.fills, LEN / (4 * KiB));
}

/*
 * Scans that interleave in one region (a merge reading two runs, threads
 * each reading a slice) are each followed: four scans of a quarter of the
 * file, touched in turn, read ahead as one does. With one run per region
 * each touch ended the others' run and nearly every page was read on demand.
 */
Test(evict, interleaved_scans_each_read_ahead, .init = setup, .fini = teardown)
{
	const uint64_t quarter = LEN / (4 * KiB) / 4;
	struct tide_stats s;

	for (uint64_t i = 0; i < quarter; i++)
		for (uint64_t q = 0; q < 4; q++)
			read_page(q * quarter + i);
	cr_assert_eq(tide_pool_stats(pool, &s), 0);
	cr_expect_leq(s.peak_resident_bytes, BUDGET);
	cr_expect_geq(s.fills, LEN / (4 * KiB));
	/* A few demand reads per scan to start it, and the odd one where a
	 * window ran short of room: not a page in 100. */
	cr_expect_leq((s.fills - s.prefetched) * 100, s.fills,
		      "%lu pages read on demand in four interleaved scans of %lu",
		      (unsigned long)(s.fills - s.prefetched), (unsigned long)quarter);
	cr_expect_leq(s.store_reads * 8, s.fills, "%lu reads for %lu fills",
		      (unsigned long)s.store_reads, (unsigned long)s.fills);
}

/*
 * The trigger page itself: once a run's reads are in (tide_prefetch waits
 * for read-ahead in flight), exactly one page inside what was read is not
 * mapped. The first touch of it, a write here, is served from bounce memory,
 * not read on demand, and the written byte reaches the file.
 */
Test(evict, the_trigger_page_waits_outside_the_page_table, .fini = teardown)
{
	size_t ps = 4 * KiB, npages = LEN / ps, hole = 0, holes = 0, end = 0;
	unsigned char *in = malloc(npages);
	struct tide_stats a, b;
	uint64_t word, *disk = malloc(ps);

	map = pool_and_map(TIDE_PROT_READ | TIDE_PROT_WRITE);
	cr_assert(in && disk);
	for (uint64_t pg = 0; pg < 3; pg++)
		read_page(pg);
	cr_assert_eq(tide_prefetch(map, ps), 0, "%s", tide_last_error());
	cr_assert_eq(mincore(map, LEN, in), 0);
	for (size_t pg = 0; pg < npages; pg++)
		if (in[pg] & 1)
			end = pg + 1;
	for (size_t pg = 0; pg < end; pg++)
		if (!(in[pg] & 1)) {
			hole = pg;
			holes++;
		}
	cr_assert_eq(holes, 1, "%zu pages missing among the %zu read ahead", holes, end);
	cr_expect_gt(end, 3 + 64, "the run read %zu pages", end);
	a = test_stats(pool);
	word = hole * ps / 8;
	map[word] = ~test_word(word, SEED);
	b = test_stats(pool);
	cr_expect_eq(b.faults, a.faults + 1);
	/* Its data came with the run: no page was read on demand (the top-up
	 * the fault started reads ahead). */
	cr_expect_eq(b.fills - b.prefetched, a.fills - a.prefetched, "the trigger page was read again");
	cr_expect_eq(map[word + 1], test_word(word + 1, SEED));
	cr_assert_eq(tide_unmap(map), 0, "%s", tide_last_error());
	map = NULL;
	/* Nothing in flight after the unmap: no bounce memory stays taken (a
	 * later trigger page of the run was staged when it went). */
	cr_expect_eq(pool->bounce.used, 0, "%zu bounce units still taken", pool->bounce.used);
	test_pread(fd, disk, ps, (off_t)(hole * ps));
	cr_expect_eq(disk[0], ~test_word(word, SEED), "the write to the trigger page was lost");
	for (size_t i = 1; i < ps / 8; i++)
		cr_assert_eq(disk[i], test_word(word + i, SEED), "word %zu of the trigger page", i);
	free(in);
	free(disk);
}

/* tide_prefetch maps every page of its range, a run's trigger page too. */
Test(evict, prefetch_maps_the_trigger_page, .init = setup, .fini = teardown)
{
	size_t ps = 4 * KiB, len = 2 * MiB, missing = 0;
	unsigned char in[2 * MiB / (4 * KiB)];

	for (uint64_t pg = 0; pg < 3; pg++)
		read_page(pg);
	cr_assert_eq(tide_prefetch(map, len), 0, "%s", tide_last_error());
	cr_assert_eq(mincore(map, len, in), 0);
	for (size_t pg = 0; pg < len / ps; pg++)
		missing += !(in[pg] & 1);
	cr_expect_eq(missing, 0, "%zu pages of the prefetched range not mapped", missing);
}

Test(evict, random_pays_no_read_ahead, .init = setup, .fini = teardown)
{
	uint64_t x = 88172645463325252ull, npages = LEN / (4 * KiB);
	struct tide_stats s;

	for (int i = 0; i < 8192; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		read_page(x % npages);
	}
	cr_assert_eq(tide_pool_stats(pool, &s), 0);
	cr_expect_gt(s.evictions, 0);
	cr_expect_leq(s.prefetched * 50, s.fills, "random reads prefetched %lu of %lu fills",
		      (unsigned long)s.prefetched, (unsigned long)s.fills);
	cr_expect_geq(s.store_reads * 10, s.fills * 9, "random fills are single-page reads");
	if (!have_process_madvise_self())
		cr_skip("process_madvise(MADV_DONTNEED) on self is not available here: "
			"random victims leave one madvise each");
	cr_expect_leq(s.drop_calls * 16, s.evictions, "%lu drop calls for %lu evictions",
		      (unsigned long)s.drop_calls, (unsigned long)s.evictions);
}

/* A sequential writer gets its pages ahead installed writable: no
 * write-protect fault per page, and every byte reaches the file. */
Test(evict, sequential_writes_fill_ahead_writable, .fini = teardown)
{
	struct tide_stats s;
	uint64_t *w = pool_and_map(TIDE_PROT_READ | TIDE_PROT_WRITE), *disk = malloc(LEN);
	uint64_t npages = LEN / (4 * KiB);

	cr_assert_not_null(disk);
	for (uint64_t i = 0; i < LEN / 8; i += 256)
		w[i] = ~test_word(i, SEED);
	cr_assert_eq(tide_pool_stats(pool, &s), 0);
	cr_expect_leq(s.faults_wp * 10, npages, "%lu write-protect faults for %lu pages",
		      (unsigned long)s.faults_wp, (unsigned long)npages);
	cr_expect_geq(s.prefetched * 10, s.fills * 8);
	/* A sequential writer's fills arrive in runs, several pages a read. */
	cr_expect_leq(s.store_reads * 4, s.fills, "%lu reads for %lu fills",
		      (unsigned long)s.store_reads, (unsigned long)s.fills);
	cr_expect_gt(s.evictions_dirty, 0);
	cr_assert_eq(tide_unmap(w), 0, "%s", tide_last_error());
	test_pread(fd, disk, LEN, 0);
	for (uint64_t i = 0; i < LEN / 8; i++)
		if (disk[i] != (i % 256 ? test_word(i, SEED) : ~test_word(i, SEED)))
			cr_assert_fail("word %lu of the file is wrong after unmap", (unsigned long)i);
	free(disk);
}
