/*
 * Faults served on the faulting thread (TIDE_SIGNAL_FAULTS).
 *
 * The pool's userfaultfd is opened with UFFD_FEATURE_SIGBUS: a fault on a
 * missing or write-protected page of a region raises SIGBUS in the thread
 * that touched it, instead of queueing a message and putting the thread to
 * sleep until the service thread answers. The handler below serves the
 * fault itself, with the code the service thread runs (fault.c, fill.c,
 * pool.c), and returns; the access retries and finds its page. No message,
 * no second thread, no context switch: on one vCPU here that is ~1.3x the
 * round trip through a handler thread (bench_raw sigbus).
 *
 * Ownership: in this mode the pool's state belongs to whoever holds
 * p->state, the service thread for each pass of its loop, a handler for the
 * time it serves one fault. A demand read of a file store runs on the
 * faulting thread with the lock dropped (fill.c, fill_now), so a fault that
 * goes to the disk holds up nobody else; reads ahead and write-backs are
 * queued on the ring as before and submitted by the service thread, and a
 * custom store's read is called here (a store that completes at once, like
 * a memory store, so serves the fault without any other thread). A fault
 * that must wait (its page is being read or written back, or the pool has
 * no room) waits on a futex word the pool bumps whenever a pass or a
 * handler changed something: polled for up to TIDE_WAKE_POLL_US, as a
 * taken lock is, then asleep.
 *
 * The handler runs synchronously, at the instruction that touched a tide
 * page, which is application code or a memory routine, never the C
 * library's allocator or a lock tide takes: so it may allocate and lock as
 * the service thread does. It saves errno.
 *
 * Limits (docs/design.md): a system call that touches a page not in memory
 * fails with EFAULT instead of waiting (the kernel cannot raise the signal
 * there); a thread that blocks SIGBUS dies of such a fault; a program that
 * replaces the SIGBUS handler after tide installed it takes the faults away.
 * Signals tide does not own (another address, a poisoned page, kill(2)) go
 * to the handler that was there before, or kill the process as they would
 * have.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>
#include <linux/futex.h>

#include "internal.h"

static struct sigaction chained;         /* SIGBUS before tide's handler */
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_error;

/* Set while a handler's own fault runs: its demand read may be synchronous. */
static __thread struct tide_pool *serving;

bool tide__signal_serving(const struct tide_pool *p)
{
	return serving == p;
}

/*
 * A thread that sleeps on a taken lock sleeps in the kernel, and its vCPU
 * halts when nothing else runs there: waking it costs ~50-100 us on these
 * VMs, where the lock is held for a few. So a thread that must wait polls
 * first, for at most the wake-polling window (TIDE_WAKE_POLL_US), giving
 * the CPU away between polls in case the thread it waits for needs it.
 */
static uint64_t poll_end(const struct tide_pool *p)
{
	return tide__now_ns() + (uint64_t)p->opt.wake_poll_us * 1000;
}

static void poll_pause(void)
{
	for (int i = 0; i < 32; i++)
		tide__cpu_relax();
	sched_yield();
}

void tide__state_lock(struct tide_pool *p)
{
	uint64_t until;

	if (pthread_mutex_trylock(&p->state) == 0)
		return;
	for (until = poll_end(p); tide__now_ns() < until; poll_pause())
		if (pthread_mutex_trylock(&p->state) == 0)
			return;
	pthread_mutex_lock(&p->state);
}

/* Faults that wait retry when the state they wait on may have moved. */
void tide__state_unlock(struct tide_pool *p, bool changed)
{
	if (changed && p->serve_waiters) {
		__atomic_add_fetch(&p->serve_seq, 1, __ATOMIC_RELEASE);
		syscall(SYS_futex, &p->serve_seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
	}
	pthread_mutex_unlock(&p->state);
}

/* Wait until the pool's state changes; the lock is dropped meanwhile. Polled
 * first, as the lock is, then asleep. */
static void wait_change(struct tide_pool *p)
{
	uint32_t seq = __atomic_load_n(&p->serve_seq, __ATOMIC_ACQUIRE);
	uint64_t until = poll_end(p);
	bool slept = false;

	p->st.c.signal_waits++;
	p->serve_waiters++;
	pthread_mutex_unlock(&p->state);
	while (__atomic_load_n(&p->serve_seq, __ATOMIC_ACQUIRE) == seq && tide__now_ns() < until)
		poll_pause();
	/* Only if polling saw nothing: a futex call that returns at once is
	 * still a system call on every wait polling ended. */
	if (__atomic_load_n(&p->serve_seq, __ATOMIC_ACQUIRE) == seq) {
		syscall(SYS_futex, &p->serve_seq, FUTEX_WAIT_PRIVATE, seq, NULL, NULL, 0);
		slept = true;
	}
	tide__state_lock(p);
	p->serve_waiters--;
	p->st.c.signal_sleeps += slept;
}

/*
 * What kind of fault it was. On x86-64 the page-fault error code is in the
 * signal context: bit 0 set means the page was present (so: a write to a
 * write-protected page), bit 1 a write. Elsewhere the caller infers it from
 * the page's state. Returns false when unknown.
 */
static bool fault_flags(const void *ucv, uint64_t *flags)
{
#if defined(__x86_64__)
	const ucontext_t *uc = ucv;
	greg_t err = uc->uc_mcontext.gregs[REG_ERR];

	if (err & 1)
		*flags = UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE;
	else
		*flags = err & 2 ? UFFD_PAGEFAULT_FLAG_WRITE : 0;
	return true;
#else
	(void)ucv;
	*flags = 0;
	return false;
#endif
}

/* A handler's own pass: what the service thread would do next, short of
 * requests and of submitting to the ring, so what completed is installed
 * now. Operations a handler queues (reads ahead, write-backs) are submitted
 * by the service thread: io_uring ties a request to the thread that
 * submitted it, and an app thread may exit before its I/O ends. */
static void serve_pass(struct tide_pool *p)
{
	int n;

	do {
		n = tide__ring_reap(p);
		n += tide__io_remote_run(p);
		tide__io_backlog_run(p);
		n += tide__waiters_run(p);
	} while (n);
}

static void fault_once(struct tide_pool *p, uintptr_t addr, uint64_t flags, uint64_t now)
{
	struct uffd_msg m = { .event = UFFD_EVENT_PAGEFAULT };

	m.arg.pagefault.address = addr;
	m.arg.pagefault.flags = flags;
	p->st.c.faults_signal++;
	serving = p;
	tide__fault(p, &m, now);
	serving = NULL;
	serve_pass(p);
}

/*
 * Serve a fault at `addr` of pool p; false if it is not ours (the region
 * went away). The loop asks the fault path once, then waits while the page
 * is on its way, and returns as soon as retrying the access can make
 * progress: the page is in, or was dropped again, or could not be read
 * (a poisoned page then raises the signal tide passes on).
 */
static bool serve(struct tide_pool *p, uintptr_t addr, const void *uc)
{
	uint64_t flags, now = tide__now_ns();
	bool known = fault_flags(uc, &flags), asked = false;
	struct tide_pool *outer = tide__ring_service(p);
	struct region *r;

	/* Faults flow: idle vCPUs poll (a latency request) from now, so this
	 * thread's wake-up from a read or a wait lands at once. */
	tide__keepers_kick(p);
	tide__state_lock(p);
	for (;;) {
		uint64_t page;
		uint32_t f;
		uint8_t state;

		r = tide__region_find(p, addr);
		if (!r)
			break;
		page = (addr - (uintptr_t)r->base) >> r->page_shift;
		f = tide__slot(r, page);
		state = f == TIDE_NO_FRAME ? FRAME_FREE : tide__frame(p, f)->state;
		if (state == FRAME_FREE || state == FRAME_STAGED) {
			if (state == FRAME_FREE && tide__fault_waiting(p, r, page)) {
				wait_change(p);
				continue;
			}
			if (asked)
				break;
			/* Not present (a run's staged trigger page is not either):
			 * a missing fault, whatever the guess said. */
			fault_once(p, addr, known ? flags & ~(uint64_t)UFFD_PAGEFAULT_FLAG_WP : 0, now);
			asked = true;
			continue;
		}
		if (state == FRAME_FILLING) {
			wait_change(p);
			continue;
		}
		if (state == FRAME_WRITEBACK && tide__frame(p, f)->moved) {
			/* Out of the region for its write-back: the fault path
			 * asks for it back, then the page comes back when the
			 * write is done. */
			if (!asked) {
				fault_once(p, addr, known ? flags & ~(uint64_t)UFFD_PAGEFAULT_FLAG_WP : 0, now);
				asked = true;
				continue;
			}
			wait_change(p);
			continue;
		}
		/* Present now. A fault raised before it arrived just retries;
		 * a write to a protected page is the write-protect fault. */
		if (known && !(flags & UFFD_PAGEFAULT_FLAG_WP))
			break;
		if (!asked) {
			fault_once(p, addr, UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE, now);
			asked = true;
			continue;
		}
		if (state != FRAME_WRITEBACK)
			break;
		/* Its write-back ends, then the page is writable again. */
		wait_change(p);
	}
	/* The page this thread filled may be evicted again from now on. */
	if (r) {
		uint32_t f = tide__slot(r, (addr - (uintptr_t)r->base) >> r->page_shift);

		if (f != TIDE_NO_FRAME)
			tide__frame(p, f)->held = 0;
	}
	tide__ring_restore(outer);
	/* The service thread submits what was queued; a request in progress
	 * (unmap, flush) may wait for what changed. */
	if (io_uring_sq_ready(&p->ring) || (asked && p->active))
		uv_async_send(&p->wakeup);
	tide__spare_trim(p);
	tide__state_unlock(p, asked);
	return r != NULL;
}

static void pass_on(int sig, siginfo_t *si, void *uc)
{
	if (chained.sa_flags & SA_SIGINFO) {
		if (chained.sa_sigaction) {
			chained.sa_sigaction(sig, si, uc);
			return;
		}
	} else if (chained.sa_handler != SIG_DFL && chained.sa_handler != SIG_IGN) {
		chained.sa_handler(sig);
		return;
	}
	/* Nobody else wanted it: the default action, when the access (or the
	 * sender) raises it again. A fault cannot be ignored; a sent signal
	 * can. */
	if (chained.sa_handler == SIG_IGN && si->si_code <= 0)
		return;
	signal(SIGBUS, SIG_DFL);
	if (si->si_code <= 0)
		raise(SIGBUS);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	struct tide_pool *p;

	if (si->si_code == BUS_ADRERR && (p = tide__pool_serving(si->si_addr)) &&
	    p->opt.signal_faults && serve(p, (uintptr_t)si->si_addr, uc)) {
		errno = saved;
		return;
	}
	pass_on(sig, si, uc);
	errno = saved;
}

static void install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &chained) < 0)
		install_error = -errno;
}

int tide__signal_install(void)
{
	pthread_once(&install_once, install);
	if (install_error)
		return tide__fail(install_error, "cannot install the SIGBUS handler: %s",
				  strerror(-install_error));
	return 0;
}
