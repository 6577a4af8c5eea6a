/* tide itself: eviction, flush, prefetch and unmap under every write-back path never hang and never lose a write,
 * over a seeded file and over a sparse one (holes filled as zeros, written, evicted). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "tide.h"

#define WRITERS   2
#define SEED      0x7e57c0de
#define WATCHDOG_MS 150000

/* Written by the child, read by the parent after a hang: where it was. */
struct status {
	char phase[96];
	char op[WRITERS + 1][64];
	char failure[256];
};

struct run {
	enum tide_writeback wb;
	size_t page_size;
	size_t file_size;
	size_t budget;
	unsigned writes;          /* per writer */
	bool sparse;              /* the file has no data: every first fill is a hole's */
	bool seq;                 /* the writers walk the pages in order (a sequential
				   * writer's runs: direct-path holes take seeded pages) */
};

struct ctx {
	const struct run *run;
	struct status *st;
	char *base;
	uint64_t npages;
	uint64_t *model;          /* [page][writer]: the word each writer last stored */
	atomic_int writers_left;
	atomic_int failed;
};

#define FAIL(c, ...) do { \
		snprintf((c)->st->failure, sizeof((c)->st->failure), __VA_ARGS__); \
		atomic_store(&(c)->failed, 1); \
	} while (0)

/* Writer w owns word w of every page: pages are shared between writers (so
 * write-backs race with writes from the other thread) while the model stays
 * exact. */
static uint64_t *word(struct ctx *c, uint64_t page, unsigned w)
{
	return (uint64_t *)(c->base + page * c->run->page_size) + w;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* What word i of a page must hold: the writer's last store, else the
 * seed's word (zero in a sparse file). */
static uint64_t want(const struct ctx *c, uint64_t page, size_t i)
{
	if (i < WRITERS && c->model[page * WRITERS + i])
		return c->model[page * WRITERS + i];
	return c->run->sparse ? 0 : test_word(page * (c->run->page_size / 8) + i, SEED);
}

struct writer_arg { struct ctx *c; unsigned w; };

static void *writer(void *arg)
{
	struct writer_arg *a = arg;
	struct ctx *c = a->c;
	uint64_t s = 0x9e3779b97f4a7c15ull * (a->w + 1);

	for (unsigned i = 0; i < c->run->writes && !atomic_load(&c->failed); i++) {
		uint64_t page = c->run->seq ? i % c->npages : rnd(&s) % c->npages;
		/* Sequential writers (both walk the pages in order, each its
		 * own word) read back their previous page: a read far away
		 * would fault and end the run. */
		uint64_t check = c->run->seq ? (page + c->npages - 1) % c->npages
					     : rnd(&s) % c->npages;
		uint64_t v = ((uint64_t)(i + 1) << 8) | a->w;

		snprintf(c->st->op[a->w], sizeof(c->st->op[0]), "write %u page %llu", i,
			 (unsigned long long)page);
		*word(c, page, a->w) = v;
		c->model[page * WRITERS + a->w] = v;
		/* Read back one of my words from a page that may have been evicted. */
		if (*word(c, check, a->w) != want(c, check, a->w)) {
			FAIL(c, "writer %u: page %llu word lost during the run: %#llx, expected %#llx",
			     a->w, (unsigned long long)check, (unsigned long long)*word(c, check, a->w),
			     (unsigned long long)want(c, check, a->w));
			break;
		}
	}
	atomic_fetch_sub(&c->writers_left, 1);
	return NULL;
}

/* Flushes and prefetches of random ranges while the writers run. */
static void *maintainer(void *arg)
{
	struct ctx *c = arg;
	size_t ps = c->run->page_size;
	uint64_t s = 12345;
	unsigned n = 0;

	while (atomic_load(&c->writers_left) > 0 && !atomic_load(&c->failed)) {
		uint64_t first = rnd(&s) % c->npages, len = 1 + rnd(&s) % 8;
		int ret;

		if (first + len > c->npages)
			len = c->npages - first;
		snprintf(c->st->op[WRITERS], sizeof(c->st->op[0]), "%s %u pages %llu+%llu",
			 n % 2 ? "prefetch" : "flush", n, (unsigned long long)first,
			 (unsigned long long)len);
		ret = n % 2 ? tide_prefetch(c->base + first * ps, len * ps)
			    : tide_flush(c->base + first * ps, len * ps);
		if (ret < 0) {
			FAIL(c, "%s of pages %llu+%llu failed: %s (%s)", n % 2 ? "prefetch" : "flush",
			     (unsigned long long)first, (unsigned long long)len, strerror(-ret),
			     tide_last_error());
			break;
		}
		n++;
	}
	return NULL;
}

/* Every word of the region or file: the writers' words from the model, the
 * rest as the seeded file had them. Returns the first bad page or -1. */
static int64_t verify(struct ctx *c, const uint64_t *words, uint64_t page0, uint64_t npages)
{
	size_t per = c->run->page_size / 8;

	for (uint64_t p = 0; p < npages; p++) {
		uint64_t page = page0 + p;

		for (size_t i = 0; i < per; i++)
			if (words[p * per + i] != want(c, page, i))
				return (int64_t)page;
	}
	return -1;
}

static int phase(struct ctx *c, const char *what)
{
	snprintf(c->st->phase, sizeof(c->st->phase), "%s", what);
	return atomic_load(&c->failed);
}

static void workload(void *arg)
{
	struct ctx c = { .st = arg };
	const struct run *r = (const struct run *)(c.st + 1);
	pthread_t t[WRITERS + 1];
	struct writer_arg wa[WRITERS];
	struct tide_options o;
	struct tide_stats s;
	uint64_t *buf;
	tide_pool *pool;
	int fd, ret;
	int64_t bad;

	c.run = r;
	c.npages = r->file_size / r->page_size;
	c.model = calloc(c.npages * WRITERS, sizeof(uint64_t));
	phase(&c, "create the pool");
	fd = test_file(r->file_size, r->sparse ? 0 : SEED);
	tide_options_init(&o);
	o.budget = r->budget;
	o.writeback = r->wb;
	o.flush_interval_ms = 50;     /* the background write-back timer runs too */
	ret = tide_pool_create(&pool, &o);
	if (ret < 0) {
		FAIL(&c, "tide_pool_create: %s (%s)", strerror(-ret), tide_last_error());
		_exit(10);
	}
	c.base = tide_map(pool, fd, 0, r->file_size, TIDE_PROT_READ | TIDE_PROT_WRITE, r->page_size);
	if (!c.base) {
		FAIL(&c, "tide_map: %s (%s)", strerror(errno), tide_last_error());
		_exit(11);
	}
	atomic_store(&c.writers_left, WRITERS);
	phase(&c, "app threads write while pages are evicted, flushed and prefetched");
	for (unsigned w = 0; w < WRITERS; w++) {
		wa[w] = (struct writer_arg){ &c, w };
		pthread_create(&t[w], NULL, writer, &wa[w]);
	}
	pthread_create(&t[WRITERS], NULL, maintainer, &c);
	for (unsigned w = 0; w <= WRITERS; w++)
		pthread_join(t[w], NULL);
	if (atomic_load(&c.failed))
		_exit(12);

	phase(&c, "flush the whole region");
	ret = tide_flush(c.base, 0);
	if (ret < 0) {
		FAIL(&c, "tide_flush(whole region): %s (%s)", strerror(-ret), tide_last_error());
		_exit(13);
	}
	tide_pool_stats(pool, &s);
	if (s.evictions_dirty == 0) {
		FAIL(&c, "no dirty page was evicted: the eviction write-back path did not run");
		_exit(14);
	}
	if (s.writeback != (r->wb == TIDE_WRITEBACK_FIXED ? TIDE_WRITEBACK_FIXED : TIDE_WRITEBACK_DIRECT)) {
		/* auto must pick direct here: the probe measured it safe on 6.18. */
		FAIL(&c, "write-back in use is %s for %s", tide_writeback_name(s.writeback),
		     tide_writeback_name(r->wb));
		_exit(15);
	}
	if (r->sparse && s.fills_zero == 0) {
		FAIL(&c, "no page of the sparse file was filled as a hole");
		_exit(20);
	}
	phase(&c, "read every page back through the mapping (evicting again)");
	bad = verify(&c, (const uint64_t *)c.base, 0, c.npages);
	if (bad >= 0) {
		FAIL(&c, "page %lld differs from the model through the mapping", (long long)bad);
		_exit(16);
	}
	phase(&c, "unmap");
	ret = tide_unmap(c.base);
	if (ret < 0) {
		FAIL(&c, "tide_unmap: %s (%s)", strerror(-ret), tide_last_error());
		_exit(17);
	}
	phase(&c, "compare the file with the model");
	buf = malloc(r->page_size);
	for (uint64_t p = 0; p < c.npages; p++) {
		test_pread(fd, buf, r->page_size, (off_t)(p * r->page_size));
		if (verify(&c, buf, p, 1) >= 0) {
			FAIL(&c, "page %llu of the file lost a write", (unsigned long long)p);
			_exit(18);
		}
	}
	phase(&c, "destroy the pool");
	ret = tide_pool_destroy(pool);
	if (ret < 0) {
		FAIL(&c, "tide_pool_destroy: %s", strerror(-ret));
		_exit(19);
	}
	free(buf);
	free(c.model);
	close(fd);
}

ParameterizedTestParameters(tide, never_hangs_never_loses_a_write)
{
	static struct run runs[13];
	static const enum tide_writeback wbs[] = { TIDE_WRITEBACK_FIXED, TIDE_WRITEBACK_DIRECT,
						   TIDE_WRITEBACK_AUTO };
	int n = 0;

	for (int i = 0; i < 3; i++) {
		runs[n++] = (struct run){ wbs[i], 4 * KiB, 16 * MiB, 1 * MiB, 12000 };
		runs[n++] = (struct run){ wbs[i], 64 * KiB, 32 * MiB, 2 * MiB, 6000 };
		runs[n++] = (struct run){ wbs[i], 2 * MiB, 48 * MiB, 8 * MiB, 300 };
	}
	runs[n++] = (struct run){ TIDE_WRITEBACK_FIXED, 4 * KiB, 16 * MiB, 1 * MiB, 12000, true };
	runs[n++] = (struct run){ TIDE_WRITEBACK_DIRECT, 4 * KiB, 16 * MiB, 1 * MiB, 12000, true };
	runs[n++] = (struct run){ TIDE_WRITEBACK_DIRECT, 64 * KiB, 32 * MiB, 2 * MiB, 6000, true };
	runs[n++] = (struct run){ TIDE_WRITEBACK_DIRECT, 64 * KiB, 32 * MiB, 8 * MiB, 6000, true, true };
	return cr_make_param_array(struct run, runs, n);
}

ParameterizedTest(struct run *r, tide, never_hangs_never_loses_a_write, .timeout = 300)
{
	struct status *st;
	int ret;

	test_require_uffd();
	/* The child's status and its parameters, shared across fork(). */
	st = mmap(NULL, sizeof(*st) + sizeof(*r), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(st != MAP_FAILED);
	memset(st, 0, sizeof(*st));
	memcpy(st + 1, r, sizeof(*r));
	ret = test_in_child(workload, st, WATCHDOG_MS);
	cr_assert_neq(ret, -1, "HUNG (write-back %s, %zu-byte pages) in: %s; writers: [%s] [%s]; "
		      "maintainer: [%s]", tide_writeback_name(r->wb), r->page_size, st->phase,
		      st->op[0], st->op[1], st->op[WRITERS]);
	cr_assert_eq(ret, 0, "write-back %s, %zu-byte pages: exit %d in '%s': %s",
		     tide_writeback_name(r->wb), r->page_size, ret, st->phase, st->failure);
	munmap(st, sizeof(*st) + sizeof(*r));
}
