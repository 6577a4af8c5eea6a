/* Shards (TIDE_SERVICE_THREADS): one pool served by a service thread per CPU,
 * each with its own userfaultfd and share of the budget; a region goes to the
 * shard on the CPU that maps it, and the pool answers for all of them. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"   /* tide__stats_*: the histogram merge */

#define PAGE          (4 * KiB)
#define SHARD_BUDGET  (1 * MiB)
#define REGION        (4 * SHARD_BUDGET)   /* 4x what its shard may hold */
#define MAX_SERVICES  8

#define MAX_FD 4096

/* Which of the first MAX_FD descriptors are open. */
static void fds_open(bool open[MAX_FD])
{
	for (int fd = 0; fd < MAX_FD; fd++)
		open[fd] = fcntl(fd, F_GETFD) >= 0;
}

/* Descriptors open now that were not in `before`, other than the epoll
 * instance libuv before 1.51 leaks when uv_loop_init fails (libuv issue
 * 4755): those join `before`. */
static int fds_leaked(bool before[MAX_FD])
{
	int n = 0;

	for (int fd = 0; fd < MAX_FD; fd++) {
		char path[64], link[64] = "";

		if (before[fd] || fcntl(fd, F_GETFD) < 0)
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (readlink(path, link, sizeof(link) - 1) > 0 && !strcmp(link, "anon_inode:[eventpoll]") &&
		    strstr(tide_last_error(), "service loop failed to start"))
			before[fd] = true;
		else
			n++;
	}
	return n;
}

/* ---- CPUs ---- */

/* The first two CPUs this thread may run on: shards 0 and 1 are pinned to
 * them. Skips the test with fewer than two. */
static void two_cpus(int cpu[2])
{
	cpu_set_t set;
	int n = 0;

	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	if (CPU_COUNT(&set) < 2)
		cr_skip_test("one CPU allowed: two shards would share it, nothing to tell apart");
	for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
		if (CPU_ISSET(c, &set))
			cpu[n++] = c;
}

/* Run fn(arg) on a thread pinned to `cpu`; 0, or the pinning error. */
struct pinned {
	int cpu;
	void *(*fn)(void *);
	void *arg;
	int err;
};

static void *pinned_main(void *arg)
{
	struct pinned *pn = arg;
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(pn->cpu, &set);
	pn->err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	if (!pn->err && sched_getcpu() != pn->cpu)
		pn->err = EAGAIN;
	return pn->err ? NULL : pn->fn(pn->arg);
}

static void *on_cpu(int cpu, void *(*fn)(void *), void *arg)
{
	struct pinned pn = { cpu, fn, arg, 0 };
	pthread_t t;
	void *ret;

	cr_assert_eq(pthread_create(&t, NULL, pinned_main, &pn), 0);
	cr_assert_eq(pthread_join(t, &ret), 0);
	cr_assert_eq(pn.err, 0, "cannot run on CPU %d: %s", cpu, strerror(pn.err));
	return ret;
}

/* ---- pools ---- */

/* Quiet shards: no timer, no spinning, no keepers, so a service thread
 * runs only for faults and requests of its own regions. */
/* `faults_on_service`: force faults onto the service threads, for the
 * tests that watch them (TIDE_SIGNAL_FAULTS in the environment would serve
 * them on the faulting threads). */
static tide_pool *pool_with(unsigned shards, size_t budget, bool faults_on_service)
{
	struct tide_options o;
	tide_pool *pool;
	int ret;

	tide_options_init(&o);
	if (faults_on_service)
		o.signal_faults = 0;
	o.budget = budget;
	o.page_size = PAGE;
	o.service_threads = shards;
	o.service_cpu = -1;
	o.flush_interval_ms = 0;
	o.spin_us = 0;
	o.wake_poll_us = 0;
	o.watchdog_s = 0;
	ret = tide_pool_create(&pool, &o);
	cr_assert_eq(ret, 0, "tide_pool_create(%u shards): %s (%s)", shards, strerror(-ret),
		     tide_last_error());
	return pool;
}

static tide_pool *pool_of(unsigned shards, size_t budget)
{
	return pool_with(shards, budget, false);
}

struct map_args {
	tide_pool *pool;
	int fd;
	off_t off;
	size_t len;
};

static void *map_here(void *arg)
{
	struct map_args *m = arg;

	return tide_map(m->pool, m->fd, m->off, m->len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
}

/* Read every other page (no read-ahead: faults stay one per page). */
static void *touch_pages(void *arg)
{
	volatile uint64_t *base = arg;
	uint64_t sum = 0;

	for (size_t page = 0; page < 128; page += 2)
		sum += base[page * (PAGE / 8)];
	return (void *)(uintptr_t)(sum | 1);
}

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ---- two app threads, each on its CPU with its own region ---- */

#define OPS 8000

struct app {
	tide_pool *pool;
	int fd, cpu;
	unsigned id;
	uint64_t seed;
	uint64_t *model;          /* what the region must hold, word by word */
	pthread_barrier_t *measured, *release;
	uint64_t *base;
	int map_errno, pin_err, unmap_ret;
	size_t mismatches;
};

static void *app_main(void *arg)
{
	struct app *a = arg;
	size_t words = REGION / 8, page_words = PAGE / 8;
	uint64_t rng = a->seed;
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(a->cpu, &set);
	a->pin_err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	a->base = a->pin_err ? NULL : tide_map(a->pool, a->fd, (off_t)(a->id * REGION), REGION,
					      TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	a->map_errno = a->base ? 0 : errno;
	if (a->base) {
		/* A pattern from this thread's seed on random pages, then read
		 * back all of it: the region is 4x its shard's budget. */
		for (unsigned i = 0; i < OPS; i++) {
			uint64_t r = next_rand(&rng);
			size_t w = (r % (REGION / PAGE)) * page_words + (r >> 40) % page_words;
			uint64_t v = next_rand(&rng);

			a->base[w] = v;
			a->model[w] = v;
		}
		for (size_t w = 0; w < words; w++)
			a->mismatches += a->base[w] != a->model[w];
	}
	pthread_barrier_wait(a->measured);
	pthread_barrier_wait(a->release);
	a->unmap_ret = a->base ? tide_unmap(a->base) : 0;
	return NULL;
}

Test(shards, two_threads_on_two_cpus_each_with_its_own_region)
{
	pthread_barrier_t measured, release;
	struct app a[2];
	pthread_t t[2];
	struct tide_stats st;
	struct tide_options got;
	tide_pool *pool;
	uint64_t *model, *disk;
	int cpu[2], fd, check;

	test_require_uffd();
	two_cpus(cpu);
	fd = test_file(2 * REGION, 42);
	model = malloc(2 * REGION);
	disk = malloc(2 * REGION);
	cr_assert(model && disk);
	for (size_t i = 0; i < 2 * REGION / 8; i++)
		model[i] = test_word(i, 42);
	pool = pool_of(2, 2 * SHARD_BUDGET);
	cr_assert_eq(pthread_barrier_init(&measured, NULL, 3), 0);
	cr_assert_eq(pthread_barrier_init(&release, NULL, 3), 0);
	for (unsigned i = 0; i < 2; i++) {
		a[i] = (struct app){ .pool = pool, .fd = fd, .cpu = cpu[i], .id = i,
				     .seed = 0x9e3779b9u * (i + 7), .model = model + i * (REGION / 8),
				     .measured = &measured, .release = &release };
		cr_assert_eq(pthread_create(&t[i], NULL, app_main, &a[i]), 0);
	}
	pthread_barrier_wait(&measured);

	/* Both threads are done and their regions still mapped. */
	for (unsigned i = 0; i < 2; i++) {
		cr_expect_eq(a[i].pin_err, 0, "thread %u cannot run on CPU %d", i, a[i].cpu);
		cr_expect_not_null(a[i].base, "thread %u: tide_map: %s", i, strerror(a[i].map_errno));
		cr_expect_eq(a[i].mismatches, 0, "thread %u read %zu words that differ from the model",
			     i, a[i].mismatches);
		if (a[i].base) {
			cr_expect_eq(tide_pool_of(a[i].base), pool, "region %u: not the pool created", i);
			cr_expect_eq(tide_pool_of((char *)a[i].base + REGION - 1), pool);
			cr_expect_eq(tide_page_size_of(a[i].base), PAGE);
		}
	}
	cr_assert_eq(tide_pool_stats(pool, &st), 0, "%s", tide_last_error());
	cr_expect_eq(st.regions, 2);
	cr_expect_eq(st.budget, 2 * SHARD_BUDGET, "budget is the sum of the shards'");
	cr_expect_geq(st.fills, 2 * REGION / PAGE, "fills %llu: every page of both regions was read",
		      (unsigned long long)st.fills);
	cr_expect_gt(st.evictions, 0, "no page was evicted");
	cr_expect_gt(st.evictions_dirty, 0, "no dirty page was written back on eviction");
	cr_expect_gt(st.writebacks, 0);
	cr_expect_leq(st.peak_resident_bytes, st.budget);
	cr_expect_leq(st.resident_bytes, st.budget);
	cr_expect_eq(st.writeback_errors, 0);
	cr_expect_gt(st.latency_mean_ns, 0);
	cr_expect(st.latency_p50_ns <= st.latency_p90_ns && st.latency_p90_ns <= st.latency_p99_ns &&
		  st.latency_p99_ns <= st.latency_max_ns, "percentiles out of order: %llu %llu %llu %llu",
		  (unsigned long long)st.latency_p50_ns, (unsigned long long)st.latency_p90_ns,
		  (unsigned long long)st.latency_p99_ns, (unsigned long long)st.latency_max_ns);
	cr_assert_eq(tide_pool_options(pool, &got), 0);
	cr_expect_eq(got.service_threads, 2);
	cr_expect_eq(got.budget, 2 * SHARD_BUDGET);
	cr_expect_eq(got.bounce, st.bounce_bytes, "options bounce %zu, stats %llu", got.bounce,
		     (unsigned long long)st.bounce_bytes);
	cr_expect_neq(got.writeback, TIDE_WRITEBACK_AUTO);
	cr_expect_eq((int)got.writeback, st.writeback);

	pthread_barrier_wait(&release);
	for (unsigned i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(a[i].unmap_ret, 0, "thread %u: tide_unmap: %d", i, a[i].unmap_ret);
	}
	cr_assert_eq(tide_pool_stats(pool, &st), 0);
	cr_expect_eq(st.regions, 0);
	cr_expect_eq(st.resident_bytes, 0);
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());

	/* What the file holds, read through a descriptor of its own. */
	check = test_reopen(fd);
	test_pread(check, disk, 2 * REGION, 0);
	for (size_t i = 0; i < 2 * REGION / 8; i++)
		if (disk[i] != model[i])
			cr_assert_fail("file word %zu (region %zu, page %zu) is %#llx, model says %#llx",
				       i, i / (REGION / 8), i % (REGION / 8) / (PAGE / 8),
				       (unsigned long long)disk[i], (unsigned long long)model[i]);
	close(check);
	close(fd);
	free(disk);
	free(model);
	pthread_barrier_destroy(&measured);
	pthread_barrier_destroy(&release);
}

/* ---- which shard serves which region ---- */

Test(shards, each_region_is_served_by_the_shard_on_the_cpu_that_mapped_it)
{
	struct test_thread s[MAX_SERVICES], before[MAX_SERVICES], after[MAX_SERVICES];
	struct map_args m[2];
	void *base[2];
	tide_pool *pool;
	int cpu[2], fd;

	test_require_uffd();
	two_cpus(cpu);
	cr_assert_eq(test_threads_named("tide-service", NULL, 0), 0);
	pool = pool_with(2, 2 * SHARD_BUDGET, true);

	/* Shard i: a service thread named tide-service-i, pinned to the i-th CPU. */
	cr_assert_eq(test_threads_named("tide-service", s, MAX_SERVICES), 2);
	for (int i = 0; i < 2; i++) {
		char want[16];

		snprintf(want, sizeof(want), "tide-service-%d", i);
		cr_expect_str_eq(s[i].name, want);
		cr_expect_eq(s[i].cpu, cpu[i], "%s runs on CPU %d, want only CPU %d", s[i].name,
			     s[i].cpu, cpu[i]);
	}

	/* Mapped from CPU 1 first, then CPU 0: by CPU, not by turn. */
	fd = test_file(2 * REGION, 5);
	for (int i = 1; i >= 0; i--) {
		m[i] = (struct map_args){ pool, fd, (off_t)(i * REGION), REGION };
		base[i] = on_cpu(cpu[i], map_here, &m[i]);
		cr_assert_not_null(base[i], "tide_map on CPU %d: %s", cpu[i], tide_last_error());
		cr_expect_eq(tide_pool_of(base[i]), pool);
	}

	/* Faults on region i wake shard i's service thread and not the other.
	 * (The other may still be going back to sleep after answering its map
	 * request: one switch of slack.) */
	for (int i = 0; i < 2; i++) {
		int other = 1 - i;

		cr_assert_eq(test_threads_named("tide-service", before, MAX_SERVICES), 2);
		cr_assert_not_null(on_cpu(cpu[i], touch_pages, base[i]));
		cr_assert_eq(test_threads_named("tide-service", after, MAX_SERVICES), 2);
		cr_expect_geq(after[i].switches - before[i].switches, 32,
			      "64 faults on the region mapped from CPU %d woke %s %lu times",
			      cpu[i], after[i].name, after[i].switches - before[i].switches);
		cr_expect_leq(after[other].switches - before[other].switches, 1,
			      "faults on the region mapped from CPU %d woke %s (CPU %d) %lu times",
			      cpu[i], after[other].name, after[other].cpu,
			      after[other].switches - before[other].switches);
	}

	for (int i = 0; i < 2; i++)
		cr_assert_eq(tide_unmap(base[i]), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	cr_expect_eq(test_threads_named("tide-service", NULL, 0), 0, "service threads left after destroy");
	close(fd);
}

Test(shards, one_service_thread_keeps_its_name)
{
	struct test_thread s[MAX_SERVICES];
	tide_pool *pool;

	test_require_uffd();
	pool = pool_of(1, 2 * SHARD_BUDGET);
	cr_assert_eq(test_threads_named("tide-service", s, MAX_SERVICES), 1);
	cr_expect_str_eq(s[0].name, "tide-service");
	cr_assert_eq(tide_pool_destroy(pool), 0);
}

/* ---- the budget follows the faults ---- */

struct walk {
	tide_pool *pool;
	int fd;
	unsigned id;
	bool write;               /* write ~word first, then read it back */
	uint64_t *base;
	size_t wrong;             /* words that differ from what they must hold */
	int map_errno;
};

/* What word i of the file holds after the walks. */
static uint64_t walked_word(size_t i, bool written)
{
	return written ? ~test_word(i, 42) : test_word(i, 42);
}

/* Map region `id` from here and go through all of it twice (4x a shard's
 * fair share, twice the pool's budget): writing then reading, or reading. */
static void *walk_region(void *arg)
{
	struct walk *w = arg;
	size_t first = w->id * (REGION / 8);

	w->base = tide_map(w->pool, w->fd, (off_t)(w->id * REGION), REGION,
			   TIDE_PROT_READ | (w->write ? TIDE_PROT_WRITE : 0), 0);
	w->map_errno = w->base ? 0 : errno;
	for (size_t i = 0; w->base && w->write && i < REGION / 8; i++)
		w->base[i] = walked_word(first + i, true);
	for (int pass = w->write; w->base && pass < 2; pass++)
		for (size_t i = 0; i < REGION / 8; i++)
			w->wrong += w->base[i] != walked_word(first + i, w->write);
	return NULL;
}

static struct tide_stats shard_stats(tide_pool *pool, unsigned i)
{
	struct tide_stats st;

	cr_assert_eq(tide_pool_stats(pool->shards[i], &st), 0, "%s", tide_last_error());
	return st;
}

/* One busy region gets nearly the whole budget while the other shard has
 * nothing to do; when the other gets busy, it gets its fair share back:
 * the first shard writes its dirty pages back to give it, and loses none. */
Test(shards, budget_moves_to_the_busy_shard_and_back)
{
	struct walk w[2];
	struct tide_stats s0, s1, all;
	tide_pool *pool;
	uint64_t *disk;
	int cpu[2], fd, check;

	test_require_uffd();
	two_cpus(cpu);
	fd = test_file(2 * REGION, 42);
	pool = pool_with(2, 2 * SHARD_BUDGET, true);
	for (unsigned i = 0; i < 2; i++)
		w[i] = (struct walk){ .pool = pool, .fd = fd, .id = i, .write = i == 0 };

	on_cpu(cpu[0], walk_region, &w[0]);
	cr_assert_not_null(w[0].base, "tide_map: %s", strerror(w[0].map_errno));
	cr_expect_eq(w[0].wrong, 0, "%zu words read differ from the file", w[0].wrong);
	s0 = shard_stats(pool, 0);
	s1 = shard_stats(pool, 1);
	cr_expect_gt(s0.peak_resident_bytes, 3 * SHARD_BUDGET / 2,
		     "the busy shard held at most %llu bytes: its fair share is %llu of %llu",
		     (unsigned long long)s0.peak_resident_bytes, SHARD_BUDGET, 2 * SHARD_BUDGET);
	cr_expect_leq(s0.peak_resident_bytes, s0.budget);
	cr_expect_eq(s0.budget + s1.budget, 2 * SHARD_BUDGET, "shares %llu + %llu",
		     (unsigned long long)s0.budget, (unsigned long long)s1.budget);
	cr_expect_lt(s1.budget, SHARD_BUDGET / 4, "the idle shard kept %llu bytes",
		     (unsigned long long)s1.budget);

	/* The other shard's region, read from its CPU while the first region
	 * stays mapped, its pages resident and many of them dirty. */
	on_cpu(cpu[1], walk_region, &w[1]);
	cr_assert_not_null(w[1].base, "tide_map: %s", strerror(w[1].map_errno));
	cr_expect_eq(w[1].wrong, 0, "%zu words read differ from the file", w[1].wrong);
	s0 = shard_stats(pool, 0);
	s1 = shard_stats(pool, 1);
	cr_expect_geq(s1.budget, SHARD_BUDGET, "the second shard got %llu bytes back of its %llu",
		      (unsigned long long)s1.budget, SHARD_BUDGET);
	cr_expect_gt(s1.peak_resident_bytes, SHARD_BUDGET / 2);
	cr_expect_leq(s0.resident_bytes, s0.budget);
	cr_expect_leq(s1.resident_bytes, s1.budget);
	cr_expect_geq(s1.fills, REGION / PAGE, "every page of the second region was read");
	cr_expect_gt(s0.evictions_dirty, 0);
	cr_expect_eq(s0.writeback_errors, 0);
	cr_assert_eq(tide_pool_stats(pool, &all), 0);
	cr_expect_eq(all.budget, 2 * SHARD_BUDGET);

	for (unsigned i = 0; i < 2; i++)
		cr_expect_eq(tide_unmap(w[i].base), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	/* The file, through a descriptor of its own: every word written. */
	check = test_reopen(fd);
	disk = malloc(2 * REGION);
	cr_assert_not_null(disk);
	test_pread(check, disk, 2 * REGION, 0);
	for (size_t i = 0; i < 2 * REGION / 8; i++)
		if (disk[i] != walked_word(i, i < REGION / 8))
			cr_assert_fail("file word %zu (region %zu) is %#llx, should be %#llx", i,
				       i / (REGION / 8), (unsigned long long)disk[i],
				       (unsigned long long)walked_word(i, i < REGION / 8));
	free(disk);
	close(check);
	close(fd);
}

/* ---- destroy ---- */

Test(shards, destroy_with_a_live_region_in_one_shard_is_busy_and_changes_nothing)
{
	struct map_args m[2];
	uint64_t *base[2];
	tide_pool *pool;
	int cpu[2], fd, ret;

	test_require_uffd();
	two_cpus(cpu);
	pool = pool_of(2, 2 * SHARD_BUDGET);
	fd = test_file(2 * REGION, 9);

	/* A region in shard 1 only. */
	m[1] = (struct map_args){ pool, fd, REGION, REGION };
	base[1] = on_cpu(cpu[1], map_here, &m[1]);
	cr_assert_not_null(base[1], "%s", tide_last_error());
	for (size_t w = 0; w < REGION / 8; w += PAGE / 8)
		base[1][w] = w;
	ret = tide_pool_destroy(pool);
	cr_expect_eq(ret, -EBUSY, "tide_pool_destroy with a live region: %d", ret);
	cr_expect(strstr(tide_last_error(), "mapped regions"), "%s", tide_last_error());
	cr_expect_eq(test_threads_named("tide-service", NULL, 0), 2, "a shard was stopped");

	/* Both shards still serve: the live region, and a new one in shard 0. */
	for (size_t w = 0; w < REGION / 8; w += PAGE / 8)
		cr_assert_eq(base[1][w], w, "word %zu", w);
	m[0] = (struct map_args){ pool, fd, 0, REGION };
	base[0] = on_cpu(cpu[0], map_here, &m[0]);
	cr_assert_not_null(base[0], "%s", tide_last_error());
	for (size_t w = 0; w < REGION / 8; w += PAGE / 8)
		cr_assert_eq(base[0][w], test_word(w, 9), "word %zu", w);
	cr_expect_eq(tide_flush(base[1], 0), 0, "%s", tide_last_error());

	cr_assert_eq(tide_unmap(base[1]), 0, "%s", tide_last_error());
	cr_expect_eq(tide_pool_destroy(pool), -EBUSY, "shard 0 still has a region");
	cr_assert_eq(tide_unmap(base[0]), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	cr_expect_eq(test_threads_named("tide-service", NULL, 0), 0);
	close(fd);
}

/* ---- bad input ---- */

static int create_with(unsigned shards, size_t budget, int service_cpu, size_t bounce)
{
	struct tide_options o;
	tide_pool *pool = NULL;
	int ret;

	tide_options_init(&o);
	o.page_size = PAGE;
	o.budget = budget;
	o.service_threads = shards;
	o.service_cpu = service_cpu;
	o.bounce = bounce;
	ret = tide_pool_create(&pool, &o);
	if (ret == 0) {
		struct tide_options got;

		cr_assert_eq(tide_pool_options(pool, &got), 0);
		cr_expect_eq(got.service_threads, shards ? shards : 1);
		cr_expect_eq(got.budget, budget);
		if (bounce)
			cr_expect_eq(got.bounce, bounce, "bounce %zu, want %zu", got.bounce, bounce);
		cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	}
	return ret;
}

static void expect_einval(int ret, const char *what, const char *says)
{
	cr_expect_eq(ret, -EINVAL, "%s: %d (%s)", what, ret, tide_last_error());
	cr_expect(strstr(tide_last_error(), says), "%s: the error does not name %s: %s", what, says,
		  tide_last_error());
}

Test(shards, bad_input)
{
	test_require_uffd();
	/* 0 is what a caller that filled the struct before this field
	 * existed leaves there (it was reserved, zero): it means one. */
	cr_expect_eq(create_with(0, 2 * MiB, -1, 0), 0, "%s", tide_last_error());
	expect_einval(create_with(65, 64 * MiB, -1, 0), "service_threads 65", "service_threads");
	/* Seven pages hold a pool, not two shards of four. */
	cr_expect_eq(create_with(1, 7 * PAGE, -1, 0), 0, "%s", tide_last_error());
	expect_einval(create_with(2, 7 * PAGE, -1, 0), "budget of 7 pages over 2 shards", "service_threads");
	cr_expect(strstr(tide_last_error(), "budget"), "%s", tide_last_error());
	cr_expect_eq(create_with(2, 8 * PAGE, -1, 0), 0, "%s", tide_last_error());
	/* A pin for one service thread means nothing for two. */
	expect_einval(create_with(2, 2 * MiB, 0, 0), "service_cpu with 2 shards", "service_cpu");
	/* An explicit bounce is split too, and each share needs 4 MiB. */
	expect_einval(create_with(2, 2 * MiB, -1, 4 * MiB), "bounce 4 MiB over 2 shards", "bounce");
	cr_expect_eq(create_with(2, 2 * MiB, -1, 8 * MiB), 0, "%s", tide_last_error());
	cr_expect_eq(test_threads_named("tide-service", NULL, 0), 0, "a refused pool left a thread");
}

Test(shards, environment, .init = cr_redirect_stderr)
{
	static const char *const bad[] = { "0", "65", "two", "-1" };
	struct tide_options o;
	char out[4096] = "";
	size_t n;
	FILE *err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		setenv("TIDE_SERVICE_THREADS", bad[i], 1);
		tide_options_init(&o);
		cr_expect_eq(o.service_threads, 1, "TIDE_SERVICE_THREADS=%s gave %u", bad[i],
			     o.service_threads);
	}
	setenv("TIDE_SERVICE_THREADS", "64", 1);
	tide_options_init(&o);
	cr_expect_eq(o.service_threads, 64);
	unsetenv("TIDE_SERVICE_THREADS");
	tide_options_init(&o);
	cr_expect_eq(o.service_threads, 1);
	fflush(stderr);
	err = cr_get_redirected_stderr();
	n = fread(out, 1, sizeof(out) - 1, err);
	out[n] = '\0';
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[64];

		snprintf(want, sizeof(want), "TIDE_SERVICE_THREADS=\"%s\" is not valid", bad[i]);
		cr_expect(strstr(out, want), "no warning for %s in: %s", bad[i], out);
	}
	cr_expect(strstr(out, "keeping the default 1"), "%s", out);
}

/* ---- the pool's statistics from its shards' ---- */

Test(shards, latency_percentiles_come_from_the_merged_histograms)
{
	struct tide__stats *a = calloc(3, sizeof(*a)), *b = a + 1, *all = a + 2;
	struct tide_stats sa, sb, sum = { 0 };

	cr_assert_not_null(a);
	/* Shard a: 90 fast faults; shard b: 10 slow ones. */
	for (int i = 0; i < 90; i++)
		tide__stats_latency(a, 1000);
	for (int i = 0; i < 10; i++)
		tide__stats_latency(b, 1000000);
	a->c.fills = 90;
	b->c.fills = 10;
	a->c.peak_resident_bytes = 3 * MiB;
	b->c.peak_resident_bytes = 1 * MiB;
	tide__stats_snapshot(a, &sa);
	tide__stats_snapshot(b, &sb);
	tide__stats_sum(&sum, all, &sa, a);
	tide__stats_sum(&sum, all, &sb, b);
	tide__stats_sum_latency(&sum, all);
	cr_expect_eq(sum.fills, 100);
	cr_expect_eq(sum.peak_resident_bytes, 4 * MiB);
	cr_expect_eq(sum.latency_mean_ns, (90 * 1000 + 10 * 1000000) / 100);
	/* Averaging the shards' percentiles would give ~500 us for p50. */
	cr_expect(sum.latency_p50_ns >= 1000 && sum.latency_p50_ns <= 1125, "p50 %llu",
		  (unsigned long long)sum.latency_p50_ns);
	cr_expect(sum.latency_p90_ns >= 1000 && sum.latency_p90_ns <= 1125, "p90 %llu",
		  (unsigned long long)sum.latency_p90_ns);
	cr_expect_eq(sum.latency_p99_ns, 1000000);
	cr_expect_eq(sum.latency_max_ns, 1000000);
	free(a);
}

/* ---- keepers: one per CPU for the pool, not per shard ---- */

/* A pool of two shards with wake polling by keeper threads or by a CPU
 * latency request (wake_qos). */
static tide_pool *wake_pool(int wake_qos)
{
	struct tide_options o;
	tide_pool *pool;

	tide_options_init(&o);
	o.budget = 2 * SHARD_BUDGET;
	o.page_size = PAGE;
	o.service_cpu = -1;
	o.service_threads = 2;
	o.wake_poll_us = 1000;
	o.wake_qos = wake_qos;
	o.signal_faults = 0;     /* keepers serve faults sent to service threads */
	o.spin_us = 0;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	return pool;
}

Test(shards, wake_poll_keepers_are_one_per_cpu_not_per_shard)
{
	tide_pool *pool;
	cpu_set_t set;

	test_require_uffd();
	test_require_keepers();
	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	pool = wake_pool(0);
	cr_expect_eq(test_threads_named("tide-keeper", NULL, 0), CPU_COUNT(&set));
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	cr_expect_eq(test_threads_named("tide-keeper", NULL, 0), 0);
}

/* Likewise one holder of the CPU latency request for the pool, and the
 * pool's stats name it. */
Test(shards, wake_poll_latency_request_is_one_per_pool)
{
	tide_pool *pool;

	test_require_uffd();
	test_require_wake_qos();
	pool = wake_pool(1);
	cr_expect_eq(test_threads_named("tide-latency", NULL, 0), 1);
	cr_expect_eq(test_threads_named("tide-keeper", NULL, 0), 0);
	cr_expect_eq(test_stats(pool).wake_poll, TIDE_WAKE_POLL_QOS);
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	cr_expect_eq(test_threads_named("tide-latency", NULL, 0), 0);
}

/* ---- a shard that cannot start takes the started ones down ---- */

/* RLIMIT_NOFILE such that exactly `n` descriptors can still be opened. */
static void allow_fds(int n, const struct rlimit *orig)
{
	struct rlimit l = *orig;
	int fd = 0;

	for (int free_seen = 0; free_seen < n; fd++)
		if (fcntl(fd, F_GETFD) < 0)
			free_seen++;
	l.rlim_cur = (rlim_t)fd;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &l), 0, "setrlimit: %s", strerror(errno));
}

/* The fewest free descriptors a pool of `shards` starts with; every refusal
 * before it leaves no descriptor or thread behind. */
static int fds_to_start(unsigned shards, const struct rlimit *orig)
{
	static bool fds[MAX_FD];
	int threads = test_dir_entries("/proc/self/task");

	fds_open(fds);

	for (int n = 0; n < 256; n++) {
		struct tide_options o;
		tide_pool *pool;
		int ret;

		tide_options_init(&o);
		o.budget = 2 * SHARD_BUDGET;
		o.page_size = PAGE;
		o.service_cpu = -1;
		o.service_threads = shards;
		o.writeback = TIDE_WRITEBACK_FIXED;   /* no probe: it forks */
		o.wake_poll_us = 0;
		o.watchdog_s = 0;
		allow_fds(n, orig);
		ret = tide_pool_create(&pool, &o);
		cr_assert_eq(setrlimit(RLIMIT_NOFILE, orig), 0);
		if (ret == 0) {
			cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
			return n;
		}
		cr_expect_lt(ret, 0);
		cr_expect_eq(fds_leaked(fds), 0, "%u shards with %d descriptors free: refused (%s) "
			     "but left descriptors open", shards, n, tide_last_error());
		cr_expect_eq(test_dir_entries("/proc/self/task"), threads, "%u shards with %d descriptors free: refused "
			     "(%s) but left threads running", shards, n, tide_last_error());
	}
	cr_assert_fail("a pool of %u shards did not start with 256 descriptors free", shards);
	return -1;
}

Test(shards, a_shard_that_cannot_start_unwinds_the_others)
{
	struct rlimit orig;
	int one, two;

	test_require_uffd();
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &orig), 0);
	/* libuv's one-time set-up (the first loop in the process) aborts if it
	 * cannot open its descriptors: do it with the limit untouched. */
	tide_pool_destroy(pool_of(1, 2 * SHARD_BUDGET));
	one = fds_to_start(1, &orig);
	two = fds_to_start(2, &orig);
	/* With `one` free, shard 0 starts as a lone pool would and shard 1
	 * finds none left: that refusal, checked above, undid shard 0. */
	cr_expect_gt(two, one, "two shards started with the descriptors of one (%d, %d)", two, one);
}
