/*
 * Helpers shared by bench_raw.c and bench_fault.c: clocks, CPU pinning,
 * latency samples and their percentiles, and the one-JSON-object-per-line
 * output that bench/run.sh aggregates. Header-only so the benchmark list in
 * bench/meson.build stays one source file per program.
 */
#ifndef TIDE_BENCH_UTIL_H
#define TIDE_BENCH_UTIL_H

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <unistd.h>

#define KiB (1024ull)
#define MiB (1024ull * 1024)

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Benchmarks may exit: they are programs, not the library. */
/* CPU time of the calling thread. */
static inline uint64_t thread_cpu_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static inline void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "bench: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

/* Pin the calling thread; -1 leaves it to the scheduler. */
static inline void pin_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	if (cpu < 0) {
		/* Unpinned means every CPU: undo an earlier pin of this thread,
		 * or the one a new thread inherited from its creator. */
		for (int c = 0; c < (int)sysconf(_SC_NPROCESSORS_ONLN) && c < CPU_SETSIZE; c++)
			CPU_SET(c, &set);
	} else {
		CPU_SET(cpu, &set);
	}
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		die("sched_setaffinity(%d): %s", cpu, strerror(errno));
}

/* xorshift64*: cheap and good enough to pick random pages. */
static inline uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static inline uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/* permread's walk over n pages: a stride coprime with n visits every page
 * once per pass. Near n times the golden ratio's fraction, so that no touch
 * lands next to any of the last sixteen (k * stride mod n stays far from
 * 0 and n for small k): the walk is not several interleaved sequential
 * scans, which read-ahead would follow (a stride of n/2 + 1 on an odd n
 * was two, and tide's runs per region read it ahead). */
static inline uint64_t permread_stride(uint64_t n)
{
	uint64_t stride = (uint64_t)((double)n * 0.6180339887) + 1;

	while (n > 1 && gcd(stride, n) != 1)
		stride++;
	return stride;
}

/* Sizes accept K/M/G suffixes (powers of two). */
static inline uint64_t parse_size(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	switch (*end) {
	case 'k': case 'K': v *= KiB; break;
	case 'm': case 'M': v *= MiB; break;
	case 'g': case 'G': v *= 1024.0 * MiB; break;
	case '\0': break;
	default: die("bad size '%s'", s);
	}
	if (v <= 0)
		die("bad size '%s'", s);
	return (uint64_t)v;
}

/* Latency samples in ns. Past `cap` the samples are dropped but still
 * counted, so the mean stays exact and the percentiles come from a prefix. */
struct lat {
	uint64_t *v;
	size_t n, cap;
	uint64_t count, sum;
};

static inline void lat_init(struct lat *l, size_t cap)
{
	memset(l, 0, sizeof(*l));
	l->v = malloc(cap * sizeof(*l->v));
	if (!l->v)
		die("out of memory for %zu samples", cap);
	l->cap = cap;
}

static inline void lat_add(struct lat *l, uint64_t ns)
{
	l->count++;
	l->sum += ns;
	if (l->n < l->cap)
		l->v[l->n++] = ns;
}

static inline void lat_merge(struct lat *to, const struct lat *from)
{
	for (size_t i = 0; i < from->n; i++)
		if (to->n < to->cap)
			to->v[to->n++] = from->v[i];
	to->count += from->count;
	to->sum += from->sum;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Percentile q (0..1) in µs; sorts the samples in place. */
static inline double lat_pct_us(struct lat *l, double q)
{
	if (!l->n)
		return 0;
	qsort(l->v, l->n, sizeof(*l->v), cmp_u64);
	size_t i = (size_t)(q * (double)(l->n - 1) + 0.5);
	return (double)l->v[i] / 1e3;
}

static inline double lat_mean_us(const struct lat *l)
{
	return l->count ? (double)l->sum / (double)l->count / 1e3 : 0;
}

static inline void lat_free(struct lat *l)
{
	free(l->v);
	l->v = NULL;
}

/*
 * One result line: {"name":"uffd.same.4k","k":v,...}. `name` is the key
 * run.sh groups repetitions by; values are numbers or short strings
 * without quotes or commas. Built in a buffer and written in one call so
 * lines from forked children do not interleave.
 */
struct out {
	char buf[2048];
	size_t len;
};

static inline void out_add(struct out *o, const char *fmt, ...)
{
	va_list ap;

	if (o->len >= sizeof(o->buf))
		return;
	va_start(ap, fmt);
	int n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

static inline void out_begin(struct out *o, const char *name)
{
	o->len = 0;
	out_add(o, "{\"name\":\"%s\"", name);
}

static inline void out_str(struct out *o, const char *k, const char *v)
{
	out_add(o, ",\"%s\":\"%s\"", k, v);
}

static inline void out_num(struct out *o, const char *k, double v)
{
	out_add(o, ",\"%s\":%.6g", k, v);
}

static inline void out_u64(struct out *o, const char *k, uint64_t v)
{
	out_add(o, ",\"%s\":%llu", k, (unsigned long long)v);
}

static inline void out_lat(struct out *o, struct lat *l)
{
	out_num(o, "mean_us", lat_mean_us(l));
	out_num(o, "p50_us", lat_pct_us(l, 0.50));
	out_num(o, "p99_us", lat_pct_us(l, 0.99));
}

static inline void out_end(struct out *o)
{
	out_add(o, "}\n");
	fwrite(o->buf, 1, o->len, stdout);
	fflush(stdout);
}

static inline const char *size_tag(size_t bytes, char *buf, size_t len)
{
	if (bytes >= MiB && !(bytes % MiB))
		snprintf(buf, len, "%zum", (size_t)(bytes / MiB));
	else
		snprintf(buf, len, "%zuk", (size_t)(bytes / KiB));
	return buf;
}

/* Anonymous memory aligned to `align`, the slack around it unmapped; in
 * transparent huge pages when `huge`, else never in them. */
static inline char *map_anon(size_t len, size_t align, bool huge)
{
	char *p = mmap(NULL, len + align, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		die("mmap %zu: %s", len, strerror(errno));
	char *a = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (p + align > a)
		munmap(a + len, (size_t)(p + align - a));
	madvise(a, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return a;
}

/* The first `size` bytes of the file open on fd (`name` for errors) read
 * into the page cache, so fills from it cost a copy, not a disk read. */
static inline void warm_file(int fd, uint64_t size, const char *name)
{
	char *buf = malloc(4 * MiB);

	if (!buf)
		die("out of memory");
	for (uint64_t off = 0; off < size; off += 4 * MiB)
		if (pread(fd, buf, 4 * MiB, (off_t)off) < 0)
			die("warm %s: %s", name, strerror(errno));
	free(buf);
}

/* Without THP: a fault would be a 2 MiB one; the bench wants pages. */
static inline char *map_aligned(size_t len, size_t align)
{
	return map_anon(len, align, false);
}

#endif /* TIDE_BENCH_UTIL_H */
