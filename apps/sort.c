/*
 * tide sort: generate a file of random 64-bit keys larger than the memory
 * budget, sort it in place through the pager, verify it, write it back.
 * The same sort (sort_algo.c) runs over a tide region, a kernel mmap of the
 * same file, or plain memory, so the three can be compared (bench/).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "internal.h"
#include "sort.h"

/* Signal handlers see the path to remove; set once before any data is written. */
static char doomed_path[4096];
static volatile sig_atomic_t doomed_armed;
static pid_t doomed_owner;   /* a forked child (the runtime's probe) must not unlink */
static int signal_taken;

static void on_fatal_signal(int sig)
{
	static const char bus[] = "tide sort: SIGBUS: a page could not be read from or "
				  "written to storage; the data file is incomplete";
	static const char intr[] = "tide sort: interrupted; the data file is incomplete";
	static const char rm[] = ", removed it\n";
	static const char kept[] = "\n";
	const char *msg = sig == SIGBUS ? bus : intr;

	/* Only async-signal-safe calls: write, unlink, getpid, _exit. A second
	 * thread hit by the same signal leaves it to the first. */
	if (__atomic_exchange_n(&signal_taken, 1, __ATOMIC_SEQ_CST))
		return;
	if (write(STDERR_FILENO, msg, strlen(msg)) < 0)
		_exit(128 + sig);
	if (doomed_armed && getpid() == doomed_owner && unlink(doomed_path) == 0) {
		if (write(STDERR_FILENO, rm, sizeof(rm) - 1) < 0)
			_exit(128 + sig);
	} else if (write(STDERR_FILENO, kept, 1) < 0) {
		_exit(128 + sig);
	}
	_exit(128 + sig);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tide sort [OPTIONS]\n"
		"Sort a file of random 64-bit keys in place through the pager and verify it.\n\n"
		"  --size BYTES        data to sort, a multiple of 8 (default 1G)\n"
		"  --pool BYTES        memory budget, at most --size (default a quarter of --size)\n"
		"  --page-size BYTES   tide page size, 4K..2M (default TIDE_PAGE_SIZE or 64K)\n"
		"  --threads N         sorting threads (default: all online CPUs)\n"
		"  --writeback PATH    fixed, direct or auto (default TIDE_WRITEBACK or auto)\n"
		"  --signal-faults on|off\n"
		"                      the sorting threads serve their own faults in tide's SIGBUS\n"
		"                      handler, or the pool's service thread does (default\n"
		"                      TIDE_SIGNAL_FAULTS or on)\n"
		"  --file PATH         data file (default ./tide-sort-PID.dat)\n"
		"  --keep              keep the data file afterwards (default: remove it)\n"
		"  --seed N            seed of the key generator (default 1)\n"
		"  --backend NAME      tide, mmap (kernel MAP_SHARED) or memory (default tide)\n"
		"  --json              print the summary as one JSON object on stdout\n"
		"  --help              this text\n\n"
		"Exit status: 0 sorted and verified, 1 failed or not sorted, 2 bad arguments.\n"
		"docs/sort.md explains the algorithm and the output.\n");
}

static int parse_args(int argc, char **argv, struct sort_args *a)
{
	static const struct option longopts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "pool", required_argument, NULL, 'p' },
		{ "page-size", required_argument, NULL, 'P' },
		{ "threads", required_argument, NULL, 't' },
		{ "writeback", required_argument, NULL, 'w' },
		{ "signal-faults", required_argument, NULL, 'F' },
		{ "file", required_argument, NULL, 'f' },
		{ "keep", no_argument, NULL, 'k' },
		{ "seed", required_argument, NULL, 'S' },
		{ "backend", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t v;
	int c;

	memset(a, 0, sizeof(*a));
	a->size = 1ull << 30;
	a->seed = 1;
	a->threads = cpus > 0 ? (unsigned)cpus : 1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (cli_parse_size("--size", optarg, &a->size) < 0)
				return -EINVAL;
			break;
		case 'p':
			if (cli_parse_size("--pool", optarg, &a->pool) < 0)
				return -EINVAL;
			a->pool_set = true;
			break;
		case 'P':
			if (cli_parse_size("--page-size", optarg, &a->page_size) < 0)
				return -EINVAL;
			a->page_size_set = true;
			break;
		case 't':
			if (cli_parse_uint("--threads", optarg, 1, 256, &v) < 0)
				return -EINVAL;
			a->threads = (unsigned)v;
			break;
		case 'w':
			for (int wb = TIDE_WRITEBACK_AUTO; wb <= TIDE_WRITEBACK_DIRECT; wb++)
				if (!strcmp(optarg, tide_writeback_name(wb))) {
					a->writeback = wb;
					a->writeback_set = true;
				}
			if (!a->writeback_set) {
				fprintf(stderr, "tide sort: --writeback \"%s\" is not fixed, direct "
					"or auto\n", optarg);
				return -EINVAL;
			}
			break;
		case 'F':
			if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
				fprintf(stderr, "tide sort: --signal-faults \"%s\" is not on or off\n",
					optarg);
				return -EINVAL;
			}
			a->signal_faults = !strcmp(optarg, "on");
			a->signal_faults_set = true;
			break;
		case 'f':
			a->file = optarg;
			break;
		case 'k':
			a->keep = true;
			break;
		case 'S':
			if (cli_parse_uint("--seed", optarg, 0, UINT64_MAX, &a->seed) < 0)
				return -EINVAL;
			break;
		case 'b':
			for (v = 0; v < BACKEND_COUNT; v++)
				if (!strcmp(optarg, sort_backend_names[v]))
					break;
			a->backend = (enum backend)v;
			if (v == BACKEND_COUNT) {
				fprintf(stderr, "tide sort: --backend \"%s\" is not tide, mmap or "
					"memory\n", optarg);
				return -EINVAL;
			}
			break;
		case 'j':
			a->json = true;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tide sort: unexpected argument \"%s\"\n", argv[optind]);
		return -EINVAL;
	}
	if (!a->pool_set)
		a->pool = a->size / 4;
	return 0;
}

/* Reject what cannot work before any file is touched. */
static int check_args(struct sort_args *a)
{
	char s1[32], s2[32];

	if (a->size == 0 || a->size % 8) {
		fprintf(stderr, "tide sort: --size %llu is not a positive multiple of 8 bytes "
			"(one 64-bit key is 8 bytes)\n", (unsigned long long)a->size);
		return -EINVAL;
	}
	if (a->pool > a->size) {
		fprintf(stderr, "tide sort: --pool %s is larger than the data (%s); a budget "
			"that holds everything measures nothing\n",
			cli_format_bytes(a->pool, s1, sizeof(s1)),
			cli_format_bytes(a->size, s2, sizeof(s2)));
		return -EINVAL;
	}
	if (a->pool == 0) {
		fprintf(stderr, "tide sort: --pool must be more than 0 bytes\n");
		return -EINVAL;
	}
	if (a->page_size_set && (!tide__is_pow2(a->page_size) || a->page_size < TIDE_MIN_PAGE ||
				 a->page_size > TIDE_MAX_PAGE)) {
		fprintf(stderr, "tide sort: --page-size %llu is not a power of two from 4K "
			"to 2M\n", (unsigned long long)a->page_size);
		return -EINVAL;
	}
	if (a->backend == BACKEND_TIDE) {
		struct tide_options o;

		tide_options_init(&o);
		if (!a->page_size_set)
			a->page_size = o.page_size;
		if (!a->writeback_set)
			a->writeback = o.writeback;
		/* The sort makes no system call on its mappings, so a fault can
		 * always be served on the thread that took it: no wake-up of the
		 * service thread and back, and the copies spread over the sorting
		 * threads (docs/sort.md has the figures). */
		if (!a->signal_faults_set) {
			a->signal_faults_set = getenv("TIDE_SIGNAL_FAULTS") != NULL;
			a->signal_faults = a->signal_faults_set ? o.signal_faults : true;
		}
		if (a->pool / a->page_size < TIDE_MIN_PAGES) {
			fprintf(stderr, "tide sort: --pool %s holds fewer than %u pages of %s; "
				"give a bigger pool or a smaller --page-size\n",
				cli_format_bytes(a->pool, s1, sizeof(s1)), TIDE_MIN_PAGES,
				cli_format_bytes(a->page_size, s2, sizeof(s2)));
			return -EINVAL;
		}
		/* A merging thread keeps three pages in use (two inputs, one output)
		 * and faults in a fourth; eviction brings residency down to the low
		 * watermark, so below that many pages per thread the pool evicts
		 * pages a thread is still using, and the sort thrashes. */
		uint64_t fit = a->pool / a->page_size * o.low_water / 100 / 4;
		if (fit < a->threads) {
			if (fit >= 1) {
				fprintf(stderr, "tide sort: note: a pool of %llu pages of %s keeps "
					"the streams of %llu merging threads, not %u; using %llu\n",
					(unsigned long long)(a->pool / a->page_size),
					cli_format_bytes(a->page_size, s1, sizeof(s1)),
					(unsigned long long)fit, a->threads, (unsigned long long)fit);
				a->threads = (unsigned)fit;
			} else {
				fprintf(stderr, "tide sort: warning: a pool of %llu pages of %s is "
					"too small for even one merging thread (it needs %u pages at "
					"a %u%% low watermark); expect heavy thrashing\n",
					(unsigned long long)(a->pool / a->page_size),
					cli_format_bytes(a->page_size, s1, sizeof(s1)),
					(400 + o.low_water - 1) / o.low_water, o.low_water);
			}
		}
		if (a->size % a->page_size) {
			fprintf(stderr, "tide sort: --size %llu is not a multiple of the page "
				"size %s (tide maps whole pages)\n", (unsigned long long)a->size,
				cli_format_bytes(a->page_size, s1, sizeof(s1)));
			return -EINVAL;
		}
	} else if (!a->page_size_set) {
		a->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
	}
	return 0;
}

/* ---- the data file ---- */

static void remove_data_file(struct sort_run *r, const char *why)
{
	doomed_armed = 0;
	if (r->fd < 0)
		return;
	if (r->a.keep && r->written) {
		fprintf(stderr, "tide sort: %s is incomplete (%s); kept because of --keep\n",
			r->path, why);
		return;
	}
	if (!r->created && !r->written)
		return;   /* someone else's file, untouched: leave it */
	if (unlink(r->path) < 0 && errno != ENOENT)
		fprintf(stderr, "tide sort: could not remove %s: %s\n", r->path, strerror(errno));
	else if (why)
		fprintf(stderr, "tide sort: removed %s (%s)\n", r->path, why);
}

static int reserve(int fd, uint64_t size, const char *what, const char *path)
{
	char s[32];
	/* posix_fallocate returns the error number itself, not -1 and errno. */
	int err = posix_fallocate(fd, 0, (off_t)size);

	if (err == 0)
		return 0;
	if (err == ENOSPC)
		fprintf(stderr, "tide sort: no space for the %s (%s) next to %s: the disk is "
			"full; pass a smaller --size or another --file\n", what,
			cli_format_bytes(size, s, sizeof(s)), path);
	else
		fprintf(stderr, "tide sort: could not reserve %s for the %s at %s: %s\n",
			cli_format_bytes(size, s, sizeof(s)), what, path, strerror(err));
	return -err;
}

static int open_files(struct sort_run *r)
{
	struct stat st;
	char dir[4096], *slash;
	int ret;

	if (r->a.file)
		snprintf(r->path, sizeof(r->path), "%s", r->a.file);
	else
		snprintf(r->path, sizeof(r->path), "tide-sort-%d.dat", (int)getpid());
	r->fd = open(r->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (r->fd >= 0) {
		r->created = true;
		snprintf(doomed_path, sizeof(doomed_path), "%s", r->path);
		doomed_armed = 1;
	} else if (errno == EEXIST) {
		r->fd = open(r->path, O_RDWR | O_CLOEXEC);
		if (r->fd < 0 || fstat(r->fd, &st) < 0) {
			fprintf(stderr, "tide sort: cannot open %s: %s\n", r->path, strerror(errno));
			return -errno;
		}
		if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != r->a.size) {
			fprintf(stderr, "tide sort: %s exists and is %s%llu bytes, not the %llu "
				"bytes of --size; remove it or pick another --file\n", r->path,
				S_ISREG(st.st_mode) ? "" : "not a regular file of ",
				(unsigned long long)st.st_size, (unsigned long long)r->a.size);
			close(r->fd);
			r->fd = -1;
			return -EEXIST;
		}
	} else {
		fprintf(stderr, "tide sort: cannot create %s: %s\n", r->path, strerror(errno));
		return -errno;
	}
	/* Reserve every block now, so a full disk shows up here and not as a
	 * SIGBUS or a failed write-back half way through the sort. */
	ret = reserve(r->fd, r->a.size, "data file", r->path);
	if (ret < 0)
		return ret;
	if (r->a.backend == BACKEND_MEMORY)
		return 0;

	/* Scratch lives next to the data, unlinked at once: nothing to clean up. */
	snprintf(dir, sizeof(dir), "%s", r->path);
	slash = strrchr(dir, '/');
	if (slash)
		snprintf(slash + 1, sizeof(dir) - (slash + 1 - dir), ".tide-sort-scratch-XXXXXX");
	else
		snprintf(dir, sizeof(dir), ".tide-sort-scratch-XXXXXX");
	r->scratch_fd = mkostemp(dir, O_CLOEXEC);
	if (r->scratch_fd < 0) {
		fprintf(stderr, "tide sort: cannot create the scratch file %s: %s\n", dir,
			strerror(errno));
		return -errno;
	}
	unlink(dir);
	return reserve(r->scratch_fd, r->a.size, "scratch file", r->path);
}

/* ---- backends: map data and scratch ---- */

static int map_tide(struct sort_run *r)
{
	struct tide_options o;
	int ret;

	tide_options_init(&o);
	o.budget = r->a.pool;
	o.page_size = r->a.page_size;
	o.writeback = r->a.writeback;
	o.signal_faults = r->a.signal_faults;
	ret = tide_pool_create(&r->pool, &o);
	if (ret == -ENOSYS && o.signal_faults && !r->a.signal_faults_set) {
		/* Only our default asked for it: the service thread will do. */
		fprintf(stderr, "tide sort: note: %s; the service thread serves the faults\n",
			tide_last_error());
		r->a.signal_faults = false;
		o.signal_faults = 0;
		ret = tide_pool_create(&r->pool, &o);
	}
	if (ret < 0) {
		fprintf(stderr, "tide sort: cannot create a pool: %s\n", tide_last_error());
		return ret;
	}
	r->data = tide_map(r->pool, r->fd, 0, r->a.size, TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	if (!r->data)
		goto fail;
	r->scratch = tide_map(r->pool, r->scratch_fd, 0, r->a.size,
			      TIDE_PROT_READ | TIDE_PROT_WRITE, 0);
	if (!r->scratch)
		goto fail;
	return 0;
fail:
	ret = -errno;
	fprintf(stderr, "tide sort: cannot map %s: %s\n", r->path, tide_last_error());
	return ret;
}

static int map_kernel(struct sort_run *r)
{
	int flags = r->a.backend == BACKEND_MMAP ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS;
	int dfd = r->a.backend == BACKEND_MMAP ? r->fd : -1;
	int sfd = r->a.backend == BACKEND_MMAP ? r->scratch_fd : -1;
	void *d, *s;

	d = mmap(NULL, r->a.size, PROT_READ | PROT_WRITE, flags, dfd, 0);
	if (d == MAP_FAILED)
		goto fail;
	r->data = d;
	s = mmap(NULL, r->a.size, PROT_READ | PROT_WRITE, flags, sfd, 0);
	if (s == MAP_FAILED)
		goto fail;
	r->scratch = s;
	return 0;
fail:
	fprintf(stderr, "tide sort: mmap of %llu bytes failed: %s\n",
		(unsigned long long)r->a.size, strerror(errno));
	return -errno;
}

/* Write back what the sort left dirty: the data must be on disk at the end.
 * *written: bytes sent to storage meanwhile, where known (msync: 0). */
static int write_back(struct sort_run *r, uint64_t *written)
{
	struct tide_stats before, after;
	const char *p;
	size_t left;
	bool counted;
	int ret;

	*written = 0;
	switch (r->a.backend) {
	case BACKEND_TIDE:
		counted = tide_pool_stats(r->pool, &before) == 0;
		ret = tide_flush(r->data, r->a.size);
		if (ret < 0) {
			fprintf(stderr, "tide sort: tide_flush failed: %s\n", tide_last_error());
			return ret;
		}
		if (counted && tide_pool_stats(r->pool, &after) == 0)
			*written = after.bytes_written - before.bytes_written;
		return 0;
	case BACKEND_MMAP:
		if (msync(r->data, r->a.size, MS_SYNC) < 0) {
			fprintf(stderr, "tide sort: msync failed: %s\n", strerror(errno));
			return -errno;
		}
		return 0;
	case BACKEND_MEMORY:
		for (p = (const char *)r->data, left = r->a.size; left;) {
			ssize_t n = pwrite(r->fd, p, left > (1u << 30) ? 1u << 30 : left,
					   (off_t)(p - (const char *)r->data));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fprintf(stderr, "tide sort: writing %s failed: %s\n", r->path,
					n < 0 ? strerror(errno) : "short write");
				return n < 0 ? -errno : -EIO;
			}
			p += n;
			left -= (size_t)n;
			*written += (uint64_t)n;
		}
		if (fdatasync(r->fd) < 0) {
			fprintf(stderr, "tide sort: fdatasync failed: %s\n", strerror(errno));
			return -errno;
		}
		return 0;
	case BACKEND_COUNT:
		break;
	}
	return -EINVAL;
}

/* Unmap and release; for tide this also writes back the scratch pages still dirty. */
static int release(struct sort_run *r)
{
	int ret = 0, err;

	if (r->a.backend == BACKEND_TIDE) {
		if (r->scratch && (err = tide_unmap(r->scratch)) < 0 && !ret)
			ret = err;
		if (r->data && (err = tide_unmap(r->data)) < 0 && !ret)
			ret = err;
		if (ret < 0)
			fprintf(stderr, "tide sort: tide_unmap failed: %s\n", tide_last_error());
		if (r->pool) {
			if (tide_pool_stats(r->pool, &r->ts) == 0)
				r->have_tide_stats = true;
			if ((err = tide_pool_destroy(r->pool)) < 0 && !ret) {
				fprintf(stderr, "tide sort: tide_pool_destroy failed: %s\n",
					tide_last_error());
				ret = err;
			}
		}
	} else {
		if (r->data)
			munmap(r->data, r->a.size);
		if (r->scratch)
			munmap(r->scratch, r->a.size);
	}
	r->data = r->scratch = NULL;
	r->pool = NULL;
	if (r->scratch_fd >= 0)
		close(r->scratch_fd);
	r->scratch_fd = -1;
	return ret;
}

/* ---- measurements from /proc ---- */

static uint64_t proc_field(const char *file, const char *key)
{
	char line[256];
	size_t klen = strlen(key);
	uint64_t v = 0;
	FILE *f = fopen(file, "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, klen)) {
			v = strtoull(line + klen, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static void measure_start(struct sort_run *r)
{
	r->io_read0 = proc_field("/proc/self/io", "read_bytes:");
	r->io_write0 = proc_field("/proc/self/io", "write_bytes:");
	getrusage(RUSAGE_SELF, &r->ru0);
}

static void measure_end(struct sort_run *r)
{
	r->io_read = proc_field("/proc/self/io", "read_bytes:") - r->io_read0;
	r->io_write = proc_field("/proc/self/io", "write_bytes:") - r->io_write0;
	getrusage(RUSAGE_SELF, &r->ru);
	r->vm_hwm = proc_field("/proc/self/status", "VmHWM:") * 1024;
}

int tide_cmd_sort(int argc, char **argv)
{
	struct sort_run r = { .fd = -1, .scratch_fd = -1 };
	struct cli_progress progress;
	struct sort_job job;
	struct sigaction sa = { .sa_handler = on_fatal_signal };
	int ret, status = 1;
	uint64_t total_ns, written;

	ret = parse_args(argc, argv, &r.a);
	if (ret)
		return ret > 0 ? 0 : 2;
	if (check_args(&r.a) < 0)
		return 2;
	doomed_owner = getpid();
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A reader that goes away (| head) must not kill the run silently and
	 * leave the data file behind: writes to it just fail. */
	signal(SIGPIPE, SIG_IGN);

	ret = open_files(&r);
	if (ret < 0) {
		remove_data_file(&r, "nothing was sorted");
		if (r.fd >= 0)
			close(r.fd);
		return ret == -EEXIST ? 2 : 1;
	}
	/* Runs a quarter of the budget per thread: data + scratch of every
	 * thread's run fill half the budget, the rest is room for write-back. */
	r.run_bytes = r.a.pool / (4 * r.a.threads) / r.a.page_size * r.a.page_size;
	if (r.run_bytes < r.a.page_size)
		r.run_bytes = r.a.page_size;
	if (r.run_bytes > r.a.size)
		r.run_bytes = r.a.size;
	measure_start(&r);
	ret = r.a.backend == BACKEND_TIDE ? map_tide(&r) : map_kernel(&r);
	if (ret < 0)
		goto out;

	job = (struct sort_job){ .data = r.data, .scratch = r.scratch, .n = r.a.size / 8,
				 .run = r.run_bytes / 8, .threads = r.a.threads,
				 .progress = &progress };
	r.merges = sort_merge_passes(&job);
	cli_progress_init(&progress, false);

	/* From here on the file's old contents are gone. */
	r.written = true;
	snprintf(doomed_path, sizeof(doomed_path), "%s", r.path);
	doomed_armed = !r.a.keep;
	cli_progress_begin(&progress, "generate", r.a.size);
	ret = sort_generate(&job, r.a.seed, &r.before);
	r.phase_ns[PH_GENERATE] = cli_progress_end(&progress);
	if (ret < 0)
		goto out;

	cli_progress_begin(&progress, "sort", r.a.size * (1 + (uint64_t)r.merges));
	ret = sort_keys(&job);
	cli_progress_label(&progress, "sort");
	r.phase_ns[PH_SORT] = cli_progress_end(&progress);
	if (ret < 0)
		goto out;

	cli_progress_begin(&progress, "verify", r.a.size);
	ret = sort_verify(&job, &r.inversions, &r.after);
	r.phase_ns[PH_VERIFY] = cli_progress_end(&progress);
	if (ret < 0)
		goto out;

	/* What is left dirty by now, unknown beforehand: no bar, and a rate
	 * only from the bytes this phase wrote. */
	cli_progress_begin(&progress, "write-back", 0);
	ret = write_back(&r, &written);
	cli_progress_add(&progress, written);
	r.phase_ns[PH_WRITEBACK] = cli_progress_end(&progress);
	if (ret < 0)
		goto out;

	total_ns = cli_now_ns();
	ret = release(&r);
	r.phase_ns[PH_CLEANUP] = cli_now_ns() - total_ns;
	measure_end(&r);
	if (ret < 0)
		goto out;
	status = sort_report(&r);
	/* A file that failed verification is complete but wrong: --keep keeps it
	 * for a look, otherwise it goes like any other. */
	if (!r.a.keep && unlink(r.path) < 0)
		fprintf(stderr, "tide sort: could not remove %s: %s\n", r.path, strerror(errno));
	doomed_armed = 0;
	close(r.fd);
	return status;
out:
	if (ret < 0 && ret != -EINTR)
		fprintf(stderr, "tide sort: failed: %s\n", strerror(-ret));
	release(&r);
	remove_data_file(&r, "the sort did not finish");
	close(r.fd);
	return 1;
}
