/* Faults served on the faulting thread (TIDE_SIGNAL_FAULTS): the thread
 * that touches a page fills it in a SIGBUS handler; the service thread is
 * left out; what the mode cannot do (a system call on a missing page) fails
 * as documented; signals tide does not own go where they went before.
 * The core suites run again in this mode too (tests/meson.build). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"   /* tide__uffd_features */

#define PAGE (4 * KiB)

static void require_sigbus(void)
{
	uint64_t have = 0;

	test_require_uffd();
	tide__uffd_features(&have);
	if (!(have & UFFD_FEATURE_SIGBUS))
		cr_skip_test("kernel lacks UFFD_FEATURE_SIGBUS (4.14+)");
}

static void signal_options(struct tide_options *o, size_t budget)
{
	tide_options_init(o);
	o->signal_faults = 1;
	o->budget = budget;
	o->page_size = PAGE;
	o->read_ahead = 0;          /* every page is a demand fault */
	o->flush_interval_ms = 0;
	o->wake_poll_us = 0;
	o->spin_us = 0;
}

static tide_pool *signal_pool(size_t budget)
{
	struct tide_options o;
	tide_pool *pool;
	int ret;

	signal_options(&o, budget);
	ret = tide_pool_create(&pool, &o);
	cr_assert_eq(ret, 0, "tide_pool_create: %s", tide_last_error());
	return pool;
}

/* A permutation of 0..n-1, so no run looks sequential; NULL without memory
 * (no Criterion assert: a forked child uses it too). */
static size_t *shuffled(size_t n, unsigned seed)
{
	size_t *v = malloc(n * sizeof(*v));

	if (!v)
		return NULL;
	for (size_t i = 0; i < n; i++)
		v[i] = i;
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)rand_r(&seed) % i, t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
	return v;
}

Test(signal, faults_are_served_on_the_faulting_thread)
{
	size_t budget = 1 * MiB, len = 4 * budget, npages = len / PAGE, *order;
	struct test_thread before[64], after[64];
	unsigned long switches = 0;
	tide_pool *pool;
	struct tide_stats st;
	uint64_t *p;
	int fd, n;

	require_sigbus();
	pool = signal_pool(budget);
	fd = test_file(len, 11);
	p = tide_map(pool, fd, 0, len, TIDE_PROT_READ, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	order = shuffled(npages, 5);
	cr_assert_not_null(order);
	/* The map request is answered: the service thread (with shards,
	 * every shard's: tide-service-0, -1...) is going to sleep. */
	n = test_threads_named("tide-service", before, 64);
	cr_assert(n >= 1 && n <= 64, "%d service threads", n);
	for (size_t k = 0; k < npages; k++) {
		size_t w = order[k] * PAGE / 8 + k % (PAGE / 8);

		cr_assert_eq(p[w], test_word(w, 11), "word %zu", w);
	}
	cr_assert_eq(test_threads_named("tide-service", after, 64), n);
	for (int i = 0; i < n; i++) {
		cr_assert_str_eq(after[i].name, before[i].name);
		switches += after[i].switches - before[i].switches;
	}
	/* Four pools' worth of pages, every one a fault, through a pool that
	 * evicted three times over, and the service threads slept through it.
	 * Slack for answering the map: the app thread it woke may preempt the
	 * shard that answered (one switch) before it goes back to sleep
	 * (another). With shards, also one ask for each idle sibling's
	 * budget: the fault that needs it wakes the sibling, whose answer
	 * (all it can give, in one go) wakes the asker's service thread, and
	 * either may be preempted on the way: four switches (shard.c). */
	cr_expect_leq(switches, 2 + 4 * (unsigned long)(n - 1),
		      "%zu faults woke the %d service threads %lu times", npages, n, switches);
	st = test_stats(pool);
	cr_expect_geq(st.faults_signal, npages);
	cr_expect_eq(st.faults_signal, st.faults, "%llu of %llu faults served by signal",
		     (unsigned long long)st.faults_signal, (unsigned long long)st.faults);
	cr_expect_geq(st.evictions, npages - budget / PAGE);
	cr_expect_leq(st.peak_resident_bytes, budget);
	cr_expect_gt(st.latency_p99_ns, 0);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	free(order);
	close(fd);
}

#define WRITERS 4

struct writer {
	uint64_t *base;
	size_t npages;
	unsigned id;
};

/* Writer t owns the words i with i % WRITERS == t, and visits the pages in
 * its own random order, so every page is written by all of them. */
static void *write_words(void *arg)
{
	struct writer *w = arg;
	size_t *order = shuffled(w->npages, 100 + w->id);

	if (!order)
		return w;               /* the writer joining says so */
	for (size_t k = 0; k < w->npages; k++) {
		uint64_t *page = w->base + order[k] * (PAGE / 8);

		for (size_t i = w->id; i < PAGE / 8; i += WRITERS)
			page[i] = ~test_word((uint64_t)(page - w->base) + i, 3);
	}
	free(order);
	return NULL;
}

/* With wake_poll_us 0 a thread that finds the pool's lock taken, or a page
 * on its way, sleeps at once; otherwise it polls first (signal.c). */
static void many_writers(unsigned wake_poll_us)
{
	size_t budget = 512 * KiB, len = 16 * budget, words = len / 8;
	struct writer w[WRITERS];
	pthread_t t[WRITERS];
	struct tide_options o;
	tide_pool *pool;
	struct tide_stats st;
	uint64_t *p, *check;
	int fd, rfd;

	require_sigbus();
	signal_options(&o, budget);
	o.wake_poll_us = wake_poll_us;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "tide_pool_create: %s", tide_last_error());
	fd = test_file(len, 3);
	p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	for (unsigned i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){ p, len / PAGE, i };
		cr_assert_eq(pthread_create(&t[i], NULL, write_words, &w[i]), 0);
	}
	for (unsigned i = 0; i < WRITERS; i++) {
		void *failed;

		pthread_join(t[i], &failed);
		cr_assert_null(failed, "writer %u had no memory for its page order", i);
	}
	st = test_stats(pool);
	cr_expect_gt(st.evictions_dirty, 0, "the pool never wrote a page back to make room");
	cr_expect_gt(st.faults_signal, len / PAGE);
	cr_expect_leq(st.peak_resident_bytes, budget);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	rfd = test_reopen(fd);
	check = malloc(len);
	cr_assert_not_null(check);
	test_pread(rfd, check, len, 0);
	for (size_t i = 0; i < words; i++)
		cr_assert_eq(check[i], ~test_word(i, 3), "word %zu of the file after unmap", i);
	free(check);
	close(rfd);
	close(fd);
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
}

Test(signal, writes_from_many_threads_survive_eviction) { many_writers(0); }
Test(signal, writes_from_many_threads_survive_eviction_with_polling) { many_writers(50); }

#define READERS 4

struct reader {
	const uint64_t *base;
	const size_t *order;
	size_t npages;
	pthread_barrier_t *start;
	size_t bad;             /* first wrong word + 1, or 0 */
};

/* Every reader walks the same pages in the same order from the same
 * moment, so they meet on pages another one is bringing in. */
static void *read_words(void *arg)
{
	struct reader *rd = arg;

	pthread_barrier_wait(rd->start);
	for (size_t k = 0; k < rd->npages && !rd->bad; k++) {
		size_t first = rd->order[k] * (PAGE / 8);

		for (size_t i = first; i < first + PAGE / 8; i++)
			if (rd->base[i] != test_word(i, 5)) {
				rd->bad = i + 1;
				break;
			}
	}
	return NULL;
}

static void readers_meet(unsigned wake_poll_us)
{
	size_t budget = 512 * KiB, len = 8 * budget, npages = len / PAGE;
	struct reader rd[READERS];
	pthread_t t[READERS];
	pthread_barrier_t start;
	struct tide_options o;
	struct tide_stats st;
	tide_pool *pool;
	size_t *order;
	uint64_t *p;
	int fd;

	require_sigbus();
	signal_options(&o, budget);
	o.wake_poll_us = wake_poll_us;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "tide_pool_create: %s", tide_last_error());
	fd = test_file(len, 5);
	p = tide_map(pool, fd, 0, len, TIDE_PROT_READ, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	order = shuffled(npages, 7);
	cr_assert_not_null(order);
	pthread_barrier_init(&start, NULL, READERS);
	for (unsigned i = 0; i < READERS; i++) {
		rd[i] = (struct reader){ p, order, npages, &start, 0 };
		cr_assert_eq(pthread_create(&t[i], NULL, read_words, &rd[i]), 0);
	}
	for (unsigned i = 0; i < READERS; i++)
		pthread_join(t[i], NULL);
	for (unsigned i = 0; i < READERS; i++)
		cr_assert_eq(rd[i].bad, 0, "reader %u: word %zu is not the file's", i, rd[i].bad - 1);
	st = test_stats(pool);
	cr_expect_geq(st.faults_signal, npages, "every page was filled by a fault at least once");
	cr_expect_gt(st.evictions, 0, "the walk is 8x the budget");
	cr_expect_leq(st.peak_resident_bytes, budget);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	pthread_barrier_destroy(&start);
	free(order);
	close(fd);
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
}

Test(signal, readers_meeting_on_a_page_all_get_the_file) { readers_meet(0); }
Test(signal, readers_meeting_on_a_page_all_get_the_file_with_polling) { readers_meet(50); }

/* A store whose one read completes when the test says so. */
struct gate {
	sem_t asked;
	struct tide_io *io;
	uint64_t *buf;
	size_t len;
};

static int gate_read(void *s, struct tide_io *io, void *buf, size_t len, uint64_t off)
{
	struct gate *g = s;

	(void)off;
	g->io = io;
	g->buf = buf;
	g->len = len;
	sem_post(&g->asked);
	return 0;
}

static const struct tide_store_ops gate_ops = { .read = gate_read };

static void *read_first_word(void *arg)
{
	return (void *)(uintptr_t)*(volatile uint64_t *)arg;
}

/* A thread whose page is still being read waits for it, asleep once
 * polling is over, and the pool counts both (signal_waits, _sleeps). */
Test(signal, a_fault_on_a_page_being_read_waits_and_is_counted, .timeout = 30)
{
	struct gate g = { .io = NULL };
	struct tide_stats st;
	tide_pool *pool;
	pthread_t t;
	void *word;
	char *p;

	require_sigbus();
	cr_assert_eq(sem_init(&g.asked, 0, 0), 0);
	pool = signal_pool(1 * MiB);    /* wake_poll_us 0: each wait sleeps */
	p = tide_map_store(pool, &gate_ops, &g, 0, 64 * KiB, TIDE_PROT_READ, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	cr_assert_eq(pthread_create(&t, NULL, read_first_word, p), 0);
	cr_assert_eq(sem_wait(&g.asked), 0);
	cr_assert_eq(g.len, PAGE);
	/* The read is held: the reader can only wait. Until it is seen asleep
	 * (each of these requests changes the pool and wakes it, and it
	 * counts the sleep on waking), then the data arrives. */
	do
		st = test_stats(pool);
	while (st.signal_sleeps == 0);
	for (size_t i = 0; i < PAGE / 8; i++)
		g.buf[i] = test_word(i, 9);
	tide_io_complete(g.io, PAGE);
	cr_assert_eq(pthread_join(t, &word), 0);
	cr_expect_eq((uint64_t)(uintptr_t)word, test_word(0, 9), "the reader got its page");
	st = test_stats(pool);
	cr_expect_eq(st.faults_signal, 1);
	cr_expect_geq(st.signal_waits, st.signal_sleeps);
	cr_expect_geq(st.signal_sleeps, 1);
	cr_expect_eq(st.fills, 1);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	sem_destroy(&g.asked);
}

/* The limit of the mode: the kernel cannot raise the signal inside a
 * system call, so one that touches a missing page fails with EFAULT. Once
 * the program has touched the page, the call works. */
Test(signal, a_system_call_on_a_missing_page_fails_with_efault)
{
	int pipefd[2], fd;
	tide_pool *pool;
	uint64_t *p, got[PAGE / 8];

	require_sigbus();
	pool = signal_pool(1 * MiB);
	fd = test_file(64 * KiB, 8);
	p = tide_map(pool, fd, 0, 64 * KiB, TIDE_PROT_READ, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	cr_assert_eq(pipe(pipefd), 0);
	errno = 0;
	cr_expect_eq(write(pipefd[1], p, PAGE), -1, "write(2) from a missing page worked");
	cr_expect_eq(errno, EFAULT, "errno %d (%s), want EFAULT", errno, strerror(errno));
	cr_assert_eq(p[0], test_word(0, 8));      /* the program touches it */
	cr_assert_eq(write(pipefd[1], p, PAGE), (ssize_t)PAGE, "%s", strerror(errno));
	cr_assert_eq(read(pipefd[0], got, PAGE), (ssize_t)PAGE);
	for (size_t i = 0; i < PAGE / 8; i++)
		cr_assert_eq(got[i], test_word(i, 8), "word %zu through the pipe", i);
	close(pipefd[0]);
	close(pipefd[1]);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
	close(fd);
}

/* ---- fork ---- */

struct paging {
	int fd;
	uint64_t seed;
	size_t len;
};

/* Read every word of a file through a small signal-fault pool, in a
 * random page order; false at the first word that is wrong. No Criterion
 * asserts: this also runs in a forked child. */
static bool page_through(const struct paging *pg, unsigned rounds)
{
	struct tide_options o;
	size_t npages = pg->len / PAGE;
	tide_pool *pool;
	uint64_t *p;
	bool ok = true;

	signal_options(&o, pg->len / 4);
	o.odirect = 0;             /* page cache: many reads, quickly */
	if (tide_pool_create(&pool, &o) < 0)
		return false;
	p = tide_map(pool, pg->fd, 0, pg->len, TIDE_PROT_READ, 0);
	if (!p)
		return false;
	for (unsigned r = 0; ok && r < rounds; r++) {
		size_t *order = shuffled(npages, r + (unsigned)pg->seed);

		if (!order)
			return false;
		for (size_t k = 0; ok && k < npages; k++)
			for (size_t w = order[k] * (PAGE / 8); w < (order[k] + 1) * (PAGE / 8); w++)
				if (p[w] != test_word(w, pg->seed)) {
					ok = false;
					break;
				}
		free(order);
	}
	return tide_unmap(p) == 0 && tide_pool_destroy(pool) == 0 && ok;
}

static void child_pages(void *arg)
{
	_exit(page_through(arg, 20) ? 0 : 3);
}

/* A thread's own ring (its handler's reads) is not shared with a child of
 * fork: parent and child page their own files at the same time, each
 * through its own pool, from the thread that forked, and read only their
 * own bytes. */
Test(signal, a_forked_child_reads_through_a_ring_of_its_own)
{
	struct paging mine = { test_file(4 * MiB, 20), 20, 4 * MiB };
	struct paging theirs = { test_file(4 * MiB, 21), 21, 4 * MiB };
	pid_t pid;

	require_sigbus();
	/* This thread reads through its own ring before the fork... */
	cr_assert(page_through(&mine, 1), "the parent read a wrong word before the fork");
	pid = test_child_start(child_pages, &theirs);
	/* ...and after it, while the child does the same. */
	cr_expect(page_through(&mine, 20), "the parent read a wrong word while the child paged");
	cr_expect_eq(test_child_wait(pid, 60000), 0, "the child read a wrong word (3), or hung (-1)");
	close(mine.fd);
	close(theirs.fd);
}

/* ---- SIGBUS that is not tide's ---- */

static sigjmp_buf caught_at;
static volatile sig_atomic_t caught_code;

static void own_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	caught_code = si->si_code;
	siglongjmp(caught_at, 1);
}

/* A kernel mapping of a file cut short: touching past its end is SIGBUS. */
static volatile char *past_the_end(void)
{
	int fd = test_file(2 * PAGE, 1);
	char *m = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, 0);

	if (m == MAP_FAILED || ftruncate(fd, 0) < 0)
		_exit(10);
	close(fd);
	return m + PAGE;
}

/* The program's own handler, installed before tide's, still gets the
 * signals that are not tide's; tide's faults keep working around them. */
static void chained_child(void *arg)
{
	struct sigaction sa = { .sa_sigaction = own_handler, .sa_flags = SA_SIGINFO };
	volatile char *bad = past_the_end();
	tide_pool *pool;
	uint64_t *p;
	int fd = test_file(64 * KiB, 4);

	(void)arg;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	pool = signal_pool(1 * MiB);
	p = tide_map(pool, fd, 0, 64 * KiB, TIDE_PROT_READ, 0);
	if (!p)
		_exit(11);
	if (p[8] != test_word(8, 4))
		_exit(12);
	if (sigsetjmp(caught_at, 1) == 0) {
		(void)*bad;
		_exit(13);              /* no signal at all */
	}
	if (caught_code != BUS_ADRERR)
		_exit(14);
	if (p[4096] != test_word(4096, 4))
		_exit(15);              /* tide still serves its own faults */
	_exit(0);
}

Test(signal, other_sigbus_reaches_the_handler_installed_before)
{
	require_sigbus();
	cr_expect_eq(test_in_child(chained_child, NULL, 20000), 0);
}

/* Without a handler of the program's, a SIGBUS that is not tide's kills the
 * process as it would have. */
static void default_child(void *arg)
{
	volatile char *bad = past_the_end();
	tide_pool *pool;
	uint64_t *p;
	int fd = test_file(64 * KiB, 4);

	(void)arg;
	test_default_signal(SIGBUS);
	pool = signal_pool(1 * MiB);
	p = tide_map(pool, fd, 0, 64 * KiB, TIDE_PROT_READ, 0);
	if (!p || p[0] != test_word(0, 4))
		_exit(11);
	(void)*bad;
	_exit(0);
}

Test(signal, other_sigbus_still_kills_by_default)
{
	int st;

	require_sigbus();
	st = test_in_child(default_child, NULL, 20000);
	cr_expect_eq(st, 128 + SIGBUS, "child status %d, want death by SIGBUS", st);
}
