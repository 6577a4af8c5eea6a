/* `tide doctor`: exit status and the fields of its --json report. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"

#define RUN_MS 60000

/* ---- a small strict JSON reader: every scalar by its dotted path ---- */
struct field { char path[96]; char value[400]; };
struct doc { struct field f[512]; int n; const char *p; bool bad; };

static void skip_ws(struct doc *d) { while (isspace((unsigned char)*d->p)) d->p++; }

/* A string with its escapes decoded into out (which may be NULL). */
static void parse_string(struct doc *d, char *out, size_t len)
{
	size_t k = 0;

	if (*d->p++ != '"') { d->bad = true; return; }
	while (*d->p && *d->p != '"' && !d->bad) {
		char c = *d->p++;

		if ((unsigned char)c < 0x20) { d->bad = true; break; }  /* raw control char */
		if (c == '\\') {
			c = *d->p++;
			switch (c) {
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case '"': case '\\': case '/': break;
			case 'u': {
				unsigned u = 0;

				for (int i = 0; i < 4; i++, d->p++) {
					if (!isxdigit((unsigned char)*d->p)) d->bad = true;
					u = u * 16 + (unsigned)(isdigit((unsigned char)*d->p) ? *d->p - '0' :
								 (tolower((unsigned char)*d->p) - 'a' + 10));
				}
				c = u < 0x80 ? (char)u : '?';  /* ASCII is all these tests send */
				break;
			}
			default: d->bad = true;
			}
		}
		if (out && k + 1 < len) out[k++] = c;
	}
	if (*d->p++ != '"') d->bad = true;
	if (out) out[k] = 0;
}

static void parse_value(struct doc *d, const char *path)
{
	char sub[96];

	skip_ws(d);
	if (*d->p == '{' || *d->p == '[') {
		char close = *d->p == '{' ? '}' : ']';
		int i = 0;

		d->p++;
		skip_ws(d);
		if (*d->p == close) {
			d->p++;
			i = -1;
		}
		for (; i >= 0 && !d->bad; i++) {
			char key[64];

			skip_ws(d);
			if (close == '}') {
				parse_string(d, key, sizeof(key));
				skip_ws(d);
				if (*d->p++ != ':') d->bad = true;
				snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", key);
			} else {
				snprintf(sub, sizeof(sub), "%s%s%d", path, *path ? "." : "", i);
			}
			parse_value(d, sub);
			skip_ws(d);
			if (*d->p == ',') { d->p++; continue; }
			if (*d->p++ != close) d->bad = true;
			break;
		}
		if (close == ']' && d->n < 512) {  /* record the length */
			snprintf(d->f[d->n].path, sizeof(d->f[0].path), "%s.length", path);
			snprintf(d->f[d->n++].value, sizeof(d->f[0].value), "%d", i + 1);
		}
		return;
	}
	if (d->n >= 512) { d->bad = true; return; }
	snprintf(d->f[d->n].path, sizeof(d->f[0].path), "%s", path);
	if (*d->p == '"') {
		parse_string(d, d->f[d->n].value, sizeof(d->f[0].value));
	} else {
		size_t k = strspn(d->p, "-+.0123456789eEtruefalsn");

		if (!k || k >= sizeof(d->f[0].value)) { d->bad = true; return; }
		memcpy(d->f[d->n].value, d->p, k);
		d->f[d->n].value[k] = 0;
		d->p += k;
		if (!isdigit((unsigned char)d->f[d->n].value[k - 1]) && strcmp(d->f[d->n].value, "true") &&
		    strcmp(d->f[d->n].value, "false") && strcmp(d->f[d->n].value, "null"))
			d->bad = true;
	}
	d->n++;
}

static const char *get(const struct doc *d, const char *path)
{
	for (int i = 0; i < d->n; i++)
		if (!strcmp(d->f[i].path, path))
			return d->f[i].value;
	return NULL;
}

static void parse(struct doc *d, const char *text)
{
	memset(d, 0, sizeof(*d));
	d->p = text;
	parse_value(d, "");
	skip_ws(d);
	cr_assert(!d->bad && !*d->p, "invalid JSON near offset %ld: %.200s", (long)(d->p - text), text);
}

/* ---- running the command ---- */

/* Run `tide doctor ARGS...` (as `uid` when >= 0); stdout into out. Returns
 * the exit status; fails the test if it does not finish in RUN_MS. */
static int doctor(char *out, size_t len, int uid, const char *const *args)
{
	const char *bin = getenv("TIDE_BIN");
	char *argv[16] = { (char *)bin, "doctor" };
	int pipefd[2], status, pidfd, n = 2;
	size_t used = 0;
	pid_t pid;

	if (!bin)
		cr_skip_test("TIDE_BIN is not set (run through meson test)");
	for (; args && *args && n < 15; args++)
		argv[n++] = (char *)*args;
	cr_assert_eq(pipe2(pipefd, O_CLOEXEC), 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		dup2(pipefd[1], 1);
		if (uid >= 0 && (setgid((gid_t)uid) < 0 || setuid((uid_t)uid) < 0))
			_exit(99);
		execv(bin, argv);
		_exit(98);
	}
	close(pipefd[1]);
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	cr_assert(pidfd >= 0);
	for (;;) {
		struct pollfd pfd = { .fd = pipefd[0], .events = POLLIN };
		ssize_t r;

		if (poll(&pfd, 1, RUN_MS) <= 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			cr_assert_fail("tide doctor did not finish in %d ms: %.*s", RUN_MS, (int)used, out);
		}
		r = read(pipefd[0], out + used, len - 1 - used);
		if (r <= 0)
			break;
		used += (size_t)r;
		cr_assert(used < len - 1, "doctor output too long");
	}
	out[used] = 0;
	close(pipefd[0]);
	{
		struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

		cr_assert_eq(poll(&pfd, 1, RUN_MS), 1, "doctor closed stdout but did not exit");
	}
	close(pidfd);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "doctor died of signal %d", WTERMSIG(status));
	return WEXITSTATUS(status);
}

static char out[1 << 17];
static struct doc doc;

static void expect_str(const char *path, const char *want)
{
	const char *v = get(&doc, path);

	cr_assert(v, "no field %s", path);
	cr_assert_str_eq(v, want, "%s = %s, expected %s", path, v, want);
}

Test(doctor, healthy_machine_json)
{
	const char *args[] = { "--json", "--dir", "/var/tmp", NULL };
	char path[96];
	struct utsname u;
	int status;

	test_require_uffd();
	status = doctor(out, sizeof(out), -1, args);
	parse(&doc, out);
	cr_assert_eq(status, 0, "exit %d: %s", status, out);
	uname(&u);
	expect_str("ok", "true");
	expect_str("reasons.length", "0");
	expect_str("kernel.release", u.release);
	expect_str("userfaultfd.kernel_faults", "true");
	expect_str("userfaultfd.user_mode_only", "false");
	cr_assert(strtoull(get(&doc, "userfaultfd.features"), NULL, 10) & 1, "no WP feature");
	/* The features measured and not used are named as such, whatever the
	 * kernel has: the choice, not the kernel, decides. */
	expect_str("userfaultfd.not_used.length", "1");
	expect_str("userfaultfd.not_used.0", "WP_ASYNC");
	expect_str("io_uring.setup", "ok");
	expect_str("io_uring.fixed_buffers", "ok");
	expect_str("odirect.result", "ok");
	expect_str("odirect.dir", "/var/tmp");
	/* 12 cases x 4 set-ups, each as measured on this kernel. */
	expect_str("hazards.length", "48");
	for (int i = 0; i < 48; i++) {
		const char *o, *e;

		snprintf(path, sizeof(path), "hazards.%d.outcome", i);
		o = get(&doc, path);
		snprintf(path, sizeof(path), "hazards.%d.expected", i);
		e = get(&doc, path);
		cr_assert(o && e);
		if (strcmp(o, "skipped"))
			cr_assert_str_eq(o, e, "hazard %d: %s, expected %s", i, o, e);
	}
	expect_str("writeback.fixed.safe", "true");
	expect_str("writeback.direct.safe", "true");
	expect_str("writeback.auto", "direct");
	/* Wake-ups as the runtime sees them: the kernel's own polling, else a
	 * CPU latency request where one can be made, else keeper threads. */
	{
		long hp = tide__guest_halt_poll(NULL, 0);
		struct tide_options o;
		char want[32], why[160];
		int plan;

		tide_options_init(&o);
		plan = tide__wake_poll_plan(&o, why, sizeof(why));
		snprintf(want, sizeof(want), "%ld", hp);
		expect_str("wakeups.guest_halt_poll_ns", hp < 0 ? "null" : want);
		expect_str("wakeups.keepers_stand_down", plan != TIDE_WAKE_POLL_THREADS ? "true" : "false");
		expect_str("wakeups.wake_poll", tide_wake_poll_name(plan));
		if (hp > 0)
			expect_str("wakeups.wake_poll", "kernel");
		cr_assert(get(&doc, "wakeups.cpuidle_driver"), "no wakeups.cpuidle_driver");
	}
	/* The install thread as a pool would decide it. */
	{
		struct tide_options o;
		char why[160];
		bool used;

		tide_options_init(&o);
		used = tide__installer_plan(&o, why, sizeof(why));
		expect_str("install_thread.used", used ? "true" : "false");
		expect_str("install_thread.why", why);
	}
	/* What a fault costs each way, from the pools' own counts: every way
	 * runs at least one pass over its 8 MiB region (2048 faults) and
	 * checks the bytes; a way that could not run says why. The service
	 * thread always can; the faulting thread where the kernel has SIGBUS. */
	{
		static const char *const ways[] = { "service", "pinned", "signal" };
		uint64_t have = 0;

		for (int i = 0; i < 3; i++) {
			const char *ok, *v;

			snprintf(path, sizeof(path), "fault_cost.%s.ok", ways[i]);
			ok = get(&doc, path);
			cr_assert(ok, "no %s", path);
			if (i == 2 && !(tide__uffd_features(&have) == 0 && (have & UFFD_FEATURE_SIGBUS))) {
				snprintf(path, sizeof(path), "fault_cost.%s.why", ways[i]);
				cr_assert(get(&doc, path) && *get(&doc, path), "no %s", path);
				continue;
			}
			cr_assert_str_eq(ok, "true", "%s: %s", path, out);
			snprintf(path, sizeof(path), "fault_cost.%s.faults", ways[i]);
			v = get(&doc, path);
			cr_assert(v && strtoull(v, NULL, 10) >= 2048, "%s = %s", path, v ? v : "none");
			snprintf(path, sizeof(path), "fault_cost.%s.us", ways[i]);
			v = get(&doc, path);
			cr_assert(v && strtod(v, NULL) > 0 && strtod(v, NULL) < 1e4, "%s = %s", path,
				  v ? v : "none");
		}
	}
}

Test(doctor, human_table)
{
	const char *args[] = { "--dir", "/var/tmp", NULL };

	test_require_uffd();
	cr_assert_eq(doctor(out, sizeof(out), -1, args), 0, "%s", out);
	cr_assert(strstr(out, "verdict: tide can run safely here"), "%s", out);
	cr_assert(strstr(out, "direct-read") && strstr(out, "write-back fixed"), "%s", out);
	cr_assert(strstr(out, "service thread, as placed") && strstr(out, " us  ("), "%s", out);
}

Test(doctor, help_and_usage_errors)
{
	const char *help[] = { "--help", NULL }, *bad[] = { "--frobnicate", NULL };
	const char *extra[] = { "stray", NULL }, *timeout[] = { "--timeout", "-5", NULL };

	cr_assert_eq(doctor(out, sizeof(out), -1, help), 0);
	cr_assert(strstr(out, "usage: tide doctor") && strstr(out, "--json"), "%s", out);
	cr_assert_eq(doctor(out, sizeof(out), -1, bad), 2);
	cr_assert_eq(doctor(out, sizeof(out), -1, extra), 2);
	cr_assert_eq(doctor(out, sizeof(out), -1, timeout), 2);
}

Test(doctor, no_hazards_leaves_the_verdict_unknown)
{
	const char *args[] = { "--json", "--no-hazards", NULL };

	test_require_uffd();
	cr_assert_eq(doctor(out, sizeof(out), -1, args), 0, "%s", out);
	parse(&doc, out);
	cr_assert_null(get(&doc, "hazards.length"));
	cr_assert_null(get(&doc, "writeback.auto"));
	cr_assert(get(&doc, "fault_cost.service.ok"), "%s", out);
}

Test(doctor, no_faults_measures_none)
{
	const char *args[] = { "--json", "--no-hazards", "--no-faults", NULL };

	test_require_uffd();
	cr_assert_eq(doctor(out, sizeof(out), -1, args), 0, "%s", out);
	parse(&doc, out);
	cr_assert_null(get(&doc, "fault_cost.service.ok"), "%s", out);
	expect_str("ok", "true");
}

/* A directory name with quotes, backslashes and control characters must come
 * back intact through the JSON. */
Test(doctor, json_escaping)
{
	char dir[] = "/tmp/tide \"doc\\tor\"\t\x01\nXXXXXX";
	const char *args[] = { "--json", "--no-hazards", "--dir", dir, NULL };

	cr_assert(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	doctor(out, sizeof(out), -1, args);
	rmdir(dir);
	parse(&doc, out);
	expect_str("odirect.dir", dir);
}

/* An ordinary user on a default system: only user-mode faults. The doctor
 * must refuse, say why (EFAULT) and how to fix it. */
Test(doctor, user_mode_only_is_refused)
{
	const char *args[] = { "--json", "--no-hazards", "--dir", "/tmp", NULL };
	struct passwd *pw = getpwnam("nobody");
	const char *r;
	int status;

	if (geteuid() != 0 || !pw)
		cr_skip_test("needs root and a 'nobody' user to drop privileges");
	if (access("/proc/sys/vm/unprivileged_userfaultfd", R_OK) == 0) {
		FILE *f = fopen("/proc/sys/vm/unprivileged_userfaultfd", "r");
		int v = fgetc(f);

		fclose(f);
		if (v == '1')
			cr_skip_test("vm.unprivileged_userfaultfd=1: unprivileged users get kernel faults");
	}
	struct stat st;
	if (stat("/dev/userfaultfd", &st) == 0 && (st.st_mode & S_IROTH) && (st.st_mode & S_IWOTH))
		cr_skip_test("/dev/userfaultfd is world-accessible");
	status = doctor(out, sizeof(out), (int)pw->pw_uid, args);
	if (status == 99)
		cr_skip_test("cannot drop to user nobody");
	if (status == 98 || !out[0])
		cr_skip_test("user nobody cannot run %s (directory permissions)", getenv("TIDE_BIN"));
	parse(&doc, out);
	cr_assert_eq(status, 1, "exit %d: %s", status, out);
	expect_str("ok", "false");
	expect_str("userfaultfd.kernel_faults", "false");
	expect_str("userfaultfd.user_mode_only", "true");
	r = get(&doc, "reasons.0");
	cr_assert(r && strstr(r, "EFAULT") && strstr(r, "/dev/userfaultfd"), "reason: %s", r);
}
