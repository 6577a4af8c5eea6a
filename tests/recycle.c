/*
 * Recycling (TIDE_RECYCLE, runtime/spare.c): dirty pages evicted by moving
 * them out of their region, written from there, and reused by the fills of
 * holes. What a user must never see: data lost or changed by the move, a
 * thread that touches a page during its write waking to anything but the
 * page's data, a store error that drops a page.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"
#include "tide.h"

#define PS      (4 * KiB)
#define BUDGET  (256 * KiB)

static uint64_t word(size_t i, uint64_t round)
{
	return test_word(i, 0x7ec1c1e + round);
}

static tide_pool *make_pool_of(enum tide_writeback wb, size_t budget, size_t ps)
{
	struct tide_options o;
	tide_pool *pool;
	struct tide_stats st;

	test_require_writeback(wb);
	tide_options_init(&o);
	o.budget = budget;
	o.page_size = ps;
	o.write_max = 64 * KiB;
	o.service_threads = 1;
	o.writeback = wb;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	st = test_stats(pool);
	if (!st.recycle) {
		tide_pool_destroy(pool);
		cr_skip_test("eviction does not move pages here (TIDE_RECYCLE=0, or a kernel "
			     "without UFFDIO_MOVE, before 6.8)");
	}
	return pool;
}

static tide_pool *make_pool(enum tide_writeback wb)
{
	return make_pool_of(wb, BUDGET, PS);
}

/* What word i of the region holds: every word of its first half, word 0
 * of each page of its second half (the rest zeros, as the holes). */
static uint64_t want_word(size_t i, uint64_t len)
{
	return i < len / 16 || i % (PS / 8) == 0 ? word(i, 0) : 0;
}

/* The file behind fd holds want(i, arg) at every word i of its first len bytes. */
static void file_holds(int fd, size_t len, uint64_t (*want)(size_t i, uint64_t arg), uint64_t arg)
{
	int rfd = test_reopen(fd);
	uint64_t *buf = malloc(len);

	cr_assert_not_null(buf);
	test_pread(rfd, buf, len, 0);
	for (size_t i = 0; i < len / 8; i++)
		if (buf[i] != want(i, arg))
			cr_assert_fail("file word %zu (4 KiB page %zu): %#llx, want %#llx", i,
				       i * 8 / 4096, (unsigned long long)buf[i],
				       (unsigned long long)want(i, arg));
	free(buf);
	close(rfd);
}

/*
 * A new file (all holes) written through a pool a quarter of its size: the
 * evicted pages leave by moving, and the fills of the holes after them
 * take those pages back. The first half is written whole, so the pages its
 * evictions give back hold data in every word; in the second half each
 * page gets one word written, and the rest of a recycled page must read as
 * the hole it fills: zeros. After eviction every word reads back; the file
 * holds them.
 */
Test(recycle, fills_reuse_evicted_pages)
{
	size_t len = 4 * BUDGET;
	tide_pool *pool = make_pool(TIDE_WRITEBACK_AUTO);
	int fd = test_file(len, 0);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	struct tide_stats st;

	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t i = 0; i < len / 16; i++)
		p[i] = word(i, 0);
	for (size_t i = len / 16; i < len / 8; i += PS / 8) {
		p[i] = word(i, 0);   /* a write fault: the page is filled writable */
		for (size_t k = 1; k < PS / 8; k++)
			cr_assert_eq(p[i + k], 0, "word %zu of a hole reads %#llx", i + k,
				     (unsigned long long)p[i + k]);
	}
	for (size_t i = 0; i < len / 8; i++)
		cr_assert_eq(p[i], want_word(i, len), "word %zu after eviction", i);
	st = test_stats(pool);
	cr_expect_gt(st.evictions_moved, 0, "no eviction moved its pages");
	cr_expect_gt(st.fills_recycled, 0, "no fill took an evicted page");
	cr_expect_leq(st.evictions_moved, st.evictions_dirty);
	cr_expect_leq(st.fills_recycled, st.fills_zero, "only holes take spare pages");
	cr_expect_leq(st.peak_resident_bytes, BUDGET);
	cr_expect_eq(st.writeback_errors, 0);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());

	file_holds(fd, len, want_word, len);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
}

/* The physical frame of the 4 KiB page at `addr` (present), or 0 where
 * /proc/self/pagemap does not show frames (without CAP_SYS_ADMIN). */
static uint64_t frame_of(int pagemap, const void *addr)
{
	uint64_t e = 0;

	cr_assert_eq(pread(pagemap, &e, 8, (off_t)((uintptr_t)addr / 4096 * 8)), 8);
	return e & ((1ull << 55) - 1);
}

/* Word 1 of each page of `per` words written, the rest the hole's zeros. */
static uint64_t one_word_per_page(size_t i, uint64_t per)
{
	return i % per == 1 ? word(i - 1, 4) : 0;
}

/*
 * A sequential writer into a new file on the direct path: its holes are
 * filled with pages seeded from huge pages (spare.c), moved out when
 * evicted and back in for the next holes. What it must see: zeros in every
 * word it did not write (the seed marks each 4 KiB before the split), in
 * the mapping and in the file. What it is for: each 64 KiB page sits in one
 * run of physical memory, so its O_DIRECT write is one segment, not 16.
 */
Test(recycle, a_sequential_writer_gets_zeroed_contiguous_pages)
{
	size_t ps = 64 * KiB, budget = 8 * MiB, len = 32 * MiB, per = ps / 8;
	tide_pool *pool = make_pool_of(TIDE_WRITEBACK_DIRECT, budget, ps);
	int fd = test_file(len, 0), pagemap;
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	size_t resident = 0, whole = 0;

	cr_assert_not_null(p, "%s", tide_last_error());
	/* Word 1 of each page: byte 0 of every 4 KiB stays the hole's. */
	for (size_t i = 0; i < len / 8; i += per)
		p[i + 1] = word(i, 4);
	pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(pagemap, 0);
	for (size_t pg = 0; pg < len / ps; pg++) {
		char *at = (char *)p + pg * ps;
		unsigned char in = 0;
		uint64_t f0;
		size_t k;

		if (mincore(at, 4096, &in) < 0 || !(in & 1) || !(f0 = frame_of(pagemap, at)))
			continue;
		for (k = 1; k < ps / 4096 && frame_of(pagemap, at + k * 4096) == f0 + k; k++)
			;
		resident++;
		whole += k == ps / 4096;
	}
	close(pagemap);
	for (size_t i = 0; i < len / 8; i++)
		cr_assert_eq(p[i], one_word_per_page(i, per), "word %zu (page %zu)", i, i / per);
	cr_expect_eq(test_stats(pool).writeback_errors, 0);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	file_holds(fd, len, one_word_per_page, per);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
	if (!resident)
		cr_skip_test("pagemap shows no physical frames here (needs CAP_SYS_ADMIN): the "
			     "data was checked, the pages' places were not");
	if (!tide__thp_available())
		cr_skip_test("no transparent huge pages here: the data was checked, the pages' "
			     "places were not");
	/* Most, not all: on a machine hours into benchmarks 84-88% was seen
	 * in one run in seven (old and new builds alike), the rest 90-100%;
	 * without the huge-page seed it is 0 of 89 (scattered 4 KiB frames). */
	cr_expect_geq(whole * 4, resident * 3,
		      "%zu of %zu resident 64 KiB pages are one run of physical memory", whole,
		      resident);
}

/* ---- a store whose first write waits for the test ---- */

struct held_store {
	char *data;
	size_t size;
	int fail;                /* the next this many writes fail */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int hold;                /* the next write of two pages or more is held */
	struct tide_io *held;
	const void *held_buf;
	size_t held_len;
	uint64_t held_off;
};

static int hs_read(void *s, struct tide_io *io, void *buf, size_t len, uint64_t off)
{
	struct held_store *h = s;
	size_t n = off >= h->size ? 0 : (h->size - off < len ? h->size - off : len);

	memcpy(buf, h->data + off, n);
	tide_io_complete(io, (ssize_t)n);
	return 0;
}

static int hs_write(void *s, struct tide_io *io, const void *buf, size_t len, uint64_t off)
{
	struct held_store *h = s;

	if (__atomic_fetch_add(&h->fail, -1, __ATOMIC_RELAXED) > 0) {
		tide_io_complete(io, -EIO);
		return 0;
	}
	pthread_mutex_lock(&h->lock);
	if (h->hold && len >= 2 * PS) {
		/* Its data is taken only when the test lets it complete: the
		 * buffer must hold the run until then. */
		h->hold = 0;
		h->held = io;
		h->held_buf = buf;
		h->held_len = len;
		h->held_off = off;
		pthread_cond_broadcast(&h->cond);
		pthread_mutex_unlock(&h->lock);
		return 0;
	}
	pthread_mutex_unlock(&h->lock);
	memcpy(h->data + off, buf, len);
	tide_io_complete(io, (ssize_t)len);
	return 0;
}

static int hs_flush(void *s, struct tide_io *io)
{
	(void)s;
	tide_io_complete(io, 0);
	return 0;
}

static const struct tide_store_ops hs_ops = { .read = hs_read, .write = hs_write, .flush = hs_flush };

static void hs_init(struct held_store *h, size_t size)
{
	memset(h, 0, sizeof(*h));
	h->size = size;
	h->data = malloc(size);
	cr_assert_not_null(h->data);
	for (size_t i = 0; i < size / 8; i++)
		((uint64_t *)h->data)[i] = test_word(i, 9);
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
}

static void hs_fini(struct held_store *h)
{
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
	free(h->data);
}

struct toucher {
	volatile uint64_t *w;
	uint64_t value;          /* read: what it saw; write: what it stores */
	bool write;
};

static void *touch(void *arg)
{
	struct toucher *t = arg;

	if (t->write)
		*t->w = t->value;
	else
		t->value = *t->w;
	return NULL;
}

/* Wait until the pool has taken `n` more faults on pages already on their
 * way than `before`: the touching threads are then waiting on them. */
static void wait_coalesced(tide_pool *pool, uint64_t before, uint64_t n)
{
	for (int i = 0; i < 100000; i++) {
		if (test_stats(pool).faults_coalesced >= before + n)
			return;
		sched_yield();
	}
	cr_assert_fail("the faults on the moved pages never reached the service thread");
}

/*
 * A pool over a held store, full of dirty pages, whose next write of a run
 * (two pages or more, moved out of the region) is held: returns the run's
 * first word.
 */
static size_t hold_a_run(enum tide_writeback wb, tide_pool **pool, struct held_store *h,
			 uint64_t **p, size_t len)
{
	*pool = make_pool(wb);
	hs_init(h, len);
	*p = tide_map_store(*pool, &hs_ops, h, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(*p, "%s", tide_last_error());
	for (size_t i = 0; i < BUDGET / 8; i++)
		(*p)[i] = word(i, 0);
	pthread_mutex_lock(&h->lock);
	h->hold = 1;
	pthread_mutex_unlock(&h->lock);
	for (size_t i = BUDGET / 8; i < len / 8; i++)
		(*p)[i] = word(i, 0);
	pthread_mutex_lock(&h->lock);
	while (!h->held)
		pthread_cond_wait(&h->cond, &h->lock);
	pthread_mutex_unlock(&h->lock);
	return h->held_off / 8;
}

/* The held write completes now, with what its buffer holds now. */
static void complete_held(struct held_store *h)
{
	memcpy(h->data + h->held_off, h->held_buf, h->held_len);
	tide_io_complete(h->held, (ssize_t)h->held_len);
}

/* Unmaps and checks that the store holds word(i, 0) everywhere but at
 * word `wi`, which holds `wv`. */
static void unmap_and_check(tide_pool *pool, struct held_store *h, uint64_t *p, size_t len,
			    size_t first, size_t wi, uint64_t wv)
{
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	for (size_t i = 0; i < len / 8; i++) {
		uint64_t want = i == wi ? wv : word(i, 0);

		if (((uint64_t *)h->data)[i] != want)
			cr_assert_fail("store word %zu (page %zu; held run from page %zu): %#llx, "
				       "want %#llx", i, i * 8 / PS, first * 8 / PS,
				       (unsigned long long)((uint64_t *)h->data)[i],
				       (unsigned long long)want);
	}
	cr_assert_eq(tide_pool_destroy(pool), 0);
	hs_fini(h);
}

/*
 * A run's write is held while one thread reads a page of it and another
 * writes a page of it. Both pages are out of the region, so both threads
 * wait; when the write completes, the pages come back: the reader sees the
 * data, the writer's store lands and reaches the store at unmap.
 */
static void touched_during_write(enum tide_writeback wb)
{
	size_t len = 4 * BUDGET, first, wi;
	tide_pool *pool;
	struct held_store h;
	struct toucher rd, wr;
	pthread_t trd, twr;
	uint64_t *p, before;

	first = hold_a_run(wb, &pool, &h, &p, len);
	wi = first + PS / 8 + 3;   /* a word of the run's second page */
	before = test_stats(pool).faults_coalesced;
	rd = (struct toucher){ .w = &p[first + 1], .write = false };
	wr = (struct toucher){ .w = &p[wi], .value = 0x5eed, .write = true };
	pthread_create(&trd, NULL, touch, &rd);
	pthread_create(&twr, NULL, touch, &wr);
	wait_coalesced(pool, before, 2);
	complete_held(&h);
	pthread_join(trd, NULL);
	pthread_join(twr, NULL);
	cr_expect_eq(rd.value, word(first + 1, 0), "a page read during its write read %#llx",
		     (unsigned long long)rd.value);
	cr_expect_eq(p[wi], 0x5eed);
	cr_expect_eq(p[first], word(first, 0));
	cr_expect_eq(test_stats(pool).writeback_errors, 0);
	unmap_and_check(pool, &h, p, len, first, wi, 0x5eed);
}

Test(recycle, fixed_pages_touched_during_their_write_come_back, .timeout = 60)
{
	touched_during_write(TIDE_WRITEBACK_FIXED);
}

Test(recycle, direct_pages_touched_during_their_write_come_back, .timeout = 60)
{
	touched_during_write(TIDE_WRITEBACK_DIRECT);
}

struct watcher {
	volatile uint64_t *w;    /* a word of a page out of the region */
	uint64_t value;
};

/* Waits (without touching it) until the page is back in the page table,
 * then writes it at once, faulting only if it came back protected. */
static void *write_when_present(void *arg)
{
	struct watcher *t = arg;
	void *page = (void *)((uintptr_t)t->w & ~(uintptr_t)(PS - 1));
	unsigned char in = 0;

	while (mincore(page, PS, &in) == 0 && !(in & 1))
		;
	*t->w = t->value;
	return NULL;
}

/*
 * A page a read fault waits on is clean once its write is done and comes
 * back protected, so the next write to it is seen. Bringing it back by a
 * move and protecting it after (the first version of recycling) leaves the
 * page writable between the two calls: a thread that writes it then, here
 * one that writes the moment mincore(2) shows the page present, writes
 * unseen, and the page, recorded clean, leaves at unmap without being
 * written. Each round holds one run; the window is microseconds wide, so
 * the rounds give the race many chances (the old code lost the write in
 * most rounds).
 */
static void read_waiter_comes_back_protected(enum tide_writeback wb)
{
	for (int round = 0; round < 20; round++) {
		size_t len = 4 * BUDGET, first;
		tide_pool *pool;
		struct held_store h;
		struct toucher rd;
		struct watcher wt;
		pthread_t trd, twt;
		uint64_t *p, before;

		first = hold_a_run(wb, &pool, &h, &p, len);
		before = test_stats(pool).faults_coalesced;
		rd = (struct toucher){ .w = &p[first + 1], .write = false };
		wt = (struct watcher){ .w = &p[first + 2], .value = 0x5eed0000 + round };
		pthread_create(&twt, NULL, write_when_present, &wt);
		pthread_create(&trd, NULL, touch, &rd);
		wait_coalesced(pool, before, 1);
		complete_held(&h);
		pthread_join(trd, NULL);
		pthread_join(twt, NULL);
		cr_expect_eq(rd.value, word(first + 1, 0));
		unmap_and_check(pool, &h, p, len, first, first + 2, wt.value);
	}
}

Test(recycle, fixed_page_read_during_its_write_comes_back_protected, .timeout = 60)
{
	read_waiter_comes_back_protected(TIDE_WRITEBACK_FIXED);
}

Test(recycle, direct_page_read_during_its_write_comes_back_protected, .timeout = 60)
{
	read_waiter_comes_back_protected(TIDE_WRITEBACK_DIRECT);
}

/*
 * The first writes fail: the runs they carried come back dirty, with their
 * data, and leave later; unmap reports the error once; the store ends up
 * with every word.
 */
Test(recycle, a_failed_write_puts_the_pages_back)
{
	size_t len = 4 * BUDGET;
	tide_pool *pool = make_pool(TIDE_WRITEBACK_AUTO);
	struct held_store h;
	struct tide_stats st;
	uint64_t *p;

	hs_init(&h, len);
	h.fail = 3;
	p = tide_map_store(pool, &hs_ops, &h, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t i = 0; i < len / 8; i++)
		p[i] = word(i, 2);
	st = test_stats(pool);
	cr_expect_geq(st.writeback_errors, 2, "the failing writes did not fail");
	cr_expect_gt(st.evictions_moved, 0);
	cr_expect_leq(st.peak_resident_bytes, BUDGET);
	for (size_t i = 0; i < len / 8; i++)
		cr_assert_eq(p[i], word(i, 2), "word %zu lost by a failed write", i);
	cr_expect_eq(tide_unmap(p), -EIO, "unmap reports the failed writes once");
	cr_expect_eq(tide_unmap(p), 0, "%s", tide_last_error());
	for (size_t i = 0; i < len / 8; i++)
		cr_assert_eq(((uint64_t *)h.data)[i], word(i, 2), "store word %zu", i);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	hs_fini(&h);
}

/*
 * Pages the app holds pinned (here registered as an io_uring fixed buffer,
 * a long-term pin, as a program's own O_DIRECT holds one for a while)
 * cannot move: the move stops at the first of them, what moved goes back,
 * and the run leaves the plain way, protect, write, drop. Nothing is lost.
 */
Test(recycle, pinned_pages_leave_the_plain_way)
{
	size_t len = 4 * BUDGET, pinned = 64 * KiB;
	tide_pool *pool = make_pool(TIDE_WRITEBACK_AUTO);
	int fd = test_file(len, 0);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	struct io_uring ring;
	struct iovec iov;
	struct tide_stats st;
	int ret;

	cr_assert_not_null(p, "%s", tide_last_error());
	/* Pages 1..16: dirty, then pinned; page 0 stays free to move, so the
	 * run that meets the pins has moved a page first. */
	for (size_t i = 0; i < (PS + pinned) / 8; i++)
		p[i] = word(i, 3);
	ret = io_uring_queue_init(4, &ring, 0);
	if (ret < 0)
		cr_skip_test("no io_uring here (%s)", strerror(-ret));
	iov = (struct iovec){ (char *)p + PS, pinned };
	ret = io_uring_register_buffers(&ring, &iov, 1);
	if (ret < 0) {
		io_uring_queue_exit(&ring);
		cr_skip_test("cannot pin pages with io_uring_register_buffers (%s)", strerror(-ret));
	}
	for (size_t i = (PS + pinned) / 8; i < len / 8; i++)
		p[i] = word(i, 3);
	st = test_stats(pool);
	cr_expect_gt(st.evictions_moved, 0);
	cr_expect_geq(st.evictions_dirty - st.evictions_moved, pinned / PS,
		      "%llu dirty evictions, %llu by moving: the pinned pages moved",
		      (unsigned long long)st.evictions_dirty,
		      (unsigned long long)st.evictions_moved);
	for (size_t i = 0; i < len / 8; i++)
		cr_assert_eq(p[i], word(i, 3), "word %zu after eviction", i);
	io_uring_unregister_buffers(&ring);
	io_uring_queue_exit(&ring);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	file_holds(fd, len, word, 3);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
}
