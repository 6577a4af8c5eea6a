/*
 * The debug watchdog (TIDE_WATCHDOG=N): a thread that wakes every N/4
 * seconds and, if the service loop has not moved for N seconds while a fault
 * is waiting in the userfaultfd (or fills wait for room), prints what the
 * loop was last doing. It reads a few words of the service thread's state
 * without locks; that is good enough for a diagnosis and costs the loop
 * nothing but a pointer store per phase.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

static void watch(void *arg)
{
	struct tide_pool *p = arg;
	uint64_t limit = (uint64_t)p->opt.watchdog_s * 1000000000u;
	bool reported = false;

	pthread_mutex_lock(&p->watch_lock);
	while (!p->watch_stop) {
		struct timespec until;
		struct pollfd pfd = { .fd = p->uffd, .events = POLLIN };
		uint64_t idle;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)(limit / 4 % 1000000000u);
		until.tv_sec += (time_t)(limit / 4 / 1000000000u) + until.tv_nsec / 1000000000;
		until.tv_nsec %= 1000000000;
		pthread_cond_timedwait(&p->watch_cond, &p->watch_lock, &until);
		if (p->watch_stop)
			break;
		idle = tide__now_ns() - __atomic_load_n(&p->last_progress_ns, __ATOMIC_RELAXED);
		if (idle < limit) {
			reported = false;
			continue;
		}
		/* Pending: a fault unread, a fault waiting for room, or I/O that
		 * has not completed in all that time. */
		if (reported || (poll(&pfd, 1, 0) <= 0 && !__atomic_load_n(&p->waiting, __ATOMIC_RELAXED) &&
				 !__atomic_load_n(&p->inflight, __ATOMIC_RELAXED)))
			continue;
		reported = true;
		tide__warn("watchdog: the service loop has not moved for %.1f s with faults pending; "
			   "last doing: %s; resident %llu of %zu bytes, %llu I/Os in flight, "
			   "%llu bytes of faults waiting for room",
			   (double)idle / 1e9, __atomic_load_n(&p->doing, __ATOMIC_RELAXED),
			   (unsigned long long)__atomic_load_n(&p->resident, __ATOMIC_RELAXED),
			   (size_t)__atomic_load_n(&p->share, __ATOMIC_RELAXED),
			   (unsigned long long)p->inflight, (unsigned long long)p->waiting_bytes);
	}
	pthread_mutex_unlock(&p->watch_lock);
}

int tide__watchdog_start(struct tide_pool *p)
{
	pthread_mutex_init(&p->watch_lock, NULL);
	pthread_cond_init(&p->watch_cond, NULL);
	p->watch_stop = false;
	if (!p->opt.watchdog_s)
		return 0;
	return uv_thread_create(&p->watch_thread, watch, p) < 0 ? -EAGAIN : 0;
}

void tide__watchdog_stop(struct tide_pool *p)
{
	if (p->opt.watchdog_s) {
		pthread_mutex_lock(&p->watch_lock);
		p->watch_stop = true;
		pthread_cond_signal(&p->watch_cond);
		pthread_mutex_unlock(&p->watch_lock);
		uv_thread_join(&p->watch_thread);
	}
	pthread_cond_destroy(&p->watch_cond);
	pthread_mutex_destroy(&p->watch_lock);
}
