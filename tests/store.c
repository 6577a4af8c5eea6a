/* Custom stores: a region backed by memory through struct tide_store_ops,
 * completing inline or from another thread; storage errors lose nothing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "tide.h"
#include "uffd.h"

struct mem_store {
	char *data;
	size_t size;
	int fail_writes, fail_reads, closed;
	int fail_next;           /* writes still to fail, then the store works */
	uint64_t failed_ns[8], ok_ns;  /* when they failed; the first write after */
	int nfailed;
	bool threaded;
	/* threaded: completions handed to a worker */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job { struct tide_io *io; ssize_t res; } jobs[4096];
	unsigned head, tail;
	bool stop;
	pthread_t worker;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void complete(struct mem_store *m, struct tide_io *io, ssize_t res)
{
	if (!m->threaded) {
		tide_io_complete(io, res);
		return;
	}
	pthread_mutex_lock(&m->lock);
	m->jobs[m->tail++ % 4096] = (struct job){ io, res };
	pthread_cond_signal(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

static void *worker(void *arg)
{
	struct mem_store *m = arg;

	pthread_mutex_lock(&m->lock);
	while (!m->stop || m->head != m->tail) {
		if (m->head == m->tail) {
			pthread_cond_wait(&m->cond, &m->lock);
			continue;
		}
		struct job j = m->jobs[m->head++ % 4096];

		pthread_mutex_unlock(&m->lock);
		tide_io_complete(j.io, j.res);
		pthread_mutex_lock(&m->lock);
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

static int mem_read(void *s, struct tide_io *io, void *buf, size_t len, uint64_t off)
{
	struct mem_store *m = s;
	size_t n = off >= m->size ? 0 : (m->size - off < len ? m->size - off : len);

	if (__atomic_load_n(&m->fail_reads, __ATOMIC_RELAXED)) {
		complete(m, io, -EIO);
		return 0;
	}
	memcpy(buf, m->data + off, n);
	complete(m, io, (ssize_t)n);
	return 0;
}

static int mem_write(void *s, struct tide_io *io, const void *buf, size_t len, uint64_t off)
{
	struct mem_store *m = s;

	if (__atomic_load_n(&m->fail_writes, __ATOMIC_RELAXED)) {
		complete(m, io, -EIO);
		return 0;
	}
	if (m->fail_next > 0) {
		m->fail_next--;
		m->failed_ns[m->nfailed++] = now_ns();
		complete(m, io, -EIO);
		return 0;
	}
	if (m->nfailed && !m->ok_ns)
		m->ok_ns = now_ns();
	memcpy(m->data + off, buf, len);
	complete(m, io, (ssize_t)len);
	return 0;
}

static int mem_flush(void *s, struct tide_io *io)
{
	complete(s, io, 0);
	return 0;
}

static void mem_close(void *s)
{
	((struct mem_store *)s)->closed++;
}

static const struct tide_store_ops mem_ops = {
	.read = mem_read, .write = mem_write, .flush = mem_flush, .close = mem_close,
};

static void mem_init(struct mem_store *m, size_t size, bool threaded)
{
	memset(m, 0, sizeof(*m));
	m->size = size;
	m->data = malloc(size);
	cr_assert_not_null(m->data);
	for (size_t i = 0; i < size / 8; i++)
		((uint64_t *)m->data)[i] = test_word(i, 9);
	m->threaded = threaded;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	if (threaded)
		cr_assert_eq(pthread_create(&m->worker, NULL, worker, m), 0);
}

static void mem_fini(struct mem_store *m)
{
	if (m->threaded) {
		pthread_mutex_lock(&m->lock);
		m->stop = true;
		pthread_cond_signal(&m->cond);
		pthread_mutex_unlock(&m->lock);
		pthread_join(m->worker, NULL);
	}
	free(m->data);
}

static tide_pool *make_pool(size_t budget)
{
	struct tide_options o;
	tide_pool *pool;

	test_require_uffd();
	tide_options_init(&o);
	o.budget = budget;
	o.page_size = 4 * KiB;
	o.flush_interval_ms = 0;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	return pool;
}

static void integrity(bool threaded)
{
	size_t budget = 512 * KiB, len = 8 * budget;
	struct mem_store m;
	tide_pool *pool = make_pool(budget);
	uint64_t *p, *model = malloc(len), rng = 77;
	struct tide_stats st;

	mem_init(&m, len, threaded);
	memcpy(model, m.data, len);
	p = tide_map_store(pool, &mem_ops, &m, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	for (int i = 0; i < 20000; i++) {
		size_t w;

		rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
		w = rng % (len / 8);
		if (rng & 1024) {
			p[w] = rng;
			model[w] = rng;
		} else {
			cr_assert_eq(p[w], model[w], "word %zu", w);
		}
	}
	cr_assert_eq(tide_pool_stats(pool, &st), 0);
	cr_expect_gt(st.evictions_dirty, 0);
	cr_expect_leq(st.peak_resident_bytes, budget);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_expect_eq(m.closed, 1, "close was called %d times", m.closed);
	cr_expect_eq(memcmp(m.data, model, len), 0, "store differs from the model after unmap");
	cr_assert_eq(tide_pool_destroy(pool), 0);
	mem_fini(&m);
	free(model);
}

Test(store, memory_inline) { integrity(false); }
Test(store, memory_threaded) { integrity(true); }

Test(store, write_error_keeps_data)
{
	size_t len = 256 * KiB;
	struct mem_store m;
	tide_pool *pool = make_pool(1 * MiB);
	uint64_t *p;
	struct tide_stats st;

	mem_init(&m, len, false);
	p = tide_map_store(pool, &mem_ops, &m, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p);
	for (size_t i = 0; i < len / 8; i += 512)
		p[i] = 0xdead0000 + i;
	m.fail_writes = 1;
	cr_expect_eq(tide_flush(p, len), -EIO, "flush on a failing store");
	cr_expect_eq(tide_unmap(p), -EIO, "unmap on a failing store");
	cr_assert_eq(tide_pool_stats(pool, &st), 0);
	cr_expect_gt(st.writeback_errors, 0);
	cr_expect_eq(st.dirty_bytes, len, "dirty pages were dropped after a failed write");
	/* Still mapped, still holding what was written. */
	for (size_t i = 0; i < len / 8; i += 512)
		cr_assert_eq(p[i], 0xdead0000 + i);
	m.fail_writes = 0;
	cr_expect_eq(tide_flush(p, len), 0, "flush once the store works again");
	for (size_t i = 0; i < len / 8; i += 512)
		cr_assert_eq(((uint64_t *)m.data)[i], 0xdead0000 + i);
	cr_expect_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	mem_fini(&m);
}

/*
 * A store that fails writes is not retried in a loop as fast as it fails:
 * eviction leaves the region alone for 1 ms after a failure, doubling while
 * it keeps failing, and once the store works every page written reaches it.
 * The app writes a region four times the pool, so it waits for room through
 * the failures. Attempts are timed by the store itself.
 */
Test(store, failing_writes_back_off)
{
	size_t budget = 256 * KiB, len = 4 * budget, words = len / 8;
	struct mem_store m;
	tide_pool *pool = make_pool(budget);
	struct tide_stats st;
	uint64_t *p;
	int nfail = 6;

	mem_init(&m, len, false);
	m.fail_next = nfail;
	p = tide_map_store(pool, &mem_ops, &m, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t i = 0; i < words; i += 64)
		p[i] = 0xfeed0000 + i;
	cr_assert_eq(m.nfailed, nfail, "the store failed %d writes of %d", m.nfailed, nfail);
	cr_assert_neq(m.ok_ns, 0, "no write after the failures: eviction never retried");
	/* Failure k is followed by at least 2^k ms of rest. */
	for (int k = 0; k < nfail; k++) {
		uint64_t next = k + 1 < nfail ? m.failed_ns[k + 1] : m.ok_ns;
		uint64_t gap_ms = (next - m.failed_ns[k]) / 1000000;

		cr_expect_geq(gap_ms, 1u << k, "write %d came %llu ms after failure %d, not %u",
			      k + 1, (unsigned long long)gap_ms, k, 1u << k);
	}
	cr_assert_eq(tide_pool_stats(pool, &st), 0);
	cr_expect_geq(st.writeback_errors, (uint64_t)nfail);
	/* Reported once, like fsync after a failed write-back, then clean. */
	cr_expect_eq(tide_flush(p, len), -EIO, "the next flush reports the failures");
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	for (size_t i = 0; i < words; i++) {
		uint64_t want = i % 64 ? test_word(i, 9) : 0xfeed0000 + i;

		cr_assert_eq(((uint64_t *)m.data)[i], want, "word %zu after unmap", i);
	}
	cr_assert_eq(tide_pool_destroy(pool), 0);
	mem_fini(&m);
}

static void read_failing(void *arg)
{
	struct mem_store m;
	tide_pool *pool = make_pool(1 * MiB);
	volatile uint64_t *p;

	(void)arg;
	test_default_signal(SIGBUS);
	mem_init(&m, 64 * KiB, false);
	m.fail_reads = 1;
	p = tide_map_store(pool, &mem_ops, &m, 0, 64 * KiB, TIDE_PROT_READ, 0);
	if (!p)
		_exit(2);
	(void)p[0];     /* must not return */
	_exit(1);
}

Test(store, read_error_raises_sigbus)
{
	uint64_t have = 0;
	int st;

	test_require_uffd();
	tide__uffd_features(&have);
	if (!(have & UFFD_FEATURE_POISON))
		cr_skip_test("kernel lacks UFFD_FEATURE_POISON (6.6+): read errors cannot raise SIGBUS");
	st = test_in_child(read_failing, NULL, 20000);
	cr_expect_eq(st, 128 + SIGBUS, "child status %d, want SIGBUS", st);
}

Test(store, bad_ops)
{
	tide_pool *pool = make_pool(1 * MiB);
	struct tide_store_ops ro = { .read = mem_read };
	struct mem_store m;

	mem_init(&m, 64 * KiB, false);
	errno = 0;
	cr_expect_null(tide_map_store(pool, NULL, &m, 0, 64 * KiB, TIDE_PROT_READ, 0));
	cr_expect_eq(errno, EINVAL);
	cr_expect_null(tide_map_store(pool, &ro, &m, 0, 64 * KiB, TIDE_PROT_READ | TIDE_PROT_WRITE, 0));
	cr_expect_eq(errno, EINVAL, "writable mapping without write/flush");
	cr_expect_null(tide_map_store(pool, &mem_ops, &m, 0, 64 * KiB, TIDE_PROT_READ, 12 * KiB));
	cr_expect_eq(m.closed, 0, "a failed map closed the caller's store");
	cr_assert_eq(tide_pool_destroy(pool), 0);
	mem_fini(&m);
}
