/*
 * Kernel-layer hazard probes (see hazard.h): one operation on a page of the
 * caller's own uffd-registered, write-protected region, run in a child.
 *
 * The child sets the page up, starts the operation on a second thread and
 * watches the uffd with poll(). It never serves the uffd: it only notes that
 * a message is pending, so the operation is exactly as stuck as it would be
 * in a lone service thread, and the child exits at once with the verdict
 * instead of waiting out the timeout. The parent's pidfd timeout is the
 * backstop for an operation that hangs without raising a uffd message.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hazard.h"
#include "uffd.h"

#define DETAIL(res, ...) snprintf((res)->detail, sizeof((res)->detail), __VA_ARGS__)
#define SMALL_PAGE  4096ul
#define HUGE_PAGE   (2ul << 20)
#define SPLICE_MAX  (64ul << 10)   /* the default pipe holds 16 pages */
#define PM_UFFD_WP  (1ull << 57)   /* /proc/PID/pagemap: pte is uffd-wp */
#define SETUP_MS    10000          /* fork, THP allocation, io_uring set-up */
#define KILL_MS     5000           /* then a killed child is reported unkillable */

/* What a case needs set up, and which write-back path uses the operation. */
#define USES_DIRECT     0x1u   /* an O_DIRECT scratch file */
#define USES_RING       0x2u   /* an io_uring */
#define USES_FILE_WRITE 0x4u   /* writes the page to the file: verify the file */
#define DIRECT TIDE__HZ_PATH_DIRECT
#define FIXED  TIDE__HZ_PATH_FIXED

static const struct {
	const char *name;
	const char *desc;
	unsigned uses, paths;
} hazards[TIDE__HZ_COUNT] = {
	[TIDE__HZ_BUFFERED_WRITE] = { "buffered-write", "buffered pwrite() from a WP'd page",
				      USES_FILE_WRITE, 0 },
	[TIDE__HZ_DIRECT_WRITE] = { "direct-write", "O_DIRECT pwrite() from a WP'd page",
				    USES_DIRECT | USES_FILE_WRITE, DIRECT },
	[TIDE__HZ_URING_WRITE] = { "uring-write", "io_uring O_DIRECT write (not fixed) from a WP'd page",
				   USES_DIRECT | USES_RING | USES_FILE_WRITE, DIRECT },
	[TIDE__HZ_URING_WRITE_FIXED] = { "uring-write-fixed",
					 "copy to a registered bounce buffer, io_uring WRITE_FIXED",
					 USES_DIRECT | USES_RING | USES_FILE_WRITE, FIXED },
	[TIDE__HZ_REGISTER_BUFFERS] = { "register-buffers", "io_uring_register_buffers() over a uffd range",
					USES_RING, 0 },
	[TIDE__HZ_DIRECT_READ] = { "direct-read", "O_DIRECT pread() into a WP'd page", USES_DIRECT, 0 },
	[TIDE__HZ_URING_READ] = { "uring-read", "io_uring O_DIRECT read into a WP'd page",
				  USES_DIRECT | USES_RING, 0 },
	[TIDE__HZ_VM_READV] = { "vm-readv", "process_vm_readv() from a WP'd page", 0, 0 },
	[TIDE__HZ_VM_WRITEV] = { "vm-writev", "process_vm_writev() into a WP'd page", 0, 0 },
	[TIDE__HZ_VMSPLICE] = { "vmsplice", "vmsplice() of a WP'd page into a pipe", 0, 0 },
	[TIDE__HZ_DONTNEED] = { "dontneed", "MADV_DONTNEED on a WP'd page, no EVENT_REMOVE",
				0, DIRECT | FIXED },
	[TIDE__HZ_DONTNEED_REMOVE] = { "dontneed-remove", "MADV_DONTNEED with UFFD_FEATURE_EVENT_REMOVE",
				       0, 0 },
};

const char *tide__hazard_name(enum tide__hazard h)
{
	return (unsigned)h < TIDE__HZ_COUNT ? hazards[h].name : "?";
}

const char *tide__hazard_description(enum tide__hazard h)
{
	return (unsigned)h < TIDE__HZ_COUNT ? hazards[h].desc : "?";
}

unsigned tide__hazard_paths(enum tide__hazard h)
{
	return (unsigned)h < TIDE__HZ_COUNT ? hazards[h].paths : 0;
}

const char *tide__hazard_outcome_name(enum tide__hazard_outcome o)
{
	static const char *const names[] = { "?", "completes", "blocks", "fails", "skipped" };

	return (unsigned)o <= TIDE__HZ_SKIPPED ? names[o] : "?";
}

const char *tide__hazard_mode_name(unsigned mode)
{
	static const char *const names[TIDE__HZ_NMODES] = { "4k", "4k+fork", "thp", "thp+fork" };

	return names[mode % TIDE__HZ_NMODES];
}

/*
 * What Linux 6.18 does, measured by tests/hazard_kernel.c on the project VM.
 * Read pins (FOLL_PIN without FOLL_WRITE) of a WP'd page never fault since
 * 5.9; a COW-shared page is unshared (FAULT_FLAG_UNSHARE, 5.19+), which is
 * not a write and raises no uffd-wp fault. Anything that writes the page, or
 * pins it FOLL_WRITE|FOLL_LONGTERM, waits for the uffd.
 */
enum tide__hazard_outcome tide__hazard_expected(enum tide__hazard h, unsigned mode)
{
	(void)mode;
	switch (h) {
	case TIDE__HZ_REGISTER_BUFFERS:
	case TIDE__HZ_DIRECT_READ:
	case TIDE__HZ_URING_READ:
	case TIDE__HZ_VM_WRITEV:
	case TIDE__HZ_DONTNEED_REMOVE:
		return TIDE__HZ_BLOCKS;
	default:
		return TIDE__HZ_COMPLETES;
	}
}

/* A small /proc or /sys text file, without its trailing newline; "" on error. */
char *tide__read_text(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, len - 1) : -1;

	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return buf;
}

bool tide__hazard_thp_available(void)
{
	char buf[128];

	tide__read_text("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof(buf));
	return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ------------------------------------------------------------------ child */

/* Everything the child sets up; the operation thread reads it, the watcher
 * (main thread) owns the verdict. */
struct probe {
	enum tide__hazard h;
	unsigned mode;
	size_t len;
	char *page;              /* uffd-registered, populated, write-protected */
	char *buf;               /* plain memory: source, destination or bounce */
	int uffd, fd, dfd;       /* scratch file, buffered and O_DIRECT */
	int pipefd[2];
	int donefd;              /* eventfd the operation thread signals */
	struct io_uring ring;
	long ret;                /* operation result: >= 0 or -errno */
	int data_ok;
	struct tide__hazard_result *res;
};

static uint8_t pattern(size_t i, unsigned salt)
{
	return (uint8_t)((i * 131u + (i >> 12) * 7u + salt) & 0xff);
}

static void fill(char *p, size_t len, unsigned salt)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (char)pattern(i, salt);
}

static int check(const char *p, size_t len, unsigned salt)
{
	for (size_t i = 0; i < len; i++)
		if ((uint8_t)p[i] != pattern(i, salt))
			return 0;
	return 1;
}

/* Was the page backed by a huge page? /proc/self/smaps, AnonHugePages. */
static bool is_thp(const void *addr)
{
	char line[256], want[32];
	bool in = false, thp = false;
	FILE *f = fopen("/proc/self/smaps", "re");

	if (!f)
		return false;
	snprintf(want, sizeof(want), "%lx-", (unsigned long)addr);
	while (fgets(line, sizeof(line), f)) {
		unsigned long kb, start, end;

		/* A mapping's header is "start-end perms ...", its fields "Name: value". */
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2)
			in = !strncmp(line, want, strlen(want));
		else if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
			thp = kb >= HUGE_PAGE / 1024;
	}
	fclose(f);
	return thp;
}

/* The uffd-wp bit of the page's pte: 1, 0, or -1 when unreadable. */
static int wp_bit(const void *addr)
{
	uint64_t e;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = pread(fd, &e, sizeof(e), (off_t)((uintptr_t)addr / SMALL_PAGE * sizeof(e)));
	close(fd);
	return n == sizeof(e) ? !!(e & PM_UFFD_WP) : -1;
}

/* Map `len` bytes aligned to `len`, so a 2 MiB range can be one huge page. */
static char *map_aligned(size_t len)
{
	char *p = mmap(NULL, 2 * len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t a;

	if (p == MAP_FAILED)
		return NULL;
	a = ((uintptr_t)p + len - 1) & ~(uintptr_t)(len - 1);
	if (a > (uintptr_t)p)
		munmap(p, a - (uintptr_t)p);
	munmap((char *)a + len, (uintptr_t)p + 2 * len - (a + len));
	return (char *)a;
}

static bool writes_file(enum tide__hazard h) { return hazards[h].uses & USES_FILE_WRITE; }
static bool needs_direct(enum tide__hazard h) { return hazards[h].uses & USES_DIRECT; }
static bool needs_ring(enum tide__hazard h) { return hazards[h].uses & USES_RING; }

static int open_scratch(struct probe *pr, const char *dir)
{
	/* /var/tmp is usually a real disk; /tmp may be tmpfs (O_DIRECT only since 6.6).
	 * A directory the caller names is the only one tried. */
	const char *dirs[] = { dir, getenv("TIDE_PROBE_DIR"), "/var/tmp", getenv("TMPDIR"), "/tmp" };
	size_t ndirs = dir ? 1 : sizeof(dirs) / sizeof(dirs[0]);
	char path[4096];
	int err = -ENOENT;

	for (size_t i = 0; i < ndirs; i++) {
		if (!dirs[i] || !*dirs[i])
			continue;
		snprintf(path, sizeof(path), "%s/tide-hazard-XXXXXX", dirs[i]);
		pr->fd = mkostemp(path, O_CLOEXEC);
		if (pr->fd < 0) {
			err = -errno;
			continue;
		}
		pr->dfd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
		err = -errno;
		unlink(path);
		if (pr->dfd >= 0 || !needs_direct(pr->h))
			return 0;
		close(pr->fd);
		pr->fd = -1;
	}
	return err;
}

static int ring_call(struct probe *pr)
{
	struct io_uring_cqe *cqe;
	int ret = io_uring_submit_and_wait(&pr->ring, 1);

	if (ret < 0 || (ret = io_uring_wait_cqe(&pr->ring, &cqe)) < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(&pr->ring, cqe);
	return ret;
}

static long fail_errno(long r) { return r < 0 ? -errno : r; }
/* The operation; runs on its own thread, may block forever. */
static void *operate(void *arg)
{
	struct probe *pr = arg;
	size_t len = pr->len, n = len < SPLICE_MAX ? len : SPLICE_MAX;
	struct iovec local = { pr->buf, len }, remote = { pr->page, len };
	struct io_uring_sqe *sqe = NULL;
	uint64_t one = 1;
	long r = 0;

	pr->data_ok = -1;
	if (needs_ring(pr->h) && pr->h != TIDE__HZ_REGISTER_BUFFERS)
		sqe = io_uring_get_sqe(&pr->ring);
	switch (pr->h) {
	case TIDE__HZ_BUFFERED_WRITE:
		r = fail_errno(pwrite(pr->fd, pr->page, len, 0));
		break;
	case TIDE__HZ_DIRECT_WRITE:
		r = fail_errno(pwrite(pr->dfd, pr->page, len, 0));
		break;
	case TIDE__HZ_URING_WRITE:
		io_uring_prep_write(sqe, pr->dfd, pr->page, len, 0);
		r = ring_call(pr);
		break;
	case TIDE__HZ_URING_WRITE_FIXED:
		/* The fixed path: a CPU read of the WP'd page into runtime memory. */
		memcpy(pr->buf, pr->page, len);
		io_uring_prep_write_fixed(sqe, pr->dfd, pr->buf, len, 0, 0);
		r = ring_call(pr);
		break;
	case TIDE__HZ_REGISTER_BUFFERS:
		r = io_uring_register_buffers(&pr->ring, &remote, 1);
		if (r == 0)
			io_uring_unregister_buffers(&pr->ring);
		break;
	case TIDE__HZ_DIRECT_READ:
		r = fail_errno(pread(pr->dfd, pr->page, len, 0));
		break;
	case TIDE__HZ_URING_READ:
		io_uring_prep_read(sqe, pr->dfd, pr->page, len, 0);
		r = ring_call(pr);
		break;
	case TIDE__HZ_VM_READV:
		r = fail_errno(process_vm_readv(getpid(), &local, 1, &remote, 1, 0));
		break;
	case TIDE__HZ_VM_WRITEV:
		r = fail_errno(process_vm_writev(getpid(), &local, 1, &remote, 1, 0));
		break;
	case TIDE__HZ_VMSPLICE:
		remote.iov_len = n;
		r = fail_errno(vmsplice(pr->pipefd[1], &remote, 1, 0));
		if (r == (long)n)
			r = fail_errno(read(pr->pipefd[0], pr->buf, n));
		break;
	case TIDE__HZ_DONTNEED:
	case TIDE__HZ_DONTNEED_REMOVE:
		r = fail_errno(madvise(pr->page, len, MADV_DONTNEED));
		break;
	case TIDE__HZ_COUNT:
		r = -EINVAL;
		break;
	}
	pr->ret = r;
	if (write(pr->donefd, &one, sizeof(one)) != sizeof(one))
		pr->ret = -EIO;
	return NULL;
}

/* After a completed operation: did the right bytes move? */
static int verify(struct probe *pr)
{
	size_t n = pr->len < SPLICE_MAX ? pr->len : SPLICE_MAX;

	if (writes_file(pr->h)) {
		memset(pr->buf, 0, pr->len);
		if (pread(pr->fd, pr->buf, pr->len, 0) != (ssize_t)pr->len)
			return 0;
		return check(pr->buf, pr->len, 1);
	}
	switch (pr->h) {
	case TIDE__HZ_DIRECT_READ:
	case TIDE__HZ_URING_READ:
	case TIDE__HZ_VM_WRITEV:
		/* The page now holds the new bytes although it was write-protected. */
		return check(pr->page, pr->len, 2);
	case TIDE__HZ_VM_READV:
		return check(pr->buf, pr->len, 1);
	case TIDE__HZ_VMSPLICE:
		return check(pr->buf, n, 1);
	default:
		return -1;
	}
}

static void describe_event(const struct uffd_msg *m, struct probe *pr)
{
	struct tide__hazard_result *res = pr->res;

	res->event = m->event;
	if (m->event == UFFD_EVENT_PAGEFAULT) {
		res->fault_flags = m->arg.pagefault.flags;
		DETAIL(res, "%s fault at page+%#llx pending on the uffd",
			 (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) ? "write-protect" :
			 (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) ? "minor" : "missing",
			 (unsigned long long)(m->arg.pagefault.address - (uintptr_t)pr->page));
	} else {
		DETAIL(res, "%s event pending on the uffd: %s",
			 m->event == UFFD_EVENT_REMOVE ? "REMOVE" : "another",
			 "the caller waits until it is read");
	}
}

/* Set-up failure: say what was missing, return -errno. */
static int why(struct tide__hazard_result *res, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(res->detail, sizeof(res->detail), fmt, ap);
	va_end(ap);
	return err;
}

static int setup(struct probe *pr, const char *dir)
{
	size_t len = pr->len;
	uint64_t want = pr->h == TIDE__HZ_DONTNEED_REMOVE ? UFFD_FEATURE_EVENT_REMOVE : 0;
	uint64_t have = 0;
	int ret;

	pr->page = map_aligned(len);
	pr->buf = map_aligned(len);
	if (!pr->page || !pr->buf)
		return -ENOMEM;
	/* The plain buffer stays small pages; the probed page is what the mode says. */
	madvise(pr->buf, len, MADV_NOHUGEPAGE);
	madvise(pr->page, len, (pr->mode & TIDE__HZ_THP) ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	fill(pr->page, len, 1);
	fill(pr->buf, len, 2);
	pr->res->thp = is_thp(pr->page);
	if ((pr->mode & TIDE__HZ_THP) && !pr->res->thp)
		return why(pr->res, -ENOMEM, "no transparent huge page could be allocated");
	ret = open_scratch(pr, dir);
	if (ret < 0)
		return why(pr->res, ret, "no scratch directory with%s O_DIRECT",
			   needs_direct(pr->h) ? "" : "out");
	if (ftruncate(pr->fd, (off_t)len) < 0)
		return -errno;
	/* For reads the file holds pattern 2, so a read into the page is
	 * recognisable (O_DIRECT reads flush the page cache range first). */
	if (!writes_file(pr->h) && pwrite(pr->fd, pr->buf, len, 0) != (ssize_t)len)
		return -EIO;
	if (needs_ring(pr->h)) {
		ret = io_uring_queue_init(4, &pr->ring, 0);
		if (ret < 0)
			return why(pr->res, ret, "io_uring unavailable");
	}
	if (pr->h == TIDE__HZ_URING_WRITE_FIXED) {
		/* Runtime-owned memory, registered before any uffd exists. */
		struct iovec bounce = { pr->buf, len };

		ret = io_uring_register_buffers(&pr->ring, &bounce, 1);
		if (ret < 0)
			return why(pr->res, ret, "cannot register a bounce buffer (RLIMIT_MEMLOCK?)");
	}
	if (pr->h == TIDE__HZ_VMSPLICE && pipe2(pr->pipefd, O_CLOEXEC) < 0)
		return -errno;

	pr->uffd = tide__uffd_open(O_NONBLOCK, NULL);
	if (pr->uffd < 0)
		return why(pr->res, pr->uffd, "no userfaultfd");
	ret = tide__uffd_api(pr->uffd, want, &have);
	if (ret < 0 || !(have & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
		return why(pr->res, ret < 0 ? ret : -ENOTSUP, "userfaultfd lacks write-protect%s",
			   want ? " or EVENT_REMOVE" : "");
	ret = tide__uffd_register(pr->uffd, pr->page, len,
				  UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, NULL);
	if (ret < 0)
		return ret;
	/* The kernel refuses DONTWAKE together with WP (EINVAL). */
	ret = tide__uffd_wp(pr->uffd, pr->page, len, true, true);
	if (ret < 0)
		return ret;
	if (wp_bit(pr->page) == 0)
		return why(pr->res, -EPROTO, "page not write-protected after WP");
	pr->donefd = eventfd(0, EFD_CLOEXEC);
	return pr->donefd < 0 ? -errno : 0;
}

/* A live child that COW-shares every private page until the prober exits. */
static int fork_sharer(void)
{
	pid_t parent = getpid(), pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* The prober's death (exit or SIGKILL) ends the sharer too. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		while (getppid() == parent)
			pause();
		_exit(0);
	}
	return 0;
}

static void child_main(enum tide__hazard h, unsigned mode, const char *dir,
		       struct tide__hazard_result *res, int ready)
{
	struct probe pr = { .h = h, .mode = mode, .res = res, .uffd = -1, .fd = -1, .dfd = -1,
			    .donefd = -1, .pipefd = { -1, -1 } };
	struct pollfd pfd[2];
	pthread_t t;
	uint64_t t0;
	int ret;

	pr.len = (mode & TIDE__HZ_THP) ? HUGE_PAGE : SMALL_PAGE;
	ret = setup(&pr, dir);
	if (ret == 0 && (mode & TIDE__HZ_FORK))
		ret = fork_sharer();
	if (ret < 0) {
		res->outcome = TIDE__HZ_SKIPPED;
		res->err = ret;
		if (!res->detail[0])
			DETAIL(res, "setup failed: %s", strerror(-ret));
		return;
	}
	if (write(ready, "r", 1) != 1)
		return;
	t0 = now_us();
	ret = pthread_create(&t, NULL, operate, &pr);
	if (ret) {
		res->outcome = TIDE__HZ_SKIPPED;
		res->err = -ret;
		return;
	}
	pfd[0] = (struct pollfd){ .fd = pr.donefd, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = pr.uffd, .events = POLLIN };
	while (poll(pfd, (mode & TIDE__HZ_NOWATCH) ? 1 : 2, -1) < 0 && errno == EINTR)
		;
	res->elapsed_us = now_us() - t0;
	if (pfd[0].revents & POLLIN) {
		pthread_join(t, NULL);
		res->outcome = pr.ret < 0 ? TIDE__HZ_FAILS : TIDE__HZ_COMPLETES;
		res->err = pr.ret < 0 ? (int)pr.ret : 0;
		res->wp_after = wp_bit(pr.page);
		res->data_ok = pr.ret < 0 ? -1 : verify(&pr);
		if (pr.ret < 0)
			DETAIL(res, "returned %s", strerror((int)-pr.ret));
		else
			DETAIL(res, "returned %ld%s%s", pr.ret,
				 res->data_ok == 0 ? ", data wrong" : "",
				 res->wp_after == 0 && h != TIDE__HZ_DONTNEED ? ", WP bit lost" : "");
		return;
	}
	/* Reading a fault message does not resolve the fault: the operation
	 * stays blocked. Nothing else reads this uffd. */
	{
		struct uffd_msg m;

		res->outcome = TIDE__HZ_BLOCKS;
		res->event_seen = true;
		if (read(pr.uffd, &m, sizeof(m)) == sizeof(m))
			describe_event(&m, &pr);
		else
			DETAIL(res, "uffd readable, message unreadable");
	}
}

/* ----------------------------------------------------------------- parent */

/* Where each thread of a stuck child sleeps, e.g. "iou-wrk-12:handle_userfault". */
static void stuck_where(pid_t pid, char *out, size_t outlen)
{
	char path[320], comm[32], wchan[64];
	size_t used = 0;
	struct dirent *d;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((d = readdir(dir)) && used + 1 < outlen) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/wchan", (int)pid, d->d_name);
		tide__read_text(path, wchan, sizeof(wchan));
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", (int)pid, d->d_name);
		tide__read_text(path, comm, sizeof(comm));
		if (wchan[0] && strcmp(wchan, "0"))
			used += (size_t)snprintf(out + used, outlen - used, "%s%s:%s",
						 used ? " " : "", comm, wchan);
	}
	closedir(dir);
}

/* poll() one fd with a timeout, restarting on signals with the time left. */
static int poll_for(struct pollfd *pfd, nfds_t n, int timeout_ms)
{
	uint64_t end = now_us() + (uint64_t)timeout_ms * 1000u;
	int ret;

	for (;;) {
		uint64_t now = now_us();

		ret = poll(pfd, n, now >= end ? 0 : (int)((end - now + 999) / 1000));
		if (ret >= 0 || errno != EINTR)
			return ret < 0 ? -errno : ret;
	}
}

int tide__hazard_run(enum tide__hazard h, unsigned mode, const char *dir, int timeout_ms,
		     struct tide__hazard_result *res)
{
	struct tide__hazard_result *shared;
	struct pollfd pfd[2];
	int ready[2], pidfd, status = 0, ret;
	uint64_t t0 = now_us();
	pid_t pid;
	char c;

	if ((unsigned)h >= TIDE__HZ_COUNT || timeout_ms <= 0 || !res ||
	    (mode & ~(TIDE__HZ_FORK | TIDE__HZ_THP | TIDE__HZ_NOWATCH)))
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	if ((mode & TIDE__HZ_THP) && !tide__hazard_thp_available()) {
		res->outcome = TIDE__HZ_SKIPPED;
		res->err = -ENOTSUP;
		DETAIL(res, "transparent huge pages are disabled");
		return 0;
	}
	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		return -errno;
	memset(shared, 0, sizeof(*shared));
	if (pipe2(ready, O_CLOEXEC) < 0) {
		ret = -errno;
		goto fail_pipe;
	}
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		goto fail_fork;
	}
	if (pid == 0) {
		close(ready[0]);
		child_main(h, mode, dir, shared, ready[1]);
		_exit(0);
	}
	close(ready[1]);
	ready[1] = -1;
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		ret = -errno;
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		goto fail_fork;
	}
	/* Phase 1: set-up (bounded generously); phase 2: the operation itself. */
	pfd[0] = (struct pollfd){ .fd = ready[0], .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = pidfd, .events = POLLIN };
	ret = poll_for(pfd, 2, SETUP_MS);
	if (ret > 0 && (pfd[0].revents & (POLLIN | POLLHUP)) && read(ready[0], &c, 1) == 1) {
		pfd[1].revents = 0;
		ret = poll_for(&pfd[1], 1, timeout_ms);
	}
	if (ret <= 0) {
		/* Timed out: the operation is stuck without a uffd message the
		 * watcher could see, or set-up is stuck. Either way: blocked. */
		shared->outcome = TIDE__HZ_BLOCKS;
		shared->event_seen = false;
		int k = DETAIL(shared, "no completion within %d ms; threads:", timeout_ms);
		stuck_where(pid, shared->detail + k, sizeof(shared->detail) - (size_t)k);
		kill(pid, SIGKILL);
		pfd[1].revents = 0;
		if (poll_for(&pfd[1], 1, KILL_MS) <= 0) {
			/* Do not hang the caller on an unkillable child: leave it. */
			strncat(shared->detail, " (child unkillable)",
				sizeof(shared->detail) - strlen(shared->detail) - 1);
			goto done;
		}
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!shared->outcome) {
		shared->outcome = TIDE__HZ_FAILS;
		shared->err = -ECHILD;
		DETAIL(shared, "probe child %s %d",
			 WIFSIGNALED(status) ? "died of signal" : "exited with",
			 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	}
done:
	*res = *shared;
	if (res->outcome == TIDE__HZ_BLOCKS && !res->event_seen)
		res->elapsed_us = now_us() - t0;
	ret = 0;
	close(pidfd);
fail_fork:
	close(ready[0]);
	if (ready[1] >= 0)
		close(ready[1]);
fail_pipe:
	munmap(shared, sizeof(*shared));
	return ret;
}
