/*
 * Keepers: user-space halt polling while faults flow (TIDE_WAKE_POLL_US).
 *
 * A fault is two wake-ups: the faulting thread wakes the service thread,
 * which later wakes the faulting thread. The scheduler puts a woken thread
 * on an idle vCPU, and on a VM whose guest halt polling is off an idle vCPU
 * halts at once: waking it costs ~100 us, eight times a whole round trip on
 * one vCPU. A keeper is a SCHED_IDLE thread pinned to one CPU that spins
 * while the service thread has served a fault in the last N us, or a fault
 * waits for a demand read (TIDE_READ_WAIT_NS), so no vCPU the app or the
 * service thread may be woken on is halted, and a wake-up lands in
 * microseconds. SCHED_IDLE gives way to any real thread at once; the price
 * is the idle CPU time of the hot periods, burnt. Between hot periods the
 * keepers sleep on a futex. Where the guest kernel polls idle vCPUs itself
 * (the haltpoll cpuidle driver with a window), it does this better, and
 * the keepers stand down (tide__keepers_start). A service thread that
 * polls (TIDE_SPIN_US, loop.c) keeps its own vCPU awake: the keeper there
 * gives way to it (tide__keepers_spinning) and keeps the others'.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

struct keeper {
	struct tide_pool *pool;
	pthread_t thread;
	int cpu;
};

static void futex_wait(uint32_t *word, uint32_t val)
{
	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* The read count first: a read that has stopped counting moved the window
 * on before (tide__keepers_read_end), so this sees the new deadline. */
static bool hot(const struct tide_pool *p)
{
	uint32_t reads = __atomic_load_n(&p->keep_reads, __ATOMIC_ACQUIRE);
	uint64_t now = tide__now_ns(), until = __atomic_load_n(&p->keep_until, __ATOMIC_SEQ_CST);

	return now < until || (reads && now < until + TIDE_READ_WAIT_NS);
}

static void *keeper_main(void *arg)
{
	struct keeper *k = arg;
	struct tide_pool *p = k->pool;
	struct sched_param none = { 0 };
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(k->cpu, &set);
	/* Best effort: a keeper that cannot be placed or demoted still does no
	 * harm beyond its spin, which is bounded by the hot period. */
	sched_setaffinity(0, sizeof(set), &set);
	sched_setscheduler(0, SCHED_IDLE, &none);
	while (!__atomic_load_n(&p->keep_stop, __ATOMIC_ACQUIRE)) {
		uint32_t seq;

		while (hot(p)) {
			/* The service thread polls on this CPU: it keeps the
			 * vCPU awake itself, and a keeper would take the turns
			 * its sched_yield() gives away. */
			if (k->cpu < 64 && (__atomic_load_n(&p->spin_cpus, __ATOMIC_RELAXED) >> k->cpu & 1)) {
				sched_yield();
				continue;
			}
			for (int i = 0; i < 64; i++)
				tide__cpu_relax();
		}
		/* Announce the sleep, then look once more: either the service
		 * thread sees a sleeper and bumps the word, or we see its kick. */
		__atomic_add_fetch(&p->keep_sleepers, 1, __ATOMIC_SEQ_CST);
		seq = __atomic_load_n(&p->keep_seq, __ATOMIC_SEQ_CST);
		if (!hot(p) && !__atomic_load_n(&p->keep_stop, __ATOMIC_SEQ_CST))
			futex_wait(&p->keep_seq, seq);
		__atomic_sub_fetch(&p->keep_sleepers, 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

/* The pool whose keepers serve p: one set per pool, a shard's are its
 * parent's (loop.c starts them). */
static struct tide_pool *keeper_pool(struct tide_pool *p)
{
	return p->parent ? p->parent : p;
}

/* The service thread served something: keep the vCPUs awake a while. */
void tide__keepers_kick(struct tide_pool *p)
{
	uint64_t window, until;

	p = keeper_pool(p);
	if (!p->keepers)
		return;
	window = (uint64_t)p->opt.wake_poll_us * 1000;
	until = tide__now_ns() + window;

	/* Move the deadline only when a quarter of the window has gone by:
	 * the keepers read it all the time, and a store on every pass would
	 * pull its cache line away from them on every fault. */
	if (until < __atomic_load_n(&p->keep_until, __ATOMIC_RELAXED) + window / 4)
		return;
	__atomic_store_n(&p->keep_until, until, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&p->keep_sleepers, __ATOMIC_SEQ_CST)) {
		__atomic_add_fetch(&p->keep_seq, 1, __ATOMIC_SEQ_CST);
		futex_wake_all(&p->keep_seq);
	}
}

/* The service thread of p polls on cpu now (-1: it stopped polling). The
 * keeper there yields instead of spinning: the poller yields between its
 * looks, and a keeper that took those turns would hold the CPU until the
 * next tick (together they ran 23-25k faults/s at default placement, the
 * poller alone 45-50k). Only CPUs below 64 are marked; a keeper above
 * spins as before. */
void tide__keepers_spinning(struct tide_pool *p, int cpu)
{
	struct tide_pool *k = keeper_pool(p);

	if (cpu == p->spin_cpu)
		return;
	if (p->spin_cpu >= 0 && p->spin_cpu < 64)
		__atomic_and_fetch(&k->spin_cpus, ~(1ull << p->spin_cpu), __ATOMIC_RELAXED);
	if (cpu >= 0 && cpu < 64)
		__atomic_or_fetch(&k->spin_cpus, 1ull << cpu, __ATOMIC_RELAXED);
	p->spin_cpu = cpu;
}

bool tide__keepers_reading(struct tide_pool *p)
{
	return __atomic_load_n(&keeper_pool(p)->keep_reads, __ATOMIC_RELAXED) != 0;
}

void tide__keepers_read_start(struct tide_pool *p)
{
	__atomic_add_fetch(&keeper_pool(p)->keep_reads, 1, __ATOMIC_RELAXED);
}

/* The window starts again before the read stops counting: the copy, the
 * faulting thread's wake-up and its next fault come next, and a keeper
 * that saw neither would halt its vCPU right before them. */
void tide__keepers_read_end(struct tide_pool *p)
{
	tide__keepers_kick(p);
	__atomic_sub_fetch(&keeper_pool(p)->keep_reads, 1, __ATOMIC_RELEASE);
}

/*
 * The guest kernel's own halt polling: on a KVM guest whose cpuidle driver
 * is haltpoll, an idle vCPU polls for up to guest_halt_poll_ns before it
 * halts (the window grows and shrinks with how soon wake-ups come). It
 * polls in the idle task with TIF_POLLING_NRFLAG set, so a wake-up aimed
 * at it costs no interrupt at all, where a wake-up aimed at a vCPU running
 * a keeper must interrupt the keeper. Returns the window in ns, 0 when the
 * driver is there and polling is off (haltpoll.guest_halt_poll_ns=0), -1
 * when the driver is not haltpoll (or cannot be read). driver (may be
 * NULL) gets the cpuidle driver's name, "" if unknown.
 */
long tide__guest_halt_poll(char *driver, size_t len)
{
	char drv[32], ns[32];

	tide__read_text("/sys/devices/system/cpu/cpuidle/current_driver", drv, sizeof(drv));
	if (driver)
		snprintf(driver, len, "%s", drv);
	if (strcmp(drv, "haltpoll") ||
	    !*tide__read_text("/sys/module/haltpoll/parameters/guest_halt_poll_ns", ns, sizeof(ns)))
		return -1;
	return strtol(ns, NULL, 10);
}

/* One keeper per CPU the process may run on; none when the option is 0,
 * when there is only one CPU (no other vCPU to halt), or when the kernel
 * polls idle vCPUs itself: measured here (AMD VM, default placement,
 * page-cache fills, the service thread not polling), one thread's faults
 * ran 49-50k/s with the kernel's polling and no keepers, 21-26k/s with
 * both, 25-30k/s with keepers alone. */
int tide__keepers_start(struct tide_pool *p)
{
	cpu_set_t allowed;
	long halt_poll;
	int n = 0;

	if (!p->opt.wake_poll_us)
		return 0;
	if ((halt_poll = tide__guest_halt_poll(NULL, 0)) > 0) {
		if (p->opt.verbose)
			tide__info("wake polling: the kernel's guest halt polling is on "
				   "(guest_halt_poll_ns %ld): no keeper threads", halt_poll);
		return 0;
	}
	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		return -errno;
	if (CPU_COUNT(&allowed) < 2)
		return 0;
	p->keepers = calloc((size_t)CPU_COUNT(&allowed), sizeof(*p->keepers));
	if (!p->keepers)
		return -ENOMEM;
	for (int cpu = 0; cpu < CPU_SETSIZE && n < CPU_COUNT(&allowed); cpu++) {
		struct keeper *k = &p->keepers[n];
		int ret;

		if (!CPU_ISSET(cpu, &allowed))
			continue;
		k->pool = p;
		k->cpu = cpu;
		ret = pthread_create(&k->thread, NULL, keeper_main, k);
		if (ret) {
			p->nkeepers = n;
			tide__keepers_stop(p);
			return -ret;
		}
		/* Named by the creator, so it is named before anyone looks. */
		pthread_setname_np(k->thread, "tide-keeper");
		p->nkeepers = ++n;
	}
	return 0;
}

void tide__keepers_stop(struct tide_pool *p)
{
	if (!p->keepers)
		return;
	__atomic_store_n(&p->keep_stop, true, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&p->keep_seq, 1, __ATOMIC_SEQ_CST);
	futex_wake_all(&p->keep_seq);
	for (int i = 0; i < p->nkeepers; i++)
		pthread_join(p->keepers[i].thread, NULL);
	free(p->keepers);
	p->keepers = NULL;
	p->nkeepers = 0;
}
