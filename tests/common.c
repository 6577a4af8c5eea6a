/* Helpers shared by the test files. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"

int test_file(uint64_t size, uint64_t seed)
{
	const char *dir = getenv("TIDE_TEST_DIR");
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/tide-test-XXXXXX", dir && *dir ? dir : "/var/tmp");
	fd = mkstemp(path);
	cr_assert(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
	unlink(path);
	cr_assert(ftruncate(fd, (off_t)size) == 0, "ftruncate: %s", strerror(errno));
	if (seed) {
		size_t chunk = 1 << 20;
		uint64_t *buf = malloc(chunk);

		cr_assert(buf);
		for (uint64_t off = 0; off < size; off += chunk) {
			size_t n = size - off < chunk ? size - off : chunk;

			for (size_t i = 0; i < n / 8; i++)
				buf[i] = test_word(off / 8 + i, seed);
			cr_assert(pwrite(fd, buf, n, (off_t)off) == (ssize_t)n, "pwrite: %s",
				  strerror(errno));
		}
		free(buf);
	}
	return fd;
}

void test_require_uffd(void)
{
	uint64_t have = 0;
	int ret = tide__uffd_features(&have);

	if (ret < 0)
		cr_skip_test("userfaultfd is not available here: %s", strerror(-ret));
	if (!(have & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
		cr_skip_test("userfaultfd lacks write-protect (UFFD_FEATURE_PAGEFAULT_FLAG_WP)");
}

void test_require_keepers(void)
{
	long halt_poll = tide__guest_halt_poll(NULL, 0);
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) < 2)
		cr_skip_test("one CPU: no other vCPU to keep awake, so no keepers start");
	if (halt_poll > 0)
		cr_skip_test("the guest kernel polls idle vCPUs itself (haltpoll, guest_halt_poll_ns "
			     "%ld): no keepers start", halt_poll);
}

void test_require_wake_qos(void)
{
	struct tide_options o;
	char why[160];

	tide_options_init(&o);
	o.wake_poll_us = 50;
	o.wake_qos = 1;
	o.signal_faults = 0;
	if (tide__wake_poll_plan(&o, why, sizeof(why)) != TIDE_WAKE_POLL_QOS)
		cr_skip_test("no CPU latency request here: %s", why);
}

void test_require_writeback(enum tide_writeback wb)
{
	char why[256] = "";

	test_require_uffd();
	if (wb == TIDE_WRITEBACK_DIRECT && tide__probe_direct_write(why, sizeof(why)) != 1)
		cr_skip_test("direct write-back is not safe on this kernel: %s", why);
}

struct tide_stats test_stats(tide_pool *pool)
{
	struct tide_stats st;

	memset(&st, 0xa5, sizeof(st));
	cr_assert_eq(tide_pool_stats(pool, &st), 0, "%s", tide_last_error());
	/* Every byte is the library's: the room to grow reads as zero. */
	cr_assert_leq((unsigned)st.wake_poll, TIDE_WAKE_POLL_THREADS, "wake_poll = %d", st.wake_poll);
	for (size_t i = 0; i < sizeof(st.reserved) / sizeof(st.reserved[0]); i++)
		cr_assert_eq(st.reserved[i], 0, "reserved[%zu] = %#llx", i,
			     (unsigned long long)st.reserved[i]);
	return st;
}

/* LeakSanitizer asks this hook before its check at exit. A child forked
 * from a multi-threaded test sees what the parent's other threads held at
 * the fork (a service thread's fill in progress) as leaked, since those
 * threads were not copied: children skip the check. */
static int forked_child;

int __lsan_is_turned_off(void)
{
	return forked_child;
}

pid_t test_child_start(void (*fn)(void *), void *arg)
{
	pid_t pid = fork();

	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		forked_child = 1;
		alarm(0);
		fn(arg);
		_exit(0);
	}
	return pid;
}

int test_in_child(void (*fn)(void *), void *arg, int timeout_ms)
{
	return test_child_wait(test_child_start(fn, arg), timeout_ms);
}

int test_child_wait(pid_t pid, int timeout_ms)
{
	int status = 0;

	/* A pidfd lets us wait with a timeout without signals or sleeps. */
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	cr_assert(pidfd >= 0, "pidfd_open: %s", strerror(errno));
	struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
	int n;
	do
		n = poll(&pfd, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	close(pidfd);
	if (n == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return -1;
	}
	cr_assert(waitpid(pid, &status, 0) == pid);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

void test_default_signal(int sig)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };

	sigaction(sig, &sa, NULL);
}

void test_pread(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, off + (off_t)done);

		cr_assert(n > 0, "pread at %lld: %s", (long long)(off + (off_t)done),
			  n < 0 ? strerror(errno) : "end of file");
		done += (size_t)n;
	}
}

int test_reopen(int fd)
{
	char path[64];
	int nfd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	nfd = open(path, O_RDONLY);
	cr_assert(nfd >= 0, "reopen fd %d: %s", fd, strerror(errno));
	return nfd;
}

int test_dir_entries(const char *path)
{
	DIR *d = opendir(path);
	int n = 0;

	cr_assert_not_null(d, "opendir %s", path);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* ---- the threads of the process, from /proc ---- */

static bool thread_name(const char *tid, char *name, size_t len)
{
	char path[300];
	FILE *f;
	bool ok;

	snprintf(path, sizeof(path), "/proc/self/task/%s/comm", tid);
	if (!(f = fopen(path, "r")))
		return false;
	ok = fgets(name, (int)len, f) != NULL;
	fclose(f);
	if (ok)
		name[strcspn(name, "\n")] = '\0';
	return ok;
}

static unsigned long thread_switches(pid_t tid)
{
	char path[300], line[256];
	unsigned long v, sum = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "voluntary_ctxt_switches: %lu", &v) == 1 ||
		    sscanf(line, "nonvoluntary_ctxt_switches: %lu", &v) == 1)
			sum += v;
	fclose(f);
	return sum;
}

/* The threads named with `prefix`; fills s[] (sorted by name) if not NULL. */
int test_threads_named(const char *prefix, struct test_thread *s, int max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		char name[16];
		cpu_set_t set;

		if (e->d_name[0] == '.' || !thread_name(e->d_name, name, sizeof(name)) ||
		    strncmp(name, prefix, strlen(prefix)))
			continue;
		if (s && n < max) {
			s[n].tid = atoi(e->d_name);
			snprintf(s[n].name, sizeof(s[n].name), "%s", name);
			cr_assert_eq(sched_getaffinity(s[n].tid, sizeof(set), &set), 0);
			s[n].cpu = -1;
			for (int c = 0; CPU_COUNT(&set) == 1 && c < CPU_SETSIZE; c++)
				if (CPU_ISSET(c, &set))
					s[n].cpu = c;
			s[n].switches = thread_switches(s[n].tid);
		}
		n++;
	}
	closedir(d);
	for (int i = 1; s && i < n && i < max; i++)
		for (int j = i; j > 0 && strcmp(s[j - 1].name, s[j].name) > 0; j--) {
			struct test_thread t = s[j];

			s[j] = s[j - 1];
			s[j - 1] = t;
		}
	return n;
}
