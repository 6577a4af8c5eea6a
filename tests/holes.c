/* Store holes: pages of a sparse or fallocated file, or of a custom store that
 * reports holes, are installed as zeros without a read; what is written to
 * them reaches the store through both write-back paths, and data between
 * holes still reads as data. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"

static tide_pool *make_pool(enum tide_writeback wb, size_t budget, unsigned read_ahead,
			    int odirect)
{
	struct tide_options o;
	tide_pool *pool;

	test_require_writeback(wb);
	tide_options_init(&o);
	o.budget = budget;
	o.page_size = 4 * KiB;
	o.writeback = wb;
	o.read_ahead = read_ahead;
	o.odirect = odirect;
	o.flush_interval_ms = 0;   /* pages are written when evicted, flushed or unmapped */
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	return pool;
}

/* A file of `size` bytes that reads as zeros and has no data extent:
 * sparse (ftruncate) or fallocated (unwritten extents). */
static int hole_file(uint64_t size, bool falloc)
{
	int fd = test_file(falloc ? 0 : size, 0);
	off_t data;

	if (falloc && fallocate(fd, 0, 0, (off_t)size) < 0) {
		int err = errno;

		close(fd);
		cr_skip_test("fallocate is not supported in the test directory: %s", strerror(err));
	}
	data = lseek(fd, 0, SEEK_DATA);
	if (data >= 0 || errno != ENXIO) {
		close(fd);
		cr_skip_test("the test file system does not report a %s file as a hole (SEEK_DATA)",
			     falloc ? "fallocated" : "sparse");
	}
	return fd;
}

/* A resident page, as mincore(2) sees it: installed pages are present. */
static bool resident(const void *page)
{
	unsigned char v = 0;

	cr_assert_eq(mincore((void *)page, 4 * KiB, &v), 0, "mincore: %s", strerror(errno));
	return v & 1;
}

/* What the tests write: words no hole holds. */
static uint64_t mark(size_t word)
{
	return ~test_word(word, 11) | 1;
}

/*
 * A region eight times the pool over a file without data. Page i by i % 4:
 * 0 written, 1 read, 2 read and then written (its first write must be seen
 * although it was installed by a read), 3 untouched.
 */
enum { ROLE_WRITE, ROLE_READ, ROLE_READ_WRITE, ROLE_NONE };

static bool role_written(size_t page)
{
	return page % 4 == ROLE_WRITE || page % 4 == ROLE_READ_WRITE;
}

struct file_case {
	bool falloc;
	enum tide_writeback wb;
	unsigned read_ahead;
	int odirect;
};

/* After unmap, the file itself (read through another open file description,
 * so nothing of the mapping) holds want(i) in every word i of [0, len). */
static void expect_file_words(int fd, size_t len, uint64_t (*want)(size_t word))
{
	uint64_t *disk = malloc(len);
	int other = test_reopen(fd);

	cr_assert_not_null(disk);
	test_pread(other, disk, len, 0);
	for (size_t i = 0; i < len / 8; i++)
		if (disk[i] != want(i))
			cr_assert_fail("file word %zu (page %zu): %#llx, want %#llx", i,
				       i * 8 / (4 * KiB), (unsigned long long)disk[i],
				       (unsigned long long)want(i));
	close(other);
	free(disk);
}

/* file_written_evicted_read_back: the roles' marks, zeros elsewhere. */
static uint64_t want_roles(size_t word)
{
	return role_written(word * 8 / (4 * KiB)) ? mark(word) : 0;
}

ParameterizedTestParameters(holes, file_written_evicted_read_back)
{
	static struct file_case cases[] = {
		{ false, TIDE_WRITEBACK_FIXED, 0, 1 },
		{ false, TIDE_WRITEBACK_DIRECT, 0, 1 },
		{ true, TIDE_WRITEBACK_FIXED, 0, 1 },
		{ true, TIDE_WRITEBACK_DIRECT, 0, 1 },
		{ false, TIDE_WRITEBACK_FIXED, 64, 1 },
		{ false, TIDE_WRITEBACK_DIRECT, 64, 1 },
		{ true, TIDE_WRITEBACK_FIXED, 64, 1 },
		{ true, TIDE_WRITEBACK_DIRECT, 64, 1 },
		/* Buffered: written pages sit dirty in the page cache over the hole. */
		{ false, TIDE_WRITEBACK_FIXED, 0, 0 },
		{ true, TIDE_WRITEBACK_DIRECT, 0, 0 },
	};
	return cr_make_param_array(struct file_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct file_case *c, holes, file_written_evicted_read_back)
{
	size_t ps = 4 * KiB, budget = 512 * KiB, len = 8 * budget, npages = len / ps;
	size_t words = ps / 8, data_faults = 0, hole_faults = 0, bad = 0;
	int fd = hole_file(len, c->falloc);
	tide_pool *pool = make_pool(c->wb, budget, c->read_ahead, c->odirect);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	struct tide_stats a, b;

	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t pg = 0; pg < npages; pg++) {
		uint64_t *w = p + pg * words;

		if (pg % 4 == ROLE_READ || pg % 4 == ROLE_READ_WRITE)
			for (size_t i = 0; i < words; i++)
				bad += w[i] != 0;
		if (role_written(pg))
			for (size_t i = 0; i < words; i++)
				w[i] = mark(pg * words + i);
	}
	cr_expect_eq(bad, 0, "%zu words of holes did not read as zeros", bad);
	a = test_stats(pool);
	/* Nothing in the file had data: every fill was a hole's. */
	cr_expect_eq(a.store_reads, 0, "%llu store reads of a file without data",
		     (unsigned long long)a.store_reads);
	cr_expect_eq(a.fills_zero, a.fills, "%llu of %llu fills were zero fills",
		     (unsigned long long)a.fills_zero, (unsigned long long)a.fills);
	if (!c->read_ahead)
		cr_expect_eq(a.fills, 3 * npages / 4, "%llu fills for %zu touched pages",
			     (unsigned long long)a.fills, 3 * npages / 4);
	cr_expect_gt(a.evictions_dirty, 0, "nothing was evicted dirty");
	cr_expect_eq(a.writeback, c->wb);
	cr_expect_leq(a.peak_resident_bytes, budget);

	/* Every write-back done, nothing dirty: from here each fault is one
	 * fill, of a page that mincore saw absent just before. */
	cr_assert_eq(tide_flush(p, 0), 0, "%s", tide_last_error());
	for (size_t pg = 0; pg < npages; pg++) {
		uint64_t *w = p + pg * words;

		if (!resident(w)) {
			data_faults += role_written(pg);
			hole_faults += !role_written(pg);
		}
		for (size_t i = 0; i < words; i++)
			bad += w[i] != (role_written(pg) ? mark(pg * words + i) : 0);
	}
	cr_expect_eq(bad, 0, "%zu words read back wrong after eviction", bad);
	b = test_stats(pool);
	cr_expect_gt(b.store_reads, a.store_reads, "written pages were not read back");
	cr_expect_gt(b.fills_zero, a.fills_zero, "holes were read back from the store");
	if (!c->read_ahead) {
		/* A data page is never taken for a hole; a hole may be read
		 * (as zeros) when SEEK_DATA calls it data: a zeroed page of an
		 * unwritten extent in the page cache counts as data, and the
		 * kernel's read-ahead of data pages can bring such pages in
		 * (seen once in CI: 29 of 512 holes read). */
		cr_expect_geq(b.store_reads - a.store_reads, data_faults,
			      "%llu store reads for %zu absent pages with data (falloc %d, odirect %d)",
			      (unsigned long long)(b.store_reads - a.store_reads), data_faults,
			      c->falloc, c->odirect);
		cr_expect_eq(b.store_reads - a.store_reads + b.fills_zero - a.fills_zero,
			     data_faults + hole_faults, "fills are not one per absent page");
	}
	cr_expect_eq(b.writeback_errors, 0);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0);
	expect_file_words(fd, len, want_roles);
	close(fd);
}

/*
 * A sequential writer gets the pages ahead of it installed dirty: here they
 * are holes, and the writer stops before it reaches them. Evicted dirty
 * without ever being written, they must still reach the file (as zeros),
 * through either write-back path.
 */
#define UNWRITTEN_WRITTEN 16   /* pages the writer writes before it stops */

/* unwritten_dirty_pages: a mark in the first word of each page written. */
static uint64_t want_first_words(size_t word)
{
	return word % (4 * KiB / 8) == 0 && word * 8 / (4 * KiB) < UNWRITTEN_WRITTEN ? mark(word) : 0;
}

static void unwritten_dirty_pages(enum tide_writeback wb)
{
	size_t ps = 4 * KiB, budget = 512 * KiB, len = 8 * budget, npages = len / ps;
	size_t words = ps / 8, written = UNWRITTEN_WRITTEN, bad = 0;
	int fd = hole_file(len, true);
	tide_pool *pool = make_pool(wb, budget, 32, 1);
	uint64_t *p = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	struct tide_stats a, b;

	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t pg = 0; pg < written; pg++)
		p[pg * words] = mark(pg * words);
	a = test_stats(pool);
	cr_assert_gt(a.dirty_bytes, written * ps, "no page ahead of the writer was installed dirty");
	cr_expect_eq(a.store_reads, 0);
	/* Reading the far half evicts everything the writer left. */
	for (size_t pg = npages / 2; pg < npages; pg++)
		bad += p[pg * words] != 0;
	/* A flush returns when every write issued before it has completed:
	 * the evictions' too, which a fault handler may have just started. */
	cr_assert_eq(tide_flush(p, 0), 0, "%s", tide_last_error());
	b = test_stats(pool);
	cr_expect_eq(bad, 0);
	cr_expect_gt(b.evictions_dirty, written, "%llu dirty evictions for %zu written pages",
		     (unsigned long long)b.evictions_dirty, written);
	cr_expect_geq(b.writebacks, a.dirty_bytes / ps, "%llu pages written back of %llu dirty",
		      (unsigned long long)b.writebacks, (unsigned long long)(a.dirty_bytes / ps));
	cr_expect_eq(b.writeback_errors, 0);
	cr_expect_eq(b.store_reads, 0);
	/* Read back through the mapping: the written pages, and zeros after. */
	for (size_t i = 0; i < (written + 64) * words; i++)
		bad += p[i] != want_first_words(i);
	cr_expect_eq(bad, 0, "%zu words read back wrong", bad);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0);
	expect_file_words(fd, len, want_first_words);
	close(fd);
}

Test(holes, unwritten_dirty_pages_fixed) { unwritten_dirty_pages(TIDE_WRITEBACK_FIXED); }
Test(holes, unwritten_dirty_pages_direct) { unwritten_dirty_pages(TIDE_WRITEBACK_DIRECT); }

/*
 * A read-only region takes no spare pages for its holes: the spare room is
 * writable, and UFFDIO_MOVE refuses (EINVAL) between mappings whose
 * protections differ, so a hole fill that tried would seed the room with a
 * huge page and touch it for nothing, then copy zeros anyway. The holes
 * read as zeros without a read, and the room stays empty.
 */
Test(holes, read_only_holes_leave_the_spare_room_alone)
{
	size_t ps = 64 * KiB, len = 16 * MiB, words = len / 8, bad = 0;
	int fd = hole_file(len, false);
	tide_pool *pool = make_pool(TIDE_WRITEBACK_DIRECT, 64 * MiB, 64, 1);
	/* With shards (TIDE_SERVICE_THREADS) the rooms are the shards'. */
	tide_pool *const *pools = pool->nshards > 1 ? pool->shards : &pool;
	unsigned npools = pool->nshards > 1 ? pool->nshards : 1, nfree = 0;
	const uint64_t *p;
	struct tide_stats st;

	if (!pools[0]->spare.on || !pools[0]->spare.seed) {
		tide_pool_destroy(pool);
		close(fd);
		cr_skip_test("no spare room to leave alone here (TIDE_RECYCLE off, no UFFDIO_MOVE "
			     "or no transparent huge pages)");
	}
	p = tide_map(pool, fd, 0, len, TIDE_PROT_READ, ps);
	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t i = 0; i < words; i++)
		bad += p[i] != 0;
	st = test_stats(pool);
	for (unsigned i = 0; i < npools; i++) {
		tide__state_lock(pools[i]);
		nfree += pools[i]->spare.nfree;
		tide__state_unlock(pools[i], false);
	}
	cr_expect_eq(bad, 0, "%zu words of holes read as non-zero", bad);
	cr_expect_eq(st.fills_zero, len / ps, "%llu zero fills of %zu pages",
		     (unsigned long long)st.fills_zero, len / ps);
	cr_expect_eq(st.store_reads, 0);
	cr_expect_eq(nfree, 0, "the spare room holds %u runs of free pages", nfree);
	cr_assert_eq(tide_unmap((void *)p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
}

/*
 * Data and holes interleaved at the file system's block size (4 KiB here),
 * so a 64 KiB page may hold both, its data first, last or in the middle:
 * it must be read. A page reads its data, a hole reads zeros, and only
 * pages with no data at all are zero fills.
 */
static bool block_has_data(size_t block)
{
	return block % 37 == 3 || (block >= 200 && block < 260) || block == 16 * 20 + 15;
}

struct mixed_case {
	size_t page_size;
	int prot;
	unsigned read_ahead;
};

ParameterizedTestParameters(holes, data_between_holes)
{
	static struct mixed_case cases[] = {
		{ 4 * KiB, TIDE_PROT_READ, 0 },
		{ 4 * KiB, TIDE_PROT_READ | TIDE_PROT_WRITE, 0 },
		{ 64 * KiB, TIDE_PROT_READ, 0 },
		{ 64 * KiB, TIDE_PROT_READ | TIDE_PROT_WRITE, 0 },
		{ 4 * KiB, TIDE_PROT_READ, 64 },
		{ 4 * KiB, TIDE_PROT_READ | TIDE_PROT_WRITE, 64 },
	};
	return cr_make_param_array(struct mixed_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct mixed_case *c, holes, data_between_holes)
{
	size_t bs = 4 * KiB, len = 2 * MiB, ps = c->page_size, bwords = bs / 8;
	size_t npages = len / ps, hole_pages = 0, data_pages = 0, bad = 0;
	int fd = test_file(len, 0);
	uint64_t *block = malloc(bs), *p;
	struct tide_options o;
	struct tide_stats st;
	tide_pool *pool;

	cr_assert_not_null(block);
	for (size_t b = 0; b < len / bs; b++) {
		if (!block_has_data(b))
			continue;
		for (size_t i = 0; i < bwords; i++)
			block[i] = test_word(b * bwords + i, 5);
		cr_assert_eq(pwrite(fd, block, bs, (off_t)(b * bs)), (ssize_t)bs);
	}
	cr_assert_eq(fsync(fd), 0);
	if (lseek(fd, 0, SEEK_DATA) != (off_t)(3 * bs) || lseek(fd, 3 * bs, SEEK_HOLE) != (off_t)(4 * bs))
		cr_skip_test("the test file system does not report 4 KiB holes (SEEK_DATA/SEEK_HOLE)");
	for (size_t pg = 0; pg < npages; pg++) {
		bool data = false;

		for (size_t b = pg * ps / bs; b < (pg + 1) * ps / bs; b++)
			data |= block_has_data(b);
		data_pages += data;
		hole_pages += !data;
	}

	test_require_uffd();
	tide_options_init(&o);
	o.budget = 4 * MiB;          /* all of it: each page is filled once */
	o.read_ahead = c->read_ahead;
	o.flush_interval_ms = 0;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	p = tide_map(pool, fd, 0, len, c->prot, ps);
	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t i = 0; i < len / 8; i++)
		bad += p[i] != (block_has_data(i / bwords) ? test_word(i, 5) : 0);
	cr_expect_eq(bad, 0, "%zu words differ from the file", bad);
	st = test_stats(pool);
	cr_expect_eq(st.fills, npages);
	if (!c->read_ahead) {
		cr_expect_eq(st.fills_zero, hole_pages, "%llu zero fills for %zu pages without data",
			     (unsigned long long)st.fills_zero, hole_pages);
		cr_expect_eq(st.store_reads, data_pages, "%llu store reads for %zu pages with data",
			     (unsigned long long)st.store_reads, data_pages);
	} else {
		cr_expect_gt(st.fills_zero, 0);
		cr_expect_leq(st.fills_zero, hole_pages);
	}
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
	free(block);
}

/*
 * Custom stores: in memory, with a hole flag per page that a write clears.
 * Reads are counted per page, so a test sees which pages were read.
 */
struct hole_store {
	char *data;
	size_t size, ps;
	bool *hole;
	unsigned *reads;         /* per page */
	int64_t hole_error;      /* hole() returns this when set */
};

static int hs_read(void *s, struct tide_io *io, void *buf, size_t len, uint64_t off)
{
	struct hole_store *h = s;

	for (uint64_t pg = off / h->ps; pg < (off + len) / h->ps; pg++)
		h->reads[pg]++;
	memcpy(buf, h->data + off, len);
	tide_io_complete(io, (ssize_t)len);
	return 0;
}

static int hs_write(void *s, struct tide_io *io, const void *buf, size_t len, uint64_t off)
{
	struct hole_store *h = s;

	memcpy(h->data + off, buf, len);
	for (uint64_t pg = off / h->ps; pg < (off + len) / h->ps; pg++)
		h->hole[pg] = false;
	tide_io_complete(io, (ssize_t)len);
	return 0;
}

static int hs_flush(void *s, struct tide_io *io)
{
	(void)s;
	tide_io_complete(io, 0);
	return 0;
}

static int64_t hs_hole(void *s, uint64_t off, uint64_t len)
{
	struct hole_store *h = s;
	uint64_t n = 0;

	if (h->hole_error)
		return h->hole_error;
	while (n < len && off + n < h->size && h->hole[(off + n) / h->ps])
		n += h->ps;
	return (int64_t)(n < len ? n : len);
}

static const struct tide_store_ops ops_plain = {
	.read = hs_read, .write = hs_write, .flush = hs_flush,
};
static const struct tide_store_ops ops_holes = {
	.read = hs_read, .write = hs_write, .flush = hs_flush, .hole = hs_hole,
};

/* Pages in runs of 16: the first eight of every other run are holes. */
static void hs_init(struct hole_store *h, size_t size, size_t ps)
{
	memset(h, 0, sizeof(*h));
	h->size = size;
	h->ps = ps;
	h->data = calloc(1, size);
	h->hole = calloc(size / ps, sizeof(bool));
	h->reads = calloc(size / ps, sizeof(unsigned));
	cr_assert(h->data && h->hole && h->reads);
	for (size_t pg = 0; pg < size / ps; pg++) {
		h->hole[pg] = (pg / 16) % 2 == 0 && pg % 16 < 8;
		if (h->hole[pg])
			continue;
		for (size_t i = pg * ps / 8; i < (pg + 1) * ps / 8; i++)
			((uint64_t *)h->data)[i] = test_word(i, 3);
	}
}

static void hs_fini(struct hole_store *h)
{
	free(h->data);
	free(h->hole);
	free(h->reads);
}

static size_t hs_holes(const struct hole_store *h)
{
	size_t n = 0;

	for (size_t pg = 0; pg < h->size / h->ps; pg++)
		n += h->hole[pg];
	return n;
}

/* Read every page once (no read-ahead, no eviction) and check it. */
static struct tide_stats hs_read_all(struct hole_store *h, const struct tide_store_ops *ops)
{
	size_t len = h->size, bad = 0;
	tide_pool *pool = make_pool(TIDE_WRITEBACK_FIXED, 4 * MiB, 0, 1);
	uint64_t *p = tide_map_store(pool, ops, h, 0, len, TIDE_PROT_READ, 0);
	struct tide_stats st;

	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t i = 0; i < len / 8; i++)
		bad += p[i] != (h->hole[i * 8 / h->ps] ? 0 : test_word(i, 3));
	cr_expect_eq(bad, 0, "%zu words differ from the store", bad);
	st = test_stats(pool);
	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	return st;
}

Test(holes, store_without_the_op_reads_everything)
{
	struct hole_store h;
	struct tide_stats st;
	size_t npages = 256;

	hs_init(&h, npages * 4 * KiB, 4 * KiB);
	st = hs_read_all(&h, &ops_plain);
	cr_expect_eq(st.fills_zero, 0);
	cr_expect_eq(st.store_reads, npages);
	for (size_t pg = 0; pg < npages; pg++)
		cr_expect_eq(h.reads[pg], 1, "page %zu read %u times", pg, h.reads[pg]);
	hs_fini(&h);
}

Test(holes, store_holes_are_not_read)
{
	struct hole_store h;
	struct tide_stats st;
	size_t npages = 256, holes;

	hs_init(&h, npages * 4 * KiB, 4 * KiB);
	holes = hs_holes(&h);
	st = hs_read_all(&h, &ops_holes);
	cr_expect_eq(st.fills, npages);
	cr_expect_eq(st.fills_zero, holes, "%llu zero fills for %zu holes",
		     (unsigned long long)st.fills_zero, holes);
	cr_expect_eq(st.store_reads, npages - holes);
	for (size_t pg = 0; pg < npages; pg++)
		cr_expect_eq(h.reads[pg], !h.hole[pg], "page %zu (%s) read %u times", pg,
			     h.hole[pg] ? "hole" : "data", h.reads[pg]);
	hs_fini(&h);
}

Test(holes, store_error_means_read)
{
	struct hole_store h;
	struct tide_stats st;
	size_t npages = 64;

	hs_init(&h, npages * 4 * KiB, 4 * KiB);
	h.hole_error = -EIO;
	st = hs_read_all(&h, &ops_holes);
	cr_expect_eq(st.fills_zero, 0);
	cr_expect_eq(st.store_reads, npages);
	hs_fini(&h);
}

/* One prefetch run over a hole and then data: the hole is installed as
 * zeros and the rest goes in one read, which the hole is not part of. */
Test(holes, run_with_a_leading_hole)
{
	struct hole_store h;
	size_t ps = 4 * KiB, npages = 64, len = npages * ps, bad = 0;
	tide_pool *pool = make_pool(TIDE_WRITEBACK_FIXED, 4 * MiB, 0, 1);
	uint64_t *p;
	struct tide_stats st;

	hs_init(&h, len, ps);
	for (size_t i = 0; i < len / 8; i++)
		((uint64_t *)h.data)[i] = i * 8 / ps < 16 ? 0 : test_word(i, 3);
	for (size_t pg = 0; pg < npages; pg++)
		h.hole[pg] = pg < 16;
	p = tide_map_store(pool, &ops_holes, &h, 0, len, TIDE_PROT_READ, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	cr_assert_eq(tide_prefetch(p, len), 0, "%s", tide_last_error());
	st = test_stats(pool);
	cr_expect_eq(st.fills, npages);
	cr_expect_eq(st.prefetched, npages);
	cr_expect_eq(st.fills_zero, 16);
	cr_expect_eq(st.store_reads, 1, "%llu reads for one run", (unsigned long long)st.store_reads);
	for (size_t pg = 0; pg < npages; pg++)
		cr_expect_eq(h.reads[pg], pg >= 16, "page %zu read %u times", pg, h.reads[pg]);
	for (size_t i = 0; i < len / 8; i++)
		bad += p[i] != (i * 8 / ps < 16 ? 0 : test_word(i, 3));
	cr_expect_eq(bad, 0);
	cr_expect_eq(test_stats(pool).faults, 0, "a prefetched page faulted");
	cr_assert_eq(tide_unmap(p), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	hs_fini(&h);
}

/* Holes of a writable store, written and evicted: each page is asked about
 * afresh, so what was written reads back, and the store got every byte. */
Test(holes, store_holes_written_and_evicted)
{
	struct hole_store h;
	size_t ps = 4 * KiB, npages = 1024, len = npages * ps, words = ps / 8, bad = 0;
	tide_pool *pool = make_pool(TIDE_WRITEBACK_FIXED, 512 * KiB, 0, 1);
	uint64_t *p, *model = malloc(len);
	struct tide_stats a, b;

	cr_assert_not_null(model);
	hs_init(&h, len, ps);
	memcpy(model, h.data, len);
	p = tide_map_store(pool, &ops_holes, &h, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(p, "%s", tide_last_error());
	for (size_t pg = 0; pg < npages; pg += 3) {
		p[pg * words + 1] = mark(pg);
		model[pg * words + 1] = mark(pg);
	}
	a = test_stats(pool);
	cr_expect_gt(a.fills_zero, 0);
	cr_expect_gt(a.evictions_dirty, 0);
	for (size_t i = 0; i < len / 8; i++)
		bad += p[i] != model[i];
	cr_expect_eq(bad, 0, "%zu words read back wrong", bad);
	b = test_stats(pool);
	cr_expect_gt(b.fills_zero, a.fills_zero);
	cr_assert_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_expect_eq(memcmp(h.data, model, len), 0, "the store differs from the model after unmap");
	for (size_t pg = 0; pg < npages; pg++)
		if (h.hole[pg])
			cr_expect_eq(h.reads[pg], 0, "hole page %zu was read", pg);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	hs_fini(&h);
	free(model);
}
