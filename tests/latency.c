/* TIDE_WAKE_QOS: idle CPUs kept polling by a CPU latency request of 0,
 * held while faults flow (service thread or signal faults) and taken back
 * after, one per pool, gone with it, and never kept alive by a fork child. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"
#include "tide.h"

static uint64_t ms_now(void)
{
	return tide__now_ns() / 1000000;
}

/*
 * TIDE_WAKE_QOS: the CPU latency request, as the kernel aggregates it over
 * every process's requests (reading /dev/cpu_dma_latency gives it, in us).
 */
static int32_t cpu_latency_now(void)
{
	int32_t us = -1;
	int fd = open("/dev/cpu_dma_latency", O_RDONLY | O_CLOEXEC);

	cr_assert_geq(fd, 0, "/dev/cpu_dma_latency: %s", strerror(errno));
	cr_assert_eq(read(fd, &us, sizeof(us)), (ssize_t)sizeof(us));
	close(fd);
	return us;
}

/* The request as it stood before the test, unless someone else already
 * asks for 0 (then nobody can tell ours). */
static int32_t cpu_latency_base(void)
{
	int32_t base;

	test_require_uffd();
	test_require_wake_qos();
	if ((base = cpu_latency_now()) == 0)
		cr_skip_test("another process holds a CPU latency request of 0: ours would not show");
	return base;
}

/* A pool of 4 MiB asking for the latency request (no keeper threads), over
 * a file of len bytes: touching page after page faults for ever if it is
 * larger than the pool. */
static uint64_t *qos_pool(tide_pool **pool, int *fd, size_t len, int signal_faults)
{
	struct tide_options o;
	uint64_t *p;

	tide_options_init(&o);
	o.budget = 4 * MiB;
	o.page_size = 4 * KiB;
	o.wake_poll_us = 50;
	o.wake_qos = 1;
	o.signal_faults = signal_faults;
	o.read_ahead = 0;
	o.flush_interval_ms = 0;    /* no background passes: only faults are work */
	cr_assert_eq(tide_pool_create(pool, &o), 0, "%s", tide_last_error());
	*fd = test_file(len, 41);
	p = tide_map(*pool, *fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	return p;
}

/* Touch page after page (checking each) until the request reads 0; the
 * number of pages it took, 0 if it never did within the file. */
static size_t fault_until_held(const uint64_t *p, size_t len)
{
	for (size_t pg = 0; pg < len / (4 * KiB); pg++) {
		cr_assert_eq(p[pg * 512], test_word(pg * 512, 41), "page %zu", pg);
		if (cpu_latency_now() == 0)
			return pg + 1;
	}
	return 0;
}

/* The request once nothing has kept it at 0 for a while (5 s at most). */
static int32_t latency_after_quiet(void)
{
	uint64_t deadline = ms_now() + 5000;
	int32_t us;

	while ((us = cpu_latency_now()) == 0 && ms_now() < deadline)
		usleep(1000);
	return us;
}

Test(latency, latency_request_held_while_faults_flow_then_released)
{
	int32_t base = cpu_latency_base(), now;
	size_t len = 16 * MiB;
	tide_pool *pool;
	uint64_t *p;
	struct tide_stats st;
	int fd;

	p = qos_pool(&pool, &fd, len, 0);
	st = test_stats(pool);
	cr_expect_eq(st.wake_poll, TIDE_WAKE_POLL_QOS, "wake_poll %s", tide_wake_poll_name(st.wake_poll));
	cr_expect_eq(test_threads_named("tide-latency", NULL, 0), 1);
	cr_expect_eq(test_threads_named("tide-keeper", NULL, 0), 0, "keeper threads beside the request");
	/* Mapping was work for the service thread too: once it has passed,
	 * and before any fault, nothing is asked. */
	cr_expect_eq(latency_after_quiet(), base, "the request asks for something before any fault");

	cr_assert_gt(fault_until_held(p, len), 0, "faults flowed through 16 MiB and the request never read 0");
	/* No faults now: within 1 ms and a bit it goes. */
	now = latency_after_quiet();
	cr_expect_eq(now, base, "the request still asks %d us 5 s after the last fault", now);
	st = test_stats(pool);
	cr_expect_geq(st.wake_periods, 1);

	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	cr_expect_eq(test_threads_named("tide-latency", NULL, 0), 0, "the holder outlived its pool");
	cr_expect_eq(cpu_latency_now(), base);
	close(fd);
}

/* Faults served on the threads that take them (TIDE_SIGNAL_FAULTS) hold
 * the request too: a thread waiting for its read or for another's page is
 * woken on a polling vCPU. The file fits in the pool (no eviction), and the
 * first writes to pages read in are write-protect faults, which read
 * nothing: the handlers ask themselves (without, the service thread's
 * passes asked in time in 3 runs of 4). No keeper threads there, with or
 * without the request. */
Test(latency, latency_request_with_signal_faults)
{
	int32_t base = cpu_latency_base();
	size_t len = 2 * MiB;
	struct tide_options o;
	tide_pool *pool;
	uint64_t *p;
	int fd;

	p = qos_pool(&pool, &fd, len, 1);
	cr_expect_eq(test_stats(pool).wake_poll, TIDE_WAKE_POLL_QOS);
	cr_expect_eq(test_threads_named("tide-keeper", NULL, 0), 0);
	cr_assert_gt(fault_until_held(p, len), 0, "faults flowed through 2 MiB and the request never read 0");
	for (size_t i = 0; i < len / 8; i += 512)
		cr_assert_eq(p[i], test_word(i, 41), "word %zu", i);
	cr_expect_eq(latency_after_quiet(), base, "the request stayed after the last fault");
	{
		struct tide_stats st = test_stats(pool);
		size_t pg;

		for (pg = 0; pg < len / (4 * KiB); pg++) {
			p[pg * 512] ^= 1;
			if (cpu_latency_now() == 0)
				break;
		}
		cr_expect_lt(pg, len / (4 * KiB), "writes to every page and no request");
		cr_expect_gt(test_stats(pool).faults_wp, st.faults_wp, "the writes were not write-protect faults");
		cr_expect_eq(test_stats(pool).fills, st.fills, "the writes read pages");
	}
	cr_expect_gt(test_stats(pool).faults_signal, 0, "no fault was served on the faulting thread");
	cr_expect_eq(latency_after_quiet(), base, "the request stayed after the last fault");
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	close(fd);

	tide_options_init(&o);
	o.budget = 4 * MiB;
	o.signal_faults = 1;
	o.wake_poll_us = 50;
	o.wake_qos = 0;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	cr_expect_eq(test_stats(pool).wake_poll, TIDE_WAKE_POLL_OFF);
	cr_expect_eq(test_threads_named("tide-keeper", NULL, 0), 0, "keeper threads beside signal faults");
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
}

struct toucher {
	const uint64_t *p;
	size_t len;
};

static void *touch_forever(void *arg)
{
	const struct toucher *t = arg;
	volatile uint64_t sink = 0;

	for (size_t pg = 0;; pg = (pg + 1) % (t->len / (4 * KiB)))
		sink += t->p[pg * 512];
	return NULL;
}

/*
 * A child of fork has no holder thread and its pool is dead; its copy of
 * the device's file must not keep the request alive. Process A makes a
 * pool, keeps faults flowing from one thread, forks B from another while
 * the request reads 0, and dies without taking it back; B lives on. The
 * request must go when A goes: had B kept its copy open, it would read 0
 * until B exits.
 */
Test(latency, a_fork_child_does_not_keep_the_latency_request)
{
	int32_t base = cpu_latency_base(), now;
	int ready[2], hold[2], status;
	pid_t a, b = 0;
	uint64_t deadline;

	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(hold), 0);
	if ((a = fork()) == 0) {
		struct toucher t = { .len = 16 * MiB };
		tide_pool *pool;
		pthread_t th;
		int fd;

		close(ready[0]);
		close(hold[1]);
		t.p = qos_pool(&pool, &fd, t.len, 0);
		if (pthread_create(&th, NULL, touch_forever, &t))
			_exit(2);
		deadline = ms_now() + 5000;
		while (cpu_latency_now() != 0)
			if (ms_now() > deadline)
				_exit(3);
		if ((b = fork()) == 0) {
			char c;

			/* B: wait for the test to let go, then leave. */
			if (read(hold[0], &c, 1) < 0)
				_exit(4);
			_exit(0);
		}
		if (b < 0 || write(ready[1], &b, sizeof(b)) != (ssize_t)sizeof(b))
			_exit(5);
		_exit(0);       /* faults still flowing: the request is 0 */
	}
	cr_assert_gt(a, 0);
	close(ready[1]);
	close(hold[0]);
	cr_assert_eq(read(ready[0], &b, sizeof(b)), (ssize_t)sizeof(b), "A did not fork B");
	cr_assert_eq(waitpid(a, &status, 0), a);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "A failed (status %#x)", status);

	cr_assert_eq(kill(b, 0), 0, "B is gone");
	now = latency_after_quiet();
	/* B is A's child, not ours: it leaves when the pipe closes. */
	close(hold[1]);
	cr_expect_eq(now, base, "the request read %d us 5 s after A died, with B alive", now);
	close(ready[0]);
}
