/*
 * Bounce memory: the runtime's own staging buffers. Fills are read into it
 * and installed with UFFDIO_COPY; the fixed write-back path copies dirty
 * pages into it and writes with WRITE_FIXED. It is registered once with
 * io_uring (a long-term pin) and is never registered with userfaultfd, which
 * is what makes that pin safe: see docs/kernel.md.
 *
 * Allocation is first-fit over a bitmap of 4 KiB units. Requests are at most
 * a few hundred per second per MiB and the arena is small, so a scan is
 * cheaper than keeping size classes for every page size in use.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

/*
 * The arena sits on 2 MiB boundaries. Its lower half asks for transparent
 * huge pages, its upper half for plain ones; fills start in the lower half,
 * write-back in the upper, and each takes the other half when its own is
 * full. A read into a span inside one huge page is one physically
 * contiguous segment, and this VM's virtio disk is much faster for it
 * (io_uring O_DIRECT sequential reads, 64 KiB at QD32: 2.6-2.7 GB/s from a
 * huge-page buffer, 1.8-1.9 GB/s from 4 KiB pages; tide's sequential fill
 * 2.4-2.5 against 1.0-1.7, alternating runs). Why not all of it: the fixed
 * path's writes into a new file ran 1.3-1.5 GB/s with the whole arena in
 * huge pages, and with three quarters, against 1.9-2.2 with half, whichever
 * half the writes started in (five times the context switches; not
 * understood: raw io_uring writes were 15% faster from huge pages).
 * Without THP both halves are plain pages. The default size (budget/8,
 * 4-16 MiB) leaves the fills' half room for a read-ahead window and the
 * next one: at budget/16 the next window's reads spilled into plain pages
 * (docs/design.md, Budget).
 */
static char *arena_map(size_t size, size_t huge)
{
	size_t align = TIDE_MAX_PAGE;
	char *raw = mmap(NULL, size + align, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *base;

	if (raw == MAP_FAILED)
		return NULL;
	base = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	if (base > raw)
		munmap(raw, (size_t)(base - raw));
	if (raw + align > base)
		munmap(base + size, (size_t)(raw + align - base));
	if (huge)
		madvise(base, huge, MADV_HUGEPAGE);
	madvise(base + huge, size - huge, MADV_NOHUGEPAGE);
	/* Populated now: the service thread should not take these faults. */
	if (madvise(base, size, MADV_POPULATE_WRITE) < 0)
		memset(base, 0, size);
	return base;
}

/* The allocator's bitmap for `size` bytes of 4 KiB units, all free. */
static int map_init(struct tide__bounce *b, size_t size)
{
	memset(b, 0, sizeof(*b));
	b->unit = TIDE_MIN_PAGE;
	b->nunits = size / b->unit;
	b->map = calloc((b->nunits + 63) / 64, sizeof(uint64_t));
	return b->map ? 0 : -ENOMEM;
}

int tide__bounce_init(struct tide__bounce *b, size_t size)
{
	if (map_init(b, size) < 0)
		return -ENOMEM;
	b->split = size / 2 / TIDE_MAX_PAGE * TIDE_MAX_PAGE / b->unit;
	b->base = arena_map(size, b->split * b->unit);
	if (!b->base) {
		free(b->map);
		return -ENOMEM;
	}
	/* A child must not inherit staging memory with I/O in flight. */
	madvise(b->base, size, MADV_DONTFORK);
	b->size = size;
	return 0;
}

/* Address space only, for spare.c: the same allocator over pages that are
 * present only while pages are moved there. Not registered anywhere. */
int tide__bounce_reserve(struct tide__bounce *b, size_t size)
{
	if (map_init(b, size) < 0)
		return -ENOMEM;
	b->base = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (b->base == MAP_FAILED) {
		b->base = NULL;
		free(b->map);
		return -ENOMEM;
	}
	madvise(b->base, size, MADV_NOHUGEPAGE);
	madvise(b->base, size, MADV_DONTFORK);
	b->size = size;
	return 0;
}

void tide__bounce_fini(struct tide__bounce *b)
{
	if (b->base)
		munmap(b->base, b->size);
	free(b->map);
	memset(b, 0, sizeof(*b));
}

static bool unit_used(const struct tide__bounce *b, size_t i)
{
	return b->map[i / 64] >> (i % 64) & 1;
}

static void units_mark(struct tide__bounce *b, size_t first, size_t n, bool used)
{
	for (size_t i = first; i < first + n; i++) {
		if (used)
			b->map[i / 64] |= 1ull << (i % 64);
		else
			b->map[i / 64] &= ~(1ull << (i % 64));
	}
}

static void *units_take(struct tide__bounce *b, size_t first, size_t n)
{
	units_mark(b, first, n, true);
	b->used += n;
	return b->base + first * b->unit;
}

struct scan {
	size_t align, want;      /* in units */
	size_t best, best_first; /* the longest free span seen, in whole pieces */
};

/* First fit of `want` units in [from, to), spans starting at a multiple of
 * the piece; the longest shorter span is remembered in sc. */
static void *span_scan(struct tide__bounce *b, struct scan *sc, size_t from, size_t to)
{
	size_t run = 0, align = sc->align;

	for (size_t i = from; i < to; i++) {
		if (run == 0 && i % align)
			continue;
		if (i % 64 == 0 && b->map[i / 64] == UINT64_MAX && run == 0) {
			i += 63;
			continue;
		}
		/* A megabyte span is 256 units: take free words whole. */
		if (i % 64 == 0 && b->map[i / 64] == 0 && run + 64 < sc->want && i + 64 <= to) {
			run += 64;
			i += 63;
			continue;
		}
		if (unit_used(b, i)) {
			if (run / align * align > sc->best) {
				sc->best = run / align * align;
				sc->best_first = i - run;
			}
			run = 0;
			continue;
		}
		if (++run == sc->want)
			return units_take(b, i + 1 - sc->want, sc->want);
	}
	if (run / align * align > sc->best) {
		sc->best = run / align * align;
		sc->best_first = to - run;
	}
	return NULL;
}

/*
 * A free span of whole `piece`-sized pieces (a page) starting at a multiple
 * of the piece, looked for from unit `start` on, then anywhere: the first
 * span `max` bytes long, else the longest there is, so a run of dirty pages
 * that finds the arena busy leaves as a shorter run instead of waiting.
 * *len gets the span's length; NULL when not even one piece is free.
 *
 * Spans start at a multiple of their page size, so a large page never
 * straddles a smaller page's slot in a way that fragments the arena for the
 * next large request.
 */
static void *span_get(struct tide__bounce *b, size_t start, size_t piece, size_t max, size_t *len)
{
	struct scan sc = { .align = piece / b->unit, .want = max / b->unit };
	size_t free_units = b->nunits - b->used;
	void *s;

	if (sc.align == 0 || sc.want < sc.align || free_units < sc.align)
		return NULL;
	sc.want = sc.want / sc.align * sc.align;
	if (sc.want > free_units)
		sc.want = free_units / sc.align * sc.align;
	/* From start on first, then the whole arena (a span may cross the middle). */
	if ((s = span_scan(b, &sc, start, b->nunits)) ||
	    (start && (s = span_scan(b, &sc, 0, b->nunits)))) {
		*len = sc.want * b->unit;
		return s;
	}
	if (!sc.best)
		return NULL;
	*len = sc.best * b->unit;
	return units_take(b, sc.best_first, sc.best);
}

/* Write-back: from the plain half first. */
void *tide__bounce_get_span(struct tide__bounce *b, size_t piece, size_t max, size_t *len)
{
	return span_get(b, b->split, piece, max, len);
}

/* Fills: from the huge-page half first, exactly len bytes. */
void *tide__bounce_get(struct tide__bounce *b, size_t len)
{
	size_t got;

	return span_get(b, 0, len, len, &got);
}

void tide__bounce_put(struct tide__bounce *b, void *p, size_t len)
{
	size_t first = (size_t)((char *)p - b->base) / b->unit;

	units_mark(b, first, len / b->unit, false);
	b->used -= len / b->unit;
}
