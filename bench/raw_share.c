/*
 * pager.rand.sigbus.4k[.t2]: a minimal pager serving random 4 KiB faults on
 * the faulting thread, one app thread and then two sharing one region: the
 * limit for tide's full-pool figures with TIDE_SIGNAL_FAULTS, and for what
 * two threads on one region leave of twice one.
 *
 * The region is as large as --file and registered with a uffd opened with
 * UFFD_FEATURE_SIGBUS; the app threads touch random pages of it (unpinned,
 * as bench_fault's randread:cache:4k[:fixed:2]). A missing page raises
 * SIGBUS in the thread that touched it, whose handler reads the page from
 * the page cache (pread), puts it in (UFFDIO_COPY; EEXIST when the other
 * thread was first) and, once the thread holds its share of --budget,
 * drops its 256 oldest pages in one process_madvise(MADV_DONTNEED), as tide
 * batches its drops (one madvise per page where the kernel refuses the
 * vector). Each thread keeps its own pages: no lock between them. What two
 * threads still share is the kernel's: the page tables and VMA of the
 * region, the uffd, the file, the memory cgroup, and each drop's TLB
 * shootdown on the vCPU the other one runs on.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bench_raw.h"

#define DROP_BATCH 256

struct sharer {
	char **fifo;              /* pages this thread put in, oldest at head */
	size_t keep, n, head;
	uint64_t faults, touches, seed, deadline;
	char *buf;                /* the page pread lands in */
	pthread_t thread;
};

static struct {
	int uffd, fd, pidfd;
	char *base;
	size_t len;
} sh;

static __thread struct sharer *me;

/* The thread's oldest DROP_BATCH pages leave in one call. */
static void drop_oldest(struct sharer *s)
{
	struct iovec iov[DROP_BATCH];
	ssize_t done = -1;
	size_t i;

	for (i = 0; i < DROP_BATCH; i++) {
		iov[i].iov_base = s->fifo[(s->head + i) % s->keep];
		iov[i].iov_len = 4 * KiB;
	}
	if (sh.pidfd >= 0)
		done = syscall(SYS_process_madvise, sh.pidfd, iov, (size_t)DROP_BATCH,
			       MADV_DONTNEED, 0U);
	if (done < 0)
		for (i = 0; i < DROP_BATCH; i++)
			madvise(iov[i].iov_base, iov[i].iov_len, MADV_DONTNEED);
	s->head = (s->head + DROP_BATCH) % s->keep;
	s->n -= DROP_BATCH;
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct sharer *s = me;
	char *a = (char *)((uintptr_t)si->si_addr & ~(uintptr_t)(4 * KiB - 1));
	int ret;

	(void)sig;
	(void)uc;
	if (pread(sh.fd, s->buf, 4 * KiB, (off_t)(a - sh.base)) != (ssize_t)(4 * KiB))
		die("pread %s: %s", file, strerror(errno));
	ret = tide__uffd_copy(sh.uffd, a, s->buf, 4 * KiB, UFFDIO_COPY_MODE_DONTWAKE, NULL);
	if (ret == -EEXIST)
		return;
	if (ret < 0)
		die("UFFDIO_COPY in the SIGBUS handler: %s", strerror(-ret));
	s->faults++;
	if (s->n == s->keep)
		drop_oldest(s);
	s->fifo[(s->head + s->n++) % s->keep] = a;
}

static void *sharer_main(void *arg)
{
	struct sharer *s = arg;
	size_t pages = sh.len / (4 * KiB);
	uint64_t sink = 0;

	me = s;
	pin_cpu(-1);
	while (now_ns() < s->deadline) {
		for (int i = 0; i < 256; i++)
			sink += *(volatile char *)(sh.base + rng_next(&s->seed) % pages * 4 * KiB);
		s->touches += 256;
	}
	(void)sink;
	return NULL;
}

static void share_one(int nthreads)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO }, old;
	struct sharer s[2];
	uint64_t start, faults = 0, touches = 0;
	char name[48];
	struct out o;
	int ret;

	snprintf(name, sizeof(name), "pager.rand.sigbus.4k%s", nthreads > 1 ? ".t2" : "");
	sh.uffd = tide__uffd_open(0, NULL);
	if (sh.uffd < 0)
		die("userfaultfd: %s", strerror(-sh.uffd));
	if ((ret = tide__uffd_api(sh.uffd, UFFD_FEATURE_SIGBUS, NULL)) < 0) {
		printf("{\"name\":\"%s\",\"skip\":\"no UFFD_FEATURE_SIGBUS (%s)\"}\n", name,
		       strerror(-ret));
		close(sh.uffd);
		return;
	}
	sh.len = file_size / (4 * KiB) * 4 * KiB;
	sh.base = map_aligned(sh.len, 2 * MiB);
	if ((ret = tide__uffd_register(sh.uffd, sh.base, sh.len, UFFDIO_REGISTER_MODE_MISSING,
				       NULL)) < 0)
		die("register: %s", strerror(-ret));
	for (int t = 0; t < nthreads; t++) {
		s[t] = (struct sharer){ .seed = 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1) };
		s[t].keep = budget / (uint64_t)nthreads / (4 * KiB) / DROP_BATCH * DROP_BATCH;
		if (s[t].keep < DROP_BATCH)
			s[t].keep = DROP_BATCH;
		s[t].fifo = calloc(s[t].keep, sizeof(*s[t].fifo));
		s[t].buf = map_aligned(4 * KiB, 4 * KiB);
		if (!s[t].fifo)
			die("out of memory");
	}
	sigaction(SIGBUS, &sa, &old);
	start = now_ns();
	for (int t = 0; t < nthreads; t++) {
		s[t].deadline = start + (uint64_t)(secs * 1e9);
		if (pthread_create(&s[t].thread, NULL, sharer_main, &s[t]))
			die("pthread_create failed");
	}
	for (int t = 0; t < nthreads; t++) {
		pthread_join(s[t].thread, NULL);
		faults += s[t].faults;
		touches += s[t].touches;
	}
	double took = (double)(now_ns() - start) / 1e9;
	sigaction(SIGBUS, &old, NULL);

	out_begin(&o, name);
	out_u64(&o, "page", 4 * KiB);
	out_u64(&o, "threads", (uint64_t)nthreads);
	out_u64(&o, "faults", faults);
	out_u64(&o, "touches", touches);
	out_num(&o, "secs", took);
	out_num(&o, "per_s", (double)faults / took);
	out_num(&o, "touches_per_s", (double)touches / took);
	out_end(&o);
	for (int t = 0; t < nthreads; t++) {
		free(s[t].fifo);
		munmap(s[t].buf, 4 * KiB);
	}
	munmap(sh.base, sh.len);
	close(sh.uffd);
}

void test_share(void)
{
	sh.fd = open_file(O_RDONLY);
	warm_file(sh.fd, file_size, file);
	sh.pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0U);
	share_one(1);
	share_one(2);
	if (sh.pidfd >= 0)
		close(sh.pidfd);
	close(sh.fd);
}
