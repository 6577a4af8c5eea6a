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

int tide__bounce_init(struct tide__bounce *b, size_t size)
{
	memset(b, 0, sizeof(*b));
	b->unit = TIDE_MIN_PAGE;
	b->nunits = size / b->unit;
	b->map = calloc((b->nunits + 63) / 64, sizeof(uint64_t));
	if (!b->map)
		return -ENOMEM;
	/* 2 MiB alignment lets a 2 MiB page sit in one huge page of the arena. */
	b->base = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (b->base == MAP_FAILED) {
		free(b->map);
		return -ENOMEM;
	}
	/* A child must not inherit staging memory with I/O in flight. */
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

void *tide__bounce_get(struct tide__bounce *b, size_t len)
{
	size_t n = len / b->unit, run = 0;

	if (n == 0 || b->used + n > b->nunits)
		return NULL;
	/* Runs of a page start at a multiple of the page size, so a large page
	 * never straddles a smaller page's slot in a way that fragments the
	 * arena for the next large request. */
	for (size_t i = 0; i < b->nunits; i++) {
		if (run == 0 && i % n) {
			continue;
		}
		if (b->map[i / 64] == UINT64_MAX && i % 64 == 0 && n <= 64) {
			i += 63;
			run = 0;
			continue;
		}
		if (unit_used(b, i)) {
			run = 0;
			continue;
		}
		if (++run == n) {
			size_t first = i + 1 - n;

			units_mark(b, first, n, true);
			b->used += n;
			return b->base + first * b->unit;
		}
	}
	return NULL;
}

void tide__bounce_put(struct tide__bounce *b, void *p, size_t len)
{
	size_t first = (size_t)((char *)p - b->base) / b->unit;

	units_mark(b, first, len / b->unit, false);
	b->used -= len / b->unit;
}
