/*
 * bench_raw: the limits of this machine that tide is measured against, with
 * no tide code in the path. Each test prints one JSON object per line.
 *
 *   uffd   MISSING fault + UFFDIO_COPY round trip of a minimal handler, with
 *          the handler on the app's vCPU, on the other vCPU (blocking), and
 *          busy-polling on the other vCPU; unpinned, with keeper threads or a
 *          CPU latency request of 0, and busy-polling with the request
 *          (pinned apart, or unpinned: *poll_qos); 4 KiB and 64 KiB pages
 *   uffdb  the same-vCPU 4 KiB round trip alone, walking as bench_fault's
 *          permread does (80% of --budget, far-apart stride), named
 *          uffd.same.4k.beside: run.sh runs it just before and just after
 *          the pinned tide figures
 *   uffd2  two app threads: one shared uffd vs one uffd + handler per vCPU
 *   wp     write-protect fault + UFFDIO_WRITEPROTECT clear round trip
 *   wpasync  dirty tracking per written page, sync uffd-wp vs WP_ASYNC +
 *          PAGEMAP_SCAN (raw_wpasync.c)
 *   pager  a minimal pager at its budget: pread from the page cache of --file,
 *          UFFDIO_COPY, MADV_DONTNEED of the oldest page, per fault (same
 *          vCPU; unpinned; unpinned busy-polling with a CPU latency request,
 *          pager.unpinned_poll_qos); and the
 *          same filling by UFFDIO_MOVE of a staging page (pager.move_same)
 *   copy   one thread putting pages in place with nothing else to do: 64 KiB
 *          UFFDIO_COPY calls (and 512 KiB ones, tide's read size) from a
 *          huge-page buffer into a registered window of --budget bytes, in
 *          order, dropping (MADV_DONTNEED) 2 MiB half a window behind: no
 *          fault, no I/O. The most a single service thread can install; the
 *          sequential fill from disk needs it to keep up with the disk
 *   sigbus the fault served on the faulting thread (UFFD_FEATURE_SIGBUS): its
 *          SIGBUS handler copies a static page (uffd.sigbus) or is the
 *          minimal pager (pager.sigbus), pinned to vCPU 0, no second thread
 *   share  the minimal pager in SIGBUS handlers on random 4 KiB faults over a
 *          region as large as --file, drops batched, one app thread and two
 *          sharing the region (pager.rand.sigbus.4k[.t2], raw_share.c)
 *   uring  io_uring O_DIRECT with fixed buffers on --file (raw_uring.c)
 *   uringw the sequential write of `uring` alone, named ...qd32.beside: run.sh
 *          runs it just before and just after each tide eviction figure, so
 *          that figure meets the disk as it was at the time
 *   uringwf the same write streaming into a new fallocated file (sized from
 *          --budget and --secs), named ...qd32.fresh.beside: the first
 *          writes that tide's eviction figure makes too
 *   mmap   kernel mmap of --file under a cgroup v1 memory limit of --budget
 *          (raw_mmap.c)
 *   mkfile write --file with --size bytes of data and fsync it
 *
 * Usage: bench_raw [--secs S] [--file F] [--size N] [--budget N] TEST...
 */
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_raw.h"

double secs = 1.0;                /* per measurement */
const char *file;
uint64_t file_size;
uint64_t budget = 256 * MiB;
static int ncpu;


/* ---- userfaultfd round trip ---- */

struct app {
	struct handler *h;
	char *base;
	size_t len;
	int cpu;
	bool wp;                 /* write to protected pages instead of reading missing ones */
	size_t stride;           /* pages from one touch to the next (1: in order) */
	uint64_t deadline;
	uint64_t faults, busy_ns;
	struct lat lat;
	pthread_t thread;
};

static bool pager_move;           /* test_pager: fill by UFFDIO_MOVE from a staging page */
static bool walk_permread;        /* test_uffdb: walk as bench_fault's permread does */

static void pager_fill(struct handler *h, char *a)
{
	uint64_t off = ((uintptr_t)a / h->page * h->page) % (file_size / h->page * h->page);
	int ret;

	if (pread(h->fd, h->stage ? h->stage : h->src, h->page, (off_t)off) != (ssize_t)h->page)
		die("pread %s: %s", file, strerror(errno));
	if (h->stage) {
		/* The page itself moves: no copy, but the next pread faults a
		 * new zeroed page into the staging slot. */
		struct uffdio_move mv = { .dst = (uintptr_t)a, .src = (uintptr_t)h->stage,
					  .len = h->page };
		ret = ioctl(h->uffd, UFFDIO_MOVE, &mv) < 0 ? -errno : 0;
	} else {
		ret = tide__uffd_copy(h->uffd, a, h->src, h->page, 0, NULL);
	}
	if (ret == -EEXIST)
		ret = tide__uffd_wake(h->uffd, a, h->page);
	if (ret < 0)
		die("UFFDIO_COPY: %s", strerror(-ret));
	/* FIFO is enough here: the app walks the region in order. */
	if (h->kept == h->keep)
		madvise(h->resident[h->oldest], h->page, MADV_DONTNEED);
	else
		h->kept++;
	h->resident[h->oldest] = a;
	h->oldest = (h->oldest + 1) % h->keep;
}

static void *handler_main(void *arg)
{
	struct handler *h = arg;
	struct uffd_msg m;

	pin_cpu(h->cpu);
	for (;;) {
		ssize_t n = read(h->uffd, &m, sizeof(m));

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			die("read uffd: %s", strerror(errno));
		}
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		char *a = (char *)(uintptr_t)(m.arg.pagefault.address & ~(uint64_t)(h->page - 1));
		int ret;
		if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
			ret = tide__uffd_wp(h->uffd, a, h->page, false, true);
		} else if (h->fd >= 0 && a != h->stop_page) {
			pager_fill(h, a);
			ret = 0;
		} else {
			ret = tide__uffd_copy(h->uffd, a, h->src, h->page, 0, NULL);
			if (ret == -EEXIST)
				ret = tide__uffd_wake(h->uffd, a, h->page);
		}
		if (ret < 0)
			die("resolve fault at %p: %s", (void *)a, strerror(-ret));
		if (a == h->stop_page)
			return NULL;
	}
}

void handler_start(struct handler *h, int cpu, bool poll, size_t page)
{
	memset(h, 0, sizeof(*h));
	h->uffd = tide__uffd_open(poll ? O_NONBLOCK : 0, NULL);
	if (h->uffd < 0)
		die("userfaultfd: %s", strerror(-h->uffd));
	int ret = tide__uffd_api(h->uffd, UFFD_FEATURE_PAGEFAULT_FLAG_WP |
				 (pager_move ? UFFD_FEATURE_MOVE : 0), NULL);
	if (ret < 0)
		die("UFFDIO_API: %s", strerror(-ret));
	h->cpu = cpu;
	h->poll = poll;
	h->page = page;
	h->fd = -1;
	h->src = map_aligned(page, page);
	memset(h->src, 0x5a, page);
	h->stop_page = map_aligned(page, page);
	ret = tide__uffd_register(h->uffd, h->stop_page, page, UFFDIO_REGISTER_MODE_MISSING, NULL);
	if (ret < 0)
		die("register: %s", strerror(-ret));
	pthread_create(&h->thread, NULL, handler_main, h);
}

/* Turn a handler into the minimal pager, with --file warm in the page cache. */
static void handler_pager(struct handler *h, size_t keep)
{
	h->fd = open_file(O_RDONLY);
	warm_file(h->fd, file_size, file);
	h->keep = keep;
	if (pager_move)
		h->stage = map_aligned(h->page, h->page);
	h->resident = calloc(keep, sizeof(*h->resident));
	if (!h->resident)
		die("out of memory");
}

void handler_stop(struct handler *h)
{
	(void)*(volatile char *)h->stop_page;
	pthread_join(h->thread, NULL);
	close(h->uffd);
	if (h->fd >= 0) {
		close(h->fd);
		free(h->resident);
	}
	if (h->stage)
		munmap(h->stage, h->page);
	munmap(h->src, h->page);
	munmap(h->stop_page, h->page);
}

static void app_init(struct app *a, struct handler *h, size_t len, int cpu, bool wp)
{
	memset(a, 0, sizeof(*a));
	a->h = h;
	a->len = len;
	a->cpu = cpu;
	a->wp = wp;
	a->stride = 1;
	if (walk_permread) {
		/* 80% of --budget, as permread maps, in its order. */
		a->len = len = budget / 10 * 8 / h->page * h->page;
		a->stride = permread_stride(len / h->page);
	}
	a->base = map_aligned(len, 2 * MiB);
	uint64_t mode = UFFDIO_REGISTER_MODE_MISSING;
	if (wp) {
		memset(a->base, 1, len);  /* WP faults need present pages */
		mode |= UFFDIO_REGISTER_MODE_WP;
	}
	int ret = tide__uffd_register(h->uffd, a->base, len, mode, NULL);
	if (ret < 0)
		die("register: %s", strerror(-ret));
	if (wp && (ret = tide__uffd_wp(h->uffd, a->base, len, true, true)) < 0)
		die("writeprotect: %s", strerror(-ret));
	lat_init(&a->lat, 1 << 20);
}

static void *app_main(void *arg)
{
	struct app *a = arg;
	size_t step = a->h->page, n = a->len / step;
	uint64_t sink = 0, start = now_ns(), rearm = 0;

	pin_cpu(a->cpu);
	while (now_ns() < a->deadline) {
		for (size_t i = 0, pg = 0; i < n; i++, pg = (pg + a->stride) % n) {
			size_t off = pg * step;
			uint64_t t0 = now_ns();
			if (a->wp)
				*(volatile char *)(a->base + off) = 2;
			else
				sink += *(volatile char *)(a->base + off);
			uint64_t t1 = now_ns();
			lat_add(&a->lat, t1 - t0);
			a->faults++;
			if (t1 >= a->deadline)
				break;
		}
		/* Re-arm the region; not part of the round trip, so not timed. */
		uint64_t t0 = now_ns();
		if (a->wp)
			tide__uffd_wp(a->h->uffd, a->base, a->len, true, true);
		else
			madvise(a->base, a->len, MADV_DONTNEED);
		rearm += now_ns() - t0;
	}
	a->busy_ns = now_ns() - start - rearm;
	(void)sink;
	return NULL;
}

static void app_fini(struct app *a)
{
	munmap(a->base, a->len);
	lat_free(&a->lat);
}

/* One app thread and one handler. */
static void uffd_one(const char *variant, int app_cpu, int h_cpu, bool poll, size_t page,
		     bool wp, bool pager)
{
	struct handler h;
	struct app a;
	struct out o;
	char name[64], tag[24];
	handler_start(&h, h_cpu, poll, page);
	if (pager)
		handler_pager(&h, 4 * MiB / page);
	app_init(&a, &h, 16 * MiB, app_cpu, wp);
	a.deadline = now_ns() + (uint64_t)(secs * 1e9);
	app_main(&a);
	handler_stop(&h);

	snprintf(name, sizeof(name), "%s.%s.%s%s", wp ? "wp" : pager ? "pager" : "uffd", variant,
		 size_tag(page, tag, sizeof(tag)), walk_permread ? ".beside" : "");
	out_begin(&o, name);
	out_u64(&o, "page", page);
	out_u64(&o, "faults", a.faults);
	out_num(&o, "secs", (double)a.busy_ns / 1e9);
	out_num(&o, "per_s", (double)a.faults * 1e9 / (double)a.busy_ns);
	out_num(&o, "mbps", (double)a.faults * (double)page / ((double)a.busy_ns / 1e9) / 1e6);
	out_lat(&o, &a.lat);
	out_end(&o);
	app_fini(&a);
}

/* User-space halt polling, as TIDE_WAKE_POLL_US does it: one SCHED_IDLE
 * spinner per CPU, so no vCPU halts and a wake-up lands at once. */
static volatile int keepers_stop;
static pthread_t keepers[CPU_SETSIZE];

static void *keeper_main(void *arg)
{
	struct sched_param none = { 0 };

	pin_cpu((int)(intptr_t)arg);
	sched_setscheduler(0, SCHED_IDLE, &none);
	while (!keepers_stop)
		__asm__ __volatile__("" ::: "memory");
	return NULL;
}

static void keepers_run(bool on)
{
	for (int c = 0; c < ncpu && c < CPU_SETSIZE; c++) {
		if (on && pthread_create(&keepers[c], NULL, keeper_main, (void *)(intptr_t)c))
			die("pthread_create: %s", strerror(errno));
		if (!on && c == 0)
			keepers_stop = 1;
		if (!on)
			pthread_join(keepers[c], NULL);
	}
	keepers_stop = 0;
}

/* Kernel-side halt polling, as TIDE_WAKE_QOS does it: a CPU latency
 * request of 0 for the run, so idle vCPUs poll in the idle task and a
 * wake-up aimed at one needs no interrupt. -1 if it cannot be made. */
static int qos_hold(void)
{
	int32_t zero = 0;
	int fd = open("/dev/cpu_dma_latency", O_WRONLY | O_CLOEXEC);

	if (fd >= 0 && write(fd, &zero, sizeof(zero)) != (ssize_t)sizeof(zero)) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void qos_skip(const char *what, const char *variant, int err)
{
	printf("{\"name\":\"%s.%s.4k\",\"skip\":\"no CPU latency request: /dev/cpu_dma_latency: %s\"}\n",
	       what, variant, strerror(err));
}

static void test_uffd(void)
{
	size_t pages[] = { 4 * KiB, 64 * KiB };

	for (int i = 0; i < 2; i++) {
		uffd_one("same", 0, 0, false, pages[i], false, false);
		if (ncpu < 2)
			continue;
		uffd_one("other", 0, 1, false, pages[i], false, false);
		uffd_one("poll", 0, 1, true, pages[i], false, false);
		uffd_one("unpinned", -1, -1, false, pages[i], false, false);
		if (i == 0) {
			int qos;

			keepers_run(true);
			uffd_one("unpinned_wakepoll", -1, -1, false, pages[i], false, false);
			keepers_run(false);
			if ((qos = qos_hold()) >= 0) {
				uffd_one("unpinned_qos", -1, -1, false, pages[i], false, false);
				/* A polling service thread at best: no
				 * side sleeps, the app's idle vCPU polls. */
				uffd_one("poll_qos", 0, 1, true, pages[i], false, false);
				uffd_one("unpinned_poll_qos", -1, -1, true, pages[i], false, false);
				close(qos);
			} else {
				int err = errno;

				qos_skip("uffd", "unpinned_qos", err);
				qos_skip("uffd", "poll_qos", err);
				qos_skip("uffd", "unpinned_poll_qos", err);
			}
		}
	}
}

/* The same-vCPU round trip alone, over the memory and in the order of
 * bench_fault's permread (see app_init), named uffd.same.4k.beside: run.sh
 * runs it just before and just after the pinned tide figures. */
static void test_uffdb(void)
{
	walk_permread = true;
	uffd_one("same", 0, 0, false, 4 * KiB, false, false);
	walk_permread = false;
}

/* The round trip of a minimal pager at its budget: pread from the page cache,
 * UFFDIO_COPY, and one MADV_DONTNEED per fill (4 MiB resident). The floor for
 * tide's fill from the page cache with a full pool. */
static void test_pager(void)
{
	uffd_one("same", 0, 0, false, 4 * KiB, false, true);
	uffd_one("unpinned", -1, -1, false, 4 * KiB, false, true);
	if (ncpu >= 2) {
		/* As tide runs by default: the pager busy-polls, nothing is
		 * pinned, idle vCPUs poll (a CPU latency request of 0). */
		int qos = qos_hold();

		if (qos >= 0) {
			uffd_one("unpinned_poll_qos", -1, -1, true, 4 * KiB, false, true);
			close(qos);
		} else {
			qos_skip("pager", "unpinned_poll_qos", errno);
		}
	}
	uffd_one("same", 0, 0, false, 64 * KiB, false, true);
	/* The same pager filling with UFFDIO_MOVE (6.8+) instead of a copy:
	 * what tide would gain from staging pages that are not io_uring fixed
	 * buffers (a pinned page cannot move). */
	int probe = tide__uffd_open(0, NULL);
	bool can_move = probe >= 0 && tide__uffd_api(probe, UFFD_FEATURE_MOVE, NULL) == 0;

	if (probe >= 0)
		close(probe);
	if (!can_move) {
		printf("{\"name\":\"pager.move\",\"skip\":\"no UFFD_FEATURE_MOVE\"}\n");
		return;
	}
	pager_move = true;
	uffd_one("move_same", 0, 0, false, 4 * KiB, false, true);
	uffd_one("move_same", 0, 0, false, 64 * KiB, false, true);
	pager_move = false;
}

/* One thread's UFFDIO_COPY + MADV_DONTNEED rate, in order, `run` bytes per
 * ioctl (see the top of the file). CPU time is the thread's own. */
static void copy_one(size_t run)
{
	size_t win = budget & ~(size_t)(2 * MiB - 1), drop = 2 * MiB, off = 0;
	uint64_t bytes = 0, t0, t1, c0, c1;
	char *src = map_anon(2 * MiB, 2 * MiB, true), *reg = map_aligned(win, 2 * MiB);
	int uffd = tide__uffd_open(0, NULL), ret;
	char tag[16], name[32];
	struct out o;

	if (win < 4 * drop)
		die("copy needs --budget of at least 8M");
	if (uffd < 0 || tide__uffd_api(uffd, 0, NULL) < 0)
		die("userfaultfd: %s", strerror(uffd < 0 ? -uffd : errno));
	if ((ret = tide__uffd_register(uffd, reg, win, UFFDIO_REGISTER_MODE_MISSING, NULL)) < 0)
		die("UFFDIO_REGISTER: %s", strerror(-ret));
	memset(src, 0x5a, 2 * MiB);
	t0 = now_ns();
	c0 = thread_cpu_ns();
	while (now_ns() - t0 < (uint64_t)(secs * 1e9)) {
		for (size_t o2 = 0; o2 < drop; o2 += run)
			if ((ret = tide__uffd_copy(uffd, reg + off + o2, src + o2, run, 0, NULL)) < 0)
				die("UFFDIO_COPY: %s", strerror(-ret));
		bytes += drop;
		/* Half a window behind: resident stays at about half the window. */
		madvise(reg + (off + win / 2) % win, drop, MADV_DONTNEED);
		off = (off + drop) % win;
	}
	c1 = thread_cpu_ns();
	t1 = now_ns();
	snprintf(name, sizeof(name), "copy.seq.%s", size_tag(run, tag, sizeof(tag)));
	out_begin(&o, name);
	out_num(&o, "mbps", (double)bytes / ((double)(t1 - t0) / 1e9) / 1e6);
	out_num(&o, "cpu_us_per_64k", (double)(c1 - c0) / 1e3 / ((double)bytes / (64 * KiB)));
	out_end(&o);
	close(uffd);
	munmap(reg, win);
	munmap(src, 2 * MiB);
}

static void test_copy(void)
{
	copy_one(64 * KiB);
	copy_one(512 * KiB);
}

/*
 * The fault served on the faulting thread itself: with UFFD_FEATURE_SIGBUS a
 * missing page raises SIGBUS in the thread that touched it, whose handler
 * installs the page and returns; the access then retries. No message, no
 * second thread, no wake-up: what a pager could do when it has the data at
 * hand. Not what tide does (its pool lives on the service thread); this
 * shows what the same-vCPU round trip leaves on the table.
 */
static struct handler *sigbus_h;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct handler *h = sigbus_h;
	char *a = (char *)((uintptr_t)si->si_addr & ~(uintptr_t)(h->page - 1));
	int ret;

	(void)sig;
	(void)uc;
	if (h->fd >= 0) {
		pager_fill(h, a);
		return;
	}
	ret = tide__uffd_copy(h->uffd, a, h->src, h->page, UFFDIO_COPY_MODE_DONTWAKE, NULL);
	if (ret < 0 && ret != -EEXIST)
		die("UFFDIO_COPY in the SIGBUS handler: %s", strerror(-ret));
}

static void sigbus_one(bool pager)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO }, old;
	struct handler h;
	struct app a;
	struct out o;
	int ret;

	memset(&h, 0, sizeof(h));
	h.fd = -1;
	h.page = 4 * KiB;
	h.uffd = tide__uffd_open(0, NULL);
	if (h.uffd < 0)
		die("userfaultfd: %s", strerror(-h.uffd));
	if ((ret = tide__uffd_api(h.uffd, UFFD_FEATURE_SIGBUS, NULL)) < 0) {
		printf("{\"name\":\"%s.sigbus.4k\",\"skip\":\"no UFFD_FEATURE_SIGBUS (%s)\"}\n",
		       pager ? "pager" : "uffd", strerror(-ret));
		close(h.uffd);
		return;
	}
	h.src = map_aligned(h.page, h.page);
	memset(h.src, 0x5a, h.page);
	if (pager)
		handler_pager(&h, 4 * MiB / h.page);
	sigbus_h = &h;
	sigaction(SIGBUS, &sa, &old);
	app_init(&a, &h, 16 * MiB, 0, false);
	a.deadline = now_ns() + (uint64_t)(secs * 1e9);
	app_main(&a);
	sigaction(SIGBUS, &old, NULL);

	out_begin(&o, pager ? "pager.sigbus.4k" : "uffd.sigbus.4k");
	out_u64(&o, "page", h.page);
	out_u64(&o, "faults", a.faults);
	out_num(&o, "secs", (double)a.busy_ns / 1e9);
	out_num(&o, "per_s", (double)a.faults * 1e9 / (double)a.busy_ns);
	out_lat(&o, &a.lat);
	out_end(&o);
	app_fini(&a);
	if (h.fd >= 0) {
		close(h.fd);
		free(h.resident);
	}
	munmap(h.src, h.page);
	close(h.uffd);
}

static void test_sigbus(void)
{
	sigbus_one(false);
	sigbus_one(true);
}

static void test_wp(void)
{
	uffd_one("same", 0, 0, false, 4 * KiB, true, false);
	if (ncpu >= 2)
		uffd_one("other", 0, 1, false, 4 * KiB, true, false);
}

static void uffd_two(const char *variant, bool shared, int h_cpu, int cpu1)
{
	struct handler h[2];
	struct app a[2];
	struct out o;
	char name[64];
	int nh = shared ? 1 : 2;

	for (int i = 0; i < nh; i++)
		handler_start(&h[i], shared ? h_cpu : i, false, 4 * KiB);
	uint64_t deadline = now_ns() + (uint64_t)(secs * 1e9);
	for (int i = 0; i < 2; i++) {
		app_init(&a[i], &h[shared ? 0 : i], 16 * MiB, i ? cpu1 : 0, false);
		a[i].deadline = deadline;
	}
	for (int i = 0; i < 2; i++)
		pthread_create(&a[i].thread, NULL, app_main, &a[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(a[i].thread, NULL);
	for (int i = 0; i < nh; i++)
		handler_stop(&h[i]);

	double per_s = 0;
	uint64_t faults = 0;
	lat_merge(&a[0].lat, &a[1].lat);
	for (int i = 0; i < 2; i++) {
		per_s += (double)a[i].faults * 1e9 / (double)a[i].busy_ns;
		faults += a[i].faults;
	}
	snprintf(name, sizeof(name), "uffd2.%s.4k", variant);
	out_begin(&o, name);
	out_u64(&o, "faults", faults);
	out_num(&o, "per_s", per_s);
	out_lat(&o, &a[0].lat);
	out_end(&o);
	for (int i = 0; i < 2; i++)
		app_fini(&a[i]);
}

static void test_uffd2(void)
{
	if (ncpu < 2) {
		printf("{\"name\":\"uffd2\",\"skip\":\"needs 2 CPUs\"}\n");
		return;
	}
	uffd_two("shared", true, -1, 1);
	uffd_two("shared_cpu0", true, 0, 0);
	uffd_two("percpu", false, -1, 1);
}

/* ---- the shared data file ---- */

int open_file(int flags)
{
	if (!file)
		die("this test needs --file");
	int fd = open(file, flags);
	if (fd < 0)
		die("open %s: %s", file, strerror(errno));
	struct stat st;
	fstat(fd, &st);
	file_size = (uint64_t)st.st_size;
	return fd;
}


static void test_mkfile(void)
{
	size_t chunk = 4 * MiB;
	uint64_t *buf = malloc(chunk), rng = 42;

	if (!file || !file_size)
		die("mkfile needs --file and --size");
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || !buf)
		die("create %s: %s", file, strerror(errno));
	for (uint64_t off = 0; off < file_size; off += chunk) {
		size_t n = file_size - off < chunk ? (size_t)(file_size - off) : chunk;
		for (size_t i = 0; i < n / 8; i++)
			buf[i] = rng_next(&rng);
		if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
			die("write %s: %s", file, strerror(errno));
	}
	if (fsync(fd) < 0)
		die("fsync %s: %s", file, strerror(errno));
	close(fd);
	free(buf);
}

int main(int argc, char **argv)
{
	static const struct { const char *name; void (*fn)(void); } tests[] = {
		{ "mkfile", test_mkfile }, { "uffd", test_uffd }, { "uffd2", test_uffd2 },
		{ "wp", test_wp }, { "wpasync", test_wpasync }, { "pager", test_pager },
		{ "uffdb", test_uffdb }, { "sigbus", test_sigbus }, { "share", test_share }, { "copy", test_copy },
		{ "uring", test_uring }, { "uringw", test_uringw }, { "uringwf", test_uringwf },
		{ "mmap", test_mmap },
	};
	int i;

	ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: bench_raw [--secs S] [--file F] [--size N] [--budget N] TEST...\n"
		       "  TEST = mkfile|uffd|uffdb|uffd2|wp|wpasync|pager|copy|sigbus|share|uring|uringw|uringwf|mmap (see the top of bench_raw.c)\n");
		return 0;
	}
	for (i = 1; i < argc && argv[i][0] == '-'; i += 2) {
		if (i + 1 >= argc)
			die("%s needs a value", argv[i]);
		if (!strcmp(argv[i], "--secs"))
			secs = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--file"))
			file = argv[i + 1];
		else if (!strcmp(argv[i], "--size"))
			file_size = parse_size(argv[i + 1]);
		else if (!strcmp(argv[i], "--budget"))
			budget = parse_size(argv[i + 1]);
		else
			die("unknown option %s", argv[i]);
	}
	if (secs <= 0 || i >= argc)
		die("usage: bench_raw [--secs S] [--file F] [--size N] [--budget N] "
		    "mkfile|uffd|uffdb|uffd2|wp|wpasync|pager|copy|sigbus|share|uring|uringw|uringwf|mmap...");
	for (; i < argc; i++) {
		size_t t;
		for (t = 0; t < sizeof(tests) / sizeof(tests[0]); t++)
			if (!strcmp(argv[i], tests[t].name))
				break;
		if (t == sizeof(tests) / sizeof(tests[0]))
			die("unknown test %s", argv[i]);
		tests[t].fn();
	}
	return 0;
}
