/* Kernel layer: what this kernel does when a thread touches its own uffd-WP'd page. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <string.h>

#include "common.h"
#include "hazard.h"
#include "uffd.h"

#define TIMEOUT_MS 3000

/*
 * Measured on Linux 6.18 (x86-64 VM, THP madvise) with this file's cases; the
 * same in all four set-ups (4 KiB, 4 KiB with a live fork() child sharing the
 * page, 2 MiB THP, THP shared with a fork() child). C = completes, B = blocks.
 * A kernel that behaves differently fails here, by name.
 */
static const struct {
	enum tide__hazard h;
	char measured;
	uint32_t event;       /* the pending uffd message for B */
} table[] = {
	{ TIDE__HZ_BUFFERED_WRITE, 'C', 0 },
	{ TIDE__HZ_DIRECT_WRITE, 'C', 0 },
	{ TIDE__HZ_URING_WRITE, 'C', 0 },
	{ TIDE__HZ_URING_WRITE_FIXED, 'C', 0 },
	{ TIDE__HZ_REGISTER_BUFFERS, 'B', UFFD_EVENT_PAGEFAULT },
	{ TIDE__HZ_DIRECT_READ, 'B', UFFD_EVENT_PAGEFAULT },
	{ TIDE__HZ_URING_READ, 'B', UFFD_EVENT_PAGEFAULT },
	{ TIDE__HZ_VM_READV, 'C', 0 },
	{ TIDE__HZ_VM_WRITEV, 'B', UFFD_EVENT_PAGEFAULT },
	{ TIDE__HZ_VMSPLICE, 'C', 0 },
	{ TIDE__HZ_DONTNEED, 'C', 0 },
	{ TIDE__HZ_DONTNEED_REMOVE, 'B', UFFD_EVENT_REMOVE },
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

struct hz_case {
	unsigned row;
	unsigned mode;
};

static void run_case(const struct hz_case *c, unsigned extra_mode)
{
	enum tide__hazard h = table[c->row].h;
	unsigned mode = c->mode | extra_mode;
	struct tide__hazard_result r;
	int ret;

	test_require_uffd();
	ret = tide__hazard_run(h, mode, getenv("TIDE_TEST_DIR"), TIMEOUT_MS, &r);
	cr_assert_eq(ret, 0, "%s (%s): the probe itself failed: %s", tide__hazard_name(h),
		     tide__hazard_mode_name(mode), strerror(-ret));
	if (r.outcome == TIDE__HZ_SKIPPED)
		cr_skip_test("%s (%s) cannot be set up here: %s", tide__hazard_name(h),
			     tide__hazard_mode_name(mode), r.detail);
	cr_log_info("%-18s %-9s %-9s %6llu us  %s", tide__hazard_name(h), tide__hazard_mode_name(mode),
		    tide__hazard_outcome_name(r.outcome), (unsigned long long)r.elapsed_us, r.detail);
	if (mode & TIDE__HZ_THP)
		cr_assert(r.thp, "%s: the THP case ran on small pages", tide__hazard_name(h));

	if (table[c->row].measured == 'C') {
		cr_assert_eq(r.outcome, TIDE__HZ_COMPLETES,
			     "%s (%s): measured to complete on 6.18, here it %s: %s",
			     tide__hazard_name(h), tide__hazard_mode_name(mode),
			     tide__hazard_outcome_name(r.outcome), r.detail);
		if (h != TIDE__HZ_DONTNEED && h != TIDE__HZ_REGISTER_BUFFERS) {
			cr_assert_eq(r.data_ok, 1, "%s (%s): the wrong bytes moved", tide__hazard_name(h),
				     tide__hazard_mode_name(mode));
			/* A page that lost its WP bit would let the app write unseen. */
			cr_assert_eq(r.wp_after, 1, "%s (%s): the page lost its write protection",
				     tide__hazard_name(h), tide__hazard_mode_name(mode));
		}
	} else {
		cr_assert_eq(r.outcome, TIDE__HZ_BLOCKS,
			     "%s (%s): measured to block on 6.18, here it %s: %s",
			     tide__hazard_name(h), tide__hazard_mode_name(mode),
			     tide__hazard_outcome_name(r.outcome), r.detail);
		if (!(mode & TIDE__HZ_NOWATCH)) {
			cr_assert(r.event_seen, "%s: blocked without a uffd message: %s",
				  tide__hazard_name(h), r.detail);
			cr_assert_eq(r.event, table[c->row].event, "%s: pending event %u",
				     tide__hazard_name(h), r.event);
			if (r.event == UFFD_EVENT_PAGEFAULT)
				cr_assert(r.fault_flags & UFFD_PAGEFAULT_FLAG_WP,
					  "%s: a %s fault, expected write-protect", tide__hazard_name(h),
					  "missing");
		} else {
			/* Only the parent's timeout saw it: it must have waited, and the
			 * stuck thread sleeps in userfaultfd code. */
			cr_assert_geq(r.elapsed_us, (uint64_t)TIMEOUT_MS * 1000, "%s: blocked early?",
				      tide__hazard_name(h));
			cr_assert(strstr(r.detail, "userfault"), "%s: stuck elsewhere: %s",
				  tide__hazard_name(h), r.detail);
		}
	}
}

ParameterizedTestParameters(kernel, hazard)
{
	static struct hz_case cases[NTABLE * TIDE__HZ_NMODES];

	for (unsigned m = 0; m < TIDE__HZ_NMODES; m++)
		for (unsigned i = 0; i < NTABLE; i++)
			cases[m * NTABLE + i] = (struct hz_case){ i, m };
	return cr_make_param_array(struct hz_case, cases, NTABLE * TIDE__HZ_NMODES);
}

ParameterizedTest(struct hz_case *c, kernel, hazard, .timeout = 60)
{
	run_case(c, 0);
}

/* The brief's own detector: no watcher in the child, only the parent's
 * pidfd timeout. It must agree with the watcher on every blocking case, and
 * a completing case must not be mistaken for a hang. */
ParameterizedTestParameters(kernel, timeout_backstop)
{
	static struct hz_case cases[] = {
		{ 1, 0 },  /* direct-write completes */
		{ 4, 0 },  /* register-buffers */
		{ 5, 0 },  /* direct-read */
		{ 6, 0 },  /* uring-read: the wait is in an io_uring worker or inline */
		{ 8, 1 },  /* vm-writev with a fork child */
		{ 11, 0 }, /* dontneed-remove */
	};
	return cr_make_param_array(struct hz_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct hz_case *c, kernel, timeout_backstop, .timeout = 60)
{
	run_case(c, TIDE__HZ_NOWATCH);
}

/* The library's expectation table is the measured one, and every case has
 * a name, a description and the write-back paths that use it. */
Test(kernel, expected_table_matches_measurement)
{
	cr_assert_eq(NTABLE, TIDE__HZ_COUNT, "a hazard is missing from this test's table");
	for (unsigned i = 0; i < NTABLE; i++) {
		enum tide__hazard h = table[i].h;

		for (unsigned m = 0; m < TIDE__HZ_NMODES; m++)
			cr_assert_eq(tide__hazard_expected(h, m),
				     table[i].measured == 'C' ? TIDE__HZ_COMPLETES : TIDE__HZ_BLOCKS,
				     "%s: hazard.c's expectation differs from the measurement",
				     tide__hazard_name(h));
		cr_assert(strcmp(tide__hazard_name(h), "?") && strlen(tide__hazard_description(h)) > 10);
		/* No write-back path may use an operation that blocks. */
		if (tide__hazard_paths(h))
			cr_assert_eq(table[i].measured, 'C', "%s is on a write-back path but blocks",
				     tide__hazard_name(h));
	}
}

Test(kernel, bad_arguments)
{
	struct tide__hazard_result r;

	cr_assert_eq(tide__hazard_run(TIDE__HZ_COUNT, 0, NULL, 100, &r), -EINVAL);
	cr_assert_eq(tide__hazard_run(TIDE__HZ_DIRECT_WRITE, 0x80, NULL, 100, &r), -EINVAL);
	cr_assert_eq(tide__hazard_run(TIDE__HZ_DIRECT_WRITE, 0, NULL, 0, &r), -EINVAL);
	cr_assert_eq(tide__hazard_run(TIDE__HZ_DIRECT_WRITE, 0, NULL, 100, NULL), -EINVAL);
}

/* A directory without O_DIRECT is reported as a skip with the reason, not as
 * a kernel behaviour. /proc accepts no files at all. */
Test(kernel, unusable_directory_is_a_skip)
{
	struct tide__hazard_result r;

	test_require_uffd();
	cr_assert_eq(tide__hazard_run(TIDE__HZ_DIRECT_WRITE, 0, "/proc", TIMEOUT_MS, &r), 0);
	cr_assert_eq(r.outcome, TIDE__HZ_SKIPPED, "outcome %s: %s", tide__hazard_outcome_name(r.outcome),
		     r.detail);
	cr_assert(r.err < 0 && strstr(r.detail, "directory"), "%s", r.detail);
}
