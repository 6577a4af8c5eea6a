/* Write-back coalescing: adjacent dirty pages leave in one store write of at
 * most TIDE_WRITE_MAX bytes, and every page of a run keeps its own fate. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"

static tide_pool *make_pool(enum tide_writeback wb, size_t ps, size_t budget, size_t write_max)
{
	struct tide_options o;
	tide_pool *pool;

	test_require_writeback(wb);
	tide_options_init(&o);
	o.budget = budget;
	o.page_size = ps;
	o.writeback = wb;
	o.write_max = write_max;
	o.flush_interval_ms = 0;   /* only what a test asks for is written */
	/* The counts below are exact for the pages a test dirties; read-ahead
	 * of a sequential writer would dirty pages ahead too (tests/evict.c). */
	o.read_ahead = 0;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	return pool;
}

/* What a page written by the tests holds: words no seeded file holds. */
static uint64_t dirty_word(size_t i)
{
	return ~test_word(i, 7);
}

static void dirty_pages(uint64_t *p, size_t ps, size_t first, size_t end)
{
	for (size_t i = first * ps / 8; i < end * ps / 8; i++)
		p[i] = dirty_word(i);
}

/* The file, read through another open file description, holds dirty_word
 * in the pages [first, end) and the seed's words elsewhere. */
static void expect_file(int fd, size_t len, size_t ps, const bool *dirty, uint64_t seed)
{
	uint64_t *disk = malloc(len);
	int other = test_reopen(fd);

	cr_assert_not_null(disk);
	test_pread(other, disk, len, 0);
	for (size_t i = 0; i < len / 8; i++) {
		uint64_t want = dirty[i * 8 / ps] ? dirty_word(i) : test_word(i, seed);

		if (disk[i] != want)
			cr_assert_fail("word %zu (page %zu): file %#llx, want %#llx", i, i * 8 / ps,
				       (unsigned long long)disk[i], (unsigned long long)want);
	}
	close(other);
	free(disk);
}

struct flush_case {
	enum tide_writeback wb;
	size_t write_max;
	uint64_t writes;         /* store writes 64 dirty 4 KiB pages take */
};

ParameterizedTestParameters(writeback, flush_contiguous)
{
	static struct flush_case cases[] = {
		{ TIDE_WRITEBACK_FIXED, 64 * KiB, 4 },
		{ TIDE_WRITEBACK_DIRECT, 64 * KiB, 4 },
		{ TIDE_WRITEBACK_FIXED, 1 * MiB, 1 },
		{ TIDE_WRITEBACK_DIRECT, 1 * MiB, 1 },
		{ TIDE_WRITEBACK_DIRECT, 16 * KiB, 16 },
		{ TIDE_WRITEBACK_FIXED, 4 * KiB, 64 },
		{ TIDE_WRITEBACK_FIXED, 12 * KiB, 22 },  /* 21 runs of 3 pages and one of 1 */
	};
	return cr_make_param_array(struct flush_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* 64 contiguous dirty pages (256 KiB) leave in 256 KiB / write_max writes. */
ParameterizedTest(struct flush_case *c, writeback, flush_contiguous)
{
	size_t ps = 4 * KiB, len = 1 * MiB, npages = 64;
	int fd = test_file(len, 7);
	tide_pool *pool = make_pool(c->wb, ps, 4 * MiB, c->write_max);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	struct tide_stats a, b;
	bool dirty[256] = { 0 };

	cr_assert_not_null(p, "%s", tide_last_error());
	dirty_pages(p, ps, 0, npages);
	for (size_t i = 0; i < npages; i++)
		dirty[i] = true;
	a = test_stats(pool);
	cr_assert_eq(a.dirty_bytes, npages * ps);
	cr_assert_eq(tide_flush(p, len), 0, "%s", tide_last_error());
	b = test_stats(pool);
	cr_expect_eq(b.store_writes - a.store_writes, c->writes, "%llu store writes, want %llu",
		     (unsigned long long)(b.store_writes - a.store_writes),
		     (unsigned long long)c->writes);
	cr_expect_eq(b.writebacks - a.writebacks, npages, "writebacks count pages");
	cr_expect_eq(b.bytes_written - a.bytes_written, npages * ps);
	cr_expect_eq(b.dirty_bytes, 0);
	cr_expect_eq(b.writeback_errors, 0);
	cr_expect_eq(b.resident_bytes, a.resident_bytes, "flush changed residency");
	expect_file(fd, len, ps, dirty, 7);

	/* Clean and protected again: a new write is seen, and leaves alone. */
	p[3 * ps / 8] = dirty_word(3 * ps / 8);
	cr_assert_eq(tide_flush(p, len), 0);
	cr_expect_eq(test_stats(pool).store_writes - b.store_writes, 1);
	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
}

/* A page larger than TIDE_WRITE_MAX still leaves whole, one per write. */
Test(writeback, page_larger_than_write_max)
{
	size_t ps = 64 * KiB, len = 1 * MiB, npages = 8;
	int fd = test_file(len, 7);
	tide_pool *pool = make_pool(TIDE_WRITEBACK_FIXED, ps, 4 * MiB, 16 * KiB);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	struct tide_stats a, b;
	bool dirty[16] = { 0 };

	cr_assert_not_null(p, "%s", tide_last_error());
	dirty_pages(p, ps, 0, npages);
	for (size_t i = 0; i < npages; i++)
		dirty[i] = true;
	a = test_stats(pool);
	cr_assert_eq(tide_flush(p, len), 0, "%s", tide_last_error());
	b = test_stats(pool);
	cr_expect_eq(b.store_writes - a.store_writes, npages);
	cr_expect_eq(b.writebacks - a.writebacks, npages);
	expect_file(fd, len, ps, dirty, 7);
	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
}

/* The bounce arena gives a run the span it asks for, else the longest free
 * span at a multiple of the page size, else nothing. Write-back starts in
 * the upper (plain) half, fills in the lower (huge-page) half. */
Test(writeback, bounce_span_falls_back)
{
	struct tide__bounce b;
	char *whole, *one, *rest, *tail;
	size_t len = 0;

	cr_assert_eq(tide__bounce_init(&b, 4 * MiB), 0);
	cr_expect_eq(b.split * b.unit, 2 * MiB);
	whole = tide__bounce_get_span(&b, 4 * KiB, 1 * MiB, &len);
	cr_expect_eq(whole, b.base + 2 * MiB, "write-back not from the plain half");
	cr_expect_eq(len, 1 * MiB);
	one = tide__bounce_get(&b, 4 * KiB);
	cr_expect_eq(one, b.base, "a fill not from the huge-page half");
	/* Free: [4K, 2M) and [3M, 4M). */
	rest = tide__bounce_get_span(&b, 4 * KiB, 8 * MiB, &len);
	cr_expect_eq(rest, b.base + 4 * KiB, "not the longest free span");
	cr_expect_eq(len, 2 * MiB - 4 * KiB);
	tail = tide__bounce_get_span(&b, 4 * KiB, 8 * MiB, &len);
	cr_expect_eq(tail, b.base + 3 * MiB);
	cr_expect_eq(len, 1 * MiB);
	cr_expect_null(tide__bounce_get_span(&b, 4 * KiB, 4 * KiB, &len), "the arena is full");
	tide__bounce_put(&b, whole, 1 * MiB);
	tide__bounce_put(&b, rest, 2 * MiB - 4 * KiB);
	tide__bounce_put(&b, tail, 1 * MiB);

	/* 64 KiB pages start at a multiple of 64 KiB: past the 4 KiB page at
	 * the start, the whole rest, across the middle, from 64 KiB on. */
	rest = tide__bounce_get_span(&b, 64 * KiB, 4 * MiB, &len);
	cr_expect_eq(rest, b.base + 64 * KiB);
	cr_expect_eq(len, 4 * MiB - 64 * KiB);
	cr_expect_null(tide__bounce_get_span(&b, 64 * KiB, 64 * KiB, &len),
		       "15 free 4 KiB units hold no 64 KiB page");
	tide__bounce_put(&b, one, 4 * KiB);
	tide__bounce_put(&b, rest, 4 * MiB - 64 * KiB);
	cr_expect_eq(b.used, 0);
	tide__bounce_fini(&b);
}

/* A run longer than the bounce arena leaves in arena-sized writes on the
 * fixed path; the direct path needs no arena and writes it whole. */
ParameterizedTestParameters(writeback, run_longer_than_bounce)
{
	static enum tide_writeback paths[] = { TIDE_WRITEBACK_FIXED, TIDE_WRITEBACK_DIRECT };

	return cr_make_param_array(enum tide_writeback, paths, 2);
}

ParameterizedTest(enum tide_writeback *wb, writeback, run_longer_than_bounce)
{
	size_t ps = 4 * KiB, len = 8 * MiB, npages = len / ps;
	int fd = test_file(len, 7);
	struct tide_options o;
	tide_pool *pool;
	uint64_t *p;
	struct tide_stats a, b;
	bool *dirty = malloc(npages);

	test_require_writeback(*wb);
	tide_options_init(&o);
	o.budget = 16 * MiB;
	o.bounce = 4 * MiB;
	o.service_threads = 1;   /* the subject is one arena of this size */
	o.page_size = ps;
	o.writeback = *wb;
	o.write_max = len;
	o.flush_interval_ms = 0;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	cr_assert_not_null(dirty);
	dirty_pages(p, ps, 0, npages);
	memset(dirty, 1, npages);
	a = test_stats(pool);
	cr_assert_eq(a.bounce_bytes, 4 * MiB);
	cr_assert_eq(tide_flush(p, len), 0, "%s", tide_last_error());
	b = test_stats(pool);
	/* No fill is in flight once every page has been written, so each fixed
	 * run gets the whole arena. */
	cr_expect_eq(b.store_writes - a.store_writes, *wb == TIDE_WRITEBACK_FIXED ? 2 : 1);
	cr_expect_eq(b.writebacks - a.writebacks, npages);
	expect_file(fd, len, ps, dirty, 7);
	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	free(dirty);
	close(fd);
}

/* A clean resident page, or a page never touched, ends a run. */
Test(writeback, run_split_by_clean_page)
{
	size_t ps = 4 * KiB, len = 1 * MiB;
	int fd = test_file(len, 7);
	tide_pool *pool = make_pool(TIDE_WRITEBACK_FIXED, ps, 4 * MiB, 1 * MiB);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	volatile uint64_t sink = 0;
	struct tide_stats a, b;
	bool dirty[256] = { 0 };

	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t pg = 0; pg < 32; pg++)       /* resident and clean */
		sink += p[pg * ps / 8];
	(void)sink;
	dirty_pages(p, ps, 0, 10);               /* page 10 stays clean */
	dirty_pages(p, ps, 11, 20);
	dirty_pages(p, ps, 100, 105);            /* page 105 is never touched */
	dirty_pages(p, ps, 106, 110);
	for (size_t pg = 0; pg < 256; pg++)
		dirty[pg] = pg < 20 ? pg != 10 : (pg >= 100 && pg < 110 && pg != 105);
	a = test_stats(pool);
	cr_assert_eq(tide_flush(p, len), 0, "%s", tide_last_error());
	b = test_stats(pool);
	cr_expect_eq(b.store_writes - a.store_writes, 4);
	cr_expect_eq(b.writebacks - a.writebacks, 19 + 9);
	cr_expect_eq(b.dirty_bytes, 0);
	expect_file(fd, len, ps, dirty, 7);
	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
}

struct stream_case {
	enum tide_writeback wb;
	size_t ps;
};

ParameterizedTestParameters(writeback, eviction_stream)
{
	static struct stream_case cases[] = {
		{ TIDE_WRITEBACK_FIXED, 4 * KiB },
		{ TIDE_WRITEBACK_DIRECT, 4 * KiB },
		{ TIDE_WRITEBACK_FIXED, 64 * KiB },
		{ TIDE_WRITEBACK_DIRECT, 64 * KiB },
	};
	return cr_make_param_array(struct stream_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/*
 * A sequential stream of dirty pages through a pool 8x smaller than the
 * region: eviction writes runs, not pages, and after unmap the file holds
 * every byte written.
 */
ParameterizedTest(struct stream_case *c, writeback, eviction_stream)
{
	size_t budget = 2 * MiB, len = 8 * budget, npages = len / c->ps;
	int fd = test_file(len, 7);
	tide_pool *pool = make_pool(c->wb, c->ps, budget, 1 * MiB);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	bool *dirty = malloc(npages);
	struct tide_stats st;

	cr_assert_not_null(p, "%s", tide_last_error());
	cr_assert_not_null(dirty);
	for (size_t pg = 0; pg < npages; pg++) {
		dirty[pg] = true;
		dirty_pages(p, c->ps, pg, pg + 1);
	}
	st = test_stats(pool);
	cr_expect_gt(st.evictions_dirty, 0, "nothing was evicted dirty");
	cr_expect_leq(st.peak_resident_bytes, budget);
	cr_expect_leq(st.store_writes * 4, st.writebacks,
		     "%llu store writes for %llu pages: runs did not form",
		     (unsigned long long)st.store_writes, (unsigned long long)st.writebacks);
	cr_expect_eq(st.writeback_errors, 0);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	expect_file(fd, len, c->ps, dirty, 7);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	free(dirty);
	close(fd);
}

/* ---- a memory store whose writes can fail, fall short, or wait ---- */

struct mem_store {
	char *data;
	size_t size;
	int fail_writes;         /* every write fails while set */
	int fail_first;          /* the next this many writes fail */
	int short_writes;        /* writes store half their length plus 100 bytes */
	int hold;                /* the next write completes when the test says */
	int hold_all;            /* every write does (up to HELD_MAX of them) */
	unsigned writes;         /* write calls */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct tide_io *held;
	size_t held_len;
#define HELD_MAX 64
	struct tide_io *held_all[HELD_MAX];
	size_t held_all_len[HELD_MAX];
	unsigned nheld;
};

static int mem_read(void *s, struct tide_io *io, void *buf, size_t len, uint64_t off)
{
	struct mem_store *m = s;
	size_t n = off >= m->size ? 0 : (m->size - off < len ? m->size - off : len);

	memcpy(buf, m->data + off, n);
	tide_io_complete(io, (ssize_t)n);
	return 0;
}

static int mem_write(void *s, struct tide_io *io, const void *buf, size_t len, uint64_t off)
{
	struct mem_store *m = s;
	size_t n = len;

	__atomic_add_fetch(&m->writes, 1, __ATOMIC_RELAXED);
	if (__atomic_load_n(&m->fail_writes, __ATOMIC_RELAXED) ||
	    __atomic_fetch_add(&m->fail_first, -1, __ATOMIC_RELAXED) > 0) {
		tide_io_complete(io, -EIO);
		return 0;
	}
	if (__atomic_load_n(&m->short_writes, __ATOMIC_RELAXED))
		n = len / 2 + 100;
	memcpy(m->data + off, buf, n);
	pthread_mutex_lock(&m->lock);
	if (m->hold) {
		m->hold = 0;
		m->held = io;
		m->held_len = n;
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
		return 0;
	}
	if (m->hold_all && m->nheld < HELD_MAX) {
		m->held_all[m->nheld] = io;
		m->held_all_len[m->nheld++] = n;
		pthread_mutex_unlock(&m->lock);
		return 0;
	}
	pthread_mutex_unlock(&m->lock);
	tide_io_complete(io, (ssize_t)n);
	return 0;
}

static int mem_flush(void *s, struct tide_io *io)
{
	(void)s;
	tide_io_complete(io, 0);
	return 0;
}

static const struct tide_store_ops mem_ops = {
	.read = mem_read, .write = mem_write, .flush = mem_flush,
};

static void mem_init(struct mem_store *m, size_t size)
{
	memset(m, 0, sizeof(*m));
	m->size = size;
	m->data = malloc(size);
	cr_assert_not_null(m->data);
	for (size_t i = 0; i < size / 8; i++)
		((uint64_t *)m->data)[i] = test_word(i, 9);
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
}

static void mem_fini(struct mem_store *m)
{
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->cond);
	free(m->data);
}

/* A memory store of len bytes mapped through pool, every page dirtied
 * (dirty[] marks them all). */
static uint64_t *map_all_dirty(tide_pool *pool, struct mem_store *m, size_t len, size_t ps,
			       bool *dirty)
{
	uint64_t *p;

	mem_init(m, len);
	p = tide_map_store(pool, &mem_ops, m, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	dirty_pages(p, ps, 0, len / ps);
	for (size_t i = 0; i < len / ps; i++)
		dirty[i] = true;
	return p;
}

/* The store holds dirty_word in the pages marked dirty, its seed elsewhere. */
static void expect_store(const struct mem_store *m, size_t ps, const bool *dirty)
{
	const uint64_t *w = (const uint64_t *)m->data;

	for (size_t i = 0; i < m->size / 8; i++) {
		uint64_t want = dirty[i * 8 / ps] ? dirty_word(i) : test_word(i, 9);

		if (w[i] != want)
			cr_assert_fail("store word %zu (page %zu): %#llx, want %#llx", i, i * 8 / ps,
				       (unsigned long long)w[i], (unsigned long long)want);
	}
}

/* A failing store keeps every page of every run dirty; the data arrives
 * once the store works. */
Test(writeback, failed_run_stays_dirty)
{
	size_t ps = 4 * KiB, len = 256 * KiB, npages = len / ps;
	tide_pool *pool = make_pool(TIDE_WRITEBACK_FIXED, ps, 1 * MiB, 64 * KiB);
	struct mem_store m;
	struct tide_stats a, b;
	bool dirty[64], none[64] = { 0 };
	uint64_t *p;

	p = map_all_dirty(pool, &m, len, ps, dirty);
	m.fail_writes = 1;
	a = test_stats(pool);
	cr_expect_eq(tide_flush(p, len), -EIO, "flush on a failing store");
	b = test_stats(pool);
	cr_expect_eq(b.store_writes - a.store_writes, 4);
	cr_expect_eq(m.writes, 4, "the store saw %u writes", m.writes);
	cr_expect_eq(b.writeback_errors, npages, "errors count pages");
	cr_expect_eq(b.writebacks, 0);
	cr_expect_eq(b.dirty_bytes, len, "a failed run dropped dirty pages");
	expect_store(&m, ps, none);
	for (size_t i = 0; i < len / 8; i += 97)
		cr_assert_eq(p[i], dirty_word(i));
	cr_expect_eq(tide_flush(p, len), -EIO, "the store still fails");

	m.fail_writes = 0;
	a = test_stats(pool);
	cr_expect_eq(tide_flush(p, len), 0, "flush once the store works: %s", tide_last_error());
	b = test_stats(pool);
	cr_expect_eq(b.store_writes - a.store_writes, 4);
	cr_expect_eq(b.writebacks - a.writebacks, npages);
	cr_expect_eq(b.dirty_bytes, 0);
	expect_store(&m, ps, dirty);
	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	mem_fini(&m);
}

/* A short write stores the pages it covered whole; the rest stay dirty. */
Test(writeback, short_write_fails_the_rest)
{
	size_t ps = 4 * KiB, len = 256 * KiB, npages = len / ps;
	tide_pool *pool = make_pool(TIDE_WRITEBACK_DIRECT, ps, 1 * MiB, 64 * KiB);
	struct mem_store m;
	struct tide_stats a, b;
	bool dirty[64];
	uint64_t *p;

	p = map_all_dirty(pool, &m, len, ps, dirty);
	m.short_writes = 1;
	a = test_stats(pool);
	/* Four runs of 16 pages; each write stores 8 pages and 100 bytes. */
	cr_expect_eq(tide_flush(p, len), -EIO);
	b = test_stats(pool);
	cr_expect_eq(b.store_writes - a.store_writes, 4);
	cr_expect_eq(b.writebacks - a.writebacks, npages / 2);
	cr_expect_eq(b.writeback_errors, npages / 2);
	cr_expect_eq(b.dirty_bytes, len / 2);

	m.short_writes = 0;
	a = b;
	cr_expect_eq(tide_flush(p, len), 0, "%s", tide_last_error());
	b = test_stats(pool);
	cr_expect_eq(b.store_writes - a.store_writes, 4, "the uncovered halves are four runs");
	cr_expect_eq(b.writebacks - a.writebacks, npages / 2);
	cr_expect_eq(b.dirty_bytes, 0);
	expect_store(&m, ps, dirty);
	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	mem_fini(&m);
}

/* Eviction through a store that fails its first writes: the failed runs
 * stay resident and dirty, leave later, and unmap reports the error once. */
Test(writeback, eviction_recovers_from_failed_runs)
{
	size_t ps = 4 * KiB, budget = 512 * KiB, len = 8 * budget, npages = len / ps;
	tide_pool *pool = make_pool(TIDE_WRITEBACK_FIXED, ps, budget, 64 * KiB);
	struct mem_store m;
	struct tide_stats st;
	bool *dirty = malloc(npages);
	uint64_t *p;

	cr_assert_not_null(dirty);
	mem_init(&m, len);
	m.fail_first = 3;
	p = tide_map_store(pool, &mem_ops, &m, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t pg = 0; pg < npages; pg++) {
		dirty[pg] = true;
		dirty_pages(p, ps, pg, pg + 1);
	}
	st = test_stats(pool);
	cr_expect_gt(st.writeback_errors, 0, "no write failed");
	cr_expect_gt(st.evictions_dirty, 0);
	cr_expect_leq(st.peak_resident_bytes, budget);
	cr_expect_eq(tide_unmap(p), -EIO, "unmap reports the failed writes once");
	cr_expect_eq(tide_unmap(p), 0, "%s", tide_last_error());
	expect_store(&m, ps, dirty);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	mem_fini(&m);
	free(dirty);
}

/* ---- a write to one page of a run in flight ---- */

struct flusher {
	uint64_t *p;
	size_t len;
	int result;
};

static void *do_flush(void *arg)
{
	struct flusher *f = arg;

	f->result = tide_flush(f->p, f->len);
	return NULL;
}

static void *do_write(void *arg)
{
	uint64_t *w = arg;

	*w = 0x5eed;   /* blocks until the run's write completes */
	return NULL;
}

/*
 * A page written while its run is in flight stays resident and dirty, and
 * its writer wakes; the other pages of the run are clean. The next flush
 * writes that page alone.
 */
ParameterizedTestParameters(writeback, redirtied_page_of_run)
{
	static enum tide_writeback paths[] = { TIDE_WRITEBACK_FIXED, TIDE_WRITEBACK_DIRECT };

	return cr_make_param_array(enum tide_writeback, paths, 2);
}

ParameterizedTest(enum tide_writeback *wb, writeback, redirtied_page_of_run)
{
	size_t ps = 4 * KiB, len = 64 * KiB, npages = len / ps, hot = 5;
	tide_pool *pool = make_pool(*wb, ps, 1 * MiB, 64 * KiB);
	struct mem_store m;
	struct flusher fl;
	struct tide_stats a, b;
	pthread_t flusher, writer;
	bool dirty[16];
	uint64_t *p, *w;

	p = map_all_dirty(pool, &m, len, ps, dirty);
	w = p + hot * ps / 8;
	a = test_stats(pool);
	m.hold = 1;
	fl = (struct flusher){ .p = p, .len = len };
	cr_assert_eq(pthread_create(&flusher, NULL, do_flush, &fl), 0);
	pthread_mutex_lock(&m.lock);
	while (!m.held)
		pthread_cond_wait(&m.cond, &m.lock);
	pthread_mutex_unlock(&m.lock);
	cr_assert_eq(m.held_len, len, "the run is not one write of 16 pages");

	/* The write blocks on the protected page; once the service thread has
	 * read its fault, the page is marked to stay. */
	cr_assert_eq(pthread_create(&writer, NULL, do_write, w), 0);
	do {
		b = test_stats(pool);
		sched_yield();
	} while (b.faults_coalesced == a.faults_coalesced);
	tide_io_complete(m.held, (ssize_t)m.held_len);
	pthread_join(flusher, NULL);
	pthread_join(writer, NULL);
	cr_expect_eq(fl.result, 0, "%s", tide_last_error());

	b = test_stats(pool);
	cr_expect_eq(b.store_writes - a.store_writes, 1);
	cr_expect_eq(b.writebacks - a.writebacks, npages);
	cr_expect_eq(b.dirty_bytes, ps, "only the page written meanwhile is dirty");
	expect_store(&m, ps, dirty);   /* what the run held when it was protected */
	cr_expect_eq(*w, 0x5eed);

	cr_assert_eq(tide_flush(p, len), 0);
	a = test_stats(pool);
	cr_expect_eq(a.store_writes - b.store_writes, 1);
	cr_expect_eq(a.writebacks - b.writebacks, 1);
	cr_expect_eq(((uint64_t *)m.data)[hot * ps / 8], 0x5eed);
	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	mem_fini(&m);
}

/*
 * Background write-back (TIDE_FLUSH_INTERVAL) starts up to TIDE_QUEUE_DEPTH
 * writes a tick, not that many pages: four dirty runs of 64 pages, apart,
 * all leave in the first tick after they were written. A file store, so the
 * pages stay in write-back while the tick goes on.
 */
Test(writeback, timer_writes_every_run_in_a_tick)
{
	size_t ps = 4 * KiB, len = 512 * ps, run = 64;
	int fd = test_file(len, 5);
	struct tide_options o;
	tide_pool *pool;
	uint64_t *p, before;
	struct tide_stats st;
	bool dirty[512] = { false };

	test_require_uffd();
	tide_options_init(&o);
	o.budget = 4 * MiB;
	o.page_size = ps;
	o.read_ahead = 0;
	o.flush_interval_ms = 100;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t r = 0; r < 4; r++) {
		dirty_pages(p, ps, 2 * r * run, (2 * r + 1) * run);
		for (size_t i = 2 * r * run; i < (2 * r + 1) * run; i++)
			dirty[i] = true;
	}
	/* A tick may have come while the runs were written: it took what was
	 * dirty then. The next one must take all that is left. Stats are
	 * served between ticks, so each look sees whole ticks. */
	st = test_stats(pool);
	before = st.store_writes;
	while (st.dirty_bytes && st.store_writes == before) {
		struct timespec ms = { 0, 1000000 };

		nanosleep(&ms, NULL);
		st = test_stats(pool);
	}
	cr_expect_eq(st.dirty_bytes, 0, "a tick left dirty runs behind");
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	expect_file(fd, len, ps, dirty, 5);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
}

/*
 * Read-ahead counts pages on their way out as gone. A sequential writer
 * gets the pages ahead of it installed dirty; past the high watermark,
 * eviction writes the oldest back, and here every write is held, so the
 * pool stays near its budget with those pages leaving. The fault that makes
 * them leave must still fill pages ahead of the writer (within the budget,
 * past the high watermark since the leaving pages count as gone), not leave
 * it to fault, wait and be woken page by page. Then the writes go, and the
 * store holds every byte.
 */
Test(writeback, read_ahead_counts_leaving_pages_as_gone)
{
	size_t ps = 4 * KiB, budget = 64 * ps, len = 256 * ps, words = ps / 8, pg, ahead = 0;
	struct tide_options o;
	struct tide_stats a, b;
	struct mem_store m;
	tide_pool *pool;
	uint64_t *p, *data;
	unsigned char in;
	unsigned nheld;

	test_require_writeback(TIDE_WRITEBACK_FIXED);
	tide_options_init(&o);
	o.budget = budget;
	o.page_size = ps;
	o.writeback = TIDE_WRITEBACK_FIXED;
	o.flush_interval_ms = 0;
	o.read_ahead = 256;
	/* Short runs: eviction takes the oldest pages, not a run reaching up to
	 * the page the writer is on (which would then wait for a held write). */
	o.write_max = 4 * ps;
	/* The room read-ahead sees at one moment: one pool's, not a budget a
	 * sibling shard lends in its own time. */
	o.service_threads = 1;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	mem_init(&m, len);
	m.hold_all = 1;
	p = tide_map_store(pool, &mem_ops, &m, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	/* Write page after page until eviction has begun. */
	for (pg = 0; pg < len / ps; pg++) {
		p[pg * words] = dirty_word(pg * words);
		a = test_stats(pool);
		if (a.store_writes)
			break;
	}
	cr_assert_lt(pg + 1, len / ps, "eviction never began");
	cr_assert_eq(a.writebacks, 0, "a held write completed");
	/* The pages after the writer are in: write them, no fault. A page that
	 * is not would wait for a held write, so the writer stops there. */
	while (pg + 1 < len / ps &&
	       mincore((char *)p + (pg + 1) * ps, ps, &in) == 0 && (in & 1)) {
		pg++;
		p[pg * words] = dirty_word(pg * words);
		ahead++;
	}
	pg++;
	b = test_stats(pool);
	pthread_mutex_lock(&m.lock);
	nheld = m.nheld;
	pthread_mutex_unlock(&m.lock);
	cr_expect_gt(ahead, 0, "no page was filled ahead: %llu of %zu bytes resident, %u writes held",
		     (unsigned long long)b.resident_bytes, budget, nheld);
	cr_expect_eq(b.faults, a.faults, "the writer faulted on a page filled ahead");
	cr_expect_gt(b.resident_bytes, budget / 100 * o.high_water,
		     "read-ahead stopped at the high watermark with %u writes held", nheld);
	cr_expect_leq(b.resident_bytes, budget);
	cr_expect_eq(b.writebacks, 0, "a held write completed");

	pthread_mutex_lock(&m.lock);
	m.hold_all = 0;
	nheld = m.nheld;
	pthread_mutex_unlock(&m.lock);
	for (unsigned i = 0; i < nheld; i++)
		tide_io_complete(m.held_all[i], (ssize_t)m.held_all_len[i]);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	data = (uint64_t *)m.data;
	for (size_t i = 0; i < len / 8; i++) {
		uint64_t want = i % words == 0 && i / words < pg ? dirty_word(i) : test_word(i, 9);

		if (data[i] != want)
			cr_assert_fail("store word %zu (page %zu): %#llx, want %#llx", i, i / words,
				       (unsigned long long)data[i], (unsigned long long)want);
	}
	cr_assert_eq(tide_pool_destroy(pool), 0);
	mem_fini(&m);
}
