/*
 * A fault arrives: decide what the page needs. Missing pages are filled (or
 * wait for room); a write to a clean page makes it dirty and lifts the
 * protection; faults on pages already on their way are coalesced, because
 * the ioctl that finishes the first one wakes every thread waiting on the
 * page.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

static void wait_for_room(struct tide_pool *p, struct region *r, uint64_t page, bool write,
			  uint64_t t_fault)
{
	struct pending_fault *pf = malloc(sizeof(*pf));

	if (!pf) {
		/* The thread stays blocked in the kernel; a wake makes it fault
		 * again, and by then there may be memory. */
		tide__uffd_wake(p->uffd, tide__page_addr(r, page), r->page_size);
		return;
	}
	pf->region = r;
	pf->page = page;
	pf->write = write;
	pf->t_fault = t_fault;
	pf->next = NULL;
	*p->waiting_tail = pf;
	p->waiting_tail = &pf->next;
	p->waiting_bytes += r->page_size;
}

/* The read-ahead window of one stream: TIDE_READ_AHEAD pages, at most
 * RA_MAX_BYTES (so a 2 MiB-page region reads two pages ahead), and at most
 * an eighth of the budget shared by the region's established streams, so
 * that making room for them never evicts what the app is about to use.
 * Adjacent pages go in one read, so the window is a few large I/Os, not one
 * per page. */
#define RA_MAX_BYTES (4u << 20)

static uint64_t ra_window(const struct tide_pool *p, const struct region *r)
{
	uint64_t n = p->opt.read_ahead, max = RA_MAX_BYTES, share = tide__pool_budget(p) / 8;
	unsigned live = 0;

	for (unsigned i = 0; i < TIDE_RA_STREAMS; i++)
		live += r->streams[i].run >= 2;
	if (live > 1)
		share /= live;
	if (max > share)
		max = share;
	if (n > max / r->page_size)
		n = max / r->page_size;
	return n;
}

/* Read missing pages from *q on, up to `to`, adjacent ones in one read,
 * while there is room below the high watermark. *last gets the first page
 * of the last read started. */
static void ra_issue(struct tide_pool *p, struct region *r, struct ra_stream *s, uint64_t *q,
		     uint64_t to, uint64_t *last)
{
	while (*q <= to) {
		uint64_t room = tide__pool_ahead_room(p) / r->page_size;
		uint32_t n = 0;
		int ret;

		if (tide__slot(r, *q) != TIDE_NO_FRAME) {
			(*q)++;
			continue;
		}
		while (*q + n <= to && n < tide__fill_run_max(r) && n < room &&
		       tide__slot(r, *q + n) == TIDE_NO_FRAME)
			n++;
		if (!n)
			return;
		ret = tide__fill_run(p, r, *q, n, s->write, FILL_READAHEAD, 0);
		if (ret <= 0)
			return;
		*last = *q;
		*q += (uint64_t)ret;
	}
}

/* Fill the missing pages of [from, to] ahead of stream s, within the room
 * below the high watermark. Reads of pages filled ahead do not fault, so
 * the run's next demand fault is the first page past what was filled: it
 * continues the run. The first page still being read from half a window
 * before the new end on is the run's trigger (fill.c): its fault tops the
 * window up early. */
static void ra_fill(struct tide_pool *p, struct region *r, struct ra_stream *s, uint64_t from,
		    uint64_t to)
{
	uint64_t q = from, half = ra_window(p, r) / 2, last = UINT64_MAX;

	if (to >= r->npages)
		to = r->npages - 1;
	if (from > to)
		return;
	/* What fits goes to the disk first. Then a full pool evicts for the
	 * rest: waiting for the next demand fault to reclaim would let the
	 * queue drain, once per reclaim cycle. */
	ra_issue(p, r, s, &q, to, &last);
	if (q <= to) {
		tide__ring_push(p);
		tide__pool_reclaim_for(p, (to - q + 1) << r->page_shift);
		ra_issue(p, r, s, &q, to, &last);
	}
	if (last != UINT64_MAX) {
		uint64_t t = q > half ? q - half : 0;

		if (t <= s->at)
			t = s->at + 1;
		for (; t < q; t++) {
			uint32_t f = tide__slot(r, t);

			/* Not one the install thread has: it was read already. */
			if (f != TIDE_NO_FRAME && tide__frame(p, f)->state == FRAME_FILLING &&
			    !tide__frame(p, f)->offloaded) {
				tide__frame(p, f)->trigger = (uint8_t)(1 + (s - r->streams));
				break;
			}
		}
	}
	if (q > s->next)
		s->next = q;
}

/* How willingly a stream's slot goes to a new run: unused slots first,
 * then runs that are not sequential yet, then established ones. */
static int ra_class(const struct ra_stream *s)
{
	return s->next == UINT64_MAX ? 0 : s->run < 2 ? 1 : 2;
}

/* The stream a fault on `page` continues: the one that faults there next
 * (*cont); else the slot for a new one, the least recently used of the
 * lowest class. */
static struct ra_stream *ra_stream_for(struct tide_pool *p, struct region *r, uint64_t page,
				       bool *cont)
{
	struct ra_stream *s, *pick = NULL;

	for (s = r->streams; s < r->streams + TIDE_RA_STREAMS; s++) {
		if (s->next == page) {
			*cont = true;
			return s;
		}
		if (!pick || ra_class(s) < ra_class(pick) ||
		    (ra_class(s) == ra_class(pick) && s->used < pick->used))
			pick = s;
	}
	*cont = false;
	/* Its run is over: its trigger is just a page read ahead. */
	tide__fill_unstage(p, r, pick);
	return pick;
}

/* An established stream whose window holds `page`: the app caught up with
 * pages it is reading, or reached what they read. */
static struct ra_stream *ra_stream_near(const struct tide_pool *p, struct region *r, uint64_t page)
{
	uint64_t n = ra_window(p, r);

	for (struct ra_stream *s = r->streams; s < r->streams + TIDE_RA_STREAMS; s++)
		if (s->run >= 2 && page < s->next && page + 2 * n >= s->next)
			return s;
	return NULL;
}

/* The stream whose trigger page `page` is: a FRAME_STAGED page is always
 * one stream's (fill.c). */
static struct ra_stream *ra_stream_staging(struct region *r, uint64_t page)
{
	for (struct ra_stream *s = r->streams; s < r->streams + TIDE_RA_STREAMS; s++)
		if (s->staged_buf && s->staged_page == page)
			return s;
	return NULL;
}

/* Sequential runs of demand faults get the next pages filled ahead; a
 * random pattern never starts a run. A run of write faults (a writable
 * region) gets its pages installed writable and dirty: a sequential writer
 * would otherwise take a write-protect fault on every page, and the cost of
 * a guess that is wrong is one write-back of unchanged data. */
static void read_ahead(struct tide_pool *p, struct region *r, uint64_t page, bool write)
{
	bool cont;
	struct ra_stream *s = ra_stream_for(p, r, page, &cont);
	uint64_t n;

	if (cont) {
		s->run++;
		s->write &= write && (r->prot & TIDE_PROT_WRITE);
	} else {
		s->run = 0;
		s->write = write && (r->prot & TIDE_PROT_WRITE);
	}
	s->next = page + 1;
	s->at = page;
	s->used = ++r->ra_tick;
	n = ra_window(p, r);
	if (n && s->run >= 2)
		ra_fill(p, r, s, page + 1, page + n);
}

/* The app caught up with a page still arriving inside the run's window, or
 * reached its trigger, or waits for a read that just completed: top the
 * window up from where it ends, so the queue stays full instead of draining
 * until the run faults past its end. */
static void read_ahead_more(struct tide_pool *p, struct region *r, struct ra_stream *s, uint64_t page)
{
	uint64_t n = ra_window(p, r);

	/* In steps of a whole read, so the window moves in large I/Os. */
	uint64_t step = n / 2 < tide__fill_read_max(r) ? n / 2 : tide__fill_read_max(r);

	if (n && s->run >= 2 && page < s->next && page + n >= s->next + (step ? step - 1 : 0))
		ra_fill(p, r, s, s->next, page + n);
}

/*
 * Read-ahead pages [first, first + n) of r are read, about to go in. When a
 * run's latest fault is at or before them within the window, the app runs
 * through them at memory speed as soon as they are in (it outruns the disk
 * here: 2.6 GB/s of reads, 3.6 GB/s of UFFDIO_COPY, the app faster still),
 * so the window grows from their end now, before the install, and the disk
 * has the next reads while the service thread copies. Waiting for the next
 * fault instead left the disk idle during every install: 1.4 GB/s.
 */
void tide__read_ahead_done(struct tide_pool *p, struct region *r, uint64_t first, uint32_t n)
{
	uint64_t last = first + n - 1, w = ra_window(p, r);

	for (struct ra_stream *s = r->streams; s < r->streams + TIDE_RA_STREAMS; s++)
		if (s->run >= 2 && last >= s->at && last <= s->at + 2 * w) {
			read_ahead_more(p, r, s, last);
			return;
		}
}

static void fault_wp(struct tide_pool *p, struct region *r, uint64_t page, uint64_t now)
{
	uint32_t f = tide__slot(r, page);
	char *addr = tide__page_addr(r, page);
	struct frame *fr;

	p->st.c.faults_wp++;
	if (f == TIDE_NO_FRAME) {
		/* Dropped after the fault was raised: retrying makes it a MISSING fault. */
		tide__uffd_wake(p->uffd, addr, r->page_size);
		return;
	}
	fr = tide__frame(p, f);
	switch (fr->state) {
	case FRAME_CLEAN:
		fr->state = FRAME_DIRTY;
		tide__dirty_add(p, r, (int64_t)r->page_size);
		/* fall through */
	case FRAME_DIRTY:
		fr->referenced = 1;
		tide__uffd_wp(p->uffd, addr, r->page_size, false, true);
		tide__stats_latency(&p->st, tide__now_ns() - now);
		break;
	case FRAME_WRITEBACK:
		/* Raised before the page moved out: the retry is a missing fault. */
		if (fr->moved) {
			tide__uffd_wake(p->uffd, addr, r->page_size);
			break;
		}
		/* The writer waits until the write-back completes; then the page
		 * stays, dirty again, instead of being dropped. */
		fr->redirtied = 1;
		p->st.c.faults_coalesced++;
		break;
	case FRAME_FILLING:
		/* Only a page the install thread put in is present while it
		 * fills (installer.c): the writer waits until the service thread
		 * takes the fill back, then the page is dirty and writable. */
		if (fr->offloaded) {
			fr->want_write = 1;
			if (!fr->t_fault)
				fr->t_fault = now;
			p->st.c.faults_coalesced++;
			break;
		}
		/* fall through */
	default:
		tide__uffd_wake(p->uffd, addr, r->page_size);
		break;
	}
}

void tide__fault(struct tide_pool *p, const struct uffd_msg *m, uint64_t now)
{
	uintptr_t addr = (uintptr_t)m->arg.pagefault.address;
	uint64_t flags = m->arg.pagefault.flags;
	bool write = flags & UFFD_PAGEFAULT_FLAG_WRITE;
	struct region *r;
	uint64_t page;
	uint32_t f;
	int ret;

	p->st.c.faults++;
	r = tide__region_find(p, addr);
	if (!r)
		return;
	page = (addr - (uintptr_t)r->base) >> r->page_shift;
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		fault_wp(p, r, page, now);
		return;
	}
	if (write)
		p->st.c.faults_write++;
	else
		p->st.c.faults_read++;
	f = tide__slot(r, page);
	if (f != TIDE_NO_FRAME) {
		struct frame *fr = tide__frame(p, f);

		p->st.c.faults_coalesced++;
		if (fr->state == FRAME_STAGED) {
			/* The run's trigger: more ahead first, then the page. */
			struct ra_stream *s = ra_stream_staging(r, page);

			fr->want_write |= write;
			fr->t_fault = now;
			if (s) {
				s->at = page;
				s->used = ++r->ra_tick;
				read_ahead_more(p, r, s, page);
				tide__fill_unstage(p, r, s);
			}
		} else if (fr->state == FRAME_FILLING) {
			struct ra_stream *s = ra_stream_near(p, r, page);

			fr->want_write |= write;
			if (!fr->t_fault)
				fr->t_fault = now;
			if (s) {
				if (page > s->at)
					s->at = page;
				s->used = ++r->ra_tick;
				read_ahead_more(p, r, s, page);
			}
		} else if (fr->state == FRAME_WRITEBACK && fr->moved) {
			/* Its write-back moved it out: it comes back when the write
			 * is done, and the fault waits till then. */
			fr->want_write |= write;
			fr->referenced = 1;
			if (!fr->t_fault)
				fr->t_fault = now;
		} else {
			/* Installed after the fault was raised. */
			tide__uffd_wake(p->uffd, tide__page_addr(r, page), r->page_size);
		}
		return;
	}
	ret = p->waiting ? -EAGAIN : tide__fill_start(p, r, page, write, FILL_DEMAND, now);
	if (ret < 0)
		wait_for_room(p, r, page, write, now);
	read_ahead(p, r, page, write);
	tide__pool_reclaim(p);
}

int tide__waiters_run(struct tide_pool *p)
{
	int served = 0;

	while (p->waiting) {
		struct pending_fault *pf = p->waiting;
		struct region *r = pf->region;
		uint32_t f = tide__slot(r, pf->page);
		uint64_t n;

		if (f != TIDE_NO_FRAME) {
			struct frame *fr = tide__frame(p, f);

			if (fr->state == FRAME_FILLING || fr->state == FRAME_STAGED) {
				fr->want_write |= pf->write;
				if (fr->state == FRAME_STAGED)
					tide__fill_unstage_range(p, r, pf->page, pf->page + 1);
			} else {
				tide__uffd_wake(p->uffd, tide__page_addr(r, pf->page), r->page_size);
			}
		} else if (tide__fill_start(p, r, pf->page, pf->write, FILL_DEMAND, pf->t_fault) < 0) {
			uint64_t before = p->resident;

			/* Clean drops, and writes a store completes inline, make
			 * room at once: then try again rather than wait for an
			 * event that may never come. */
			tide__pool_reclaim(p);
			if (p->resident < before)
				continue;
			return served;
		}
		p->waiting = pf->next;
		if (!p->waiting)
			p->waiting_tail = &p->waiting;
		p->waiting_bytes -= r->page_size;
		/* The fault that waited ended a sequential run whose read-ahead
		 * found no room then: resume it now, or every later page of
		 * the run is a demand fault that waits alone. Only when no
		 * other fault waits, so read-ahead never takes their room. */
		if (!p->waiting && (n = ra_window(p, r)))
			for (struct ra_stream *s = r->streams; s < r->streams + TIDE_RA_STREAMS; s++)
				if (s->run >= 2 && s->next == pf->page + 1) {
					ra_fill(p, r, s, pf->page + 1, pf->page + n);
					break;
				}
		free(pf);
		served++;
	}
	return served;
}

/* A fault on the page waits for room (signal.c asks before it waits). */
bool tide__fault_waiting(const struct tide_pool *p, const struct region *r, uint64_t page)
{
	for (const struct pending_fault *pf = p->waiting; pf; pf = pf->next)
		if (pf->region == r && pf->page == page)
			return true;
	return false;
}

/* Faults of a region being torn down: their threads retry and find the
 * range gone. */
void tide__waiters_forget(struct tide_pool *p, struct region *r)
{
	struct pending_fault **pp = &p->waiting;

	while (*pp) {
		struct pending_fault *pf = *pp;

		if (pf->region != r) {
			pp = &pf->next;
			continue;
		}
		*pp = pf->next;
		p->waiting_bytes -= r->page_size;
		free(pf);
	}
	p->waiting_tail = &p->waiting;
	while (*p->waiting_tail)
		p->waiting_tail = &(*p->waiting_tail)->next;
}
