/* PROTOTYPE: a second thread runs the UFFDIO_COPY of read-ahead fills nobody waits for. */
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
	struct tide_io *todo, **todo_tail;
	bool idle, stop;
};

static void *installer_main(void *arg)
{
	struct tide__installer *in = arg;

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
		for (io = batch; io; io = next) {
			next = io->next;
			io->res = io->start(io);
			tide_io_complete(io, io->res);
		}
		pthread_mutex_lock(&in->lock);
	}
	pthread_mutex_unlock(&in->lock);
	return NULL;
}

int tide__installer_start(struct tide_pool *p)
{
	struct tide__installer *in;
	const char *e = getenv("TIDE_INSTALLER");

	if (!e || *e != '1' || p->parent)
		return 0;
	in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	in->pool = p;
	in->todo_tail = &in->todo;
	pthread_mutex_init(&in->lock, NULL);
	pthread_cond_init(&in->cond, NULL);
	if (pthread_create(&in->thread, NULL, installer_main, in)) {
		free(in);
		return -EAGAIN;
	}
	pthread_setname_np(in->thread, "tide-install");
	p->installer = in;
	return 0;
}

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
	free(in);
	p->installer = NULL;
}

bool tide__installer_take(struct tide_pool *p, struct tide_io *io)
{
	struct tide__installer *in = p->installer;

	if (!in)
		return false;
	io->next = NULL;
	p->inflight++;
	pthread_mutex_lock(&in->lock);
	*in->todo_tail = io;
	in->todo_tail = &io->next;
	if (in->idle)
		pthread_cond_signal(&in->cond);
	pthread_mutex_unlock(&in->lock);
	return true;
}
