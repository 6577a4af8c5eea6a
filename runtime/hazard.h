/*
 * Kernel-layer hazard probes: what happens on THIS kernel when a thread
 * touches a page of its own userfaultfd-registered region through a syscall.
 *
 * If the operation needs a uffd event to be served (a write-protect fault, a
 * missing fault, a REMOVE event) and the calling thread is the only reader of
 * that uffd, the thread deadlocks itself: this is how LLNL umap froze on Linux
 * 5.8. Each probe runs the operation in a forked child, where nothing serves
 * the uffd, and the parent waits on a pidfd with a timeout.
 *
 * Every function returns 0 or -errno; none exits or aborts the caller.
 */
#ifndef TIDE_HAZARD_H
#define TIDE_HAZARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The operation applied to a populated, write-protected page of the region. */
enum tide__hazard {
	TIDE__HZ_BUFFERED_WRITE,   /* pwrite() FROM the page, page cache */
	TIDE__HZ_DIRECT_WRITE,     /* O_DIRECT pwrite() FROM the page */
	TIDE__HZ_URING_WRITE,      /* io_uring IORING_OP_WRITE, O_DIRECT, FROM the page */
	TIDE__HZ_URING_WRITE_FIXED,/* memcpy to a registered bounce buffer, WRITE_FIXED */
	TIDE__HZ_REGISTER_BUFFERS, /* io_uring_register_buffers() over the page */
	TIDE__HZ_DIRECT_READ,      /* O_DIRECT pread() INTO the page */
	TIDE__HZ_URING_READ,       /* io_uring IORING_OP_READ, O_DIRECT, INTO the page */
	TIDE__HZ_VM_READV,         /* process_vm_readv() FROM the page */
	TIDE__HZ_VM_WRITEV,        /* process_vm_writev() INTO the page */
	TIDE__HZ_VMSPLICE,         /* vmsplice() of the page into a pipe */
	TIDE__HZ_DONTNEED,         /* madvise(MADV_DONTNEED), EVENT_REMOVE not enabled */
	TIDE__HZ_DONTNEED_REMOVE,  /* madvise(MADV_DONTNEED) with UFFD_FEATURE_EVENT_REMOVE */
	TIDE__HZ_COUNT
};

/* How the page is set up before the operation; flags, combined freely. */
#define TIDE__HZ_FORK 0x1u  /* a live fork() child COW-shares the page */
#define TIDE__HZ_THP  0x2u  /* a 2 MiB transparent huge page instead of 4 KiB */
#define TIDE__HZ_NMODES 4u  /* combinations of FORK and THP */
/* The child does not watch the uffd: only the parent's timeout can tell a
 * blocked operation (slower; used to check that both detectors agree). */
#define TIDE__HZ_NOWATCH 0x4u

enum tide__hazard_outcome {
	TIDE__HZ_COMPLETES = 1,  /* returned without needing the uffd served */
	TIDE__HZ_BLOCKS,         /* waited on the uffd: a lone service thread deadlocks */
	TIDE__HZ_FAILS,          /* returned an error (res->err) */
	TIDE__HZ_SKIPPED,        /* could not be set up here (res->err, res->detail) */
};

struct tide__hazard_result {
	enum tide__hazard_outcome outcome;
	int err;                 /* -errno for FAILS and SKIPPED, else 0 */
	bool event_seen;         /* BLOCKS: a uffd message was pending (else: timed out) */
	uint32_t event;          /* UFFD_EVENT_* that was pending */
	uint64_t fault_flags;    /* UFFD_PAGEFAULT_FLAG_* for a page fault */
	bool thp;                /* the page really was a huge page */
	int wp_after;            /* COMPLETES: page still uffd-wp afterwards: 1, 0, -1 unknown */
	int data_ok;             /* COMPLETES: the bytes moved were right: 1, 0, -1 n/a */
	uint64_t elapsed_us;
	char detail[200];        /* one line: what was seen */
};

/* Run hazard `h` with `mode` (TIDE__HZ_FORK | TIDE__HZ_THP) in a child.
 * `dir` holds the scratch file (NULL: $TIDE_PROBE_DIR, /var/tmp, $TMPDIR, /tmp); it must
 * support O_DIRECT for the direct cases. `timeout_ms` bounds the operation.
 * Returns 0 with *res filled (whatever the outcome), or -errno when the probe
 * itself could not run (fork, pidfd, memory). */
int tide__hazard_run(enum tide__hazard h, unsigned mode, const char *dir, int timeout_ms,
		     struct tide__hazard_result *res);

/* "direct-write" etc., a one-line description, and the outcome measured on
 * Linux 6.18 (the modern-kernel behaviour tide is designed for). */
const char *tide__hazard_name(enum tide__hazard h);
const char *tide__hazard_description(enum tide__hazard h);
enum tide__hazard_outcome tide__hazard_expected(enum tide__hazard h, unsigned mode);
const char *tide__hazard_outcome_name(enum tide__hazard_outcome o);
/* "4k", "4k+fork", "thp", "thp+fork". */
const char *tide__hazard_mode_name(unsigned mode);

/* Is this hazard on the path tide's service thread takes for write-back?
 * Bit 0: the `direct` path, bit 1: the `fixed` path. */
unsigned tide__hazard_paths(enum tide__hazard h);
#define TIDE__HZ_PATH_DIRECT 0x1u
#define TIDE__HZ_PATH_FIXED  0x2u

/* THP available for anonymous memory with MADV_HUGEPAGE. */
bool tide__hazard_thp_available(void);

/* ---- probe.c: the start-up answer for write-back `auto` ---- */
/* tide__probe_direct_write() (declared in internal.h) runs these cases and
 * caches its answer in this file, keyed by kernel release and boot id:
 * $XDG_RUNTIME_DIR/tide/, /run/tide/ for root, else /tmp/tide-$UID/.
 * TIDE_PROBE_CACHE=0 neither reads nor writes it. */
#define TIDE__PROBE_CACHE_NAME "probe-direct-write"
int tide__probe_cache_path(char *buf, size_t len);

#endif /* TIDE_HAZARD_H */
