/*
 * tide: user-space paging with userfaultfd.
 *
 * A pool owns a memory budget and one service thread. Regions map a store (a
 * file, or anything that implements struct tide_store_ops) into the address
 * space; page faults on a region are served by the pool's service thread,
 * which fills pages from the store, keeps at most `budget` bytes resident and
 * writes dirty pages back when it evicts them. A pool created with
 * service_threads = N > 1 is N such shards, each starting with 1/N of the
 * budget, which moves to the shards that fault.
 *
 * Error contract: functions returning int return 0 (or a non-negative count)
 * on success and a negative errno value on failure. Functions returning a
 * pointer return NULL on failure and set errno. After any failure,
 * tide_last_error() describes it in one sentence for the calling thread.
 * The library never calls abort() or exit().
 */
#ifndef TIDE_H
#define TIDE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TIDE_VERSION_MAJOR 0
#define TIDE_VERSION_MINOR 1
#define TIDE_VERSION_PATCH 0

typedef struct tide_pool tide_pool;

/* How a dirty page leaves memory when it is evicted or flushed. */
enum tide_writeback {
	TIDE_WRITEBACK_AUTO = 0,   /* probe the kernel, pick direct only if safe */
	TIDE_WRITEBACK_FIXED = 1,  /* copy into registered bounce buffers, WRITE_FIXED */
	TIDE_WRITEBACK_DIRECT = 2, /* O_DIRECT write straight from the protected page */
};

/* What keeps idle CPUs polling while faults flow, so that a wake-up does not
 * land on a halted vCPU (TIDE_WAKE_POLL_US, TIDE_WAKE_QOS; tide_stats). */
enum tide_wake_poll {
	TIDE_WAKE_POLL_OFF = 0,     /* nothing: turned off, one CPU, or signal faults */
	TIDE_WAKE_POLL_KERNEL = 1,  /* the guest kernel's own halt polling; tide does nothing */
	TIDE_WAKE_POLL_QOS = 2,     /* a CPU latency request of 0 while faults flow: idle CPUs poll in the kernel */
	TIDE_WAKE_POLL_THREADS = 3, /* keeper threads, SCHED_IDLE, spinning while faults flow */
};

/*
 * Pool options. tide_options_init() fills every field from the built-in
 * defaults and then from the TIDE_* environment variables; a caller changes
 * the fields it wants before tide_pool_create(), so explicit values win over
 * the environment. docs/options.md lists every option.
 */
struct tide_options {
	size_t budget;              /* TIDE_BUDGET: bytes of resident pages */
	size_t page_size;           /* TIDE_PAGE_SIZE: default region page size */
	unsigned high_water;        /* TIDE_HIGH_WATER: % of budget that starts eviction */
	unsigned low_water;         /* TIDE_LOW_WATER: % of budget eviction stops at */
	enum tide_writeback writeback; /* TIDE_WRITEBACK: auto, fixed or direct */
	unsigned queue_depth;       /* TIDE_QUEUE_DEPTH: storage I/Os in flight */
	size_t bounce;              /* TIDE_BOUNCE: registered bounce bytes, 0 = auto */
	unsigned flush_interval_ms; /* TIDE_FLUSH_INTERVAL: background write-back, 0 = off */
	unsigned spin_us;           /* TIDE_SPIN_US: service thread polls this long after activity */
	int service_cpu;            /* TIDE_SERVICE_CPU: pin the service thread, -1 = no */
	int odirect;                /* TIDE_ODIRECT: open file stores with O_DIRECT */
	unsigned read_ahead;        /* TIDE_READ_AHEAD: pages filled ahead of sequential faults */
	unsigned watchdog_s;        /* TIDE_WATCHDOG: debug, report a stuck loop after N s, 0 = off */
	int verbose;                /* TIDE_VERBOSE: print the effective settings */
	unsigned wake_poll_us;      /* TIDE_WAKE_POLL_US: keep idle CPUs polling this long after a fault */
	size_t write_max;           /* TIDE_WRITE_MAX: longest write-back I/O, bytes */
	unsigned service_threads;   /* TIDE_SERVICE_THREADS: shards, each with a service thread; 0 = 1 */
	int signal_faults;          /* TIDE_SIGNAL_FAULTS: serve faults on the faulting thread (SIGBUS) */
	int recycle;                /* TIDE_RECYCLE: evict dirty pages by moving them out, reuse them */
	int wake_qos;               /* TIDE_WAKE_QOS: wake polling by a CPU latency request where allowed */
	int install_thread;         /* TIDE_INSTALL_THREAD: a second thread installs read-ahead */
	uint64_t reserved[4];       /* zero; room to grow without breaking the ABI */
};

void tide_options_init(struct tide_options *opts);

/*
 * Create a pool and start its service thread (service_threads > 1: one per
 * shard, see docs/design.md). `opts` may be NULL for the defaults (with the
 * environment applied). Returns 0 and sets *pool, or:
 * -EINVAL for an invalid option, -EPERM when userfaultfd may not be used
 * (tide_last_error() says how to grant it), -ENOSYS when the kernel lacks
 * userfaultfd or a feature tide needs, -ENOMEM.
 */
int tide_pool_create(tide_pool **pool, const struct tide_options *opts);

/* Stop the service thread and free the pool. -EBUSY while regions are mapped. */
int tide_pool_destroy(tide_pool *pool);

/* The options in effect for this pool (after the write-back probe). */
int tide_pool_options(tide_pool *pool, struct tide_options *opts);

/* Region protection. */
#define TIDE_PROT_READ  0x1
#define TIDE_PROT_WRITE 0x2

/*
 * A store is where a region's pages live. Every operation but `hole` (below)
 * is asynchronous: it starts the I/O and returns 0, or returns -errno if it
 * could not start. The store reports the result later with
 * tide_io_complete() (the number of bytes moved, or -errno), from any
 * thread, possibly before the operation returns. A read shorter than asked
 * means end of store: the rest of the page reads as zeros; a failed read
 * gives the faulting threads SIGBUS where the kernel has UFFD_FEATURE_POISON
 * (6.6+) and is retried elsewhere. A write covers one page or a run of
 * adjacent pages (at most TIDE_WRITE_MAX bytes); if it moves fewer bytes
 * than asked, the pages it did not cover completely count as failed and
 * stay dirty. `buf` for a read is runtime-owned memory; for a write it is
 * either runtime memory or the write-protected application pages themselves
 * (the direct write-back path): a store must only read from it.
 *
 * `hole`, optional (NULL = never known), is the one synchronous operation:
 * it returns how many bytes from `off`, at most `len`, read as zeros now
 * (0: data at `off`, or not known), or -errno, which tide treats like 0.
 * Before reading a run of pages tide asks it, and installs the whole pages
 * of a hole as zeros without calling `read` (stats: fills_zero). It runs on
 * the service thread, so it must answer from what it knows, quickly.
 */
struct tide_io;

struct tide_store_ops {
	int (*read)(void *store, struct tide_io *io, void *buf, size_t len, uint64_t off);
	int (*write)(void *store, struct tide_io *io, const void *buf, size_t len, uint64_t off);
	int (*flush)(void *store, struct tide_io *io);  /* make written data durable */
	void (*close)(void *store);                     /* region unmapped; may be NULL */
	int64_t (*hole)(void *store, uint64_t off, uint64_t len); /* zeros at off; may be NULL */
};

void tide_io_complete(struct tide_io *io, ssize_t res);

/*
 * Map `length` bytes of the file `fd` from `offset` (both multiples of the
 * page size). `prot` is TIDE_PROT_READ, optionally | TIDE_PROT_WRITE.
 * `page_size` is 0 for the pool's default, or a power of two from 4 KiB to
 * 2 MiB. The fd is duplicated; the caller may close its own. A read-write
 * mapping past the end of the file extends the file. Returns the address of
 * the region, or NULL and errno: EINVAL (alignment, zero length, page size,
 * prot), EBADF, EACCES (write mapping of a read-only fd), ENXIO (read-only
 * mapping past the end of the file), ENOMEM (the budget holds fewer than four
 * pages of this size, or no address space).
 */
void *tide_map(tide_pool *pool, int fd, off_t offset, size_t length, int prot,
	       size_t page_size);

/* Map a custom store. `ops->close(store)` is called when the region goes;
 * if mapping fails the store is not closed and stays the caller's. */
void *tide_map_store(tide_pool *pool, const struct tide_store_ops *ops, void *store,
		     uint64_t offset, size_t length, int prot, size_t page_size);

/*
 * Write back every dirty page of the region that starts at `addr`, wait for
 * it to be on stable storage, then release the address range. On a storage
 * error returns -EIO and leaves the region mapped with its dirty pages, so
 * nothing is lost. -EINVAL if `addr` is not the start of a region.
 */
int tide_unmap(void *addr);

/*
 * Like msync(MS_SYNC): every page of [addr, addr+length) dirty at the time of
 * the call is written and the store flushed (fdatasync) before it returns.
 * Pages stay resident. length 0 means the whole region containing addr.
 */
int tide_flush(void *addr, size_t length);

/* Fill the missing pages of a range ahead of use, at most the low
 * watermark's worth (more would evict what was just fetched), and return
 * when those fills are done. -EINVAL if the range is not inside one region. */
int tide_prefetch(void *addr, size_t length);

/* The pool that serves `addr` (the one tide_pool_create returned, also
 * when it has shards), or NULL (errno EINVAL). */
tide_pool *tide_pool_of(const void *addr);

/* Region page size, or -EINVAL if addr is not in a region. */
ssize_t tide_page_size_of(const void *addr);

struct tide_stats {
	uint64_t faults;            /* faults served: events read from userfaultfd, or SIGBUS */
	uint64_t faults_read;       /* missing page, read access */
	uint64_t faults_write;      /* missing page, write access */
	uint64_t faults_wp;         /* write to a clean (protected) page */
	uint64_t faults_coalesced;  /* fault on a page already being filled or written back */
	uint64_t fills;             /* pages installed from a store (read, or a hole's zeros) */
	uint64_t prefetched;        /* of those, filled by prefetch or read-ahead */
	uint64_t evictions;         /* pages dropped from memory */
	uint64_t evictions_dirty;   /* of those, written back first */
	uint64_t writebacks;        /* pages written to a store (eviction, flush, timer) */
	uint64_t writeback_errors;  /* pages whose write failed (they stay dirty) */
	uint64_t read_errors;       /* failed fills (the faulting thread gets SIGBUS) */
	uint64_t flushes;           /* store flushes (fdatasync) */
	uint64_t bytes_read;
	uint64_t bytes_written;
	uint64_t resident_bytes;
	uint64_t peak_resident_bytes;
	uint64_t dirty_bytes;
	uint64_t budget;
	uint64_t bounce_bytes;      /* runtime bounce buffers (not part of the budget) */
	uint64_t regions;
	uint64_t latency_mean_ns;   /* fault service time: event read to page installed */
	uint64_t latency_p50_ns;
	uint64_t latency_p90_ns;
	uint64_t latency_p99_ns;
	uint64_t latency_max_ns;
	int writeback;              /* the path in use: TIDE_WRITEBACK_FIXED or _DIRECT */
	int odirect;                /* 1 if the file stores use O_DIRECT */
	uint64_t drop_calls;        /* madvise calls that dropped clean pages (a batch can be one) */
	uint64_t store_reads;       /* read operations sent to stores: a run of adjacent pages is one */
	uint64_t store_writes;      /* write operations sent to stores: a run of adjacent pages is one */
	uint64_t fills_zero;        /* of fills, pages of store holes installed as zeros, not read */
	uint64_t faults_signal;     /* of faults, served on the faulting thread (TIDE_SIGNAL_FAULTS) */
	uint64_t evictions_moved;   /* of evictions_dirty, written from pages moved out of their region (TIDE_RECYCLE) */
	uint64_t fills_recycled;    /* of fills, pages installed by moving such an evicted page into place */
	int recycle;                /* 1 if eviction moves pages out (TIDE_RECYCLE and UFFDIO_MOVE) */
	int wake_poll;              /* what keeps idle CPUs polling while faults flow: enum tide_wake_poll */
	uint64_t signal_waits;      /* times a thread serving its own fault waited: its page on its way, no room */
	uint64_t signal_sleeps;     /* of those waits, ones polling (TIDE_WAKE_POLL_US) did not end: it slept */
	uint64_t spin_rests;        /* times a polling service thread (TIDE_SPIN_US) gave its CPU to a busy thread and slept */
	uint64_t wake_periods;      /* times idle CPUs were set polling as faults began to flow (TIDE_WAKE_POLL_US) */
	uint64_t fills_offloaded;   /* of fills, pages read ahead that the install thread put in place */
	int install_thread;         /* 1 if an install thread runs (TIDE_INSTALL_THREAD) */
	uint64_t reserved[2];       /* zero; room to grow without breaking the ABI */
};

int tide_pool_stats(tide_pool *pool, struct tide_stats *stats);

/* One sentence about the calling thread's most recent tide failure. */
const char *tide_last_error(void);

/* "fixed", "direct" or "auto". */
const char *tide_writeback_name(enum tide_writeback wb);
/* "off", "kernel", "qos" or "threads" (tide_stats.wake_poll). */
const char *tide_wake_poll_name(enum tide_wake_poll wp);

#ifdef __cplusplus
}
#endif

#endif /* TIDE_H */
