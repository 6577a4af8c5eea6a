/*
 * The start-up probe behind write-back `auto`: may the service thread write a
 * write-protected page straight to storage with O_DIRECT on this kernel?
 *
 * On Linux 5.8 (and 5.7.3+ stable) a read pin of a WP'd page broke COW as if
 * writing and raised a uffd-wp fault that only the pinning thread could have
 * served: the direct path would hang the service thread. The probe runs the
 * direct path's operations in children (hazard.c), with and without a fork()
 * child COW-sharing the page, and says "safe" only when every one completes,
 * moves the right bytes and leaves the page write-protected.
 *
 * The answer depends on the kernel only, so it is cached per boot in a small
 * file keyed by kernel release and boot id. TIDE_PROBE_CACHE=0 bypasses it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "hazard.h"
#include "internal.h"

#define CACHE_MAGIC  "tide-probe 1"
#define PROBE_TIMEOUT_MS 2000   /* only a hang without a uffd message waits this long */

/* The operations the direct path performs on a WP'd page. */
static const enum tide__hazard direct_cases[] = { TIDE__HZ_DIRECT_WRITE, TIDE__HZ_URING_WRITE };

/* The cache key: "<release> <boot id>". */
static int cache_key(char *key, size_t len)
{
	struct utsname u;
	char boot[64] = "";
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, boot, sizeof(boot) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	boot[n] = 0;
	boot[strcspn(boot, "\n")] = 0;
	if (uname(&u) < 0)
		return -errno;
	if ((size_t)snprintf(key, len, "%s %s", u.release, boot) >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* A directory we may trust: a real directory (not a symlink) owned by us
 * that nobody else can write into. */
static int trusted_dir(const char *dir)
{
	struct stat st;

	if (lstat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
		return -EPERM;
	return 0;
}

static int cache_dir(char *buf, size_t len, bool create)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (xdg && xdg[0] == '/')
		n = snprintf(buf, len, "%s/tide", xdg);
	else if (geteuid() == 0)
		n = snprintf(buf, len, "/run/tide");
	else
		n = snprintf(buf, len, "/tmp/tide-%u", (unsigned)geteuid());
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	if (create && mkdir(buf, 0700) < 0 && errno != EEXIST)
		return -errno;
	return trusted_dir(buf);
}

int tide__probe_cache_path(char *buf, size_t len)
{
	char dir[4096];
	int ret = cache_dir(dir, sizeof(dir), false);

	if (ret < 0 && ret != -ENOENT)
		return ret;
	if ((size_t)snprintf(buf, len, "%s/%s", dir, TIDE__PROBE_CACHE_NAME) >= len)
		return -ENAMETOOLONG;
	return 0;
}

static bool cache_enabled(void)
{
	const char *v = getenv("TIDE_PROBE_CACHE");
	int on = 1;

	return !v || tide__parse_bool(v, &on) < 0 || on;
}

/* 1 or 0 from a valid cache entry for this boot, -errno otherwise (a missing,
 * corrupt, foreign or untrusted file is simply not used). */
static int cache_read(const char *key, char *why, size_t whylen)
{
	char path[4200], text[1024], *line, *save = NULL;
	int fd, answer = -ENODATA, ret;
	struct stat st;
	ssize_t n;

	ret = tide__probe_cache_path(path, sizeof(path));
	if (ret < 0)
		return ret;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 022) || st.st_size >= (off_t)sizeof(text)) {
		close(fd);
		return -EPERM;
	}
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return -ENODATA;
	text[n] = 0;
	line = strtok_r(text, "\n", &save);
	if (!line || strcmp(line, CACHE_MAGIC))
		return -EBADMSG;
	line = strtok_r(NULL, "\n", &save);
	if (!line || strncmp(line, "key ", 4) || strcmp(line + 4, key))
		return -ESTALE;
	line = strtok_r(NULL, "\n", &save);
	if (line && !strcmp(line, "direct_write safe"))
		answer = 1;
	else if (line && !strcmp(line, "direct_write unsafe"))
		answer = 0;
	else
		return -EBADMSG;
	line = strtok_r(NULL, "\n", &save);
	if (!line || strncmp(line, "why ", 4))
		return -EBADMSG;
	snprintf(why, whylen, "%s (cached for this boot)", line + 4);
	return answer;
}

/* Write to a temporary file and rename, so a reader never sees half. */
static void cache_write(const char *key, int answer, const char *why)
{
	char dir[4096], tmp[4200], path[4200];
	int fd, ret;
	FILE *f;

	if (cache_dir(dir, sizeof(dir), true) < 0)
		return;
	snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, TIDE__PROBE_CACHE_NAME);
	snprintf(path, sizeof(path), "%s/%s", dir, TIDE__PROBE_CACHE_NAME);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return;
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		unlink(tmp);
		return;
	}
	fprintf(f, "%s\nkey %s\ndirect_write %s\nwhy %s\n", CACHE_MAGIC, key,
		answer ? "safe" : "unsafe", why);
	ret = fclose(f);
	if (ret != 0 || rename(tmp, path) < 0)
		unlink(tmp);
}

/* Run the direct path's cases; 1 safe, 0 unsafe, -errno when nothing ran. */
static int run_probes(char *why, size_t whylen)
{
	struct tide__hazard_result res;
	int ran = 0, cannot = 0;

	for (size_t i = 0; i < sizeof(direct_cases) / sizeof(direct_cases[0]); i++) {
		for (unsigned mode = 0; mode < TIDE__HZ_NMODES; mode++) {
			enum tide__hazard h = direct_cases[i];
			int ret = tide__hazard_run(h, mode, NULL, PROBE_TIMEOUT_MS, &res);

			if (ret < 0) {
				snprintf(why, whylen, "cannot run the probe: %s", strerror(-ret));
				return ret;
			}
			if (res.outcome == TIDE__HZ_SKIPPED) {
				/* Huge pages are optional; the small-page cases are not. */
				if (mode & TIDE__HZ_THP)
					continue;
				snprintf(why, whylen, "%s (%s) could not run: %s",
					 tide__hazard_name(h), tide__hazard_mode_name(mode), res.detail);
				cannot = res.err ? res.err : -EAGAIN;
				continue;
			}
			ran++;
			if (res.outcome != TIDE__HZ_COMPLETES || res.data_ok != 1 || res.wp_after != 1) {
				snprintf(why, whylen, "%s from a write-protected page (%s) %s: %s",
					 tide__hazard_name(h), tide__hazard_mode_name(mode),
					 tide__hazard_outcome_name(res.outcome), res.detail);
				return 0;
			}
		}
	}
	if (cannot)
		return cannot;
	if (!ran) {
		snprintf(why, whylen, "no probe could run");
		return -EAGAIN;
	}
	snprintf(why, whylen, "O_DIRECT and io_uring writes from a write-protected page "
		 "complete here, also with a fork() child sharing it (%d cases)", ran);
	return 1;
}

int tide__probe_direct_write(char *why, size_t whylen)
{
	char key[256], line[256];
	bool cached = cache_enabled();
	int ret;

	if (!why || !whylen) {
		why = line;
		whylen = sizeof(line);
	}
	why[0] = 0;
	if (cache_key(key, sizeof(key)) < 0)
		cached = false;     /* without a key, never trust or write a cache */
	if (cached) {
		ret = cache_read(key, why, whylen);
		if (ret == 0 || ret == 1)
			return ret;
	}
	ret = run_probes(why, whylen);
	/* Only a definite answer is worth keeping; "could not tell" is retried. */
	if (cached && (ret == 0 || ret == 1))
		cache_write(key, ret, why);
	return ret;
}
