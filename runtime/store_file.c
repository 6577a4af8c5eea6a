/*
 * The file store, written on struct tide_store_ops like any custom store.
 * It opens its own file description (O_DIRECT where the filesystem allows,
 * so fills do not double-cache in the page cache) and queues its I/O on the
 * pool's ring; reads into the registered bounce arena use READ_FIXED.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct file_store {
	struct tide_pool *pool;
	int fd;
};

static int file_read(void *store, struct tide_io *io, void *buf, size_t len, uint64_t off)
{
	struct file_store *fs = store;
	struct io_uring_sqe *sqe = tide__ring_sqe(fs->pool);

	if (!sqe)
		return -EBUSY;
	if (io->buf_index >= 0)
		io_uring_prep_read_fixed(sqe, fs->fd, buf, (unsigned)len, off, io->buf_index);
	else
		io_uring_prep_read(sqe, fs->fd, buf, (unsigned)len, off);
	io_uring_sqe_set_data(sqe, io);
	return 0;
}

static int file_write(void *store, struct tide_io *io, const void *buf, size_t len,
		      uint64_t off)
{
	struct file_store *fs = store;
	struct io_uring_sqe *sqe = tide__ring_sqe(fs->pool);

	if (!sqe)
		return -EBUSY;
	if (io->buf_index >= 0)
		io_uring_prep_write_fixed(sqe, fs->fd, buf, (unsigned)len, off, io->buf_index);
	else
		io_uring_prep_write(sqe, fs->fd, buf, (unsigned)len, off);
	io_uring_sqe_set_data(sqe, io);
	return 0;
}

static int file_flush(void *store, struct tide_io *io)
{
	struct file_store *fs = store;
	struct io_uring_sqe *sqe = tide__ring_sqe(fs->pool);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_fsync(sqe, fs->fd, IORING_FSYNC_DATASYNC);
	io_uring_sqe_set_data(sqe, io);
	return 0;
}

static void file_close(void *store)
{
	struct file_store *fs = store;

	close(fs->fd);
	free(fs);
}

const struct tide_store_ops tide__file_store_ops = {
	.read = file_read,
	.write = file_write,
	.flush = file_flush,
	.close = file_close,
};

/*
 * A new open file description of the same file: O_DIRECT must not leak into
 * the caller's descriptor, which a dup() would share.
 */
static int reopen(int fd, int flags)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	fd = open(path, flags | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int tide__file_store_open(struct tide_pool *p, int fd, int prot, void **store)
{
	int flags = (prot & TIDE_PROT_WRITE) ? O_RDWR : O_RDONLY;
	struct file_store *fs = calloc(1, sizeof(*fs));
	int nfd = -1;

	if (!fs)
		return tide__fail(-ENOMEM, "out of memory for a file store");
	if (p->opt.odirect) {
		nfd = reopen(fd, flags | O_DIRECT);
		if (nfd < 0 && !__atomic_exchange_n(&p->odirect_warned, 1, __ATOMIC_RELAXED))
			tide__warn("O_DIRECT is not available for this file (%s); "
				   "using buffered I/O, pages will also sit in the page cache",
				   strerror(-nfd));
	}
	if (nfd >= 0)
		__atomic_store_n(&p->odirect_used, 1, __ATOMIC_RELAXED);
	else
		nfd = reopen(fd, flags);
	if (nfd < 0) {
		/* No /proc: share the caller's description, buffered. */
		nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (nfd < 0)
			nfd = -errno;
	}
	if (nfd < 0) {
		free(fs);
		return tide__fail(nfd, "cannot reopen the file: %s", strerror(-nfd));
	}
	fs->pool = p;
	fs->fd = nfd;
	*store = fs;
	return 0;
}
