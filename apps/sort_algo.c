/*
 * A sort for memory that lives on storage: initial runs sorted by an LSD
 * radix sort while they are resident, then bottom-up merge passes.
 *
 * Why this shape: a pager (tide or the kernel's page cache) is fast when
 * every thread walks a few sequential streams and slow when it touches pages
 * at random. Quicksort's partitions are sequential but log2(n) deep over the
 * whole file; a whole-file radix sort scatters into 256 streams per thread,
 * which is 256 resident pages per thread per pass. Here:
 *  - runs of job->run keys (a fraction of the budget per thread) are radix
 *    sorted between data and the matching range of scratch; both stay
 *    resident for the whole run, so the pager sees each page read once and
 *    written once;
 *  - each merge pass streams the whole array from one buffer into the other:
 *    per thread two sequential input streams and one output stream. The
 *    output of a pass is split evenly between the threads by co-ranking, so
 *    every thread does the same work whatever the run lengths.
 * The scratch buffer is the same kind of memory as the data (a second paged
 * region, under the same budget), so memory stays bounded by the budget.
 * The number of radix passes (8 or 7) is picked so that, after all merge
 * passes, the result ends up in data and no copy pass is needed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sort_algo.h"

#define PROGRESS_STEP (1u << 17)    /* keys (1 MiB) between progress updates */

/* splitmix64's finaliser: a bijection on 64 bits with good avalanche. */
static inline uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static inline uint64_t mix2(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

/* ---- a team of threads running one function over slices ---- */

struct team;
typedef void team_fn(struct team *t, unsigned id);
struct team {
	struct sort_job *job;
	team_fn *fn;
	void *arg;
	uint64_t next;           /* atomic work counter, for dynamic work */
	struct sort_sum *sums;   /* one per thread */
	uint64_t *counts;        /* one per thread */
};

struct member {
	struct team *team;
	unsigned id;
};

static void *member_main(void *arg)
{
	struct member *m = arg;

	m->team->fn(m->team, m->id);
	return NULL;
}

/* Run fn on job->threads threads (the caller is one of them) and wait for all. */
static int team_run(struct team *t)
{
	unsigned n = t->job->threads ? t->job->threads : 1;
	pthread_t tid[n];
	struct member m[n];
	unsigned started = 1;
	int ret = 0;

	t->next = 0;
	for (unsigned i = 1; i < n; i++) {
		m[i] = (struct member){ t, i };
		int err = pthread_create(&tid[i], NULL, member_main, &m[i]);
		if (err) {
			ret = -err;
			break;
		}
		started++;
	}
	/* If some threads could not start, the caller's share still runs but the
	 * slices of the missing ones would not: report the error instead. */
	if (!ret)
		t->fn(t, 0);
	for (unsigned i = 1; i < started; i++)
		pthread_join(tid[i], NULL);
	return ret;
}

static void slice(size_t n, unsigned parts, unsigned id, size_t *lo, size_t *hi)
{
	*lo = (size_t)((unsigned __int128)n * id / parts);
	*hi = (size_t)((unsigned __int128)n * (id + 1) / parts);
}

/* ---- generate ---- */

static void generate_slice(struct team *t, unsigned id)
{
	struct sort_job *job = t->job;
	uint64_t seed = *(uint64_t *)t->arg;
	struct sort_sum s = { 0, 0, 0 };
	size_t lo, hi;

	slice(job->n, job->threads, id, &lo, &hi);
	for (size_t i = lo; i < hi; i++) {
		/* Counter-based, so every thread can start at its own index. */
		uint64_t key = mix(seed + (i + 1) * 0x9e3779b97f4a7c15ull);

		job->data[i] = key;
		s.sum += mix(key);
		s.xor ^= mix2(key);
		if ((i - lo) % PROGRESS_STEP == PROGRESS_STEP - 1)
			cli_progress_add(job->progress, PROGRESS_STEP * 8);
	}
	s.count = hi - lo;
	cli_progress_add(job->progress, ((hi - lo) % PROGRESS_STEP) * 8);
	t->sums[id] = s;
}

static void sum_merge(struct sort_sum *out, const struct sort_sum *parts, unsigned n)
{
	*out = (struct sort_sum){ 0, 0, 0 };
	for (unsigned i = 0; i < n; i++) {
		out->sum += parts[i].sum;
		out->xor ^= parts[i].xor;
		out->count += parts[i].count;
	}
}

int sort_generate(struct sort_job *job, uint64_t seed, struct sort_sum *sum)
{
	struct sort_sum sums[job->threads];
	struct team t = { .job = job, .fn = generate_slice, .arg = &seed, .sums = sums };
	int ret = team_run(&t);

	if (ret == 0)
		sum_merge(sum, sums, job->threads);
	return ret;
}

/* ---- initial runs: LSD radix sort while resident ---- */

#define RADIX_MAX_BITS 10
#define RADIX_MAX_PASSES 8

struct radix_plan {
	unsigned passes;
	unsigned shift[RADIX_MAX_PASSES];
	unsigned bits[RADIX_MAX_PASSES];
};

/* Split 64 bits into `passes` digits of at most RADIX_MAX_BITS bits. */
static void radix_plan(struct radix_plan *p, unsigned passes)
{
	unsigned shift = 0;

	p->passes = passes;
	for (unsigned i = 0; i < passes; i++) {
		unsigned bits = (64 - shift + (passes - i) - 1) / (passes - i);

		p->shift[i] = shift;
		p->bits[i] = bits;
		shift += bits;
	}
}

/* Sort a[0..m) with tmp[0..m); the result lands in a if passes is even, else tmp. */
static void radix_run(uint64_t *a, uint64_t *tmp, size_t m, const struct radix_plan *p,
		      size_t (*hist)[1 << RADIX_MAX_BITS])
{
	for (unsigned d = 0; d < p->passes; d++)
		memset(hist[d], 0, sizeof(size_t) << p->bits[d]);
	/* One read of the run computes every digit's histogram. */
	for (size_t i = 0; i < m; i++) {
		uint64_t k = a[i];

		for (unsigned d = 0; d < p->passes; d++)
			hist[d][(k >> p->shift[d]) & ((1u << p->bits[d]) - 1)]++;
	}
	for (unsigned d = 0; d < p->passes; d++) {
		size_t *h = hist[d];
		unsigned shift = p->shift[d];
		uint64_t mask = (1u << p->bits[d]) - 1;
		size_t at = 0;

		for (size_t b = 0; b < ((size_t)1 << p->bits[d]); b++) {
			size_t c = h[b];

			h[b] = at;
			at += c;
		}
		for (size_t i = 0; i < m; i++) {
			uint64_t k = a[i];

			tmp[h[(k >> shift) & mask]++] = k;
		}
		uint64_t *swap = a;
		a = tmp;
		tmp = swap;
	}
}

static void runs_worker(struct team *t, unsigned id)
{
	struct sort_job *job = t->job;
	const struct radix_plan *plan = t->arg;
	/* 64 KiB of counters: on the stack, which holds 8 MiB per thread. */
	size_t hist[RADIX_MAX_PASSES][1 << RADIX_MAX_BITS];
	size_t nruns = (job->n + job->run - 1) / job->run;
	uint64_t r;

	(void)id;
	/* Runs are handed out one at a time so a slow thread (one that waits on
	 * more faults) does not hold up the others. */
	while ((r = __atomic_fetch_add(&t->next, 1, __ATOMIC_RELAXED)) < nruns) {
		size_t lo = r * job->run;
		size_t m = job->n - lo < job->run ? job->n - lo : job->run;

		radix_run(job->data + lo, job->scratch + lo, m, plan, hist);
		cli_progress_add(job->progress, m * 8);
	}
}

/* ---- merge passes ---- */

unsigned sort_merge_passes(const struct sort_job *job)
{
	size_t nruns = (job->n + job->run - 1) / job->run;
	unsigned passes = 0;

	while (((size_t)1 << passes) < nruns)
		passes++;
	return passes;
}

/* How many of the first k merged keys come from a (ties go to a first). */
static size_t co_rank(size_t k, const uint64_t *a, size_t m, const uint64_t *b, size_t n)
{
	size_t lo = k > n ? k - n : 0;
	size_t hi = k < m ? k : m;

	while (lo < hi) {
		size_t i = lo + (hi - lo) / 2;
		size_t j = k - i;

		if (i < m && j > 0 && a[i] <= b[j - 1])
			lo = i + 1;
		else
			hi = i;
	}
	return lo;
}

struct merge_pass {
	const uint64_t *src;
	uint64_t *dst;
	size_t width;            /* keys per input run */
};

static void merge_worker(struct team *t, unsigned id)
{
	struct sort_job *job = t->job;
	const struct merge_pass *mp = t->arg;
	size_t n = job->n, w = mp->width;
	size_t lo, hi;

	slice(n, job->threads, id, &lo, &hi);
	/* Every pair of runs whose output overlaps [lo, hi). */
	for (size_t base = lo - lo % (2 * w); base < hi; base += 2 * w) {
		size_t mid = base + w < n ? base + w : n;
		size_t end = base + 2 * w < n ? base + 2 * w : n;
		const uint64_t *a = mp->src + base, *b = mp->src + mid;
		size_t m = mid - base, nb = end - mid;
		size_t k0 = (lo > base ? lo : base) - base;
		size_t k1 = (hi < end ? hi : end) - base;
		size_t i = co_rank(k0, a, m, b, nb), j = k0 - i;
		size_t ie = co_rank(k1, a, m, b, nb), je = k1 - ie;
		uint64_t *out = mp->dst + base + k0;
		size_t emitted = 0;

		while (i < ie && j < je) {
			out[emitted++] = a[i] <= b[j] ? a[i++] : b[j++];
			if (emitted % PROGRESS_STEP == 0)
				cli_progress_add(job->progress, PROGRESS_STEP * 8);
		}
		while (i < ie) {
			out[emitted++] = a[i++];
			if (emitted % PROGRESS_STEP == 0)
				cli_progress_add(job->progress, PROGRESS_STEP * 8);
		}
		while (j < je) {
			out[emitted++] = b[j++];
			if (emitted % PROGRESS_STEP == 0)
				cli_progress_add(job->progress, PROGRESS_STEP * 8);
		}
		cli_progress_add(job->progress, (emitted % PROGRESS_STEP) * 8);
	}
}

int sort_keys(struct sort_job *job)
{
	unsigned merges = sort_merge_passes(job);
	struct radix_plan plan;
	struct team t = { .job = job };
	char label[48];
	int ret;

	/* An odd number of merge passes needs the runs in scratch to finish in data. */
	radix_plan(&plan, merges % 2 ? 7 : 8);
	t.fn = runs_worker;
	t.arg = &plan;
	cli_progress_label(job->progress, "sort: runs");
	ret = team_run(&t);
	if (ret < 0)
		return ret;

	struct merge_pass mp = {
		.src = merges % 2 ? job->scratch : job->data,
		.dst = merges % 2 ? job->data : job->scratch,
		.width = job->run,
	};
	for (unsigned pass = 0; pass < merges; pass++) {
		snprintf(label, sizeof(label), "sort: merge %u/%u", pass + 1, merges);
		cli_progress_label(job->progress, label);
		t.fn = merge_worker;
		t.arg = &mp;
		ret = team_run(&t);
		if (ret < 0)
			return ret;
		const uint64_t *swap = mp.src;
		mp.src = mp.dst;
		mp.dst = (uint64_t *)swap;
		mp.width *= 2;
	}
	return 0;
}

/* ---- verify ---- */

static void verify_slice(struct team *t, unsigned id)
{
	struct sort_job *job = t->job;
	struct sort_sum s = { 0, 0, 0 };
	uint64_t bad = 0;
	size_t lo, hi;

	slice(job->n, job->threads, id, &lo, &hi);
	for (size_t i = lo; i < hi; i++) {
		uint64_t key = job->data[i];

		/* The first key of a slice is checked against its left neighbour too. */
		if (i > 0 && job->data[i - 1] > key)
			bad++;
		s.sum += mix(key);
		s.xor ^= mix2(key);
		if ((i - lo) % PROGRESS_STEP == PROGRESS_STEP - 1)
			cli_progress_add(job->progress, PROGRESS_STEP * 8);
	}
	s.count = hi - lo;
	cli_progress_add(job->progress, ((hi - lo) % PROGRESS_STEP) * 8);
	t->sums[id] = s;
	t->counts[id] = bad;
}

int sort_verify(struct sort_job *job, uint64_t *inversions, struct sort_sum *sum)
{
	struct sort_sum sums[job->threads];
	uint64_t bad[job->threads];
	struct team t = { .job = job, .fn = verify_slice, .sums = sums, .counts = bad };
	int ret = team_run(&t);

	if (ret < 0)
		return ret;
	sum_merge(sum, sums, job->threads);
	*inversions = 0;
	for (unsigned i = 0; i < job->threads; i++)
		*inversions += bad[i];
	return 0;
}
