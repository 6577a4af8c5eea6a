/*
 * Fill: read a page from its store into bounce memory, then install it with
 * UFFDIO_COPY. Reading straight into the registered page would fault on our
 * own userfaultfd (an O_DIRECT read into the page is a write pin), so the
 * page only ever appears whole, by the ioctl, and the faulting threads wake
 * when it does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct fill {
	struct tide_io io;
	uint32_t frame;
	void *buf;
};

static int fill_issue(struct tide_io *io)
{
	struct fill *fl = container_of(io, struct fill, io);
	struct tide_pool *p = io->pool;
	struct frame *fr = tide__frame(p, fl->frame);
	struct region *r = fr->region;

	return r->ops->read(r->store, io, fl->buf, r->page_size, tide__store_off(r, fr->page));
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

static void fill_done(struct tide_io *io, ssize_t res)
{
	struct fill *fl = container_of(io, struct fill, io);
	struct tide_pool *p = io->pool;
	uint32_t f = fl->frame;
	struct frame *fr = tide__frame(p, f);
	struct region *r = fr->region;
	size_t ps = r->page_size;
	char *addr = tide__page_addr(r, fr->page);
	uint64_t mode = 0;
	int64_t copied = 0;
	int ret;

	r->busy--;
	if (fr->prefetch)
		p->prefetch_inflight--;
	if (res < 0) {
		fill_failed(p, f, res);
		goto out;
	}
	/* Past the end of the store reads as zeros. */
	if ((size_t)res < ps)
		memset((char *)fl->buf + res, 0, ps - (size_t)res);
	/* A read fault gets the page write-protected, so its first write is seen. */
	if (!fr->want_write && (r->prot & TIDE_PROT_WRITE))
		mode = UFFDIO_COPY_MODE_WP;
	do
		ret = tide__uffd_copy(p->uffd, addr, fl->buf, ps, mode, &copied);
	while (ret == -EAGAIN);
	/* -EAGAIN only while the mm is changing (events we do not enable); the
	 * loop above cannot spin long. EEXIST: the page is already there, which
	 * only our own install can have done: wake and go on. */
	if (ret == -EEXIST) {
		tide__uffd_wake(p->uffd, addr, ps);
	} else if (ret < 0) {
		/* ENOENT/ESRCH: the range or the process is going away. */
		tide__frame_free(p, f);
		goto out;
	}
	fr->state = fr->want_write ? FRAME_DIRTY : FRAME_CLEAN;
	if (fr->state == FRAME_DIRTY)
		tide__dirty_add(p, r, (int64_t)ps);
	/* Read-ahead earns its place only by being used (a fault on it). */
	fr->referenced = fr->prefetch != FILL_READAHEAD;
	tide__frame_resident(p, f);
	p->st.c.fills++;
	p->st.c.bytes_read += ps;
	if (fr->prefetch)
		p->st.c.prefetched++;
	if (fr->t_fault)
		tide__stats_latency(&p->st, tide__now_ns() - fr->t_fault);
out:
	tide__bounce_put(&p->bounce, fl->buf, ps);
	free(fl);
}

int tide__fill_start(struct tide_pool *p, struct region *r, uint64_t page, bool write,
		     enum fill_kind prefetch, uint64_t t_fault)
{
	struct fill *fl;
	struct frame *fr;
	uint32_t f;
	void *buf;

	if (!tide__pool_has_room(p, r->page_size))
		return -EAGAIN;
	buf = tide__bounce_get(&p->bounce, r->page_size);
	if (!buf)
		return -EAGAIN;
	fl = malloc(sizeof(*fl));
	if (!fl)
		goto fail_alloc;
	f = tide__frame_alloc(p, r, page);
	if (f == TIDE_NO_FRAME)
		goto fail_frame;
	fr = tide__frame(p, f);
	fr->want_write = write;
	fr->prefetch = prefetch;
	fr->t_fault = t_fault;
	r->busy++;
	if (prefetch)
		p->prefetch_inflight++;
	fl->frame = f;
	fl->buf = buf;
	fl->io.done = fill_done;
	fl->io.start = fill_issue;
	fl->io.buf_index = p->bounce.registered ? 0 : -1;
	tide__io_submit(p, &fl->io);
	return 0;

fail_frame:
	free(fl);
fail_alloc:
	tide__bounce_put(&p->bounce, buf, r->page_size);
	return -ENOMEM;
}
