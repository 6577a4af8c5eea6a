/* umap API: umap-style programs (map, fill, sort, scan, flush, unmap) driven only through umap/umap.h. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "umap/umap.h"

#define NTHREADS 4

/* Each Criterion test runs in its own process, so each gets a fresh
 * process-wide umap pool configured from the environment set here. */
static void buffer_pages(const char *pages)
{
	cr_assert_eq(setenv("UMAP_BUFSIZE", pages, 1), 0);
}

static void *map_or_fail(size_t len, int prot, int fd, off_t off)
{
	void *p = umap(NULL, len, prot, UMAP_PRIVATE, fd, off);

	cr_assert_neq(p, UMAP_FAILED, "umap(len %zu, off %lld): %s", len, (long long)off,
		      strerror(errno));
	return p;
}

/* ---- fill with several threads, sort each quarter, flush, unmap, check ---- */

struct worker {
	uint64_t *words;
	size_t first, n;
	uint64_t seed;
	uint64_t mismatches;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static void *fill_and_sort(void *arg)
{
	struct worker *w = arg;

	for (size_t i = 0; i < w->n; i++)
		w->words[w->first + i] = test_word(w->first + i, w->seed);
	qsort(w->words + w->first, w->n, sizeof(uint64_t), cmp_u64);
	return NULL;
}

/* Each quarter of the file must be sorted and hold exactly the words that
 * were written into it: checked by order plus sum and xor of the quarter. */
static void check_sorted_quarters(int fd, size_t nwords, uint64_t seed)
{
	size_t per = nwords / NTHREADS;
	uint64_t *buf = malloc(per * sizeof(uint64_t));

	cr_assert(buf);
	for (int t = 0; t < NTHREADS; t++) {
		uint64_t sum = 0, xr = 0, want_sum = 0, want_xor = 0;

		test_pread(fd, buf, per * sizeof(uint64_t), (off_t)(t * per * sizeof(uint64_t)));
		for (size_t i = 0; i < per; i++) {
			uint64_t want = test_word(t * per + i, seed);

			want_sum += want;
			want_xor ^= want;
			sum += buf[i];
			xr ^= buf[i];
			if (i)
				cr_assert_leq(buf[i - 1], buf[i], "quarter %d unsorted at word %zu", t, i);
		}
		cr_assert_eq(sum, want_sum, "quarter %d: words lost or changed (sum)", t);
		cr_assert_eq(xr, want_xor, "quarter %d: words lost or changed (xor)", t);
	}
	free(buf);
}

Test(umap_api, fill_sort_flush_unmap)
{
	const size_t size = 16 * MiB, nwords = size / 8;
	const uint64_t seed = 0x5eed;
	struct worker w[NTHREADS];
	pthread_t th[NTHREADS];
	int fd, check_fd;
	uint64_t *words;

	test_require_uffd();
	/* 64 pages is well under the 16 MiB file at any page size up to 64K, so
	 * the sort runs through eviction and write-back, not just memory. */
	buffer_pages("64");
	cr_assert_lt(umapcfg_get_max_pages_in_buffer() * umapcfg_get_umap_page_size(), size);
	fd = test_file(size, 0);
	words = map_or_fail(size, PROT_READ | PROT_WRITE, fd, 0);
	for (int t = 0; t < NTHREADS; t++) {
		w[t] = (struct worker){ words, t * (nwords / NTHREADS), nwords / NTHREADS, seed, 0 };
		cr_assert_eq(pthread_create(&th[t], NULL, fill_and_sort, &w[t]), 0);
	}
	for (int t = 0; t < NTHREADS; t++)
		pthread_join(th[t], NULL);

	cr_assert_eq(umap_flush(), 0, "umap_flush: %s", strerror(errno));
	check_fd = test_reopen(fd);
	/* After a flush the file holds the data while the region is still mapped. */
	check_sorted_quarters(check_fd, nwords, seed);
	cr_assert_eq(uunmap(words, size), 0, "uunmap: %s", strerror(errno));
	check_sorted_quarters(check_fd, nwords, seed);
	close(check_fd);
	close(fd);
}

/* ---- scan a read-only mapping with several threads, with prefetch ---- */

static void *scan_interleaved(void *arg)
{
	struct worker *w = arg;
	size_t page_words = umapcfg_get_umap_page_size() / 8;

	/* Thread t reads pages t, t+N, t+2N...: every thread faults all over the
	 * region, and pages evicted under one thread are faulted by another. */
	for (size_t pg = w->first; pg * page_words < w->n; pg += NTHREADS)
		for (size_t i = pg * page_words; i < (pg + 1) * page_words && i < w->n; i++)
			if (w->words[i] != test_word(i, w->seed))
				w->mismatches++;
	return NULL;
}

Test(umap_api, threaded_scan_read_only)
{
	const size_t size = 16 * MiB;
	const uint64_t seed = 0xca7;
	struct worker w[NTHREADS];
	pthread_t th[NTHREADS];
	struct umap_prefetch_item items[8];
	uint64_t *words;
	size_t ps;
	int fd;

	test_require_uffd();
	buffer_pages("32");
	fd = test_file(size, seed);
	words = map_or_fail(size, PROT_READ, fd, 0);
	ps = umapcfg_get_umap_page_size();
	/* umap programs prefetch by listing page bases, and by range. */
	for (int i = 0; i < 8; i++)
		items[i].page_base_addr = (char *)words + (size_t)(i * 2) * ps;
	umap_prefetch(8, items);
	umap_fetch_and_pin((char *)words + size / 2, 4 * ps);
	for (int t = 0; t < NTHREADS; t++) {
		w[t] = (struct worker){ words, (size_t)t, size / 8, seed, 0 };
		cr_assert_eq(pthread_create(&th[t], NULL, scan_interleaved, &w[t]), 0);
	}
	for (int t = 0; t < NTHREADS; t++) {
		pthread_join(th[t], NULL);
		cr_assert_eq(w[t].mismatches, 0, "thread %d read %llu wrong words", t,
			     (unsigned long long)w[t].mismatches);
	}
	cr_assert_eq(uunmap(words, 0), 0, "uunmap: %s", strerror(errno));
	close(fd);
}

/* ---- offset: umap ignores it, tide honours it ---- */

Test(umap_api, offset_is_honoured)
{
	const size_t size = 4 * MiB;
	const uint64_t seed = 0x0ff5e7;
	const off_t big = 1 * MiB, small = 12 * KiB; /* small: 4K-aligned only */
	uint64_t *p, *q, before[2], word;
	int fd, check_fd;

	test_require_uffd();
	fd = test_file(size, seed);
	p = map_or_fail(256 * KiB, PROT_READ, fd, big);
	for (size_t i = 0; i < 256 * KiB / 8; i++)
		cr_assert_eq(p[i], test_word(big / 8 + i, seed), "word %zu at offset %lld", i,
			     (long long)big);

	q = map_or_fail(64 * KiB, PROT_READ | PROT_WRITE, fd, small);
	for (size_t i = 0; i < 64 * KiB / 8; i++)
		cr_assert_eq(q[i], test_word(small / 8 + i, seed), "word %zu at offset %lld", i,
			     (long long)small);
	/* A write lands at the offset in the file and nowhere before it. */
	q[0] = 0x1122334455667788ull;
	cr_assert_eq(uunmap(q, 64 * KiB), 0, "uunmap: %s", strerror(errno));
	check_fd = test_reopen(fd);
	test_pread(check_fd, &word, 8, small);
	cr_assert_eq(word, 0x1122334455667788ull);
	test_pread(check_fd, before, 16, small - 16);
	cr_assert_eq(before[0], test_word(small / 8 - 2, seed));
	cr_assert_eq(before[1], test_word(small / 8 - 1, seed));
	cr_assert_eq(uunmap(p, 256 * KiB), 0, "uunmap: %s", strerror(errno));
	close(check_fd);
	close(fd);
}

/* ---- uunmap releases the address range ---- */

Test(umap_api, uunmap_releases_range)
{
	const size_t size = 2 * MiB;
	unsigned char vec[size / 4096];
	volatile uint64_t *p;
	void *again;
	int fd;

	test_require_uffd();
	fd = test_file(size, 7);
	p = map_or_fail(size, PROT_READ | PROT_WRITE, fd, 0);
	p[0] = p[size / 8 - 1] + 1;
	cr_assert_eq(uunmap((void *)p, size), 0, "uunmap: %s", strerror(errno));
	/* umap leaves the range mapped; here nothing is mapped there any more. */
	errno = 0;
	cr_assert_eq(mincore((void *)p, size, vec), -1, "the range is still mapped");
	cr_assert_eq(errno, ENOMEM);
	again = mmap((void *)p, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		     -1, 0);
	cr_assert_eq(again, (void *)p, "re-mapping the released range: %s", strerror(errno));
	munmap(again, size);
	close(fd);
}

Test(umap_api, uunmap_errors_do_not_abort)
{
	const size_t size = 1 * MiB;
	char *p;
	int fd, local;

	test_require_uffd();
	fd = test_file(size, 3);
	p = map_or_fail(size, PROT_READ, fd, 0);
	errno = 0;
	cr_assert_eq(uunmap(p + umapcfg_get_umap_page_size(), 0), -1);
	cr_assert_eq(errno, EINVAL);
	errno = 0;
	cr_assert_eq(uunmap(&local, sizeof(local)), -1);
	cr_assert_eq(errno, EINVAL);
	/* Partial unmapping is refused and leaves the whole region usable. */
	errno = 0;
	cr_assert_eq(uunmap(p, size / 2), -1);
	cr_assert_eq(errno, EINVAL);
	cr_assert_eq(((uint64_t *)p)[size / 8 - 1], test_word(size / 8 - 1, 3));
	/* The length umap() was given, not the rounded one, is accepted. */
	cr_assert_eq(uunmap(p, size - 100), 0, "uunmap: %s", strerror(errno));
	errno = 0;
	cr_assert_eq(uunmap(p, size), -1, "a second uunmap of the same region succeeded");
	cr_assert_eq(errno, EINVAL);
	close(fd);
}

/* ---- argument checking: UMAP_FAILED and errno, never an abort ---- */

static void expect_umap_error(void *addr, size_t len, int prot, int flags, int fd, off_t off,
			      int want, const char *what)
{
	void *p;

	errno = 0;
	p = umap(addr, len, prot, flags, fd, off);
	cr_assert_eq(p, UMAP_FAILED, "%s: umap succeeded", what);
	cr_assert_eq(errno, want, "%s: errno %d (%s), want %d (%s)", what, errno, strerror(errno),
		     want, strerror(want));
}

Test(umap_api, bad_arguments)
{
	const size_t size = 1 * MiB;
	int fd, ro_fd;
	void *hint;

	test_require_uffd();
	fd = test_file(size, 11);
	ro_fd = test_reopen(fd);
	hint = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(hint, MAP_FAILED);
	expect_umap_error(hint, size, PROT_READ, UMAP_PRIVATE | UMAP_FIXED, fd, 0, ENOTSUP,
			  "UMAP_FIXED");
	expect_umap_error(NULL, size, PROT_READ, 0, fd, 0, EINVAL, "no sharing flag");
	expect_umap_error(NULL, size, PROT_READ, UMAP_PRIVATE | MAP_ANONYMOUS, fd, 0, EINVAL,
			  "MAP_ANONYMOUS");
	expect_umap_error(NULL, size, PROT_READ | PROT_EXEC, UMAP_PRIVATE, fd, 0, EINVAL,
			  "PROT_EXEC");
	expect_umap_error(NULL, size, PROT_NONE, UMAP_PRIVATE, fd, 0, EINVAL, "PROT_NONE");
	expect_umap_error(NULL, 0, PROT_READ, UMAP_PRIVATE, fd, 0, EINVAL, "zero length");
	expect_umap_error(NULL, size, PROT_READ, UMAP_PRIVATE, fd, 100, EINVAL, "unaligned offset");
	expect_umap_error(NULL, size, PROT_READ, UMAP_PRIVATE, fd, -4096, EINVAL,
			  "negative offset");
	expect_umap_error(NULL, size, PROT_READ, UMAP_PRIVATE, -1, 0, EBADF, "bad fd");
	expect_umap_error(NULL, size, PROT_READ | PROT_WRITE, UMAP_PRIVATE, ro_fd, 0, EACCES,
			  "write mapping of a read-only fd");
	/* The address range given as a hint without UMAP_FIXED is not required. */
	cr_assert_neq(umap(hint, size, PROT_READ, UMAP_PRIVATE, fd, 0), UMAP_FAILED,
		      "hinted umap: %s", strerror(errno));
	munmap(hint, size);
	cr_assert_eq(umap_has_write_support(), 1);
	close(ro_fd);
	close(fd);
}

/* ---- umap_flush covers every region; exit without uunmap loses nothing ---- */

Test(umap_api, flush_reaches_every_region)
{
	const size_t size = 1 * MiB;
	uint64_t *a, *b, word;
	int fa, fb;

	test_require_uffd();
	fa = test_file(size, 0);
	fb = test_file(size, 0);
	a = map_or_fail(size, PROT_READ | PROT_WRITE, fa, 0);
	b = map_or_fail(size, PROT_READ | PROT_WRITE, fb, 0);
	a[5] = 0xaaaa;
	b[size / 8 - 1] = 0xbbbb;
	cr_assert_eq(umap_flush(), 0, "umap_flush: %s", strerror(errno));
	test_pread(fa, &word, 8, 5 * 8);
	cr_assert_eq(word, 0xaaaa);
	test_pread(fb, &word, 8, (off_t)size - 8);
	cr_assert_eq(word, 0xbbbb);
	cr_assert_eq(uunmap(a, size), 0);
	cr_assert_eq(uunmap(b, size), 0);
	close(fa);
	close(fb);
}

struct exit_writer {
	int fd;
	size_t size;
};

static void write_and_exit(void *arg)
{
	struct exit_writer *x = arg;
	uint64_t *p = umap(NULL, x->size, PROT_READ | PROT_WRITE, UMAP_PRIVATE, x->fd, 0);

	if (p == UMAP_FAILED)
		_exit(2);
	for (size_t i = 0; i < x->size / 8; i++)
		p[i] = ~test_word(i, 1);
	/* exit(), not _exit(): a program that ends without uunmap or flush. */
	exit(0);
}

Test(umap_api, exit_without_uunmap_writes_back)
{
	struct exit_writer x = { .size = 2 * MiB };
	uint64_t *buf;

	test_require_uffd();
	x.fd = test_file(x.size, 0);
	cr_assert_eq(test_in_child(write_and_exit, &x, 60000), 0, "the writer child failed");
	buf = malloc(x.size);
	cr_assert(buf);
	test_pread(x.fd, buf, x.size, 0);
	for (size_t i = 0; i < x.size / 8; i++)
		cr_assert_eq(buf[i], ~test_word(i, 1), "word %zu was not written back at exit", i);
	free(buf);
	close(x.fd);
}

/* ---- a length that is not a whole number of pages ---- */

Test(umap_api, length_rounded_up)
{
	const size_t size = 100000; /* not a multiple of any page size */
	unsigned char *p, byte;
	int fd;

	test_require_uffd();
	fd = test_file(size, 0);
	p = umap(NULL, size, PROT_READ | PROT_WRITE, UMAP_PRIVATE, fd, 0);
	cr_assert_neq(p, UMAP_FAILED, "umap: %s", strerror(errno));
	p[size - 1] = 0x5a;
	cr_assert_eq(uunmap(p, size), 0, "uunmap: %s", strerror(errno));
	test_pread(fd, &byte, 1, size - 1);
	cr_assert_eq(byte, 0x5a);
	close(fd);
}

/* ---- fork: a child cannot use the parent's pool, and must not hang ---- */

struct fork_arg {
	void *region;
	int fd;
};

static void child_of_umap_process(void *arg)
{
	const struct fork_arg *f = arg;

	errno = 0;
	if (umap(NULL, 64 * KiB, PROT_READ, UMAP_PRIVATE, f->fd, 0) != UMAP_FAILED || errno != EPERM)
		_exit(2);
	errno = 0;
	if (uunmap(f->region, 0) != -1 || errno != EPERM)
		_exit(3);
	if (umap_flush() != -1 || errno != EPERM)
		_exit(4);
	/* exit() runs the library's exit-time flush, which must not wait on a
	 * service thread that fork() did not copy. */
	exit(0);
}

Test(umap_api, forked_child_fails_cleanly)
{
	const size_t size = 1 * MiB;
	struct fork_arg f;
	uint64_t *p, word;

	test_require_uffd();
	f.fd = test_file(size, 0);
	p = map_or_fail(size, PROT_READ | PROT_WRITE, f.fd, 0);
	p[1] = 0xf00d;
	f.region = p;
	cr_assert_eq(test_in_child(child_of_umap_process, &f, 20000), 0,
		     "the child of a umap process misbehaved (-1: hung)");
	/* The parent's region is untouched by the child's attempts. */
	cr_assert_eq(uunmap(p, size), 0, "uunmap: %s", strerror(errno));
	test_pread(f.fd, &word, 8, 8);
	cr_assert_eq(word, 0xf00d);
	close(f.fd);
}
