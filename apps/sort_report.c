/* tide sort: the summary, as text or as one JSON object. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "sort.h"

const char *const sort_backend_names[] = { "tide", "mmap", "memory" };
const char *const sort_phase_names[] = { "generate", "sort", "verify", "write-back",
					 "cleanup" };
const char *const sort_phase_keys[] = { "generate", "sort", "verify", "writeback", "cleanup" };

/* The counters every backend can report, with where each comes from. */
struct summary {
	uint64_t total_ns;
	uint64_t faults;           /* tide: uffd fault events; kernel: minor + major faults */
	uint64_t major_faults;     /* getrusage: faults that waited for storage */
	uint64_t bytes_read;       /* tide: store reads; kernel: /proc/self/io read_bytes */
	uint64_t bytes_written;    /* tide: store writes; kernel: /proc/self/io write_bytes */
	bool sorted, same_keys;
};

static void summarise(const struct sort_run *r, struct summary *s)
{
	memset(s, 0, sizeof(*s));
	for (int p = 0; p < PH_COUNT; p++)
		s->total_ns += r->phase_ns[p];
	s->major_faults = (uint64_t)(r->ru.ru_majflt - r->ru0.ru_majflt);
	if (r->a.backend == BACKEND_TIDE && r->have_tide_stats) {
		s->faults = r->ts.faults;
		s->bytes_read = r->ts.bytes_read;
		s->bytes_written = r->ts.bytes_written;
	} else {
		s->faults = s->major_faults + (uint64_t)(r->ru.ru_minflt - r->ru0.ru_minflt);
		s->bytes_read = r->io_read;
		s->bytes_written = r->io_write;
	}
	s->sorted = r->inversions == 0;
	s->same_keys = r->before.sum == r->after.sum && r->before.xor == r->after.xor &&
		       r->before.count == r->after.count;
}

static void fingerprint(const struct sort_sum *s, char *buf, size_t len)
{
	snprintf(buf, len, "%016llx%016llx", (unsigned long long)s->sum,
		 (unsigned long long)s->xor);
}

static void report_json(const struct sort_run *r, const struct summary *s)
{
	const struct tide_stats *t = &r->ts;
	bool tide = r->a.backend == BACKEND_TIDE && r->have_tide_stats;
	char fp[40];
	struct cli_json j;

	cli_json_begin(&j, stdout);
	cli_json_str(&j, "command", "sort");
	cli_json_str(&j, "backend", sort_backend_names[r->a.backend]);
	cli_json_u64(&j, "size", r->a.size);
	cli_json_u64(&j, "pool", r->a.pool);
	cli_json_double(&j, "ratio", (double)r->a.size / (double)r->a.pool);
	cli_json_u64(&j, "page_size", r->a.page_size);
	cli_json_u64(&j, "threads", r->a.threads);
	if (tide) {
		cli_json_str(&j, "writeback", tide_writeback_name(t->writeback));
		cli_json_bool(&j, "signal_faults", r->a.signal_faults);
	} else {
		cli_json_null(&j, "writeback");
		cli_json_null(&j, "signal_faults");
	}
	cli_json_u64(&j, "seed", r->a.seed);
	cli_json_str(&j, "file", r->path);
	cli_json_bool(&j, "kept", r->a.keep);
	cli_json_u64(&j, "run_bytes", r->run_bytes);
	cli_json_u64(&j, "merge_passes", r->merges);

	cli_json_object(&j, "seconds");
	for (int p = 0; p < PH_COUNT; p++)
		cli_json_double(&j, sort_phase_keys[p], r->phase_ns[p] / 1e9);
	cli_json_double(&j, "total", s->total_ns / 1e9);
	cli_json_close(&j);

	cli_json_bool(&j, "sorted", s->sorted);
	cli_json_u64(&j, "inversions", r->inversions);
	fingerprint(&r->before, fp, sizeof(fp));
	cli_json_str(&j, "checksum_generated", fp);
	fingerprint(&r->after, fp, sizeof(fp));
	cli_json_str(&j, "checksum_sorted", fp);
	cli_json_bool(&j, "checksum_match", s->same_keys);

	cli_json_u64(&j, "faults", s->faults);
	cli_json_u64(&j, "major_faults", s->major_faults);
	if (tide) {
		cli_json_u64(&j, "fills", t->fills);
		cli_json_u64(&j, "evictions", t->evictions);
	} else {
		/* The kernel does not tell one process how many pages it filled or evicted. */
		cli_json_null(&j, "fills");
		cli_json_null(&j, "evictions");
	}
	cli_json_u64(&j, "bytes_read", s->bytes_read);
	cli_json_u64(&j, "bytes_written", s->bytes_written);
	cli_json_u64(&j, "io_read_bytes", r->io_read);
	cli_json_u64(&j, "io_write_bytes", r->io_write);
	cli_json_u64(&j, "peak_rss_bytes", r->vm_hwm);
	if (tide)
		cli_json_u64(&j, "peak_resident_bytes", t->peak_resident_bytes);
	else
		cli_json_null(&j, "peak_resident_bytes");

	if (tide) {
		cli_json_object(&j, "tide");
		cli_json_u64(&j, "faults_read", t->faults_read);
		cli_json_u64(&j, "faults_write", t->faults_write);
		cli_json_u64(&j, "faults_wp", t->faults_wp);
		cli_json_u64(&j, "faults_coalesced", t->faults_coalesced);
		cli_json_u64(&j, "faults_signal", t->faults_signal);
		cli_json_u64(&j, "prefetched", t->prefetched);
		cli_json_u64(&j, "fills_zero", t->fills_zero);
		cli_json_u64(&j, "evictions_dirty", t->evictions_dirty);
		cli_json_u64(&j, "writebacks", t->writebacks);
		cli_json_u64(&j, "writeback_errors", t->writeback_errors);
		cli_json_u64(&j, "read_errors", t->read_errors);
		cli_json_u64(&j, "flushes", t->flushes);
		cli_json_u64(&j, "budget", t->budget);
		cli_json_u64(&j, "bounce_bytes", t->bounce_bytes);
		cli_json_bool(&j, "odirect", t->odirect);
		cli_json_u64(&j, "latency_mean_ns", t->latency_mean_ns);
		cli_json_u64(&j, "latency_p50_ns", t->latency_p50_ns);
		cli_json_u64(&j, "latency_p99_ns", t->latency_p99_ns);
		cli_json_u64(&j, "latency_max_ns", t->latency_max_ns);
		cli_json_close(&j);
	}
	cli_json_bool(&j, "ok", s->sorted && s->same_keys);
	cli_json_end(&j);
}

static void report_text(const struct sort_run *r, const struct summary *s)
{
	const struct tide_stats *t = &r->ts;
	bool tide = r->a.backend == BACKEND_TIDE && r->have_tide_stats;
	char b1[32], b2[32], b3[32], d[32], fp[40];
	FILE *f = stdout;

	fprintf(f, "tide sort: %s of 64-bit keys on %s", cli_format_bytes(r->a.size, b1, 32),
		sort_backend_names[r->a.backend]);
	if (r->a.backend == BACKEND_TIDE)
		fprintf(f, " (pool %s, page %s, write-back %s, faults served by %s)",
			cli_format_bytes(r->a.pool, b2, 32), cli_format_bytes(r->a.page_size, b3, 32),
			tide ? tide_writeback_name(t->writeback) : "?",
			r->a.signal_faults ? "the sorting threads" : "the service thread");
	else if (r->a.backend == BACKEND_MMAP)
		fprintf(f, " (kernel MAP_SHARED; the budget is whatever limits this process)");
	fprintf(f, ", %u threads\n", r->a.threads);
	fprintf(f, "  runs of %s, %u merge passes\n", cli_format_bytes(r->run_bytes, b1, 32),
		r->merges);
	for (int p = 0; p < PH_COUNT; p++)
		fprintf(f, "  %-11s %10s\n", sort_phase_names[p],
			cli_format_duration(r->phase_ns[p], d, sizeof(d)));
	fprintf(f, "  %-11s %10s\n", "total", cli_format_duration(s->total_ns, d, sizeof(d)));
	fingerprint(&r->after, fp, sizeof(fp));
	fprintf(f, "  sorted: %s (%llu adjacent keys out of order); checksum %s %s\n",
		s->sorted ? "yes" : "NO", (unsigned long long)r->inversions, fp,
		s->same_keys ? "unchanged" : "CHANGED: keys were lost or altered");
	fprintf(f, "  faults %llu (major %llu", (unsigned long long)s->faults,
		(unsigned long long)s->major_faults);
	if (tide && r->a.signal_faults)
		fprintf(f, ", %llu served on the sorting threads", (unsigned long long)t->faults_signal);
	fprintf(f, ")");
	if (tide)
		fprintf(f, ", fills %llu, evictions %llu (%llu dirty)",
			(unsigned long long)t->fills, (unsigned long long)t->evictions,
			(unsigned long long)t->evictions_dirty);
	fprintf(f, "\n  read %s, written %s\n", cli_format_bytes(s->bytes_read, b1, 32),
		cli_format_bytes(s->bytes_written, b2, 32));
	fprintf(f, "  peak resident: %s (VmHWM)", cli_format_bytes(r->vm_hwm, b1, 32));
	if (tide)
		fprintf(f, ", pool pages %s of a %s budget",
			cli_format_bytes(t->peak_resident_bytes, b2, 32),
			cli_format_bytes(t->budget, b3, 32));
	fprintf(f, "\n");
}

int sort_report(const struct sort_run *r)
{
	struct summary s;

	summarise(r, &s);
	if (r->a.json)
		report_json(r, &s);
	else
		report_text(r, &s);
	if (!s.sorted)
		fprintf(stderr, "tide sort: the data is NOT sorted: %llu adjacent pairs out of "
			"order\n", (unsigned long long)r->inversions);
	if (!s.same_keys)
		fprintf(stderr, "tide sort: the keys after the sort differ from the keys "
			"generated\n");
	return s.sorted && s.same_keys ? 0 : 1;
}
