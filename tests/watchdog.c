/* The debug watchdog reports a service loop stuck with faults pending. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "tide.h"

/* A store whose reads never complete until released: the fault stays
 * pending and the loop has nothing to do. */
static struct tide_io *held;

static int stuck_read(void *s, struct tide_io *io, void *buf, size_t len, uint64_t off)
{
	(void)s, (void)buf, (void)len, (void)off;
	held = io;
	return 0;
}

static const struct tide_store_ops stuck_ops = { .read = stuck_read };

static void *reader(void *arg)
{
	return (void *)(uintptr_t)((volatile char *)arg)[0];
}

Test(watchdog, reports_stuck_loop, .init = cr_redirect_stderr, .timeout = 30)
{
	struct tide_options o;
	tide_pool *pool;
	char *p, line[512];
	bool reported = false;
	pthread_t t;
	FILE *err;

	test_require_uffd();
	tide_options_init(&o);
	o.budget = 1 * MiB;
	o.page_size = 4 * KiB;
	o.watchdog_s = 1;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	p = tide_map_store(pool, &stuck_ops, NULL, 0, 64 * KiB, TIDE_PROT_READ, 0);
	cr_assert_not_null(p);
	/* The fill never completes, so this reader stays blocked... */
	cr_assert_eq(pthread_create(&t, NULL, reader, p), 0);
	/* ...and a second fault on another page waits in the uffd. */
	cr_assert_eq(pthread_create(&t, NULL, reader, p + 8192), 0);
	/* Until the watchdog speaks (within ~1.25 s); the test timeout bounds it. */
	err = cr_get_redirected_stderr();
	while (!reported) {
		if (!fgets(line, sizeof(line), err)) {
			clearerr(err);
			continue;
		}
		reported = strstr(line, "watchdog") && strstr(line, "not moved");
	}
	cr_expect(reported);
	_exit(0);   /* the blocked readers cannot be joined; the child ends here */
}
