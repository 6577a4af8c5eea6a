/*
 * Write-back: protect, copy or pin, write, then drop or keep.
 *
 * A dirty page leaves with the dirty pages next to it: the run of adjacent
 * dirty pages of its region, up to TIDE_WRITE_MAX bytes, is write-protected
 * with one UFFDIO_WRITEPROTECT and written with one store write. Both cost
 * per call, not per byte (a protect or drop is a TLB shootdown on the other
 * vCPU, ~17 us here; a 64 KiB write takes as long to issue as a 4 KiB one),
 * so a sequential stream of dirty pages leaves in a few large I/Os.
 *
 * Protection comes first (UFFDIO_WRITEPROTECT), so from then on a write
 * blocks in the kernel until we decide; what reaches the store is exactly
 * what the pages held. Two ways to get them there:
 *   fixed:  memcpy into one span of the registered bounce arena and
 *           WRITE_FIXED from it. The only pinned memory is runtime-owned and
 *           never uffd-registered. A busy arena gives a shorter run.
 *   direct: O_DIRECT write from the protected pages themselves: a short-term
 *           read pin. On 5.8 such a pin broke COW like a write and hung the
 *           service thread on its own fault (docs/kernel.md), so `auto`
 *           picks it only where the start-up probe shows it is safe.
 * The pages stay protected until the write completes. Then each page of the
 * run goes its own way: written meanwhile (`redirtied`) it stays resident
 * and dirty; otherwise an eviction drops it and a flush leaves it clean and
 * protected. A failed write, or the part of a short one that did not reach
 * the store, keeps the pages dirty and records the error for the next flush
 * or unmap: a storage error never drops data.
 *
 * Epochs order flushes after write-backs: each store write belongs to the
 * open epoch; a flush seals it, and runs its fdatasync when that epoch and
 * all older ones have no write in flight.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* One store write: a run of adjacent pages of one region. */
struct writeback {
	struct tide_io io;
	struct region *region;   /* kept alive by r->busy */
	uint64_t first;          /* pages [first, first + npages) */
	uint64_t npages;
	void *buf;               /* bounce span (fixed), the pages (direct) or their slot */
	bool moved;              /* the pages left the region (spare.c) */
	bool in_slot;            /*   and buf is their spare slot (direct), not a copy */
	struct epoch *epoch;
};

static void epochs_retire(struct tide_pool *p)
{
	while (p->epochs != p->epoch_tail && p->epochs->pending == 0) {
		struct epoch *e = p->epochs;
		struct request *req = e->waiters, *next;

		p->epochs = e->next;
		for (; req; req = next) {
			next = req->wait_next;
			tide__flush_written(p, req);
		}
		free(e);
	}
}

int tide__epoch_seal(struct tide_pool *p, struct request *req)
{
	struct epoch *open = calloc(1, sizeof(*open));

	if (!open)
		return -ENOMEM;
	req->wait_next = p->epoch_tail->waiters;
	p->epoch_tail->waiters = req;
	p->epoch_tail->next = open;
	p->epoch_tail = open;
	epochs_retire(p);
	return 0;
}

int tide__epochs_init(struct tide_pool *p)
{
	p->epochs = p->epoch_tail = calloc(1, sizeof(struct epoch));
	return p->epochs ? 0 : -ENOMEM;
}

void tide__epochs_fini(struct tide_pool *p)
{
	while (p->epochs) {
		struct epoch *e = p->epochs;

		p->epochs = e->next;
		free(e);
	}
	p->epoch_tail = NULL;
}

static int writeback_issue(struct tide_io *io)
{
	struct writeback *wb = container_of(io, struct writeback, io);
	struct region *r = wb->region;

	return r->ops->write(r->store, io, wb->buf, (size_t)wb->npages << r->page_shift,
			     tide__store_off(r, wb->first));
}

static struct frame *frame_at(struct tide_pool *p, struct region *r, uint64_t page)
{
	uint32_t f = tide__slot(r, page);

	return f == TIDE_NO_FRAME ? NULL : tide__frame(p, f);
}

static bool page_dirty(struct tide_pool *p, struct region *r, uint64_t page)
{
	struct frame *fr = frame_at(p, r, page);

	return fr && fr->state == FRAME_DIRTY;
}

/*
 * The run of adjacent pages around `page` that `in` takes, at most `max`
 * pages. It reaches forward first: the pages after a victim are the ones
 * the hand takes next, and a flush walks its range upwards. Only the room
 * left goes to the pages before, so a walk does not take again pages it
 * has just passed (a store that failed inline left them dirty).
 * Returns its length; *first gets its first page.
 */
static uint64_t run_around(struct tide_pool *p, struct region *r, uint64_t page, uint64_t max,
			   uint64_t *first, bool (*in)(struct tide_pool *, struct region *, uint64_t))
{
	uint64_t lo = page, hi = page + 1;

	while (hi - lo < max && hi < r->npages && in(p, r, hi))
		hi++;
	while (hi - lo < max && lo > 0 && in(p, r, lo - 1))
		lo--;
	*first = lo;
	return hi - lo;
}

/* The storage error of a write that did not cover `failed` pages of its
 * run: they stay dirty, and the region reports the error once. */
/* After a failed write the region's store gets 1 ms of rest, doubling up
 * to a second while it keeps failing: eviction would otherwise retry the
 * same pages at once, in a loop as fast as the store can fail. */
#define BACKOFF_MIN_MS 1u
#define BACKOFF_MAX_MS 1000u

static void writeback_failed(struct tide_pool *p, struct region *r, ssize_t res,
			     uint64_t failed)
{
	int err = res < 0 ? (int)res : -EIO;

	r->backoff_ms = r->backoff_ms ? 2 * r->backoff_ms : BACKOFF_MIN_MS;
	if (r->backoff_ms > BACKOFF_MAX_MS)
		r->backoff_ms = BACKOFF_MAX_MS;
	r->retry_at = tide__now_ns() + (uint64_t)r->backoff_ms * 1000000;
	/* Then faults waiting for room get their reclaim again. */
	tide__loop_wake_at(p, r->retry_at);
	p->st.c.writeback_errors += failed;
	if (!r->error) {
		r->error = err;
		tide__warn("writing pages back failed (%s); they stay in memory, dirty, "
			   "and the next flush or unmap reports the error", strerror(-err));
	}
}

/*
 * Each page of a finished run takes its next state: DIRTY if it was written
 * meanwhile or not stored, else dropped (eviction) or CLEAN (flush, timer).
 * Then one ioctl per stretch of pages that go the same way: dirty pages get
 * their protection lifted (waking their writers), evicted ones leave.
 */
static void run_settle(struct tide_pool *p, struct region *r, uint64_t first, uint64_t n,
		       uint64_t stored)
{
	size_t ps = r->page_size;

	for (uint64_t q = first; q < first + n; q++) {
		struct frame *fr = frame_at(p, r, q);

		if (q - first >= stored) {
			fr->redirtied = 1;
			fr->referenced = 1;
		}
		if (fr->evicting)
			p->leaving -= ps;
		if (fr->redirtied) {
			fr->state = FRAME_DIRTY;
			tide__dirty_add(p, r, (int64_t)ps);
		} else if (!fr->evicting) {
			fr->state = FRAME_CLEAN;
		}
		/* Still WRITEBACK from here on means: drop it. */
		if (fr->state != FRAME_WRITEBACK)
			fr->evicting = fr->redirtied = 0;
	}
	for (uint64_t q = first, end; q < first + n; q = end) {
		uint8_t state = frame_at(p, r, q)->state;

		for (end = q + 1; end < first + n && frame_at(p, r, end)->state == state; end++)
			;
		if (state == FRAME_DIRTY)
			tide__uffd_wp(p->uffd, tide__page_addr(r, q), (size_t)(end - q) * ps, false, true);
		else if (state == FRAME_WRITEBACK)
			tide__pool_drop_span(p, r, q, end);
	}
}

/* Where a page of a moved run goes once its write is done. */
enum fate { FATE_FREE, FATE_DIRTY, FATE_CLEAN };

static enum fate moved_fate(const struct frame *fr, bool stored)
{
	if (!stored)
		return FATE_DIRTY;          /* not in the store: back, still dirty */
	if (fr->t_fault)
		return fr->want_write ? FATE_DIRTY : FATE_CLEAN;  /* a fault waits */
	return FATE_FREE;
}

/*
 * A moved run's write is done: each page is evicted (its slot free for a
 * fill, direct path; the fixed path freed it at the copy), or goes back
 * into the region when a fault waits on it or the store did not take it
 * (`stored` pages did). Stretches of pages with one fate go back in one
 * call: dirty ones moved, writable; clean ones copied in protected (a moved
 * page would be writable until protected: a write in between would be lost).
 */
static void moved_settle(struct tide_pool *p, struct writeback *wb, uint64_t stored)
{
	struct region *r = wb->region;
	uint64_t first = wb->first, n = wb->npages, now = 0;
	size_t ps = r->page_size;

	for (uint64_t q = first, end; q < first + n; q = end) {
		enum fate fate = moved_fate(frame_at(p, r, q), q - first < stored);
		char *src = (char *)wb->buf + (size_t)(q - first) * ps, *addr = tide__page_addr(r, q);
		size_t len;

		for (end = q + 1; end < first + n &&
		     moved_fate(frame_at(p, r, end), end - first < stored) == fate; end++)
			;
		len = (size_t)(end - q) * ps;
		if (fate == FATE_FREE) {
			if (wb->in_slot)
				tide__spare_free(p, src, len);
		} else if (wb->in_slot && fate == FATE_DIRTY) {
			tide__spare_back(p, src, addr, len);
		} else if (wb->in_slot) {
			/* Clean pages come back protected: copied, never moved. */
			tide__spare_copy_back(p, src, addr, len, true);
			tide__spare_free(p, src, len);
		} else {
			tide__spare_copy_back(p, src, addr, len, fate == FATE_CLEAN);
		}
		for (uint64_t k = q; k < end; k++) {
			uint32_t f = tide__slot(r, k);
			struct frame *fr = tide__frame(p, f);

			p->leaving -= ps;
			fr->moved = 0;
			fr->evicting = 0;
			if (fate == FATE_FREE) {
				p->st.c.evictions++;
				p->st.c.evictions_dirty++;
				p->st.c.evictions_moved++;
				tide__frame_free(p, f);
				continue;
			}
			if (fr->t_fault) {
				now = now ? now : tide__now_ns();
				tide__stats_latency(&p->st, now - fr->t_fault);
			}
			fr->t_fault = 0;
			fr->want_write = 0;
			fr->referenced = 1;
			fr->state = fate == FATE_DIRTY ? FRAME_DIRTY : FRAME_CLEAN;
			if (fate == FATE_DIRTY)
				tide__dirty_add(p, r, (int64_t)ps);
		}
	}
}

static void writeback_done(struct tide_io *io, ssize_t res)
{
	struct writeback *wb = container_of(io, struct writeback, io);
	struct tide_pool *p = io->pool;
	struct region *r = wb->region;
	size_t len = (size_t)wb->npages << r->page_shift;
	/* Pages the store took whole; a short write fails the rest. */
	uint64_t stored = res < 0 ? 0 : (uint64_t)res >> r->page_shift;

	if (stored > wb->npages)
		stored = wb->npages;
	r->busy--;
	wb->epoch->pending--;
	if (stored < wb->npages) {
		writeback_failed(p, r, res, wb->npages - stored);
	} else {
		r->backoff_ms = 0;
		r->retry_at = 0;
	}
	p->st.c.writebacks += stored;
	p->st.c.bytes_written += stored << r->page_shift;
	if (wb->moved)
		moved_settle(p, wb, stored);   /* may copy back from the bounce span */
	else
		run_settle(p, r, wb->first, wb->npages, stored);
	if (!wb->in_slot && wb->buf != tide__page_addr(r, wb->first))
		tide__bounce_put(&p->bounce, wb->buf, len);
	free(wb);
	epochs_retire(p);
}

/* The longest run a write may carry: TIDE_WRITE_MAX, but always one page. */
static uint64_t run_max(const struct tide_pool *p, const struct region *r)
{
	uint64_t max = p->opt.write_max >> r->page_shift;

	return max ? max : 1;
}

/*
 * The pages of a run start their write-back. An eviction takes the victim
 * `victim` out of memory, and the neighbours without a reference bit with
 * it: they are the pages the hand would pick next. Neighbours in use are
 * only cleaned and stay.
 */
static void run_protected(struct tide_pool *p, struct region *r, uint64_t first, uint64_t n,
			  uint64_t victim, bool evict)
{
	size_t ps = r->page_size;

	for (uint64_t q = first; q < first + n; q++) {
		struct frame *fr = frame_at(p, r, q);

		fr->state = FRAME_WRITEBACK;
		fr->redirtied = 0;
		fr->evicting = evict && (q == victim || !fr->referenced);
		if (fr->evicting)
			p->leaving += ps;
	}
	tide__dirty_add(p, r, -(int64_t)(n * ps));
}

/* A dirty page that leaves with a victim next to it: one the hand would
 * take next (no reference bit). */
static bool page_leaves(struct tide_pool *p, struct region *r, uint64_t page)
{
	struct frame *fr = frame_at(p, r, page);

	return fr && fr->state == FRAME_DIRTY && !fr->referenced && !fr->held;
}

static void writeback_issue_run(struct tide_pool *p, struct writeback *wb, struct region *r,
				uint64_t first, uint64_t n, void *buf)
{
	r->busy++;
	p->st.c.store_writes++;
	wb->region = r;
	wb->first = first;
	wb->npages = n;
	wb->buf = buf;
	wb->epoch = p->epoch_tail;
	wb->epoch->pending++;
	wb->io.done = writeback_done;
	wb->io.start = writeback_issue;
	/* A store may complete inline: the run may be gone after this. */
	tide__io_submit(p, &wb->io);
}

/*
 * Eviction by moving (spare.c): the run leaves the region for a spare slot
 * in one UFFDIO_MOVE, with no protect and no drop. The direct path writes
 * it from the slot, which is freed when the write is done; the fixed path
 * copies it into the bounce arena first and frees the slot at once (a
 * write from the arena's physically contiguous memory goes to this VM's
 * disk in fewer, longer segments than one from 4 KiB pages gathered by
 * faults: 2.0 against 1.7 GB/s). Returns the pages covered from f's page
 * on, or -errno when the run cannot move (no slot or bounce span, a page
 * shared or pinned): then it leaves the plain way.
 */
static int writeback_moved(struct tide_pool *p, uint32_t f)
{
	struct frame *fr = tide__frame(p, f);
	struct region *r = fr->region;
	size_t ps = r->page_size, len, blen = 0;
	uint64_t first, n = run_around(p, r, fr->page, run_max(p, r), &first, page_leaves);
	bool fixed = p->writeback == TIDE_WRITEBACK_FIXED;
	struct writeback *wb = calloc(1, sizeof(*wb));
	char *at, *buf = NULL;
	int ret;

	if (!wb)
		return -ENOMEM;
	if (fixed && !(buf = tide__bounce_get_span(&p->bounce, ps, n * ps, &blen))) {
		ret = -EAGAIN;
		goto fail;
	}
	at = tide__spare_room(p, ps, fixed ? blen : n * ps, &len);
	if (!at) {
		ret = -EAGAIN;
		goto fail;
	}
	if (len < n * ps) {
		/* A shorter run, from f on where it can. */
		uint64_t last_start = first + n - len / ps;

		first = fr->page < last_start ? fr->page : last_start;
		n = len / ps;
	}
	if (fixed && blen > len) {
		tide__bounce_put(&p->bounce, buf + len, blen - len);
		blen = len;
	}
	ret = tide__spare_out(p, at, tide__page_addr(r, first), len);
	if (ret < 0)
		goto fail;
	if (fixed) {
		memcpy(buf, at, len);
		tide__spare_free(p, at, len);
	}
	for (uint64_t q = first; q < first + n; q++) {
		struct frame *x = frame_at(p, r, q);

		x->state = FRAME_WRITEBACK;
		x->evicting = 1;
		x->moved = 1;
		x->redirtied = 0;
		/* From now on these mean: a fault waits for the page. */
		x->t_fault = 0;
		x->want_write = 0;
		p->leaving += ps;
	}
	tide__dirty_add(p, r, -(int64_t)len);
	wb->moved = true;
	wb->in_slot = !fixed;
	wb->io.buf_index = fixed && p->bounce.registered ? 0 : -1;
	ret = (int)(first + n - fr->page);
	writeback_issue_run(p, wb, r, first, n, fixed ? buf : at);
	return ret;

fail:
	if (buf)
		tide__bounce_put(&p->bounce, buf, blen);
	free(wb);
	return ret;
}

/*
 * Write back the dirty page of frame `f` and the dirty pages next to it, in
 * one store write of at most TIDE_WRITE_MAX bytes. Returns the pages the
 * run covers from f's page on (>= 1), so a caller walking pages upwards can
 * step over them: a store that fails inline leaves them dirty, and they
 * must not be written again by the same walk. -EAGAIN when the bounce
 * arena has no page free (a completion will free some).
 */
int tide__writeback_start(struct tide_pool *p, uint32_t f, bool evict)
{
	struct frame *fr = tide__frame(p, f);
	struct region *r = fr->region;
	size_t ps = r->page_size, len;
	uint64_t first, n = run_around(p, r, fr->page, run_max(p, r), &first, page_dirty);
	struct writeback *wb;
	void *buf = NULL;
	char *addr;
	int ret, covered;

	if (evict && p->spare.on && (ret = writeback_moved(p, f)) > 0)
		return ret;
	if (p->writeback == TIDE_WRITEBACK_FIXED) {
		buf = tide__bounce_get_span(&p->bounce, ps, n * ps, &len);
		if (!buf)
			return -EAGAIN;
		if (len < n * ps) {
			/* The arena is busy: a shorter run, from f on where it can. */
			uint64_t last_start = first + n - len / ps;

			first = fr->page < last_start ? fr->page : last_start;
			n = len / ps;
		}
	}
	addr = tide__page_addr(r, first);
	if (p->writeback != TIDE_WRITEBACK_FIXED)
		buf = addr;
	len = n * ps;
	covered = (int)(first + n - fr->page);
	wb = calloc(1, sizeof(*wb));
	if (!wb) {
		ret = -ENOMEM;
		goto fail_alloc;
	}
	/* From here a write to the run blocks until writeback_done(). */
	ret = tide__uffd_wp(p->uffd, addr, len, true, false);
	if (ret < 0)
		goto fail_protect;
	if (buf != addr)
		memcpy(buf, addr, len);
	run_protected(p, r, first, n, fr->page, evict);
	wb->io.buf_index = (buf != addr && p->bounce.registered) ? 0 : -1;
	writeback_issue_run(p, wb, r, first, n, buf);
	return covered;

fail_protect:
	free(wb);
fail_alloc:
	if (buf != addr)
		tide__bounce_put(&p->bounce, buf, len);
	return ret;
}

/*
 * Background write-back: clean dirty pages while nobody waits, so eviction
 * can mostly just drop, and so pages written again are seen (they are
 * protected once clean) and earn their reference bit.
 */
void tide__writeback_timer(struct tide_pool *p)
{
	/* Writes, not pages: a run of adjacent pages is one write. */
	uint64_t budget = p->opt.queue_depth > p->inflight ? p->opt.queue_depth - p->inflight : 0;
	uint64_t now = tide__now_ns();
	uint32_t f = p->hand;

	if (f == TIDE_NO_FRAME || !p->dirty)
		return;
	while (budget) {
		struct frame *fr = tide__frame(p, f);
		uint32_t next = fr->next;

		if (fr->state == FRAME_DIRTY && !fr->region->dying &&
		    !tide__region_backing_off(fr->region, now)) {
			if (tide__writeback_start(p, f, false) < 0)
				break;
			budget--;
		}
		f = next;
		if (f == p->hand)
			break;
	}
}
