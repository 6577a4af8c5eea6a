/*
 * Shards: a pool created with service_threads = N > 1 is a parent that owns
 * N ordinary pools, each with its own service thread pinned to one CPU, its
 * own userfaultfd, io_uring ring and bounce buffers, and 1/N of the budget.
 * The parent has no service thread of its own: it picks the shard a new
 * region goes to and answers for the whole (statistics, destroy,
 * tide_pool_of). Everything after tide_map talks to the region's shard.
 *
 * Why: a fault is two wake-ups, and on a VM whose idle vCPUs halt, waking a
 * thread on another vCPU costs ~50 us each way. A region is served by the
 * shard pinned to the CPU of the thread that maps it, so an app thread that
 * stays on its CPU and faults its own region never wakes another vCPU, and
 * two such threads no longer queue behind one service thread.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* The i-th CPU of `set`, counting round it (set has at least one). */
static int nth_cpu(const cpu_set_t *set, unsigned i)
{
	unsigned k = i % (unsigned)CPU_COUNT(set);

	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, set) && k-- == 0)
			return cpu;
	return -1;
}

int tide__shards_create(struct tide_pool **out, const struct tide_options *opts)
{
	unsigned n = opts->service_threads, i;
	struct tide_pool *p;
	cpu_set_t allowed;
	int ret;

	/* The CPUs this thread may run on: where the app threads can be. */
	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		return tide__fail(-errno, "cannot read the CPUs this thread may run on: %s",
				  strerror(errno));
	p = calloc(1, sizeof(*p));
	if (!p)
		return tide__fail(-ENOMEM, "out of memory for a pool");
	p->shards = calloc(n, sizeof(*p->shards));
	if (!p->shards) {
		ret = tide__fail(-ENOMEM, "out of memory for %u shards", n);
		goto fail_shards;
	}
	p->opt = *opts;
	p->owner = getpid();
	/* One set of keepers per pool, however many shards kick them; they
	 * start first so that every shard's service thread sees them. */
	ret = opts->signal_faults ? 0 : tide__keepers_start(p);
	if (ret < 0)
		tide__warn("cannot start the wake-poll threads (%s); running without them",
			   strerror(-ret));
	for (i = 0; i < n; i++) {
		struct tide_options so = *opts;

		so.service_threads = 1;
		/* Shard 0 resolves "auto"; the others take the same path. */
		if (i > 0)
			so.writeback = p->shards[0]->opt.writeback;
		so.service_cpu = nth_cpu(&allowed, i);
		/* The first budget % n shards take a byte more: the budgets add
		 * up to the pool's. A bounce of 0 stays "auto" per shard. */
		so.budget = opts->budget / n + (i < opts->budget % n);
		so.bounce = opts->bounce / n;
		ret = tide__pool_start(&p->shards[i], &so, p, i);
		if (ret < 0)
			goto fail_start;
	}
	p->nshards = n;
	/* What tide_pool_options reports: the path the shards use, the bounce
	 * bytes they took. */
	p->opt.writeback = p->shards[0]->opt.writeback;
	p->opt.bounce = 0;
	for (i = 0; i < n; i++)
		p->opt.bounce += p->shards[i]->opt.bounce;
	if (p->opt.verbose)
		tide__options_print(stderr, &p->opt);
	*out = p;
	return 0;

fail_start:
	/* They have no region yet, so destroying them cannot fail. */
	while (i-- > 0)
		tide_pool_destroy(p->shards[i]);
	tide__keepers_stop(p);
	free(p->shards);
fail_shards:
	free(p);
	return ret;
}

/*
 * Nothing is destroyed unless every shard can be: a request to a stopped
 * shard could not be undone. The regions are counted in the registry, which
 * tide_map fills before it returns and tide_unmap empties before it returns.
 * (A tide_map racing tide_pool_destroy of the same pool is a misuse, as it
 * is for a pool without shards.)
 */
int tide__shards_destroy(struct tide_pool *p)
{
	int ret;

	for (unsigned i = 0; i < p->nshards; i++)
		if (tide__on_service_thread(p->shards[i]))
			return tide__fail(-EDEADLK, "called from the pool's own service thread");
	if (getpid() != p->owner)
		return tide__fail(-ECHILD, "this pool belongs to the parent process; "
				  "a forked child must create its own");
	if (tide__regions_of(p))
		return tide__fail(-EBUSY, "the pool still has mapped regions: tide_unmap() them first");
	for (unsigned i = 0; i < p->nshards; i++) {
		ret = tide_pool_destroy(p->shards[i]);
		if (ret < 0)
			return ret;
		p->shards[i] = NULL;
	}
	tide__keepers_stop(p);
	free(p->shards);
	free(p);
	return 0;
}

int tide__shards_stats(struct tide_pool *p, struct tide_stats *stats)
{
	/* Two histograms are 8 KiB: not for an app thread's stack. */
	struct tide__stats *all = calloc(2, sizeof(*all)), *one = all + 1;
	int ret = 0;

	if (!all)
		return tide__fail(-ENOMEM, "out of memory for the statistics of %u shards",
				  p->nshards);
	memset(stats, 0, sizeof(*stats));
	for (unsigned i = 0; i < p->nshards && ret == 0; i++) {
		struct tide_stats s;
		struct request req = { .kind = REQ_STATS, .stats = &s, .raw = one };

		ret = tide__request(p->shards[i], &req);
		if (ret == 0)
			tide__stats_sum(stats, all, &s, one);
	}
	if (ret == 0)
		tide__stats_sum_latency(stats, all);
	free(all);
	return ret;
}

struct tide_pool *tide__shard_pick(struct tide_pool *p)
{
	unsigned start = __atomic_fetch_add(&p->next_shard, 1, __ATOMIC_RELAXED);
	int cpu = sched_getcpu();

	/* The shard on this CPU (taking turns if several are), so the thread
	 * that maps a region and faults it from here is served from here. */
	if (cpu >= 0) {
		for (unsigned k = 0; k < p->nshards; k++) {
			struct tide_pool *s = p->shards[(start + k) % p->nshards];

			if (s->opt.service_cpu == cpu)
				return s;
		}
	}
	return p->shards[start % p->nshards];
}
