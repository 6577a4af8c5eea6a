/*
 * Keepers: halt polling while faults flow (TIDE_WAKE_POLL_US).
 *
 * A fault is two wake-ups: the faulting thread wakes the service thread,
 * which later wakes the faulting thread. The scheduler puts a woken thread
 * on an idle vCPU, and on a VM whose guest halt polling is off an idle vCPU
 * halts at once: waking it costs ~100 us, eight times a whole round trip on
 * one vCPU. So while the service thread has served a fault in the last N
 * us, or a fault waits for a demand read (TIDE_READ_WAIT_NS), idle vCPUs
 * are kept polling, one of three ways, best first:
 *
 * - The guest kernel does it itself (the haltpoll cpuidle driver with a
 *   window): tide does nothing.
 * - A CPU latency request (TIDE_WAKE_QOS): one holder thread writes 0 to
 *   /dev/cpu_dma_latency when faults begin to flow and takes it back 1 ms
 *   after they stop. With a latency limit of 0 the cpuidle governor picks
 *   the polling state, so an idle vCPU polls in the idle task with
 *   TIF_POLLING_NRFLAG set, and a wake-up aimed at it needs no interrupt
 *   at all. Needs the device open for writing (root) and a polling state
 *   on every CPU; the request is the open file's, and goes when it closes.
 * - Keeper threads: one SCHED_IDLE thread pinned to each CPU that spins
 *   while hot. A wake-up aimed at a vCPU running a keeper must interrupt
 *   it (~12-20 us here), but not wake it from a halt. SCHED_IDLE gives way
 *   to any real thread at once; the price is the idle CPU time of the hot
 *   periods, burnt. A service thread that polls (TIDE_SPIN_US, loop.c)
 *   keeps its own vCPU awake: the keeper there gives way to it
 *   (tide__keepers_spinning) and keeps the others'.
 *
 * Between hot periods the keepers or the holder sleep on a futex.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* The latency request: held this long after the window's end, so that a
 * program faulting every few hundred microseconds does not write it twice
 * a fault, and the holder wakes at most ~1000 times a second. */
#define QOS_LINGER_NS 1000000u
/* What a request asks when it asks nothing: PM_QOS_CPU_LATENCY_DEFAULT_VALUE. */
#define QOS_NONE 2000000000
#define QOS_DEVICE "/dev/cpu_dma_latency"

struct keeper {
	struct tide_pool *pool;
	pthread_t thread;
	int cpu;
};

static void futex_wait(uint32_t *word, uint32_t val, uint64_t ns)
{
	struct timespec t = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };

	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, ns ? &t : NULL, NULL, 0);
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

/* Announce the sleep, then look once more: either the service thread sees
 * a sleeper and bumps the word, or we see its kick. */
static void sleep_until_hot(struct tide_pool *p)
{
	uint32_t seq;

	__atomic_add_fetch(&p->keep_sleepers, 1, __ATOMIC_SEQ_CST);
	seq = __atomic_load_n(&p->keep_seq, __ATOMIC_SEQ_CST);
	if (!hot(p) && !__atomic_load_n(&p->keep_stop, __ATOMIC_SEQ_CST))
		futex_wait(&p->keep_seq, seq, 0);
	__atomic_sub_fetch(&p->keep_sleepers, 1, __ATOMIC_SEQ_CST);
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
		sleep_until_hot(p);
	}
	return NULL;
}

/* When the latency request may go: QOS_LINGER_NS after the window, and
 * after the read-wait while a demand read is out. */
static uint64_t hold_until(const struct tide_pool *p)
{
	uint64_t until = __atomic_load_n(&p->keep_until, __ATOMIC_SEQ_CST);

	if (__atomic_load_n(&p->keep_reads, __ATOMIC_ACQUIRE))
		until += TIDE_READ_WAIT_NS;
	return until + QOS_LINGER_NS;
}

/* The device takes a binary s32 and, open, fails only on a bad size; were
 * it to fail, idle vCPUs would halt (or poll) as they did before. */
static void qos_ask(struct tide_pool *p, int32_t us)
{
	if (write(p->keep_qos_fd, &us, sizeof(us)) != (ssize_t)sizeof(us) && p->opt.verbose)
		tide__warn("wake polling: cannot set the CPU latency request to %d us: %s",
			   (int)us, strerror(errno));
}

/* The holder: 0 while hot and QOS_LINGER_NS after, nothing asked between. */
static void *holder_main(void *arg)
{
	struct keeper *k = arg;
	struct tide_pool *p = k->pool;

	while (!__atomic_load_n(&p->keep_stop, __ATOMIC_ACQUIRE)) {
		uint64_t now, end;

		if (!hot(p)) {
			sleep_until_hot(p);
			continue;
		}
		qos_ask(p, 0);
		/* Sleep to the end of the hold, again while kicks move it on.
		 * The word is read before the stop flag: tide__keepers_stop
		 * sets the flag, then bumps the word, so either we see the
		 * flag or the wait returns at once. */
		for (;;) {
			uint32_t seq = __atomic_load_n(&p->keep_seq, __ATOMIC_SEQ_CST);

			if (__atomic_load_n(&p->keep_stop, __ATOMIC_SEQ_CST) ||
			    (now = tide__now_ns()) >= (end = hold_until(p)))
				break;
			futex_wait(&p->keep_seq, seq, end - now);
		}
		qos_ask(p, QOS_NONE);
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
		__atomic_add_fetch(&p->keep_periods, 1, __ATOMIC_RELAXED);
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

/* Every CPU this process may run on has a polling idle state that a CPU
 * latency request of 0 selects (every cpuidle governor does: the request
 * rules out any state with an exit latency). Without a cpuidle driver an
 * idle CPU halts whatever is asked. */
static bool idle_polls(void)
{
	cpu_set_t allowed;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		return false;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		char path[80], buf[16];

		if (!CPU_ISSET(cpu, &allowed))
			continue;
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/cpuidle/state0/name", cpu);
		if (strcmp(tide__read_text(path, buf, sizeof(buf)), "POLL"))
			return false;
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/cpuidle/state0/disable", cpu);
		if (strcmp(tide__read_text(path, buf, sizeof(buf)), "0"))
			return false;
	}
	return true;
}

/*
 * The pools holding a latency request, for fork: a child has no holder
 * thread and its copy of the pool is dead (its requests fail with
 * -ECHILD), but its copy of the file would keep the request alive, at 0
 * if it forked while faults flowed, until it exits or execs.
 */
static pthread_mutex_t qos_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tide_pool *qos_pools;
static pthread_once_t qos_once = PTHREAD_ONCE_INIT;

static void qos_before_fork(void)
{
	pthread_mutex_lock(&qos_lock);
}

static void qos_after_fork_parent(void)
{
	pthread_mutex_unlock(&qos_lock);
}

static void qos_after_fork_child(void)
{
	for (struct tide_pool *p = qos_pools; p; p = p->keep_qos_next) {
		close(p->keep_qos_fd);
		p->keep_qos_fd = -1;
	}
	qos_pools = NULL;
	pthread_mutex_unlock(&qos_lock);
}

static void qos_atfork(void)
{
	pthread_atfork(qos_before_fork, qos_after_fork_parent, qos_after_fork_child);
}

static void qos_list(struct tide_pool *p, bool add)
{
	pthread_mutex_lock(&qos_lock);
	if (add) {
		p->keep_qos_next = qos_pools;
		qos_pools = p;
	} else {
		for (struct tide_pool **pp = &qos_pools; *pp; pp = &(*pp)->keep_qos_next)
			if (*pp == p) {
				*pp = p->keep_qos_next;
				break;
			}
	}
	pthread_mutex_unlock(&qos_lock);
}

static int holder_start(struct tide_pool *p)
{
	int fd, ret;

	/* Opening makes a request that asks nothing until written. */
	if ((fd = open(QOS_DEVICE, O_WRONLY | O_CLOEXEC)) < 0)
		return -errno;
	if (!(p->keepers = calloc(1, sizeof(*p->keepers)))) {
		close(fd);
		return -ENOMEM;
	}
	pthread_once(&qos_once, qos_atfork);
	p->keepers[0] = (struct keeper){ .pool = p, .cpu = -1 };
	p->keep_qos_fd = fd;
	qos_list(p, true);
	ret = pthread_create(&p->keepers[0].thread, NULL, holder_main, &p->keepers[0]);
	if (ret) {
		qos_list(p, false);
		close(fd);
		free(p->keepers);
		p->keepers = NULL;
		return -ret;
	}
	pthread_setname_np(p->keepers[0].thread, "tide-latency");
	p->nkeepers = 1;
	return 0;
}

/* One keeper per CPU the process may run on. */
static int threads_start(struct tide_pool *p)
{
	cpu_set_t allowed;
	int n = 0, ret;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		return -errno;
	p->keepers = calloc((size_t)CPU_COUNT(&allowed), sizeof(*p->keepers));
	if (!p->keepers)
		return -ENOMEM;
	for (int cpu = 0; cpu < CPU_SETSIZE && n < CPU_COUNT(&allowed); cpu++) {
		struct keeper *k = &p->keepers[n];

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

/*
 * Nothing when the option is 0, with one CPU (no other vCPU to halt), or
 * when the kernel polls idle vCPUs itself; else a latency request where
 * this process may make one that makes idle CPUs poll; else keeper threads,
 * but not with signal faults (app threads serve their own faults, and a
 * keeper would take the CPU a woken one needs). Measured here (AMD VM,
 * default placement, page-cache fills, one app thread, the service thread
 * not polling): 49-50k faults/s with the kernel's halt polling and no
 * keepers, 21-26k/s with both, 25-30k/s with keepers alone; polling
 * (TIDE_SPIN_US): 53-67k/s with the latency request, 26-35k/s with
 * keepers. With signal faults, random 4 KiB reads from disk: 9.8-11.3k
 * against 8.9-9.5k/s for one thread, 23-32k against 19-22k for eight.
 */
int tide__wake_poll_plan(const struct tide_options *o, char *why, size_t len)
{
	int fallback = o->signal_faults ? TIDE_WAKE_POLL_OFF : TIDE_WAKE_POLL_THREADS;
	const char *instead = o->signal_faults ? "nothing (no keeper threads with TIDE_SIGNAL_FAULTS)"
					       : "keeper threads";
	cpu_set_t allowed;
	long halt_poll;
	int fd;

	if (!o->wake_poll_us) {
		snprintf(why, len, "turned off (TIDE_WAKE_POLL_US=0)");
		return TIDE_WAKE_POLL_OFF;
	}
	if ((halt_poll = tide__guest_halt_poll(NULL, 0)) > 0) {
		snprintf(why, len, "the guest kernel polls idle vCPUs itself (guest_halt_poll_ns %ld)",
			 halt_poll);
		return TIDE_WAKE_POLL_KERNEL;
	}
	if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_COUNT(&allowed) < 2) {
		snprintf(why, len, "one CPU: no other vCPU to keep awake");
		return TIDE_WAKE_POLL_OFF;
	}
	if (!o->wake_qos) {
		snprintf(why, len, "%s (TIDE_WAKE_QOS=0)", instead);
		return fallback;
	}
	if (!idle_polls()) {
		snprintf(why, len, "%s: a CPU has no polling idle state to ask for", instead);
		return fallback;
	}
	if ((fd = open(QOS_DEVICE, O_WRONLY | O_CLOEXEC)) < 0) {
		snprintf(why, len, "%s: cannot open %s (%s)", instead, QOS_DEVICE, strerror(errno));
		return fallback;
	}
	close(fd);
	snprintf(why, len, "a CPU latency request of 0 while faults flow (%s)", QOS_DEVICE);
	return TIDE_WAKE_POLL_QOS;
}

int tide__keepers_start(struct tide_pool *p)
{
	char why[160];
	int mode = tide__wake_poll_plan(&p->opt, why, sizeof(why)), ret;

	if (mode == TIDE_WAKE_POLL_QOS && (ret = holder_start(p)) < 0) {
		snprintf(why, sizeof(why), "%s: no CPU latency request (%s)",
			 p->opt.signal_faults ? "nothing" : "keeper threads", strerror(-ret));
		mode = p->opt.signal_faults ? TIDE_WAKE_POLL_OFF : TIDE_WAKE_POLL_THREADS;
	}
	if (mode == TIDE_WAKE_POLL_THREADS && (ret = threads_start(p)) < 0)
		return ret;
	p->keep_mode = mode;
	if (p->opt.verbose)
		tide__info("wake polling: %s", why);
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
	if (p->keep_mode == TIDE_WAKE_POLL_QOS) {
		/* The holder took its request back on the way out; closing
		 * ends it. */
		qos_list(p, false);
		if (p->keep_qos_fd >= 0)
			close(p->keep_qos_fd);
		p->keep_qos_fd = -1;
	}
	free(p->keepers);
	p->keepers = NULL;
	p->nkeepers = 0;
}

void tide__keepers_stats(struct tide_pool *p, struct tide_stats *stats)
{
	p = keeper_pool(p);
	stats->wake_poll = p->keep_mode;
	stats->wake_periods = __atomic_load_n(&p->keep_periods, __ATOMIC_RELAXED);
}
