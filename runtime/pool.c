/*
 * Frames, the budget and the eviction policy.
 *
 * A frame describes one resident (or arriving) page. Resident frames sit on
 * a CLOCK ring in the order they arrived. A user-space pager sees only
 * faults, so the reference bit is set by what it can see: the fill of a
 * demand fault and every write fault. Clean pages are kept write-protected
 * (installed so after a read fault, protected again after write-back), so
 * the first write after each clean period is seen too. The hand clears set
 * bits and evicts the first page found without one: pages touched since the
 * hand last passed get a second chance, which FIFO (umap's policy) lacks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"


static int frames_grow(struct tide_pool *p)
{
	uint32_t cap = p->frames_cap ? p->frames_cap * 2 : 1024;
	struct frame *f = realloc(p->frames, (size_t)cap * sizeof(*f));

	if (!f)
		return -ENOMEM;
	memset(f + p->frames_cap, 0, (size_t)(cap - p->frames_cap) * sizeof(*f));
	/* New frames go on the free list, lowest index first. */
	for (uint32_t i = cap; i-- > p->frames_cap;) {
		f[i].next = p->free_frames;
		p->free_frames = i;
	}
	p->frames = f;
	p->frames_cap = cap;
	return 0;
}

uint32_t tide__frame_alloc(struct tide_pool *p, struct region *r, uint64_t page)
{
	struct frame *fr;
	uint32_t f;

	if (p->free_frames == TIDE_NO_FRAME && frames_grow(p) < 0)
		return TIDE_NO_FRAME;
	f = p->free_frames;
	fr = &p->frames[f];
	p->free_frames = fr->next;
	memset(fr, 0, sizeof(*fr));
	fr->region = r;
	fr->page = page;
	fr->next = fr->prev = TIDE_NO_FRAME;
	fr->state = FRAME_FILLING;
	tide__slot_set(r, page, f);
	r->resident++;
	/* Sibling shards read it, deciding what they may ask this one for. */
	__atomic_store_n(&p->resident, p->resident + r->page_size, __ATOMIC_RELAXED);
	if (p->resident > p->st.c.peak_resident_bytes)
		p->st.c.peak_resident_bytes = p->resident;
	return f;
}

static void ring_unlink(struct tide_pool *p, uint32_t f)
{
	struct frame *fr = &p->frames[f];

	if (fr->next == f) {
		p->hand = TIDE_NO_FRAME;
	} else {
		p->frames[fr->prev].next = fr->next;
		p->frames[fr->next].prev = fr->prev;
		if (p->hand == f)
			p->hand = fr->next;
	}
	fr->next = fr->prev = TIDE_NO_FRAME;
}

void tide__frame_resident(struct tide_pool *p, uint32_t f)
{
	struct frame *fr = &p->frames[f];

	if (p->hand == TIDE_NO_FRAME) {
		fr->next = fr->prev = f;
		p->hand = f;
		return;
	}
	/* Just behind the hand: the last place it looks. */
	fr->next = p->hand;
	fr->prev = p->frames[p->hand].prev;
	p->frames[fr->prev].next = f;
	p->frames[p->hand].prev = f;
}

void tide__frame_free(struct tide_pool *p, uint32_t f)
{
	struct frame *fr = &p->frames[f];
	struct region *r = fr->region;

	if (fr->next != TIDE_NO_FRAME)
		ring_unlink(p, f);
	if (fr->state == FRAME_DIRTY)
		tide__dirty_add(p, r, -(int64_t)r->page_size);
	tide__slot_set(r, fr->page, TIDE_NO_FRAME);
	r->resident--;
	__atomic_store_n(&p->resident, p->resident - r->page_size, __ATOMIC_RELAXED);
	fr->state = FRAME_FREE;
	fr->region = NULL;
	fr->next = p->free_frames;
	p->free_frames = f;
}

bool tide__pool_has_room(struct tide_pool *p, size_t len)
{
	return p->resident + len <= tide__pool_budget(p);
}

/* Resident bytes that are not on their way out: what the watermarks judge. */
static inline uint64_t staying(const struct tide_pool *p)
{
	return p->resident - p->leaving;
}

/* With a deep write-back queue the pool sits near its budget: read-ahead
 * that waited for residency to fall below the high watermark would leave a
 * sequential app to fault, wait and be woken page by page. Every fill is
 * still capped by the budget (tide__pool_has_room). */
uint64_t tide__pool_ahead_room(const struct tide_pool *p)
{
	uint64_t high = tide__pool_high(p);

	return staying(p) < high ? high - staying(p) : 0;
}

#define DROP_BATCH 256

static int victim_order(const void *a, const void *b)
{
	const struct frame *x = *(struct frame *const *)a, *y = *(struct frame *const *)b;
	uintptr_t ax = (uintptr_t)tide__page_addr(x->region, x->page);
	uintptr_t ay = (uintptr_t)tide__page_addr(y->region, y->page);

	return ax < ay ? -1 : ax > ay;
}

/* MADV_DONTNEED never blocks here (EVENT_REMOVE is not enabled); the next
 * access to a dropped page is a MISSING fault.
 * Drop the ranges in one process_madvise(2) call where the kernel takes
 * MADV_DONTNEED for the caller's own pidfd (6.13+), batching the TLB flush
 * of the whole vector (6.16+); otherwise, or for what it did not take, one
 * madvise per range. Returns the number of calls made. */
static unsigned drop_ranges(struct tide_pool *p, struct iovec *iov, unsigned n)
{
	unsigned calls = 0, i = 0;

	if (p->drop_pidfd >= 0 && n > 1) {
		ssize_t done = syscall(SYS_process_madvise, p->drop_pidfd, iov, (size_t)n,
				       MADV_DONTNEED, 0U);

		calls++;
		if (done < 0) {
			if (errno == EINVAL || errno == ENOSYS || errno == EPERM) {
				close(p->drop_pidfd);
				p->drop_pidfd = -1;
			}
			done = 0;
		}
		/* It stops at the first range it could not advise. */
		for (; i < n && (size_t)done >= iov[i].iov_len; i++)
			done -= (ssize_t)iov[i].iov_len;
	}
	for (; i < n; i++, calls++)
		madvise(iov[i].iov_base, iov[i].iov_len, MADV_DONTNEED);
	return calls;
}

/* Pages [first, end) of r, just written back for eviction, leave in one
 * call. */
void tide__pool_drop_span(struct tide_pool *p, struct region *r, uint64_t first, uint64_t end)
{
	struct iovec iov = {
		.iov_base = tide__page_addr(r, first),
		.iov_len = (size_t)(end - first) << r->page_shift,
	};

	p->st.c.drop_calls += drop_ranges(p, &iov, 1);
	for (uint64_t q = first; q < end; q++) {
		p->st.c.evictions++;
		p->st.c.evictions_dirty++;
		tide__frame_free(p, tide__slot(r, q));
	}
}

/*
 * Drop a batch of clean victims, adjacent pages merged into one range: each
 * madvise costs a TLB shootdown on the other vCPU (~17 us here) when an app
 * thread runs there, so the batch goes in as few calls as the kernel allows.
 */
static void drop_batch(struct tide_pool *p, uint32_t *victims, unsigned n)
{
	struct frame *byaddr[DROP_BATCH];
	struct iovec iov[DROP_BATCH];
	unsigned nr = 0;

	for (unsigned i = 0; i < n; i++)
		byaddr[i] = &p->frames[victims[i]];
	qsort(byaddr, n, sizeof(byaddr[0]), victim_order);
	for (unsigned i = 0; i < n;) {
		struct region *r = byaddr[i]->region;
		char *start = tide__page_addr(r, byaddr[i]->page), *end = start + r->page_size;

		while (++i < n && byaddr[i]->region == r &&
		       tide__page_addr(r, byaddr[i]->page) == end)
			end += r->page_size;
		iov[nr].iov_base = start;
		iov[nr++].iov_len = (size_t)(end - start);
	}
	p->st.c.drop_calls += drop_ranges(p, iov, nr);
	for (unsigned i = 0; i < n; i++) {
		p->st.c.evictions++;
		tide__frame_free(p, (uint32_t)(byaddr[i] - p->frames));
	}
}

void tide__pool_reclaim(struct tide_pool *p)
{
	tide__pool_reclaim_for(p, 0);
}

void tide__pool_reclaim_for(struct tide_pool *p, uint64_t want)
{
	uint32_t victims[DROP_BATCH];
	uint64_t scanned = 0, limit, dropping = 0, need = p->waiting_bytes + want, now;
	uint64_t retry = UINT64_MAX;  /* the earliest back-off end of a page passed over */
	uint64_t low;
	unsigned n = 0;

	if (staying(p) + need <= tide__pool_high(p))
		return;
	/* A shard asks a sibling for budget, and evicts meanwhile: the answer
	 * comes in the sibling's next pass. */
	if (p->parent)
		tide__shard_ask(p, need);
	low = tide__pool_low(p);
	now = tide__now_ns();
	limit = 2 * (p->resident / TIDE_MIN_PAGE) + 2;
	while (p->hand != TIDE_NO_FRAME &&
	       staying(p) - dropping + need > low &&
	       scanned++ < limit) {
		uint32_t f = p->hand;
		struct frame *fr = &p->frames[f];

		p->hand = fr->next;
		if (fr->state == FRAME_WRITEBACK || fr->evicting || fr->held)
			continue;
		if (fr->referenced) {
			fr->referenced = 0;
			continue;
		}
		if (fr->state == FRAME_CLEAN) {
			/* Still on the ring until the batch goes: mark it so the
			 * hand does not pick it twice. */
			fr->evicting = 1;
			victims[n++] = f;
			dropping += fr->region->page_size;
			if (n == DROP_BATCH) {
				drop_batch(p, victims, n);
				n = 0;
				dropping = 0;
			}
			continue;
		}
		/* Dirty: leaves after its write-back. Out of bounce space means
		 * wait for a completion, which runs reclaim again; a store that
		 * failed is left alone until its back-off ends. */
		if (tide__region_backing_off(fr->region, now)) {
			if (fr->region->retry_at < retry)
				retry = fr->region->retry_at;
			continue;
		}
		if (tide__writeback_start(p, f, true) == -EAGAIN)
			break;
	}
	if (n)
		drop_batch(p, victims, n);
	/* Come back when the first of them may be written: the timer set at
	 * the failure may have been for another region's earlier end. */
	if (retry != UINT64_MAX)
		tide__loop_wake_at(p, retry);
}
