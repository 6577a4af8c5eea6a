/*
 * tide doctor: can this machine run tide safely, and how?
 *
 * Checks, in the order a user would fix them: the kernel, userfaultfd (and
 * whether only user-mode faults are allowed, which would make the app's own
 * syscalls on evicted pages fail with EFAULT), the uffd features, io_uring
 * and its fixed buffers against RLIMIT_MEMLOCK, O_DIRECT in --dir, the guest
 * kernel's halt polling (wake-ups at default placement), and the
 * kernel-layer hazards run live in children with timeouts, from which it
 * derives the verdict for each write-back path, and what a fault costs
 * each way tide serves one (doctor_faults.c; bytes read back wrong are a
 * reason, a way that cannot run is a warning). Exit 0 when tide can run
 * safely, 1 with the reasons otherwise, 2 for a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "cli.h"
#include "doctor_faults.h"
#include "hazard.h"
#include "internal.h"
#include "tide.h"

#define MAX_NOTES 24
#define NOTE_LEN  320

/* uffd features: which tide needs, what for, and the one it measured and
 * chose not to use (the benchmark's rows on it say why). */
static const struct {
	uint64_t bit;
	bool required;
	bool used;
	const char *use;
} features[] = {
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, true, true, "write-protect: dirty tracking and safe write-back" },
	{ UFFD_FEATURE_WP_UNPOPULATED, false, true, "protect pages not yet filled" },
	{ UFFD_FEATURE_MOVE, false, true,
	  "evict dirty pages by moving them out, reuse them for fills (TIDE_RECYCLE)" },
	{ UFFD_FEATURE_WP_ASYNC, false, false,
	  "not used: dirty tracking stays synchronous (docs/design.md, Dirty tracking)" },
	{ UFFD_FEATURE_EVENT_FORK, false, true, "serve regions in fork() children" },
	{ UFFD_FEATURE_THREAD_ID, false, true, "name the faulting thread in diagnostics" },
	{ UFFD_FEATURE_POISON, false, true, "a failed read poisons only its page (SIGBUS)" },
	{ UFFD_FEATURE_SIGBUS, false, true, "serve faults on the faulting thread (TIDE_SIGNAL_FAULTS)" },
};

struct doctor {
	const char *dir;
	int timeout_ms;
	bool json, hazards_on, faults_on;

	struct utsname uts;
	int uffd_syscall, uffd_user_only, uffd_dev;   /* 0 ok, or -errno */
	bool dev_exists;
	long unpriv;                                  /* vm.unprivileged_userfaultfd, -1 unknown */
	uint64_t have;
	int features_err;

	long uring_disabled;                          /* kernel.io_uring_disabled, -1 unknown */
	int uring, fixed;                             /* 0 ok, or -errno */
	uint64_t bounce;
	struct rlimit memlock;

	int odirect;                                  /* 0 ok, or -errno */
	long fs_magic;

	char cpuidle[32];                             /* cpuidle driver, "" unknown */
	long halt_poll;                               /* guest_halt_poll_ns, -1 none */
	int wake_poll;                                /* enum tide_wake_poll a pool would use */
	char wake_why[160];
	bool install_thread;                          /* a pool would have an install thread */
	char install_why[160];

	struct doctor_fault_cost cost[DOCTOR_FAULT_WAYS];

	struct tide__hazard_result hz[TIDE__HZ_COUNT][TIDE__HZ_NMODES];
	bool path_safe[2];                            /* [0] direct, [1] fixed */
	char path_why[2][NOTE_LEN];

	char reasons[MAX_NOTES][NOTE_LEN], warnings[MAX_NOTES][NOTE_LEN];
	int nreasons, nwarnings;
};

static void note(char (*list)[NOTE_LEN], int *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void note(char (*list)[NOTE_LEN], int *n, const char *fmt, ...)
{
	va_list ap;

	if (*n >= MAX_NOTES)
		return;
	va_start(ap, fmt);
	vsnprintf(list[(*n)++], NOTE_LEN, fmt, ap);
	va_end(ap);
}
#define REASON(d, ...) note((d)->reasons, &(d)->nreasons, __VA_ARGS__)
#define WARN(d, ...) note((d)->warnings, &(d)->nwarnings, __VA_ARGS__)

static long read_sysctl(const char *path)
{
	char buf[32] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

	if (fd >= 0)
		close(fd);
	return n > 0 ? strtol(buf, NULL, 10) : -1;
}

/* Open a userfaultfd one way and close it: 0 or -errno. */
static int try_uffd_syscall(int flags)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | flags);

	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

static int try_uffd_dev(bool *exists)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC), fd, err;

	*exists = dev >= 0 || errno != ENOENT;
	if (dev < 0)
		return -errno;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	err = fd < 0 ? -errno : 0;
	if (fd >= 0)
		close(fd);
	close(dev);
	return err;
}

static void check_uffd(struct doctor *d)
{
	bool kernel_faults;

	d->uffd_syscall = try_uffd_syscall(0);
	d->uffd_user_only = try_uffd_syscall(UFFD_USER_MODE_ONLY);
	d->uffd_dev = try_uffd_dev(&d->dev_exists);
	d->unpriv = read_sysctl("/proc/sys/vm/unprivileged_userfaultfd");
	kernel_faults = d->uffd_syscall == 0 || d->uffd_dev == 0;
	if (d->uffd_syscall == -ENOSYS && !d->dev_exists) {
		REASON(d, "this kernel has no userfaultfd (build it with CONFIG_USERFAULTFD=y)");
		return;
	}
	if (!kernel_faults && d->uffd_user_only == 0) {
		/* Features still tell the user what they would get once allowed. */
		int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);

		if (fd >= 0) {
			tide__uffd_api(fd, 0, &d->have);
			close(fd);
		}
		REASON(d, "only user-mode faults are allowed (UFFD_USER_MODE_ONLY): the app's own "
		       "syscalls (read(), O_DIRECT, io_uring) on evicted pages would fail with EFAULT; "
		       "fix: give this user read-write access to /dev/userfaultfd, or sysctl "
		       "vm.unprivileged_userfaultfd=1, or run with CAP_SYS_PTRACE");
		return;
	}
	if (!kernel_faults) {
		REASON(d, "userfaultfd is not permitted (%s); fix: read-write access to "
		       "/dev/userfaultfd or sysctl vm.unprivileged_userfaultfd=1",
		       strerror(-d->uffd_syscall));
		return;
	}
	d->features_err = tide__uffd_features(&d->have);
	if (d->features_err < 0) {
		REASON(d, "UFFDIO_API handshake failed: %s", strerror(-d->features_err));
		return;
	}
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
		const char *name = tide__uffd_feature_name((unsigned)__builtin_ctzll(features[i].bit));

		if ((d->have & features[i].bit) || !features[i].used)
			continue;
		if (features[i].required)
			REASON(d, "userfaultfd lacks %s (%s; Linux 5.7+)", name, features[i].use);
		else
			WARN(d, "userfaultfd lacks %s: tide cannot %s", name, features[i].use);
	}
}

/* The bounce size a pool would register with the current TIDE_* settings
 * (with shards, each registers its share). */
static uint64_t pool_bounce(void)
{
	struct tide_options o;
	unsigned n;

	tide_options_init(&o);
	n = o.service_threads;
	return (uint64_t)n * (o.bounce ? o.bounce / n : tide__default_bounce(o.budget / n));
}

static void check_uring(struct doctor *d)
{
	struct io_uring ring;
	struct iovec iov;
	void *mem;

	d->uring_disabled = read_sysctl("/proc/sys/kernel/io_uring_disabled");
	d->bounce = pool_bounce();
	getrlimit(RLIMIT_MEMLOCK, &d->memlock);
	d->fixed = -EAGAIN;
	d->uring = io_uring_queue_init(4, &ring, 0);
	if (d->uring < 0) {
		REASON(d, "io_uring is unavailable (%s)%s", strerror(-d->uring),
		       d->uring_disabled > 0 ? "; sysctl kernel.io_uring_disabled=0 enables it" : "");
		return;
	}
	/* The fixed path registers runtime-owned memory only: try that size. */
	mem = mmap(NULL, d->bounce, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		d->fixed = -errno;
	} else {
		iov = (struct iovec){ mem, d->bounce };
		d->fixed = io_uring_register_buffers(&ring, &iov, 1);
		munmap(mem, d->bounce);
	}
	io_uring_queue_exit(&ring);
	if (d->fixed < 0) {
		char b[32];

		REASON(d, "cannot register %s of io_uring fixed buffers (%s); RLIMIT_MEMLOCK is %s: "
		       "raise it (ulimit -l) or lower TIDE_BOUNCE", cli_format_bytes(d->bounce, b, sizeof(b)),
		       strerror(-d->fixed),
		       d->memlock.rlim_cur == RLIM_INFINITY ? "unlimited" : "lower than that");
	}
}

static void check_odirect(struct doctor *d)
{
	char path[4096];
	struct statfs sfs;
	void *buf = NULL;
	int fd;

	snprintf(path, sizeof(path), "%s/.tide-doctor-XXXXXX", d->dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		d->odirect = -errno;
		WARN(d, "cannot create a file in %s: %s", d->dir, strerror(errno));
		return;
	}
	if (fstatfs(fd, &sfs) == 0)
		d->fs_magic = (long)sfs.f_type;
	close(fd);
	fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	unlink(path);
	d->odirect = fd < 0 ? -errno : 0;
	if (fd >= 0 && posix_memalign(&buf, 4096, 4096) == 0) {
		memset(buf, 0, 4096);
		if (pwrite(fd, buf, 4096, 0) != 4096)
			d->odirect = -errno;
	}
	free(buf);
	if (fd >= 0)
		close(fd);
	if (d->odirect < 0)
		WARN(d, "%s does not support O_DIRECT (%s): file stores there go through the page "
		     "cache (TIDE_ODIRECT=0)", d->dir, strerror(-d->odirect));
}

/*
 * Wake-ups: a fault the service thread serves wakes a thread on the other
 * vCPU twice. A vCPU that halts the moment it idles takes ~50-100 us to
 * wake on a VM; the guest kernel's haltpoll driver can poll first, and
 * when it does not, tide keeps idle CPUs polling while faults flow
 * (TIDE_WAKE_POLL_US): by a CPU latency request where it may make one
 * (TIDE_WAKE_QOS), else by keeper threads, half as fast here.
 */
static void check_wakeups(struct doctor *d)
{
	struct tide_options o;

	d->halt_poll = tide__guest_halt_poll(d->cpuidle, sizeof(d->cpuidle));
	tide_options_init(&o);
	d->wake_poll = tide__wake_poll_plan(&o, d->wake_why, sizeof(d->wake_why));
	if (d->halt_poll == 0 && d->wake_poll == TIDE_WAKE_POLL_THREADS)
		WARN(d, "the guest kernel's halt polling is off (haltpoll, guest_halt_poll_ns=0): an idle "
		     "vCPU halts at once, and a fault at default placement wakes two. Wake polling "
		     "uses %s, about half as fast as a CPU latency request (TIDE_WAKE_QOS: give this "
		     "user write access to /dev/cpu_dma_latency) or the kernel's own polling (as root: "
		     "echo 200000 > /sys/module/haltpoll/parameters/guest_halt_poll_ns)", d->wake_why);
}

/* Whether a pool here would put read-ahead in on an install thread, and why. */
static void check_install_thread(struct doctor *d)
{
	struct tide_options o;

	tide_options_init(&o);
	d->install_thread = tide__installer_plan(&o, d->install_why, sizeof(d->install_why));
}

/* What a 4 KiB fault costs here each way; the advice when the default way
 * is far from the best one a program could choose. */
static void check_faults(struct doctor *d)
{
	const struct doctor_fault_cost *sv = &d->cost[DOCTOR_FAULT_SERVICE];
	const struct doctor_fault_cost *sg = &d->cost[DOCTOR_FAULT_SIGNAL];

	doctor_faults_measure(d->cost, 0.2);
	for (enum doctor_fault_way w = 0; w < DOCTOR_FAULT_WAYS; w++)
		if (d->cost[w].wrong)
			REASON(d, "faults served by the %s: %s", doctor_fault_way_what(w), d->cost[w].why);
		else if (d->cost[w].err)
			WARN(d, "the fault cost (%s) could not be measured: %s", doctor_fault_way_name(w),
			     d->cost[w].why);
	if (!sv->err && !sg->err && sv->us > 1.3 * sg->us)
		WARN(d, "a fault costs %.1f us served by the service thread here, %.1f us on the "
		     "faulting thread: a program making no system call on its mappings may set "
		     "TIDE_SIGNAL_FAULTS=1; one whose threads stay on their CPUs may pin the service "
		     "thread beside them (TIDE_SERVICE_CPU, TIDE_SERVICE_THREADS)", sv->us, sg->us);
}

/* Every case in every set-up; a path is safe when each case it uses completes,
 * moves the right bytes and keeps the page write-protected. */
static void run_hazards(struct doctor *d)
{
	static const char *const path_names[2] = { "direct", "fixed" };

	for (int p = 0; p < 2; p++) {
		d->path_safe[p] = true;
		snprintf(d->path_why[p], NOTE_LEN, "every operation it uses completes here");
	}
	for (unsigned h = 0; h < TIDE__HZ_COUNT; h++) {
		for (unsigned m = 0; m < TIDE__HZ_NMODES; m++) {
			struct tide__hazard_result *r = &d->hz[h][m];
			unsigned paths = tide__hazard_paths(h);
			bool bad;
			/* Probe where files will live, unless it cannot do O_DIRECT. */
			int ret = tide__hazard_run(h, m, d->odirect == 0 ? d->dir : NULL,
						   d->timeout_ms, r);

			if (ret < 0) {
				r->outcome = TIDE__HZ_SKIPPED;
				r->err = ret;
				snprintf(r->detail, sizeof(r->detail), "probe failed: %s", strerror(-ret));
			}
			if (r->outcome == TIDE__HZ_SKIPPED) {
				/* Huge pages are optional; a small-page case that cannot
				 * run leaves its paths unproven. */
				if (!(m & TIDE__HZ_THP) && paths)
					for (int p = 0; p < 2; p++)
						if (paths & (1u << p) && d->path_safe[p]) {
							d->path_safe[p] = false;
							snprintf(d->path_why[p], NOTE_LEN, "unproven: %s (%s) "
								 "could not run: %s", tide__hazard_name(h),
								 tide__hazard_mode_name(m), r->detail);
						}
				continue;
			}
			if (r->outcome != tide__hazard_expected(h, m))
				WARN(d, "%s (%s) %s here but completes/blocks differently on 6.18: %s",
				     tide__hazard_name(h), tide__hazard_mode_name(m),
				     tide__hazard_outcome_name(r->outcome), r->detail);
			bad = r->outcome != TIDE__HZ_COMPLETES ||
			      (h != TIDE__HZ_DONTNEED && (r->data_ok == 0 || r->wp_after == 0));
			for (int p = 0; p < 2; p++)
				if ((paths & (1u << p)) && bad && d->path_safe[p]) {
					d->path_safe[p] = false;
					snprintf(d->path_why[p], NOTE_LEN, "%s (%s) %s: %s",
						 tide__hazard_name(h), tide__hazard_mode_name(m),
						 tide__hazard_outcome_name(r->outcome), r->detail);
				}
		}
	}
	if (!d->path_safe[1] && !d->path_safe[0])
		REASON(d, "no write-back path is safe here: %s: %s; %s: %s", path_names[0],
		       d->path_why[0], path_names[1], d->path_why[1]);
	else if (!d->path_safe[1])
		WARN(d, "write-back fixed is not safe here: %s", d->path_why[1]);
}

static const char *err_text(int err)
{
	return err ? strerror(-err) : "ok";
}

static const char *auto_choice(const struct doctor *d)
{
	if (!d->hazards_on)
		return "unknown";
	return d->path_safe[0] ? "direct" : d->path_safe[1] ? "fixed" : "none";
}

static void print_human(const struct doctor *d)
{
	char b1[32], b2[32];

	printf("tide doctor %d.%d.%d\n\n", TIDE_VERSION_MAJOR, TIDE_VERSION_MINOR, TIDE_VERSION_PATCH);
	printf("kernel                      %s %s\n", d->uts.release, d->uts.machine);
	printf("userfaultfd(2)              %s\n", err_text(d->uffd_syscall));
	printf("  user-mode-only faults     %s\n", err_text(d->uffd_user_only));
	printf("/dev/userfaultfd            %s\n", d->dev_exists ? err_text(d->uffd_dev) : "absent");
	printf("vm.unprivileged_userfaultfd %ld\n", d->unpriv);
	printf("uffd features               %#llx\n", (unsigned long long)d->have);
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		printf("  %-25s %-8s %s%s\n",
		       tide__uffd_feature_name((unsigned)__builtin_ctzll(features[i].bit)),
		       (d->have & features[i].bit) ? "yes" : "MISSING", features[i].use,
		       features[i].required ? " (required)" : "");
	printf("io_uring                    %s (kernel.io_uring_disabled=%ld)\n", err_text(d->uring),
	       d->uring_disabled);
	printf("  fixed buffers, %-10s %s (RLIMIT_MEMLOCK %s%s)\n",
	       cli_format_bytes(d->bounce, b1, sizeof(b1)), err_text(d->fixed),
	       d->memlock.rlim_cur == RLIM_INFINITY ? "unlimited" :
	       cli_format_bytes(d->memlock.rlim_cur, b2, sizeof(b2)),
	       d->fixed == 0 && d->memlock.rlim_cur < d->bounce ? "; over it by CAP_IPC_LOCK" : "");
	printf("O_DIRECT in %-15s %s (fs magic %#lx)\n", d->dir, err_text(d->odirect), d->fs_magic);
	printf("cpuidle driver              %s\n", d->cpuidle[0] ? d->cpuidle : "unknown");
	if (d->halt_poll > 0)
		printf("  guest halt polling        on, %ld ns\n", d->halt_poll);
	else if (d->halt_poll == 0)
		printf("  guest halt polling        off\n");
	printf("wake polling                %s: %s\n", tide_wake_poll_name(d->wake_poll), d->wake_why);
	printf("install thread              %s\n", d->install_why);
	if (d->faults_on) {
		printf("fault, 4 KiB, from memory   (each way 0.2 s; mean as the app saw it)\n");
		for (int w = 0; w < DOCTOR_FAULT_WAYS; w++) {
			const struct doctor_fault_cost *c = &d->cost[w];
			const char *what = doctor_fault_way_what((enum doctor_fault_way)w);

			if (c->err)
				printf("  %-27s unavailable: %s\n", what, c->why);
			else
				printf("  %-27s %5.1f us  (%.0fk faults/s)\n", what, c->us, 1e3 / c->us);
		}
	}

	if (d->hazards_on) {
		printf("\nhazards: a thread touching its own write-protected page (timeout %d ms)\n",
		       d->timeout_ms);
		printf("  %-18s", "");
		for (unsigned m = 0; m < TIDE__HZ_NMODES; m++)
			printf(" %-10s", tide__hazard_mode_name(m));
		printf(" path\n");
		for (unsigned h = 0; h < TIDE__HZ_COUNT; h++) {
			unsigned paths = tide__hazard_paths(h);

			printf("  %-18s", tide__hazard_name(h));
			for (unsigned m = 0; m < TIDE__HZ_NMODES; m++) {
				enum tide__hazard_outcome o = d->hz[h][m].outcome;

				printf(" %-9s%c", tide__hazard_outcome_name(o),
				       o != TIDE__HZ_SKIPPED && o != tide__hazard_expected(h, m) ? '!' : ' ');
			}
			printf(" %s%s\n", (paths & TIDE__HZ_PATH_DIRECT) ? "direct " : "",
			       (paths & TIDE__HZ_PATH_FIXED) ? "fixed" : "");
		}
		printf("  (! = differs from Linux 6.18; `blocks` = a lone service thread would hang)\n");
		printf("\nwrite-back direct            %s: %s\n", d->path_safe[0] ? "safe" : "UNSAFE",
		       d->path_why[0]);
		printf("write-back fixed             %s: %s\n", d->path_safe[1] ? "safe" : "UNSAFE",
		       d->path_why[1]);
		printf("write-back auto would pick   %s\n", auto_choice(d));
	}
	for (int i = 0; i < d->nwarnings; i++)
		printf("\nwarning: %s", d->warnings[i]);
	for (int i = 0; i < d->nreasons; i++)
		printf("\nPROBLEM: %s", d->reasons[i]);
	printf("%s\nverdict: %s\n", d->nwarnings || d->nreasons ? "\n" : "",
	       d->nreasons ? "tide cannot run safely here" : "tide can run safely here");
}

static void print_json(const struct doctor *d)
{
	struct cli_json j;
	char ver[32];

	snprintf(ver, sizeof(ver), "%d.%d.%d", TIDE_VERSION_MAJOR, TIDE_VERSION_MINOR,
		 TIDE_VERSION_PATCH);
	cli_json_begin(&j, stdout);
	cli_json_str(&j, "tide_version", ver);
	cli_json_bool(&j, "ok", d->nreasons == 0);
	cli_json_array(&j, "reasons");
	for (int i = 0; i < d->nreasons; i++)
		cli_json_str(&j, NULL, d->reasons[i]);
	cli_json_close(&j);
	cli_json_array(&j, "warnings");
	for (int i = 0; i < d->nwarnings; i++)
		cli_json_str(&j, NULL, d->warnings[i]);
	cli_json_close(&j);

	cli_json_object(&j, "kernel");
	cli_json_str(&j, "release", d->uts.release);
	cli_json_str(&j, "machine", d->uts.machine);
	cli_json_close(&j);

	cli_json_object(&j, "userfaultfd");
	cli_json_str(&j, "syscall", err_text(d->uffd_syscall));
	cli_json_str(&j, "syscall_user_mode_only", err_text(d->uffd_user_only));
	cli_json_str(&j, "dev", d->dev_exists ? err_text(d->uffd_dev) : "absent");
	cli_json_i64(&j, "unprivileged_userfaultfd", d->unpriv);
	cli_json_bool(&j, "kernel_faults", d->uffd_syscall == 0 || d->uffd_dev == 0);
	cli_json_bool(&j, "user_mode_only", d->uffd_syscall && d->uffd_dev && !d->uffd_user_only);
	cli_json_u64(&j, "features", d->have);
	cli_json_array(&j, "missing");
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (!(d->have & features[i].bit))
			cli_json_str(&j, NULL,
				     tide__uffd_feature_name((unsigned)__builtin_ctzll(features[i].bit)));
	cli_json_close(&j);
	cli_json_array(&j, "not_used");
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (!features[i].used)
			cli_json_str(&j, NULL,
				     tide__uffd_feature_name((unsigned)__builtin_ctzll(features[i].bit)));
	cli_json_close(&j);
	cli_json_close(&j);

	cli_json_object(&j, "io_uring");
	cli_json_str(&j, "setup", err_text(d->uring));
	cli_json_i64(&j, "io_uring_disabled", d->uring_disabled);
	cli_json_str(&j, "fixed_buffers", err_text(d->fixed));
	cli_json_u64(&j, "bounce_bytes", d->bounce);
	if (d->memlock.rlim_cur == RLIM_INFINITY)
		cli_json_null(&j, "memlock_limit");
	else
		cli_json_u64(&j, "memlock_limit", d->memlock.rlim_cur);
	cli_json_close(&j);

	cli_json_object(&j, "odirect");
	cli_json_str(&j, "dir", d->dir);
	cli_json_str(&j, "result", err_text(d->odirect));
	cli_json_i64(&j, "fs_magic", d->fs_magic);
	cli_json_close(&j);

	cli_json_object(&j, "wakeups");
	cli_json_str(&j, "cpuidle_driver", d->cpuidle);
	if (d->halt_poll < 0)
		cli_json_null(&j, "guest_halt_poll_ns");
	else
		cli_json_i64(&j, "guest_halt_poll_ns", d->halt_poll);
	cli_json_bool(&j, "keepers_stand_down", d->wake_poll != TIDE_WAKE_POLL_THREADS);
	cli_json_str(&j, "wake_poll", tide_wake_poll_name(d->wake_poll));
	cli_json_str(&j, "wake_poll_why", d->wake_why);
	cli_json_close(&j);

	cli_json_object(&j, "install_thread");
	cli_json_bool(&j, "used", d->install_thread);
	cli_json_str(&j, "why", d->install_why);
	cli_json_close(&j);

	if (d->faults_on) {
		cli_json_object(&j, "fault_cost");
		for (int w = 0; w < DOCTOR_FAULT_WAYS; w++) {
			const struct doctor_fault_cost *c = &d->cost[w];

			cli_json_object(&j, doctor_fault_way_name((enum doctor_fault_way)w));
			cli_json_bool(&j, "ok", c->err == 0);
			if (c->err) {
				cli_json_str(&j, "why", c->why);
			} else {
				cli_json_u64(&j, "faults", c->faults);
				cli_json_double(&j, "us", c->us);
			}
			cli_json_close(&j);
		}
		cli_json_close(&j);
	}

	if (d->hazards_on) {
		cli_json_array(&j, "hazards");
		for (unsigned h = 0; h < TIDE__HZ_COUNT; h++)
			for (unsigned m = 0; m < TIDE__HZ_NMODES; m++) {
				const struct tide__hazard_result *r = &d->hz[h][m];

				cli_json_object(&j, NULL);
				cli_json_str(&j, "name", tide__hazard_name(h));
				cli_json_str(&j, "mode", tide__hazard_mode_name(m));
				cli_json_str(&j, "outcome", tide__hazard_outcome_name(r->outcome));
				cli_json_str(&j, "expected",
					     tide__hazard_outcome_name(tide__hazard_expected(h, m)));
				cli_json_i64(&j, "err", r->err);
				cli_json_u64(&j, "elapsed_us", r->elapsed_us);
				cli_json_str(&j, "detail", r->detail);
				cli_json_close(&j);
			}
		cli_json_close(&j);
		cli_json_object(&j, "writeback");
		cli_json_object(&j, "direct");
		cli_json_bool(&j, "safe", d->path_safe[0]);
		cli_json_str(&j, "why", d->path_why[0]);
		cli_json_close(&j);
		cli_json_object(&j, "fixed");
		cli_json_bool(&j, "safe", d->path_safe[1]);
		cli_json_str(&j, "why", d->path_why[1]);
		cli_json_close(&j);
		cli_json_str(&j, "auto", auto_choice(d));
		cli_json_close(&j);
	}
	cli_json_end(&j);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tide doctor [--json] [--dir DIR] [--timeout MS] [--no-hazards] [--no-faults]\n\n"
		"Checks whether this machine can run tide safely, and how: kernel, userfaultfd\n"
		"access and features, io_uring and fixed buffers, O_DIRECT in DIR, the kernel\n"
		"hazards (run live in child processes) behind each write-back path, and what a\n"
		"4 KiB fault costs served each way tide can serve it.\n\n"
		"  --json         one JSON object on stdout instead of the table\n"
		"  --dir DIR      where files will live (O_DIRECT check, hazard scratch; default .)\n"
		"  --timeout MS   how long an operation may take before it counts as blocked (2000)\n"
		"  --no-hazards   skip the hazard probes (the write-back verdict is then unknown)\n"
		"  --no-faults    skip measuring the fault cost (0.6 s)\n\n"
		"Exit status: 0 tide can run safely, 1 it cannot (reasons printed), 2 usage.\n");
}

int tide_cmd_doctor(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "dir", required_argument, NULL, 'd' },
		{ "timeout", required_argument, NULL, 't' },
		{ "no-hazards", no_argument, NULL, 'n' },
		{ "no-faults", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct doctor *d = calloc(1, sizeof(*d));
	uint64_t v;
	int c, status;

	if (!d) {
		fprintf(stderr, "tide doctor: out of memory\n");
		return 1;
	}
	d->dir = ".";
	d->timeout_ms = 2000;
	d->hazards_on = true;
	d->faults_on = true;
	optind = 1;
	while ((c = getopt_long(argc, argv, "jd:t:nfh", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': d->json = true; break;
		case 'd': d->dir = optarg; break;
		case 'n': d->hazards_on = false; break;
		case 'f': d->faults_on = false; break;
		case 't':
			if (cli_parse_uint("--timeout", optarg, 10, 600000, &v) < 0) {
				free(d);
				return 2;
			}
			d->timeout_ms = (int)v;
			break;
		case 'h': usage(stdout); free(d); return 0;
		default: usage(stderr); free(d); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tide doctor: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		free(d);
		return 2;
	}
	uname(&d->uts);
	check_uffd(d);
	check_uring(d);
	check_odirect(d);
	check_wakeups(d);
	check_install_thread(d);
	/* The hazards need a working write-protecting uffd; without one the
	 * reasons above already say why tide cannot run. */
	if (d->hazards_on && d->nreasons == 0)
		run_hazards(d);
	else
		d->hazards_on = false;
	/* So do the fault costs; measured after the hazards, whose children
	 * are gone by then. */
	if (d->faults_on && d->nreasons == 0)
		check_faults(d);
	else
		d->faults_on = false;
	if (d->json)
		print_json(d);
	else
		print_human(d);
	status = d->nreasons ? 1 : 0;
	free(d);
	return status;
}
