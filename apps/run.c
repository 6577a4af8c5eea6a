/*
 * tide run: run an unmodified program with its big file mappings paged by
 * tide. It puts libtide-preload.so first in LD_PRELOAD, turns its options
 * into the TIDE_* environment (checked against the one options table), runs
 * the program, forwards its exit status, and reports the counters that each
 * of the program's processes appended to a statistics file at exit
 * (TIDE_PRELOAD_STATS). docs/preload.md describes the policy and the limits.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "internal.h"

#define PRELOAD_NAME "libtide-preload.so"

/* Where the library sits beside the binary: the build tree's layout, then
 * the installed one (meson passes bindir -> libdir, and the absolute libdir). */
#ifndef TIDE_PRELOAD_RELDIR
#define TIDE_PRELOAD_RELDIR ""
#endif
#ifndef TIDE_PRELOAD_LIBDIR
#define TIDE_PRELOAD_LIBDIR ""
#endif

struct run_args {
	bool json;
	bool quiet;
	const char *preload;     /* --preload */
	char **argv;             /* the program and its arguments */
};

/* What the program's processes reported, summed (peak and budget: the largest). */
struct run_totals {
	uint64_t processes, paged, unavailable, malformed;
	int unavailable_err;
	uint64_t taken, passed, fallbacks, refused, flush_errors;
#define FIELD(k) uint64_t k;
	TIDE_PRELOAD_COUNTERS(FIELD)
#undef FIELD
	uint64_t peak_resident_bytes, budget;
};

/* The keys of a statistics line that are summed, and where they go. */
static const struct {
	const char *key;
	size_t offset;
} summed[] = {
#define KEY(k) { #k, offsetof(struct run_totals, k) },
	KEY(taken) KEY(passed) KEY(fallbacks) KEY(refused) KEY(flush_errors)
	TIDE_PRELOAD_COUNTERS(KEY)
#undef KEY
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tide run [OPTIONS] [--json] -- PROGRAM [ARGS...]\n"
		"Run PROGRAM with its big file mappings paged by tide (LD_PRELOAD of "
		PRELOAD_NAME "),\nthen report tide's counters.\n\n"
		"  --pool BYTES        memory budget of each process's pool (TIDE_BUDGET, default 256M);\n"
		"                      --budget is the same\n"
		"  --page-size BYTES   tide page size, 4K..2M (TIDE_PAGE_SIZE, default 64K)\n"
		"  --writeback PATH    fixed, direct or auto (TIDE_WRITEBACK, default auto)\n"
		"  --min BYTES         smallest file mapping tide takes (TIDE_PRELOAD_MIN, default 64M)\n"
		"  -o, --option KEY=VALUE\n"
		"                      any TIDE_* option, KEY with or without TIDE_ (tide options lists them)\n"
		"  --preload PATH      the " PRELOAD_NAME " to use (default: the one beside this tide)\n"
		"  --json              print the summary as one JSON object, the last line on stdout\n"
		"  --quiet             print no summary\n"
		"  --help              this text\n\n"
		"Exit status: the program's, 128+N if a signal N killed it; 127 it could not be\n"
		"found, 126 not run; 2 bad arguments, 1 tide run itself failed.\n"
		"docs/preload.md says which mappings tide takes and what it refuses.\n");
}

/* Check `value` against the options table and put it in the environment. */
static int set_option(const char *flag, const char *name, const char *value)
{
	const struct tide__option *opt = tide__option_find(name);

	if (!opt) {
		fprintf(stderr, "tide run: %s: there is no option %s (`tide options` lists them)\n",
			flag, name);
		return -EINVAL;
	}
	if (!strcmp(opt->name, "TIDE_PRELOAD_STATS")) {
		fprintf(stderr, "tide run: %s: TIDE_PRELOAD_STATS is set by tide run itself\n", flag);
		return -EINVAL;
	}
	if (tide__option_valid(opt, value) < 0) {
		fprintf(stderr, "tide run: %s \"%s\" is not a valid %s (%s)\n", flag, value,
			opt->name, opt->help);
		return -EINVAL;
	}
	if (setenv(opt->name, value, 1) < 0) {
		fprintf(stderr, "tide run: cannot set %s: %s\n", opt->name, strerror(errno));
		return -errno;
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct run_args *a)
{
	static const struct option longopts[] = {
		{ "pool", required_argument, NULL, 'p' },
		{ "budget", required_argument, NULL, 'p' },
		{ "page-size", required_argument, NULL, 'P' },
		{ "writeback", required_argument, NULL, 'w' },
		{ "min", required_argument, NULL, 'm' },
		{ "option", required_argument, NULL, 'o' },
		{ "preload", required_argument, NULL, 'L' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	char key[64];
	const char *eq;
	int c, ret = 0;

	memset(a, 0, sizeof(*a));
	optind = 1;
	/* '+': options end at the program's name, whose own options are its. */
	while ((c = getopt_long(argc, argv, "+o:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			ret = set_option("--pool", "TIDE_BUDGET", optarg);
			break;
		case 'P':
			ret = set_option("--page-size", "TIDE_PAGE_SIZE", optarg);
			break;
		case 'w':
			ret = set_option("--writeback", "TIDE_WRITEBACK", optarg);
			break;
		case 'm':
			ret = set_option("--min", "TIDE_PRELOAD_MIN", optarg);
			break;
		case 'o':
			eq = strchr(optarg, '=');
			if (!eq || eq == optarg || (size_t)(eq - optarg) >= sizeof(key)) {
				fprintf(stderr, "tide run: -o \"%s\" is not KEY=VALUE (e.g. -o "
					"TIDE_READ_AHEAD=0)\n", optarg);
				return -EINVAL;
			}
			memcpy(key, optarg, (size_t)(eq - optarg));
			key[eq - optarg] = 0;
			ret = set_option("-o", key, eq + 1);
			break;
		case 'L':
			a->preload = optarg;
			break;
		case 'j':
			a->json = true;
			break;
		case 'q':
			a->quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -EINVAL;
		}
		if (ret < 0)
			return ret;
	}
	if (optind >= argc) {
		fprintf(stderr, "tide run: no program given (tide run [OPTIONS] -- PROGRAM [ARGS...])\n");
		return -EINVAL;
	}
	a->argv = argv + optind;
	return 0;
}

/* The options as the program's pools will see them must make a pool. */
static int check_pool_options(void)
{
	struct tide_options o;

	tide_options_init(&o);
	if (!o.service_threads)
		o.service_threads = 1;
	if (tide__options_check(&o) < 0) {
		fprintf(stderr, "tide run: these options cannot make a pool: %s\n", tide_last_error());
		return -EINVAL;
	}
	return 0;
}

static bool usable(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, R_OK) == 0;
}

/* The libtide-preload.so of this build or installation, as an absolute path. */
static int find_preload(const char *given, char *out, size_t len)
{
	char exe[PATH_MAX], tried[3][PATH_MAX + 64];
	ssize_t n;
	char *slash;
	int ntried = 0;

	if (given) {
		if (!usable(given) || !realpath(given, out)) {
			fprintf(stderr, "tide run: --preload %s: not a readable file\n", given);
			return -ENOENT;
		}
		goto check;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
		snprintf(tried[ntried++], sizeof(tried[0]), "%s/../runtime/" PRELOAD_NAME, exe);
		if (TIDE_PRELOAD_RELDIR[0])
			snprintf(tried[ntried++], sizeof(tried[0]), "%s/%s/" PRELOAD_NAME, exe,
				 TIDE_PRELOAD_RELDIR);
	}
	if (TIDE_PRELOAD_LIBDIR[0])
		snprintf(tried[ntried++], sizeof(tried[0]), "%s/" PRELOAD_NAME, TIDE_PRELOAD_LIBDIR);
	for (int i = 0; i < ntried; i++)
		if (usable(tried[i]) && realpath(tried[i], out))
			goto check;
	fprintf(stderr, "tide run: cannot find " PRELOAD_NAME " (looked for");
	for (int i = 0; i < ntried; i++)
		fprintf(stderr, "%s %s", i ? "," : "", tried[i]);
	fprintf(stderr, "); give it with --preload PATH\n");
	return -ENOENT;
check:
	/* LD_PRELOAD separates its entries with spaces and colons. */
	if (strlen(out) >= len || strpbrk(out, " :\t")) {
		fprintf(stderr, "tide run: the path %s cannot go in LD_PRELOAD (it has a space or "
			"a colon)\n", out);
		return -EINVAL;
	}
	return 0;
}

/* LD_PRELOAD with the library first, keeping what the user had. */
static int set_preload(const char *lib)
{
	const char *old = getenv("LD_PRELOAD");
	size_t len = strlen(lib) + (old ? strlen(old) : 0) + 2;
	char *v = malloc(len);
	int ret;

	if (!v)
		return -ENOMEM;
	snprintf(v, len, "%s%s%s", lib, old && *old ? ":" : "", old && *old ? old : "");
	ret = setenv("LD_PRELOAD", v, 1) < 0 ? -errno : 0;
	free(v);
	return ret;
}

/*
 * The statistics file: created and unlinked at once, so nothing is left
 * behind whatever happens; the program's processes reach it through this
 * process's descriptor, /proc/PID/fd/N, while tide run waits.
 */
static int stats_file(void)
{
	const char *dir = getenv("TMPDIR");
	char path[PATH_MAX], name[64];
	int fd;

	snprintf(path, sizeof(path), "%s/tide-run-XXXXXX", dir && *dir ? dir : "/tmp");
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "tide run: cannot create a statistics file in %s: %s\n",
			dir && *dir ? dir : "/tmp", strerror(errno));
		return -errno;
	}
	unlink(path);
	snprintf(name, sizeof(name), "/proc/%d/fd/%d", (int)getpid(), fd);
	if (setenv("TIDE_PRELOAD_STATS", name, 1) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

static void parse_line(char *line, struct run_totals *t)
{
	uint64_t peak = 0, budget = 0;
	long pool = 0;
	char *save = NULL, *tok;

	if (strncmp(line, "tide-preload 1 ", 15)) {
		t->malformed++;
		return;
	}
	t->processes++;
	for (tok = strtok_r(line + 15, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
		char *eq = strchr(tok, '=');

		if (!eq)
			continue;
		*eq++ = 0;
		if (!strcmp(tok, "pool"))
			pool = strtol(eq, NULL, 10);
		else if (!strcmp(tok, "peak_resident_bytes"))
			peak = strtoull(eq, NULL, 10);
		else if (!strcmp(tok, "budget"))
			budget = strtoull(eq, NULL, 10);
		for (size_t i = 0; i < sizeof(summed) / sizeof(summed[0]); i++)
			if (!strcmp(tok, summed[i].key))
				*(uint64_t *)((char *)t + summed[i].offset) += strtoull(eq, NULL, 10);
	}
	if (pool > 0)
		t->paged++;
	if (pool < 0) {
		t->unavailable++;
		t->unavailable_err = (int)-pool;
	}
	if (peak > t->peak_resident_bytes)
		t->peak_resident_bytes = peak;
	if (budget > t->budget)
		t->budget = budget;
}

static void read_totals(int fd, struct run_totals *t)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0;
	int dfd = dup(fd);

	memset(t, 0, sizeof(*t));
	if (dfd < 0 || !(f = fdopen(dfd, "r"))) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	rewind(f);
	while (getline(&line, &cap, f) > 0)
		parse_line(line, t);
	free(line);
	fclose(f);
}

/* Signals for the program while tide run waits for it. */
static volatile pid_t child_pid;

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

/* Run the program; returns its wait status, or -errno (and *exec_err) if it
 * could not be started. */
static int run_program(char **argv, int *exec_err)
{
	struct sigaction ign = { .sa_handler = SIG_IGN }, fwd = { .sa_handler = forward_signal };
	struct sigaction old_int, old_quit, old_term, old_hup;
	int errpipe[2], status = 0, err = 0;
	ssize_t n;
	pid_t pid;

	*exec_err = 0;
	if (pipe2(errpipe, O_CLOEXEC) < 0)
		return -errno;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		err = -errno;
		close(errpipe[0]);
		close(errpipe[1]);
		return err;
	}
	if (pid == 0) {
		execvp(argv[0], argv);
		err = errno;
		/* The parent reads why; the pipe closes on a successful exec. */
		if (write(errpipe[1], &err, sizeof(err)) < 0)
			_exit(127);
		_exit(127);
	}
	close(errpipe[1]);
	/* As system() does: ^C and ^\ reach the program from the terminal,
	 * and tide run stays to report; TERM and HUP are passed on. */
	child_pid = pid;
	sigaction(SIGINT, &ign, &old_int);
	sigaction(SIGQUIT, &ign, &old_quit);
	sigaction(SIGTERM, &fwd, &old_term);
	sigaction(SIGHUP, &fwd, &old_hup);
	do
		n = read(errpipe[0], &err, sizeof(err));
	while (n < 0 && errno == EINTR);
	close(errpipe[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	child_pid = 0;
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGQUIT, &old_quit, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGHUP, &old_hup, NULL);
	if (n == (ssize_t)sizeof(err)) {
		*exec_err = err;
		return -err;
	}
	return status;
}

static void report_text(const char *prog, int status, uint64_t ns, const struct run_totals *t)
{
	char a[32], b[32], c[32], waits[96] = "";

	cli_format_duration(ns, a, sizeof(a));
	if (WIFSIGNALED(status))
		fprintf(stderr, "tide run: %s was killed by signal %d (%s) after %s\n", prog,
			WTERMSIG(status), strsignal(WTERMSIG(status)), a);
	else
		fprintf(stderr, "tide run: %s exited with status %d after %s\n", prog,
			WEXITSTATUS(status), a);
	if (!t->processes) {
		fprintf(stderr, "tide run: no statistics came back: the program did not load "
			PRELOAD_NAME " (statically linked, setuid, or it cleared LD_PRELOAD),\n"
			"          or it ended without exit() (_exit, a signal, exec)\n");
		return;
	}
	fprintf(stderr, "tide run: %llu mapping%s paged by tide, %llu file mapping%s left to the "
		"kernel, %llu process%s (%llu with a pool)\n",
		(unsigned long long)t->taken, t->taken == 1 ? "" : "s",
		(unsigned long long)(t->passed + t->fallbacks), t->passed + t->fallbacks == 1 ? "" : "s",
		(unsigned long long)t->processes, t->processes == 1 ? "" : "es",
		(unsigned long long)t->paged);
	if (t->unavailable)
		fprintf(stderr, "tide run: tide could not run in %llu process%s (%s): the kernel "
			"mapped their files\n", (unsigned long long)t->unavailable,
			t->unavailable == 1 ? "" : "es", strerror(t->unavailable_err));
	if (!t->paged)
		return;
	if (t->faults_signal)
		snprintf(waits, sizeof(waits), ", which waited %llu times, %llu of them asleep",
			 (unsigned long long)t->signal_waits, (unsigned long long)t->signal_sleeps);
	fprintf(stderr, "tide run: faults %llu (read %llu, write %llu, write-protect %llu; "
		"on the faulting thread %llu%s); pages filled %llu (read ahead %llu, of them put in "
		"by the install thread %llu; holes %llu), %s read\n",
		(unsigned long long)t->faults, (unsigned long long)t->faults_read,
		(unsigned long long)t->faults_write, (unsigned long long)t->faults_wp,
		(unsigned long long)t->faults_signal, waits,
		(unsigned long long)t->fills, (unsigned long long)t->prefetched,
		(unsigned long long)t->fills_offloaded, (unsigned long long)t->fills_zero,
		cli_format_bytes(t->bytes_read, a, sizeof(a)));
	if (t->spin_rests == 1)
		fprintf(stderr, "tide run: the polling service thread gave its CPU to a busy thread "
			"once (TIDE_SPIN_US)\n");
	else if (t->spin_rests)
		fprintf(stderr, "tide run: the polling service thread gave its CPU to busy threads "
			"%llu times (TIDE_SPIN_US)\n", (unsigned long long)t->spin_rests);
	fprintf(stderr, "tide run: evictions %llu (dirty %llu, of them moved out %llu; their pages "
		"reused for %llu fills); pages written back %llu, %s; store flushes %llu\n",
		(unsigned long long)t->evictions, (unsigned long long)t->evictions_dirty,
		(unsigned long long)t->evictions_moved, (unsigned long long)t->fills_recycled,
		(unsigned long long)t->writebacks,
		cli_format_bytes(t->bytes_written, b, sizeof(b)), (unsigned long long)t->flushes);
	fprintf(stderr, "tide run: peak resident %s of a %s budget%s\n",
		cli_format_bytes(t->peak_resident_bytes, a, sizeof(a)),
		cli_format_bytes(t->budget, c, sizeof(c)), t->paged > 1 ? " (the largest process)" : "");
	if (t->writeback_errors || t->read_errors || t->refused || t->flush_errors || t->fallbacks)
		fprintf(stderr, "tide run: write errors %llu, read errors %llu, calls refused %llu, "
			"exit flushes failed %llu, mappings tide could not take %llu\n",
			(unsigned long long)t->writeback_errors, (unsigned long long)t->read_errors,
			(unsigned long long)t->refused, (unsigned long long)t->flush_errors,
			(unsigned long long)t->fallbacks);
}

static void report_json(const char *prog, int status, uint64_t ns, const struct run_totals *t)
{
	struct cli_json j;

	cli_json_begin(&j, stdout);
	cli_json_str(&j, "program", prog);
	if (WIFSIGNALED(status)) {
		cli_json_null(&j, "exit_status");
		cli_json_i64(&j, "signal", WTERMSIG(status));
	} else {
		cli_json_i64(&j, "exit_status", WEXITSTATUS(status));
		cli_json_null(&j, "signal");
	}
	cli_json_double(&j, "seconds", ns / 1e9);
	cli_json_u64(&j, "processes", t->processes);
	cli_json_u64(&j, "processes_paged", t->paged);
	cli_json_u64(&j, "processes_unavailable", t->unavailable);
	cli_json_u64(&j, "mappings_taken", t->taken);
	cli_json_u64(&j, "mappings_passed", t->passed);
	cli_json_u64(&j, "mappings_fallback", t->fallbacks);
	cli_json_u64(&j, "calls_refused", t->refused);
	cli_json_u64(&j, "exit_flush_errors", t->flush_errors);
#define COUNTER(k) cli_json_u64(&j, #k, t->k);
	TIDE_PRELOAD_COUNTERS(COUNTER)
#undef COUNTER
	cli_json_u64(&j, "peak_resident_bytes", t->peak_resident_bytes);
	cli_json_u64(&j, "budget", t->budget);
	cli_json_end(&j);
}

int tide_cmd_run(int argc, char **argv)
{
	char lib[PATH_MAX];
	struct run_totals t;
	struct run_args a;
	int ret, fd, status, exec_err;
	uint64_t t0;

	ret = parse_args(argc, argv, &a);
	if (ret)
		return ret > 0 ? 0 : 2;
	if (check_pool_options() < 0)
		return 2;
	if (find_preload(a.preload, lib, sizeof(lib)) < 0)
		return a.preload ? 2 : 1;
	if (set_preload(lib) < 0) {
		fprintf(stderr, "tide run: cannot set LD_PRELOAD: %s\n", strerror(ENOMEM));
		return 1;
	}
	fd = stats_file();
	if (fd < 0)
		return 1;
	t0 = cli_now_ns();
	status = run_program(a.argv, &exec_err);
	if (status < 0) {
		close(fd);
		if (exec_err) {
			fprintf(stderr, "tide run: cannot run \"%s\": %s\n", a.argv[0], strerror(exec_err));
			return exec_err == ENOENT ? 127 : 126;
		}
		fprintf(stderr, "tide run: cannot start \"%s\": %s\n", a.argv[0], strerror(-status));
		return 1;
	}
	read_totals(fd, &t);
	close(fd);
	if (a.json)
		report_json(a.argv[0], status, cli_now_ns() - t0, &t);
	else if (!a.quiet)
		report_text(a.argv[0], status, cli_now_ns() - t0, &t);
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}
