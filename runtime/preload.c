/*
 * libtide-preload.so: tide under unmodified programs. Loaded with LD_PRELOAD
 * (`tide run` sets it), it interposes mmap and the calls that act on
 * mappings, and gives a program's big file mappings to one process-wide
 * pool, created on the first mapping it takes, from the TIDE_* environment.
 * Everything else reaches the kernel unchanged, and so does every mapping
 * when tide cannot run here. docs/preload.md has the policy and its limits.
 *
 * Interposer hygiene, as in mimalloc and jemalloc: the real calls are raw
 * system calls (no dlsym, no dependence on init order; only the exec family,
 * which comes long after start-up, forwards to the C library's); the paths every
 * program takes (anonymous mmap, munmap of memory tide does not serve)
 * touch no lock, no malloc and no stdio; only this file's symbols are
 * exported (the rest of tide is hidden inside the library).
 *
 * tide itself calls these functions on region memory: the service thread
 * drops pages with madvise(MADV_DONTNEED) and releases a region with
 * munmap. Such a call must reach the kernel, never the policy below. A
 * call is tide's own when its return address lies in this library (the
 * service, keeper, install and watchdog threads run only tide code), or
 * when the calling thread is inside a tide call made from here (`inside`).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define EXPORT __attribute__((visibility("default")))
#define SMALL_PAGE 4096u

/* A mapping the program made and a tide region serves. */
struct mapping {
	char *base;              /* the region, and the address the program got */
	size_t length;           /* the region's length: `asked` up to its page size */
	size_t asked;            /* the program's length, up to 4 KiB */
	off_t offset;
	int prot;                /* PROT_READ, optionally | PROT_WRITE */
	int type;                /* MAP_SHARED or MAP_PRIVATE */
	int fd;                  /* our own descriptor: fork and mremap map the file again */
	size_t page_size;
};

/* Sorted by base. `nmaps` is read without the lock on the fast paths: when
 * it is 0 no address can be tide's, and a region the program may pass to
 * munmap was published before mmap returned it. */
static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mapping *maps;
static size_t nmaps, maps_cap;

static struct tide__preload_options popt;
static struct tide_options pool_opt;     /* TIDE_* read once, at load */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static tide_pool *pool;
static int pool_state;           /* 0 not tried, 1 running, -errno unavailable */
static pid_t self_pid;           /* the process this image was loaded into */
static int forked_child;         /* a fork() child: everything goes to the kernel */
static int finished;             /* the destructor ran */

/* Counters for the statistics line (atomics: any app thread). */
static uint64_t n_taken;         /* mappings tide serves(d) */
static uint64_t n_passed;        /* file mappings policy left to the kernel */
static uint64_t n_fallback;      /* mappings tide accepted but could not map: kernel */
static uint64_t n_refused;       /* calls on tide memory refused with an error */
static uint64_t n_flush_errors;  /* exit flushes that failed */
static int warned_map;

static __thread int inside __attribute__((tls_model("initial-exec")));
static uintptr_t self_lo, self_hi;    /* this library's loaded segments */
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

/* ---- the real calls ---- */

static void *real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

static int real_munmap(void *addr, size_t len)
{
	return (int)syscall(SYS_munmap, addr, len);
}

static int real_msync(void *addr, size_t len, int flags)
{
	return (int)syscall(SYS_msync, addr, len, flags);
}

static int real_madvise(void *addr, size_t len, int advice)
{
	return (int)syscall(SYS_madvise, addr, len, advice);
}

static int real_mprotect(void *addr, size_t len, int prot)
{
	return (int)syscall(SYS_mprotect, addr, len, prot);
}

static void *real_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr)
{
	return (void *)syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
}

/* ---- whose call is it ---- */

static int find_self(struct dl_phdr_info *info, size_t size, void *data)
{
	uintptr_t me = (uintptr_t)data, lo = UINTPTR_MAX, hi = 0;
	bool mine = false;

	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t start = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type != PT_LOAD)
			continue;
		if (start < lo)
			lo = start;
		if (start + ph->p_memsz > hi)
			hi = start + ph->p_memsz;
		mine |= me >= start && me < start + ph->p_memsz;
	}
	if (!mine)
		return 0;
	self_lo = lo;
	self_hi = hi;
	return 1;
}

static void self_locate(void)
{
	dl_iterate_phdr(find_self, (void *)(uintptr_t)&find_self);
}

/* A service thread of our pool (or of one of its shards). The return
 * address already tells tide's own calls apart; this also covers one that
 * reaches us through a tail call from a libuv callback. */
static bool on_service_thread(void)
{
	tide_pool *p = __atomic_load_n(&pool_state, __ATOMIC_ACQUIRE) > 0 ? pool : NULL;

	if (!p)
		return false;
	if (tide__on_service_thread(p))
		return true;
	for (unsigned i = 0; i < p->nshards; i++)
		if (tide__on_service_thread(p->shards[i]))
			return true;
	return false;
}

static inline bool internal_call(const void *ret)
{
	uintptr_t r = (uintptr_t)ret;

	return inside || (r >= self_lo && r < self_hi) || on_service_thread();
}

static inline uint64_t up(uint64_t x, uint64_t to)
{
	return (x + to - 1) & ~(to - 1);
}

static void count(uint64_t *c)
{
	__atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

/* A refusal: one line on stderr, errno, -1. */
static int refuse(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(int err, const char *fmt, ...)
{
	char line[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	count(&n_refused);
	tide__warn("preload: %s", line);
	errno = err;
	return -1;
}

/* ---- the table of mappings (maps_lock held) ---- */

/* Index of the first mapping whose region ends after addr. */
static size_t maps_after(uintptr_t addr)
{
	size_t lo = 0, hi = nmaps;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if ((uintptr_t)maps[mid].base + maps[mid].length <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int maps_insert(const struct mapping *m)
{
	size_t i;

	if (nmaps == maps_cap) {
		size_t cap = maps_cap ? maps_cap * 2 : 16;
		struct mapping *v = realloc(maps, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		maps = v;
		maps_cap = cap;
	}
	i = maps_after((uintptr_t)m->base);
	memmove(&maps[i + 1], &maps[i], (nmaps - i) * sizeof(*maps));
	maps[i] = *m;
	__atomic_store_n(&nmaps, nmaps + 1, __ATOMIC_RELEASE);
	return 0;
}

static void maps_remove(size_t i)
{
	memmove(&maps[i], &maps[i + 1], (nmaps - i - 1) * sizeof(*maps));
	__atomic_store_n(&nmaps, nmaps - 1, __ATOMIC_RELEASE);
}

/* The first mapping whose region overlaps [a, e), copied to *out. */
static bool maps_first(uintptr_t a, uintptr_t e, struct mapping *out, size_t *index)
{
	size_t i = maps_after(a);

	if (i == nmaps || (uintptr_t)maps[i].base >= e)
		return false;
	*out = maps[i];
	if (index)
		*index = i;
	return true;
}

/* Does [a, e) touch what the program was given of m (not the region's tail)? */
static bool touches_view(const struct mapping *m, uintptr_t a, uintptr_t e)
{
	return a < (uintptr_t)m->base + m->asked && e > (uintptr_t)m->base;
}

/* ---- the pool ---- */

/* 1 when the pool runs, else 0 (tide is unavailable: say so once). */
static int pool_ready(void)
{
	int state = __atomic_load_n(&pool_state, __ATOMIC_ACQUIRE);
	int ret;

	if (state)
		return state > 0;
	pthread_mutex_lock(&pool_lock);
	if (!pool_state) {
		ret = tide_pool_create(&pool, &pool_opt);
		if (ret < 0) {
			tide__warn("preload: tide cannot run here, mappings go to the kernel: %s",
				   tide_last_error());
			__atomic_store_n(&pool_state, ret, __ATOMIC_RELEASE);
		} else {
			__atomic_store_n(&pool_state, 1, __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(&pool_lock);
	return __atomic_load_n(&pool_state, __ATOMIC_ACQUIRE) > 0;
}

/* ---- which mappings tide takes ---- */

/*
 * The region's page size: the pool's, or the largest smaller power of two
 * that the offset allows and, for a writable mapping, that keeps the region
 * inside the file (tide would extend the file, the kernel does not). A
 * read-only region may end in the file's last page, which reads as zeros
 * past the end as the kernel's does. 0 if no page size fits.
 */
static size_t pick_page_size(size_t want, off_t off, size_t asked, uint64_t fsize, bool write)
{
	for (size_t ps = want; ps >= SMALL_PAGE; ps /= 2) {
		if ((uint64_t)off % ps)
			continue;
		if (write && (uint64_t)off + up(asked, ps) > fsize)
			continue;
		return ps;
	}
	return 0;
}

/*
 * Why tide leaves this file mapping to the kernel, or NULL if it takes it.
 * Fills *fsize with the file's size.
 */
static const char *decline(size_t len, int prot, int flags, int fd, off_t off, size_t min,
			   uint64_t *fsize)
{
	const int known = MAP_SHARED | MAP_PRIVATE | MAP_SHARED_VALIDATE | MAP_NORESERVE |
			  MAP_POPULATE;
	int type = flags & MAP_TYPE, acc, seals;
	struct stat st;

	if (forked_child)
		return "a fork()ed child maps through the kernel";
	if (flags & ~known)
		return "flags other than MAP_SHARED/MAP_PRIVATE, MAP_NORESERVE, MAP_POPULATE";
	if (type != MAP_SHARED && type != MAP_SHARED_VALIDATE && type != MAP_PRIVATE)
		return "not MAP_SHARED or MAP_PRIVATE";
	if (!(prot & PROT_READ) || (prot & ~(PROT_READ | PROT_WRITE)))
		return "protection other than PROT_READ, optionally with PROT_WRITE";
	if ((prot & PROT_WRITE) && type == MAP_PRIVATE)
		return "writable MAP_PRIVATE (copy-on-write stays the kernel's)";
	if ((prot & PROT_WRITE) && !popt.write)
		return "writable, and TIDE_PRELOAD_WRITE=0";
	if (len < min)
		return "smaller than TIDE_PRELOAD_MIN";
	if (off < 0 || off % SMALL_PAGE)
		return "offset not a multiple of 4 KiB";
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return "not a regular file";
	acc = fcntl(fd, F_GETFL);
	if (acc < 0 || (acc & O_ACCMODE) == O_WRONLY ||
	    ((prot & PROT_WRITE) && ((acc & O_ACCMODE) != O_RDWR || (acc & O_APPEND))))
		return "the descriptor does not allow this access";
	seals = fcntl(fd, F_GET_SEALS);
	if (seals > 0)
		return "a sealed memfd";
	*fsize = (uint64_t)st.st_size;
	if ((uint64_t)off + up(len, SMALL_PAGE) > up(*fsize, SMALL_PAGE))
		return "reaches past the end of the file";
	return NULL;
}

/*
 * Map through tide. Returns the address, or NULL when the kernel should map
 * it instead (tide unavailable, or tide_map failed: said once).
 */
static void *take(size_t len, int prot, int type, int fd, off_t off, uint64_t fsize,
		  bool populate)
{
	struct mapping m = { 0 };
	bool write = prot & PROT_WRITE;
	const char *why;
	void *addr;
	int ret;

	pthread_once(&self_once, self_locate);
	inside++;
	if (!pool_ready())
		goto fallback;
	m.asked = up(len, SMALL_PAGE);
	m.page_size = pick_page_size(pool_opt.page_size, off, m.asked, fsize, write);
	if (!m.page_size) {
		count(&n_passed);
		if (pool_opt.verbose)
			tide__info("preload: fd %d: a writable mapping that ends in the file's last, "
				   "partial page goes to the kernel", fd);
		inside--;
		return NULL;
	}
	m.length = up(m.asked, m.page_size);
	m.offset = off;
	m.prot = prot;
	m.type = type == MAP_PRIVATE ? MAP_PRIVATE : MAP_SHARED;
	m.fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (m.fd < 0) {
		why = strerror(errno);
		goto fail;
	}
	addr = tide_map(pool, fd, off, m.length, TIDE_PROT_READ | (write ? TIDE_PROT_WRITE : 0),
			m.page_size);
	if (!addr) {
		why = tide_last_error();
		goto fail_fd;
	}
	m.base = addr;
	pthread_mutex_lock(&maps_lock);
	ret = maps_insert(&m);
	pthread_mutex_unlock(&maps_lock);
	if (ret < 0) {
		why = "out of memory for the table of mappings";
		goto fail_region;
	}
	count(&n_taken);
	if (pool_opt.verbose)
		tide__info("preload: fd %d [%lld, +%zu) %s%s is a tide region at %p, %zu-byte pages",
			   fd, (long long)off, len, write ? "read-write " : "read-only ",
			   m.type == MAP_SHARED ? "MAP_SHARED" : "MAP_PRIVATE", addr, m.page_size);
	if (populate)
		tide_prefetch(addr, m.asked);
	inside--;
	return addr;

fail_region:
	tide_unmap(addr);
fail_fd:
	close(m.fd);
fail:
	if (!__atomic_exchange_n(&warned_map, 1, __ATOMIC_RELAXED))
		tide__warn("preload: fd %d: tide could not map it (%s); the kernel does "
			   "(this warning is given once)", fd, why);
fallback:
	count(&n_fallback);
	inside--;
	return NULL;
}

/* ---- mmap ---- */

static void *map_file(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	const char *why;
	uint64_t fsize = 0;
	void *p;

	why = decline(len, prot, flags, fd, off, popt.min, &fsize);
	if (why) {
		count(&n_passed);
		if (pool_opt.verbose && len >= popt.min)
			tide__info("preload: fd %d [%lld, +%zu) goes to the kernel: %s", fd,
				   (long long)off, len, why);
		return real_mmap(addr, len, prot, flags, fd, off);
	}
	p = take(len, prot, flags & MAP_TYPE, fd, off, fsize, flags & MAP_POPULATE);
	return p ? p : real_mmap(addr, len, prot, flags, fd, off);
}

static inline void *interpose_mmap(void *addr, size_t len, int prot, int flags, int fd,
				   off_t off, const void *caller)
{
	/* Anonymous memory, fixed placements and tide's own mappings: the kernel. */
	if ((flags & MAP_ANONYMOUS) || fd < 0 || (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) ||
	    len == 0 || internal_call(caller))
		return real_mmap(addr, len, prot, flags, fd, off);
	return map_file(addr, len, prot, flags, fd, off);
}

/* With _FILE_OFFSET_BITS=64 the headers rename mmap to mmap64; both names
 * are exported here by their assembler names, as the same call (off_t is
 * 64 bits wide on the 64-bit targets tide runs on). */
_Static_assert(sizeof(off_t) == 8, "mmap64 is mmap only where off_t has 64 bits");
EXPORT void *preload_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
	__asm__("mmap");
EXPORT void *preload_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
	__asm__("mmap64");

void *preload_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return interpose_mmap(addr, len, prot, flags, fd, off, __builtin_return_address(0));
}

void *preload_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return interpose_mmap(addr, len, prot, flags, fd, off, __builtin_return_address(0));
}

/* ---- munmap ---- */

static int unmap_range(uintptr_t a, uintptr_t e)
{
	uintptr_t cursor = a;
	struct mapping m;
	bool whole = false;
	size_t i;
	int ret;

	/* All or nothing: a region is unmapped whole or not at all. */
	pthread_mutex_lock(&maps_lock);
	for (uintptr_t c = a; maps_first(c, e, &m, NULL); c = (uintptr_t)m.base + m.length) {
		if (touches_view(&m, a, e) && (a > (uintptr_t)m.base ||
					      e < (uintptr_t)m.base + m.asked)) {
			pthread_mutex_unlock(&maps_lock);
			return refuse(EINVAL, "munmap(%p, %zu) covers part of the tide region at %p "
				      "(%zu bytes): a region is unmapped whole", (void *)a,
				      (size_t)(e - a), (void *)m.base, m.asked);
		}
	}
	pthread_mutex_unlock(&maps_lock);

	while (cursor < e) {
		pthread_mutex_lock(&maps_lock);
		if (!maps_first(cursor, e, &m, &i)) {
			pthread_mutex_unlock(&maps_lock);
			return real_munmap((void *)cursor, e - cursor);
		}
		whole = touches_view(&m, a, e);
		if (whole)
			maps_remove(i);
		pthread_mutex_unlock(&maps_lock);
		if ((uintptr_t)m.base > cursor &&
		    real_munmap((void *)cursor, (uintptr_t)m.base - cursor) < 0) {
			ret = -errno;
			goto fail_put_back;
		}
		/* Only the region's tail (never the program's) was in the range: keep it. */
		if (whole) {
			inside++;
			ret = tide_unmap(m.base);
			inside--;
			if (ret < 0) {
				tide__warn("preload: munmap of the tide region at %p failed, it stays "
					   "mapped with its dirty pages: %s", (void *)m.base,
					   tide_last_error());
				goto fail_put_back;
			}
			close(m.fd);
		}
		cursor = (uintptr_t)m.base + m.length;
	}
	return 0;

fail_put_back:
	if (whole) {
		pthread_mutex_lock(&maps_lock);
		maps_insert(&m);    /* the slot it left is free: cannot fail */
		pthread_mutex_unlock(&maps_lock);
	}
	errno = -ret;
	return -1;
}

EXPORT int munmap(void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;

	if (!__atomic_load_n(&nmaps, __ATOMIC_ACQUIRE) || internal_call(__builtin_return_address(0)) ||
	    a % SMALL_PAGE || len == 0 || len > UINTPTR_MAX - a - SMALL_PAGE)
		return real_munmap(addr, len);
	return unmap_range(a, a + up(len, SMALL_PAGE));
}

/* ---- msync, madvise, mprotect ---- */

/*
 * Calls fn on each piece of [a, e) inside a region (clipped to the
 * program's view) and gap on each piece outside any, in address order;
 * stops at the first that fails and returns its -errno.
 */
static int walk(uintptr_t a, uintptr_t e, int (*fn)(const struct mapping *m, uintptr_t s,
						     uintptr_t t, int arg),
		int (*gap)(uintptr_t s, uintptr_t t, int arg), int arg)
{
	uintptr_t cursor = a;
	struct mapping m;
	int ret = 0;

	while (cursor < e) {
		bool found;

		pthread_mutex_lock(&maps_lock);
		found = maps_first(cursor, e, &m, NULL);
		pthread_mutex_unlock(&maps_lock);
		if (!found)
			return gap(cursor, e, arg);
		if ((uintptr_t)m.base > cursor) {
			ret = gap(cursor, (uintptr_t)m.base, arg);
			if (ret < 0)
				return ret;
		}
		if (touches_view(&m, cursor, e)) {
			uintptr_t s = cursor > (uintptr_t)m.base ? cursor : (uintptr_t)m.base;
			uintptr_t t = e < (uintptr_t)m.base + m.asked ? e : (uintptr_t)m.base + m.asked;

			ret = fn(&m, s, t, arg);
			if (ret < 0)
				return ret;
		}
		cursor = (uintptr_t)m.base + m.length;
	}
	return 0;
}

static int sync_piece(const struct mapping *m, uintptr_t s, uintptr_t t, int flags)
{
	int ret;

	(void)m;
	/* tide has no asynchronous flush: MS_ASYNC writes now, like MS_SYNC. */
	if (!(flags & (MS_SYNC | MS_ASYNC)))
		return 0;
	inside++;
	ret = tide_flush((void *)s, t - s);
	inside--;
	if (ret < 0)
		tide__warn("preload: msync of the tide region at %p failed: %s", (void *)m->base,
			   tide_last_error());
	return ret;
}

static int sync_gap(uintptr_t s, uintptr_t t, int flags)
{
	return real_msync((void *)s, t - s, flags) < 0 ? -errno : 0;
}

EXPORT int msync(void *addr, size_t len, int flags)
{
	uintptr_t a = (uintptr_t)addr;
	int ret;

	if (!__atomic_load_n(&nmaps, __ATOMIC_ACQUIRE) || internal_call(__builtin_return_address(0)) ||
	    a % SMALL_PAGE || (flags & ~(MS_ASYNC | MS_SYNC | MS_INVALIDATE)) ||
	    (flags & MS_ASYNC && flags & MS_SYNC) || len > UINTPTR_MAX - a - SMALL_PAGE)
		return real_msync(addr, len, flags);
	ret = walk(a, a + up(len, SMALL_PAGE), sync_piece, sync_gap, flags);
	if (ret < 0) {
		errno = -ret;
		return -1;
	}
	return 0;
}

/* What madvise does on tide memory: 1 nothing (tide decides residency),
 * 2 prefetch, 0 refused. */
static int advice_kind(int advice)
{
	switch (advice) {
	case MADV_NORMAL: case MADV_RANDOM: case MADV_SEQUENTIAL:
	case MADV_DONTNEED: case MADV_COLD: case MADV_PAGEOUT:
	case MADV_HUGEPAGE: case MADV_NOHUGEPAGE:
	case MADV_DONTDUMP: case MADV_DODUMP:
	case MADV_DONTFORK: case MADV_DOFORK:
		return 1;
	case MADV_WILLNEED: case MADV_POPULATE_READ: case MADV_POPULATE_WRITE:
		return 2;
	default:
		return 0;
	}
}

static int advise_check(const struct mapping *m, uintptr_t s, uintptr_t t, int advice)
{
	(void)s;
	(void)t;
	if (advice_kind(advice))
		return 0;
	refuse(advice == MADV_REMOVE ? EOPNOTSUPP : EINVAL,
	       "madvise advice %d on the tide region at %p is not supported (docs/preload.md)",
	       advice, (void *)m->base);
	return -errno;
}

static int advise_piece(const struct mapping *m, uintptr_t s, uintptr_t t, int advice)
{
	(void)m;
	if (advice_kind(advice) == 2) {
		/* Best effort, as the kernel's read-ahead is. */
		inside++;
		tide_prefetch((void *)s, t - s);
		inside--;
	}
	return 0;
}

static int nothing(uintptr_t s, uintptr_t t, int arg)
{
	(void)s;
	(void)t;
	(void)arg;
	return 0;
}

static int advise_gap(uintptr_t s, uintptr_t t, int advice)
{
	return real_madvise((void *)s, t - s, advice) < 0 ? -errno : 0;
}

static int advise(void *addr, size_t len, int advice)
{
	uintptr_t a = (uintptr_t)addr, e;
	int ret;

	if (a % SMALL_PAGE || len > UINTPTR_MAX - a - SMALL_PAGE)
		return real_madvise(addr, len, advice);
	e = a + up(len, SMALL_PAGE);
	ret = walk(a, e, advise_check, nothing, advice);
	if (ret == 0)
		ret = walk(a, e, advise_piece, advise_gap, advice);
	if (ret < 0) {
		errno = -ret;
		return -1;
	}
	return 0;
}

EXPORT int madvise(void *addr, size_t len, int advice)
{
	if (!__atomic_load_n(&nmaps, __ATOMIC_ACQUIRE) || internal_call(__builtin_return_address(0)))
		return real_madvise(addr, len, advice);
	return advise(addr, len, advice);
}

EXPORT int posix_madvise(void *addr, size_t len, int advice)
{
	int saved = errno, ret;

	/* POSIX_MADV_* are MADV_NORMAL..WILLNEED; glibc ignores DONTNEED, so do we. */
	if (advice == POSIX_MADV_DONTNEED)
		return 0;
	if (!__atomic_load_n(&nmaps, __ATOMIC_ACQUIRE) || internal_call(__builtin_return_address(0)))
		ret = real_madvise(addr, len, advice);
	else
		ret = advise(addr, len, advice);
	ret = ret < 0 ? errno : 0;
	errno = saved;
	return ret;
}

static int protect_check(const struct mapping *m, uintptr_t s, uintptr_t t, int prot)
{
	(void)s;
	(void)t;
	if ((prot & PROT_READ) && !(prot & ~m->prot))
		return 0;
	refuse(EACCES, "mprotect to %s%s%s on the tide region at %p (mapped %s): tide memory "
	       "stays readable and may only lose or regain the access it was mapped with",
	       prot & PROT_READ ? "R" : "-", prot & PROT_WRITE ? "W" : "-",
	       prot & PROT_EXEC ? "X" : "-", (void *)m->base,
	       m->prot & PROT_WRITE ? "read-write" : "read-only");
	return -EACCES;
}

EXPORT int mprotect(void *addr, size_t len, int prot)
{
	uintptr_t a = (uintptr_t)addr;
	int ret;

	if (!__atomic_load_n(&nmaps, __ATOMIC_ACQUIRE) || internal_call(__builtin_return_address(0)) ||
	    a % SMALL_PAGE || len > UINTPTR_MAX - a - SMALL_PAGE)
		return real_mprotect(addr, len, prot);
	ret = walk(a, a + up(len, SMALL_PAGE), protect_check, nothing, prot);
	if (ret < 0) {
		errno = -ret;
		return -1;
	}
	/* Allowed everywhere: the kernel applies it, to the regions' ranges too. */
	return real_mprotect(addr, len, prot);
}

/* ---- mremap ---- */

/*
 * A region cannot grow or shrink in place. With MREMAP_MAYMOVE, the new
 * mapping is made afresh (through the same policy, without the size
 * threshold) after the old one is flushed, so it reads what the old one
 * held; then the old one is unmapped. Anything else on a region: refused.
 */
static void *remap_region(const struct mapping *m, size_t old_len, size_t new_len, int flags)
{
	const char *why;
	uint64_t fsize = 0;
	bool taken;
	void *p;
	int ret;

	if ((uintptr_t)old_len == 0 || up(old_len, SMALL_PAGE) != m->asked) {
		refuse(EINVAL, "mremap of part of the tide region at %p: a region moves whole",
		       (void *)m->base);
		return MAP_FAILED;
	}
	if (flags & ~MREMAP_MAYMOVE) {
		refuse(EINVAL, "mremap flags %#x on the tide region at %p: only MREMAP_MAYMOVE "
		       "is supported", flags, (void *)m->base);
		return MAP_FAILED;
	}
	if (up(new_len, SMALL_PAGE) == m->asked)
		return m->base;
	if (!(flags & MREMAP_MAYMOVE)) {
		/* The kernel's answer when a mapping cannot change in place. */
		count(&n_refused);
		errno = ENOMEM;
		return MAP_FAILED;
	}
	inside++;
	ret = tide_flush(m->base, 0);
	inside--;
	if (ret < 0) {
		errno = -ret;
		return MAP_FAILED;
	}
	/* A region stays one whatever its new size: no TIDE_PRELOAD_MIN. */
	why = decline(new_len, m->prot, m->type, m->fd, m->offset, 0, &fsize);
	p = why ? NULL : take(new_len, m->prot, m->type, m->fd, m->offset, fsize, false);
	taken = p != NULL;
	if (!p)
		p = real_mmap(NULL, new_len, m->prot, m->type, m->fd, m->offset);
	if (p == MAP_FAILED)
		return MAP_FAILED;
	if (unmap_range((uintptr_t)m->base, (uintptr_t)m->base + m->asked) < 0) {
		ret = errno;
		if (taken)
			unmap_range((uintptr_t)p, (uintptr_t)p + up(new_len, SMALL_PAGE));
		else
			real_munmap(p, new_len);
		errno = ret;
		return MAP_FAILED;
	}
	return p;
}

EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *new_addr = NULL;
	struct mapping m;
	bool found = false;

	if (flags & MREMAP_FIXED) {
		va_list ap;

		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	if (!__atomic_load_n(&nmaps, __ATOMIC_ACQUIRE) || internal_call(__builtin_return_address(0)))
		return real_mremap(old, old_len, new_len, flags, new_addr);
	pthread_mutex_lock(&maps_lock);
	if (maps_first((uintptr_t)old, (uintptr_t)old + (old_len ? old_len : 1), &m, NULL))
		found = touches_view(&m, (uintptr_t)old, (uintptr_t)old + (old_len ? old_len : 1));
	pthread_mutex_unlock(&maps_lock);
	if (!found)
		return real_mremap(old, old_len, new_len, flags, new_addr);
	if ((char *)old != m.base) {
		refuse(EINVAL, "mremap of part of the tide region at %p: a region moves whole",
		       (void *)m.base);
		return MAP_FAILED;
	}
	return remap_region(&m, old_len, new_len, flags);
}

/* ---- fork ---- */

/*
 * A child does not inherit region memory (MADV_DONTFORK: it has no service
 * thread to fill it). So before fork every region is flushed, and in the
 * child each is mapped again at the same address by the kernel, from the
 * file, which now holds what the parent had written. After the fork the two
 * do not see each other's later writes until they are written back (msync).
 * A fork made by tide itself (its probes) is left alone.
 */
static __thread int fork_held __attribute__((tls_model("initial-exec")));

static void before_fork(void)
{
	fork_held = !inside && !forked_child;
	if (!fork_held)
		return;
	pthread_mutex_lock(&maps_lock);
	inside++;
	for (size_t i = 0; i < nmaps; i++)
		if ((maps[i].prot & PROT_WRITE) && tide_flush(maps[i].base, 0) < 0)
			tide__warn("preload: flushing the tide region at %p before fork failed: %s; "
				   "the child may read older data", (void *)maps[i].base,
				   tide_last_error());
	inside--;
}

static void after_fork_parent(void)
{
	if (fork_held)
		pthread_mutex_unlock(&maps_lock);
}

static void after_fork_child(void)
{
	static const char failed[] = "tide: warning: preload: the child could not map a tide "
				     "region's file again; touching it will crash\n";

	if (!fork_held)
		return;
	/* Only async-signal-safe calls here: the child of a threaded process. */
	for (size_t i = 0; i < nmaps; i++) {
		const struct mapping *m = &maps[i];

		if (real_mmap(m->base, m->asked, m->prot, m->type | MAP_FIXED, m->fd,
			      m->offset) == MAP_FAILED &&
		    write(STDERR_FILENO, failed, sizeof(failed) - 1) < 0)
			break;
		close(m->fd);
	}
	nmaps = 0;
	forked_child = 1;
	pthread_mutex_init(&maps_lock, NULL);
}

/* ---- start and exit ---- */

static void write_stats(void)
{
	struct tide_stats st = { 0 };
	char line[2048];
	int fd, n, have = 0;

	if (!popt.stats[0])
		return;
	if (pool_state > 0) {
		inside++;
		have = tide_pool_stats(pool, &st) == 0;
		inside--;
	}
	n = snprintf(line, sizeof(line),
		     "tide-preload 1 pid=%d pool=%d taken=%llu passed=%llu fallbacks=%llu "
		     "refused=%llu flush_errors=%llu",
		     (int)getpid(), have ? 1 : pool_state < 0 ? pool_state : 0,
		     (unsigned long long)n_taken, (unsigned long long)n_passed,
		     (unsigned long long)n_fallback, (unsigned long long)n_refused,
		     (unsigned long long)n_flush_errors);
#define COUNTER(k)                                                                               \
	if (n >= 0 && (size_t)n < sizeof(line))                                                  \
		n += snprintf(line + n, sizeof(line) - (size_t)n, " " #k "=%llu", (unsigned long long)st.k);
	TIDE_PRELOAD_COUNTERS(COUNTER)
#undef COUNTER
	if (n >= 0 && (size_t)n < sizeof(line))
		n += snprintf(line + n, sizeof(line) - (size_t)n,
			      " resident_bytes=%llu peak_resident_bytes=%llu budget=%llu regions=%llu\n",
			      (unsigned long long)st.resident_bytes,
			      (unsigned long long)st.peak_resident_bytes,
			      (unsigned long long)st.budget, (unsigned long long)st.regions);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	/* O_APPEND: each process of the program adds its own line, whole. */
	fd = open(popt.stats, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0) {
		tide__warn("preload: cannot write statistics to %s: %s", popt.stats, strerror(errno));
		return;
	}
	if (write(fd, line, (size_t)n) != n)
		tide__warn("preload: cannot write statistics to %s: %s", popt.stats, strerror(errno));
	close(fd);
}

__attribute__((constructor)) static void preload_init(void)
{
	self_pid = getpid();
	pthread_once(&self_once, self_locate);
	tide__preload_options_init(&popt);
	tide_options_init(&pool_opt);
	pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/*
 * Write back every writable region: the image ends (`when`) and takes the
 * pool with it. The regions stay mapped: other threads may still run.
 * _exit and exec may come from a signal handler that interrupted this very
 * thread inside tide or holding the region table; waiting then would wait
 * for itself. So, unless `patient`, nothing is done from inside tide, and
 * the table is waited for at most a few seconds.
 */
static void flush_all(const char *when, bool patient)
{
	if (!patient) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 5;
		if (inside || pthread_mutex_timedlock(&maps_lock, &until) != 0) {
			n_flush_errors++;
			tide__warn("preload: %s, the tide regions are busy in this thread; "
				   "what was not yet written back is lost", when);
			return;
		}
	} else {
		pthread_mutex_lock(&maps_lock);
	}
	inside++;
	for (size_t i = 0; i < nmaps; i++) {
		if (!(maps[i].prot & PROT_WRITE))
			continue;
		if (tide_flush(maps[i].base, 0) < 0) {
			n_flush_errors++;
			tide__warn("preload: %s, writing back the tide region at %p failed: %s",
				   when, (void *)maps[i].base, tide_last_error());
		}
	}
	inside--;
	pthread_mutex_unlock(&maps_lock);
}

/* The regions are this image's own: not a fork()ed or vfork()ed child's
 * (a vfork child shares our memory, so it must not touch `finished`). */
static bool own_image(void)
{
	return !forked_child && getpid() == self_pid;
}

/*
 * At exit, what the program wrote reaches the file, as the kernel's page
 * cache would see to, and the counters go to `tide run`. Once per image.
 */
static void finish(const char *when, bool patient)
{
	if (!own_image() || __atomic_exchange_n(&finished, 1, __ATOMIC_ACQ_REL))
		return;
	flush_all(when, patient);
	/* Interrupted inside tide, it cannot ask the pool for its counters either. */
	if (!inside)
		write_stats();
}

__attribute__((destructor)) static void preload_fini(void)
{
	finish("at exit", true);
}

/* ---- _exit and exec: the image ends without its destructors ---- */

EXPORT void _exit(int status)
{
	finish("at _exit", false);
	for (;;)
		syscall(SYS_exit_group, status);
}

EXPORT void _Exit(int status)
{
	_exit(status);
}

/*
 * exec replaces the image, pool and all, without running destructors: what
 * the program wrote is written back first. The counters of the image are
 * not reported (if exec fails the program goes on, and reports at exit).
 * The call itself is the C library's, found with dlsym(RTLD_NEXT): exec
 * comes long after start-up, so the lookup cannot run before libc is
 * ready, as it could for mmap; and the library keeps execvp's search.
 */
static void *libc_next(const char *name)
{
	void *fn;

	inside++;
	fn = dlsym(RTLD_NEXT, name);
	inside--;
	if (!fn)
		errno = ENOSYS;
	return fn;
}

static void before_exec(void)
{
	if (own_image() && !__atomic_load_n(&finished, __ATOMIC_ACQUIRE))
		flush_all("before exec", false);
}

typedef int exec_fn(const char *, char *const[], char *const[]);
typedef int execv_fn(const char *, char *const[]);

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	exec_fn *fn = (exec_fn *)libc_next("execve");

	before_exec();
	return fn ? fn(path, argv, envp) : -1;
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	exec_fn *fn = (exec_fn *)libc_next("execvpe");

	before_exec();
	return fn ? fn(file, argv, envp) : -1;
}

EXPORT int execv(const char *path, char *const argv[])
{
	execv_fn *fn = (execv_fn *)libc_next("execv");

	before_exec();
	return fn ? fn(path, argv) : -1;
}

EXPORT int execvp(const char *file, char *const argv[])
{
	execv_fn *fn = (execv_fn *)libc_next("execvp");

	before_exec();
	return fn ? fn(file, argv) : -1;
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	int (*fn)(int, char *const[], char *const[]) =
		(int (*)(int, char *const[], char *const[]))libc_next("fexecve");

	before_exec();
	return fn ? fn(fd, argv, envp) : -1;
}

EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
		    int flags)
{
	before_exec();
	return (int)syscall(SYS_execveat, dirfd, path, argv, envp, flags);
}

/* The execl family: the arguments up to the NULL become an argv, and
 * execle's environment follows the NULL; then execv, execvp or execve. */
static size_t count_args(va_list *ap)
{
	va_list c;
	size_t n = 1;    /* arg0 */

	va_copy(c, *ap);
	while (va_arg(c, char *))
		n++;
	va_end(c);
	return n;
}

static int exec_list(char how, const char *path, const char *arg, va_list *ap)
{
	size_t n = count_args(ap);
	char *argv[n + 1];

	argv[0] = (char *)arg;
	for (size_t i = 1; i <= n; i++)    /* the arguments, then their NULL */
		argv[i] = va_arg(*ap, char *);
	if (how == 'p')
		return execvp(path, argv);
	if (how == 'e')
		return execve(path, argv, va_arg(*ap, char *const *));
	return execv(path, argv);
}

EXPORT int execl(const char *path, const char *arg, ...)
{
	va_list ap;
	int ret;

	va_start(ap, arg);
	ret = exec_list('v', path, arg, &ap);
	va_end(ap);
	return ret;
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
	va_list ap;
	int ret;

	va_start(ap, arg);
	ret = exec_list('p', file, arg, &ap);
	va_end(ap);
	return ret;
}

EXPORT int execle(const char *path, const char *arg, ...)
{
	va_list ap;
	int ret;

	va_start(ap, arg);
	ret = exec_list('e', path, arg, &ap);
	va_end(ap);
	return ret;
}
