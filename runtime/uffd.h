/*
 * The thin OS layer under tide: userfaultfd by syscall or /dev/userfaultfd,
 * the API handshake, and the ioctls, each returning 0 or -errno.
 * Definitions newer than the build machine's kernel headers live here.
 */
#ifndef TIDE_UFFD_H
#define TIDE_UFFD_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <linux/userfaultfd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
	struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC 0xAA
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif

/* How a userfaultfd was obtained. */
enum tide_uffd_source { UFFD_SRC_SYSCALL = 1, UFFD_SRC_DEV = 2 };

/*
 * Open a userfaultfd (O_CLOEXEC | extra_flags), by syscall first, then by
 * /dev/userfaultfd. Never asks for UFFD_USER_MODE_ONLY: in that mode the
 * application's own syscalls on evicted pages fail with EFAULT.
 * Returns the fd or -errno (EPERM: not permitted; ENOSYS: no userfaultfd).
 */
int tide__uffd_open(int extra_flags, enum tide_uffd_source *src);

/* UFFDIO_API handshake asking for `want`; *have gets what the kernel offers.
 * -ENOTSUP when a wanted feature is missing. */
int tide__uffd_api(int fd, uint64_t want, uint64_t *have);

/* Features this kernel offers, from a throw-away userfaultfd. */
int tide__uffd_features(uint64_t *have);

int tide__uffd_register(int fd, void *addr, size_t len, uint64_t mode, uint64_t *ioctls);
int tide__uffd_unregister(int fd, void *addr, size_t len);
/* UFFDIO_COPY; on a partial copy returns the kernel's error, *copied the bytes. */
int tide__uffd_copy(int fd, void *dst, const void *src, size_t len, uint64_t mode,
		    int64_t *copied);
int tide__uffd_wp(int fd, void *addr, size_t len, bool protect, bool wake);
int tide__uffd_wake(int fd, void *addr, size_t len);
/* UFFDIO_MOVE (6.8+) of whole present pages; on a partial move returns the
 * kernel's error, *moved the bytes. */
int tide__uffd_move(int fd, void *dst, void *src, size_t len, uint64_t mode, int64_t *moved);
int tide__uffd_poison(int fd, void *addr, size_t len);

/* Names of the UFFD_FEATURE_* bits, for reports; NULL past the last. */
const char *tide__uffd_feature_name(unsigned bit);

#endif /* TIDE_UFFD_H */
