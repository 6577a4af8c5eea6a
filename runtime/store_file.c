/*
 * The file store, written on struct tide_store_ops like any custom store.
 * It opens its own file description (O_DIRECT where the filesystem allows,
 * so fills do not double-cache in the page cache) and queues its I/O on the
 * pool's ring; reads into the registered bounce arena use READ_FIXED.
 *
 * Holes (never written, or fallocated and unwritten) are found with
 * lseek(SEEK_DATA), asked afresh for every run: another process may write
 * the file, and a page that is not resident must read what the file holds
 * now, so no answer "hole" is ever kept. An answer "data" may be kept: if
 * the file changes under it, the read still returns the truth. So the data
 * before the first hole seen at open costs a dense file no system call.
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
	bool seek_holes;         /* lseek(SEEK_DATA) works on fd, and fd is ours */
	uint64_t data_end;       /* [0, data_end) was data at open */
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

ssize_t tide__file_store_read_now(void *store, struct io_uring *ring, void *buf, size_t len,
				  uint64_t off)
{
	struct file_store *fs = store;

	return tide__ring_read_now(ring, fs->fd, buf, len, off);
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

/* A file without SEEK_DATA (EINVAL, ENOTSUP, ESPIPE) will not learn it:
 * the store stops asking and reads everything. */
static void holes_unknown(struct file_store *fs, int err)
{
	fs->seek_holes = false;
	if (fs->pool->opt.verbose)
		tide__info("this file cannot report its holes (lseek: %s); every page is read",
			   strerror(err));
}

static int64_t file_hole(void *store, uint64_t off, uint64_t len)
{
	struct file_store *fs = store;
	off_t data;

	if (!fs->seek_holes || off < fs->data_end)
		return 0;
	data = lseek(fs->fd, (off_t)off, SEEK_DATA);
	if (data < 0) {
		/* ENXIO: no data from off to the end of the file. */
		if (errno == ENXIO)
			return (int64_t)len;
		if (errno != EINVAL && errno != ENOTSUP && errno != ESPIPE)
			return -errno;
		holes_unknown(fs, errno);
		return 0;
	}
	return (uint64_t)data - off < len ? (int64_t)((uint64_t)data - off) : (int64_t)len;
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
	.hole = file_hole,
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

/* The first hole (the end of a dense file): what lies before it was data. */
static void find_first_hole(struct file_store *fs)
{
	off_t hole = lseek(fs->fd, 0, SEEK_HOLE);

	if (hole >= 0)
		fs->data_end = (uint64_t)hole;
	else if (errno != ENXIO)      /* ENXIO: an empty file, no data at all */
		holes_unknown(fs, errno);
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
	fs->pool = p;
	fs->seek_holes = nfd >= 0;
	if (nfd < 0) {
		/* No /proc: share the caller's description, buffered, and
		 * never lseek it: that would move the caller's file offset. */
		nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (nfd < 0)
			nfd = -errno;
	}
	if (nfd < 0) {
		free(fs);
		return tide__fail(nfd, "cannot reopen the file: %s", strerror(-nfd));
	}
	fs->fd = nfd;
	if (fs->seek_holes)
		find_first_hole(fs);
	*store = fs;
	return 0;
}
