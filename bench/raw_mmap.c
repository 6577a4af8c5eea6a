/*
 * bench_raw mmap: the kernel's own mmap of --file, from a child in a fresh
 * cgroup v1 whose memory limit is --budget, page cache of the file dropped
 * first: sequential reads, random reads and random writes, as tide's
 * bench_fault touches them.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_raw.h"

#define CGROUP_ROOT "/sys/fs/cgroup/memory"
static char cgroup_dir[256];
static volatile pid_t mmap_child_pid;

static int cg_write(const char *what, const char *val)
{
	char path[512];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", cgroup_dir, what);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static void cgroup_remove(void)
{
	if (!cgroup_dir[0])
		return;
	/* The charged page cache is reparented once the last task leaves, which
	 * can take a moment after the child is reaped. */
	for (int i = 0; i < 100; i++) {
		if (rmdir(cgroup_dir) == 0 || errno == ENOENT) {
			cgroup_dir[0] = 0;
			return;
		}
		usleep(20000);
	}
	fprintf(stderr, "bench: could not remove %s: %s\n", cgroup_dir, strerror(errno));
}

static void on_signal(int sig)
{
	if (mmap_child_pid > 0) {
		kill(mmap_child_pid, SIGKILL);
		waitpid(mmap_child_pid, NULL, 0);
	}
	cgroup_remove();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Touch `bytes` from the start of the mapping, untimed, so that random
 * patterns run with the cache already full and every miss has to evict. */
static void prime(char *m, uint64_t bytes, bool write)
{
	for (uint64_t off = 0; off < bytes && off < file_size; off += 4 * KiB) {
		if (write)
			m[off] = 1;
		else
			(void)*(volatile char *)(m + off);
	}
}

static void mmap_child(const char *pattern)
{
	char pid[32], name[64];
	bool seq = !strcmp(pattern, "seqread"), wr = !strcmp(pattern, "randwrite");
	uint64_t rng = 0x9e3779b9, touches = 0, sink = 0, npages, start, el, sync_ns = 0;
	struct rusage r0, r1;
	struct out o;
	int ret;

	snprintf(pid, sizeof(pid), "%d", getpid());
	if ((ret = cg_write("cgroup.procs", pid)) < 0)
		die("join %s: %s", cgroup_dir, strerror(-ret));
	int fd = open_file(O_RDWR);
	npages = file_size / (4 * KiB);
	/* Start cold: what the page cache holds of the file must be read again. */
	fdatasync(fd);
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	char *m = mmap(NULL, file_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (!seq) {
		prime(m, budget, wr);
		madvise(m, file_size, MADV_RANDOM);
	}
	getrusage(RUSAGE_SELF, &r0);
	start = now_ns();
	uint64_t deadline = start + (uint64_t)(secs * 1e9);
	if (seq) {
		/* Passes until the deadline, as bench_fault's seqread does. */
		for (bool again = true; again;)
			for (uint64_t off = 0; off < file_size; off += 4 * KiB, touches++) {
				if (!(touches & 255) && now_ns() >= deadline) {
					again = false;
					break;
				}
				sink += *(volatile char *)(m + off);
			}
	} else {
		while (now_ns() < deadline) {
			for (int i = 0; i < 64; i++, touches++) {
				uint64_t off = (rng_next(&rng) % npages) * 4 * KiB;
				if (wr)
					*(volatile uint64_t *)(m + off) = touches;
				else
					sink += *(volatile char *)(m + off);
			}
		}
	}
	el = now_ns() - start;
	getrusage(RUSAGE_SELF, &r1);
	if (wr) {
		uint64_t t = now_ns();
		msync(m, file_size, MS_SYNC);
		sync_ns = now_ns() - t;
	}
	uint64_t faults = (uint64_t)(r1.ru_majflt - r0.ru_majflt + r1.ru_minflt - r0.ru_minflt);
	snprintf(name, sizeof(name), "mmap.%s.4k", pattern);
	out_begin(&o, name);
	out_u64(&o, "budget", budget);
	out_u64(&o, "file", file_size);
	out_u64(&o, "touches", touches);
	out_u64(&o, "faults", faults);
	out_u64(&o, "majflt", (uint64_t)(r1.ru_majflt - r0.ru_majflt));
	out_num(&o, "secs", (double)el / 1e9);
	out_num(&o, "per_s", (double)touches * 1e9 / (double)el);
	out_num(&o, "faults_per_s", (double)faults * 1e9 / (double)el);
	out_num(&o, "mbps", (double)touches * 4096.0 / ((double)el / 1e9) / 1e6);
	out_num(&o, "sync_s", (double)sync_ns / 1e9);
	out_str(&o, "advice", seq ? "normal" : "random");
	out_end(&o);
	(void)sink;
	munmap(m, file_size);
	close(fd);
}

static void mmap_one(const char *pattern)
{
	char val[32];
	int ret, status;

	snprintf(cgroup_dir, sizeof(cgroup_dir), "%s/tide-bench-%d", CGROUP_ROOT, getpid());
	if (mkdir(cgroup_dir, 0755) < 0) {
		printf("{\"name\":\"mmap.%s.4k\",\"skip\":\"cannot create %s: %s (cgroup v1 "
		       "memory controller not writable)\"}\n", pattern, cgroup_dir, strerror(errno));
		cgroup_dir[0] = 0;
		return;
	}
	snprintf(val, sizeof(val), "%llu", (unsigned long long)budget);
	if ((ret = cg_write("memory.limit_in_bytes", val)) < 0) {
		printf("{\"name\":\"mmap.%s.4k\",\"skip\":\"cannot write memory.limit_in_bytes: %s\"}\n",
		       pattern, strerror(-ret));
		cgroup_remove();
		return;
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		mmap_child(pattern);
		_exit(0);
	}
	mmap_child_pid = pid;
	waitpid(pid, &status, 0);
	mmap_child_pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fprintf(stderr, "bench: mmap %s child failed (status 0x%x)\n", pattern, status);
	cgroup_remove();
}

void test_mmap(void)
{
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	mmap_one("seqread");
	mmap_one("randread");
	mmap_one("randwrite");
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
}
