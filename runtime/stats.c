/*
 * Counters and the fault latency histogram. Latencies go into log-linear
 * buckets (8 per power of two, so percentiles are within 12.5%) without
 * allocation on the fault path. A pool with shards sums its shards'
 * counters and buckets, so its percentiles are those of every fault.
 */
#include <string.h>

#include "internal.h"

#define SUB_BITS 3
#define SUB (1u << SUB_BITS)

static unsigned bucket_of(uint64_t v)
{
	unsigned msb, b;

	if (v < SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	b = (msb - SUB_BITS + 1) * SUB + (unsigned)((v >> (msb - SUB_BITS)) & (SUB - 1));
	return b < TIDE_HIST_BUCKETS ? b : TIDE_HIST_BUCKETS - 1;
}

/* The upper bound of a bucket, so a percentile never under-reports. */
static uint64_t bucket_top(unsigned b)
{
	unsigned shift;

	if (b < SUB)
		return b;
	shift = b / SUB - 1;
	return ((uint64_t)(SUB + b % SUB + 1) << shift) - 1;
}

void tide__stats_latency(struct tide__stats *s, uint64_t ns)
{
	s->hist[bucket_of(ns)]++;
	s->lat_count++;
	s->lat_sum += ns;
	if (ns > s->c.latency_max_ns)
		s->c.latency_max_ns = ns;
}

static uint64_t percentile(const struct tide__stats *s, unsigned pct)
{
	uint64_t rank = (s->lat_count * pct + 99) / 100, seen = 0;

	for (unsigned b = 0; b < TIDE_HIST_BUCKETS; b++) {
		seen += s->hist[b];
		if (seen >= rank && seen) {
			uint64_t top = bucket_top(b);

			return top < s->c.latency_max_ns ? top : s->c.latency_max_ns;
		}
	}
	return 0;
}

/* The ABI: new counters come out of reserved[], the struct keeps its size. */
_Static_assert(sizeof(struct tide_stats) == 344, "struct tide_stats changed size");

void tide__stats_snapshot(const struct tide__stats *s, struct tide_stats *out)
{
	*out = s->c;
	if (!s->lat_count)
		return;
	out->latency_mean_ns = s->lat_sum / s->lat_count;
	out->latency_p50_ns = percentile(s, 50);
	out->latency_p90_ns = percentile(s, 90);
	out->latency_p99_ns = percentile(s, 99);
}

void tide__stats_sum(struct tide_stats *sum, struct tide__stats *all,
		     const struct tide_stats *s, const struct tide__stats *h)
{
#define ADD(field) sum->field += s->field
	ADD(faults);
	ADD(faults_read);
	ADD(faults_write);
	ADD(faults_wp);
	ADD(faults_coalesced);
	ADD(fills);
	ADD(prefetched);
	ADD(evictions);
	ADD(evictions_dirty);
	ADD(writebacks);
	ADD(writeback_errors);
	ADD(read_errors);
	ADD(flushes);
	ADD(bytes_read);
	ADD(bytes_written);
	ADD(resident_bytes);
	/* Each shard's peak, summed: it bounds the pool's peak from above. */
	ADD(peak_resident_bytes);
	ADD(dirty_bytes);
	ADD(bounce_bytes);
	ADD(regions);
	ADD(drop_calls);
	ADD(store_reads);
	ADD(store_writes);
	ADD(fills_zero);
	ADD(faults_signal);
	ADD(evictions_moved);
	ADD(fills_recycled);
	ADD(signal_waits);
	ADD(signal_sleeps);
	ADD(spin_rests);
	ADD(fills_offloaded);
#undef ADD
	sum->writeback = s->writeback;     /* every shard resolves it alike */
	sum->recycle = s->recycle;
	sum->install_thread |= s->install_thread;
	sum->odirect |= s->odirect;
	all->lat_count += h->lat_count;
	all->lat_sum += h->lat_sum;
	for (unsigned b = 0; b < TIDE_HIST_BUCKETS; b++)
		all->hist[b] += h->hist[b];
	if (h->c.latency_max_ns > all->c.latency_max_ns)
		all->c.latency_max_ns = h->c.latency_max_ns;
}

void tide__stats_sum_latency(struct tide_stats *sum, const struct tide__stats *all)
{
	struct tide_stats lat;

	tide__stats_snapshot(all, &lat);
	sum->latency_mean_ns = lat.latency_mean_ns;
	sum->latency_p50_ns = lat.latency_p50_ns;
	sum->latency_p90_ns = lat.latency_p90_ns;
	sum->latency_p99_ns = lat.latency_p99_ns;
	sum->latency_max_ns = all->c.latency_max_ns;
}
