/*
 * bench_raw wpasync: dirty tracking per written page, synchronous uffd-wp
 * (a fault round trip per first write, UFFDIO_WRITEPROTECT to re-arm)
 * against UFFD_FEATURE_WP_ASYNC (the kernel resolves the write) and one
 * PAGEMAP_SCAN that finds the written pages and re-protects them.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_raw.h"

/* PAGEMAP_SCAN (6.7) is newer than the build machine's headers. */
#ifndef PAGEMAP_SCAN
struct page_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_PRESENT (1 << 3)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#endif

#define WPA_PAGES 1024           /* a 4 MiB region of 4 KiB pages, reused every pass */
#define WPA_RUN 256              /* pages per UFFDIO_WRITEPROTECT: tide's TIDE_WRITE_MAX, 1 MiB */

/* One variant: the app writes one page in `stride` of the region once per
 * pass; then the pass re-arms what was written, as a pager does when it
 * writes dirty pages back. */
struct wpa {
	bool async;
	size_t stride;
	int uffd, pagemap;
	char *base;
	size_t len;
	struct page_region *vec;
	uint64_t writes, passes, write_ns, rearm_ns;
	struct lat lat;
};

/* The written pages of the region, re-protected in the same walk: under
 * the page table lock the kernel tests each pte and write-protects it, so
 * a write after the walk is seen by the next one. Returns pages found or
 * -errno. */
static long wpa_scan(struct wpa *w)
{
	struct pm_scan_arg s = {
		.size = sizeof(s),
		.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
		.start = (uintptr_t)w->base,
		.end = (uintptr_t)w->base + w->len,
		.vec = (uintptr_t)w->vec,
		.vec_len = WPA_PAGES,    /* one region per page at worst: one call is enough */
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	long n = ioctl(w->pagemap, PAGEMAP_SCAN, &s), found = 0;

	if (n < 0)
		return -errno;
	if (s.walk_end != s.end)
		return -EOVERFLOW;
	for (long i = 0; i < n; i++)
		found += (long)((w->vec[i].end - w->vec[i].start) / (4 * KiB));
	return found;
}

/* What the synchronous pager does instead: one UFFDIO_WRITEPROTECT per run
 * of written pages, at most WPA_RUN pages long (sparse writes: per page). */
static int wpa_protect(struct wpa *w)
{
	size_t run = w->stride == 1 ? WPA_RUN * 4 * KiB : 4 * KiB;
	size_t step = w->stride == 1 ? run : w->stride * 4 * KiB;

	for (size_t off = 0; off < w->len; off += step) {
		int ret = tide__uffd_wp(w->uffd, w->base + off, w->len - off < run ? w->len - off : run,
					true, true);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Each write is timed for the percentiles, as app_main does; the two clock
 * reads around it are in `write_us` of both variants alike. */
static long wpa_pass(struct wpa *w, bool timed)
{
	size_t step = w->stride * 4 * KiB;
	uint64_t start = now_ns(), n = 0;
	long ret;

	for (size_t off = 0; off < w->len; off += step, n++) {
		uint64_t t0 = now_ns();
		*(volatile char *)(w->base + off) = (char)w->passes;
		if (timed)
			lat_add(&w->lat, now_ns() - t0);
	}
	uint64_t mid = now_ns();
	ret = w->async ? wpa_scan(w) : wpa_protect(w);
	uint64_t end = now_ns();
	if (ret >= 0 && w->async && (uint64_t)ret != n)
		die("wpasync: PAGEMAP_SCAN found %ld written pages, %llu were written", ret,
		    (unsigned long long)n);
	if (timed) {
		w->writes += n;
		w->write_ns += mid - start;
		w->rearm_ns += end - mid;
		w->passes++;
	}
	return ret;
}

static void wpa_report(struct wpa *w)
{
	double per_page = (double)(w->write_ns + w->rearm_ns) / (double)w->writes;
	char name[64];
	struct out o;

	if (w->stride > 1)
		snprintf(name, sizeof(name), "wpasync.%s.sparse%zu.4k", w->async ? "async" : "sync",
			 w->stride);
	else
		snprintf(name, sizeof(name), "wpasync.%s.4k", w->async ? "async" : "sync");
	out_begin(&o, name);
	out_u64(&o, "page", 4 * KiB);
	out_u64(&o, "region_pages", WPA_PAGES);
	out_u64(&o, "stride", w->stride);
	out_u64(&o, "writes", w->writes);
	out_u64(&o, "passes", w->passes);
	out_str(&o, "rearm", w->async ? "pagemap_scan" : "writeprotect");
	/* The app loop alone, then the re-arm per written page and per page
	 * of the region it walked, then both together. */
	out_num(&o, "per_s", (double)w->writes * 1e9 / (double)w->write_ns);
	out_num(&o, "write_us", (double)w->write_ns / (double)w->writes / 1e3);
	out_num(&o, "rearm_us", (double)w->rearm_ns / (double)w->writes / 1e3);
	out_num(&o, "rearm_region_page_us",
		(double)w->rearm_ns / (double)(w->passes * WPA_PAGES) / 1e3);
	out_num(&o, "total_us", per_page / 1e3);
	out_num(&o, "pages_per_s", 1e9 / per_page);
	out_lat(&o, &w->lat);
	out_end(&o);
}

static void wpa_one(bool async, size_t stride)
{
	struct handler h;
	struct wpa w = { .async = async, .stride = stride, .pagemap = -1 };
	long ret;

	/* The sync handler and the app share vCPU 0 as in `wp same`: the
	 * round trip, not a cross-vCPU wake-up. The async app has no handler
	 * and runs on the same vCPU. */
	pin_cpu(0);
	if (async) {
		w.uffd = tide__uffd_open(0, NULL);
		if (w.uffd < 0)
			die("userfaultfd: %s", strerror(-w.uffd));
		/* The kernel turns WP_UNPOPULATED on with WP_ASYNC anyway. */
		ret = tide__uffd_api(w.uffd, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, NULL);
		if (ret < 0)
			die("UFFDIO_API WP_ASYNC: %s", strerror((int)-ret));
		w.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		if (w.pagemap < 0)
			die("open /proc/self/pagemap: %s", strerror(errno));
		w.vec = calloc(WPA_PAGES, sizeof(*w.vec));
		if (!w.vec)
			die("out of memory");
	} else {
		handler_start(&h, 0, false, 4 * KiB);
		w.uffd = h.uffd;
	}
	w.len = WPA_PAGES * 4 * KiB;
	w.base = map_aligned(w.len, 2 * MiB);
	/* Present pages, reused by every pass: no first-touch cost measured. */
	memset(w.base, 1, w.len);
	ret = tide__uffd_register(w.uffd, w.base, w.len,
				  UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, NULL);
	if (ret < 0)
		die("register: %s", strerror((int)-ret));
	if ((ret = tide__uffd_wp(w.uffd, w.base, w.len, true, true)) < 0)
		die("writeprotect: %s", strerror((int)-ret));
	lat_init(&w.lat, 1 << 20);

	/* One untimed pass, so the first timed one finds warm caches. */
	ret = wpa_pass(&w, false);
	if (async && (ret == -EPERM || ret == -EINVAL || ret == -ENOTTY)) {
		printf("{\"name\":\"wpasync.async\",\"skip\":\"PAGEMAP_SCAN with PM_SCAN_CHECK_WPASYNC "
		       "refused the range: %s\"}\n", strerror((int)-ret));
	} else {
		uint64_t deadline = now_ns() + (uint64_t)(secs * 1e9);

		while (ret >= 0 && now_ns() < deadline)
			ret = wpa_pass(&w, true);
		if (ret < 0)
			die("wpasync re-arm by %s: %s", async ? "PAGEMAP_SCAN" : "UFFDIO_WRITEPROTECT",
			    strerror((int)-ret));
		wpa_report(&w);
	}
	lat_free(&w.lat);
	tide__uffd_unregister(w.uffd, w.base, w.len);
	munmap(w.base, w.len);
	if (async) {
		close(w.uffd);
		close(w.pagemap);
		free(w.vec);
	} else {
		handler_stop(&h);
	}
	pin_cpu(-1);
}

/* Why a feature is missing, or NULL: the uffd feature bit, then the ioctl
 * on /proc/self/pagemap (ENOTTY before 6.7). */
static const char *wpa_probe(char *why, size_t len)
{
	struct page_region r;
	uint64_t have = 0;
	int ret = tide__uffd_features(&have), fd;

	if (ret < 0) {
		snprintf(why, len, "userfaultfd: %s", strerror(-ret));
		return why;
	}
	if (!(have & UFFD_FEATURE_WP_ASYNC)) {
		snprintf(why, len, "no UFFD_FEATURE_WP_ASYNC (features 0x%llx)", (unsigned long long)have);
		return why;
	}
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, len, "open /proc/self/pagemap: %s", strerror(errno));
		return why;
	}
	struct pm_scan_arg s = {
		.size = sizeof(s), .start = (uintptr_t)&r / (4 * KiB) * (4 * KiB),
		.vec = (uintptr_t)&r, .vec_len = 1,
		.category_mask = PAGE_IS_PRESENT, .return_mask = PAGE_IS_PRESENT,
	};
	s.end = s.start + 4 * KiB;
	ret = ioctl(fd, PAGEMAP_SCAN, &s) < 0 ? -errno : 0;
	close(fd);
	if (ret < 0) {
		snprintf(why, len, "no PAGEMAP_SCAN ioctl on /proc/self/pagemap: %s", strerror(-ret));
		return why;
	}
	return NULL;
}

void test_wpasync(void)
{
	char why[160];

	if (wpa_probe(why, sizeof(why))) {
		printf("{\"name\":\"wpasync.async\",\"skip\":\"%s\"}\n", why);
		/* The synchronous figure is still worth having beside `wp`. */
		wpa_one(false, 1);
		return;
	}
	wpa_one(false, 1);
	wpa_one(true, 1);
	wpa_one(false, 16);
	wpa_one(true, 16);
}

/* Two app threads, one per vCPU: served by one shared uffd and handler, or by
 * a uffd and handler per vCPU, pinned beside its app thread. */
