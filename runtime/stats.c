/*
 * Counters and the fault latency histogram. Latencies go into log-linear
 * buckets (8 per power of two, so percentiles are within 12.5%) without
 * allocation on the fault path.
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
