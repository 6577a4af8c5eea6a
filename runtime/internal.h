/*
 * tide internals: the objects the service thread owns and the modules that
 * act on them. Public names are tide_*, internal non-static ones tide__*.
 *
 * Ownership rule: everything below `owned by the service thread` is touched
 * only by that thread. App threads talk to it through requests (loop.c) and
 * never read frames, regions' page tables or counters directly. The one
 * exception is a fault handler of TIDE_SIGNAL_FAULTS (signal.c), which acts
 * for the service thread while it holds the pool's state lock; the service
 * thread holds the same lock for each pass.
 */
#ifndef TIDE_INTERNAL_H
#define TIDE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <liburing.h>
#include <uv.h>

#include "tide.h"
#include "uffd.h"

#define TIDE_MIN_PAGE   4096u
#define TIDE_MAX_PAGE   (2u << 20)
#define TIDE_MIN_PAGES  4u          /* a pool holds at least this many pages of a region */
#define TIDE_MAX_WRITE  (1u << 30)  /* TIDE_WRITE_MAX: a store length fits an io_uring SQE */
#define TIDE_NO_FRAME   UINT32_MAX
#define TIDE_MAX_SHARDS 64u         /* TIDE_SERVICE_THREADS */

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

static inline bool tide__is_pow2(size_t x) { return x && !(x & (x - 1)); }

/* ---- log.c: diagnostics and the per-thread last error ---- */
int tide__fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tide__warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tide__info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t tide__now_ns(void);

/* ---- options.c: the one table of TIDE_* options ---- */
enum tide__opt_kind { OPT_SIZE, OPT_UINT, OPT_INT, OPT_BOOL, OPT_PERCENT, OPT_WRITEBACK, OPT_PATH };
/* Whose setting an option is: a pool's (a field of struct tide_options) or
 * the LD_PRELOAD layer's (a field of struct tide__preload_options). */
enum tide__opt_scope { OPT_POOL, OPT_PRELOAD };
struct tide__option {
	const char *name;        /* environment variable */
	enum tide__opt_kind kind;
	enum tide__opt_scope scope;
	size_t offset;           /* in the scope's struct */
	const char *def;         /* default, as text */
	const char *help;
	long min, max;           /* OPT_UINT: accepted range when max > 0 */
};
extern const struct tide__option tide__options[];
extern const size_t tide__noptions;

/* The settings of libtide-preload.so (runtime/preload.c, docs/preload.md). */
#define TIDE_PRELOAD_PATH_MAX 1024
struct tide__preload_options {
	size_t min;              /* TIDE_PRELOAD_MIN: smallest mapping taken, bytes */
	int write;               /* TIDE_PRELOAD_WRITE: take writable MAP_SHARED mappings */
	char stats[TIDE_PRELOAD_PATH_MAX]; /* TIDE_PRELOAD_STATS: append counters here at exit */
};
/* Defaults, then the TIDE_PRELOAD_* environment (bad values warn). */
void tide__preload_options_init(struct tide__preload_options *o);

/* The pool counters (struct tide_stats fields) each preloaded process
 * writes to TIDE_PRELOAD_STATS at exit as key=value, and `tide run` sums:
 * one list for the writer and the reader. */
#define TIDE_PRELOAD_COUNTERS(X)                                                        \
	X(faults) X(faults_read) X(faults_write) X(faults_wp) X(faults_signal)          \
	X(signal_waits) X(signal_sleeps) X(spin_rests) X(wake_periods) X(fills)         \
	X(fills_zero) X(prefetched) X(evictions) X(evictions_dirty) X(evictions_moved)  \
	X(fills_recycled) X(writebacks) X(writeback_errors) X(read_errors) X(flushes)   \
	X(fills_offloaded) X(bytes_read) X(bytes_written)

int tide__parse_size(const char *s, uint64_t *out);
int tide__parse_bool(const char *s, int *out);
int tide__options_check(const struct tide_options *o);
void tide__options_print(FILE *f, const struct tide_options *o);
/* `fields` is the struct of the option's scope: struct tide_options for
 * OPT_POOL, struct tide__preload_options for OPT_PRELOAD. */
void tide__option_format(const void *fields, const struct tide__option *opt,
			 char *buf, size_t len);
/* The option called `name`: "TIDE_BUDGET", or without the prefix, in any
 * case, with '-' for '_' ("budget", "page-size"). NULL if there is none. */
const struct tide__option *tide__option_find(const char *name);
/* 0 if `text` is a value the option accepts, else -EINVAL. */
int tide__option_valid(const struct tide__option *opt, const char *text);

/* ---- stats.c: counters and the fault latency histogram ---- */
#define TIDE_HIST_BUCKETS 512
struct tide__stats {
	struct tide_stats c;     /* counters, as the public struct */
	uint64_t lat_count;
	uint64_t lat_sum;
	uint64_t hist[TIDE_HIST_BUCKETS];
};
void tide__stats_latency(struct tide__stats *s, uint64_t ns);
void tide__stats_snapshot(const struct tide__stats *s, struct tide_stats *out);
/* Shards: add one shard's snapshot `s` and its histogram `h` to `sum` and
 * `all`; then tide__stats_sum_latency() puts the latency of all faults in
 * `sum`, from the summed buckets. */
void tide__stats_sum(struct tide_stats *sum, struct tide__stats *all,
		     const struct tide_stats *s, const struct tide__stats *h);
void tide__stats_sum_latency(struct tide_stats *sum, const struct tide__stats *all);

/* ---- bounce.c: runtime-owned staging memory, registered with io_uring ---- */
struct tide__bounce {
	char *base;
	size_t size;
	size_t unit;             /* allocation granule: 4 KiB */
	uint64_t *map;           /* one bit per unit, 1 = in use */
	size_t nunits;
	size_t used;             /* units in use */
	size_t split;            /* units below it in huge pages (fills), above plain */
	bool registered;         /* io_uring fixed buffer index 0 */
};
int tide__bounce_init(struct tide__bounce *b, size_t size);
int tide__bounce_reserve(struct tide__bounce *b, size_t size);
void tide__bounce_fini(struct tide__bounce *b);
void *tide__bounce_get(struct tide__bounce *b, size_t len);
void *tide__bounce_get_span(struct tide__bounce *b, size_t piece, size_t max, size_t *len);
void tide__bounce_put(struct tide__bounce *b, void *p, size_t len);

/* ---- spare.c: evicted pages moved out of their region, reused by fills ---- */
#define TIDE_SPARE_RUNS 64
struct spare_run {
	char *at;
	size_t len;
	bool fresh;              /* seeded: zeros but for the first byte of each 4 KiB */
};
struct tide__spare {
	bool on;                 /* TIDE_RECYCLE, and the kernel has UFFDIO_MOVE */
	bool seed;               /* transparent huge pages can seed the room */
	struct tide__bounce room;/* address space for moved pages, uffd-registered */
	struct spare_run free[TIDE_SPARE_RUNS]; /* written back, present, oldest first */
	unsigned nfree;
};
int tide__spare_init(struct tide_pool *p);
void tide__spare_fini(struct tide_pool *p);
/* A slot of at most `max` bytes, whole pieces, for pages to move out; NULL if none. */
void *tide__spare_room(struct tide_pool *p, size_t piece, size_t max, size_t *len);
int tide__spare_out(struct tide_pool *p, char *at, char *addr, size_t len);
void tide__spare_back(struct tide_pool *p, char *at, char *addr, size_t len);
void tide__spare_copy_back(struct tide_pool *p, const char *src, char *addr, size_t len,
			   bool protect);
void tide__spare_free(struct tide_pool *p, char *at, size_t len);
size_t tide__spare_zeros(struct tide_pool *p, char *addr, size_t len, size_t ps);
void tide__spare_trim(struct tide_pool *p);
/* Whether madvise(MADV_HUGEPAGE) gets transparent huge pages here. */
bool tide__thp_available(void);

/* ---- store I/O: every storage operation is one of these ---- */
struct tide_io {
	struct tide_pool *pool;
	void (*done)(struct tide_io *io, ssize_t res);   /* on the service thread */
	struct tide_io *next;    /* backlog / cross-thread completion list */
	int (*start)(struct tide_io *io);                /* (re)issue the operation */
	int buf_index;           /* registered buffer index for fixed I/O, or -1 */
	ssize_t res;
};

/* ---- ring.c: io_uring, its eventfd, fixed buffers ---- */
int tide__ring_init(struct tide_pool *p);
void tide__ring_fini(struct tide_pool *p);
void tide__ring_set_service(struct tide_pool *p);
bool tide__on_service_thread(const struct tide_pool *p);
/* Submit the queued requests now if this is p's service thread itself. */
void tide__ring_push(struct tide_pool *p);
/* A fault handler acts for p's service thread (under p->state): returns
 * whom the thread acted for before, to give back to tide__ring_restore. */
struct tide_pool *tide__ring_service(struct tide_pool *p);
void tide__ring_restore(struct tide_pool *prev);
/* The calling thread's own small ring, for a fault handler's reads: made at
 * first use, NULL if it cannot be. */
struct io_uring *tide__ring_own(void);
/* One read on it, waited for: bytes read or -errno. */
ssize_t tide__ring_read_now(struct io_uring *ring, int fd, void *buf, size_t len, uint64_t off);
struct io_uring_sqe *tide__ring_sqe(struct tide_pool *p);
int tide__ring_submit(struct tide_pool *p);
int tide__ring_reap(struct tide_pool *p);        /* completions handled */
void tide__io_submit(struct tide_pool *p, struct tide_io *io); /* honours queue depth */
void tide__io_backlog_run(struct tide_pool *p);
int tide__io_remote_run(struct tide_pool *p);       /* completions from other threads */

/* ---- installer.c: the install thread (TIDE_INSTALL_THREAD) ---- */
/* Whether a pool with these options gets one; `why` (if not NULL) says why. */
bool tide__installer_plan(const struct tide_options *o, char *why, size_t len);
int tide__installer_start(struct tide_pool *p);   /* 0 also when it does not apply */
void tide__installer_stop(struct tide_pool *p);
/* Run io->start on the install thread (p->installer is set); io->done
 * comes back on the service thread. */
void tide__installer_take(struct tide_pool *p, struct tide_io *io);

/* ---- store_file.c: the file store, written on struct tide_store_ops ---- */
extern const struct tide_store_ops tide__file_store_ops;
/* A read now, on the calling thread's own ring: bytes read or -errno. */
ssize_t tide__file_store_read_now(void *store, struct io_uring *ring, void *buf, size_t len,
				  uint64_t off);
int tide__file_store_open(struct tide_pool *p, int fd, int prot, void **store);

/* ---- pool.c: frames, budget, CLOCK ---- */
enum frame_state {
	FRAME_FREE = 0,
	FRAME_FILLING,           /* read from the store in flight */
	FRAME_CLEAN,             /* resident, write-protected, same as the store */
	FRAME_DIRTY,             /* resident, writable, newer than the store */
	FRAME_WRITEBACK,         /* write-protected, write to the store in flight */
	FRAME_STAGED,            /* read ahead, held in bounce memory, not yet mapped:
	                          * the run's trigger, installed by the fault on it */
};

struct frame {
	struct region *region;
	uint64_t page;
	uint32_t next, prev;     /* CLOCK ring of resident frames, or free list */
	uint8_t state;
	uint8_t referenced;      /* CLOCK bit, set by faults on the page */
	uint8_t want_write;      /* a write fault waits on this fill */
	uint8_t evicting;        /* drop the page when its write-back completes */
	uint8_t redirtied;       /* a write arrived while the page was written back */
	uint8_t prefetch;        /* enum fill_kind of the fill */
	uint8_t held;            /* filled by a fault handler that has not returned yet */
	uint8_t trigger;         /* read-ahead: 1 + the stream (r->streams) whose trigger
	                          * page this is: staged when read unless a fault waits */
	uint8_t moved;           /* WRITEBACK: the page is out of the region, in the spare room */
	uint8_t offloaded;       /* FILLING: read, and with the install thread (installer.c) */
	uint64_t t_fault;        /* when the fault was read (latency) */
};

uint32_t tide__frame_alloc(struct tide_pool *p, struct region *r, uint64_t page);
void tide__frame_free(struct tide_pool *p, uint32_t f);
void tide__frame_resident(struct tide_pool *p, uint32_t f); /* join the CLOCK ring */
static inline struct frame *tide__frame(struct tide_pool *p, uint32_t f);
bool tide__pool_has_room(struct tide_pool *p, size_t len);
/* tide__pool_budget, _high, _low: the budget now and its watermarks (below). */
/* Bytes read-ahead may still fill: up to the high watermark, pages on
 * their way out counted as gone. */
uint64_t tide__pool_ahead_room(const struct tide_pool *p);
void tide__pool_reclaim(struct tide_pool *p);          /* evict if above the high watermark */
/* The same, also making room for `want` more bytes (read-ahead about to start). */
void tide__pool_reclaim_for(struct tide_pool *p, uint64_t want);
/* Written-back pages [first, end) of r leave memory, as dirty evictions. */
void tide__pool_drop_span(struct tide_pool *p, struct region *r, uint64_t first, uint64_t end);

/* ---- region.c ---- */

/* Read-ahead: a sequential run of demand faults in a region (fault.c). A
 * region follows this many at once, so that interleaved scans (a merge's
 * input runs, several threads each reading its own slice) each get their
 * own window instead of resetting one another. */
#define TIDE_RA_STREAMS 8
struct ra_stream {
	uint64_t next;           /* the page the run faults next; UINT64_MAX: slot unused */
	uint64_t at;             /* the run's latest fault */
	uint64_t used;           /* the region's ra_tick when the run last faulted (LRU) */
	unsigned run;            /* faults in a row, each on the page after the last */
	bool write;              /* every fault of the run was a write */
	uint64_t staged_page;    /* the run's FRAME_STAGED page, when staged_buf */
	void *staged_buf;        /* its data, in bounce memory */
};

struct region {
	struct tide_pool *pool;
	char *base;
	size_t length;
	size_t page_size;
	unsigned page_shift;
	uint64_t npages;
	uint64_t store_off;
	int prot;
	const struct tide_store_ops *ops;
	void *store;
	uint32_t *slot;          /* page -> frame + 1, 0 when not resident */
	size_t slot_bytes;
	uint64_t resident;       /* frames of this region in any state */
	uint64_t busy;           /* fills and write-backs in flight */
	uint64_t dirty;          /* bytes of dirty pages */
	int error;               /* first write-back error since the last flush */
	uint64_t retry_at;       /* ns: after a failed write, no background write before */
	unsigned backoff_ms;     /* the wait after the last failure, doubling */
	struct ra_stream streams[TIDE_RA_STREAMS];
	uint64_t ra_tick;        /* demand faults that reached read-ahead */
	bool dying;
};
static inline char *tide__page_addr(struct region *r, uint64_t page)
{
	return r->base + (page << r->page_shift);
}
static inline uint64_t tide__store_off(const struct region *r, uint64_t page)
{
	return r->store_off + (page << r->page_shift);
}
static inline uint32_t tide__slot(const struct region *r, uint64_t page)
{
	return r->slot[page] - 1;   /* 0 - 1 == TIDE_NO_FRAME */
}
static inline void tide__slot_set(struct region *r, uint64_t page, uint32_t f)
{
	r->slot[page] = f + 1;
}
struct region *tide__region_find(struct tide_pool *p, uintptr_t addr); /* service thread */
void tide__region_free(struct region *r);
int tide__region_attach(struct tide_pool *p, struct region *r);        /* service thread */
void tide__region_detach(struct tide_pool *p, struct region *r);       /* service thread */
size_t tide__regions_of(const struct tide_pool *p); /* mapped, its shards' included; any thread */

/* ---- fault.c / fill.c ---- */
void tide__fault(struct tide_pool *p, const struct uffd_msg *m, uint64_t now);
bool tide__fault_waiting(const struct tide_pool *p, const struct region *r, uint64_t page);
enum fill_kind { FILL_DEMAND = 0, FILL_READAHEAD = 1, FILL_PREFETCH = 2 };
int tide__fill_init(struct tide_pool *p);        /* the zero source for store holes */
void tide__fill_fini(struct tide_pool *p);
uint32_t tide__fill_run_max(const struct region *r);   /* pages of one fill_run (holes) */
uint32_t tide__fill_read_max(const struct region *r);  /* pages of one read */
int tide__fill_run(struct tide_pool *p, struct region *r, uint64_t page, uint32_t n, bool write,
		   enum fill_kind prefetch, uint64_t t_fault);
int tide__fill_start(struct tide_pool *p, struct region *r, uint64_t page, bool write,
		     enum fill_kind kind, uint64_t t_fault);
/* Read-ahead pages of r were read (fill.c): keep the run's window full. */
void tide__read_ahead_done(struct tide_pool *p, struct region *r, uint64_t first, uint32_t n);
/* Install stream s's staged page now (its run is over). */
void tide__fill_unstage(struct tide_pool *p, struct region *r, struct ra_stream *s);
/* Install the staged pages of r in [first, end) now (a fault on one, a
 * prefetch of the range). */
void tide__fill_unstage_range(struct tide_pool *p, struct region *r, uint64_t first, uint64_t end);
/* Let r's staged pages go without installing them (the region goes). */
void tide__fill_unstage_drop(struct tide_pool *p, struct region *r);
int tide__waiters_run(struct tide_pool *p);      /* retry faults that waited for room; served */
void tide__waiters_forget(struct tide_pool *p, struct region *r);

/* ---- writeback.c ---- */
struct epoch {
	struct epoch *next;
	uint64_t pending;        /* store writes issued in this epoch still in flight */
	struct request *waiters; /* flushes sealed on this epoch */
};
/* Pages of the run from f's page on (>= 1), or -errno (-EAGAIN: no bounce space). */
int tide__writeback_start(struct tide_pool *p, uint32_t f, bool evict);
int tide__epochs_init(struct tide_pool *p);
void tide__epochs_fini(struct tide_pool *p);
int tide__epoch_seal(struct tide_pool *p, struct request *req);
void tide__flush_written(struct tide_pool *p, struct request *req);
void tide__writeback_timer(struct tide_pool *p);
/* A region whose store failed a write is left alone by eviction and the
 * timer until its back-off passes (flushes still write at once). */
static inline bool tide__region_backing_off(const struct region *r, uint64_t now)
{
	return r->retry_at > now;
}

/* ---- loop.c: the service thread ---- */
enum request_kind { REQ_MAP, REQ_UNMAP, REQ_FLUSH, REQ_PREFETCH, REQ_STATS, REQ_STOP };
enum request_step { STEP_START, STEP_WRITEBACK, STEP_SYNC, STEP_DRAIN, STEP_DONE };
struct request {
	enum request_kind kind;
	enum request_step step;
	struct region *region;
	uintptr_t addr;          /* base of the region, resolved on the service thread */
	uint64_t first, end;     /* page range [first, end) */
	uint64_t cursor;         /* stats: the fills handed over it waits for */
	uint64_t filled;         /* prefetch: fills started */
	bool asked;              /* prefetch: budget asked of a sibling shard */
	struct request *wait_next; /* on an epoch's waiters */
	struct tide_stats *stats;
	struct tide__stats *raw; /* stats: the histogram too, when not NULL */
	int result;
	struct tide_io io;       /* the store flush */
	uv_sem_t done;
	struct request *next;
};
int tide__request(struct tide_pool *p, struct request *req); /* from an app thread */
void tide__request_start(struct tide_pool *p, struct request *req);
void tide__loop_stop(struct tide_pool *p);
void tide__request_finish(struct tide_pool *p, struct request *req, int result);
void tide__loop_wake_at(struct tide_pool *p, uint64_t when_ns); /* run a pass then */
/* The calling thread is p's service thread itself (not a handler acting for it). */
bool tide__loop_thread(const struct tide_pool *p);
void tide__requests_progress(struct tide_pool *p);

/* One pool with its own service thread: a pool of service_threads = 1, or a
 * shard of `parent`, numbered `shard` (opts are checked already). */
int tide__pool_start(struct tide_pool **out, const struct tide_options *opts,
		     struct tide_pool *parent, unsigned shard);

/* ---- shard.c: a pool of service_threads > 1 ---- */
int tide__shards_create(struct tide_pool **out, const struct tide_options *opts);
int tide__shards_destroy(struct tide_pool *p);
int tide__shards_stats(struct tide_pool *p, struct tide_stats *stats);
struct tide_pool *tide__shard_pick(struct tide_pool *p);  /* for a new region */
/* The budget follows the faults: a shard about to evict for `need` more
 * bytes asks a sibling for budget it does not use (or, below its fair
 * share, for what the sibling holds above its own); the sibling answers in
 * its next pass (tide__shard_balance). p is a shard (callers check
 * p->parent); its service thread or a handler holding its state lock. */
void tide__shard_ask(struct tide_pool *p, uint64_t need);
/* Answer asks, and hand over budget promised once it is free. The same,
 * from p's pass. */
void tide__shard_balance(struct tide_pool *p);
/* Regions came or went: p keeps four pages of its largest page size. */
void tide__shard_floor(struct tide_pool *p);
/* An ask of p's is out, unanswered (any thread). */
bool tide__shard_asking(const struct tide_pool *p);

/* ---- signal.c: faults served on the faulting thread (TIDE_SIGNAL_FAULTS) ---- */
int tide__signal_install(void);
/* The state lock: the service thread holds it for each pass, a handler
 * while it serves a fault. `changed`: wake the faults that wait. */
void tide__state_lock(struct tide_pool *p);
void tide__state_unlock(struct tide_pool *p, bool changed);
/* This thread serves its own fault of p: a demand read may run here. */
bool tide__signal_serving(const struct tide_pool *p);
/* The pool whose region holds addr, or NULL; any thread. */
struct tide_pool *tide__pool_serving(const void *addr);

/* ---- watchdog.c: debug report of a stuck service loop ---- */
int tide__watchdog_start(struct tide_pool *p);
void tide__watchdog_stop(struct tide_pool *p);

/* Bounce bytes for a budget when TIDE_BOUNCE is 0: budget/8 within 4..16 MiB,
 * so the fills' huge-page half holds a read-ahead window and the next one. */
size_t tide__default_bounce(size_t budget);

/* ---- probe.c: is an O_DIRECT write from a write-protected page safe here? ---- */
/* Returns 1 safe, 0 unsafe (hangs or faults), -errno if it could not tell.
 * `why` receives one line of explanation. Cached per boot. */
int tide__probe_direct_write(char *why, size_t whylen);

struct pending_fault {
	struct pending_fault *next;
	struct region *region;
	uint64_t page;
	uint64_t t_fault;
	bool write;
};

struct tide_pool {
	struct tide_options opt;

	/* shard.c. A parent (nshards > 1) has only opt, owner, its shards and
	 * the keepers; everything else below is unused in it. */
	struct tide_pool *parent; /* a shard: the pool the user created; else NULL */
	unsigned shard;           /* a shard: its index in the parent */
	struct tide_pool **shards;/* a parent: nshards pools with a service thread each */
	unsigned nshards;
	unsigned next_shard;      /* a parent: round robin for tide_map off the shards' CPUs */

	int uffd;
	uint64_t uffd_features;
	int drop_pidfd;           /* this process, for process_madvise; -1 if unusable */

	/* The budget (shard.c: shards lend it to each other). Siblings read
	 * these with atomic loads; `share` changes only under the parent's
	 * `lock`, and a pool without shards keeps share = opt.budget. */
	uint64_t share;           /* bytes this pool may hold; starts at opt.budget
	                          * (a shard's opt.budget is its fair share, budget/N) */
	uint64_t floor;           /* a shard: never lent below this (tide__shard_floor) */
	uint64_t giving;          /* a shard: share promised to shard give_to, handed */
	unsigned give_to;         /*   over once resident fits without it (set by the owner) */
	uint64_t asked;           /* set under the parent's lock: bytes shard asked_by asks for */
	unsigned asked_by;
	bool asked_fair;          /*   and it is below its fair share */
	bool asking;              /* set under the parent's lock: an ask of this shard's is out */
	bool balance_off;         /* a parent, set under its lock: shards are going, no asks */

	struct io_uring ring;
	int ring_efd;
	struct tide__bounce bounce;
	struct tide__spare spare;
	char *zeros;              /* fill.c: read-only zeros, never uffd-registered */
	int odirect_warned;
	int odirect_used;         /* a file store got O_DIRECT */
	enum tide_writeback writeback; /* the path in use: fixed or direct */

	uv_loop_t loop;
	uv_poll_t uffd_poll;
	uv_poll_t ring_poll;
	uv_async_t wakeup;
	uv_timer_t timer;
	uv_timer_t retry;         /* a store's write-back back-off ends */
	uv_idle_t spin;
	uint64_t spin_until;      /* ns: TIDE_SPIN_US polling ends then */
	uint64_t spin_rest_until; /* ns: another thread wanted this CPU; no polling till then */
	uint64_t spin_rest_ns;    /* the last rest's length: rests in a row grow */
	int spin_cpu;             /* where the service thread polls, -1 when it does not */
	uv_thread_t thread;
	uv_sem_t started;
	int start_error;

	/* shared with app threads, under `lock` */
	pthread_mutex_t lock;
	struct request *requests;
	struct tide_io *remote_done;
	struct tide__installer *installer;
	uint64_t offloads, offloads_back; /* fills handed to it, and taken back */

	/* TIDE_SIGNAL_FAULTS (signal.c): what the service thread owns is
	 * owned by the holder of `state`; faults that wait sleep on serve_seq */
	pthread_mutex_t state;
	uint32_t serve_seq;
	uint32_t serve_waiters;
	uint64_t wake_due;        /* ns: a pass wanted then, asked off the loop's thread */

	/* owned by the service thread */
	pid_t owner;              /* the process that created the pool */
	struct region **regions;  /* sorted by base */
	size_t nregions, regions_cap;
	struct frame *frames;
	uint32_t nframes, frames_cap;
	uint32_t free_frames;     /* free list head */
	uint32_t hand;            /* CLOCK hand, TIDE_NO_FRAME when the ring is empty */
	uint64_t resident;        /* bytes in frames of any state */
	uint64_t leaving;         /* bytes in write-back for eviction */
	uint64_t dirty;
	uint64_t inflight;        /* store operations started */
	uint64_t prefetch_inflight;
	uint64_t staged;          /* bytes of bounce memory held by staged pages */
	uint64_t waiting_bytes;   /* pages the waiting faults need */
	struct tide_io *backlog, **backlog_tail;
	struct pending_fault *waiting, **waiting_tail;
	struct request *active;   /* requests in progress */
	struct epoch *epochs, *epoch_tail; /* oldest first; the tail is open */
	uint64_t last_progress_ns;
	const char *doing;        /* what the loop is at, for the watchdog */
	uv_thread_t watch_thread;
	pthread_mutex_t watch_lock;
	pthread_cond_t watch_cond;
	bool watch_stop;
	struct tide__stats st;
	bool stopping;

	/* keeper.c: SCHED_IDLE pollers, one per CPU, while faults flow; with
	 * shards only the parent has them, and every shard kicks them */
	struct keeper *keepers;
	int nkeepers;
	uint64_t keep_until;      /* ns: spin until then */
	uint32_t keep_seq;        /* futex word the sleeping keepers wait on */
	uint32_t keep_sleepers;
	uint32_t keep_reads;      /* demand reads in flight: stay awake for them */
	uint64_t spin_cpus;       /* CPUs (< 64) a service thread polls on: no keeper spins there */
	bool keep_stop;
	int keep_mode;            /* enum tide_wake_poll */
	int keep_qos_fd;          /* /dev/cpu_dma_latency, in keep_mode TIDE_WAKE_POLL_QOS only */
	uint64_t keep_periods;    /* tide_stats.wake_periods */
	struct tide_pool *keep_qos_next; /* pools holding a latency request, for fork */
};

/* ---- keeper.c ---- */
/* What keeps idle CPUs polling for a pool with options o (enum
 * tide_wake_poll); why gets the reason in words. tide__keepers_start
 * starts it (falling back as the plan does if the request cannot be made
 * after all). */
int tide__wake_poll_plan(const struct tide_options *o, char *why, size_t len);
int tide__keepers_start(struct tide_pool *p);
void tide__keepers_stop(struct tide_pool *p);
/* p (or a shard's parent) has keepers: keep them up a while. */
void tide__keepers_kick(struct tide_pool *p);
/* The service thread of p polls on cpu now (-1: it stopped): that CPU's
 * keeper gives way to it. */
void tide__keepers_spinning(struct tide_pool *p, int cpu);
/* A read a fault waits for starts / has completed / is any out (p may be
 * a shard). */
void tide__keepers_read_start(struct tide_pool *p);
void tide__keepers_read_end(struct tide_pool *p);
bool tide__keepers_reading(struct tide_pool *p);
/* stats->wake_poll and ->wake_periods of p (or a shard's parent). */
void tide__keepers_stats(struct tide_pool *p, struct tide_stats *stats);
/* hazard.c: a small /proc or /sys text file, without its newline; "" on error. */
char *tide__read_text(const char *path, char *buf, size_t len);
/* The guest's haltpoll window in ns, 0 if off, -1 if not a haltpoll guest;
 * driver (may be NULL) gets the cpuidle driver's name. */
long tide__guest_halt_poll(char *driver, size_t len);

static inline void tide__dirty_add(struct tide_pool *p, struct region *r, int64_t bytes)
{
	p->dirty += (uint64_t)bytes;
	r->dirty += (uint64_t)bytes;
}

static inline struct frame *tide__frame(struct tide_pool *p, uint32_t f)
{
	return &p->frames[f];
}

/* The budget now (a shard's share less what it promised away), and the
 * watermarks on it. Service thread. */
static inline uint64_t tide__pool_budget(const struct tide_pool *p)
{
	return __atomic_load_n(&p->share, __ATOMIC_RELAXED) - p->giving;
}
/*
 * How long past its window a demand read in flight keeps the keepers and a
 * spinning service thread up. A fault that waits for the disk is three
 * wake-ups, not two: the read's completion wakes the service thread, which
 * then wakes the faulting thread, ~100 us after the window of the pass
 * that issued the read ran out. Flash answers in 10-500 us (100-300 here);
 * a read that takes longer is slow enough that a halted vCPU costs little
 * beside it, and spinning for it would burn the CPU for nothing.
 */
#define TIDE_READ_WAIT_NS (1000 * 1000ull)

/* A spin-wait's pause: lets the sibling hyperthread (or the host) run. */
static inline void tide__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static inline uint64_t tide__pool_high(const struct tide_pool *p)
{
	return tide__pool_budget(p) / 100 * p->opt.high_water;
}
static inline uint64_t tide__pool_low(const struct tide_pool *p)
{
	return tide__pool_budget(p) / 100 * p->opt.low_water;
}

#endif /* TIDE_INTERNAL_H */
