/* userfaultfd: open, API handshake, feature probe and the ioctls. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uffd.h"

int tide__uffd_open(int extra_flags, enum tide_uffd_source *src)
{
	int flags = O_CLOEXEC | extra_flags;
	int fd, dev, err;

	fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd >= 0) {
		if (src)
			*src = UFFD_SRC_SYSCALL;
		return fd;
	}
	err = -errno;
	if (err == -ENOSYS)
		return err;
	/* The syscall refuses kernel-mode faults to unprivileged users unless
	 * vm.unprivileged_userfaultfd=1; /dev/userfaultfd is governed by its
	 * file permissions instead. */
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return errno == ENOENT ? err : -errno;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	err = fd < 0 ? -errno : 0;
	close(dev);
	if (fd < 0)
		return err;
	if (src)
		*src = UFFD_SRC_DEV;
	return fd;
}

int tide__uffd_api(int fd, uint64_t want, uint64_t *have)
{
	struct uffdio_api api = { .api = UFFD_API, .features = want };

	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return -errno;
	if (have)
		*have = api.features;
	if ((api.features & want) != want)
		return -ENOTSUP;
	return 0;
}

int tide__uffd_features(uint64_t *have)
{
	int fd = tide__uffd_open(O_NONBLOCK, NULL);
	int ret;

	if (fd < 0)
		return fd;
	ret = tide__uffd_api(fd, 0, have);
	close(fd);
	return ret;
}

int tide__uffd_register(int fd, void *addr, size_t len, uint64_t mode, uint64_t *ioctls)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = mode,
	};

	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	if (ioctls)
		*ioctls = reg.ioctls;
	return 0;
}

int tide__uffd_unregister(int fd, void *addr, size_t len)
{
	struct uffdio_range r = { .start = (uintptr_t)addr, .len = len };

	return ioctl(fd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

int tide__uffd_copy(int fd, void *dst, const void *src, size_t len, uint64_t mode,
		    int64_t *copied)
{
	struct uffdio_copy c = {
		.dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len, .mode = mode,
	};
	int ret = ioctl(fd, UFFDIO_COPY, &c) < 0 ? -errno : 0;

	/* The kernel reports the real outcome in .copy: bytes copied, or -errno. */
	if (copied)
		*copied = c.copy;
	return ret;
}

int tide__uffd_wp(int fd, void *addr, size_t len, bool protect, bool wake)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = (uintptr_t)addr, .len = len },
		/* The kernel refuses DONTWAKE with WP: protecting wakes nobody. */
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP
				: (wake ? 0 : UFFDIO_WRITEPROTECT_MODE_DONTWAKE),
	};

	return ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

int tide__uffd_move(int fd, void *dst, void *src, size_t len, uint64_t mode, int64_t *moved)
{
	struct uffdio_move mv = {
		.dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len, .mode = mode,
	};
	int ret = ioctl(fd, UFFDIO_MOVE, &mv) < 0 ? -errno : 0;

	if (moved)
		*moved = mv.move;
	return ret;
}

int tide__uffd_wake(int fd, void *addr, size_t len)
{
	struct uffdio_range r = { .start = (uintptr_t)addr, .len = len };

	return ioctl(fd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

int tide__uffd_poison(int fd, void *addr, size_t len)
{
	struct uffdio_poison p = { .range = { .start = (uintptr_t)addr, .len = len } };

	return ioctl(fd, UFFDIO_POISON, &p) < 0 ? -errno : 0;
}

static const char *const feature_names[] = {
	"PAGEFAULT_FLAG_WP", "EVENT_FORK", "EVENT_REMAP", "EVENT_REMOVE",
	"MISSING_HUGETLBFS", "MISSING_SHMEM", "EVENT_UNMAP", "SIGBUS",
	"THREAD_ID", "MINOR_HUGETLBFS", "MINOR_SHMEM", "EXACT_ADDRESS",
	"WP_HUGETLBFS_SHMEM", "WP_UNPOPULATED", "POISON", "WP_ASYNC", "MOVE",
};

const char *tide__uffd_feature_name(unsigned bit)
{
	return bit < sizeof(feature_names) / sizeof(feature_names[0]) ? feature_names[bit] : NULL;
}
