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
	/* The shards' asks for budget (below) meet under it. */
	pthread_mutex_init(&p->lock, NULL);
	/* One set of keepers per pool, however many shards kick them; they
	 * start first so that every shard's service thread sees them. */
	ret = tide__keepers_start(p);
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
	pthread_mutex_destroy(&p->lock);
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
	/* No shard wakes another from here on: they are going. */
	pthread_mutex_lock(&p->lock);
	__atomic_store_n(&p->balance_off, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nshards; i++) {
		ret = tide_pool_destroy(p->shards[i]);
		if (ret < 0)
			return ret;
		p->shards[i] = NULL;
	}
	tide__keepers_stop(p);
	pthread_mutex_destroy(&p->lock);
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
	/* Not the shares summed: they add up to it, but read one after the
	 * other they may catch a share on its way between two shards. */
	stats->budget = p->opt.budget;
	/* The shards' peaks came at different times, and with budget moving
	 * between them they may add up to more than the budget; the pool
	 * never held more (no shard holds more than its share). */
	if (stats->peak_resident_bytes > p->opt.budget)
		stats->peak_resident_bytes = p->opt.budget;
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

/*
 * The budget follows the faults. Each shard evicts against its `share` of
 * the pool's budget, which starts at budget/N (its fair share) and moves:
 *
 * - A shard about to evict asks the sibling with the most to give. Budget a
 *   sibling does not use (above what keeps its resident pages at its low
 *   watermark, and above its floor) is given at once; so one busy region
 *   can grow to nearly the whole budget while the other shards are idle.
 * - A shard below its fair share may also claim what a sibling holds above
 *   its own: the sibling promises it, evicts down to its share without it,
 *   then hands it over. So two busy shards end up at budget/N each.
 *
 * Shares only move under the parent's lock, from one shard to another, so
 * they always add up to the budget; a shard gives only what it holds no
 * pages in, so the pool never holds more than its budget. An ask costs the
 * sibling one pass (a wake-up, on another vCPU): asks are for at least an
 * eighth of the fair share, one at a time, and only where a shard shows
 * something to give, so shards that are both busy at their fair share ask
 * nothing of each other.
 */

void tide__shard_floor(struct tide_pool *p)
{
	/* Four pages of the largest page size mapped here (what tide_map
	 * asks of the fair share), at least of the pool's page size: a region
	 * mapped later can fault at once, not only when a sibling has evicted
	 * for its claim. */
	uint64_t floor = TIDE_MIN_PAGES * (uint64_t)p->opt.page_size;

	if (floor > p->opt.budget)
		floor = p->opt.budget;
	for (size_t i = 0; i < p->nregions; i++)
		if (TIDE_MIN_PAGES * p->regions[i]->page_size > floor)
			floor = TIDE_MIN_PAGES * p->regions[i]->page_size;
	__atomic_store_n(&p->floor, floor, __ATOMIC_RELAXED);
}

/* Whole 4 KiB pages of b bytes. */
static uint64_t pages_down(uint64_t b)
{
	return b & ~(uint64_t)(TIDE_MIN_PAGE - 1);
}

/* Budget s could give without evicting, from any thread (the figures are
 * a moment old there; s decides for itself when it answers). */
static uint64_t unused_of(const struct tide_pool *s, uint64_t share)
{
	uint64_t resident = __atomic_load_n(&s->resident, __ATOMIC_RELAXED);
	uint64_t keep = (resident * 100 + s->opt.low_water - 1) / s->opt.low_water;
	uint64_t floor = __atomic_load_n(&s->floor, __ATOMIC_RELAXED);

	if (keep < floor)
		keep = floor;
	return share > keep ? pages_down(share - keep) : 0;
}

/* What s holds above its fair share. */
static uint64_t excess_of(const struct tide_pool *s, uint64_t share)
{
	return share > s->opt.budget ? pages_down(share - s->opt.budget) : 0;
}

bool tide__shard_asking(const struct tide_pool *p)
{
	return __atomic_load_n(&p->asking, __ATOMIC_ACQUIRE);
}

void tide__shard_ask(struct tide_pool *p, uint64_t need)
{
	struct tide_pool *parent = p->parent, *best = NULL;
	uint64_t share = __atomic_load_n(&p->share, __ATOMIC_RELAXED), want, most = 0;
	bool below = share < p->opt.budget;

	if (tide__shard_asking(p) || __atomic_load_n(&parent->balance_off, __ATOMIC_ACQUIRE))
		return;
	/* Enough to hold what is here and `need` at the low watermark. */
	want = (p->resident + need) * 100 / p->opt.low_water;
	want = want > share ? want - share : 0;
	if (want < p->opt.budget / 8)
		want = p->opt.budget / 8;
	for (unsigned i = 0; i < parent->nshards; i++) {
		struct tide_pool *s = parent->shards[i];
		uint64_t s_share, can;

		if (s == p)
			continue;
		/* A promise to this shard is being kept: wait for it. A shard
		 * keeping one to another has nothing else to give. */
		if (__atomic_load_n(&s->giving, __ATOMIC_RELAXED)) {
			if (__atomic_load_n(&s->give_to, __ATOMIC_RELAXED) == p->shard)
				return;
			continue;
		}
		s_share = __atomic_load_n(&s->share, __ATOMIC_RELAXED);
		can = unused_of(s, s_share);
		/* A busy shard's unused budget is the slack between its watermarks:
		 * not worth a wake-up, and taking it would only be asked back. */
		if (can < s->opt.budget / 4 && __atomic_load_n(&s->resident, __ATOMIC_RELAXED))
			can = 0;
		if (below && excess_of(s, s_share) > can)
			can = excess_of(s, s_share);
		if (can > most) {
			most = can;
			best = s;
		}
	}
	if (!best)
		return;
	pthread_mutex_lock(&parent->lock);
	if (!parent->balance_off) {
		/* One ask per shard: an earlier asker is told it was not heard,
		 * so it may ask again. */
		if (best->asked && best->asked_by != p->shard)
			__atomic_store_n(&parent->shards[best->asked_by]->asking, false, __ATOMIC_RELEASE);
		__atomic_store_n(&best->asked, want, __ATOMIC_RELAXED);
		best->asked_by = p->shard;
		best->asked_fair = below;
		__atomic_store_n(&p->asking, true, __ATOMIC_RELEASE);
		uv_async_send(&best->wakeup);
	}
	pthread_mutex_unlock(&parent->lock);
}

/* Under the parent's lock. */
static void hand_over(struct tide_pool *from, struct tide_pool *to, uint64_t bytes)
{
	__atomic_fetch_sub(&from->share, bytes, __ATOMIC_RELAXED);
	__atomic_fetch_add(&to->share, bytes, __ATOMIC_RELAXED);
	uv_async_send(&to->wakeup);
}

static void answer(struct tide_pool *p)
{
	struct tide_pool *parent = p->parent, *to;
	uint64_t share, give, claim;

	pthread_mutex_lock(&parent->lock);
	if (!p->asked || parent->balance_off) {
		pthread_mutex_unlock(&parent->lock);
		return;
	}
	to = parent->shards[p->asked_by];
	share = __atomic_load_n(&p->share, __ATOMIC_RELAXED) - p->giving;
	give = unused_of(p, share);
	/* An idle shard gives all it can in one go: one wake-up, not one per
	 * eighth. If it gets busy, it claims its fair share back. */
	if (give > p->asked && p->resident)
		give = p->asked;
	if (give)
		hand_over(p, to, give);
	/* The rest of a fair claim is promised: handed over once this
	 * shard's pages fit without it (tide__shard_balance). */
	claim = p->asked_fair && give < p->asked ? excess_of(p, share - give) : 0;
	if (claim > p->asked - give)
		claim = pages_down(p->asked - give);
	if (claim && !p->giving) {
		__atomic_store_n(&p->give_to, p->asked_by, __ATOMIC_RELAXED);
		__atomic_store_n(&p->giving, claim, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&p->asked, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&to->asking, false, __ATOMIC_RELEASE);
	/* A prefetch there waits for the answer, whatever it is. */
	if (!give)
		uv_async_send(&to->wakeup);
	pthread_mutex_unlock(&parent->lock);
}

void tide__shard_balance(struct tide_pool *p)
{
	struct tide_pool *parent = p->parent;

	if (__atomic_load_n(&p->asked, __ATOMIC_RELAXED))
		answer(p);
	if (!p->giving)
		return;
	/* The promised budget is already out of tide__pool_budget: evict
	 * down to what is left, then hand it over. */
	tide__pool_reclaim(p);
	if (p->resident > tide__pool_budget(p))
		return;
	pthread_mutex_lock(&parent->lock);
	if (!parent->balance_off)
		hand_over(p, parent->shards[p->give_to], p->giving);
	__atomic_store_n(&p->giving, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&parent->lock);
}
