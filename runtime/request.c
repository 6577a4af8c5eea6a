/*
 * Requests from app threads, run on the service thread: map, flush, unmap,
 * prefetch, stats, stop. Long ones are small state machines that resume
 * whenever a completion frees what they wait for, so the loop never blocks.
 *
 *   flush:    write back the dirty pages of the range -> seal the epoch ->
 *             when every older write-back is done, fdatasync the store.
 *   unmap:    flush the whole region -> wait until no I/O of the region is
 *             in flight and nothing is dirty again -> unregister, release.
 *   prefetch: fill the missing pages of the range (at most what the low
 *             watermark holds) -> wait for the fills.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

static void stats_snapshot(struct tide_pool *p, struct tide_stats *out)
{
	tide__stats_snapshot(&p->st, out);
	out->resident_bytes = p->resident;
	out->dirty_bytes = p->dirty;
	out->budget = __atomic_load_n(&p->share, __ATOMIC_RELAXED);
	out->bounce_bytes = p->bounce.size;
	out->regions = p->nregions;
	out->writeback = p->writeback;
	out->recycle = p->spare.on;
	out->install_thread = p->installer != NULL;
	out->odirect = __atomic_load_n(&p->odirect_used, __ATOMIC_RELAXED);
}

static bool stats_step(struct tide_pool *p, struct request *req)
{
	if (p->offloads_back < req->cursor)
		return false;
	stats_snapshot(p, req->stats);
	if (req->raw)
		*req->raw = p->st;
	tide__request_finish(p, req, 0);
	return true;
}

void tide__request_start(struct tide_pool *p, struct request *req)
{
	struct region *r;

	switch (req->kind) {
	case REQ_MAP:
		tide__request_finish(p, req, tide__region_attach(p, req->region));
		return;
	case REQ_STATS:
		/* Pages the install thread has put in may be in use already:
		 * the snapshot waits until the fills handed over before it are
		 * back and counted (it runs FIFO, so a count says which). */
		req->cursor = p->offloads;
		if (!stats_step(p, req)) {
			req->next = p->active;
			p->active = req;
		}
		return;
	case REQ_STOP:
		if (p->nregions) {
			tide__request_finish(p, req, -EBUSY);
			return;
		}
		tide__loop_stop(p);
		tide__request_finish(p, req, 0);
		return;
	case REQ_FLUSH:
	case REQ_UNMAP:
	case REQ_PREFETCH:
		break;
	}
	r = tide__region_find(p, req->addr);
	if (!r || r->base != (char *)req->addr || r->dying) {
		tide__request_finish(p, req, -EINVAL);
		return;
	}
	if (req->kind == REQ_UNMAP)
		r->dying = true;
	req->region = r;
	req->cursor = req->first;
	req->result = 0;
	req->next = p->active;
	p->active = req;
}

/* Write back the dirty pages of [cursor, end). False while waiting for room. */
static bool write_range(struct tide_pool *p, struct request *req)
{
	struct region *r = req->region;

	while (req->cursor < req->end) {
		uint32_t f = tide__slot(r, req->cursor);
		int ret;

		if (f == TIDE_NO_FRAME || tide__frame(p, f)->state != FRAME_DIRTY) {
			req->cursor++;
			continue;
		}
		ret = tide__writeback_start(p, f, false);
		if (ret == -EAGAIN)
			return false;
		if (ret < 0 && !req->result)
			req->result = ret;
		/* The pages after this one went in the same write. */
		req->cursor += ret > 0 ? (uint64_t)ret : 1;
	}
	return true;
}

static int sync_issue(struct tide_io *io)
{
	struct request *req = container_of(io, struct request, io);
	struct region *r = req->region;

	return r->ops->flush(r->store, io);
}

static void sync_done(struct tide_io *io, ssize_t res)
{
	struct request *req = container_of(io, struct request, io);

	if (res < 0 && !req->result)
		req->result = (int)res;
	else if (res >= 0)
		io->pool->st.c.flushes++;
	req->step = STEP_DONE;
}

/* Every write-back issued before this flush has completed. */
void tide__flush_written(struct tide_pool *p, struct request *req)
{
	struct region *r = req->region;

	if (!(r->prot & TIDE_PROT_WRITE) || !r->ops->flush) {
		req->step = STEP_DONE;
		return;
	}
	req->io.done = sync_done;
	req->io.start = sync_issue;
	req->io.buf_index = -1;
	tide__io_submit(p, &req->io);
}

/* Release everything of a region that nothing references any more. */
static void region_release(struct tide_pool *p, struct region *r)
{
	tide__waiters_forget(p, r);
	tide__fill_unstage_drop(p, r);
	tide__uffd_unregister(p->uffd, r->base, r->length);
	for (uint32_t f = 0; f < p->frames_cap && r->resident; f++)
		if (p->frames[f].region == r && p->frames[f].state != FRAME_FREE)
			tide__frame_free(p, f);
	tide__region_detach(p, r);
	tide__region_free(r);
}

/* Advance a flush or unmap. True when the request is finished. */
static bool flush_step(struct tide_pool *p, struct request *req)
{
	struct region *r = req->region;
	int err;

	switch (req->step) {
	case STEP_START:
		req->step = STEP_WRITEBACK;
		/* fall through */
	case STEP_WRITEBACK:
		if (!write_range(p, req))
			return false;
		req->step = STEP_SYNC;
		err = tide__epoch_seal(p, req);
		if (err < 0) {
			req->result = err;
			req->step = STEP_DONE;
		}
		return false;
	case STEP_SYNC:
		return false;
	case STEP_DONE:
		/* A write-back error is reported once, like errseq: the pages it
		 * concerns are still dirty, so the next flush tries them again. */
		if (r->error && !req->result)
			req->result = r->error;
		r->error = 0;
		if (req->kind == REQ_FLUSH || req->result < 0) {
			r->dying = false;
			tide__request_finish(p, req, req->result < 0 ? -EIO : 0);
			return true;
		}
		req->step = STEP_DRAIN;
		/* fall through */
	case STEP_DRAIN:
		if (r->busy)
			return false;
		if (r->dirty) {
			/* Written to while we flushed: write those pages too. */
			req->cursor = req->first;
			req->step = STEP_WRITEBACK;
			return flush_step(p, req);
		}
		region_release(p, r);
		tide__request_finish(p, req, 0);
		return true;
	}
	return false;
}

static bool prefetch_step(struct tide_pool *p, struct request *req)
{
	struct region *r = req->region;

	if (req->step == STEP_START) {
		uint64_t cap;

		/* A shard asks a sibling for the room the range needs first,
		 * if it lacks it, and waits for the answer: one pass of the
		 * sibling's. */
		if (p->parent && !req->asked) {
			uint64_t need = (req->end - req->cursor) << r->page_shift;

			req->asked = true;
			if (p->resident + need > tide__pool_low(p))
				tide__shard_ask(p, need);
		}
		if (p->parent && tide__shard_asking(p))
			return false;
		cap = tide__pool_low(p) / r->page_size;

		while (req->cursor < req->end && req->filled < cap) {
			uint32_t n = 0;
			int ret;

			if (tide__slot(r, req->cursor) != TIDE_NO_FRAME) {
				req->cursor++;
				continue;
			}
			/* Adjacent missing pages go in one read. */
			while (req->cursor + n < req->end && n < tide__fill_run_max(r) &&
			       req->filled + n < cap && tide__slot(r, req->cursor + n) == TIDE_NO_FRAME)
				n++;
			ret = tide__fill_run(p, r, req->cursor, n, false, FILL_PREFETCH, 0);
			if (ret < 0) {
				tide__pool_reclaim(p);
				return false;
			}
			req->cursor += (uint64_t)ret;
			req->filled += (uint64_t)ret;
			tide__pool_reclaim(p);
		}
		req->step = STEP_DRAIN;
	}
	if (p->prefetch_inflight)
		return false;
	/* A run's trigger page waits in bounce memory, unmapped: the range is
	 * to be mapped, so it goes in too. */
	tide__fill_unstage_range(p, r, req->first, req->end);
	tide__request_finish(p, req, 0);
	return true;
}

void tide__requests_progress(struct tide_pool *p)
{
	struct request **pp = &p->active;

	while (*pp) {
		struct request *req = *pp, *next = req->next;

		/* A finished request belongs to its (woken) caller again: do not
		 * touch it after the step returns true. */
		bool done = req->kind == REQ_STATS ? stats_step(p, req) :
			    req->kind == REQ_PREFETCH ? prefetch_step(p, req) : flush_step(p, req);

		if (done)
			*pp = next;
		else
			pp = &req->next;
	}
}
