/* Bad input: every entry point refuses it with a clear error and leaves
 * nothing mapped, open or registered behind. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "tide.h"

static int count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	int n = 0, c;

	cr_assert_not_null(f);
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static tide_pool *pool;
static int maps_before, fds_before;

static void setup(void)
{
	struct tide_options o;
	int ret;

	test_require_uffd();
	tide_options_init(&o);
	o.budget = 1 * MiB;
	o.page_size = 4 * KiB;
	ret = tide_pool_create(&pool, &o);
	cr_assert_eq(ret, 0, "tide_pool_create: %s", tide_last_error());
	maps_before = count_lines("/proc/self/maps");
	fds_before = test_dir_entries("/proc/self/fd");
}

static void teardown(void)
{
	if (pool)
		cr_expect_eq(tide_pool_destroy(pool), 0, "%s", tide_last_error());
}

/* A refused map returns NULL with `err` and leaves no mapping or fd behind. */
static void expect_refused(void *addr, int err, const char *what)
{
	int e = errno;

	cr_expect_null(addr, "%s was accepted", what);
	cr_expect_eq(e, err, "%s: errno %d (%s), want %d; %s", what, e, strerror(e), err,
		     tide_last_error());
#ifndef __SANITIZE_ADDRESS__
	/* (AddressSanitizer's allocator maps memory of its own as it goes.) */
	cr_expect_eq(count_lines("/proc/self/maps"), maps_before, "%s left a mapping behind", what);
#endif
	cr_expect_eq(test_dir_entries("/proc/self/fd"), fds_before, "%s left an fd open", what);
}

TestSuite(badinput, .init = setup, .fini = teardown);

Test(badinput, geometry)
{
	int fd = test_file(1 * MiB, 1);

	fds_before = test_dir_entries("/proc/self/fd");
	expect_refused(tide_map(pool, fd, 100, 64 * KiB, TIDE_PROT_READ, 0), EINVAL, "unaligned offset");
	expect_refused(tide_map(pool, fd, 0, 5000, TIDE_PROT_READ, 0), EINVAL, "unaligned length");
	expect_refused(tide_map(pool, fd, 0, 0, TIDE_PROT_READ, 0), EINVAL, "zero length");
	expect_refused(tide_map(pool, fd, -4096, 4096, TIDE_PROT_READ, 0), EINVAL, "negative offset");
	expect_refused(tide_map(pool, fd, 0, 96 * KiB, TIDE_PROT_READ, 12 * KiB), EINVAL,
		       "page size not a power of two");
	expect_refused(tide_map(pool, fd, 0, 4 * MiB, TIDE_PROT_READ, 4 * MiB), EINVAL,
		       "page size above 2 MiB");
	expect_refused(tide_map(pool, fd, 0, 1 * MiB, TIDE_PROT_READ, 512 * KiB), ENOMEM,
		       "budget of two pages");
	expect_refused(tide_map(pool, fd, 0, 64 * KiB, 0, 0), EINVAL, "no protection");
	expect_refused(tide_map(pool, fd, 0, 64 * KiB, TIDE_PROT_READ | 8, 0), EINVAL, "unknown prot bit");
	expect_refused(tide_map(NULL, fd, 0, 64 * KiB, TIDE_PROT_READ, 0), EINVAL, "NULL pool");
	close(fd);
}

Test(badinput, files)
{
	int fd = test_file(64 * KiB, 1), ro, dir;
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ro = open(path, O_RDONLY);
	dir = open("/", O_RDONLY | O_DIRECTORY);
	cr_assert(ro >= 0 && dir >= 0);
	fds_before = test_dir_entries("/proc/self/fd");
	expect_refused(tide_map(pool, ro, 0, 64 * KiB, TIDE_PROT_READ | TIDE_PROT_WRITE, 0), EACCES,
		       "write mapping of a read-only fd");
	expect_refused(tide_map(pool, ro, 0, 128 * KiB, TIDE_PROT_READ, 0), ENXIO,
		       "read-only mapping past the end of the file");
	expect_refused(tide_map(pool, 9999, 0, 64 * KiB, TIDE_PROT_READ, 0), EBADF, "closed fd");
	expect_refused(tide_map(pool, dir, 0, 64 * KiB, TIDE_PROT_READ, 0), EINVAL, "a directory");
	close(ro);
	close(dir);
	close(fd);
}

Test(badinput, partial_last_page_reads_zeros)
{
	int fd = test_file(0, 0);
	unsigned char *p;

	cr_assert_eq(pwrite(fd, "tide", 4, 0), 4);
	p = tide_map(pool, fd, 0, 64 * KiB, TIDE_PROT_READ, 64 * KiB);
	cr_assert_not_null(p, "%s", tide_last_error());
	cr_expect_eq(memcmp(p, "tide", 4), 0);
	for (size_t i = 4; i < 64 * KiB; i++)
		if (p[i])
			cr_assert_fail("byte %zu past the end of the file is %d", i, p[i]);
	cr_expect_eq(tide_unmap(p), 0);
	close(fd);
}

Test(badinput, lifetime)
{
	int fd = test_file(256 * KiB, 1);
	char *p = tide_map(pool, fd, 0, 256 * KiB, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	char local;

	cr_assert_not_null(p, "%s", tide_last_error());
	cr_expect_eq(tide_pool_destroy(pool), -EBUSY, "destroying a pool with a live region");
	cr_expect_eq(tide_unmap(&local), -EINVAL, "unmapping a stack address");
	cr_expect_eq(tide_unmap(p + 64 * KiB), -EINVAL, "unmapping from inside a region");
	cr_expect_eq(tide_flush(p, 512 * KiB), -EINVAL, "flushing past the end of the region");
	cr_expect_eq(tide_prefetch(&local, 4096), -EINVAL, "prefetching a stack address");
	cr_expect_eq(tide_unmap(p), 0, "%s", tide_last_error());
	cr_expect_eq(tide_unmap(p), -EINVAL, "unmapping twice");
	/* The range is gone: the kernel reports it as unmapped. */
	cr_expect_eq(msync(p, 4096, MS_ASYNC), -1);
	cr_expect_eq(errno, ENOMEM);
	close(fd);
}

Test(badinput, options)
{
	struct tide_options o;
	tide_pool *q = NULL;

	tide_options_init(&o);
	o.page_size = 12 * KiB;
	cr_expect_eq(tide_pool_create(&q, &o), -EINVAL, "page size not a power of two");
	tide_options_init(&o);
	o.budget = 8 * KiB;
	cr_expect_eq(tide_pool_create(&q, &o), -EINVAL, "a pool of two pages");
	cr_expect(strstr(tide_last_error(), "fewer than") != NULL, "message: %s", tide_last_error());
	tide_options_init(&o);
	o.low_water = 95;
	cr_expect_eq(tide_pool_create(&q, &o), -EINVAL, "low watermark above high");
	cr_expect_eq(tide_pool_create(NULL, NULL), -EINVAL);
	cr_expect_null(q);
}

static void unprivileged(void *arg)
{
	tide_pool *q;
	int ret;

	(void)arg;
	if (setgid(65534) < 0 || setuid(65534) < 0)
		_exit(3);
	ret = tide_pool_create(&q, NULL);
	if (ret != -EPERM)
		_exit(1);
	if (!strstr(tide_last_error(), "/dev/userfaultfd") ||
	    !strstr(tide_last_error(), "vm.unprivileged_userfaultfd"))
		_exit(2);
	_exit(0);
}

Test(badinput, no_userfaultfd_permission)
{
	FILE *f = fopen("/proc/sys/vm/unprivileged_userfaultfd", "r");
	int v = -1, st;

	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = -1;
		fclose(f);
	}
	if (geteuid() != 0)
		cr_skip_test("needs root to drop to an unprivileged user");
	if (v != 0)
		cr_skip_test("vm.unprivileged_userfaultfd is %d: unprivileged users may use it", v);
	st = test_in_child(unprivileged, NULL, 20000);
	cr_expect_neq(st, 3, "could not drop privileges");
	cr_expect_neq(st, 1, "tide_pool_create did not return -EPERM for an unprivileged user");
	cr_expect_neq(st, 2, "the error message does not say how to grant access");
	cr_expect_eq(st, 0, "child status %d", st);
}
