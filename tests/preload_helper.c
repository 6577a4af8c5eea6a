/*
 * An unmodified program for tests/preload.c: it maps files with plain
 * mmap(2), knows nothing of tide, and reports what it read on stdout.
 *
 *   preload_helper rw FILE       map MAP_SHARED read-write, checksum, write
 *                                the pattern, msync, munmap
 *   preload_helper ro FILE       map MAP_PRIVATE read-only, checksum, munmap
 *   preload_helper anon BYTES    an anonymous mapping, written and summed
 *   preload_helper fork FILE     write the pattern, fork; the child sums the
 *                                mapping, the parent waits for it, then msyncs
 *   preload_helper partial FILE  munmap half of a mapping, then all of it
 *   preload_helper remap FILE    map the first half, mremap to the whole file
 *   preload_helper exit N        exit with status N
 *   preload_helper _exit FILE    write the pattern, _exit(0): no msync, no
 *                                destructors
 *   preload_helper execl FILE    write the pattern, then become
 *                                `preload_helper exit 0` with execl (also
 *                                execlp, execle, execvp, execve): the image
 *                                ends unflushed
 *   preload_helper kill SIG      die of signal SIG
 *
 * Checksums are FNV-1a over the file's 64-bit words; the pattern is
 * word i = i * 0x9e3779b97f4a7c15 ^ 0x5eed (tests/preload.c computes both).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* mremap */
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t checksum(const uint64_t *w, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ w[i]) * 0x100000001b3ull;
	return h;
}

static void pattern(uint64_t *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		w[i] = i * 0x9e3779b97f4a7c15ull ^ 0x5eed;
}

static void die(const char *what)
{
	fprintf(stderr, "preload_helper: %s: %s\n", what, strerror(errno));
	exit(100);
}

static uint64_t *map(const char *path, int prot, int flags, size_t *len)
{
	int fd = open(path, prot & PROT_WRITE ? O_RDWR : O_RDONLY);
	struct stat st;
	void *p;

	if (fd < 0 || fstat(fd, &st) < 0)
		die(path);
	*len = (size_t)st.st_size;
	p = mmap(NULL, *len, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	close(fd);   /* the mapping keeps the file */
	return p;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	size_t len;
	uint64_t *w;

	if (argc != 3) {
		fprintf(stderr, "usage: preload_helper MODE ARG (see the source)\n");
		return 2;
	}
	if (!strcmp(mode, "exit"))
		return atoi(argv[2]);
	if (!strcmp(mode, "kill")) {
		signal(atoi(argv[2]), SIG_DFL);
		raise(atoi(argv[2]));
		return 101;
	}
	if (!strcmp(mode, "_exit")) {
		w = map(argv[2], PROT_READ | PROT_WRITE, MAP_SHARED, &len);
		pattern(w, len / 8);
		_exit(0);
	}
	if (!strncmp(mode, "exec", 4)) {
		char *const args[] = { argv[0], "exit", "0", NULL };

		w = map(argv[2], PROT_READ | PROT_WRITE, MAP_SHARED, &len);
		pattern(w, len / 8);
		fflush(stdout);
		if (!strcmp(mode, "execl"))
			execl(argv[0], argv[0], "exit", "0", (char *)NULL);
		else if (!strcmp(mode, "execlp"))
			execlp(argv[0], argv[0], "exit", "0", (char *)NULL);
		else if (!strcmp(mode, "execle"))
			execle(argv[0], argv[0], "exit", "0", (char *)NULL, environ);
		else if (!strcmp(mode, "execvp"))
			execvp(argv[0], args);
		else if (!strcmp(mode, "execve"))
			execve(argv[0], args, environ);
		else
			errno = EINVAL;
		die(mode);
	}
	if (!strcmp(mode, "anon")) {
		len = strtoull(argv[2], NULL, 0);
		w = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (w == MAP_FAILED)
			die("mmap");
		pattern(w, len / 8);
		printf("checksum %016llx\n", (unsigned long long)checksum(w, len / 8));
		if (munmap(w, len) < 0)
			die("munmap");
		return 0;
	}
	if (!strcmp(mode, "ro")) {
		w = map(argv[2], PROT_READ, MAP_PRIVATE, &len);
		printf("checksum %016llx\n", (unsigned long long)checksum(w, len / 8));
		if (munmap(w, len) < 0)
			die("munmap");
		return 0;
	}
	if (!strcmp(mode, "rw")) {
		w = map(argv[2], PROT_READ | PROT_WRITE, MAP_SHARED, &len);
		printf("checksum %016llx\n", (unsigned long long)checksum(w, len / 8));
		pattern(w, len / 8);
		if (msync(w, len, MS_SYNC) < 0)
			die("msync");
		if (munmap(w, len) < 0)
			die("munmap");
		return 0;
	}
	if (!strcmp(mode, "fork")) {
		int status;
		pid_t pid;

		w = map(argv[2], PROT_READ | PROT_WRITE, MAP_SHARED, &len);
		pattern(w, len / 8);
		fflush(stdout);
		pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			printf("child checksum %016llx\n", (unsigned long long)checksum(w, len / 8));
			exit(0);
		}
		if (waitpid(pid, &status, 0) != pid)
			die("waitpid");
		if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			fprintf(stderr, "preload_helper: the child failed (status %#x)\n", status);
			return 102;
		}
		printf("checksum %016llx\n", (unsigned long long)checksum(w, len / 8));
		if (msync(w, len, MS_SYNC) < 0)
			die("msync");
		return 0;     /* the mapping is left for exit to write back */
	}
	if (!strcmp(mode, "partial")) {
		int ret, err;

		w = map(argv[2], PROT_READ | PROT_WRITE, MAP_SHARED, &len);
		ret = munmap((char *)w + len / 2, len / 2);
		err = errno;
		printf("partial munmap %d %s\n", ret, ret ? strerror(err) : "ok");
		printf("checksum %016llx\n", (unsigned long long)checksum(w, len / 16));
		if (munmap(w, len) < 0)
			die("munmap");
		return 0;
	}
	if (!strcmp(mode, "remap")) {
		int fd = open(argv[2], O_RDONLY);
		struct stat st;

		if (fd < 0 || fstat(fd, &st) < 0)
			die(argv[2]);
		len = (size_t)st.st_size;
		w = mmap(NULL, len / 2, PROT_READ, MAP_SHARED, fd, 0);
		if (w == MAP_FAILED)
			die("mmap");
		close(fd);
		printf("half %016llx\n", (unsigned long long)checksum(w, len / 16));
		w = mremap(w, len / 2, len, MREMAP_MAYMOVE);
		if (w == MAP_FAILED)
			die("mremap");
		printf("checksum %016llx\n", (unsigned long long)checksum(w, len / 8));
		if (munmap(w, len) < 0)
			die("munmap");
		return 0;
	}
	fprintf(stderr, "preload_helper: unknown mode %s\n", mode);
	return 2;
}
