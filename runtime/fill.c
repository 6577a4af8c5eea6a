/*
 * Fill: read a page from its store into bounce memory, then install it with
 * UFFDIO_COPY. Reading straight into the registered page would fault on our
 * own userfaultfd (an O_DIRECT read into the page is a write pin), so the
 * page only ever appears whole, by the ioctl, and the faulting threads wake
 * when it does.
 *
 * A fill can cover a run of adjacent missing pages (read-ahead, prefetch):
 * one read into one bounce span, then as few UFFDIO_COPY calls as the
 * per-page modes allow. Fewer, larger reads are what the disk wants (here
 * 64 KiB reads at QD1 give 190 MB/s, 512 KiB ones 570 MB/s).
 *
 * Pages the store reports as a hole (ops->hole) are not read at all: they
 * are installed at once, in the same pass, from the pool's zero source, a
 * read-only anonymous mapping that is never written and so maps only the
 * shared zero page. They take the same per-page modes as a read, so dirty
 * tracking stays exact: a read fault still gets its page write-protected.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

/* The most bytes one read covers: a run of 512 KiB, or one page if larger. */
#define FILL_RUN_BYTES (512u << 10)
#define FILL_MAX_BYTES (FILL_RUN_BYTES > TIDE_MAX_PAGE ? FILL_RUN_BYTES : TIDE_MAX_PAGE)
/* The most bytes of a hole one fill installs: the zero source's size. A
 * hole costs no I/O, so its run is as long as the source allows: fewer
 * calls, and with spare pages (spare.c) fewer moves, each a TLB shootdown
 * on the app's vCPU. */
#define HOLE_RUN_BYTES FILL_MAX_BYTES
/* The least a fill hands to the install thread. A hand-off costs the
 * service thread a few microseconds (a futex wake, the completion's trip
 * back); copying 4 KiB costs it about one, 64 KiB about 25. */
#define OFFLOAD_MIN_BYTES (64u << 10)

struct fill {
	struct tide_io io;
	struct region *region;
	uint64_t page;           /* the first page */
	uint32_t n;              /* pages */
	bool zero;               /* a store hole: buf is the zero source */
	bool installed;          /* fill_now put the pages in already */
	bool demand;             /* a fault waits for it: counted in keep_reads */
	uint64_t mode;           /* offloaded (installer.c): the copy mode */
	size_t copied;           /* offloaded: bytes in place */
	uint64_t t_copied;       /* offloaded: when the install thread was done */
	void *buf;
	uint32_t frames[];
};

int tide__fill_init(struct tide_pool *p)
{
	/* Populated read-only, it maps the shared zero page: page tables only. */
	p->zeros = mmap(NULL, FILL_MAX_BYTES, PROT_READ,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_POPULATE, -1, 0);
	if (p->zeros == MAP_FAILED) {
		p->zeros = NULL;
		return -ENOMEM;
	}
	return 0;
}

void tide__fill_fini(struct tide_pool *p)
{
	if (p->zeros)
		munmap(p->zeros, FILL_MAX_BYTES);
	p->zeros = NULL;
}

static int fill_issue(struct tide_io *io)
{
	struct fill *fl = container_of(io, struct fill, io);
	struct region *r = fl->region;

	return r->ops->read(r->store, io, fl->buf, (size_t)fl->n * r->page_size,
			    tide__store_off(r, fl->page));
}

/* The store could not give us the page: the faulting threads get SIGBUS,
 * as with a file mapping whose read fails, instead of invented data. */
static void fill_failed(struct tide_pool *p, uint32_t f, ssize_t res)
{
	struct frame *fr = tide__frame(p, f);
	struct region *r = fr->region;
	char *addr = tide__page_addr(r, fr->page);

	p->st.c.read_errors++;
	tide__warn("reading page %llu of a region failed (%s); its users get SIGBUS",
		   (unsigned long long)fr->page, strerror((int)-res));
	tide__frame_free(p, f);
	if (!(p->uffd_features & UFFD_FEATURE_POISON) || tide__uffd_poison(p->uffd, addr, r->page_size) < 0)
		tide__uffd_wake(p->uffd, addr, r->page_size);
}

/* The page is in: account for it and put it on the CLOCK ring. */
static void fill_installed(struct tide_pool *p, const struct fill *fl, uint32_t f)
{
	struct frame *fr = tide__frame(p, f);
	struct region *r = fr->region;

	fr->state = fr->want_write ? FRAME_DIRTY : FRAME_CLEAN;
	if (fr->state == FRAME_DIRTY)
		tide__dirty_add(p, r, (int64_t)r->page_size);
	/* Read-ahead earns its place only by being used (a fault on it). */
	fr->referenced = fr->prefetch != FILL_READAHEAD || fr->t_fault;
	tide__frame_resident(p, f);
	p->st.c.fills++;
	p->st.c.fills_zero += fl->zero;
	p->st.c.bytes_read += r->page_size;
	if (fr->prefetch)
		p->st.c.prefetched++;
	if (fr->t_fault)
		tide__stats_latency(&p->st, tide__now_ns() - fr->t_fault);
}

/* A read fault gets its page write-protected, so its first write is seen. */
static uint64_t copy_mode(const struct frame *fr)
{
	return !fr->want_write && (fr->region->prot & TIDE_PROT_WRITE) ? UFFDIO_COPY_MODE_WP : 0;
}

/* Install pages [i, j) of a fill, which all take the same mode, in as few
 * ioctls as the kernel allows. A partial copy reports -EAGAIN with the
 * bytes it did; the next call then starts at the byte that stopped it. */
static void install(struct tide_pool *p, struct fill *fl, uint32_t i, uint32_t j, uint64_t mode)
{
	struct region *r = fl->region;
	size_t ps = r->page_size, done = 0;   /* bytes of page i in place */

	/* The copy allocates: free spare pages the budget has no room for
	 * beside the fill's (counted in resident already) leave first, or the
	 * pool and its spare room together outgrow the budget until the pass
	 * ends (a sort's pool of 128 MiB held 150 MiB that way). */
	if (i < j && p->spare.nfree)
		tide__spare_trim(p);
	while (i < j) {
		char *addr = tide__page_addr(r, fl->page + i);
		int64_t copied = 0;
		int ret = tide__uffd_copy(p->uffd, addr + done, (char *)fl->buf + (size_t)i * ps + done,
					  (size_t)(j - i) * ps - done, mode, &copied);

		/* The kernel copies 4 KiB at a time, so a partial copy can stop
		 * inside a larger page: that page is in only when all of it is. */
		for (done += copied > 0 ? (size_t)copied : 0; done >= ps; done -= ps)
			fill_installed(p, fl, fl->frames[i++]);
		if (ret == 0 || ret == -EAGAIN)
			continue;
		if (ret == -EEXIST) {
			/* That 4 KiB is there already, which only our own install
			 * can have done: step over it; wake the page's waiters
			 * once the page is whole. */
			done += TIDE_MIN_PAGE;
			if (done >= ps) {
				tide__uffd_wake(p->uffd, addr, ps);
				fill_installed(p, fl, fl->frames[i++]);
				done = 0;
			}
			continue;
		}
		/* ENOENT/ESRCH: the range or the process is going away. */
		for (; i < j; i++)
			tide__frame_free(p, fl->frames[i]);
	}
}

/* Zeros for pages [i, j) of a hole, all installed writable: evicted pages
 * from the spare room where there are some (spare.c). Returns the first
 * page not installed. */
static uint32_t install_spare(struct tide_pool *p, struct fill *fl, uint32_t i, uint32_t j)
{
	struct region *r = fl->region;
	size_t ps = r->page_size;
	size_t got = tide__spare_zeros(p, tide__page_addr(r, fl->page + i), (size_t)(j - i) * ps, ps);

	for (; got >= ps; got -= ps)
		fill_installed(p, fl, fl->frames[i++]);
	return i;
}

/* Install pages [i, end) of a fill, stretches of pages with one mode at a time. */
static void install_span(struct tide_pool *p, struct fill *fl, uint32_t i, uint32_t end)
{
	while (i < end) {
		uint64_t mode = copy_mode(tide__frame(p, fl->frames[i]));
		uint32_t j = i + 1, k = i;

		while (j < end && copy_mode(tide__frame(p, fl->frames[j])) == mode)
			j++;
		/* A moved-in page has no uffd-wp bit: only for writable installs,
		 * and only into a writable region (UFFDIO_MOVE refuses a
		 * destination whose protection differs from the room's). */
		if (fl->zero && !mode && p->spare.on && (fl->region->prot & TIDE_PROT_WRITE))
			k = install_spare(p, fl, i, j);
		install(p, fl, k, j, mode);
		i = j;
	}
}

static void install_all(struct tide_pool *p, struct fill *fl)
{
	install_span(p, fl, 0, fl->n);
}

/*
 * The read-ahead trigger. A page filled ahead never faults, so a run that
 * only grows on faults would find out that the app reached the end of its
 * window when the app faults past it: the disk then idles while the app
 * consumes each window, and the two never overlap (here 1.4 GB/s with the
 * disk busy half the time, against 2.7 GB/s for io_uring alone). So one
 * page half a window before the end of what a run reads is kept out of the
 * page table when its read completes, its data held in bounce memory: the
 * app's fault on it is served at once, from there, and tops the window up
 * while the rest of it is still ahead (the kernel's PG_readahead, by other
 * means). One staged page per stream of the region (a newer one installs
 * the older), at most an eighth of the bounce arena in all; past that the
 * page is just installed, and so it is when a fault waits on this read (the
 * app is here and would fault on the staged page at once). *stream gets the
 * trigger's stream.
 */
static uint32_t fill_trigger(struct tide_pool *p, const struct fill *fl, unsigned *stream)
{
	uint32_t k, at = fl->n;
	bool waited = false;

	for (k = 0; k < fl->n; k++) {
		struct frame *fr = tide__frame(p, fl->frames[k]);

		if (fr->trigger) {
			at = k;
			*stream = fr->trigger - 1u;
		}
		fr->trigger = 0;
		waited |= fr->t_fault != 0;
	}
	if (waited || p->staged + fl->region->page_size > p->bounce.size / 8)
		return fl->n;
	/* The stream's slot may have gone to another run since. */
	if (at < fl->n) {
		const struct ra_stream *s = &fl->region->streams[*stream];

		if (s->run < 2 || fl->page + at <= s->at || fl->page + at >= s->next)
			return fl->n;
	}
	return at;
}

/* Page k of fill fl, the others installed, becomes stream s's staged page:
 * it keeps its bounce memory, the rest of the fill's goes back. */
static void fill_stage(struct tide_pool *p, struct fill *fl, uint32_t k, struct ra_stream *s)
{
	struct region *r = fl->region;
	size_t ps = r->page_size;
	char *buf = fl->buf;

	tide__fill_unstage(p, r, s);
	tide__frame(p, fl->frames[k])->state = FRAME_STAGED;
	s->staged_page = fl->page + k;
	s->staged_buf = buf + (size_t)k * ps;
	p->staged += ps;
	if (k)
		tide__bounce_put(&p->bounce, buf, (size_t)k * ps);
	if (k + 1 < fl->n)
		tide__bounce_put(&p->bounce, buf + (size_t)(k + 1) * ps, (size_t)(fl->n - k - 1) * ps);
}

static void stream_drop(struct tide_pool *p, struct region *r, struct ra_stream *s)
{
	tide__bounce_put(&p->bounce, s->staged_buf, r->page_size);
	p->staged -= r->page_size;
	s->staged_buf = NULL;
}

void tide__fill_unstage(struct tide_pool *p, struct region *r, struct ra_stream *s)
{
	union {
		struct fill fl;
		char room[sizeof(struct fill) + sizeof(uint32_t)];
	} one;
	uint32_t f;

	if (!s->staged_buf)
		return;
	f = tide__slot(r, s->staged_page);
	one.fl.region = r;
	one.fl.page = s->staged_page;
	one.fl.n = 1;
	one.fl.zero = false;
	one.fl.installed = false;
	one.fl.demand = false;
	one.fl.buf = s->staged_buf;
	one.fl.frames[0] = f;
	tide__frame(p, f)->state = FRAME_FILLING;
	install_all(p, &one.fl);
	stream_drop(p, r, s);
}

void tide__fill_unstage_range(struct tide_pool *p, struct region *r, uint64_t first, uint64_t end)
{
	for (struct ra_stream *s = r->streams; s < r->streams + TIDE_RA_STREAMS; s++)
		if (s->staged_buf && s->staged_page >= first && s->staged_page < end)
			tide__fill_unstage(p, r, s);
}

void tide__fill_unstage_drop(struct tide_pool *p, struct region *r)
{
	for (struct ra_stream *s = r->streams; s < r->streams + TIDE_RA_STREAMS; s++)
		if (s->staged_buf)
			stream_drop(p, r, s);
}

/*
 * The install thread's part of a handed-off fill (installer.c): put the
 * pages in, nothing else (it owns none of the pool's state). A partial
 * copy goes on from the byte that stopped it; a 4 KiB already there
 * (EEXIST) is stepped over, as in install(); anything else ends it, and
 * the service thread frees the pages not in.
 */
static int offload_copy(struct tide_io *io)
{
	struct fill *fl = container_of(io, struct fill, io);
	struct region *r = fl->region;
	size_t len = (size_t)fl->n * r->page_size;
	char *addr = tide__page_addr(r, fl->page);
	int err = 0;

	while (fl->copied < len && !err) {
		int64_t copied = 0;
		int ret = tide__uffd_copy(io->pool->uffd, addr + fl->copied, (char *)fl->buf + fl->copied,
					  len - fl->copied, fl->mode, &copied);

		fl->copied += copied > 0 ? (size_t)copied : 0;
		if (ret == -EEXIST) {
			tide__uffd_wake(io->pool->uffd, addr + fl->copied, TIDE_MIN_PAGE);
			fl->copied += TIDE_MIN_PAGE;
		} else if (ret && (ret != -EAGAIN || copied <= 0)) {
			err = ret;
		}
	}
	fl->t_copied = tide__now_ns();
	return err;
}

/* Back on the service thread: the pages in become resident; a write that
 * waited for one (fault_wp) gets it writable, and dirty. */
static void offload_done(struct tide_io *io, ssize_t res)
{
	struct fill *fl = container_of(io, struct fill, io);
	struct tide_pool *p = io->pool;
	struct region *r = fl->region;
	size_t ps = r->page_size;
	uint32_t i = 0;

	(void)res;   /* fl->copied says what went in */
	r->busy -= fl->n;
	p->offloads_back++;
	for (; (size_t)(i + 1) * ps <= fl->copied; i++) {
		struct frame *fr = tide__frame(p, fl->frames[i]);
		uint64_t t_fault = fr->t_fault;

		fr->offloaded = 0;
		if (fr->want_write && fl->mode)
			tide__uffd_wp(p->uffd, tide__page_addr(r, fl->page + i), ps, false, true);
		/* A fault on the page waited until it was in (or, for a write,
		 * until now): not for the trip back here. */
		fr->t_fault = 0;
		fill_installed(p, fl, fl->frames[i]);
		if (t_fault) {
			uint64_t until = fr->want_write && fl->mode ? tide__now_ns() : fl->t_copied;

			fr->referenced = 1;
			tide__stats_latency(&p->st, until > t_fault ? until - t_fault : 0);
		}
		p->st.c.fills_offloaded++;
	}
	for (; i < fl->n; i++)
		tide__frame_free(p, fl->frames[i]);
	tide__bounce_put(&p->bounce, fl->buf, (size_t)fl->n * ps);
	free(fl);
}

/*
 * Hand a read fill over to the install thread, if it is one it may take:
 * read ahead, no fault waiting on any page (a waiter is served sooner
 * here), and every page going in write-protected, or into a read-only
 * region, so that no write can land before the service thread knows the
 * page (installer.c). True if handed over.
 */
static bool offload(struct tide_pool *p, struct fill *fl)
{
	uint64_t mode;

	if (!p->installer || fl->zero || (size_t)fl->n * fl->region->page_size < OFFLOAD_MIN_BYTES)
		return false;
	mode = copy_mode(tide__frame(p, fl->frames[0]));
	if (!mode && (fl->region->prot & TIDE_PROT_WRITE))
		return false;
	for (uint32_t k = 0; k < fl->n; k++) {
		struct frame *fr = tide__frame(p, fl->frames[k]);

		if (fr->t_fault || fr->prefetch != FILL_READAHEAD || copy_mode(fr) != mode)
			return false;
	}
	for (uint32_t k = 0; k < fl->n; k++)
		tide__frame(p, fl->frames[k])->offloaded = 1;
	fl->mode = mode;
	fl->copied = 0;
	fl->io.start = offload_copy;
	fl->io.done = offload_done;
	fl->region->busy += fl->n;
	p->offloads++;
	tide__installer_take(p, &fl->io);
	return true;
}

static void fill_done(struct tide_io *io, ssize_t res)
{
	struct fill *fl = container_of(io, struct fill, io);
	struct tide_pool *p = io->pool;
	struct region *r = fl->region;
	size_t ps = r->page_size, len = (size_t)fl->n * ps;
	unsigned stream = 0;
	uint32_t i = 0;

	r->busy -= fl->n;
	if (fl->demand)
		tide__keepers_read_end(p);
	for (uint32_t k = 0; k < fl->n; k++)
		if (tide__frame(p, fl->frames[k])->prefetch)
			p->prefetch_inflight--;
	if (res < 0) {
		for (; i < fl->n; i++) {
			struct frame *fr = tide__frame(p, fl->frames[i]);

			/* A page read ahead that nobody waits for is just
			 * forgotten: a later fault reads it again on its own. */
			if (fr->prefetch && !fr->t_fault)
				tide__frame_free(p, fl->frames[i]);
			else
				fill_failed(p, fl->frames[i], res);
		}
		goto out;
	}
	if (fl->installed) {
		for (; i < fl->n; i++)
			fill_installed(p, fl, fl->frames[i]);
		goto out;
	}
	/* Past the end of the store reads as zeros. */
	if ((size_t)res < len)
		memset((char *)fl->buf + res, 0, len - (size_t)res);
	if (tide__frame(p, fl->frames[0])->prefetch == FILL_READAHEAD) {
		tide__read_ahead_done(p, r, fl->page, fl->n);
		tide__ring_push(p);   /* the disk reads on while these go in */
	}
	i = fill_trigger(p, fl, &stream);
	if (i == fl->n && offload(p, fl))
		return;
	install_span(p, fl, 0, i);
	if (i < fl->n) {
		install_span(p, fl, i + 1, fl->n);
		fill_stage(p, fl, i, &r->streams[stream]);
		free(fl);
		return;
	}
out:
	tide__bounce_put(&p->bounce, fl->buf, len);
	free(fl);
}

/* The most pages one fill reads: 512 KiB, or one page if larger. */
uint32_t tide__fill_read_max(const struct region *r)
{
	return r->page_size >= FILL_RUN_BYTES ? 1 : (uint32_t)(FILL_RUN_BYTES / r->page_size);
}

/* The most pages one tide__fill_run covers: a hole's run, 2 MiB (its reads
 * stay at tide__fill_read_max). */
uint32_t tide__fill_run_max(const struct region *r)
{
	return r->page_size >= HOLE_RUN_BYTES ? 1 : (uint32_t)(HOLE_RUN_BYTES / r->page_size);
}

/* Take the frames of pages [page, page + n) of r (FILLING) for fill `fl`,
 * which has room for n of them. -ENOMEM gives back what it took. */
static int fill_take(struct tide_pool *p, struct fill *fl, struct region *r, uint64_t page,
		     uint32_t n, bool write, enum fill_kind prefetch, uint64_t t_fault)
{
	for (uint32_t i = 0; i < n; i++) {
		uint32_t f = tide__frame_alloc(p, r, page + i);
		struct frame *fr;

		if (f == TIDE_NO_FRAME) {
			while (i--)
				tide__frame_free(p, fl->frames[i]);
			return -ENOMEM;
		}
		fr = tide__frame(p, f);
		fr->want_write = write;
		fr->prefetch = prefetch;
		fr->t_fault = t_fault;
		fl->frames[i] = f;
	}
	fl->region = r;
	fl->page = page;
	fl->n = n;
	fl->zero = false;
	fl->installed = false;
	fl->demand = false;
	fl->buf = NULL;
	return 0;
}

/* Whole pages from `page`, at most n, that the store says read as zeros. */
static uint32_t hole_pages(struct region *r, uint64_t page, uint32_t n)
{
	int64_t bytes;

	if (!r->ops->hole)
		return 0;
	bytes = r->ops->hole(r->store, tide__store_off(r, page), (uint64_t)n << r->page_shift);
	/* Data, not known, or the store could not tell: read. */
	if (bytes <= 0)
		return 0;
	return (uint64_t)bytes >> r->page_shift < n ? (uint32_t)((uint64_t)bytes >> r->page_shift) : n;
}

/* Pages of a hole: installed now from the zero source, no read, so the
 * fill lives on the stack (a run is at most HOLE_RUN_BYTES of 4 KiB pages). */
static int fill_zero(struct tide_pool *p, struct region *r, uint64_t page, uint32_t n,
		     bool write, enum fill_kind prefetch, uint64_t t_fault)
{
	union {
		struct fill fl;
		char room[sizeof(struct fill) + HOLE_RUN_BYTES / TIDE_MIN_PAGE * sizeof(uint32_t)];
	} z;

	if (fill_take(p, &z.fl, r, page, n, write, prefetch, t_fault) < 0)
		return -ENOMEM;
	z.fl.zero = true;
	z.fl.buf = p->zeros;
	install_all(p, &z.fl);
	return (int)n;
}

/* A handler's demand read of one page of a file store (signal.c): read (on
 * the thread's own ring) and install on this thread, the lock dropped meanwhile, so a read that goes
 * to the disk holds up nobody else, and other threads' faults need not wait
 * for this one's copy. The frame is FILLING and the region busy, so nothing
 * it points at goes away, nobody else installs the page, and faults on it
 * wait. A copy that does not go through whole is left to the locked install
 * (install_all), which knows every outcome. */
static void fill_now(struct tide_pool *p, struct fill *fl, struct io_uring *ring)
{
	struct region *r = fl->region;
	uint64_t page = fl->page, mode = copy_mode(tide__frame(p, fl->frames[0]));
	size_t len = r->page_size;
	int64_t copied = 0;
	ssize_t res;
	uint32_t f;

	fl->io.pool = p;
	tide__state_unlock(p, false);
	res = tide__file_store_read_now(r->store, ring, fl->buf, len, tide__store_off(r, page));
	if (res >= 0) {
		if ((size_t)res < len)
			memset((char *)fl->buf + res, 0, len - (size_t)res);
		fl->installed = tide__uffd_copy(p->uffd, tide__page_addr(r, page), fl->buf, len,
						mode, &copied) == 0 && copied == (int64_t)len;
	}
	tide__state_lock(p);
	fill_done(&fl->io, res);
	/* Until the handler returns and the thread touches it, the page is
	 * not a victim: the reclaim that follows the fill would otherwise
	 * find it resident, unused, and take it (signal.c lets go). */
	f = tide__slot(r, page);
	if (f != TIDE_NO_FRAME && tide__frame(p, f)->state != FRAME_FILLING)
		tide__frame(p, f)->held = 1;
}

/* Pages read from the store into one bounce span, installed when it completes. */
static int fill_read(struct tide_pool *p, struct region *r, uint64_t page, uint32_t n,
		     bool write, enum fill_kind prefetch, uint64_t t_fault)
{
	size_t ps = r->page_size;
	struct io_uring *ring;
	struct fill *fl;
	void *buf = NULL;

	while (n && !(buf = tide__bounce_get(&p->bounce, (size_t)n * ps)))
		n /= 2;
	if (!n)
		return -EAGAIN;
	fl = malloc(sizeof(*fl) + n * sizeof(fl->frames[0]));
	if (!fl || fill_take(p, fl, r, page, n, write, prefetch, t_fault) < 0) {
		free(fl);
		tide__bounce_put(&p->bounce, buf, (size_t)n * ps);
		return -ENOMEM;
	}
	r->busy += n;
	if (prefetch)
		p->prefetch_inflight += n;
	fl->demand = prefetch == FILL_DEMAND;
	if (fl->demand)
		tide__keepers_read_start(p);
	fl->buf = buf;
	fl->io.done = fill_done;
	fl->io.start = fill_issue;
	fl->io.buf_index = p->bounce.registered ? 0 : -1;
	p->st.c.store_reads++;
	if (prefetch == FILL_DEMAND && n == 1 && r->ops == &tide__file_store_ops &&
	    tide__signal_serving(p) && (ring = tide__ring_own()))
		fill_now(p, fl, ring);
	else
		tide__io_submit(p, &fl->io);
	return (int)n;
}

/*
 * Fill pages [page, page + n) of r, all missing, at most tide__fill_run_max.
 * A hole at the start of the run is installed as zeros at once; the rest is
 * read, at most tide__fill_read_max pages (a hole further in reads as zeros
 * too, just not for free). Returns the number of pages started, which is
 * fewer than n when the budget or the bounce arena has no room for all of
 * them or the read was capped, or -EAGAIN (no room for one page) or -ENOMEM.
 */
int tide__fill_run(struct tide_pool *p, struct region *r, uint64_t page, uint32_t n, bool write,
		   enum fill_kind prefetch, uint64_t t_fault)
{
	uint32_t zero, rmax = tide__fill_read_max(r);
	int ret;

	if (n > tide__fill_run_max(r))
		n = tide__fill_run_max(r);
	while (n && !tide__pool_has_room(p, (size_t)n * r->page_size))
		n--;
	if (!n)
		return -EAGAIN;
	zero = hole_pages(r, page, n);
	if (!zero)
		return fill_read(p, r, page, n < rmax ? n : rmax, write, prefetch, t_fault);
	ret = fill_zero(p, r, page, zero, write, prefetch, t_fault);
	if (ret < 0 || zero == n)
		return ret;
	n -= zero;
	ret = fill_read(p, r, page + zero, n < rmax ? n : rmax, write, prefetch, t_fault);
	return ret < 0 ? (int)zero : (int)zero + ret;
}

int tide__fill_start(struct tide_pool *p, struct region *r, uint64_t page, bool write,
		     enum fill_kind prefetch, uint64_t t_fault)
{
	int ret = tide__fill_run(p, r, page, 1, write, prefetch, t_fault);

	return ret < 0 ? ret : 0;
}
