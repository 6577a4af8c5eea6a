/*
 * Regions: an address range backed by a store, with its own page size.
 * Mapping validates everything in the caller's thread, reserves and
 * registers the range, then hands the region to the service thread, which
 * owns it from then on. A process-wide registry answers "which pool serves
 * this address?" for tide_unmap(), tide_flush() and friends; the region
 * itself is looked up again on the service thread, so an app thread never
 * holds a pointer that an unmap could free.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct registry_entry {
	uintptr_t start, end;
	struct tide_pool *pool;
	size_t page_size;
};

static pthread_rwlock_t registry_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct registry_entry *registry;
static size_t nregistry, registry_cap;

/* Index of the first entry with start > addr. */
static size_t registry_upper(uintptr_t addr)
{
	size_t lo = 0, hi = nregistry;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (registry[mid].start <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int registry_lookup(const void *addr, struct registry_entry *out)
{
	uintptr_t a = (uintptr_t)addr;
	int ret = -EINVAL;
	size_t i;

	pthread_rwlock_rdlock(&registry_lock);
	i = registry_upper(a);
	if (i > 0 && a < registry[i - 1].end) {
		*out = registry[i - 1];
		ret = 0;
	}
	pthread_rwlock_unlock(&registry_lock);
	return ret;
}

static int registry_add(struct region *r)
{
	size_t i;

	pthread_rwlock_wrlock(&registry_lock);
	if (nregistry == registry_cap) {
		size_t cap = registry_cap ? registry_cap * 2 : 16;
		struct registry_entry *e = realloc(registry, cap * sizeof(*e));

		if (!e) {
			pthread_rwlock_unlock(&registry_lock);
			return -ENOMEM;
		}
		registry = e;
		registry_cap = cap;
	}
	i = registry_upper((uintptr_t)r->base);
	memmove(&registry[i + 1], &registry[i], (nregistry - i) * sizeof(*registry));
	registry[i] = (struct registry_entry){
		(uintptr_t)r->base, (uintptr_t)r->base + r->length, r->pool, r->page_size,
	};
	nregistry++;
	pthread_rwlock_unlock(&registry_lock);
	return 0;
}

static void registry_remove(struct region *r)
{
	size_t i;

	pthread_rwlock_wrlock(&registry_lock);
	i = registry_upper((uintptr_t)r->base);
	if (i > 0 && registry[i - 1].start == (uintptr_t)r->base) {
		memmove(&registry[i - 1], &registry[i], (nregistry - i) * sizeof(*registry));
		nregistry--;
	}
	pthread_rwlock_unlock(&registry_lock);
}

struct tide_pool *tide__pool_serving(const void *addr)
{
	struct registry_entry e;

	return registry_lookup(addr, &e) < 0 ? NULL : e.pool;
}

size_t tide__regions_of(const struct tide_pool *p)
{
	size_t n = 0;

	pthread_rwlock_rdlock(&registry_lock);
	for (size_t i = 0; i < nregistry; i++)
		n += registry[i].pool == p || registry[i].pool->parent == p;
	pthread_rwlock_unlock(&registry_lock);
	return n;
}

struct region *tide__region_find(struct tide_pool *p, uintptr_t addr)
{
	size_t lo = 0, hi = p->nregions;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		struct region *r = p->regions[mid];

		if (addr < (uintptr_t)r->base)
			hi = mid;
		else if (addr >= (uintptr_t)r->base + r->length)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

int tide__region_attach(struct tide_pool *p, struct region *r)
{
	size_t i = 0;

	if (p->nregions == p->regions_cap) {
		size_t cap = p->regions_cap ? p->regions_cap * 2 : 8;
		struct region **v = realloc(p->regions, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		p->regions = v;
		p->regions_cap = cap;
	}
	if (registry_add(r) < 0)
		return -ENOMEM;
	while (i < p->nregions && p->regions[i]->base < r->base)
		i++;
	memmove(&p->regions[i + 1], &p->regions[i], (p->nregions - i) * sizeof(*p->regions));
	p->regions[i] = r;
	p->nregions++;
	p->st.c.regions = p->nregions;
	if (p->parent)
		tide__shard_floor(p);
	return 0;
}

void tide__region_detach(struct tide_pool *p, struct region *r)
{
	for (size_t i = 0; i < p->nregions; i++) {
		if (p->regions[i] != r)
			continue;
		memmove(&p->regions[i], &p->regions[i + 1], (p->nregions - i - 1) * sizeof(*p->regions));
		p->nregions--;
		break;
	}
	p->st.c.regions = p->nregions;
	if (p->parent)
		tide__shard_floor(p);
	registry_remove(r);
}

/* Free what tide__region_new() built; the range must already be unregistered. */
void tide__region_free(struct region *r)
{
	if (r->base)
		munmap(r->base, r->length);
	if (r->slot)
		munmap(r->slot, r->slot_bytes);
	if (r->ops && r->ops->close)
		r->ops->close(r->store);
	free(r);
}

static size_t resolve_page_size(tide_pool *p, size_t page_size)
{
	return page_size ? page_size : p->opt.page_size;
}

static int check_geometry(tide_pool *p, uint64_t offset, size_t length, int prot,
			  size_t ps)
{
	if (!p)
		return tide__fail(-EINVAL, "pool is NULL");
	if (!tide__is_pow2(ps) || ps < TIDE_MIN_PAGE || ps > TIDE_MAX_PAGE)
		return tide__fail(-EINVAL, "page size %zu is not a power of two from 4 KiB to 2 MiB", ps);
	if (length == 0)
		return tide__fail(-EINVAL, "length is zero");
	if (offset % ps || length % ps)
		return tide__fail(-EINVAL, "offset %llu and length %zu must be multiples of the page size %zu",
				  (unsigned long long)offset, length, ps);
	if (!(prot & TIDE_PROT_READ) || (prot & ~(TIDE_PROT_READ | TIDE_PROT_WRITE)))
		return tide__fail(-EINVAL, "prot must be TIDE_PROT_READ, optionally with TIDE_PROT_WRITE");
	if (p->opt.budget / ps < TIDE_MIN_PAGES)
		return tide__fail(-ENOMEM, "the %s budget (%zu bytes%s) holds fewer than %u pages of %zu bytes",
				  p->parent ? "shard's" : "pool's", p->opt.budget,
				  p->parent ? ": the pool's split over service_threads" : "",
				  TIDE_MIN_PAGES, ps);
	return 0;
}

/* Reserve a range aligned to the page size, register it, hand it over. */
static void *region_map(tide_pool *p, const struct tide_store_ops *ops, void *store,
			uint64_t offset, size_t length, int prot, size_t ps)
{
	struct region *r = calloc(1, sizeof(*r));
	uint64_t mode = UFFDIO_REGISTER_MODE_MISSING, ioctls = 0;
	int mprot = PROT_READ | ((prot & TIDE_PROT_WRITE) ? PROT_WRITE : 0);
	struct request req = { .kind = REQ_MAP };
	char *raw;
	int ret;

	if (!r) {
		ret = tide__fail(-ENOMEM, "out of memory for a region");
		goto fail;
	}
	r->pool = p;
	r->ops = ops;
	r->store = store;
	r->store_off = offset;
	r->length = length;
	r->page_size = ps;
	r->page_shift = (unsigned)__builtin_ctzll(ps);
	r->npages = length / ps;
	r->prot = prot;
	for (unsigned i = 0; i < TIDE_RA_STREAMS; i++)
		r->streams[i].next = UINT64_MAX;
	/* One slot per page, untouched (and so free) until the page is used. */
	r->slot_bytes = (r->npages * sizeof(uint32_t) + 4095) & ~(size_t)4095;
	r->slot = mmap(NULL, r->slot_bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r->slot == MAP_FAILED) {
		r->slot = NULL;
		ret = tide__fail(-ENOMEM, "no memory for the page table of %zu pages", (size_t)r->npages);
		goto fail_region;
	}
	raw = mmap(NULL, length + ps, mprot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED) {
		ret = tide__fail(-ENOMEM, "no address space for %zu bytes", length);
		goto fail_region;
	}
	r->base = (char *)(((uintptr_t)raw + ps - 1) & ~(uintptr_t)(ps - 1));
	if (r->base > raw)
		munmap(raw, (size_t)(r->base - raw));
	munmap(r->base + length, (size_t)(raw + ps - r->base));
	/* A child would see evicted pages as zeros (no fault reaches us without
	 * EVENT_FORK): better that it does not inherit the range at all. */
	madvise(r->base, length, MADV_DONTFORK);
	madvise(r->base, length, MADV_NOHUGEPAGE);
	if (prot & TIDE_PROT_WRITE)
		mode |= UFFDIO_REGISTER_MODE_WP;
	ret = tide__uffd_register(p->uffd, r->base, length, mode, &ioctls);
	if (ret < 0) {
		tide__fail(ret, "UFFDIO_REGISTER failed: %s", strerror(-ret));
		goto fail_region;
	}
	if (!(ioctls & (1ull << _UFFDIO_COPY))) {
		ret = tide__fail(-ENOTSUP, "this kernel cannot UFFDIO_COPY into the range");
		goto fail_registered;
	}
	req.region = r;
	ret = tide__request(p, &req);
	if (ret < 0) {
		tide__fail(ret, "the service thread refused the region: %s", strerror(-ret));
		goto fail_registered;
	}
	return r->base;

fail_registered:
	tide__uffd_unregister(p->uffd, r->base, length);
fail_region:
	r->ops = NULL;          /* the store stays the caller's */
	tide__region_free(r);
fail:
	errno = -ret;
	return NULL;
}

void *tide_map(tide_pool *p, int fd, off_t offset, size_t length, int prot, size_t page_size)
{
	size_t ps;
	struct stat st;
	void *store, *addr;
	int ret, acc;

	/* A pool with shards maps through one of them; the region is its. */
	if (p && p->nshards)
		p = tide__shard_pick(p);
	ps = p ? resolve_page_size(p, page_size) : 0;
	ret = offset < 0 ? tide__fail(-EINVAL, "offset is negative")
			 : check_geometry(p, (uint64_t)offset, length, prot, ps);
	if (ret < 0)
		goto fail;
	acc = fcntl(fd, F_GETFL);
	if (acc < 0 || fstat(fd, &st) < 0) {
		ret = tide__fail(-EBADF, "fd %d is not an open file", fd);
		goto fail;
	}
	acc &= O_ACCMODE;
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		ret = tide__fail(-EINVAL, "fd %d is neither a regular file nor a block device", fd);
		goto fail;
	}
	if (acc == O_WRONLY || ((prot & TIDE_PROT_WRITE) && acc != O_RDWR)) {
		ret = tide__fail(-EACCES, "fd %d is not open for %s", fd,
				 acc == O_WRONLY ? "reading" : "reading and writing");
		goto fail;
	}
	if (S_ISREG(st.st_mode) && (uint64_t)offset + length > (uint64_t)st.st_size) {
		/* A read-only mapping may end in the file's last, partial page
		 * (it reads as zeros past the end), not beyond it. */
		uint64_t end = ((uint64_t)st.st_size + ps - 1) & ~(uint64_t)(ps - 1);

		if (!(prot & TIDE_PROT_WRITE) && (uint64_t)offset + length <= end)
			goto store;
		if (!(prot & TIDE_PROT_WRITE)) {
			ret = tide__fail(-ENXIO, "read-only mapping of [%lld, %lld) is past the end of the file (%lld bytes)",
					 (long long)offset, (long long)(offset + (off_t)length),
					 (long long)st.st_size);
			goto fail;
		}
		if (ftruncate(fd, offset + (off_t)length) < 0) {
			ret = tide__fail(-errno, "cannot extend the file to %lld bytes: %s",
					 (long long)(offset + (off_t)length), strerror(errno));
			goto fail;
		}
	}
store:
	ret = tide__file_store_open(p, fd, prot, &store);
	if (ret < 0)
		goto fail;
	addr = region_map(p, &tide__file_store_ops, store, (uint64_t)offset, length, prot, ps);
	if (!addr) {
		ret = -errno;
		tide__file_store_ops.close(store);
		goto fail;
	}
	return addr;
fail:
	errno = -ret;
	return NULL;
}

void *tide_map_store(tide_pool *p, const struct tide_store_ops *ops, void *store,
		     uint64_t offset, size_t length, int prot, size_t page_size)
{
	size_t ps;
	int ret;

	if (p && p->nshards)
		p = tide__shard_pick(p);
	ps = p ? resolve_page_size(p, page_size) : 0;
	ret = check_geometry(p, offset, length, prot, ps);
	if (ret == 0 && (!ops || !ops->read || ((prot & TIDE_PROT_WRITE) && (!ops->write || !ops->flush))))
		ret = tide__fail(-EINVAL, "a store needs read, and write and flush when mapped writable");
	if (ret < 0) {
		errno = -ret;
		return NULL;
	}
	return region_map(p, ops, store, offset, length, prot, ps);
}

/* Send a range request for addr to the pool that serves it. */
static int range_request(enum request_kind kind, const void *addr, size_t length)
{
	struct registry_entry e;
	struct request req = { .kind = kind };
	uintptr_t a = (uintptr_t)addr;
	int ret;

	if (registry_lookup(addr, &e) < 0)
		return tide__fail(-EINVAL, "%p is not in a tide region", addr);
	if (length == 0 && kind != REQ_UNMAP) {
		a = e.start;
		length = e.end - e.start;
	}
	if (kind == REQ_UNMAP && a != e.start)
		return tide__fail(-EINVAL, "%p is inside a region, not its start", addr);
	if (kind != REQ_UNMAP && (length > e.end - a))
		return tide__fail(-EINVAL, "range %p + %zu runs past the end of its region", addr, length);
	req.first = (a - e.start) / e.page_size;
	req.end = kind == REQ_UNMAP ? (e.end - e.start) / e.page_size
				    : (a + length - e.start + e.page_size - 1) / e.page_size;
	req.addr = e.start;
	ret = tide__request(e.pool, &req);
	if (ret == -EIO)
		return tide__fail(ret, "writing dirty pages of the region at %p failed; they stay in "
				  "memory, dirty, and the next flush or unmap tries them again", (void *)e.start);
	if (ret == -EINVAL)
		return tide__fail(ret, "the region at %p is being unmapped", (void *)e.start);
	if (ret < 0 && ret != -ECHILD && ret != -EDEADLK)
		return tide__fail(ret, "%s", strerror(-ret));
	return ret;
}

int tide_unmap(void *addr)
{
	return range_request(REQ_UNMAP, addr, 0);
}

int tide_flush(void *addr, size_t length)
{
	return range_request(REQ_FLUSH, addr, length);
}

int tide_prefetch(void *addr, size_t length)
{
	return range_request(REQ_PREFETCH, addr, length);
}

tide_pool *tide_pool_of(const void *addr)
{
	struct registry_entry e;

	if (registry_lookup(addr, &e) < 0) {
		errno = EINVAL;
		tide__fail(-EINVAL, "%p is not in a tide region", addr);
		return NULL;
	}
	/* A shard is internal: the caller knows the pool it created. */
	return e.pool->parent ? e.pool->parent : e.pool;
}

ssize_t tide_page_size_of(const void *addr)
{
	struct registry_entry e;

	if (registry_lookup(addr, &e) < 0)
		return tide__fail(-EINVAL, "%p is not in a tide region", addr);
	return (ssize_t)e.page_size;
}
