/* umap environment: UMAP_* variables reach the getters and the pool; bad values warn and keep defaults. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "tide.h"
#include "umap/umap.h"

/*
 * The umap configuration is read once per process, so every case runs in a
 * forked child that sets its environment before the first umap call. A child
 * reports a failed check on the test's stderr and exits non-zero; the parent
 * asserts on the exit status.
 */
static int report_fd = 2;

static void child_fail(int line, const char *cond, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void child_fail(int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	dprintf(report_fd, "umap_env.c:%d: check failed: %s:", line, cond);
	va_start(ap, fmt);
	vdprintf(report_fd, fmt, ap);
	va_end(ap);
	dprintf(report_fd, "\n");
	_exit(1);
}
#define CHECK(cond, ...) do { if (!(cond)) child_fail(__LINE__, #cond, " " __VA_ARGS__); } while (0)

extern char **environ;

/* Start from no UMAP_* and no TIDE_* setting at all. */
static void clear_env(void)
{
	char name[256];

	for (;;) {
		char **e;

		for (e = environ; *e; e++)
			if (!strncmp(*e, "UMAP_", 5) || !strncmp(*e, "TIDE_", 5))
				break;
		if (!*e)
			return;
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
		unsetenv(name);
	}
}

static void set(const char *name, const char *value)
{
	if (setenv(name, value, 1))
		child_fail(__LINE__, "setenv", "%s", name);
}

/* Send the library's stderr to a memory file the child reads back. */
static int capture_stderr(void)
{
	int fd = memfd_create("umap-stderr", 0);

	report_fd = dup(2);
	if (fd < 0 || report_fd < 0 || dup2(fd, 2) < 0)
		child_fail(__LINE__, "capture stderr", "%s", strerror(errno));
	return fd;
}

static char *captured(int fd)
{
	static char text[64 * 1024];
	ssize_t n = pread(fd, text, sizeof(text) - 1, 0);

	text[n > 0 ? n : 0] = '\0';
	return text;
}

static int count(const char *text, const char *what)
{
	int n = 0;

	for (const char *s = strstr(text, what); s; s = strstr(s + 1, what))
		n++;
	return n;
}

static void run(void (*fn)(void *), void *arg)
{
	int status = test_in_child(fn, arg, 120000);

	cr_assert_eq(status, 0, "child %s (status %d); its report is above",
		     status < 0 ? "timed out" : "failed", status);
}

/* Map a seeded file and read all of it back; the umap calls must work. */
static void map_and_scan(int fd, size_t size, uint64_t seed)
{
	const uint64_t *p = umap(NULL, size, PROT_READ, UMAP_PRIVATE, fd, 0);

	CHECK(p != UMAP_FAILED, "umap: %s", strerror(errno));
	for (size_t i = 0; i < size / 8; i++)
		CHECK(p[i] == test_word(i, seed), "word %zu", i);
	CHECK(uunmap((void *)p, size) == 0, "uunmap: %s", strerror(errno));
}

static long cpus(void)
{
	return sysconf(_SC_NPROCESSORS_ONLN);
}

/* ---- defaults: tide's own, umap's for what tide only reports ---- */

static void defaults_child(void *arg)
{
	struct tide_options want;
	int err;

	(void)arg;
	clear_env();
	err = capture_stderr();
	tide_options_init(&want);
	CHECK(umapcfg_get_umap_page_size() == want.page_size);
	CHECK(umapcfg_get_max_pages_in_buffer() == want.budget / want.page_size);
	CHECK(umapcfg_get_evict_high_water_threshold() == (int)want.high_water);
	CHECK(umapcfg_get_evict_low_water_threshold() == (int)want.low_water);
	CHECK(umapcfg_get_read_ahead() == want.read_ahead);
	CHECK(umapcfg_get_num_fillers() == (uint64_t)cpus());
	CHECK(umapcfg_get_num_evictors() == (uint64_t)cpus());
	CHECK(umapcfg_get_max_fault_events() == 256);
	CHECK(umapcfg_get_system_page_size() == sysconf(_SC_PAGESIZE));
	CHECK(captured(err)[0] == '\0', "unexpected output: %s", captured(err));
}

Test(umap_env, defaults)
{
	run(defaults_child, NULL);
}

/* ---- every variable set: the getters and the pool follow ---- */

struct file_arg {
	int fd;
	size_t size;
	uint64_t seed;
};

static void all_set_child(void *arg)
{
	const struct file_arg *f = arg;
	size_t budget = 16 * 16 * KiB, resident = 0;
	unsigned char *vec;
	const uint64_t *p;

	clear_env();
	set("UMAP_PAGESIZE", "16384");
	set("UMAP_BUFSIZE", "16");
	set("UMAP_EVICT_HIGH_WATER_THRESHOLD", "80");
	set("UMAP_EVICT_LOW_WATER_THRESHOLD", "50");
	set("UMAP_PAGE_FILLERS", "3");
	set("UMAP_PAGE_EVICTORS", "5");
	set("UMAP_MAX_FAULT_EVENTS", "64");
	set("UMAP_READ_AHEAD", "2");
	set("UMAP_LOG_LEVEL", "ERROR");
	set("UMAP_MONITOR_FREQ", "0");
	CHECK(umapcfg_get_umap_page_size() == 16384);
	CHECK(umapcfg_get_max_pages_in_buffer() == 16);
	CHECK(umapcfg_get_evict_high_water_threshold() == 80);
	CHECK(umapcfg_get_evict_low_water_threshold() == 50);
	CHECK(umapcfg_get_num_fillers() == 3);
	CHECK(umapcfg_get_num_evictors() == 5);
	CHECK(umapcfg_get_max_fault_events() == 64);
	CHECK(umapcfg_get_read_ahead() == 2);

	/* The buffer really is 16 pages of 16 KiB: after a scan of a file 16
	 * times that size, no more than the buffer is resident. */
	p = umap(NULL, f->size, PROT_READ, UMAP_PRIVATE, f->fd, 0);
	CHECK(p != UMAP_FAILED, "umap: %s", strerror(errno));
	CHECK((uintptr_t)p % 16384 == 0, "region %p is not aligned to its 16 KiB pages", (void *)p);
	for (size_t i = 0; i < f->size / 8; i++)
		CHECK(p[i] == test_word(i, f->seed), "word %zu", i);
	vec = malloc(f->size / 4096);
	CHECK(vec && mincore((void *)p, f->size, vec) == 0, "mincore: %s", strerror(errno));
	for (size_t i = 0; i < f->size / 4096; i++)
		resident += (vec[i] & 1) * 4096;
	CHECK(resident <= budget, "%zu bytes resident with a buffer of %zu", resident, budget);
	CHECK(uunmap((void *)p, f->size) == 0, "uunmap: %s", strerror(errno));
	free(vec);
}

Test(umap_env, all_variables_set)
{
	struct file_arg f = { .size = 4 * MiB, .seed = 0xe5 };

	test_require_uffd();
	f.fd = test_file(f.size, f.seed);
	run(all_set_child, &f);
	close(f.fd);
}

/* ---- bad values: a warning naming the variable, the default kept ---- */

static const char *const bad[][2] = {
	{ "UMAP_PAGESIZE", "12345" },
	{ "UMAP_BUFSIZE", "abc" },
	{ "UMAP_EVICT_HIGH_WATER_THRESHOLD", "150" },
	{ "UMAP_EVICT_LOW_WATER_THRESHOLD", "0" },
	{ "UMAP_PAGE_FILLERS", "-1" },
	{ "UMAP_PAGE_EVICTORS", "0" },
	{ "UMAP_MAX_FAULT_EVENTS", "lots" },
	{ "UMAP_READ_AHEAD", "4x" },
	{ "UMAP_LOG_LEVEL", "loud" },
	{ "UMAP_MONITOR_FREQ", "-5" },
};

static void bad_values_child(void *arg)
{
	const struct file_arg *f = arg;
	struct tide_options want;
	const char *text;
	int err;

	clear_env();
	tide_options_init(&want);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		set(bad[i][0], bad[i][1]);
	err = capture_stderr();
	CHECK(umapcfg_get_umap_page_size() == want.page_size);
	CHECK(umapcfg_get_max_pages_in_buffer() == want.budget / want.page_size);
	CHECK(umapcfg_get_evict_high_water_threshold() == (int)want.high_water);
	CHECK(umapcfg_get_evict_low_water_threshold() == (int)want.low_water);
	CHECK(umapcfg_get_read_ahead() == want.read_ahead);
	CHECK(umapcfg_get_num_fillers() == (uint64_t)cpus());
	CHECK(umapcfg_get_num_evictors() == (uint64_t)cpus());
	CHECK(umapcfg_get_max_fault_events() == 256);
	text = captured(err);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(count(text, bad[i][0]) == 1, "%s is warned about %d times in: %s", bad[i][0],
		      count(text, bad[i][0]), text);
	/* And the library still works on its defaults. */
	map_and_scan(f->fd, f->size, f->seed);
}

Test(umap_env, bad_values_keep_defaults)
{
	struct file_arg f = { .size = 1 * MiB, .seed = 0xbad };

	test_require_uffd();
	f.fd = test_file(f.size, f.seed);
	run(bad_values_child, &f);
	close(f.fd);
}

static void inverted_child(void *arg)
{
	struct tide_options want;
	const char *text;
	int err;

	(void)arg;
	clear_env();
	tide_options_init(&want);
	set("UMAP_EVICT_HIGH_WATER_THRESHOLD", "50");
	set("UMAP_EVICT_LOW_WATER_THRESHOLD", "60");
	set("UMAP_BUFSIZE", "2");
	err = capture_stderr();
	CHECK(umapcfg_get_evict_high_water_threshold() == (int)want.high_water);
	CHECK(umapcfg_get_evict_low_water_threshold() == (int)want.low_water);
	CHECK(umapcfg_get_max_pages_in_buffer() == want.budget / want.page_size,
	      "a buffer below four pages was accepted");
	text = captured(err);
	CHECK(strstr(text, "UMAP_EVICT_LOW_WATER_THRESHOLD") &&
	      strstr(text, "UMAP_EVICT_HIGH_WATER_THRESHOLD"), "no warning in: %s", text);
	CHECK(strstr(text, "UMAP_BUFSIZE"), "no warning in: %s", text);
}

Test(umap_env, inverted_thresholds_and_tiny_buffer)
{
	run(inverted_child, NULL);
}

/* Thresholds are checked as a pair, whatever order they are applied in. */
static void lowered_pair_child(void *arg)
{
	(void)arg;
	clear_env();
	set("UMAP_EVICT_HIGH_WATER_THRESHOLD", "40");
	set("UMAP_EVICT_LOW_WATER_THRESHOLD", "20");
	CHECK(umapcfg_get_evict_high_water_threshold() == 40);
	CHECK(umapcfg_get_evict_low_water_threshold() == 20);
}

Test(umap_env, lowered_pair_accepted)
{
	run(lowered_pair_child, NULL);
}

/* ---- UMAP_* wins over TIDE_*; TIDE_* still applies where UMAP_* is silent ---- */

static void precedence_child(void *arg)
{
	(void)arg;
	clear_env();
	set("TIDE_PAGE_SIZE", "32K");
	set("TIDE_READ_AHEAD", "3");
	set("UMAP_PAGESIZE", "8192");
	CHECK(umapcfg_get_umap_page_size() == 8192);
	CHECK(umapcfg_get_read_ahead() == 3);
}

Test(umap_env, umap_over_tide)
{
	run(precedence_child, NULL);
}

/* ---- variables tide has no use for: reported once, in verbose mode only ---- */

struct verbose_arg {
	struct file_arg f;
	bool verbose;
};

static void unused_vars_child(void *arg)
{
	const struct verbose_arg *v = arg;
	const char *text;
	int err;

	clear_env();
	set("UMAP_PAGE_FILLERS", "3");
	set("UMAP_PAGE_EVICTORS", "7");
	set("UMAP_MAX_FAULT_EVENTS", "10");
	if (v->verbose)
		set("TIDE_VERBOSE", "1");
	err = capture_stderr();
	for (int round = 0; round < 2; round++) {
		CHECK(umapcfg_get_num_fillers() == 3);
		CHECK(umapcfg_get_num_evictors() == 7);
		CHECK(umapcfg_get_max_fault_events() == 10);
		map_and_scan(v->f.fd, v->f.size, v->f.seed);
	}
	text = captured(err);
	for (const char *const *name = (const char *const[]){ "UMAP_PAGE_FILLERS",
			"UMAP_PAGE_EVICTORS", "UMAP_MAX_FAULT_EVENTS", NULL }; *name; name++)
		CHECK(count(text, *name) == (v->verbose ? 1 : 0), "%s reported %d times in: %s",
		      *name, count(text, *name), text);
}

Test(umap_env, unused_reported_once_when_verbose)
{
	struct verbose_arg v = { { .size = 512 * KiB, .seed = 0x7 }, true };

	test_require_uffd();
	v.f.fd = test_file(v.f.size, v.f.seed);
	run(unused_vars_child, &v);
	v.verbose = false;
	run(unused_vars_child, &v);
	close(v.f.fd);
}

/* ---- UMAP_LOG_LEVEL governs what a failure prints ---- */

static void log_level_child(void *arg)
{
	const char *level = arg;
	const char *text;
	int err;

	clear_env();
	if (level)
		set("UMAP_LOG_LEVEL", level);
	err = capture_stderr();
	errno = 0;
	CHECK(umap(NULL, 4096, PROT_READ, UMAP_PRIVATE | UMAP_FIXED, 0, 0) == UMAP_FAILED);
	CHECK(errno == ENOTSUP, "errno %d", errno);
	text = captured(err);
	CHECK(count(text, "UMAP_FIXED") == (level ? 0 : 1), "output: %s", text);
}

Test(umap_env, log_level)
{
	run(log_level_child, NULL);   /* the default prints failures */
	run(log_level_child, "OFF");
}

/* ---- UMAP_MONITOR_FREQ: periodic statistics on stderr ---- */

static void monitor_child(void *arg)
{
	const struct file_arg *f = arg;
	char text[4096];
	size_t len = 0;
	int pipefd[2];

	clear_env();
	set("UMAP_MONITOR_FREQ", "1");
	report_fd = dup(2);
	CHECK(pipe(pipefd) == 0 && dup2(pipefd[1], 2) >= 0);
	map_and_scan(f->fd, f->size, f->seed);
	/* Wait for the first line, readable on the pipe within a few periods. */
	while (!memmem(text, len, "monitor:", 8)) {
		struct pollfd pfd = { .fd = pipefd[0], .events = POLLIN };
		ssize_t n;

		CHECK(len < sizeof(text) && poll(&pfd, 1, 5000) == 1, "no monitor line within 5 s");
		n = read(pipefd[0], text + len, sizeof(text) - len);
		CHECK(n > 0);
		len += (size_t)n;
	}
	CHECK(memmem(text, len, "faults", 6), "monitor line: %.*s", (int)len, text);
}

Test(umap_env, monitor_prints_statistics)
{
	struct file_arg f = { .size = 256 * KiB, .seed = 0x3 };

	test_require_uffd();
	f.fd = test_file(f.size, f.seed);
	run(monitor_child, &f);
	close(f.fd);
}
