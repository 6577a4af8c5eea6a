/*
 * io_uring: all store I/O goes through one ring per pool, owned by the
 * service thread. Completions raise an eventfd that the libuv loop polls;
 * the loop also reaps after every submit, because a buffered read that hits
 * the page cache completes inline and waiting for the eventfd would cost a
 * wake-up for nothing. The one exception is a fault handler's own read
 * (TIDE_SIGNAL_FAULTS), which goes through the faulting thread's own small
 * ring (below).
 */
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

static __thread struct tide_pool *service_pool;

void tide__ring_set_service(struct tide_pool *p)
{
	service_pool = p;
}

bool tide__on_service_thread(const struct tide_pool *p)
{
	return service_pool == p;
}

struct tide_pool *tide__ring_service(struct tide_pool *p)
{
	struct tide_pool *prev = service_pool;

	service_pool = p;
	return prev;
}

void tide__ring_restore(struct tide_pool *prev)
{
	service_pool = prev;
}

/*
 * A faulting thread's own ring (signal.c): the reads a SIGBUS handler makes
 * for its own fault go through io_uring like all store I/O, but not through
 * the pool's ring, whose submissions belong to the service thread. Made at
 * the thread's first such read, closed when the thread exits (and in a
 * child of fork, which must not share it).
 */
static __thread struct io_uring own_ring;
static __thread int own_state;          /* 0 not yet, 1 ready, -1 unusable */
static pthread_key_t own_key;
static pthread_once_t own_once = PTHREAD_ONCE_INIT;
static int own_key_error;

static void own_close(void *ring)
{
	io_uring_queue_exit(ring);
}

/* A child of fork() has a copy of the forking thread's ring mappings over
 * the same ring as the parent: it must make its own before it reads. */
static void own_after_fork(void)
{
	if (own_state > 0) {
		io_uring_queue_exit(&own_ring);
		pthread_setspecific(own_key, NULL);
	}
	own_state = 0;
}

static void own_key_make(void)
{
	own_key_error = pthread_key_create(&own_key, own_close);
	if (!own_key_error)
		own_key_error = pthread_atfork(NULL, NULL, own_after_fork);
}

struct io_uring *tide__ring_own(void)
{
	if (own_state == 0) {
		pthread_once(&own_once, own_key_make);
		own_state = -1;
		if (!own_key_error && io_uring_queue_init(2, &own_ring, 0) == 0) {
			if (pthread_setspecific(own_key, &own_ring) == 0)
				own_state = 1;
			else
				io_uring_queue_exit(&own_ring);
		}
	}
	return own_state > 0 ? &own_ring : NULL;
}

ssize_t tide__ring_read_now(struct io_uring *ring, int fd, void *buf, size_t len, uint64_t off)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;
	ssize_t res;
	int ret;

	if (!sqe)
		return -EBUSY;
	io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
	ret = io_uring_submit(ring);
	if (ret != 1) {
		/* Not submitted: the ring cannot be trusted with a later read
		 * (the stale entry would go out with it). */
		io_uring_queue_exit(ring);
		pthread_setspecific(own_key, NULL);
		own_state = -1;
		return ret < 0 ? ret : -EIO;
	}
	/* Another signal may interrupt the wait, never the read. */
	do
		ret = io_uring_wait_cqe(ring, &cqe);
	while (ret == -EINTR);
	if (ret < 0)
		return ret;
	res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return res;
}

int tide__ring_init(struct tide_pool *p)
{
	unsigned entries = 8;
	struct iovec iov;
	int ret;

	while (entries < 2 * p->opt.queue_depth)
		entries <<= 1;
	ret = io_uring_queue_init(entries, &p->ring, 0);
	if (ret < 0)
		return tide__fail(ret, "io_uring_queue_init failed: %s (is kernel.io_uring_disabled set?)",
				  strerror(-ret));
	p->ring_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->ring_efd < 0) {
		ret = tide__fail(-errno, "eventfd: %s", strerror(errno));
		goto fail_eventfd;
	}
	ret = io_uring_register_eventfd(&p->ring, p->ring_efd);
	if (ret < 0) {
		tide__fail(ret, "io_uring_register_eventfd: %s", strerror(-ret));
		goto fail_register_eventfd;
	}
	/* The bounce arena is runtime memory that userfaultfd never sees, so
	 * the long-term pin this takes cannot fault on our own uffd. */
	iov.iov_base = p->bounce.base;
	iov.iov_len = p->bounce.size;
	ret = io_uring_register_buffers(&p->ring, &iov, 1);
	if (ret == 0)
		p->bounce.registered = true;
	else
		tide__warn("cannot register %zu bytes of bounce buffers with io_uring (%s); "
			   "fills and fixed write-back use plain reads and writes "
			   "(raise RLIMIT_MEMLOCK to get fixed buffers)",
			   p->bounce.size, strerror(-ret));
	return 0;

fail_register_eventfd:
	close(p->ring_efd);
fail_eventfd:
	io_uring_queue_exit(&p->ring);
	return ret;
}

void tide__ring_fini(struct tide_pool *p)
{
	io_uring_queue_exit(&p->ring);
	close(p->ring_efd);
}

struct io_uring_sqe *tide__ring_sqe(struct tide_pool *p)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);

	if (!sqe) {
		io_uring_submit(&p->ring);
		sqe = io_uring_get_sqe(&p->ring);
	}
	return sqe;
}

int tide__ring_submit(struct tide_pool *p)
{
	return io_uring_sq_ready(&p->ring) ? io_uring_submit(&p->ring) : 0;
}

/* Submit what is queued now, on the pool's own service thread; a fault
 * handler acting for it leaves the queue to the loop (io_uring ties a
 * request to the thread that submits it). */
void tide__ring_push(struct tide_pool *p)
{
	if (tide__loop_thread(p))
		tide__ring_submit(p);
}

int tide__ring_reap(struct tide_pool *p)
{
	struct io_uring_cqe *cqe;
	int n = 0;

	while (io_uring_peek_cqe(&p->ring, &cqe) == 0) {
		struct tide_io *io = io_uring_cqe_get_data(cqe);
		ssize_t res = cqe->res;

		io_uring_cqe_seen(&p->ring, cqe);
		tide_io_complete(io, res);
		n++;
	}
	return n;
}

/* Start an operation now, or park it until the queue depth allows. */
void tide__io_submit(struct tide_pool *p, struct tide_io *io)
{
	int ret;

	io->pool = p;
	io->next = NULL;
	if (p->inflight >= p->opt.queue_depth) {
		*p->backlog_tail = io;
		p->backlog_tail = &io->next;
		return;
	}
	p->inflight++;
	ret = io->start(io);
	if (ret < 0)
		tide_io_complete(io, ret);
}

void tide__io_backlog_run(struct tide_pool *p)
{
	while (p->backlog && p->inflight < p->opt.queue_depth) {
		struct tide_io *io = p->backlog;

		p->backlog = io->next;
		if (!p->backlog)
			p->backlog_tail = &p->backlog;
		tide__io_submit(p, io);
	}
}

void tide_io_complete(struct tide_io *io, ssize_t res)
{
	struct tide_pool *p;

	if (!io)
		return;
	p = io->pool;
	io->res = res;
	if (!tide__on_service_thread(p)) {
		/* A custom store finished on its own thread: hand it over. */
		pthread_mutex_lock(&p->lock);
		io->next = p->remote_done;
		p->remote_done = io;
		pthread_mutex_unlock(&p->lock);
		uv_async_send(&p->wakeup);
		return;
	}
	p->inflight--;
	io->done(io, res);
}

int tide__io_remote_run(struct tide_pool *p)
{
	struct tide_io *io, *next;
	int n = 0;

	if (!__atomic_load_n(&p->remote_done, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&p->lock);
	io = p->remote_done;
	p->remote_done = NULL;
	pthread_mutex_unlock(&p->lock);
	for (; io; io = next, n++) {
		next = io->next;
		p->inflight--;
		io->done(io, io->res);
	}
	return n;
}
