/*
 * The install thread: a second thread that puts read-ahead pages in place.
 *
 * A UFFDIO_COPY costs about a microsecond per 4 KiB page on these VMs, nearly
 * all of it in the kernel (allocating the page, charging it to the memory
 * cgroup, the page-table lock). A sequential stream is mostly read-ahead, so
 * the service thread spent over half its time installing pages that nobody
 * was waiting for yet, while the other vCPU idled. Those fills come here;
 * faults, I/O, write-back and every frame stay with the service thread.
 *
 * A fill handed over owns what the installer touches: its frames are
 * FILLING (nothing evicts or refills them), its region is busy (nothing
 * unmaps it), and its buffer is its own. The installer only runs the
 * ioctls, through the fill's io->start, and hands the fill back; io->done
 * then does the bookkeeping on the service thread. A fill that a fault
 * waits for is never handed over: the hand-off costs a wake-up on the other
 * vCPU (~50 us here), longer than installing it at once.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct tide__installer {
	struct tide_pool *pool;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct tide_io *todo, **todo_tail;  /* handed over, oldest first */
	struct tide_io *done;               /* installed, for the service thread */
	bool idle;                          /* waiting on cond */
	bool stop;
};

static void *installer_main(void *arg)
{
	struct tide__installer *in = arg;
	struct tide_pool *p = in->pool;

	pthread_mutex_lock(&in->lock);
	for (;;) {
		struct tide_io *io, *next, *batch;

		if (!in->todo) {
			if (in->stop)
				break;
			in->idle = true;
			pthread_cond_wait(&in->cond, &in->lock);
			in->idle = false;
			continue;
		}
		batch = in->todo;
		in->todo = NULL;
		in->todo_tail = &in->todo;
		pthread_mutex_unlock(&in->lock);
		for (io = batch; io; io = io->next)
			io->res = io->start(io);
		pthread_mutex_lock(&in->lock);
		for (io = batch; io; io = next) {
			next = io->next;
			io->next = in->done;
			__atomic_store_n(&in->done, io, __ATOMIC_RELAXED);
		}
		pthread_mutex_unlock(&in->lock);
		uv_async_send(&p->wakeup);
		pthread_mutex_lock(&in->lock);
	}
	pthread_mutex_unlock(&in->lock);
	return NULL;
}

/* Only for a pool with one service thread and another CPU to run on: with
 * shards every CPU already has a service thread. */
int tide__installer_start(struct tide_pool *p)
{
	struct tide__installer *in;
	cpu_set_t allowed;
	int ret;

	if (!p->opt.install_thread || p->parent)
		return 0;
	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		return -errno;
	if (CPU_COUNT(&allowed) < 2)
		return 0;
	in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	in->pool = p;
	in->todo_tail = &in->todo;
	pthread_mutex_init(&in->lock, NULL);
	pthread_cond_init(&in->cond, NULL);
	ret = pthread_create(&in->thread, NULL, installer_main, in);
	if (ret) {
		pthread_cond_destroy(&in->cond);
		pthread_mutex_destroy(&in->lock);
		free(in);
		return -ret;
	}
	pthread_setname_np(in->thread, "tide-install");
	p->installer = in;
	return 0;
}

/* After the service thread has stopped: no region is left, so nothing is
 * handed over or in flight. */
void tide__installer_stop(struct tide_pool *p)
{
	struct tide__installer *in = p->installer;

	if (!in)
		return;
	pthread_mutex_lock(&in->lock);
	in->stop = true;
	pthread_cond_signal(&in->cond);
	pthread_mutex_unlock(&in->lock);
	pthread_join(in->thread, NULL);
	pthread_cond_destroy(&in->cond);
	pthread_mutex_destroy(&in->lock);
	free(in);
	p->installer = NULL;
}

bool tide__installer_take(struct tide_pool *p, struct tide_io *io)
{
	struct tide__installer *in = p->installer;

	if (!in)
		return false;
	io->pool = p;
	io->next = NULL;
	pthread_mutex_lock(&in->lock);
	*in->todo_tail = io;
	in->todo_tail = &io->next;
	if (in->idle)
		pthread_cond_signal(&in->cond);
	pthread_mutex_unlock(&in->lock);
	return true;
}

int tide__installer_reap(struct tide_pool *p)
{
	struct tide__installer *in = p->installer;
	struct tide_io *io, *next, *rev = NULL;
	int n = 0;

	if (!in || !__atomic_load_n(&in->done, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&in->lock);
	io = in->done;
	in->done = NULL;
	pthread_mutex_unlock(&in->lock);
	/* Pushed newest first: finish them in the order they were installed. */
	for (; io; io = next) {
		next = io->next;
		io->next = rev;
		rev = io;
	}
	for (io = rev; io; io = next, n++) {
		next = io->next;
		io->done(io, io->res);
	}
	return n;
}
