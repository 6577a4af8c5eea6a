/*
 * bench_raw uring, uringw, uringwf: the disk's limits, io_uring with O_DIRECT
 * and fixed (registered) buffers, the queue kept full: random 4 KiB reads at
 * QD 1, 8 and 32, sequential 64 KiB reads and writes at QD32, and the write
 * alone beside tide's eviction figures, rewriting --file or streaming into a
 * new file.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_raw.h"

static void uring_issue(struct io_uring *ring, int fd, const struct iovec *iov, unsigned slot,
			uint64_t *t_start, uint64_t blk, bool write)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	size_t bs = iov[slot].iov_len;

	if (write)
		io_uring_prep_write_fixed(sqe, fd, iov[slot].iov_base, bs, blk * bs, (int)slot);
	else
		io_uring_prep_read_fixed(sqe, fd, iov[slot].iov_base, bs, blk * bs, (int)slot);
	sqe->user_data = slot;
	t_start[slot] = now_ns();
}

/*
 * The buffers sit in transparent huge pages, as tide's bounce arena does: a
 * request then carries one physically contiguous segment, not one per
 * 4 KiB, and this VM's virtio disk is much faster for it (sequential 64 KiB
 * reads at QD32: 2.6-2.7 GB/s against 1.8-1.9 GB/s from 4 KiB pages, in
 * alternating runs). The limit is the best io_uring does here.
 */
static void uring_run(const char *name, int fd, size_t bs, unsigned qd, bool random, bool write)
{
	struct io_uring ring;
	struct iovec *iov = calloc(qd, sizeof(*iov));
	uint64_t *t_start = calloc(qd, sizeof(*t_start));
	uint64_t nblocks = file_size / bs, next = 0, rng = 0x1234567 + qd, done = 0;
	char *mem = map_anon((size_t)qd * bs, 2 * MiB, true);
	struct lat lat;
	struct out o;
	unsigned inflight = 0;

	if (!iov || !t_start || nblocks == 0)
		die("uring setup for %s", name);
	memset(mem, 0xa5, (size_t)qd * bs);
	int ret = io_uring_queue_init(qd, &ring, 0);
	if (ret < 0)
		die("io_uring_queue_init: %s", strerror(-ret));
	for (unsigned i = 0; i < qd; i++)
		iov[i] = (struct iovec){ mem + (size_t)i * bs, bs };
	if ((ret = io_uring_register_buffers(&ring, iov, qd)) < 0)
		die("io_uring_register_buffers: %s", strerror(-ret));
	lat_init(&lat, 1 << 20);

	uint64_t start = now_ns(), deadline = start + (uint64_t)(secs * 1e9);
	for (unsigned slot = 0; slot < qd; slot++)
		uring_issue(&ring, fd, iov, slot, t_start, random ? rng_next(&rng) % nblocks
			    : next++ % nblocks, write);
	inflight = qd;
	while (inflight) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		io_uring_submit_and_wait(&ring, 1);
		uint64_t t = now_ns();
		io_uring_for_each_cqe(&ring, head, cqe) {
			unsigned slot = (unsigned)cqe->user_data;

			if (cqe->res != (int)bs)
				die("%s: I/O result %d", name, cqe->res);
			lat_add(&lat, t - t_start[slot]);
			done++;
			n++;
			/* Reissue into the slot that just completed until the deadline. */
			if (t < deadline)
				uring_issue(&ring, fd, iov, slot, t_start, random ? rng_next(&rng) %
					    nblocks : next++ % nblocks, write);
			else
				inflight--;
		}
		io_uring_cq_advance(&ring, n);
	}
	double el = (double)(now_ns() - start) / 1e9;
	out_begin(&o, name);
	out_u64(&o, "bs", bs);
	out_u64(&o, "qd", qd);
	out_u64(&o, "ios", done);
	out_num(&o, "per_s", (double)done / el);
	out_num(&o, "mbps", (double)done * (double)bs / el / 1e6);
	out_lat(&o, &lat);
	out_end(&o);
	lat_free(&lat);
	io_uring_queue_exit(&ring);
	munmap(mem, (size_t)qd * bs);
	free(iov);
	free(t_start);
}

void test_uring(void)
{
	int fd = open_file(O_RDWR | O_DIRECT);

	uring_run("uring.randread.4k.qd1", fd, 4 * KiB, 1, true, false);
	uring_run("uring.randread.4k.qd8", fd, 4 * KiB, 8, true, false);
	uring_run("uring.randread.4k.qd32", fd, 4 * KiB, 32, true, false);
	uring_run("uring.seqread.64k.qd32", fd, 64 * KiB, 32, false, false);
	uring_run("uring.seqwrite.64k.qd32", fd, 64 * KiB, 32, false, true);
	fdatasync(fd);
	close(fd);
}

void test_uringw(void)
{
	int fd = open_file(O_RDWR | O_DIRECT);

	uring_run("uring.seqwrite.64k.qd32.beside", fd, 64 * KiB, 32, false, true);
	fdatasync(fd);
	close(fd);
}

/*
 * The same write streaming into a new file, allocated and never written,
 * sized as bench_fault's fresh file (the budget plus 4 GB/s for --secs), so
 * it never wraps. That is what tide's eviction figure does: every write is
 * a first write, and the file system converts its unwritten extents as the
 * writes complete. Rewriting the old file spares it that work (here about
 * 18% faster in alternating runs).
 */
void test_uringwf(void)
{
	char path[4096];
	uint64_t size = (budget + (uint64_t)(secs * 4e9) + MiB - 1) / MiB * MiB;
	int fd, ret;

	if (!file)
		die("this test needs --file");
	snprintf(path, sizeof(path), "%s.rawfresh.%d", file, (int)getpid());
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_DIRECT, 0600);
	if (fd < 0)
		die("create %s: %s", path, strerror(errno));
	unlink(path);
	if ((ret = posix_fallocate(fd, 0, (off_t)size)) != 0)
		die("fallocate %s: %s", path, strerror(ret));
	file_size = size;
	uring_run("uring.seqwrite.64k.qd32.fresh.beside", fd, 64 * KiB, 32, false, true);
	fdatasync(fd);
	close(fd);
}
