/* fork(): a child never sees a region's evicted pages as zeros, and the
 * parent's data survives the child. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "tide.h"

static uint64_t *region;

static void child_reads(void *arg)
{
	volatile uint64_t v;

	(void)arg;
	test_default_signal(SIGSEGV);
	v = region[0];   /* the range is not inherited: SIGSEGV, never zeros */
	_exit(v == 0 ? 1 : 2);
}

static void child_flushes(void *arg)
{
	(void)arg;
	_exit(tide_flush(region, 0) == -ECHILD ? 0 : 1);
}

Test(fork, child_cannot_see_stale_pages)
{
	struct tide_options o;
	tide_pool *pool;
	size_t len = 4 * MiB;
	int fd = test_file(len, 11), st;

	test_require_uffd();
	tide_options_init(&o);
	o.budget = 1 * MiB;
	o.page_size = 4 * KiB;
	cr_assert_eq(tide_pool_create(&pool, &o), 0);
	region = tide_map(pool, fd, 0, len, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	cr_assert_not_null(region);
	for (size_t i = 0; i < len / 8; i += 512)
		region[i] = ~test_word(i, 11);   /* dirty every page; most get evicted */

	st = test_in_child(child_reads, NULL, 20000);
	cr_expect_eq(st, 128 + SIGSEGV, "child status %d (1 means it read zeros)", st);
	st = test_in_child(child_flushes, NULL, 20000);
	cr_expect_eq(st, 0, "a child's tide_flush did not fail with ECHILD (status %d)", st);

	for (size_t i = 0; i < len / 8; i += 512)
		cr_assert_eq(region[i], ~test_word(i, 11), "word %zu changed across fork", i);
	cr_assert_eq(tide_unmap(region), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	close(fd);
}
