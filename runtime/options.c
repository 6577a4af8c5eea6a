/*
 * The one table of options. Each has a TIDE_* environment variable, a
 * default and a line of help; tide_options_init() applies the defaults and
 * then the environment, warning about (and ignoring) values it cannot parse.
 * docs/options.md is this table in prose; `tide options` prints it.
 * The TIDE_PRELOAD_* rows belong to libtide-preload.so (preload.c) rather
 * than to a pool: tide__preload_options_init() applies those.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define OPT(field, kind, def, help) \
	{ "TIDE_" #field, kind, OPT_POOL, offsetof(struct tide_options, FIELD_##field), def, help, 0, 0 }
/* A count that the environment may only set within [lo, hi]. */
#define OPT_RANGE(field, def, lo, hi, help) \
	{ "TIDE_" #field, OPT_UINT, OPT_POOL, offsetof(struct tide_options, FIELD_##field), def, \
	  help, lo, hi }
/* A setting of the LD_PRELOAD layer, a field of struct tide__preload_options. */
#define OPT_PRE(field, kind, member, def, help) \
	{ "TIDE_PRELOAD_" #field, kind, OPT_PRELOAD, offsetof(struct tide__preload_options, member), \
	  def, help, 0, 0 }
#define FIELD_BUDGET budget
#define FIELD_PAGE_SIZE page_size
#define FIELD_HIGH_WATER high_water
#define FIELD_LOW_WATER low_water
#define FIELD_WRITEBACK writeback
#define FIELD_QUEUE_DEPTH queue_depth
#define FIELD_BOUNCE bounce
#define FIELD_WRITE_MAX write_max
#define FIELD_FLUSH_INTERVAL flush_interval_ms
#define FIELD_SPIN_US spin_us
#define FIELD_SERVICE_CPU service_cpu
#define FIELD_ODIRECT odirect
#define FIELD_READ_AHEAD read_ahead
#define FIELD_WATCHDOG watchdog_s
#define FIELD_VERBOSE verbose
#define FIELD_WAKE_POLL_US wake_poll_us
#define FIELD_SERVICE_THREADS service_threads
#define FIELD_SIGNAL_FAULTS signal_faults
#define FIELD_RECYCLE recycle
#define FIELD_WAKE_QOS wake_qos
#define FIELD_INSTALL_THREAD install_thread

/* The ABI: fields come out of reserved[], the struct keeps its size. */
_Static_assert(sizeof(void *) != 8 || sizeof(struct tide_options) == 136,
	       "struct tide_options changed size");

const struct tide__option tide__options[] = {
	OPT(BUDGET, OPT_SIZE, "256M", "bytes of pages the pool keeps resident (K/M/G, KiB/MiB/GiB)"),
	OPT(PAGE_SIZE, OPT_SIZE, "64K", "default page size of a region: a power of two, 4K to 2M"),
	OPT(HIGH_WATER, OPT_PERCENT, "90", "percent of the budget at which eviction starts"),
	OPT(LOW_WATER, OPT_PERCENT, "70", "percent of the budget eviction brings residency down to"),
	OPT(WRITEBACK, OPT_WRITEBACK, "auto", "write-back path: fixed (bounce buffers), direct (O_DIRECT from the page) or auto (probe)"),
	OPT(QUEUE_DEPTH, OPT_UINT, "32", "storage I/Os in flight at once (1-4096)"),
	OPT(BOUNCE, OPT_SIZE, "0", "bytes of registered bounce buffers; 0 picks budget/8 within 4M..16M"),
	OPT(WRITE_MAX, OPT_SIZE, "1M", "longest write-back I/O: adjacent dirty pages leave in one store write up to this many bytes (4K..1G; a larger page still leaves whole)"),
	OPT(FLUSH_INTERVAL, OPT_UINT, "1000", "milliseconds between background write-back passes; 0 turns them off"),
	OPT(SPIN_US, OPT_UINT, "100", "microseconds the service thread keeps polling after activity (and up to 1 ms more while a fault waits for a read) before it sleeps, so a fault or a completion costs it no wake-up; it yields between looks, and sleeps instead for a while (4 ms, doubling to 256 ms) when another thread wants its CPU; 0 turns it off"),
	OPT(WAKE_POLL_US, OPT_UINT, "50", "microseconds idle CPUs keep polling after the service thread served a fault (and up to 1 ms more while a fault waits for a read), so wake-ups skip a halted vCPU: by a CPU latency request (TIDE_WAKE_QOS, held at least 1 ms) or else SCHED_IDLE threads; nothing where the guest kernel polls idle vCPUs itself (haltpoll with guest_halt_poll_ns > 0); with TIDE_SIGNAL_FAULTS, how long a faulting thread polls for the pool's lock or a page on its way before it sleeps; 0 turns it off (do, with keeper threads, when app threads are pinned next to their service thread; the latency request costs such a setup nothing measurable)"),
	OPT(WAKE_QOS, OPT_BOOL, "1", "keep idle CPUs polling (TIDE_WAKE_POLL_US) by holding a CPU latency request of 0 through /dev/cpu_dma_latency while faults flow, released 1 ms after: idle CPUs then poll in the kernel, where a wake-up needs no interrupt; used where the process may open it (root) and every CPU has a polling idle state; 0 (or neither) uses SCHED_IDLE keeper threads"),
	OPT(SERVICE_CPU, OPT_INT, "-1", "CPU to pin the service thread to; -1 leaves it to the scheduler (must stay -1 with TIDE_SERVICE_THREADS > 1)"),
	OPT_RANGE(SERVICE_THREADS, "1", 1, TIDE_MAX_SHARDS, "service threads, 1-64; N > 1 splits the pool into N shards, each with its own service thread pinned to one CPU, userfaultfd, io_uring ring and bounce buffers, starting with 1/N of the budget (lent to a busy shard while the others idle); a region is served by the shard on the CPU that maps it (else round robin); see docs/design.md, Shards"),
	OPT(SIGNAL_FAULTS, OPT_BOOL, "0", "serve each fault on the thread that took it, in a SIGBUS handler (UFFD_FEATURE_SIGBUS), not on the service thread: no context switch per fault, but a system call that touches a page not in memory fails with EFAULT instead of waiting; see docs/design.md, Faults on the faulting thread"),
	OPT(RECYCLE, OPT_BOOL, "1", "evict dirty pages by moving them out of their region (UFFDIO_MOVE, Linux 6.8+), write them from there (fixed: from a copy in the bounce buffers), then reuse them for the fills of holes (direct: a sequential writer's first ones from huge pages, so its writes are few segments): no write-protect, drop or page allocation per page; 0 (or a kernel without UFFDIO_MOVE) protects, writes and drops them; see docs/design.md, Recycling"),
	OPT(INSTALL_THREAD, OPT_BOOL, "1", "a second thread puts read-ahead pages in place (UFFDIO_COPY) while the service thread goes on serving faults and completions: runs of 64 KiB or more that no fault waits for yet, whose pages go in write-protected (or into a read-only region), so a write to one waits for the service thread; not with TIDE_SIGNAL_FAULTS, TIDE_SERVICE_THREADS > 1 or a single allowed CPU; 0 installs everything on the service thread; see docs/design.md, The install thread"),
	OPT(ODIRECT, OPT_BOOL, "1", "open file stores with O_DIRECT where the filesystem allows"),
	OPT(READ_AHEAD, OPT_UINT, "256", "pages filled ahead of each sequential run of faults (a region follows up to 8 runs at once), at most 4 MiB per run and an eighth of the budget for a region's runs together, in reads of up to 512 KiB; 0 turns it off"),
	OPT(WATCHDOG, OPT_UINT, "0", "debug: report a service loop stuck for this many seconds with faults pending"),
	OPT(VERBOSE, OPT_BOOL, "0", "print the effective settings when a pool starts"),
	OPT_PRE(MIN, OPT_SIZE, min, "64M", "LD_PRELOAD (tide run): smallest file mapping tide takes; smaller ones go to the kernel (docs/preload.md)"),
	OPT_PRE(WRITE, OPT_BOOL, write, "1", "LD_PRELOAD (tide run): take writable MAP_SHARED mappings too; 0 leaves them to the kernel"),
	OPT_PRE(STATS, OPT_PATH, stats, "", "LD_PRELOAD (tide run): file each process appends its counters to at exit (tide run sets it); empty = none"),
};
const size_t tide__noptions = sizeof(tide__options) / sizeof(tide__options[0]);

int tide__parse_size(const char *s, uint64_t *out)
{
	static const struct { const char *suffix; unsigned shift; } units[] = {
		{ "", 0 }, { "b", 0 },
		{ "k", 10 }, { "kb", 10 }, { "kib", 10 },
		{ "m", 20 }, { "mb", 20 }, { "mib", 20 },
		{ "g", 30 }, { "gb", 30 }, { "gib", 30 },
		{ "t", 40 }, { "tb", 40 }, { "tib", 40 },
	};
	char *end;
	unsigned long long v;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	while (*end == ' ')
		end++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].suffix))
			continue;
		if (units[i].shift && v > (UINT64_MAX >> units[i].shift))
			return -ERANGE;
		*out = (uint64_t)v << units[i].shift;
		return 0;
	}
	return -EINVAL;
}

int tide__parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "1", "on", "yes", "true" };
	static const char *const no[] = { "0", "off", "no", "false" };

	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i]))
			return *out = 1, 0;
		if (!strcasecmp(s, no[i]))
			return *out = 0, 0;
	}
	return -EINVAL;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Parse `text` into the option's field of `fields` (its scope's struct). */
static int option_set(void *fields, const struct tide__option *opt, const char *text)
{
	void *field = (char *)fields + opt->offset;
	uint64_t size;
	long v;
	int b;

	switch (opt->kind) {
	case OPT_SIZE:
		if (tide__parse_size(text, &size) < 0 || size > SIZE_MAX)
			return -EINVAL;
		*(size_t *)field = (size_t)size;
		return 0;
	case OPT_UINT:
		if (parse_long(text, opt->max ? opt->min : 0, opt->max ? opt->max : UINT32_MAX, &v) < 0)
			return -EINVAL;
		*(unsigned *)field = (unsigned)v;
		return 0;
	case OPT_INT:
		if (parse_long(text, INT32_MIN, INT32_MAX, &v) < 0)
			return -EINVAL;
		*(int *)field = (int)v;
		return 0;
	case OPT_PERCENT:
		if (parse_long(text, 1, 100, &v) < 0)
			return -EINVAL;
		*(unsigned *)field = (unsigned)v;
		return 0;
	case OPT_BOOL:
		if (tide__parse_bool(text, &b) < 0)
			return -EINVAL;
		*(int *)field = b;
		return 0;
	case OPT_WRITEBACK:
		for (int wb = TIDE_WRITEBACK_AUTO; wb <= TIDE_WRITEBACK_DIRECT; wb++) {
			if (!strcasecmp(text, tide_writeback_name(wb))) {
				*(enum tide_writeback *)field = wb;
				return 0;
			}
		}
		return -EINVAL;
	case OPT_PATH:
		if (strlen(text) >= TIDE_PRELOAD_PATH_MAX)
			return -EINVAL;
		strcpy(field, text);
		return 0;
	}
	return -EINVAL;
}

/* Defaults, then the environment, for the options of one scope. */
static void options_load(void *fields, enum tide__opt_scope scope)
{
	for (size_t i = 0; i < tide__noptions; i++) {
		const struct tide__option *opt = &tide__options[i];
		const char *env;

		if (opt->scope != scope)
			continue;
		env = getenv(opt->name);
		option_set(fields, opt, opt->def);
		if (env && option_set(fields, opt, env) < 0)
			tide__warn("%s=\"%s\" is not valid (%s); keeping the default %s",
				   opt->name, env, opt->help, opt->def);
	}
}

void tide_options_init(struct tide_options *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	options_load(o, OPT_POOL);
}

void tide__preload_options_init(struct tide__preload_options *o)
{
	memset(o, 0, sizeof(*o));
	options_load(o, OPT_PRELOAD);
}

const struct tide__option *tide__option_find(const char *name)
{
	char want[64];
	size_t n = 0;

	if (!name)
		return NULL;
	if (strncasecmp(name, "TIDE_", 5))
		n = (size_t)snprintf(want, sizeof(want), "TIDE_");
	for (; *name && n + 1 < sizeof(want); name++)
		want[n++] = *name == '-' ? '_' : (char)toupper((unsigned char)*name);
	if (*name)
		return NULL;
	want[n] = 0;
	for (size_t i = 0; i < tide__noptions; i++)
		if (!strcmp(tide__options[i].name, want))
			return &tide__options[i];
	return NULL;
}

int tide__option_valid(const struct tide__option *opt, const char *text)
{
	struct tide_options pool_fields;
	struct tide__preload_options preload_fields;

	if (!opt || !text)
		return -EINVAL;
	return option_set(opt->scope == OPT_POOL ? (void *)&pool_fields : (void *)&preload_fields,
			  opt, text);
}

int tide__options_check(const struct tide_options *o)
{
	if (!o)
		return tide__fail(-EINVAL, "options are NULL");
	if (!tide__is_pow2(o->page_size) || o->page_size < TIDE_MIN_PAGE ||
	    o->page_size > TIDE_MAX_PAGE)
		return tide__fail(-EINVAL, "page size %zu is not a power of two from 4 KiB to 2 MiB",
				  o->page_size);
	if (o->service_threads < 1 || o->service_threads > TIDE_MAX_SHARDS)
		return tide__fail(-EINVAL, "service_threads %u is outside 1..%u",
				  o->service_threads, TIDE_MAX_SHARDS);
	if (o->budget / o->page_size < TIDE_MIN_PAGES)
		return tide__fail(-EINVAL, "budget %zu bytes holds fewer than %u pages of %zu bytes",
				  o->budget, TIDE_MIN_PAGES, o->page_size);
	if (o->budget / o->service_threads / o->page_size < TIDE_MIN_PAGES)
		return tide__fail(-EINVAL, "budget %zu bytes split over service_threads %u leaves %zu "
				  "bytes per shard, fewer than %u pages of %zu bytes",
				  o->budget, o->service_threads, o->budget / o->service_threads,
				  TIDE_MIN_PAGES, o->page_size);
	if (o->service_threads > 1 && o->service_cpu >= 0)
		return tide__fail(-EINVAL, "service_cpu %d cannot be used with service_threads %u: "
				  "each shard pins its own service thread (leave service_cpu at -1)",
				  o->service_cpu, o->service_threads);
	if (o->high_water < 1 || o->high_water > 100 || o->low_water < 1 ||
	    o->low_water >= o->high_water)
		return tide__fail(-EINVAL, "watermarks must satisfy 0 < low (%u) < high (%u) <= 100",
				  o->low_water, o->high_water);
	if (o->writeback > TIDE_WRITEBACK_DIRECT)
		return tide__fail(-EINVAL, "unknown write-back path %d", (int)o->writeback);
	if (o->queue_depth < 1 || o->queue_depth > 4096)
		return tide__fail(-EINVAL, "queue depth %u is outside 1..4096", o->queue_depth);
	if (o->write_max < TIDE_MIN_PAGE || o->write_max > TIDE_MAX_WRITE)
		return tide__fail(-EINVAL, "write size %zu is outside 4 KiB..1 GiB", o->write_max);
	if (o->bounce && o->bounce < 2 * (size_t)TIDE_MAX_PAGE)
		return tide__fail(-EINVAL, "bounce size %zu is below 4 MiB (two 2 MiB pages)",
				  o->bounce);
	if (o->bounce && o->bounce / o->service_threads < 2 * (size_t)TIDE_MAX_PAGE)
		return tide__fail(-EINVAL, "bounce size %zu split over service_threads %u leaves %zu "
				  "bytes per shard, below 4 MiB (two 2 MiB pages)",
				  o->bounce, o->service_threads, o->bounce / o->service_threads);
	return 0;
}

void tide__option_format(const void *fields, const struct tide__option *opt,
			 char *buf, size_t len)
{
	const void *field = (const char *)fields + opt->offset;

	switch (opt->kind) {
	case OPT_SIZE:
		snprintf(buf, len, "%zu", *(const size_t *)field);
		break;
	case OPT_UINT:
	case OPT_PERCENT:
		snprintf(buf, len, "%u", *(const unsigned *)field);
		break;
	case OPT_INT:
	case OPT_BOOL:
		snprintf(buf, len, "%d", *(const int *)field);
		break;
	case OPT_WRITEBACK:
		snprintf(buf, len, "%s", tide_writeback_name(*(const enum tide_writeback *)field));
		break;
	case OPT_PATH:
		snprintf(buf, len, "%s", (const char *)field);
		break;
	}
}

void tide__options_print(FILE *f, const struct tide_options *o)
{
	char value[64];

	for (size_t i = 0; i < tide__noptions; i++) {
		if (tide__options[i].scope != OPT_POOL)
			continue;
		tide__option_format(o, &tide__options[i], value, sizeof(value));
		fprintf(f, "tide: %-20s = %s\n", tide__options[i].name, value);
	}
}
