/* tide sort end to end: each backend and write-back path sorts a few MiB, and bad input is refused. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define DATA (4 * MiB)
#define POOL (1 * MiB)

struct outcome {
	int status;              /* exit status, 128+signal, or -1 on timeout */
	char out[16384];         /* stdout */
	char err[16384];         /* stderr */
};

static const char *scratch_dir(void)
{
	const char *d = getenv("TIDE_TEST_DIR");
	return d && *d ? d : "/var/tmp";
}

static void drain(int fd, char *buf, size_t cap, size_t *len, bool *open)
{
	ssize_t n = read(fd, buf + *len, cap - 1 - *len);

	if (n > 0)
		*len += (size_t)n;
	if (n == 0 || *len >= cap - 1)
		*open = false;
	buf[*len] = 0;
}

/* Run `tide sort ARGS...` (NULL-terminated) with a watchdog of 120 s. */
static void run_sort(struct outcome *o, const char *const *args)
{
	const char *bin = getenv("TIDE_BIN");
	const char *argv[32] = { bin, "sort" };
	int po[2], pe[2], status;
	size_t n = 2, lo = 0, le = 0;
	bool oo = true, eo = true;

	cr_assert(bin && *bin, "TIDE_BIN is not set (meson test sets it)");
	for (; *args && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	cr_assert(pipe(po) == 0 && pipe(pe) == 0);
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		if (chdir(scratch_dir()) < 0)
			_exit(126);
		execv(bin, (char **)argv);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	memset(o, 0, sizeof(*o));
	while (oo || eo) {
		struct pollfd p[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
		int r = poll(p, 2, 120000);

		if (r == 0) {
			kill(pid, SIGKILL);
			break;
		}
		if (r < 0 && errno == EINTR)
			continue;
		cr_assert(r > 0, "poll: %s", strerror(errno));
		if (oo && p[0].revents)
			drain(po[0], o->out, sizeof(o->out), &lo, &oo);
		if (eo && p[1].revents)
			drain(pe[0], o->err, sizeof(o->err), &le, &eo);
	}
	close(po[0]);
	close(pe[0]);
	cr_assert(waitpid(pid, &status, 0) == pid);
	if (oo || eo)
		o->status = -1;
	else
		o->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	cr_assert(o->status != -1, "tide sort did not finish in 120 s; stderr:\n%s", o->err);
}

/* The text of the value of "key" in one line of compact JSON, or NULL. */
static const char *json_value(const char *json, const char *key, char *buf, size_t len)
{
	char pat[64];
	const char *p;
	size_t n = 0;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(json, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	if (*p == '"') {
		for (p++; *p && *p != '"' && n < len - 1; p++)
			buf[n++] = *p;
	} else {
		for (; *p && *p != ',' && *p != '}' && n < len - 1; p++)
			buf[n++] = *p;
	}
	buf[n] = 0;
	return buf;
}

static void expect_json(const struct outcome *o, const char *key, const char *want)
{
	char v[128];

	cr_assert(json_value(o->out, key, v, sizeof(v)), "no \"%s\" in the JSON:\n%s", key, o->out);
	cr_expect_str_eq(v, want, "\"%s\" is %s, expected %s; stderr:\n%s", key, v, want, o->err);
}

static uint64_t json_u64(const struct outcome *o, const char *key)
{
	char v[128];

	cr_assert(json_value(o->out, key, v, sizeof(v)), "no \"%s\" in the JSON:\n%s", key, o->out);
	cr_assert(v[0] >= '0' && v[0] <= '9', "\"%s\" is %s, not a number", key, v);
	return strtoull(v, NULL, 10);
}

static void file_path(char *buf, size_t len, const char *tag)
{
	snprintf(buf, len, "%s/tide-test-sort-%d-%s.dat", scratch_dir(), (int)getpid(), tag);
	unlink(buf);
}

/* The kept file holds DATA bytes of keys in ascending order: the sort reached the disk. */
static void expect_sorted_file(const char *path, uint64_t size)
{
	int fd = open(path, O_RDONLY);
	uint64_t prev = 0, *buf = malloc(1 * MiB);
	struct stat st;

	cr_assert(fd >= 0, "%s was not kept: %s", path, strerror(errno));
	cr_assert(fstat(fd, &st) == 0);
	cr_expect_eq((uint64_t)st.st_size, size, "%s is %lld bytes, not %llu", path,
		     (long long)st.st_size, (unsigned long long)size);
	cr_assert(buf);
	for (uint64_t off = 0; off < size; off += 1 * MiB) {
		test_pread(fd, buf, 1 * MiB, (off_t)off);
		for (size_t i = 0; i < MiB / 8; i++) {
			cr_assert(buf[i] >= prev, "%s is not sorted at key %llu", path,
				  (unsigned long long)(off / 8 + i));
			prev = buf[i];
		}
	}
	cr_expect_neq(prev, 0, "the file holds zeros: nothing was written back");
	free(buf);
	close(fd);
	unlink(path);
}

static void expect_refused(const char *const *args, const char *why);

/*
 * The write-back phase's line (stderr is not a terminal: one line per
 * phase) gives a rate only for bytes it wrote: the memory backend writes
 * the whole array there; msync's bytes are not known, so mmap gets none.
 */
static void expect_writeback_line(const struct outcome *o, const char *backend)
{
	const char *line = strstr(o->err, "tide: write-back");
	const char *end;
	bool rate;

	cr_assert(line, "no write-back line; stderr:\n%s", o->err);
	end = strchr(line, '\n');
	rate = memmem(line, end ? (size_t)(end - line) : strlen(line), "/s)", 3) != NULL;
	if (!strcmp(backend, "memory"))
		cr_expect(rate, "the memory backend wrote the data but gives no rate:\n%s", o->err);
	if (!strcmp(backend, "mmap"))
		cr_expect(!rate, "msync's bytes are unknown, yet a rate:\n%s", o->err);
}

/* One run of the matrix: sort, check the JSON, check the kept file on disk.
 * `signal`: the --signal-faults value, or NULL for the default (on, unless
 * TIDE_SIGNAL_FAULTS says otherwise). */
static void sort_case_full(const char *backend, const char *writeback, const char *page,
			   uint64_t data, uint64_t budget, const char *signal)
{
	char path[512], size[32], pool[32];
	const char *args[20];
	struct outcome *o = calloc(1, sizeof(*o));
	int n = 0;

	cr_assert(o);
	file_path(path, sizeof(path), backend);
	snprintf(size, sizeof(size), "%llu", (unsigned long long)data);
	snprintf(pool, sizeof(pool), "%llu", (unsigned long long)budget);
	args[n++] = "--size"; args[n++] = size;
	args[n++] = "--pool"; args[n++] = pool;
	args[n++] = "--backend"; args[n++] = backend;
	args[n++] = "--file"; args[n++] = path;
	args[n++] = "--keep";
	args[n++] = "--json";
	if (writeback) {
		args[n++] = "--writeback";
		args[n++] = writeback;
	}
	if (page) {
		args[n++] = "--page-size";
		args[n++] = page;
	}
	if (signal) {
		args[n++] = "--signal-faults";
		args[n++] = signal;
	}
	args[n] = NULL;
	run_sort(o, args);
	cr_assert_eq(o->status, 0, "tide sort --backend %s exited %d; stderr:\n%s", backend,
		     o->status, o->err);
	expect_json(o, "backend", backend);
	expect_json(o, "sorted", "true");
	expect_json(o, "checksum_match", "true");
	expect_json(o, "ok", "true");
	cr_expect_eq(json_u64(o, "size"), data);
	cr_expect_eq(json_u64(o, "inversions"), 0);
	if (!strcmp(backend, "tide")) {
		/* A pool a quarter of the data must have filled and evicted pages. */
		cr_expect_gt(json_u64(o, "fills"), 0, "no fills: %s", o->out);
		cr_expect_gt(json_u64(o, "evictions"), 0, "no evictions: %s", o->out);
		cr_expect_leq(json_u64(o, "peak_resident_bytes"), budget,
			      "resident pages went over the budget: %s", o->out);
		if (writeback && strcmp(writeback, "auto"))
			expect_json(o, "writeback", writeback);
		/* Off: the service thread served every fault; on: the sorting
		 * threads served theirs (counted by the runtime). */
		if (!signal) {
			const char *env = getenv("TIDE_SIGNAL_FAULTS");

			signal = env && !strcmp(env, "0") ? "off" : "on";
		}
		expect_json(o, "signal_faults", strcmp(signal, "on") ? "false" : "true");
		if (strcmp(signal, "on"))
			cr_expect_eq(json_u64(o, "faults_signal"), 0, "%s", o->out);
		else
			cr_expect_gt(json_u64(o, "faults_signal"), 0, "%s", o->out);
	} else {
		expect_json(o, "fills", "null");
		expect_json(o, "signal_faults", "null");
	}
	expect_writeback_line(o, backend);
	expect_sorted_file(path, data);
	free(o);
}

static void sort_case_sized(const char *backend, const char *writeback, const char *page,
			    uint64_t data, uint64_t budget)
{
	sort_case_full(backend, writeback, page, data, budget, NULL);
}

static void sort_case(const char *backend, const char *writeback, const char *page)
{
	sort_case_sized(backend, writeback, page, DATA, POOL);
}

Test(sort, memory) { sort_case("memory", NULL, NULL); }
Test(sort, mmap) { sort_case("mmap", NULL, NULL); }

Test(sort, tide_fixed, .init = test_require_uffd) { sort_case("tide", "fixed", NULL); }
Test(sort, tide_direct, .init = test_require_uffd) { sort_case("tide", "direct", NULL); }
Test(sort, tide_auto, .init = test_require_uffd) { sort_case("tide", "auto", NULL); }
Test(sort, tide_small_pages, .init = test_require_uffd) { sort_case("tide", "fixed", "4K"); }
/* 2 MiB pages: a pool of 16 keeps the three streams of two merging threads. */
Test(sort, tide_huge_pages, .init = test_require_uffd)
{
	sort_case_sized("tide", "fixed", "2M", 64 * MiB, 32 * MiB);
}

/* The service thread serves the faults when asked, by flag or environment. */
Test(sort, tide_service_thread, .init = test_require_uffd)
{
	sort_case_full("tide", "fixed", NULL, DATA, POOL, "off");
}

Test(sort, tide_signal_faults_on, .init = test_require_uffd)
{
	sort_case_full("tide", "direct", NULL, DATA, POOL, "on");
}

Test(sort, tide_environment_turns_signal_faults_off, .init = test_require_uffd)
{
	cr_assert_eq(setenv("TIDE_SIGNAL_FAULTS", "0", 1), 0);
	sort_case("tide", "fixed", NULL);
	unsetenv("TIDE_SIGNAL_FAULTS");
}

Test(sort, bad_signal_faults)
{
	expect_refused((const char *const[]){ "--signal-faults", "maybe", "--backend", "tide", NULL },
		       "not on or off");
}

Test(sort, pool_below_four_pages)
{
	expect_refused((const char *const[]){ "--size", "8M", "--pool", "4M", "--page-size", "2M",
					      "--backend", "tide", NULL }, "fewer than 4 pages");
}

/* Without --keep the data file is gone afterwards. */
Test(sort, removes_file)
{
	char path[512];
	struct outcome *o = calloc(1, sizeof(*o));

	file_path(path, sizeof(path), "rm");
	run_sort(o, (const char *const[]){ "--size", "1M", "--backend", "memory", "--file", path,
					   NULL });
	cr_assert_eq(o->status, 0, "stderr:\n%s", o->err);
	cr_expect(access(path, F_OK) < 0 && errno == ENOENT, "%s was left behind", path);
	free(o);
}

/* Two seeds give different keys: the data is not a fixed pattern. */
Test(sort, seed_changes_keys)
{
	struct outcome *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	char va[64], vb[64];

	run_sort(a, (const char *const[]){ "--size", "1M", "--backend", "memory", "--seed", "1",
					   "--json", NULL });
	run_sort(b, (const char *const[]){ "--size", "1M", "--backend", "memory", "--seed", "2",
					   "--json", NULL });
	cr_assert_eq(a->status, 0);
	cr_assert_eq(b->status, 0);
	cr_assert(json_value(a->out, "checksum_generated", va, sizeof(va)));
	cr_assert(json_value(b->out, "checksum_generated", vb, sizeof(vb)));
	cr_expect_str_neq(va, vb);
	free(a);
	free(b);
}

static void expect_refused(const char *const *args, const char *why)
{
	struct outcome *o = calloc(1, sizeof(*o));

	run_sort(o, args);
	cr_expect_eq(o->status, 2, "exit %d, expected 2; stderr:\n%s", o->status, o->err);
	cr_expect(strstr(o->err, why), "stderr does not say \"%s\":\n%s", why, o->err);
	cr_expect_eq(o->out[0], 0, "a refused run printed a result:\n%s", o->out);
	free(o);
}

Test(sort, size_not_multiple_of_8)
{
	expect_refused((const char *const[]){ "--size", "4097", "--backend", "memory", NULL },
		       "multiple of 8");
}

Test(sort, pool_larger_than_data)
{
	expect_refused((const char *const[]){ "--size", "4M", "--pool", "5M", "--backend", "mmap",
					      NULL }, "larger than the data");
}

Test(sort, bad_backend)
{
	expect_refused((const char *const[]){ "--backend", "disk", NULL }, "not tide, mmap or memory");
}

/* An existing file of another size is refused and left exactly as it was. */
Test(sort, wrong_size_file_untouched)
{
	char path[512];
	static const char text[] = "not keys, and not 4 MiB";
	char back[sizeof(text)];
	int fd;

	file_path(path, sizeof(path), "wrong");
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	cr_assert(write(fd, text, sizeof(text)) == (ssize_t)sizeof(text));
	expect_refused((const char *const[]){ "--size", "4M", "--backend", "mmap", "--file", path,
					      NULL }, "exists and is");
	test_pread(fd, back, sizeof(back), 0);
	struct stat st;
	cr_assert(fstat(fd, &st) == 0);
	cr_expect_eq(st.st_size, (off_t)sizeof(text));
	cr_expect_str_eq(back, text);
	close(fd);
	unlink(path);
}
