/* The write-back `auto` probe: its answer on this kernel and its per-boot cache. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common.h"
#include "hazard.h"
#include "internal.h"

static char xdg[256], cache_path[512];

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static void cleanup(void)
{
	if (xdg[0])
		nftw(xdg, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* Each test gets its own cache directory through XDG_RUNTIME_DIR (Criterion
 * runs every test in its own process, so the environment does not leak). */
static void fresh_cache(void)
{
	test_require_uffd();
	snprintf(xdg, sizeof(xdg), "/tmp/tide-probe-test-XXXXXX");
	cr_assert(mkdtemp(xdg), "mkdtemp: %s", strerror(errno));
	atexit(cleanup);
	setenv("XDG_RUNTIME_DIR", xdg, 1);
	unsetenv("TIDE_PROBE_CACHE");
	cr_assert_eq(tide__probe_cache_path(cache_path, sizeof(cache_path)), 0);
	cr_assert(strstr(cache_path, xdg) == cache_path, "cache at %s", cache_path);
}

static void key(char *buf, size_t len)
{
	struct utsname u;
	char boot[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

	cr_assert(f && fgets(boot, sizeof(boot), f));
	fclose(f);
	boot[strcspn(boot, "\n")] = 0;
	uname(&u);
	snprintf(buf, len, "%s %s", u.release, boot);
}

static void forge(const char *text, mode_t mode)
{
	char dir[300];
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/tide", xdg);
	mkdir(dir, 0700);
	f = fopen(cache_path, "w");
	cr_assert(f);
	fputs(text, f);
	fclose(f);
	chmod(cache_path, mode);
}

static int probe(char *why, size_t len)
{
	int ret = tide__probe_direct_write(why, len);

	cr_log_info("probe: %d: %s", ret, why);
	return ret;
}

/* Measured on Linux 6.18: O_DIRECT and io_uring writes from a WP'd page
 * complete, with or without a fork() child sharing it. */
Test(probe, direct_write_is_safe_on_this_kernel)
{
	char why[256];

	fresh_cache();
	setenv("TIDE_PROBE_CACHE", "0", 1);
	cr_assert_eq(probe(why, sizeof(why)), 1, "%s", why);
	cr_assert(strlen(why) > 10 && !strstr(why, "cached"), "%s", why);
	cr_assert_eq(access(cache_path, F_OK), -1, "TIDE_PROBE_CACHE=0 wrote a cache");
}

Test(probe, second_call_is_served_from_the_cache)
{
	char why[256], k[200], text[1024] = "";
	FILE *f;

	fresh_cache();
	cr_assert_eq(probe(why, sizeof(why)), 1, "%s", why);
	cr_assert(!strstr(why, "cached"));
	f = fopen(cache_path, "r");
	cr_assert(f, "no cache file at %s", cache_path);
	cr_assert(fread(text, 1, sizeof(text) - 1, f) > 0);
	fclose(f);
	key(k, sizeof(k));
	cr_assert(strstr(text, k), "cache not keyed by release and boot id: %s", text);
	cr_assert_eq(probe(why, sizeof(why)), 1);
	cr_assert(strstr(why, "cached"), "second answer not from the cache: %s", why);
}

/* A valid entry is believed: a forged "unsafe" for this boot comes back. */
Test(probe, valid_entry_is_used)
{
	char why[256], k[200], text[512];

	fresh_cache();
	key(k, sizeof(k));
	snprintf(text, sizeof(text), "tide-probe 1\nkey %s\ndirect_write unsafe\nwhy forged\n", k);
	forge(text, 0600);
	cr_assert_eq(probe(why, sizeof(why)), 0, "%s", why);
	cr_assert(strstr(why, "forged"), "%s", why);
}

static void assert_ignored(const char *text, mode_t mode, const char *what)
{
	char why[256];

	forge(text, mode);
	cr_assert_eq(probe(why, sizeof(why)), 1, "%s cache entry used: %s", what, why);
	cr_assert(!strstr(why, "cached") && !strstr(why, "forged"), "%s: %s", what, why);
}

Test(probe, foreign_boot_is_ignored)
{
	struct utsname u;
	char text[512];

	fresh_cache();
	uname(&u);
	snprintf(text, sizeof(text), "tide-probe 1\nkey %s 00000000-dead-beef-0000-000000000000\n"
		 "direct_write unsafe\nwhy forged\n", u.release);
	assert_ignored(text, 0600, "another boot's");
}

Test(probe, other_kernel_is_ignored)
{
	char text[512], k[200];

	fresh_cache();
	key(k, sizeof(k));
	snprintf(text, sizeof(text), "tide-probe 1\nkey 5.8.0-umap%s\ndirect_write unsafe\nwhy forged\n",
		 strchr(k, ' '));
	assert_ignored(text, 0600, "another kernel's");
}

Test(probe, corrupt_entry_is_ignored_and_replaced)
{
	char why[256];

	fresh_cache();
	assert_ignored("tide-probe 1\nkey \x01\x02 garbage\ndirect_write maybe\n", 0600, "a corrupt");
	assert_ignored("", 0600, "an empty");
	assert_ignored("not a cache at all", 0600, "a foreign-format");
	/* The probe rewrote it: the next answer is a cached, valid one. */
	cr_assert_eq(probe(why, sizeof(why)), 1);
	cr_assert(strstr(why, "cached"), "%s", why);
}

/* Someone else could have written a world-writable file: never trust it. */
Test(probe, writable_by_others_is_ignored)
{
	char text[512], k[200];

	fresh_cache();
	key(k, sizeof(k));
	snprintf(text, sizeof(text), "tide-probe 1\nkey %s\ndirect_write unsafe\nwhy forged\n", k);
	assert_ignored(text, 0666, "a world-writable");
}

Test(probe, symlink_is_not_followed)
{
	char k[200], target[300], dir[300], why[256];
	FILE *f;

	fresh_cache();
	key(k, sizeof(k));
	snprintf(target, sizeof(target), "%s/elsewhere", xdg);
	f = fopen(target, "w");
	cr_assert(f);
	fprintf(f, "tide-probe 1\nkey %s\ndirect_write unsafe\nwhy forged\n", k);
	fclose(f);
	snprintf(dir, sizeof(dir), "%s/tide", xdg);
	mkdir(dir, 0700);
	cr_assert_eq(symlink(target, cache_path), 0);
	cr_assert_eq(probe(why, sizeof(why)), 1, "followed a symlink: %s", why);
}

Test(probe, untrusted_directory_is_not_used)
{
	char dir[300], why[256];
	struct stat st;

	fresh_cache();
	snprintf(dir, sizeof(dir), "%s/tide", xdg);
	cr_assert_eq(mkdir(dir, 0777), 0);
	chmod(dir, 0777);
	cr_assert_eq(probe(why, sizeof(why)), 1, "%s", why);
	cr_assert_eq(stat(cache_path, &st), -1, "wrote a cache into a world-writable directory");
}
