/*
 * Spare pages: dirty pages evicted by moving them out of their region, and
 * reused by the fills that follow (TIDE_RECYCLE, kernels with UFFDIO_MOVE).
 *
 * Evicting a dirty page the plain way costs the service thread four things:
 * protect it (UFFDIO_WRITEPROTECT), copy it out (fixed path), drop it
 * (MADV_DONTNEED: unmap, uncharge, free) and, for the page that takes its
 * place, UFFDIO_COPY (allocate, charge, copy in). Here instead one
 * UFFDIO_MOVE takes the run of pages out of the region into runtime-owned
 * address space (the spare room), atomically under the page-table locks:
 * from then on the app's address is empty, so any access is a MISSING
 * fault that waits for the service thread, and nothing can change what is
 * being written. The store writes from the moved pages themselves (the
 * fixed path copies them into its bounce buffers first and frees the slot
 * at once). Once the write is done the pages are free, still present and
 * charged, and a fill of a hole zeroes them and moves them into place: no
 * allocation, no copy of zeros by the kernel, no free. Measured on this VM (a minimal pager,
 * 64 KiB pages, runs of 16, docs/design.md): 12-14 us of handler time per
 * page against 18-21 with protect, copy and drop.
 *
 * Limits, all checked where they apply:
 * - A moved-in page carries no uffd-wp bit (moving drops it: a page
 *   protected in the room arrives unprotected, seen on 6.18), so only
 *   fills that are installed writable anyway take spare pages (a run of
 *   write faults); a read fault on a writable region copies as before.
 *   Nor does a read-only region take them: UFFDIO_MOVE refuses (EINVAL)
 *   between mappings whose protections differ, and the room is writable.
 * - The kernel moves only pages this process owns alone: after a fork, or
 *   while the app pins a page for its own O_DIRECT, the move stops with
 *   EBUSY; what moved goes back and the run leaves the plain way.
 * - The room is registered with the pool's userfaultfd (UFFDIO_MOVE's
 *   destination must be), so nobody may touch an empty slot of it: a fault
 *   there would wait for the service thread, which may be the toucher. The
 *   store only ever writes pages that moved whole (a short move is undone),
 *   and fills take only free pages, which are present.
 * - Free pages are memory the budget does not count: each pass ends by
 *   dropping those the budget has no room for, so at rest the pool's pages
 *   and its spare ones together stay within the budget.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

bool tide__thp_available(void)
{
	char buf[64] = "";
	int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);

	if (fd >= 0)
		close(fd);
	return n > 0 && !strstr(buf, "[never]");
}

int tide__spare_init(struct tide_pool *p)
{
	struct tide__spare *s = &p->spare;
	/* Pages in the room are pages evicted from this pool, so the pool's
	 * budget bounds them; a shard may borrow up to all of its parent's. */
	size_t size = p->parent ? p->parent->opt.budget : p->opt.budget;
	uint64_t ioctls = 0;
	int ret;

	memset(s, 0, sizeof(*s));
	if (!p->opt.recycle || !(p->uffd_features & UFFD_FEATURE_MOVE))
		return 0;
	size = (size + TIDE_MAX_PAGE - 1) / TIDE_MAX_PAGE * TIDE_MAX_PAGE;
	ret = tide__bounce_reserve(&s->room, size);
	if (ret < 0)
		return ret;
	ret = tide__uffd_register(p->uffd, s->room.base, size, UFFDIO_REGISTER_MODE_MISSING, &ioctls);
	if (ret < 0 || !(ioctls & (1ull << _UFFDIO_MOVE))) {
		if (ret == 0)
			tide__uffd_unregister(p->uffd, s->room.base, size);
		tide__bounce_fini(&s->room);
		/* Eviction copies as before. */
		return 0;
	}
	s->on = true;
	s->seed = tide__thp_available();
	return 0;
}

void tide__spare_fini(struct tide_pool *p)
{
	if (p->spare.on)
		tide__bounce_fini(&p->spare.room);
	memset(&p->spare, 0, sizeof(p->spare));
}

void *tide__spare_room(struct tide_pool *p, size_t piece, size_t max, size_t *len)
{
	return p->spare.on ? tide__bounce_get_span(&p->spare.room, piece, max, len) : NULL;
}

/* Slots of the room [at, at + len) are empty again. */
static void room_put(struct tide_pool *p, char *at, size_t len)
{
	tide__bounce_put(&p->spare.room, at, len);
}

/* Pages still in slots [at, at + len) leave memory. */
static void room_drop(struct tide_pool *p, char *at, size_t len)
{
	madvise(at, len, MADV_DONTNEED);
	p->st.c.drop_calls++;
	room_put(p, at, len);
}

/* Pages [addr, addr + len) of a region installed from a copy of them at
 * `src`, protected when `protect`; nobody is woken. A copy that stops short
 * goes on from where it stopped. */
static void copy_in(struct tide_pool *p, const char *src, char *addr, size_t len, bool protect)
{
	uint64_t mode = UFFDIO_COPY_MODE_DONTWAKE | (protect ? UFFDIO_COPY_MODE_WP : 0);
	size_t done = 0;

	while (done < len) {
		int64_t copied = 0;
		int ret = tide__uffd_copy(p->uffd, addr + done, src + done, len - done, mode, &copied);

		done += copied > 0 ? (size_t)copied : 0;
		if (ret == -EEXIST) {
			done += TIDE_MIN_PAGE;   /* cannot be: nothing else installs these */
		} else if (ret < 0 && ret != -EAGAIN) {
			tide__warn("putting back %zu bytes of evicted pages failed (%s)",
				   len - done, strerror(-ret));
			return;
		}
	}
}

/* The same, then the faults on them wake: a copy out (the fixed path's
 * bounce span) comes back. */
void tide__spare_copy_back(struct tide_pool *p, const char *src, char *addr, size_t len,
			   bool protect)
{
	copy_in(p, src, addr, len, protect);
	tide__uffd_wake(p->uffd, addr, len);
}

/*
 * Pages [addr, addr + len) of a region back from slot `at`, writable (dirty):
 * their write failed or a write fault waits on them. A moved page comes
 * back writable with no uffd-wp bit, so a page that must come back clean
 * cannot move: protecting it after the move would leave a window in which
 * another thread writes it unseen (a write lost at its eviction), so those
 * are copied in protected (tide__spare_copy_back) and their slot freed.
 * A move that stops (it should not: the addresses are empty and the pages
 * ours) leaves the rest to UFFDIO_COPY, so the data comes back either way.
 */
void tide__spare_back(struct tide_pool *p, char *at, char *addr, size_t len)
{
	int64_t moved = 0;
	size_t done;

	tide__uffd_move(p->uffd, addr, at, len, UFFDIO_MOVE_MODE_DONTWAKE, &moved);
	done = moved > 0 ? (size_t)moved : 0;
	if (done < len) {
		copy_in(p, at + done, addr + done, len - done, false);
		room_drop(p, at + done, len - done);
	}
	if (done)
		room_put(p, at, done);
	tide__uffd_wake(p->uffd, addr, len);
}

/*
 * Move pages [addr, addr + len) of a region out to slot `at` (from
 * tide__spare_room). 0 when all of them moved; else what moved went back,
 * the slot is free again and the error is the kernel's (EBUSY: a page is
 * shared or pinned).
 */
int tide__spare_out(struct tide_pool *p, char *at, char *addr, size_t len)
{
	int64_t moved = 0;
	int ret = tide__uffd_move(p->uffd, at, addr, len, UFFDIO_MOVE_MODE_DONTWAKE, &moved);

	if (ret == 0 && moved == (int64_t)len)
		return 0;
	if (moved > 0)
		tide__spare_back(p, at, addr, (size_t)moved);
	room_put(p, at + (moved > 0 ? moved : 0), len - (size_t)(moved > 0 ? moved : 0));
	return ret < 0 ? ret : -EAGAIN;
}

/* Pages in slot [at, at + len) are free for a fill; `fresh`: seeded. */
static void run_add(struct tide_pool *p, char *at, size_t len, bool fresh)
{
	struct tide__spare *s = &p->spare;
	struct spare_run *last = s->nfree ? &s->free[s->nfree - 1] : NULL;

	if (last && last->at + last->len == at && last->fresh == fresh) {
		last->len += len;
	} else if (s->nfree < TIDE_SPARE_RUNS) {
		s->free[s->nfree++] = (struct spare_run){ at, len, fresh };
	} else {
		room_drop(p, at, len);
	}
}

/* Pages in slot [at, at + len) were written: free for a fill. */
void tide__spare_free(struct tide_pool *p, char *at, size_t len)
{
	run_add(p, at, len, false);
}

/*
 * Free pages for a fill of `len` bytes of holes, when the room has none:
 * one transparent huge page, populated outside the uffd and moved into the
 * room as 512 small pages. The pages a hole's fill takes then sit side by
 * side in physical memory, and so do they when they leave again for the
 * store: an O_DIRECT write from them (the direct path writes from the
 * moved pages) is a few long segments instead of one per 4 KiB, and this
 * VM's disk takes the first at the speed of the fixed path's writes from
 * its arena (docs/design.md). Recycling keeps them together from then on.
 * Each 4 KiB gets a non-zero first byte before the move that splits the
 * huge page: the split maps an all-zero small page to the shared zero
 * page (6.18), and the app's first write to it would then take a copy-on-
 * write fault and a scattered page. Only for fills of a quarter of a huge
 * page or more (sequential writers): a small fill would pay for 2 MiB
 * that the end of the pass drops again. Not on the fixed path, which
 * writes from its arena: there the pages' places do not matter, and
 * seeding measured slower (docs/design.md).
 */
static bool spare_seed(struct tide_pool *p, size_t len, size_t ps)
{
	struct tide__spare *s = &p->spare;
	int64_t first = 0, rest = 0;
	size_t got, moved;
	char *raw, *hp, *at;

	if (!s->seed || p->writeback == TIDE_WRITEBACK_FIXED || len < TIDE_MAX_PAGE / 4 ||
	    s->nfree == TIDE_SPARE_RUNS)
		return false;
	at = tide__spare_room(p, ps, TIDE_MAX_PAGE, &got);
	if (!at)
		return false;
	raw = mmap(NULL, 2 * TIDE_MAX_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		   -1, 0);
	if (raw == MAP_FAILED) {
		room_put(p, at, got);
		return false;
	}
	hp = (char *)(((uintptr_t)raw + TIDE_MAX_PAGE - 1) & ~(uintptr_t)(TIDE_MAX_PAGE - 1));
	/* Not shared with a child forked meanwhile: a shared page cannot move. */
	madvise(raw, 2 * TIDE_MAX_PAGE, MADV_DONTFORK);
	if (madvise(hp, TIDE_MAX_PAGE, MADV_HUGEPAGE) < 0 ||
	    madvise(hp, got, MADV_POPULATE_WRITE) < 0) {
		munmap(raw, 2 * TIDE_MAX_PAGE);
		room_put(p, at, got);
		s->seed = false;   /* no huge pages here after all */
		return false;
	}
	for (size_t off = 0; off < got; off += TIDE_MIN_PAGE)
		hp[off] = 1;
	/* One small page first: that move splits the huge page. */
	tide__uffd_move(p->uffd, at, hp, TIDE_MIN_PAGE, UFFDIO_MOVE_MODE_DONTWAKE, &first);
	if (first == TIDE_MIN_PAGE && got > TIDE_MIN_PAGE)
		tide__uffd_move(p->uffd, at + TIDE_MIN_PAGE, hp + TIDE_MIN_PAGE, got - TIDE_MIN_PAGE,
				UFFDIO_MOVE_MODE_DONTWAKE, &rest);
	munmap(raw, 2 * TIDE_MAX_PAGE);
	moved = (size_t)(first > 0 ? first : 0) + (size_t)(rest > 0 ? rest : 0);
	if (moved < got) {
		if (moved)
			room_drop(p, at, moved);
		room_put(p, at + moved, got - moved);
		return false;
	}
	run_add(p, at, got, true);
	return true;
}

/*
 * Install zeros at pages [addr, addr + len) of a region (`ps` bytes each)
 * with free spare pages (seeded first when there are none: spare_seed),
 * zeroed here, then moved into place, which wakes the faults on them.
 * Returns the bytes installed, whole pages, from addr.
 */
size_t tide__spare_zeros(struct tide_pool *p, char *addr, size_t len, size_t ps)
{
	struct tide__spare *s = &p->spare;
	size_t done = 0;

	if (!s->nfree)
		spare_seed(p, len, ps);
	while (done < len && s->nfree) {
		struct spare_run *run = &s->free[s->nfree - 1];
		size_t piece = len - done < run->len ? len - done : run->len;
		char *at;
		int64_t moved = 0;

		piece -= piece % ps;
		if (!piece) {
			/* Less than a page of this region (freed by one with
			 * smaller pages): it would stop every fill here. */
			room_drop(p, run->at, run->len);
			s->nfree--;
			continue;
		}
		/* From the end of the newest run: its pages are the warmest. */
		at = run->at + run->len - piece;
		if (run->fresh) {
			for (size_t off = 0; off < piece; off += TIDE_MIN_PAGE)
				at[off] = 0;
		} else {
			memset(at, 0, piece);
		}
		tide__uffd_move(p->uffd, addr + done, at, piece, 0, &moved);
		if (moved <= 0)
			break;   /* the run keeps its pages (zeroed) */
		moved -= moved % (int64_t)ps;
		if (!run->fresh)
			p->st.c.fills_recycled += (uint64_t)moved / ps;
		run->len -= piece;
		room_put(p, at, (size_t)moved);
		/* A short move (it should not be): the rest of the piece goes. */
		if ((size_t)moved < piece)
			room_drop(p, at + moved, piece - (size_t)moved);
		if (!run->len)
			s->nfree--;
		done += (size_t)moved;
		if ((size_t)moved < piece)
			break;
	}
	return done;
}

/* The end of a pass: free pages the budget has no room for leave, oldest
 * run first. */
void tide__spare_trim(struct tide_pool *p)
{
	struct tide__spare *s = &p->spare;
	uint64_t budget = tide__pool_budget(p);
	uint64_t keep = budget > p->resident ? budget - p->resident : 0;
	uint64_t free_bytes = 0;
	unsigned i = 0;

	for (unsigned k = 0; k < s->nfree; k++)
		free_bytes += s->free[k].len;
	for (; i < s->nfree && free_bytes > keep; i++) {
		room_drop(p, s->free[i].at, s->free[i].len);
		free_bytes -= s->free[i].len;
	}
	if (!i)
		return;
	memmove(s->free, s->free + i, (s->nfree - i) * sizeof(s->free[0]));
	s->nfree -= i;
}
