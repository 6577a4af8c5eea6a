/*
 * Write-back: protect, copy or pin, write, then drop or keep.
 *
 * A dirty page is write-protected first (UFFDIO_WRITEPROTECT), so from then
 * on a write blocks in the kernel until we decide; what reaches the store is
 * exactly what the page held. Two ways to get it there:
 *   fixed:  memcpy into the registered bounce arena and WRITE_FIXED from it.
 *           The only pinned memory is runtime-owned and never uffd-registered.
 *   direct: O_DIRECT write from the protected page itself: a short-term read
 *           pin. On 5.8 such a pin broke COW like a write and hung the
 *           service thread on its own fault (docs/kernel.md), so `auto`
 *           picks it only where the start-up probe shows it is safe.
 * The page stays protected until the write completes. A write that arrived
 * meanwhile (`redirtied`) keeps the page resident and dirty; otherwise an
 * eviction drops it and a flush leaves it clean and protected. A failed
 * write keeps the page dirty and records the error for the next flush or
 * unmap: a storage error never drops data.
 *
 * Epochs order flushes after write-backs: each write-back belongs to the
 * open epoch; a flush seals it, and runs its fdatasync when that epoch and
 * all older ones have no write-back in flight.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct writeback {
	struct tide_io io;
	uint32_t frame;
	void *buf;
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
	struct frame *fr = tide__frame(io->pool, wb->frame);
	struct region *r = fr->region;

	return r->ops->write(r->store, io, wb->buf, r->page_size, tide__store_off(r, fr->page));
}

static void writeback_done(struct tide_io *io, ssize_t res)
{
	struct writeback *wb = container_of(io, struct writeback, io);
	struct tide_pool *p = io->pool;
	uint32_t f = wb->frame;
	struct frame *fr = tide__frame(p, f);
	struct region *r = fr->region;
	size_t ps = r->page_size;
	char *addr = tide__page_addr(r, fr->page);

	if (wb->buf != addr)
		tide__bounce_put(&p->bounce, wb->buf, ps);
	if (fr->evicting)
		p->leaving -= ps;
	r->busy--;
	wb->epoch->pending--;
	if (res != (ssize_t)ps) {
		int err = res < 0 ? (int)res : -EIO;

		p->st.c.writeback_errors++;
		if (!r->error) {
			r->error = err;
			tide__warn("writing a page back failed (%s); it stays in memory, dirty, "
				   "and the next flush or unmap reports the error", strerror(-err));
		}
		fr->redirtied = 1;
		fr->referenced = 1;
	} else {
		p->st.c.writebacks++;
		p->st.c.bytes_written += ps;
	}
	if (fr->redirtied) {
		fr->state = FRAME_DIRTY;
		tide__dirty_add(p, r, (int64_t)ps);
		tide__uffd_wp(p->uffd, addr, ps, false, true);
	} else if (fr->evicting) {
		p->st.c.evictions_dirty++;
		tide__frame_drop(p, f);
	} else {
		fr->state = FRAME_CLEAN;
	}
	if (fr->state != FRAME_FREE)
		fr->evicting = fr->redirtied = 0;
	free(wb);
	epochs_retire(p);
}

int tide__writeback_start(struct tide_pool *p, uint32_t f, bool evict)
{
	struct frame *fr = tide__frame(p, f);
	struct region *r = fr->region;
	size_t ps = r->page_size;
	char *addr = tide__page_addr(r, fr->page);
	struct writeback *wb;
	void *buf = addr;
	int ret;

	if (p->writeback == TIDE_WRITEBACK_FIXED) {
		buf = tide__bounce_get(&p->bounce, ps);
		if (!buf)
			return -EAGAIN;
	}
	wb = malloc(sizeof(*wb));
	if (!wb) {
		ret = -ENOMEM;
		goto fail_alloc;
	}
	/* From here a write to the page blocks until writeback_done(). */
	ret = tide__uffd_wp(p->uffd, addr, ps, true, false);
	if (ret < 0)
		goto fail_protect;
	if (buf != addr)
		memcpy(buf, addr, ps);
	fr->state = FRAME_WRITEBACK;
	fr->evicting = evict;
	fr->redirtied = 0;
	tide__dirty_add(p, r, -(int64_t)ps);
	if (evict)
		p->leaving += ps;
	r->busy++;
	wb->frame = f;
	wb->buf = buf;
	wb->epoch = p->epoch_tail;
	wb->epoch->pending++;
	wb->io.done = writeback_done;
	wb->io.start = writeback_issue;
	wb->io.buf_index = (buf != addr && p->bounce.registered) ? 0 : -1;
	tide__io_submit(p, &wb->io);
	return 0;

fail_protect:
	free(wb);
fail_alloc:
	if (buf != addr)
		tide__bounce_put(&p->bounce, buf, ps);
	return ret;
}

/*
 * Background write-back: clean dirty pages while nobody waits, so eviction
 * can mostly just drop, and so pages written again are seen (they are
 * protected once clean) and earn their reference bit.
 */
void tide__writeback_timer(struct tide_pool *p)
{
	uint32_t budget = p->opt.queue_depth, f = p->hand;

	if (f == TIDE_NO_FRAME || !p->dirty)
		return;
	do {
		struct frame *fr = tide__frame(p, f);
		uint32_t next = fr->next;

		if (fr->state == FRAME_DIRTY && !fr->region->dying &&
		    tide__writeback_start(p, f, false) < 0)
			break;
		if (fr->state == FRAME_WRITEBACK)
			budget--;
		f = next;
	} while (f != p->hand && budget);
}
