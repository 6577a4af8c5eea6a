/* LD_PRELOAD and `tide run`: an unmodified program's file mappings paged by tide. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

extern char **environ;

#define FILE_SIZE (32 * MiB)
#define BUDGET    (4 * MiB)
#define RUN_TIMEOUT_MS 120000

/*
 * The helper (tests/preload_helper.c) and the library are built without
 * sanitizers even in the ASan/UBSan build (tests/meson.build,
 * runtime/meson.build): an instrumented libtide-preload.so can only be
 * loaded into a program that starts with the ASan runtime, which an
 * unmodified program does not. So these tests run in both builds; in the
 * sanitized one the `tide` command that sets everything up is instrumented.
 */
static const char *env_or_skip(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v)
		cr_skip_test("%s is not set (run through meson test)", name);
	return v;
}

struct run {
	int status;               /* exit status, 128+signal */
	char out[16384];
	char err[16384];
};

static void drain(int fd, char *buf, size_t cap, size_t *len, bool *open)
{
	ssize_t n = read(fd, buf + *len, cap - 1 - *len);

	if (n > 0) {
		*len += (size_t)n;
		buf[*len] = 0;
		if (*len + 1 >= cap)    /* full: keep reading, drop the rest */
			*len = cap / 2;
	} else if (n == 0 || errno != EINTR) {
		*open = false;
	}
}

/* Runs argv with the environment plus `extra` (NULL-terminated "K=V"),
 * capturing stdout and stderr; kills it and fails after RUN_TIMEOUT_MS. */
static void run(struct run *r, char *const argv[], char *const extra[])
{
	int out[2], err[2], status, pidfd;
	size_t nenv = 0, nextra = 0, olen = 0, elen = 0;
	bool oopen = true, eopen = true;
	char **envp;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	while (environ[nenv])
		nenv++;
	while (extra && extra[nextra])
		nextra++;
	envp = calloc(nenv + nextra + 1, sizeof(*envp));
	cr_assert(envp);
	/* The extras first: the first of two equal names wins in getenv. */
	if (nextra)
		memcpy(envp, extra, nextra * sizeof(*envp));
	memcpy(envp + nextra, environ, nenv * sizeof(*envp));
	cr_assert(pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0);
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		execve(argv[0], argv, envp);
		_exit(99);
	}
	free(envp);
	close(out[1]);
	close(err[1]);
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	cr_assert(pidfd >= 0, "pidfd_open: %s", strerror(errno));
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (oopen || eopen) {
		struct pollfd p[2] = { { .fd = oopen ? out[0] : -1, .events = POLLIN },
				       { .fd = eopen ? err[0] : -1, .events = POLLIN } };
		long left;

		clock_gettime(CLOCK_MONOTONIC, &t);
		left = RUN_TIMEOUT_MS - ((t.tv_sec - t0.tv_sec) * 1000 +
					 (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0 || poll(p, 2, (int)left) == 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			cr_assert_fail("%s did not finish in %d ms; stderr so far:\n%s", argv[0],
				       RUN_TIMEOUT_MS, r->err);
		}
		if (p[0].revents)
			drain(out[0], r->out, sizeof(r->out), &olen, &oopen);
		if (p[1].revents)
			drain(err[0], r->err, sizeof(r->err), &elen, &eopen);
	}
	close(out[0]);
	close(err[0]);
	close(pidfd);
	cr_assert(waitpid(pid, &status, 0) == pid);
	r->status = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

/* The value after `"key":` (JSON) or ` key=` (a statistics line). */
static uint64_t field(const char *text, const char *key, bool json)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), json ? "\"%s\":" : " %s=", key);
	p = strstr(text, pat);
	cr_assert_not_null(p, "no %s in:\n%s", key, text);
	return strtoull(p + strlen(pat), NULL, 10);
}

static uint64_t printed(const char *out, const char *label)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "%s ", label);
	p = strstr(out, pat);
	cr_assert_not_null(p, "the program printed no \"%s\":\n%s", label, out);
	return strtoull(p + strlen(pat), NULL, 16);
}

/* FNV-1a over the 64-bit words of [0, len) of the file, read with pread. */
static uint64_t file_checksum(int fd, uint64_t len)
{
	uint64_t h = 0xcbf29ce484222325ull, *buf = malloc(MiB);

	cr_assert(buf);
	for (uint64_t off = 0; off < len; off += MiB) {
		size_t n = len - off < MiB ? (size_t)(len - off) : MiB;

		test_pread(fd, buf, n, (off_t)off);
		for (size_t i = 0; i < n / 8; i++)
			h = (h ^ buf[i]) * 0x100000001b3ull;
	}
	free(buf);
	return h;
}

static uint64_t pattern_word(uint64_t i)
{
	return i * 0x9e3779b97f4a7c15ull ^ 0x5eed;
}

static uint64_t pattern_checksum(uint64_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (uint64_t i = 0; i < len / 8; i++)
		h = (h ^ pattern_word(i)) * 0x100000001b3ull;
	return h;
}

/* The file, read through a second open, holds the helper's pattern. */
static void expect_pattern(int fd, uint64_t len)
{
	int rfd = test_reopen(fd);
	uint64_t *buf = malloc(MiB);

	cr_assert(buf);
	for (uint64_t off = 0; off < len; off += MiB) {
		test_pread(rfd, buf, MiB, (off_t)off);
		for (size_t i = 0; i < MiB / 8; i++)
			if (buf[i] != pattern_word(off / 8 + i))
				cr_assert_fail("word %llu of the file is %#llx, the program wrote %#llx",
					       (unsigned long long)(off / 8 + i),
					       (unsigned long long)buf[i],
					       (unsigned long long)pattern_word(off / 8 + i));
	}
	free(buf);
	close(rfd);
}

/* The path another process opens to reach our descriptor. */
static char *fd_path(int fd, char *buf, size_t len)
{
	snprintf(buf, len, "/proc/%d/fd/%d", (int)getpid(), fd);
	return buf;
}

/* tide run --json with our budget, then the helper in `mode` on `file`. */
static void tide_run(struct run *r, const char *mode, const char *file, const char *min)
{
	char *argv[] = {
		(char *)env_or_skip("TIDE_BIN"), "run", "--json", "--pool", "4M", "--page-size", "64K",
		"--min", (char *)min, "--", (char *)env_or_skip("TIDE_PRELOAD_HELPER"),
		(char *)mode, (char *)file, NULL,
	};

	run(r, argv, NULL);
}

/* tide really paged it: it filled and evicted pages, within the budget. */
static void expect_paged(const char *json, bool dirty)
{
	cr_expect_eq(field(json, "mappings_taken", true), 1, "%s", json);
	cr_expect_gt(field(json, "fills", true), 0, "%s", json);
	cr_expect_gt(field(json, "evictions", true), 0, "no eviction: the kernel paged it?\n%s", json);
	if (dirty)
		cr_expect_gt(field(json, "evictions_dirty", true), 0, "%s", json);
	cr_expect_eq(field(json, "budget", true), BUDGET, "%s", json);
	/* The pool never holds more than its budget; 64 KiB of slack for a page. */
	cr_expect_leq(field(json, "peak_resident_bytes", true), BUDGET + 64 * KiB, "%s", json);
	cr_expect_eq(field(json, "writeback_errors", true), 0, "%s", json);
	cr_expect_eq(field(json, "read_errors", true), 0, "%s", json);
}

Test(preload, tide_run_pages_a_file_larger_than_the_budget)
{
	int fd = test_file(FILE_SIZE, 7);
	uint64_t want = file_checksum(fd, FILE_SIZE);
	struct run r;
	char path[64];

	test_require_uffd();
	tide_run(&r, "rw", fd_path(fd, path, sizeof(path)), "1M");
	cr_assert_eq(r.status, 0, "status %d, stderr:\n%s", r.status, r.err);
	cr_expect_eq(printed(r.out, "checksum"), want, "the program read other data than the file holds");
	expect_paged(r.out, true);
	/* Every page was written: all of them left through tide's write-back. */
	cr_expect_geq(field(r.out, "writebacks", true), FILE_SIZE / (64 * KiB), "%s", r.out);
	expect_pattern(fd, FILE_SIZE);
	close(fd);
}

/* The helper writes the file through tide, then execs (by `mode`) without
 * msync: what it wrote reaches the file anyway. */
static void exec_keeps_writes(const char *mode)
{
	int fd = test_file(FILE_SIZE, 13);
	struct run r;
	char path[64];

	test_require_uffd();
	tide_run(&r, mode, fd_path(fd, path, sizeof(path)), "1M");
	cr_assert_eq(r.status, 0, "%s: status %d, stderr:\n%s", mode, r.status, r.err);
	expect_pattern(fd, FILE_SIZE);
	close(fd);
}

Test(preload, writes_survive_exit_without_destructors)
{
	struct run r;
	int fd = test_file(FILE_SIZE, 17);
	char path[64];

	test_require_uffd();
	tide_run(&r, "_exit", fd_path(fd, path, sizeof(path)), "1M");
	cr_assert_eq(r.status, 0, "status %d, stderr:\n%s", r.status, r.err);
	expect_pattern(fd, FILE_SIZE);
	/* _exit still reports: the counters of a process that paged. */
	expect_paged(r.out, true);
	cr_expect_geq(field(r.out, "writebacks", true), FILE_SIZE / (64 * KiB), "%s", r.out);
	close(fd);
}

Test(preload, writes_survive_exec)
{
	exec_keeps_writes("execl");
	exec_keeps_writes("execlp");
	exec_keeps_writes("execle");
	exec_keeps_writes("execvp");
	exec_keeps_writes("execve");
}

Test(preload, ld_preload_directly_private_read_only)
{
	int fd = test_file(FILE_SIZE, 11), sfd;
	uint64_t want = file_checksum(fd, FILE_SIZE);
	char path[64], stats[64], env_stats[128], line[2048] = "";
	char *argv[] = { (char *)env_or_skip("TIDE_PRELOAD_HELPER"), "ro", path, NULL };
	char env_lib[4200];
	char *extra[] = { env_lib, "TIDE_BUDGET=4M", "TIDE_PAGE_SIZE=64K", "TIDE_PRELOAD_MIN=1M",
			  env_stats, NULL };
	char spath[] = "/var/tmp/tide-preload-stats-XXXXXX";
	struct run r;

	test_require_uffd();
	snprintf(env_lib, sizeof(env_lib), "LD_PRELOAD=%s", env_or_skip("TIDE_PRELOAD_LIB"));
	sfd = mkstemp(spath);
	cr_assert(sfd >= 0);
	unlink(spath);
	snprintf(env_stats, sizeof(env_stats), "TIDE_PRELOAD_STATS=%s", fd_path(sfd, stats, sizeof(stats)));
	fd_path(fd, path, sizeof(path));
	run(&r, argv, extra);
	cr_assert_eq(r.status, 0, "status %d, stderr:\n%s", r.status, r.err);
	cr_expect_eq(printed(r.out, "checksum"), want);
	cr_assert(pread(sfd, line, sizeof(line) - 1, 0) > 0, "the program wrote no statistics");
	cr_expect_eq(field(line, "pool", false), 1, "%s", line);
	cr_expect_eq(field(line, "taken", false), 1, "%s", line);
	cr_expect_gt(field(line, "fills", false), 0, "%s", line);
	cr_expect_gt(field(line, "evictions", false), 0, "%s", line);
	cr_expect_eq(field(line, "evictions_dirty", false), 0, "a read-only mapping wrote: %s", line);
	cr_expect_leq(field(line, "peak_resident_bytes", false), BUDGET + 64 * KiB, "%s", line);
	/* Read-only, private: the file is as it was. */
	cr_expect_eq(file_checksum(fd, FILE_SIZE), want);
	close(sfd);
	close(fd);
}

Test(preload, small_and_anonymous_mappings_pass_through)
{
	int fd = test_file(FILE_SIZE, 13);
	uint64_t want = file_checksum(fd, FILE_SIZE);
	struct run r;
	char path[64];

	/* Below TIDE_PRELOAD_MIN: the kernel maps it, and it still works. */
	tide_run(&r, "rw", fd_path(fd, path, sizeof(path)), "64M");
	cr_assert_eq(r.status, 0, "status %d, stderr:\n%s", r.status, r.err);
	cr_expect_eq(printed(r.out, "checksum"), want);
	cr_expect_eq(field(r.out, "mappings_taken", true), 0, "%s", r.out);
	cr_expect_eq(field(r.out, "processes_paged", true), 0, "no mapping, yet a pool: %s", r.out);
	cr_expect_geq(field(r.out, "mappings_passed", true), 1, "%s", r.out);
	expect_pattern(fd, FILE_SIZE);

	/* Anonymous memory is never tide's. */
	tide_run(&r, "anon", "33554432", "1M");
	cr_assert_eq(r.status, 0, "status %d, stderr:\n%s", r.status, r.err);
	cr_expect_eq(printed(r.out, "checksum"), pattern_checksum(FILE_SIZE));
	cr_expect_eq(field(r.out, "mappings_taken", true), 0, "%s", r.out);
	cr_expect_eq(field(r.out, "processes_paged", true), 0, "%s", r.out);
	close(fd);
}

Test(preload, a_forked_child_reads_what_the_parent_wrote)
{
	int fd = test_file(FILE_SIZE, 17);
	struct run r;
	char path[64];

	test_require_uffd();
	tide_run(&r, "fork", fd_path(fd, path, sizeof(path)), "1M");
	cr_assert_eq(r.status, 0, "status %d, stderr:\n%s", r.status, r.err);
	cr_expect_eq(printed(r.out, "child checksum"), pattern_checksum(FILE_SIZE),
		     "the child did not see the parent's writes:\n%s", r.out);
	cr_expect_eq(printed(r.out, "\nchecksum"), pattern_checksum(FILE_SIZE), "%s", r.out);
	expect_paged(r.out, true);
	expect_pattern(fd, FILE_SIZE);
	close(fd);
}

Test(preload, partial_munmap_is_refused_and_mremap_moves)
{
	int fd = test_file(FILE_SIZE, 19);
	uint64_t half = file_checksum(fd, FILE_SIZE / 2), whole = file_checksum(fd, FILE_SIZE);
	struct run r;
	char path[64];

	test_require_uffd();
	fd_path(fd, path, sizeof(path));
	tide_run(&r, "partial", path, "1M");
	cr_assert_eq(r.status, 0, "status %d, stderr:\n%s", r.status, r.err);
	cr_expect(strstr(r.out, "partial munmap -1 Invalid argument"), "%s", r.out);
	cr_expect(strstr(r.err, "a region is unmapped whole"), "no message: %s", r.err);
	cr_expect_eq(field(r.out, "calls_refused", true), 1, "%s", r.out);
	cr_expect_eq(printed(r.out, "checksum"), half, "%s", r.out);

	tide_run(&r, "remap", path, "1M");
	cr_assert_eq(r.status, 0, "status %d, stderr:\n%s", r.status, r.err);
	cr_expect_eq(printed(r.out, "half"), half, "%s", r.out);
	cr_expect_eq(printed(r.out, "checksum"), whole, "after mremap: %s", r.out);
	cr_expect_eq(field(r.out, "mappings_taken", true), 2, "%s", r.out);
	cr_expect_eq(file_checksum(fd, FILE_SIZE), whole);
	close(fd);
}

Test(preload, tide_unavailable_leaves_mappings_to_the_kernel)
{
	int fd = test_file(FILE_SIZE, 23);
	uint64_t want = file_checksum(fd, FILE_SIZE);
	char path[64], env_lib[4200];
	char *argv[] = { (char *)env_or_skip("TIDE_PRELOAD_HELPER"), "rw", path, NULL };
	/* Options no pool accepts (a pinned CPU with shards): tide_pool_create fails. */
	char *extra[] = { env_lib, "TIDE_PRELOAD_MIN=1M", "TIDE_SERVICE_THREADS=2",
			  "TIDE_SERVICE_CPU=0", NULL };
	struct run r;

	snprintf(env_lib, sizeof(env_lib), "LD_PRELOAD=%s", env_or_skip("TIDE_PRELOAD_LIB"));
	fd_path(fd, path, sizeof(path));
	run(&r, argv, extra);
	cr_assert_eq(r.status, 0, "the program broke because of tide: status %d, stderr:\n%s",
		     r.status, r.err);
	cr_expect_eq(printed(r.out, "checksum"), want);
	cr_expect(strstr(r.err, "tide cannot run here"), "no warning: %s", r.err);
	expect_pattern(fd, FILE_SIZE);
	close(fd);
}

Test(preload, bad_arguments_and_missing_programs)
{
	char *helper = (char *)env_or_skip("TIDE_PRELOAD_HELPER");
	char *bin = (char *)env_or_skip("TIDE_BIN");
	static const struct {
		const char *args[4];
		int status;
		const char *says;
	} cases[] = {
		{ { "--pool", "lots" }, 2, "--pool \"lots\" is not a valid TIDE_BUDGET" },
		{ { "--page-size", "3K" }, 2, "page size" },
		{ { "-o", "NO_SUCH=1" }, 2, "there is no option NO_SUCH" },
		{ { "-o", "budget" }, 2, "is not KEY=VALUE" },
		{ { "--pool", "16K" }, 2, "cannot make a pool" },
		{ { "--" }, 2, "no program given" },
		{ { "--", "/nonexistent/program" }, 127, "cannot run \"/nonexistent/program\"" },
	};
	struct run r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[8] = { bin, "run" };
		size_t n = 2;

		for (size_t k = 0; k < 4 && cases[i].args[k]; k++)
			argv[n++] = (char *)cases[i].args[k];
		if (strcmp(cases[i].args[0], "--"))
			argv[n++] = "--", argv[n++] = helper, argv[n++] = "exit";
		run(&r, argv, NULL);
		cr_expect_eq(r.status, cases[i].status, "case %zu: status %d, stderr:\n%s", i,
			     r.status, r.err);
		cr_expect(strstr(r.err, cases[i].says), "case %zu: stderr lacks \"%s\":\n%s", i,
			  cases[i].says, r.err);
	}
}

Test(preload, exit_status_and_signals_are_forwarded)
{
	char *helper = (char *)env_or_skip("TIDE_PRELOAD_HELPER");
	char *bin = (char *)env_or_skip("TIDE_BIN");
	char *exit7[] = { bin, "run", "--", helper, "exit", "7", NULL };
	char *term[] = { bin, "run", "--json", "--", helper, "kill", "15", NULL };
	struct run r;

	run(&r, exit7, NULL);
	cr_expect_eq(r.status, 7, "stderr:\n%s", r.err);
	cr_expect(strstr(r.err, "exited with status 7"), "%s", r.err);
	run(&r, term, NULL);
	cr_expect_eq(r.status, 128 + SIGTERM, "stderr:\n%s", r.err);
	cr_expect_eq(field(r.out, "signal", true), SIGTERM, "%s", r.out);
}
