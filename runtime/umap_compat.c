/*
 * The umap C API on tide. One process-wide pool, created on the first umap()
 * from the UMAP_* environment laid over tide's own options, serves every
 * region. A small registry of the regions mapped through this API lets
 * umap_flush() reach them all and uunmap() check what it is given.
 * docs/umap.md maps umap's functions, variables and semantics onto tide.
 *
 * umap's contract is mmap's: UMAP_FAILED or -1 with errno. tide's -errno
 * values are converted here, once, and every failure is also described on
 * stderr (UMAP_LOG_LEVEL=ERROR or higher), since umap has no last-error call.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "umap/umap.h"

/* The umap API; runtime/umap.map exports exactly these names and hides tide. */
#define UMAP_EXPORT __attribute__((visibility("default")))

enum log_level { LOG_OFF, LOG_ERROR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

/* umap's defaults for the settings tide only reports. */
#define UMAP_DEFAULT_MAX_FAULT_EVENTS 256

struct umap_config {
	struct tide_options opt;     /* what the pool is created with */
	uint64_t fillers;            /* reported only: tide has one service thread */
	uint64_t evictors;           /* reported only */
	uint64_t max_fault_events;   /* reported only */
	unsigned monitor_s;          /* print pool statistics every N seconds, 0 = off */
	int log_level;
};

static struct umap_config cfg;
static pthread_once_t cfg_once = PTHREAD_ONCE_INIT;

static tide_pool *pool;
static int pool_err;               /* -errno if the pool could not be created */
static char pool_why[256];
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static pid_t pool_owner;           /* the process whose service thread serves the pool */

/* The regions mapped through umap(); the lock also serialises map, unmap and
 * flush so a flush never races the release of the region it is writing. */
struct umap_region {
	char *base;
	size_t length;
	size_t page_size;
};
static pthread_mutex_t regions_lock = PTHREAD_MUTEX_INITIALIZER;
static struct umap_region *regions;
static size_t nregions, regions_cap;

/* ---- diagnostics ---- */

static void vlog(int level, const char *fmt, va_list ap)
{
	static const char *const tag[] = { "", "error: ", "warning: ", "", "debug: " };
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	/* One fprintf per line so lines from several threads do not interleave. */
	fprintf(stderr, "umap-tide: %s%s\n", tag[level], line);
}

static void log_at(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_at(int level, const char *fmt, ...)
{
	va_list ap;

	if (level > cfg.log_level)
		return;
	va_start(ap, fmt);
	vlog(level, fmt, ap);
	va_end(ap);
}

/* Verbose mode (TIDE_VERBOSE=1 or UMAP_LOG_LEVEL=INFO) speaks whatever the
 * log level, as tide's own verbose settings report does. */
static void verbose(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void verbose(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_INFO, fmt, ap);
	va_end(ap);
}

/* Record a failure the umap way: describe it, then leave errno set last so
 * the description's stdio cannot clobber it. */
static void *map_failed(int err, const char *why)
{
	log_at(LOG_ERROR, "umap: %s", why);
	errno = err;
	return UMAP_FAILED;
}

static int call_failed(int err, const char *call, const char *why)
{
	log_at(LOG_ERROR, "%s: %s", call, why);
	errno = err;
	return -1;
}

/* ---- the UMAP_* environment ---- */

/* A whole non-negative decimal number; strtoull alone would take "-1". */
static int parse_count(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

static int set_page_size(struct umap_config *c, const char *text)
{
	uint64_t v;

	if (tide__parse_size(text, &v) < 0 || !tide__is_pow2(v) || v < TIDE_MIN_PAGE ||
	    v > TIDE_MAX_PAGE)
		return -EINVAL;
	c->opt.page_size = (size_t)v;
	return 0;
}

/* umap sizes its buffer in pages; tide's budget is bytes of those pages. */
static int set_buffer_pages(struct umap_config *c, const char *text)
{
	uint64_t pages;

	if (parse_count(text, TIDE_MIN_PAGES, SIZE_MAX / c->opt.page_size, &pages) < 0)
		return -EINVAL;
	c->opt.budget = (size_t)pages * c->opt.page_size;
	return 0;
}

static int set_high_water(struct umap_config *c, const char *text)
{
	uint64_t v;

	if (parse_count(text, 1, 100, &v) < 0)
		return -EINVAL;
	c->opt.high_water = (unsigned)v;
	return 0;
}

static int set_low_water(struct umap_config *c, const char *text)
{
	uint64_t v;

	if (parse_count(text, 1, 99, &v) < 0)
		return -EINVAL;
	c->opt.low_water = (unsigned)v;
	return 0;
}

static int set_read_ahead(struct umap_config *c, const char *text)
{
	uint64_t v;

	if (parse_count(text, 0, 1u << 16, &v) < 0)
		return -EINVAL;
	c->opt.read_ahead = (unsigned)v;
	return 0;
}

static int set_fillers(struct umap_config *c, const char *text)
{
	return parse_count(text, 1, 1u << 20, &c->fillers);
}

static int set_evictors(struct umap_config *c, const char *text)
{
	return parse_count(text, 1, 1u << 20, &c->evictors);
}

static int set_max_fault_events(struct umap_config *c, const char *text)
{
	return parse_count(text, 1, 1u << 20, &c->max_fault_events);
}

static int set_monitor(struct umap_config *c, const char *text)
{
	uint64_t v;

	if (parse_count(text, 0, 86400, &v) < 0)
		return -EINVAL;
	c->monitor_s = (unsigned)v;
	return 0;
}

static int set_log_level(struct umap_config *c, const char *text)
{
	static const struct { const char *name; int level; } names[] = {
		{ "OFF", LOG_OFF }, { "NONE", LOG_OFF }, { "ERROR", LOG_ERROR },
		{ "WARNING", LOG_WARNING }, { "WARN", LOG_WARNING },
		{ "INFO", LOG_INFO }, { "DEBUG", LOG_DEBUG },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcasecmp(text, names[i].name)) {
			c->log_level = names[i].level;
			return 0;
		}
	}
	return -EINVAL;
}

/*
 * The one table of UMAP_* variables, in the order they are applied: the log
 * level first so it governs the warnings about the others, the page size
 * before the buffer size that counts in pages. `unused` says why tide has no
 * use for a variable it still accepts and reports through the getters.
 */
static const struct umap_var {
	const char *name;
	int (*apply)(struct umap_config *c, const char *text);
	const char *valid;
	const char *unused;
} umap_vars[] = {
	{ "UMAP_LOG_LEVEL", set_log_level, "OFF, ERROR, WARNING, INFO or DEBUG", NULL },
	{ "UMAP_PAGESIZE", set_page_size, "bytes, a power of two from 4096 to 2M", NULL },
	{ "UMAP_BUFSIZE", set_buffer_pages, "pages in the buffer, at least 4", NULL },
	{ "UMAP_EVICT_HIGH_WATER_THRESHOLD", set_high_water, "percent, 1 to 100", NULL },
	{ "UMAP_EVICT_LOW_WATER_THRESHOLD", set_low_water, "percent, 1 to 99", NULL },
	{ "UMAP_READ_AHEAD", set_read_ahead, "pages, 0 to 65536", NULL },
	{ "UMAP_MONITOR_FREQ", set_monitor, "seconds between statistics lines, 0 = off", NULL },
	{ "UMAP_PAGE_FILLERS", set_fillers, "threads, at least 1",
	  "tide fills pages from one service thread with io_uring, not a filler pool" },
	{ "UMAP_PAGE_EVICTORS", set_evictors, "threads, at least 1",
	  "tide writes back and evicts from its service thread, not an evictor pool" },
	{ "UMAP_MAX_FAULT_EVENTS", set_max_fault_events, "events, at least 1",
	  "tide drains every pending fault event each time it wakes" },
};
#define NVARS (sizeof(umap_vars) / sizeof(umap_vars[0]))

static uint64_t online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (uint64_t)n : 1;
}

static void report_config(const struct umap_config *c)
{
	verbose("page size %zu, buffer %zu pages (%zu bytes), evict at %u%% down to %u%%, "
		"read-ahead %u pages", c->opt.page_size, c->opt.budget / c->opt.page_size,
		c->opt.budget, c->opt.high_water, c->opt.low_water, c->opt.read_ahead);
	for (size_t i = 0; i < NVARS; i++) {
		const char *env = getenv(umap_vars[i].name);

		if (env && umap_vars[i].unused)
			verbose("%s=%s is accepted and has no effect: %s", umap_vars[i].name,
				env, umap_vars[i].unused);
	}
}

/* Runs once per process: tide's defaults and TIDE_* first, UMAP_* over them. */
static void config_load(void)
{
	struct tide_options base;
	const char *high_env, *low_env;

	tide_options_init(&cfg.opt);
	base = cfg.opt;
	cfg.fillers = online_cpus();
	cfg.evictors = online_cpus();
	cfg.max_fault_events = UMAP_DEFAULT_MAX_FAULT_EVENTS;
	cfg.log_level = LOG_WARNING;

	for (size_t i = 0; i < NVARS; i++) {
		const struct umap_var *v = &umap_vars[i];
		const char *env = getenv(v->name);

		if (env && v->apply(&cfg, env) < 0)
			log_at(LOG_WARNING, "%s=\"%s\" is not valid (%s); keeping the default",
			       v->name, env, v->valid);
	}
	/* Each threshold may be valid alone and the pair still inverted. */
	high_env = getenv("UMAP_EVICT_HIGH_WATER_THRESHOLD");
	low_env = getenv("UMAP_EVICT_LOW_WATER_THRESHOLD");
	if ((high_env || low_env) && cfg.opt.low_water >= cfg.opt.high_water) {
		log_at(LOG_WARNING, "UMAP_EVICT_LOW_WATER_THRESHOLD (%u%%) must be below "
		       "UMAP_EVICT_HIGH_WATER_THRESHOLD (%u%%); keeping the defaults %u%% and %u%%",
		       cfg.opt.low_water, cfg.opt.high_water, base.low_water, base.high_water);
		cfg.opt.low_water = base.low_water;
		cfg.opt.high_water = base.high_water;
	}
	if (cfg.log_level >= LOG_INFO)
		cfg.opt.verbose = 1;
	if (cfg.opt.verbose)
		report_config(&cfg);
}

static void config_get(void)
{
	pthread_once(&cfg_once, config_load);
}

/* ---- the pool ---- */

/* UMAP_MONITOR_FREQ: a periodic statistics line. The sleep is the period of
 * the report, not a wait for another thread. */
static void *monitor_main(void *arg)
{
	struct timespec period = { .tv_sec = (time_t)cfg.monitor_s };
	struct tide_stats st;

	(void)arg;
	for (;;) {
		while (nanosleep(&period, &period) < 0 && errno == EINTR)
			;
		period.tv_sec = (time_t)cfg.monitor_s;
		if (tide_pool_stats(pool, &st) < 0)
			continue;
		/* Printed at any log level but OFF: the user asked for it. */
		if (cfg.log_level > LOG_OFF)
			fprintf(stderr, "umap-tide: monitor: %llu faults, %llu fills, %llu evictions "
				"(%llu dirty), %llu of %llu bytes resident, fault p99 %llu us\n",
				(unsigned long long)st.faults, (unsigned long long)st.fills,
				(unsigned long long)st.evictions,
				(unsigned long long)st.evictions_dirty,
				(unsigned long long)st.resident_bytes,
				(unsigned long long)st.budget,
				(unsigned long long)(st.latency_p99_ns / 1000));
	}
	return NULL;
}

static void pool_start(void)
{
	pthread_attr_t attr;
	pthread_t monitor;
	int ret;

	config_get();
	ret = tide_pool_create(&pool, &cfg.opt);
	if (ret < 0) {
		/* tide_last_error() belongs to this thread; keep it for every caller. */
		snprintf(pool_why, sizeof(pool_why), "%s", tide_last_error());
		pool_err = ret;
		pool = NULL;
		return;
	}
	pool_owner = getpid();
	if (!cfg.monitor_s)
		return;
	if (pthread_attr_init(&attr))
		return;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&monitor, &attr, monitor_main, NULL))
		log_at(LOG_WARNING, "UMAP_MONITOR_FREQ: could not start the monitor thread");
	pthread_attr_destroy(&attr);
}

/*
 * fork() copies the pool's memory but not its service thread: in a child
 * every request would wait forever. Children of a process that has used umap
 * therefore get EPERM (and skip the flush at exit) instead of a hang.
 */
static bool in_forked_child(void)
{
	return pool && getpid() != pool_owner;
}

static int forked_child_failed(const char *call)
{
	char why[160];

	snprintf(why, sizeof(why), "the umap pool belongs to process %d; a child it forked "
		 "cannot use it", (int)pool_owner);
	return call_failed(EPERM, call, why);
}

static int pool_get(void)
{
	pthread_once(&pool_once, pool_start);
	if (in_forked_child())
		return -EPERM;
	return pool ? 0 : pool_err;
}

/* ---- the region registry (regions_lock held) ---- */

static struct umap_region *region_at(const void *addr)
{
	for (size_t i = 0; i < nregions; i++)
		if (regions[i].base == addr)
			return &regions[i];
	return NULL;
}

static struct umap_region *region_containing(const void *addr)
{
	for (size_t i = 0; i < nregions; i++)
		if ((const char *)addr >= regions[i].base &&
		    (const char *)addr < regions[i].base + regions[i].length)
			return &regions[i];
	return NULL;
}

static int region_reserve(void)
{
	struct umap_region *grown;
	size_t cap;

	if (nregions < regions_cap)
		return 0;
	cap = regions_cap ? 2 * regions_cap : 16;
	grown = realloc(regions, cap * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	regions = grown;
	regions_cap = cap;
	return 0;
}

/* ---- the API ---- */

static size_t round_up(size_t n, size_t unit)
{
	return (n + unit - 1) & ~(unit - 1);
}

/*
 * umap maps every region with the global page size and ignores `offset`.
 * tide honours it, and mmap only asks offsets to be system-page aligned, so
 * an offset the configured page size does not divide gets a region with the
 * largest power-of-two page that does.
 */
static size_t region_page_size(off_t offset)
{
	size_t ps = cfg.opt.page_size;
	size_t align = offset ? (size_t)offset & -(size_t)offset : ps;

	return align < ps ? align : ps;
}

UMAP_EXPORT void *umap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
	long sys_page = sysconf(_SC_PAGESIZE);
	int sharing = flags & (MAP_PRIVATE | MAP_SHARED);
	int tprot, err;
	size_t ps;
	char *base;
	char why[320];

	(void)addr; /* a hint, as for mmap without MAP_FIXED */
	config_get();
	if (flags & UMAP_FIXED)
		return map_failed(ENOTSUP, "UMAP_FIXED is not supported: tide places each region "
				  "itself; map without it and use the address umap() returns");
	if ((flags & ~(MAP_PRIVATE | MAP_SHARED)) || sharing == 0 ||
	    sharing == (MAP_PRIVATE | MAP_SHARED))
		return map_failed(EINVAL, "flags must be UMAP_PRIVATE (or MAP_SHARED), "
				  "optionally with UMAP_FIXED");
	if (!prot || (prot & ~(PROT_READ | PROT_WRITE)))
		return map_failed(EINVAL, "prot must be PROT_READ, PROT_WRITE or both");
	if (length == 0)
		return map_failed(EINVAL, "length is zero");
	if (offset < 0 || (sys_page > 0 && offset % sys_page))
		return map_failed(EINVAL, "offset must be a non-negative multiple of the "
				  "system page size");
	/* Write access implies read, as for mmap on every architecture tide runs on. */
	tprot = TIDE_PROT_READ | (prot & PROT_WRITE ? TIDE_PROT_WRITE : 0);
	ps = region_page_size(offset);
	if (length > SIZE_MAX - ps)
		return map_failed(EINVAL, "length is too large");
	/* umap rounds the length up to whole pages; so does mmap. */
	length = round_up(length, ps);

	err = pool_get();
	if (err < 0) {
		if (in_forked_child())
			snprintf(why, sizeof(why), "the umap pool belongs to process %d; a child "
				 "it forked cannot use it", (int)pool_owner);
		else
			snprintf(why, sizeof(why), "cannot start the tide pool: %s", pool_why);
		return map_failed(-err, why);
	}
	pthread_mutex_lock(&regions_lock);
	err = region_reserve();
	if (err < 0) {
		pthread_mutex_unlock(&regions_lock);
		return map_failed(-err, "out of memory for the region registry");
	}
	base = tide_map(pool, fd, offset, length, tprot, ps);
	if (!base) {
		err = errno;
		snprintf(why, sizeof(why), "%s", tide_last_error());
		pthread_mutex_unlock(&regions_lock);
		return map_failed(err, why);
	}
	regions[nregions++] = (struct umap_region){ base, length, ps };
	pthread_mutex_unlock(&regions_lock);
	log_at(LOG_DEBUG, "umap(fd %d, offset %lld, length %zu, page %zu) = %p", fd,
	       (long long)offset, length, ps, (void *)base);
	return base;
}

UMAP_EXPORT int uunmap(void *addr, size_t length)
{
	struct umap_region *r;
	int ret;

	config_get(); /* for the log level */
	if (in_forked_child())
		return forked_child_failed("uunmap");
	pthread_mutex_lock(&regions_lock);
	r = region_at(addr);
	if (!r) {
		pthread_mutex_unlock(&regions_lock);
		return call_failed(EINVAL, "uunmap", "the address is not the start of a region "
				   "mapped with umap()");
	}
	/* Releasing part of a region is not supported; a length that would leave
	 * a remainder mapped is refused rather than silently widened. */
	if (length && round_up(length, r->page_size) != r->length) {
		pthread_mutex_unlock(&regions_lock);
		return call_failed(EINVAL, "uunmap", "the length does not cover the whole region; "
				   "partial unmapping is not supported");
	}
	ret = tide_unmap(addr);
	if (ret < 0) {
		/* tide keeps the region and its dirty pages mapped: nothing is lost,
		 * and the caller may retry. */
		char why[256];

		snprintf(why, sizeof(why), "%s", tide_last_error());
		pthread_mutex_unlock(&regions_lock);
		return call_failed(-ret, "uunmap", why);
	}
	*r = regions[--nregions];
	pthread_mutex_unlock(&regions_lock);
	log_at(LOG_DEBUG, "uunmap(%p)", addr);
	return 0;
}

UMAP_EXPORT int umap_flush(void)
{
	char why[256] = "";
	int err = 0;

	config_get(); /* for the log level */
	if (in_forked_child())
		return forked_child_failed("umap_flush");
	pthread_mutex_lock(&regions_lock);
	/* Flush every region even after one fails, and report the first error. */
	for (size_t i = 0; i < nregions; i++) {
		int ret = tide_flush(regions[i].base, 0);

		if (ret < 0 && !err) {
			err = -ret;
			snprintf(why, sizeof(why), "%s", tide_last_error());
		}
	}
	pthread_mutex_unlock(&regions_lock);
	if (err)
		return call_failed(err, "umap_flush", why);
	return 0;
}

UMAP_EXPORT int umap_has_write_support(void)
{
	return 1;
}

/* The part of [addr, addr+len) inside one umap() region, aligned out to its
 * pages; false if addr is in none. *region names the region so neighbouring
 * ranges of two regions are never merged. The region may go once the lock
 * drops; tide then refuses the prefetch, which is advisory anyway. */
static bool prefetch_range(const char *addr, uint64_t len, char **region, char **start,
			   size_t *bytes)
{
	struct umap_region *r;
	bool found = false;

	pthread_mutex_lock(&regions_lock);
	r = region_containing(addr);
	if (r) {
		size_t off = (size_t)(addr - r->base);
		size_t first = off & ~(r->page_size - 1);
		size_t end = len > r->length - off ? r->length : round_up(off + len, r->page_size);

		*region = r->base;
		*start = r->base + first;
		*bytes = end - first;
		found = true;
	}
	pthread_mutex_unlock(&regions_lock);
	return found;
}

static void prefetch(char *start, size_t bytes)
{
	int ret = tide_prefetch(start, bytes);

	if (ret < 0)
		log_at(LOG_DEBUG, "prefetch of %zu bytes at %p: %s", bytes, (void *)start,
		       tide_last_error());
}

UMAP_EXPORT void umap_prefetch(int npages, struct umap_prefetch_item *page_array)
{
	char *run_region = NULL, *run = NULL, *region, *start;
	size_t run_len = 0, bytes;

	if (npages <= 0 || !page_array || in_forked_child())
		return;
	/* Neighbouring pages in the list become one request, so a prefetch of a
	 * contiguous range costs one round trip to the service thread. */
	for (int i = 0; i < npages; i++) {
		if (!prefetch_range(page_array[i].page_base_addr, 1, &region, &start, &bytes))
			continue;
		if (run && region == run_region && start == run + run_len) {
			run_len += bytes;
			continue;
		}
		if (run)
			prefetch(run, run_len);
		run_region = region;
		run = start;
		run_len = bytes;
	}
	if (run)
		prefetch(run, run_len);
}

UMAP_EXPORT void umap_fetch_and_pin(char *paddr, uint64_t size)
{
	char *region, *start;
	size_t bytes;

	if (size && !in_forked_child() && prefetch_range(paddr, size, &region, &start, &bytes))
		prefetch(start, bytes);
}

/* ---- configuration getters ---- */

UMAP_EXPORT long umapcfg_get_system_page_size(void)
{
	return sysconf(_SC_PAGESIZE);
}

/* Every getter reads the configuration, loading it on first use. */
#define UMAPCFG_GETTER(type, name, value) \
	UMAP_EXPORT type umapcfg_get_##name(void) { config_get(); return (type)(value); }

UMAPCFG_GETTER(uint64_t, umap_page_size, cfg.opt.page_size)
UMAPCFG_GETTER(uint64_t, max_fault_events, cfg.max_fault_events)
UMAPCFG_GETTER(uint64_t, num_fillers, cfg.fillers)
UMAPCFG_GETTER(uint64_t, num_evictors, cfg.evictors)
UMAPCFG_GETTER(uint64_t, max_pages_in_buffer, cfg.opt.budget / cfg.opt.page_size)
UMAPCFG_GETTER(uint64_t, read_ahead, cfg.opt.read_ahead)
UMAPCFG_GETTER(int, evict_low_water_threshold, cfg.opt.low_water)
UMAPCFG_GETTER(int, evict_high_water_threshold, cfg.opt.high_water)

/*
 * With mmap(MAP_SHARED) the kernel writes dirty pages back even if a program
 * never calls msync or munmap; umap programs often rely on that. tide keeps
 * dirty pages in user space, so flush what is still mapped when the process
 * exits. trylock: exit() may come while another thread holds the lock.
 */
__attribute__((destructor)) static void flush_at_exit(void)
{
	if (!pool || in_forked_child() || pthread_mutex_trylock(&regions_lock))
		return;
	for (size_t i = 0; i < nregions; i++)
		if (tide_flush(regions[i].base, 0) < 0)
			log_at(LOG_ERROR, "at exit, region %p was not written back: %s",
			       (void *)regions[i].base, tide_last_error());
	pthread_mutex_unlock(&regions_lock);
}
