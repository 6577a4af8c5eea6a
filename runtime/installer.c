/*
 * The install thread (TIDE_INSTALL_THREAD): UFFDIO_COPY of read-ahead fills
 * on a second thread, so the service thread goes on serving faults and
 * completions while pages go in.
 *
 * A sequential scan whose data comes fast (the page cache, a disk the host
 * caches) is bound by the service thread: for each 512 KiB read it copies
 * 512 KiB into the region (UFFDIO_COPY, ~60 us on these machines), and
 * while it copies, the next fault and the next completion wait. Here the
 * copy of a read-ahead fill nobody waits for is handed over instead: the
 * service thread keeps the bookkeeping (frames, CLOCK, counters), the
 * install thread only makes the ioctl, and its completion comes back to the
 * service loop like a custom store's (tide_io_complete from another
 * thread: the remote list and the wake-up).
 *
 * What may be handed over (fill.c, offload): a read-ahead fill, read from
 * the store, whose pages no fault waits for and which all go in
 * write-protected (or into a read-only region). The last rule keeps
 * write-back exact without any ordering between the two threads: a write
 * to such a page before the service thread has taken it back raises a
 * write-protect fault, which waits (fault.c, fault_wp) until the service
 * thread has marked the page dirty and lifts the protection. A page stays
 * FILLING, with its frame flagged `offloaded`, until then: eviction,
 * flush and unmap see a fill in flight, as for a read (r->busy).
 *
 * One thread per pool, not per shard, and none where it cannot run beside
 * the service thread (one allowed CPU) or where faults are served on the
 * faulting thread (TIDE_SIGNAL_FAULTS: a handler that found its page
 * FILLING would wait for the service thread instead of installing it).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct tide__installer {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct tide_io *todo, **todo_tail;  /* FIFO: runs go in in the order read */
	bool idle;                          /* waiting on cond: signal it */
	bool stop;
};

static void *installer_main(void *arg)
{
	struct tide__installer *in = arg;

	pthread_setname_np(pthread_self(), "tide-install");
	pthread_mutex_lock(&in->lock);
	for (;;) {
		struct tide_io *io, *next;

		if (!in->todo) {
			if (in->stop)
				break;
			in->idle = true;
			pthread_cond_wait(&in->cond, &in->lock);
			in->idle = false;
			continue;
		}
		io = in->todo;
		in->todo = NULL;
		in->todo_tail = &in->todo;
		pthread_mutex_unlock(&in->lock);
		for (; io; io = next) {
			next = io->next;
			tide_io_complete(io, io->start(io));
		}
		pthread_mutex_lock(&in->lock);
	}
	pthread_mutex_unlock(&in->lock);
	return NULL;
}

/* Whether a second thread can run beside the service thread at all. */
static bool two_cpus(void)
{
	cpu_set_t set;

	return sched_getaffinity(0, sizeof(set), &set) < 0 || CPU_COUNT(&set) > 1;
}

bool tide__installer_plan(const struct tide_options *o, char *why, size_t len)
{
	const char *because = NULL;

	if (!o->install_thread)
		because = "off (TIDE_INSTALL_THREAD=0)";
	else if (o->signal_faults)
		because = "off: faults are served on the faulting thread (TIDE_SIGNAL_FAULTS)";
	else if (o->service_threads > 1)
		because = "off: each shard installs on its own service thread (TIDE_SERVICE_THREADS > 1)";
	else if (!two_cpus())
		because = "off: the process may run on one CPU only";
	if (why)
		snprintf(why, len, "%s", because ? because :
			 "on: read-ahead goes in on a second thread beside the service thread");
	return !because;
}

int tide__installer_start(struct tide_pool *p)
{
	struct tide__installer *in;
	int ret;

	if (p->parent || !tide__installer_plan(&p->opt, NULL, 0))
		return 0;
	in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
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
	p->installer = in;
	return 0;
}

/* Runs when nothing is handed over any more: the pool has no regions. */
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

void tide__installer_take(struct tide_pool *p, struct tide_io *io)
{
	struct tide__installer *in = p->installer;
	bool idle;

	io->pool = p;
	io->next = NULL;
	/* In flight like a read: the loop reaps it, the watchdog sees it. */
	p->inflight++;
	pthread_mutex_lock(&in->lock);
	*in->todo_tail = io;
	in->todo_tail = &io->next;
	idle = in->idle;
	in->idle = false;          /* one signal per sleep */
	pthread_mutex_unlock(&in->lock);
	if (idle)
		pthread_cond_signal(&in->cond);
}
