/*
 * bench_fault: the access patterns of bench_raw's mmap test, through tide.
 * A pool with --budget bytes maps --file (4x the budget, made by
 * `bench_raw mkfile`) and one or more app threads touch it in 4 KiB steps.
 * One JSON object per line, like bench_raw.
 *
 * A run is named by a spec, pattern:source:page[:writeback[:threads]]
 *   pattern    seqread, randread, randwrite, seqwrite; permread: each app
 *              thread maps its own slice of the first 80% of the budget,
 *              touches every page once in an order read-ahead cannot follow
 *              (permread_stride: fills that never evict), unmaps, and does
 *              it again until the time is up
 *   source     cache: TIDE_ODIRECT off and the file read into the page cache
 *              first, so a fill costs a memory copy, not a disk read;
 *              disk: O_DIRECT store and the file dropped from the page cache;
 *              mem: the file's bytes in memory, served by a custom store
 *              (tide_map_store) that copies them and completes at once, so
 *              a fill costs a copy and no system call: data already in
 *              memory;
 *              fresh: O_DIRECT store on a new file, allocated but never
 *              written (fills read zeros without a disk read), so seqwrite
 *              measures the eviction of dirty pages alone; the file is
 *              large enough that the writer streams for the whole --secs,
 *              as the raw io_uring writer does
 *   page       region page size, e.g. 4k or 64k
 *   writeback  fixed (default) or direct
 *   threads    app threads (default 1)
 * Other options (TIDE_SPIN_US, TIDE_SERVICE_CPU, TIDE_READ_AHEAD...) come
 * from the environment, so run.sh can compare them without a rebuild.
 *
 * --busy N runs N compute-bound threads beside the app threads for the
 * same time and reports their work as a share of what they did alone
 * (busy_share): what the runtime's polling costs a program's own threads.
 *
 * Usage: bench_fault [--secs S] --file F [--budget N] [--app-cpu C] [--busy N] SPEC...|all
 *        bench_fault --list    (the specs of `all`, one a line)
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_util.h"
#include "tide.h"

static double secs = 1.0;
static const char *file;
static uint64_t file_size;
static uint64_t budget = 256 * MiB;
static int app_cpu = -1;          /* --app-cpu: pin app thread i to (app_cpu + i) % ncpu */
static const char *name_tag;      /* --tag: appended to the names, for environment variants */
static int busy_threads;          /* --busy: compute-bound threads beside the app threads */
static double busy_alone;         /* their rate with nothing else running, measured once */

struct spec {
	char pattern[16], source[8];
	size_t page;
	enum tide_writeback wb;
	int threads;
};

struct worker {
	const struct spec *s;
	tide_pool *pool;         /* permread: each worker maps its own region */
	int fd;
	uint64_t busy_ns;        /* permread: time spent touching, maps excluded */
	char *base;
	uint64_t first, end;     /* bytes of the region this thread walks (seq) */
	uint64_t seed, deadline;
	uint64_t touches;
	struct worker *self0;    /* the first worker: this one's index is w - self0 */
	pthread_t thread;
};

/* The mem source: the whole file in anonymous memory, one store for every
 * region (they map it at their own offsets). */
static char *mem_data;

static int mem_read(void *store, struct tide_io *io, void *buf, size_t len, uint64_t off)
{
	size_t n = off < file_size ? (size_t)(file_size - off < len ? file_size - off : len) : 0;

	(void)store;
	memcpy(buf, mem_data + off, n);
	tide_io_complete(io, (ssize_t)n);
	return 0;
}

static int mem_write(void *store, struct tide_io *io, const void *buf, size_t len, uint64_t off)
{
	size_t n = off < file_size ? (size_t)(file_size - off < len ? file_size - off : len) : 0;

	(void)store;
	memcpy(mem_data + off, buf, n);
	tide_io_complete(io, (ssize_t)n);
	return 0;
}

static int mem_flush(void *store, struct tide_io *io)
{
	(void)store;
	tide_io_complete(io, 0);
	return 0;
}

static const struct tide_store_ops mem_ops = { .read = mem_read, .write = mem_write,
					       .flush = mem_flush };

/* A region of the file at `off`: through its file, or the mem store. */
static char *map(const struct spec *s, tide_pool *pool, int fd, uint64_t off, uint64_t len)
{
	int prot = TIDE_PROT_READ | TIDE_PROT_WRITE;

	if (!strcmp(s->source, "mem"))
		return tide_map_store(pool, &mem_ops, NULL, off, len, prot, s->page);
	return tide_map(pool, fd, (off_t)off, len, prot, s->page);
}

/* CPU seconds this process's service threads (tide-service*) have used so
 * far: utime + stime from /proc/self/task, in clock ticks (10 ms). Where
 * the disk is the limit, the rate hides what a change costs the service
 * thread; this does not. */
static double service_cpu_s(void)
{
	DIR *d = opendir("/proc/self/task");
	long hz = sysconf(_SC_CLK_TCK);
	struct dirent *e;
	double sum = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char path[300], buf[512], *name, *rest;
		unsigned long ut, st;
		size_t n;
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		name = strchr(buf, '(');
		rest = strrchr(buf, ')');
		if (!name || !rest || strncmp(name + 1, "tide-service", 12))
			continue;
		/* After the name: state, ppid, pgrp, session, tty, tpgid, flags,
		 * minflt, cminflt, majflt, cmajflt, then utime and stime. */
		if (sscanf(rest + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			   &ut, &st) == 2)
			sum += (double)(ut + st) / (double)hz;
	}
	closedir(d);
	return sum;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	bool write = strstr(w->s->pattern, "write") != NULL;
	uint64_t sink = 0, npages = file_size / (4 * KiB);

	if (app_cpu >= 0)
		pin_cpu((app_cpu + (int)(w - w->self0)) % (int)sysconf(_SC_NPROCESSORS_ONLN));

	if (!strcmp(w->s->pattern, "permread")) {
		uint64_t n = (w->end - w->first) / (4 * KiB), stride = permread_stride(n);

		/* Map the slice from this thread (a pool with shards serves it
		 * from this CPU's shard), touch every page once, unmap; again
		 * until the deadline. Each pass fills memory the last one freed,
		 * as bench_raw's round trip refills its region. */
		while (now_ns() < w->deadline) {
			char *base = map(w->s, w->pool, w->fd, w->first, w->end - w->first);
			uint64_t pg = 0, t0 = now_ns();

			if (!base)
				die("permread: tide_map: %s", tide_last_error());
			for (uint64_t i = 0; i < n; i++, w->touches++) {
				if (!(w->touches & 255) && now_ns() >= w->deadline)
					break;
				sink += *(volatile char *)(base + pg * 4 * KiB);
				pg = (pg + stride) % n;
			}
			w->busy_ns += now_ns() - t0;
			if (tide_unmap(base) < 0)
				die("permread: tide_unmap: %s", tide_last_error());
		}
	} else if (!strncmp(w->s->pattern, "seq", 3)) {
		/* seqread passes over its slice until the deadline, as the raw
		 * io_uring reader streams for the whole --secs; seqwrite makes
		 * one pass (a second would fill pages the first wrote), which
		 * on a fresh file lasts the whole --secs too. */
		bool again = !write;

		do {
			for (uint64_t off = w->first; off < w->end; off += 4 * KiB, w->touches++) {
				/* Stop at the deadline if a slow path makes a pass too long. */
				if (!(w->touches & 255) && now_ns() >= w->deadline) {
					again = false;
					break;
				}
				if (write)
					*(volatile uint64_t *)(w->base + off) = off;
				else
					sink += *(volatile char *)(w->base + off);
			}
		} while (again);
	} else {
		while (now_ns() < w->deadline) {
			for (int i = 0; i < 64; i++, w->touches++) {
				uint64_t off = (rng_next(&w->seed) % npages) * 4 * KiB;
				if (write)
					*(volatile uint64_t *)(w->base + off) = w->touches;
				else
					sink += *(volatile char *)(w->base + off);
			}
		}
	}
	(void)sink;
	return NULL;
}

/* A compute-bound thread beside the app threads: a program's own work,
 * which a service thread that polls takes CPU from. Counts rounds of a
 * xorshift until the deadline. */
struct busy {
	uint64_t deadline, rounds;
	pthread_t thread;
};

static void *busy_main(void *arg)
{
	struct busy *b = arg;
	uint64_t x = 88172645463325252ull, n = 0;

	while (now_ns() < b->deadline) {
		for (int i = 0; i < 4096; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		n++;
	}
	b->rounds = n + (x == 0);
	return NULL;
}

static void busy_start(struct busy *b, int n, uint64_t deadline)
{
	for (int i = 0; i < n; i++) {
		b[i] = (struct busy){ .deadline = deadline };
		if (pthread_create(&b[i].thread, NULL, busy_main, &b[i]))
			die("pthread_create failed");
	}
}

/* Rounds per second, all busy threads together. */
static double busy_join(struct busy *b, int n, uint64_t start)
{
	uint64_t rounds = 0;

	for (int i = 0; i < n; i++) {
		pthread_join(b[i].thread, NULL);
		rounds += b[i].rounds;
	}
	return (double)rounds * 1e9 / (double)(now_ns() - start);
}

/* Put the file where the spec wants it before the pool reads it. */
static void place_file(int fd, bool cache)
{
	fdatasync(fd);
	if (!cache) {
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		return;
	}
	warm_file(fd, file_size, file);
}

/* The mem source's bytes: the file, read once per process. */
static void load_mem(int fd)
{
	if (mem_data)
		return;
	mem_data = mmap(NULL, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem_data == MAP_FAILED)
		die("no memory for the mem source: %s", strerror(errno));
	for (uint64_t off = 0; off < file_size;) {
		ssize_t n = pread(fd, mem_data + off, file_size - off < 4 * MiB ? file_size - off : 4 * MiB,
				  (off_t)off);
		if (n <= 0)
			die("read %s: %s", file, n < 0 ? strerror(errno) : "short file");
		off += (uint64_t)n;
	}
}

/* A file beside --file, `size` bytes allocated and never written: its
 * unwritten extents read as zeros without a disk read. Unlinked at once. */
static int fresh_file(int data_fd, uint64_t size)
{
	char path[4096];
	int fd, ret;

	snprintf(path, sizeof(path), "%s.fresh.%d", file, (int)getpid());
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		die("create %s: %s", path, strerror(errno));
	unlink(path);
	if ((ret = posix_fallocate(fd, 0, (off_t)size)) != 0)
		die("fallocate %s: %s", path, strerror(ret));
	close(data_fd);
	return fd;
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "bench_fault: a run took far longer than asked: tide hangs?\n";
	write(2, msg, sizeof(msg) - 1);
	_exit(2);
}

static void spec_name(const struct spec *s, char *buf, size_t len)
{
	char tag[24];
	int n = snprintf(buf, len, "tide.%s.%s.%s", s->pattern, s->source,
			 size_tag(s->page, tag, sizeof(tag)));

	if (strstr(s->pattern, "write") && n > 0 && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n, ".%s", tide_writeback_name(s->wb));
	if (s->threads > 1 && n > 0 && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n, ".t%d", s->threads);
	if (busy_threads && n > 0 && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n, ".busy%d", busy_threads);
	/* Pinned runs are named apart: placement is what they measure. */
	if (app_cpu >= 0 && n > 0 && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n, ".pin%d", app_cpu);
	if (name_tag && n > 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, ".%s", name_tag);
}

static void run(const struct spec *s)
{
	bool cache = !strcmp(s->source, "cache"), seq = !strncmp(s->pattern, "seq", 3);
	bool perm = !strcmp(s->pattern, "permread");
	bool write = strstr(s->pattern, "write") != NULL;
	struct tide_options opt;
	struct tide_stats st0, st1;
	struct worker w[64];
	struct busy b[64];
	struct out o;
	tide_pool *pool;
	char name[96];
	int ret;

	spec_name(s, name, sizeof(name));
	int fd = open(file, O_RDWR);
	if (fd < 0)
		die("open %s: %s", file, strerror(errno));
	/* A fresh file has room for 4 GB/s of writes past the budget, so a
	 * writer never runs out of file before the deadline. */
	uint64_t map_size = file_size;
	if (!strcmp(s->source, "fresh")) {
		uint64_t stream = budget + (uint64_t)(secs * 4e9);

		if (stream > map_size)
			map_size = (stream + MiB - 1) / MiB * MiB;
		fd = fresh_file(fd, map_size);
	} else if (!strcmp(s->source, "mem")) {
		load_mem(fd);
	} else {
		place_file(fd, cache);
	}

	tide_options_init(&opt);
	opt.budget = budget;
	opt.page_size = s->page;
	opt.writeback = s->wb;
	opt.odirect = !cache;
	/* Background write-back would blur what eviction costs. */
	opt.flush_interval_ms = 0;
	if ((ret = tide_pool_create(&pool, &opt)) < 0) {
		printf("{\"name\":\"%s\",\"skip\":\"tide_pool_create: %s\"}\n", name,
		       tide_last_error());
		fflush(stdout);
		close(fd);
		return;
	}
	char *base = NULL;
	if (!perm) {
		base = map(s, pool, fd, 0, map_size);
		if (!base)
			die("%s: tide_map: %s (%s)", name, strerror(errno), tide_last_error());
		close(fd);
		fd = -1;
	}

	/* Random patterns and seqwrite start with the pool full, so every miss
	 * evicts (seqwrite: dirty pages), as bench_raw's mmap test does with
	 * the page cache; seqwrite then walks the rest of the file. */
	uint64_t from = seq && write ? budget : 0, to = map_size;
	if (perm)
		to = budget / 10 * 8 / s->page * s->page;
	if ((!seq || write) && !perm)
		for (uint64_t off = 0; off < budget && off < file_size; off += 4 * KiB) {
			if (write)
				base[off] = 1;
			else
				(void)*(volatile char *)(base + off);
		}

	tide_pool_stats(pool, &st0);
	double svc0 = service_cpu_s();
	uint64_t start = now_ns(), deadline = start + (uint64_t)(secs * 1e9);
	uint64_t slice = (to - from) / (uint64_t)s->threads / (4 * KiB) * (4 * KiB);
	busy_start(b, busy_threads, deadline);
	for (int i = 0; i < s->threads; i++) {
		w[i] = (struct worker){ .s = s, .pool = pool, .fd = fd, .base = base,
					.seed = 0x9e3779b9u + 7919u * (uint64_t)i,
					.deadline = deadline, .first = from + slice * (uint64_t)i,
					.end = from + slice * (uint64_t)(i + 1), .self0 = w };
		pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
	}
	uint64_t touches = 0;
	double per_s = 0;
	for (int i = 0; i < s->threads; i++) {
		pthread_join(w[i].thread, NULL);
		touches += w[i].touches;
		/* permread: each thread's rate over its touching time, summed
		 * (bench_raw's two-thread figure is counted the same way). */
		if (perm && w[i].busy_ns)
			per_s += (double)w[i].touches * 1e9 / (double)w[i].busy_ns;
	}
	uint64_t el = now_ns() - start;
	double busy_rate = busy_join(b, busy_threads, start);
	tide_pool_stats(pool, &st1);
	double svc = service_cpu_s() - svc0;
	uint64_t t = now_ns();
	if (base && (ret = tide_unmap(base)) < 0)
		die("%s: tide_unmap: %s (%s)", name, strerror(-ret), tide_last_error());
	double unmap_s = (double)(now_ns() - t) / 1e9;
	if (fd >= 0)
		close(fd);
	tide_pool_destroy(pool);

	double sec = (double)el / 1e9;
	uint64_t faults = st1.faults - st0.faults;
	if (!perm)
		per_s = (double)touches / sec;
	/* permread touches each page once per pass: a touch is a fault. */
	double faults_per_s = perm ? per_s : (double)faults / sec;
	out_begin(&o, name);
	out_u64(&o, "page", s->page);
	out_u64(&o, "threads", (uint64_t)s->threads);
	out_u64(&o, "budget", budget);
	out_u64(&o, "file", map_size);
	out_u64(&o, "touches", touches);
	out_num(&o, "secs", sec);
	out_num(&o, "per_s", per_s);
	out_num(&o, "mbps", per_s * 4096.0 / 1e6);
	out_u64(&o, "faults", faults);
	out_num(&o, "faults_per_s", faults_per_s);
	/* Wall time per fault as an app thread sees it, hits included. */
	out_num(&o, "us_per_fault", faults_per_s > 0 ? 1e6 * s->threads / faults_per_s : 0);
	out_u64(&o, "fills", st1.fills - st0.fills);
	out_num(&o, "fills_per_s", (double)(st1.fills - st0.fills) / sec);
	out_u64(&o, "prefetched", st1.prefetched - st0.prefetched);
	out_u64(&o, "fills_zero", st1.fills_zero - st0.fills_zero);
	out_u64(&o, "coalesced", st1.faults_coalesced - st0.faults_coalesced);
	out_u64(&o, "faults_wp", st1.faults_wp - st0.faults_wp);
	out_u64(&o, "evictions", st1.evictions - st0.evictions);
	out_u64(&o, "evictions_dirty", st1.evictions_dirty - st0.evictions_dirty);
	out_u64(&o, "writebacks", st1.writebacks - st0.writebacks);
	out_u64(&o, "drop_calls", st1.drop_calls - st0.drop_calls);
	out_u64(&o, "evictions_moved", st1.evictions_moved - st0.evictions_moved);
	out_u64(&o, "fills_recycled", st1.fills_recycled - st0.fills_recycled);
	out_u64(&o, "fills_offloaded", st1.fills_offloaded - st0.fills_offloaded);
	if (st1.faults_signal > st0.faults_signal) {
		out_u64(&o, "signal_waits", st1.signal_waits - st0.signal_waits);
		out_u64(&o, "signal_sleeps", st1.signal_sleeps - st0.signal_sleeps);
	}
	out_u64(&o, "spin_rests", st1.spin_rests - st0.spin_rests);
	out_u64(&o, "wake_poll", (uint64_t)st1.wake_poll);
	out_u64(&o, "wake_periods", st1.wake_periods - st0.wake_periods);
	out_u64(&o, "store_reads", st1.store_reads - st0.store_reads);
	out_u64(&o, "store_writes", st1.store_writes - st0.store_writes);
	out_num(&o, "fill_mbps", (double)(st1.bytes_read - st0.bytes_read) / sec / 1e6);
	out_num(&o, "wb_mbps", (double)(st1.bytes_written - st0.bytes_written) / sec / 1e6);
	out_num(&o, "service_cpu", svc / sec);
	if (st1.bytes_written > st0.bytes_written)
		out_num(&o, "service_ms_per_gb",
			svc * 1e3 / ((double)(st1.bytes_written - st0.bytes_written) / 1e9));
	out_u64(&o, "peak_resident", st1.peak_resident_bytes);
	/* Service-side latency: event read to page installed, whole pool life. */
	out_num(&o, "mean_us", (double)st1.latency_mean_ns / 1e3);
	out_num(&o, "p50_us", (double)st1.latency_p50_ns / 1e3);
	out_num(&o, "p99_us", (double)st1.latency_p99_ns / 1e3);
	out_num(&o, "unmap_s", unmap_s);
	out_str(&o, "writeback", tide_writeback_name((enum tide_writeback)st1.writeback));
	out_u64(&o, "odirect", (uint64_t)st1.odirect);
	if (busy_threads) {
		/* The busy threads' work against the same threads alone. */
		out_u64(&o, "busy_threads", (uint64_t)busy_threads);
		out_num(&o, "busy_share", busy_alone > 0 ? busy_rate / busy_alone : 0);
	}
	out_end(&o);
}

static void parse_spec(const char *text, struct spec *s)
{
	char buf[128], *save = NULL, *f[5] = { 0 };
	int n = 0;

	snprintf(buf, sizeof(buf), "%s", text);
	for (char *tok = strtok_r(buf, ":", &save); tok && n < 5; tok = strtok_r(NULL, ":", &save))
		f[n++] = tok;
	if (n < 3)
		die("bad spec '%s': pattern:source:page[:writeback[:threads]]", text);
	memset(s, 0, sizeof(*s));
	snprintf(s->pattern, sizeof(s->pattern), "%s", f[0]);
	snprintf(s->source, sizeof(s->source), "%s", f[1]);
	s->page = parse_size(f[2]);
	s->wb = TIDE_WRITEBACK_FIXED;
	if (n > 3 && !strcmp(f[3], "direct"))
		s->wb = TIDE_WRITEBACK_DIRECT;
	else if (n > 3 && strcmp(f[3], "fixed"))
		die("bad write-back '%s' in '%s'", f[3], text);
	s->threads = n > 4 ? atoi(f[4]) : 1;
	if (strcmp(s->source, "cache") && strcmp(s->source, "disk") && strcmp(s->source, "fresh") &&
	    strcmp(s->source, "mem"))
		die("bad source '%s' in '%s'", s->source, text);
	if (strcmp(s->pattern, "seqread") && strcmp(s->pattern, "randread") &&
	    strcmp(s->pattern, "randwrite") && strcmp(s->pattern, "seqwrite") &&
	    strcmp(s->pattern, "permread"))
		die("bad pattern '%s' in '%s'", s->pattern, text);
	if (s->threads < 1 || s->threads > 64)
		die("bad thread count in '%s'", text);
}

/* The default matrix: every figure run.sh puts beside a raw limit. */
static const char *const all_specs[] = {
	"permread:cache:4k", "randread:cache:4k", "seqread:cache:4k", "randread:cache:4k:fixed:2",
	"randread:cache:64k", "seqread:cache:64k",
	"seqread:disk:4k", "randread:disk:4k", "randwrite:disk:4k:fixed",
	"randwrite:disk:4k:direct", "seqread:disk:64k", "randread:disk:64k",
	"randwrite:disk:64k:fixed", "randwrite:disk:64k:direct",
	"seqwrite:disk:64k:fixed", "seqwrite:disk:64k:direct", "randread:disk:4k:fixed:8",
	"seqwrite:fresh:64k:fixed", "seqwrite:fresh:64k:direct",
};

int main(int argc, char **argv)
{
	struct spec s;
	struct stat st;
	int i;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: bench_fault [--secs S] --file F [--budget N] [--app-cpu C] [--busy N] [--tag T] SPEC...|all\n"
		       "       bench_fault --list\n"
		       "  SPEC = pattern:source:page[:writeback[:threads]] (see the top of bench_fault.c)\n");
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "--list")) {
		for (size_t k = 0; k < sizeof(all_specs) / sizeof(all_specs[0]); k++)
			printf("%s\n", all_specs[k]);
		return 0;
	}
	for (i = 1; i < argc && argv[i][0] == '-'; i += 2) {
		if (i + 1 >= argc)
			die("%s needs a value", argv[i]);
		if (!strcmp(argv[i], "--secs"))
			secs = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--file"))
			file = argv[i + 1];
		else if (!strcmp(argv[i], "--budget"))
			budget = parse_size(argv[i + 1]);
		else if (!strcmp(argv[i], "--app-cpu"))
			app_cpu = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--tag"))
			name_tag = argv[i + 1];
		else if (!strcmp(argv[i], "--busy"))
			busy_threads = atoi(argv[i + 1]);
		else
			die("unknown option %s", argv[i]);
	}
	if (!file || secs <= 0 || i >= argc)
		die("usage: bench_fault [--secs S] --file F [--budget N] SPEC...|all\n"
		    "  SPEC = pattern:source:page[:writeback[:threads]]");
	if (stat(file, &st) < 0)
		die("%s: %s (make it with bench_raw mkfile)", file, strerror(errno));
	file_size = (uint64_t)st.st_size;
	if (busy_threads < 0 || busy_threads > 64)
		die("--busy takes 0 to 64 threads");
	if (busy_threads) {
		struct busy b[64];
		uint64_t start = now_ns();

		busy_start(b, busy_threads, start + (uint64_t)(secs * 1e9));
		busy_alone = busy_join(b, busy_threads, start);
	}
	signal(SIGALRM, on_alarm);
	for (; i < argc; i++) {
		size_t n = !strcmp(argv[i], "all") ? sizeof(all_specs) / sizeof(all_specs[0]) : 1;
		for (size_t k = 0; k < n; k++) {
			parse_spec(n > 1 ? all_specs[k] : argv[i], &s);
			/* A run is bounded by secs, so only a hang takes this long. */
			alarm((unsigned)(secs * 5) + 60);
			run(&s);
			alarm(0);
		}
	}
	return 0;
}
