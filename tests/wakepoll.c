/* Polling while faults flow. TIDE_WAKE_POLL_US: one keeper thread per CPU,
 * spinning only while faults flow, asleep otherwise, all gone when the
 * pool is destroyed (the CPU latency request, TIDE_WAKE_QOS, is
 * tests/latency.c). TIDE_SPIN_US: the service thread polls after activity
 * and while a fault waits for a read, gives its CPU to a busy thread, and
 * the keeper of its CPU gives way to it. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"
#include "tide.h"

struct keepers {
	int count, sleeping;
	unsigned long long cpu_ticks;   /* utime + stime of them all */
};

/* State and utime + stime (clock ticks) of thread `tid` of this process,
 * from /proc/self/task/TID/stat (fields 3, 14 and 15); false if gone. */
static bool task_stat(const char *tid, char *state, unsigned long long *ticks)
{
	char path[300], buf[512], *p = NULL;
	unsigned long long ut, st;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%s/stat", tid);
	if (!(f = fopen(path, "r")))
		return false;
	if (fgets(buf, sizeof(buf), f))
		p = strrchr(buf, ')');
	fclose(f);
	if (!p || sscanf(p + 2, "%c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu %llu",
			 state, &ut, &st) != 3)
		return false;
	*ticks = ut + st;
	return true;
}

/* The threads named tide-keeper: how many, how many asleep, their CPU. */
static struct keepers keepers_now(void)
{
	struct keepers k = { 0 };
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;

	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		char path[300], name[32] = "", state;
		unsigned long long ticks;
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		if (!fgets(name, sizeof(name), f))
			name[0] = 0;
		fclose(f);
		if (strncmp(name, "tide-keeper", 11) || !task_stat(e->d_name, &state, &ticks))
			continue;
		k.count++;
		k.sleeping += state == 'S';
		k.cpu_ticks += ticks;
	}
	closedir(d);
	return k;
}

static uint64_t ns_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t ms_now(void)
{
	return ns_now() / 1000000;
}

static int allowed_cpus(void)
{
	cpu_set_t s;

	cr_assert_eq(sched_getaffinity(0, sizeof(s), &s), 0);
	return CPU_COUNT(&s);
}

Test(wakepoll, keepers_poll_while_hot_sleep_after_and_leave_with_the_pool)
{
	struct tide_options o;
	struct tide_stats st;
	tide_pool *pool;
	struct keepers k;
	size_t len = 16 * MiB;
	int fd, ncpu = allowed_cpus();
	uint64_t *p, deadline;

	test_require_uffd();
	test_require_keepers();
	tide_options_init(&o);
	o.budget = 4 * MiB;
	o.page_size = 4 * KiB;
	o.wake_poll_us = 2000;
	o.wake_qos = 0;         /* threads, not a CPU latency request */
	o.signal_faults = 0;    /* keepers are for faults sent to the service thread */
	o.spin_us = 0;          /* the keeper of a polling one's CPU gives way */
	cr_assert_eq(keepers_now().count, 0);
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	cr_expect_eq(keepers_now().count, ncpu, "one keeper per CPU");

	fd = test_file(len, 11);
	p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	/* Faults through a pool 4x smaller: data, eviction and write-back
	 * work as without keepers. */
	for (size_t i = 0; i < len / 8; i += 512)
		p[i] ^= test_word(i, 11) ^ i;
	for (size_t i = 0; i < len / 8; i += 512)
		cr_assert_eq(p[i], i, "word %zu", i);
	cr_assert_eq(tide_pool_stats(pool, &st), 0);
	cr_expect_gt(st.evictions_dirty, 0);

	/* No faults now: within a few windows every keeper sleeps. */
	deadline = ms_now() + 5000;
	for (k = keepers_now(); k.sleeping < k.count && ms_now() < deadline; k = keepers_now())
		sched_yield();
	cr_expect_eq(k.sleeping, k.count, "%d of %d keepers asleep 5 s after the last fault",
		     k.sleeping, k.count);
	/* And asleep means not burning CPU: one tick is 10 ms at most. */
	{
		unsigned long long before = k.cpu_ticks;
		uint64_t until = ms_now() + 200;

		while (ms_now() < until)
			usleep(10000);
		cr_expect_leq(keepers_now().cpu_ticks, before + 1,
			      "keepers used CPU time while the pool was idle");
	}

	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	cr_expect_eq(keepers_now().count, 0, "keepers left after tide_pool_destroy");
	close(fd);
}

/* On by default: a pool on a machine with several CPUs holds a CPU latency
 * request where it may, else has a keeper per CPU; its stats say which. */
Test(wakepoll, on_by_default)
{
	tide_pool *pool;
	struct tide_options o;
	cpu_set_t set;
	char why[160];
	int plan;

	test_require_uffd();
	if (getenv("TIDE_WAKE_POLL_US") || getenv("TIDE_WAKE_QOS"))
		cr_skip_test("TIDE_WAKE_POLL_US or TIDE_WAKE_QOS is set in the environment");
	test_require_keepers();
	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	tide_options_init(&o);
	o.budget = 4 * MiB;
	o.signal_faults = 0;
	o.spin_us = 0;
	cr_assert_gt(o.wake_poll_us, 0);
	cr_assert_eq(o.wake_qos, 1);
	plan = tide__wake_poll_plan(&o, why, sizeof(why));
	cr_assert(plan == TIDE_WAKE_POLL_QOS || plan == TIDE_WAKE_POLL_THREADS, "%s", why);
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	cr_expect_eq(test_stats(pool).wake_poll, plan, "%s", why);
	cr_expect_eq(keepers_now().count, plan == TIDE_WAKE_POLL_THREADS ? CPU_COUNT(&set) : 0);
	cr_expect_eq(test_threads_named("tide-latency", NULL, 0), plan == TIDE_WAKE_POLL_QOS);
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	cr_expect_eq(keepers_now().count, 0);
	cr_expect_eq(test_threads_named("tide-latency", NULL, 0), 0);
}

Test(wakepoll, zero_turns_it_off)
{
	tide_pool *pool;
	struct tide_options o;

	test_require_uffd();
	tide_options_init(&o);
	o.budget = 4 * MiB;
	o.wake_poll_us = 0;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	cr_expect_eq(keepers_now().count, 0);
	cr_expect_eq(test_threads_named("tide-latency", NULL, 0), 0);
	cr_expect_eq(test_stats(pool).wake_poll, TIDE_WAKE_POLL_OFF);
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
}

/*
 * Where the guest kernel polls idle vCPUs itself (the haltpoll cpuidle
 * driver with guest_halt_poll_ns > 0) the keepers stand down: a wake-up
 * aimed at a vCPU running a keeper must interrupt it, one aimed at the
 * kernel's polling idle loop costs nothing. The test turns the kernel's
 * polling on and off (root; the suites run one at a time) and puts the
 * value back.
 */
#define HALT_POLL "/sys/module/haltpoll/parameters/guest_halt_poll_ns"

static long halt_poll_saved = -1;

static bool halt_poll_set(long ns)
{
	FILE *f = fopen(HALT_POLL, "w");
	bool ok;

	if (!f)
		return false;
	ok = fprintf(f, "%ld\n", ns) > 0;
	return fclose(f) == 0 && ok;
}

static void halt_poll_restore(void)
{
	if (halt_poll_saved >= 0)
		halt_poll_set(halt_poll_saved);
}

/* The keepers a new pool starts (threads asked for), and its wake_poll. */
static int keepers_of_a_new_pool(int *wake_poll)
{
	struct tide_options o;
	tide_pool *pool;
	int n;

	tide_options_init(&o);
	o.budget = 4 * MiB;
	o.wake_poll_us = 50;
	o.wake_qos = 0;
	o.signal_faults = 0;
	o.spin_us = 0;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	n = keepers_now().count;
	*wake_poll = test_stats(pool).wake_poll;
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	return n;
}

Test(wakepoll, keepers_stand_down_where_the_kernel_polls_idle_vcpus, .fini = halt_poll_restore)
{
	int ncpu = allowed_cpus(), wp;

	test_require_uffd();
	if (ncpu < 2)
		cr_skip("one CPU: no other vCPU to keep awake, so no keepers start");
	halt_poll_saved = tide__guest_halt_poll(NULL, 0);
	if (halt_poll_saved < 0)
		cr_skip("no haltpoll cpuidle driver here: the guest kernel never polls idle vCPUs");
	if (!halt_poll_set(halt_poll_saved))
		cr_skip("cannot write " HALT_POLL " (%s): needs root", strerror(errno));

	cr_assert(halt_poll_set(200000));
	cr_assert_eq(tide__guest_halt_poll(NULL, 0), 200000);
	cr_expect_eq(keepers_of_a_new_pool(&wp), 0, "keepers started beside the kernel's halt polling");
	cr_expect_eq(wp, TIDE_WAKE_POLL_KERNEL);

	cr_assert(halt_poll_set(0));
	cr_assert_eq(tide__guest_halt_poll(NULL, 0), 0);
	cr_expect_eq(keepers_of_a_new_pool(&wp), ncpu, "no keepers with the kernel's halt polling off");
	cr_expect_eq(wp, TIDE_WAKE_POLL_THREADS);
}

/* utime + stime of one thread, in clock ticks. */
static unsigned long long thread_ticks(pid_t tid)
{
	char id[16], state;
	unsigned long long ticks = 0;

	snprintf(id, sizeof(id), "%d", (int)tid);
	cr_assert(task_stat(id, &state, &ticks), "no /proc/self/task/%s/stat", id);
	return ticks;
}

static unsigned long long ticks_over_ms(pid_t tid, unsigned ms)
{
	unsigned long long before = thread_ticks(tid);
	uint64_t until = ms_now() + ms;

	while (ms_now() < until)
		usleep(10000);
	return thread_ticks(tid) - before;
}

/* A pool whose service thread is pinned to CPU 0 and polls for `spin_us`
 * after activity, over a 1 MiB file; *fd gets the file. */
static uint64_t *spin_pool(tide_pool **pool, unsigned spin_us, unsigned wake_poll_us, int *fd)
{
	struct tide_options o;
	uint64_t *p;

	tide_options_init(&o);
	o.budget = 4 * MiB;
	o.page_size = 4 * KiB;
	o.spin_us = spin_us;
	o.wake_poll_us = wake_poll_us;
	o.wake_qos = 0;         /* keeper threads, when wake_poll_us asks for them */
	o.service_cpu = 0;
	o.signal_faults = 0;
	o.flush_interval_ms = 0;
	cr_assert_eq(tide_pool_create(pool, &o), 0, "%s", tide_last_error());
	*fd = test_file(1 * MiB, 21);
	p = tide_map(*pool, *fd, 0, 1 * MiB, TIDE_PROT_READ, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	return p;
}

static void spin_pool_end(tide_pool *pool, uint64_t *p, int fd)
{
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	close(fd);
}

/*
 * TIDE_SPIN_US: after serving a fault the service thread keeps polling for
 * the window instead of sleeping in the loop (so it burns its CPU), then
 * sleeps. The window here is long (0.4 s) so CPU ticks (10 ms) can tell
 * polling from sleeping.
 */
Test(wakepoll, spin_polls_after_a_fault_then_sleeps)
{
	struct test_thread svc;
	tide_pool *pool;
	uint64_t *p;
	int fd;

	test_require_uffd();
	p = spin_pool(&pool, 400000, 0, &fd);
	cr_assert_eq(test_threads_named("tide-service", &svc, 1), 1);

	/* Idle before any fault, once the window of the mapping's request
	 * has passed: asleep. */
	ticks_over_ms(svc.tid, 500);
	cr_expect_leq(ticks_over_ms(svc.tid, 200), 2, "the service thread used CPU before any fault");

	cr_assert_eq(p[0], test_word(0, 21));
	/* Within the window: polling, so most of the time on a CPU. */
	cr_expect_geq(ticks_over_ms(svc.tid, 200), 5,
		      "the service thread slept within its TIDE_SPIN_US window");
	/* Past it: asleep again. */
	ticks_over_ms(svc.tid, 400);
	cr_expect_leq(ticks_over_ms(svc.tid, 300), 2,
		      "the service thread kept polling after its TIDE_SPIN_US window");
	/* Nobody else wanted its CPU; the host taking the vCPU away during
	 * a yield that ran a kernel thread can pass for it, rarely. */
	cr_expect_leq(test_stats(pool).spin_rests, 2, "the service thread rested with the CPU free");

	spin_pool_end(pool, p, fd);
}

struct busy {
	uint64_t until_ms;
	pid_t tid;
};

static void *busy_main(void *arg)
{
	struct busy *b = arg;
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(0, &one);
	cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0);
	__atomic_store_n(&b->tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	while (ms_now() < b->until_ms)
		;
	return NULL;
}

/*
 * A polling service thread gives its CPU to a thread that wants it: with a
 * compute-bound thread on CPU 0 beside it, the service thread's 0.4 s
 * window ends in a rest (spin_rests), and the busy thread gets the CPU.
 */
Test(wakepoll, spin_gives_way_to_a_busy_thread_on_its_cpu)
{
	struct busy b = { .until_ms = ms_now() + 600 };
	tide_pool *pool;
	pthread_t t;
	uint64_t *p;
	pid_t tid;
	int fd;

	test_require_uffd();
	p = spin_pool(&pool, 400000, 0, &fd);
	cr_assert_eq(pthread_create(&t, NULL, busy_main, &b), 0);
	while (!(tid = __atomic_load_n(&b.tid, __ATOMIC_ACQUIRE)))
		sched_yield();

	cr_assert_eq(p[0], test_word(0, 21));
	/* 20 ticks in 200 ms is all of CPU 0; a poller sharing it round by
	 * round would leave the busy thread half. */
	cr_expect_geq(ticks_over_ms(tid, 200), 15,
		      "the busy thread did not get its CPU back from the polling service thread");
	cr_expect_gt(test_stats(pool).spin_rests, 0,
		     "the service thread never stopped polling beside a busy thread");
	pthread_join(t, NULL);

	spin_pool_end(pool, p, fd);
}

/*
 * Keepers run beside a polling service thread (its own vCPU is awake, the
 * app's may not be), but the keeper on its CPU gives way to it: with both
 * windows long (0.4 s), the keeper on the service thread's CPU gets a small
 * share of it, the keeper on another CPU all of that one.
 */
Test(wakepoll, the_keeper_on_a_polling_service_threads_cpu_gives_way)
{
	struct test_thread k[64], *here = NULL, *there = NULL;
	unsigned long long here0, there0;
	tide_pool *pool;
	uint64_t *p;
	int fd, n;

	test_require_uffd();
	test_require_keepers();
	p = spin_pool(&pool, 400000, 400000, &fd);
	n = test_threads_named("tide-keeper", k, 64);
	cr_assert_eq(n, allowed_cpus(), "keepers start beside a polling service thread");
	for (int i = 0; i < n; i++) {
		if (k[i].cpu == 0)
			here = &k[i];
		else if (!there && k[i].cpu > 0 && k[i].cpu < 64)
			there = &k[i];
	}
	if (!here || !there)
		cr_skip("this process may not run on CPU 0 and one more below 64");

	cr_assert_eq(p[0], test_word(0, 21));
	here0 = thread_ticks(here->tid);
	there0 = thread_ticks(there->tid);
	ticks_over_ms(here->tid, 200);
	unsigned long long on_here = thread_ticks(here->tid) - here0;
	unsigned long long on_there = thread_ticks(there->tid) - there0;
	cr_expect_geq(on_there, 10, "the keeper on CPU %d did not spin (%llu ticks)", there->cpu, on_there);
	cr_expect_leq(on_here * 2, on_there,
		      "the keeper on the service thread's CPU took %llu ticks, the other %llu",
		      on_here, on_there);

	spin_pool_end(pool, p, fd);
}

/*
 * A store whose reads take READ_US, as a device's do: read() queues the job,
 * a thread completes it READ_US after it was asked (tide_io_complete from
 * a thread of its own, as custom stores may).
 */
#define READ_US 300

struct slow_store {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct slow_job { struct tide_io *io; uint64_t *buf; size_t len; uint64_t off; uint64_t due_ns; } jobs[64];
	unsigned head, tail;
	bool stop;
	pthread_t device;
};

static void *slow_device(void *arg)
{
	struct slow_store *s = arg;

	pthread_mutex_lock(&s->lock);
	while (!s->stop || s->head != s->tail) {
		if (s->head == s->tail) {
			pthread_cond_wait(&s->cond, &s->lock);
			continue;
		}
		struct slow_job j = s->jobs[s->head++ % 64];
		struct timespec due = { (time_t)(j.due_ns / 1000000000u), (long)(j.due_ns % 1000000000u) };

		pthread_mutex_unlock(&s->lock);
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
		for (size_t i = 0; i < j.len / 8; i++)
			j.buf[i] = test_word(j.off / 8 + i, 31);
		tide_io_complete(j.io, (ssize_t)j.len);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static int slow_read(void *store, struct tide_io *io, void *buf, size_t len, uint64_t off)
{
	struct slow_store *s = store;

	pthread_mutex_lock(&s->lock);
	if (s->tail - s->head == 64) {
		pthread_mutex_unlock(&s->lock);
		return -EAGAIN;
	}
	s->jobs[s->tail++ % 64] = (struct slow_job){ io, buf, len, off, ns_now() + READ_US * 1000 };
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int slow_write(void *store, struct tide_io *io, const void *buf, size_t len, uint64_t off)
{
	(void)store, (void)buf, (void)off;
	tide_io_complete(io, (ssize_t)len);
	return 0;
}

static const struct tide_store_ops slow_ops = { .read = slow_read, .write = slow_write };

/*
 * While a fault waits for a read, the polling service thread goes on
 * polling (up to TIDE_READ_WAIT_NS past its window), so the completion
 * costs it no wake-up: with reads of 300 us and a window of 20 us, it is
 * on a CPU most of the time faults wait for reads; a thread that slept
 * when its window ran out would be on one a seventh of it.
 */
Test(wakepoll, spin_polls_while_a_fault_waits_for_a_read)
{
	struct slow_store s = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	size_t len = 4 * MiB, pages = len / (4 * KiB);
	struct test_thread svc;
	struct tide_options o;
	unsigned long long ticks;
	uint64_t *p, t0, wall_ms;
	tide_pool *pool;

	test_require_uffd();
	tide_options_init(&o);
	o.budget = 4 * MiB;
	o.page_size = 4 * KiB;
	o.spin_us = 20;
	o.wake_poll_us = 0;
	o.read_ahead = 0;
	o.signal_faults = 0;
	o.flush_interval_ms = 0;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	cr_assert_eq(pthread_create(&s.device, NULL, slow_device, &s), 0);
	p = tide_map_store(pool, &slow_ops, &s, 0, len, TIDE_PROT_READ, 4 * KiB);
	cr_assert_not_null(p, "%s", tide_last_error());
	cr_assert_eq(test_threads_named("tide-service", &svc, 1), 1);

	/* Every page once, far apart: each touch a fault that waits. */
	ticks = thread_ticks(svc.tid);
	t0 = ms_now();
	for (size_t i = 0, pg = 0; i < pages; i++, pg = (pg + 97) % pages)
		cr_assert_eq(p[pg * 512], test_word(pg * 512, 31), "page %zu", pg);
	wall_ms = ms_now() - t0;
	ticks = thread_ticks(svc.tid) - ticks;
	cr_expect_geq(wall_ms, pages * READ_US / 1000, "faults did not wait for their reads");
	/* A tick is 10 ms: on a CPU a third of the time at least (63-80%
	 * measured; 13-15% when it sleeps as its window runs out). */
	cr_expect_geq(ticks * 10 * 3, wall_ms,
		      "the service thread ran %llu ticks of 10 ms in %llu ms of faults waiting for reads",
		      ticks, (unsigned long long)wall_ms);

	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	pthread_mutex_lock(&s.lock);
	s.stop = true;
	pthread_cond_signal(&s.cond);
	pthread_mutex_unlock(&s.lock);
	pthread_join(s.device, NULL);
}
