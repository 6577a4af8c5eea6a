/*
 * The service thread: one libuv loop per pool, watching
 *   - the userfaultfd (uv_poll): page faults,
 *   - the ring's eventfd (uv_poll): storage completions,
 *   - an async handle: requests and completions from other threads,
 *   - a timer: background write-back,
 *   - an idle handle that, when TIDE_SPIN_US is set, keeps polling for a
 *     short window after activity: on a VM, waking a sleeping thread on the
 *     other vCPU costs more than a whole fault round trip.
 * Every callback runs the same pass, which drives faults, completions and
 * requests until nothing moves. Nothing in a pass blocks on I/O.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define FAULT_BATCH 64

static int drain_uffd(struct tide_pool *p)
{
	struct uffd_msg msgs[FAULT_BATCH];
	int total = 0;

	for (;;) {
		ssize_t n = read(p->uffd, msgs, sizeof(msgs));
		uint64_t now;

		if (n <= 0)
			return total;
		now = tide__now_ns();
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++)
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
				tide__fault(p, &msgs[i], now);
		total += (int)(n / (ssize_t)sizeof(msgs[0]));
		if (n < (ssize_t)sizeof(msgs))
			return total;
	}
}

static int take_requests(struct tide_pool *p)
{
	struct request *req, *next, *rev = NULL;
	int n = 0;

	if (!__atomic_load_n(&p->requests, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&p->lock);
	req = p->requests;
	p->requests = NULL;
	pthread_mutex_unlock(&p->lock);
	/* They were pushed newest first; serve them in arrival order. */
	for (; req; req = next) {
		next = req->next;
		req->next = rev;
		rev = req;
	}
	for (req = rev; req; req = next, n++) {
		next = req->next;
		tide__request_start(p, req);
	}
	return n;
}

/* Drive every source until none has anything left; the work done. */
static int drive(struct tide_pool *p)
{
	int work = 0, n;

	do {
		p->doing = "reading faults and filling or evicting";
		n = drain_uffd(p);
		p->doing = "starting requests";
		n += take_requests(p);
		p->doing = "submitting I/O";
		tide__ring_submit(p);
		p->doing = "completing I/O";
		n += tide__ring_reap(p);
		n += tide__io_remote_run(p);
		tide__io_backlog_run(p);
		p->doing = "retrying faults that waited for room";
		n += tide__waiters_run(p);
		p->doing = "advancing flush, unmap and prefetch requests";
		tide__requests_progress(p);
		tide__ring_submit(p);
		work += n;
	} while (n);
	return work;
}

/* One pass of the loop: drive, under the state lock. */
static int pass(struct tide_pool *p)
{
	int work = 0;

	tide__state_lock(p);
	if (p->wake_due) {
		uint64_t due = p->wake_due;

		p->wake_due = 0;
		tide__loop_wake_at(p, due);
	}
	/*
	 * Completions the pass reaps itself need no eventfd, nor the loop's
	 * wake-up on it later: it is off while the pass runs (a buffered read
	 * from the page cache completes inside the submit). Back on before the
	 * loop waits; then whatever completed while it was off is reaped. The
	 * fence pairs with the kernel's full barrier between publishing a CQE
	 * and reading the flag (wq_has_sleeper() in io_cqring_wake()): either
	 * the pass sees the CQE or the kernel sees the eventfd on. A kernel
	 * without the flag (before 5.8) leaves the eventfd on.
	 */
	if (p->parent)
		tide__shard_balance(p);
	do {
		io_uring_cq_eventfd_toggle(&p->ring, false);
		work += drive(p);
		io_uring_cq_eventfd_toggle(&p->ring, true);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	} while (io_uring_cq_ready(&p->ring));
	/* Evicted pages no fill took leave, as far as the budget needs. */
	tide__spare_trim(p);
	tide__state_unlock(p, true);
	p->doing = "waiting in the event loop";
	if (work) {
		__atomic_store_n(&p->last_progress_ns, tide__now_ns(), __ATOMIC_RELAXED);
		tide__keepers_kick(p);
	}
	return work;
}

/*
 * TIDE_SPIN_US: after activity the service thread polls the loop instead of
 * sleeping in it, so the next fault or completion costs it no wake-up. It
 * polls with sched_yield() between looks, so a thread woken on its CPU runs
 * at once. When a yield comes back late having switched to another thread
 * (SPIN_YIELDED_NS, and an involuntary switch counted: time the hypervisor
 * took the vCPU away is not one), this CPU is wanted by a thread with work
 * of its own; a poller that stayed would share the CPU with it round by
 * round and lose the wake-up preemption a sleeping service thread gets when
 * a fault or a completion arrives. It sleeps in the loop instead for
 * SPIN_REST_MIN_NS, twice as long each time this happens within a second of
 * the last rest, up to SPIN_REST_MAX_NS. (The slice a busy thread gets is
 * 3-4 ms here; the app's own unmaps and the host's steal make ~1 ms gaps.)
 */
#define SPIN_YIELDED_NS (2 * 1000 * 1000ull)
#define SPIN_REST_MIN_NS (4 * 1000 * 1000ull)
#define SPIN_REST_MAX_NS (256 * 1000 * 1000ull)
#define SPIN_TURN_NS (1000 * 1000ull)

static void on_spin(uv_idle_t *h);

/* Activity: poll until TIDE_SPIN_US after it. */
static void spin_start(struct tide_pool *p)
{
	uint64_t now;

	/* Faults served on their own threads need nobody polling. */
	if (!p->opt.spin_us || p->opt.signal_faults || p->stopping)
		return;
	now = tide__now_ns();
	if (now < p->spin_rest_until)
		return;
	p->spin_until = now + (uint64_t)p->opt.spin_us * 1000;
	if (!uv_is_active((uv_handle_t *)&p->spin))
		uv_idle_start(&p->spin, on_spin);
}

static void spin_rest(struct tide_pool *p, uint64_t now)
{
	uint64_t rest = SPIN_REST_MIN_NS;

	if (p->spin_rest_ns && now < p->spin_rest_until + 1000 * 1000 * 1000ull)
		rest = p->spin_rest_ns * 2 < SPIN_REST_MAX_NS ? p->spin_rest_ns * 2 : SPIN_REST_MAX_NS;
	p->spin_rest_ns = rest;
	p->spin_rest_until = now + rest;
	tide__state_lock(p);
	p->st.c.spin_rests++;
	tide__state_unlock(p, false);
}

/* This thread's involuntary context switches. */
static long switched_out(void)
{
	struct rusage ru;

	return getrusage(RUSAGE_THREAD, &ru) < 0 ? -1 : ru.ru_nivcsw;
}

static void on_spin(uv_idle_t *h)
{
	struct tide_pool *p = h->data;
	uint64_t turn = tide__now_ns() + SPIN_TURN_NS;

	/* Poll until the window passes with nothing to do, or a demand read
	 * a fault waits for is still out (TIDE_READ_WAIT_NS more); give the
	 * loop a turn each SPIN_TURN_NS for timers and closes (the window's
	 * end is the pool's, so a turn does not restart it). */
	for (;;) {
		uint64_t now;
		long switches;

		if (pass(p))
			p->spin_until = tide__now_ns() + (uint64_t)p->opt.spin_us * 1000;
		now = tide__now_ns();
		if (now >= p->spin_until &&
		    !(tide__keepers_reading(p) && now < p->spin_until + TIDE_READ_WAIT_NS))
			break;
		if (now >= turn)
			return;
		/* The keeper of this CPU gives way to us (keeper.c). */
		tide__keepers_spinning(p, sched_getcpu());
		switches = switched_out();
		sched_yield();
		if (tide__now_ns() - now > SPIN_YIELDED_NS && switched_out() != switches) {
			spin_rest(p, now);
			break;
		}
	}
	tide__keepers_spinning(p, -1);
	uv_idle_stop(h);
}

static void on_event(uv_poll_t *h, int status, int events)
{
	struct tide_pool *p = h->data;
	uint64_t v;

	(void)status;
	(void)events;
	if (h == &p->ring_poll && read(p->ring_efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: someone else already cleared it. */
	}
	if (pass(p))
		spin_start(p);
}

static void on_async(uv_async_t *h)
{
	struct tide_pool *p = h->data;

	if (pass(p))
		spin_start(p);
}

static void on_timer(uv_timer_t *h)
{
	struct tide_pool *p = h->data;

	tide__state_lock(p);
	tide__writeback_timer(p);
	tide__state_unlock(p, true);
	pass(p);
}

static void on_retry(uv_timer_t *h)
{
	pass(h->data);
}

bool tide__loop_thread(const struct tide_pool *p)
{
	uv_thread_t self = uv_thread_self();

	return uv_thread_equal(&self, &p->thread);
}

void tide__loop_wake_at(struct tide_pool *p, uint64_t when_ns)
{
	uint64_t now = tide__now_ns(), ms;

	if (p->stopping)
		return;
	/* A fault handler acting for the service thread (signal.c) leaves the
	 * time for the loop's own thread to set: libuv is not thread-safe. */
	if (!tide__loop_thread(p)) {
		if (!p->wake_due || when_ns < p->wake_due)
			p->wake_due = when_ns;
		uv_async_send(&p->wakeup);
		return;
	}
	/* libuv counts whole milliseconds from its cached loop time: round up
	 * and add one, so the pass never comes before `when_ns`. */
	uv_update_time(&p->loop);
	ms = when_ns > now ? (when_ns - now + 999999) / 1000000 + 1 : 0;
	/* The earliest wins: a later back-off never delays an earlier one. */
	if (uv_is_active((uv_handle_t *)&p->retry) &&
	    uv_timer_get_due_in(&p->retry) <= ms)
		return;
	uv_timer_start(&p->retry, on_retry, ms, 0);
}

static void stop_loop(struct tide_pool *p)
{
	p->stopping = true;
	uv_close((uv_handle_t *)&p->uffd_poll, NULL);
	uv_close((uv_handle_t *)&p->ring_poll, NULL);
	uv_close((uv_handle_t *)&p->wakeup, NULL);
	uv_close((uv_handle_t *)&p->timer, NULL);
	uv_close((uv_handle_t *)&p->retry, NULL);
	tide__keepers_spinning(p, -1);
	uv_close((uv_handle_t *)&p->spin, NULL);
}

static void service_main(void *arg)
{
	struct tide_pool *p = arg;
	char name[16];
	int ret;

	tide__ring_set_service(p);
	/* Shards are told apart by number: tide-service-0, tide-service-1... */
	if (p->parent)
		snprintf(name, sizeof(name), "tide-service-%u", p->shard);
	else
		snprintf(name, sizeof(name), "tide-service");
	pthread_setname_np(pthread_self(), name);
	if (p->opt.service_cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(p->opt.service_cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			tide__warn("cannot pin the service thread to CPU %d: %s",
				   p->opt.service_cpu, strerror(errno));
	}
	ret = uv_loop_init(&p->loop);
	if (ret < 0)
		goto fail;
	p->uffd_poll.data = p->ring_poll.data = p->wakeup.data = p->timer.data = p->spin.data = p;
	p->spin_cpu = -1;
	p->retry.data = p;
	if ((ret = uv_poll_init(&p->loop, &p->uffd_poll, p->uffd)) < 0 ||
	    (ret = uv_poll_init(&p->loop, &p->ring_poll, p->ring_efd)) < 0 ||
	    (ret = uv_async_init(&p->loop, &p->wakeup, on_async)) < 0 ||
	    (ret = uv_timer_init(&p->loop, &p->timer)) < 0 ||
	    (ret = uv_timer_init(&p->loop, &p->retry)) < 0 ||
	    (ret = uv_idle_init(&p->loop, &p->spin)) < 0) {
		uv_walk(&p->loop, (uv_walk_cb)(void (*)(void))uv_close, NULL);
		uv_run(&p->loop, UV_RUN_DEFAULT);
		uv_loop_close(&p->loop);
		goto fail;
	}
	uv_poll_start(&p->uffd_poll, UV_READABLE, on_event);
	uv_poll_start(&p->ring_poll, UV_READABLE, on_event);
	if (p->opt.flush_interval_ms)
		uv_timer_start(&p->timer, on_timer, p->opt.flush_interval_ms, p->opt.flush_interval_ms);
	uv_sem_post(&p->started);
	uv_run(&p->loop, UV_RUN_DEFAULT);
	uv_loop_close(&p->loop);
	return;
fail:
	p->start_error = ret;
	uv_sem_post(&p->started);
}

/* ---- requests from app threads ---- */

int tide__request(struct tide_pool *p, struct request *req)
{
	int ret;

	if (tide__on_service_thread(p))
		return tide__fail(-EDEADLK, "called from the pool's own service thread");
	/* fork() copies the pool but not its service thread: nobody would answer. */
	if (getpid() != p->owner)
		return tide__fail(-ECHILD, "this pool belongs to the parent process; "
				  "a forked child must create its own");
	ret = uv_sem_init(&req->done, 0);
	if (ret < 0)
		return tide__fail(-ENOMEM, "cannot create a semaphore");
	req->step = STEP_START;
	pthread_mutex_lock(&p->lock);
	req->next = p->requests;
	p->requests = req;
	pthread_mutex_unlock(&p->lock);
	uv_async_send(&p->wakeup);
	uv_sem_wait(&req->done);
	uv_sem_destroy(&req->done);
	return req->result;
}

void tide__request_finish(struct tide_pool *p, struct request *req, int result)
{
	(void)p;
	req->result = result;
	uv_sem_post(&req->done);
}

/* ---- the pool's life ---- */

size_t tide__default_bounce(size_t budget)
{
	size_t b = budget / 8;

	if (b < 2 * (size_t)TIDE_MAX_PAGE)
		b = 2 * (size_t)TIDE_MAX_PAGE;
	if (b > 16u << 20)
		b = 16u << 20;
	return b & ~(size_t)(TIDE_MAX_PAGE - 1);
}

static enum tide_writeback choose_writeback(struct tide_pool *p)
{
	char why[256] = "";
	int safe;

	if (p->opt.writeback != TIDE_WRITEBACK_AUTO)
		return p->opt.writeback;
	safe = tide__probe_direct_write(why, sizeof(why));
	if (p->opt.verbose)
		tide__info("write-back auto: %s -> %s", why, safe == 1 ? "direct" : "fixed");
	return safe == 1 ? TIDE_WRITEBACK_DIRECT : TIDE_WRITEBACK_FIXED;
}

static int open_uffd(struct tide_pool *p)
{
	uint64_t have = 0, want = UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	int ret = tide__uffd_features(&have);

	if (ret == -EPERM || ret == -EACCES)
		return tide__fail(-EPERM,
				  "userfaultfd is not permitted for this user: give it read-write access "
				  "to /dev/userfaultfd (for example a group owning the device), or set "
				  "sysctl vm.unprivileged_userfaultfd=1, or grant CAP_SYS_PTRACE");
	if (ret == -ENOSYS)
		return tide__fail(-ENOSYS, "this kernel has no userfaultfd (CONFIG_USERFAULTFD)");
	if (ret < 0)
		return tide__fail(ret, "cannot open userfaultfd: %s", strerror(-ret));
	if (!(have & want))
		return tide__fail(-ENOSYS, "this kernel's userfaultfd cannot write-protect "
				  "anonymous memory (needs Linux 5.7+)");
	if (p->opt.signal_faults && !(have & UFFD_FEATURE_SIGBUS))
		return tide__fail(-ENOSYS, "this kernel's userfaultfd cannot raise SIGBUS for faults "
				  "(needs Linux 4.14+): unset TIDE_SIGNAL_FAULTS");
	if (p->opt.signal_faults) {
		ret = tide__signal_install();
		if (ret < 0)
			return ret;
		want |= UFFD_FEATURE_SIGBUS;
	}
	want |= have & (UFFD_FEATURE_POISON | UFFD_FEATURE_THREAD_ID);
	if (p->opt.recycle)
		want |= have & UFFD_FEATURE_MOVE;
	p->uffd = tide__uffd_open(O_NONBLOCK, NULL);
	if (p->uffd < 0)
		return tide__fail(p->uffd, "cannot open userfaultfd: %s", strerror(-p->uffd));
	ret = tide__uffd_api(p->uffd, want, &p->uffd_features);
	if (ret < 0) {
		close(p->uffd);
		return tide__fail(ret, "UFFDIO_API handshake failed: %s", strerror(-ret));
	}
	return 0;
}

int tide_pool_create(tide_pool **out, const struct tide_options *opts)
{
	struct tide_options o;
	int ret;

	if (!out)
		return tide__fail(-EINVAL, "pool pointer is NULL");
	if (opts)
		o = *opts;
	else
		tide_options_init(&o);
	/* The field was reserved (zero) before shards: zero means one. */
	if (!o.service_threads)
		o.service_threads = 1;
	ret = tide__options_check(&o);
	if (ret < 0)
		return ret;
	if (o.service_threads > 1)
		return tide__shards_create(out, &o);
	return tide__pool_start(out, &o, NULL, 0);
}

static const char *recycle_name(const struct tide_pool *p)
{
	if (p->spare.on)
		return "moves dirty pages out (TIDE_RECYCLE)";
	return p->opt.recycle ? "protects and drops (no UFFDIO_MOVE here)"
			      : "protects and drops (TIDE_RECYCLE=0)";
}

int tide__pool_start(struct tide_pool **out, const struct tide_options *opts,
		     struct tide_pool *parent, unsigned shard)
{
	struct tide_pool *p;
	int ret;

	p = calloc(1, sizeof(*p));
	if (!p)
		return tide__fail(-ENOMEM, "out of memory for a pool");
	p->opt = *opts;
	p->parent = parent;
	p->shard = shard;
	p->share = p->opt.budget;
	if (p->parent)
		tide__shard_floor(p);
	if (!p->opt.bounce)
		p->opt.bounce = tide__default_bounce(p->opt.budget);
	p->owner = getpid();
	p->free_frames = p->hand = TIDE_NO_FRAME;
	p->backlog_tail = &p->backlog;
	p->waiting_tail = &p->waiting;
	ret = open_uffd(p);
	if (ret < 0)
		goto fail_uffd;
	/* For batched drops; without it each range gets its own madvise. */
	p->drop_pidfd = (int)syscall(SYS_pidfd_open, p->owner, 0U);
	ret = tide__bounce_init(&p->bounce, p->opt.bounce);
	if (ret < 0) {
		tide__fail(ret, "cannot allocate %zu bytes of bounce buffers", p->opt.bounce);
		goto fail_bounce;
	}
	ret = tide__fill_init(p);
	if (ret < 0) {
		tide__fail(ret, "no address space for the zero source of store holes");
		goto fail_zeros;
	}
	ret = tide__spare_init(p);
	if (ret < 0) {
		tide__fail(ret, "no address space for the spare room of evicted pages");
		goto fail_spare;
	}
	ret = tide__ring_init(p);
	if (ret < 0)
		goto fail_ring;
	ret = tide__epochs_init(p);
	if (ret < 0)
		goto fail_epochs;
	p->writeback = choose_writeback(p);
	p->opt.writeback = p->writeback;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->state, NULL);
	ret = tide__installer_start(p);
	if (ret < 0)
		tide__warn("cannot start the install thread (%s); the service thread installs "
			   "every page", strerror(-ret));
	if (p->opt.verbose && !parent) {
		tide__options_print(stderr, &p->opt);
		tide__info("bounce buffers %zu bytes (%s), write-back %s, eviction %s, read-ahead "
			   "installed by %s", p->bounce.size,
			   p->bounce.registered ? "registered" : "not registered",
			   tide_writeback_name(p->writeback), recycle_name(p),
			   p->installer ? "the install thread" : "the service thread");
	} else if (p->opt.verbose) {
		tide__info("shard %u: service thread on CPU %d, budget %zu bytes, bounce buffers "
			   "%zu bytes (%s), write-back %s, eviction %s", shard, p->opt.service_cpu,
			   p->opt.budget, p->bounce.size,
			   p->bounce.registered ? "registered" : "not registered",
			   tide_writeback_name(p->writeback), recycle_name(p));
	}
	ret = uv_sem_init(&p->started, 0);
	if (ret < 0) {
		ret = -ENOMEM;
		goto fail_sem;
	}
	ret = uv_thread_create(&p->thread, service_main, p);
	if (ret < 0) {
		tide__fail(ret, "cannot start the service thread: %s", uv_strerror(ret));
		goto fail_thread;
	}
	uv_sem_wait(&p->started);
	p->last_progress_ns = tide__now_ns();
	if (!p->start_error && tide__watchdog_start(p) < 0)
		tide__warn("cannot start the watchdog thread; running without it");
	/* A shard's faults kick its parent's keepers: one set per pool. */
	if (!p->start_error && !parent && (ret = tide__keepers_start(p)) < 0)
		tide__warn("cannot start the wake-poll threads (%s); running without them",
			   strerror(-ret));
	if (p->start_error) {
		ret = tide__fail(p->start_error, "the service loop failed to start: %s",
				 uv_strerror(p->start_error));
		uv_thread_join(&p->thread);
		goto fail_thread;
	}
	*out = p;
	return 0;

fail_thread:
	uv_sem_destroy(&p->started);
fail_sem:
	tide__installer_stop(p);
	pthread_mutex_destroy(&p->state);
	pthread_mutex_destroy(&p->lock);
	tide__epochs_fini(p);
fail_epochs:
	tide__ring_fini(p);
fail_ring:
	tide__spare_fini(p);
fail_spare:
	tide__fill_fini(p);
fail_zeros:
	tide__bounce_fini(&p->bounce);
fail_bounce:
	if (p->drop_pidfd >= 0)
		close(p->drop_pidfd);
	close(p->uffd);
fail_uffd:
	free(p);
	return ret;
}

int tide_pool_destroy(tide_pool *p)
{
	struct request req = { .kind = REQ_STOP };
	int ret;

	if (!p)
		return tide__fail(-EINVAL, "pool is NULL");
	if (p->nshards)
		return tide__shards_destroy(p);
	ret = tide__request(p, &req);
	if (ret == -EBUSY)
		return tide__fail(ret, "the pool still has mapped regions: tide_unmap() them first");
	if (ret < 0)
		return ret;
	uv_thread_join(&p->thread);
	tide__installer_stop(p);
	tide__keepers_stop(p);
	tide__watchdog_stop(p);
	uv_sem_destroy(&p->started);
	pthread_mutex_destroy(&p->state);
	pthread_mutex_destroy(&p->lock);
	tide__epochs_fini(p);
	tide__ring_fini(p);
	tide__spare_fini(p);
	tide__fill_fini(p);
	tide__bounce_fini(&p->bounce);
	if (p->drop_pidfd >= 0)
		close(p->drop_pidfd);
	close(p->uffd);
	free(p->regions);
	free(p->frames);
	free(p);
	return 0;
}

int tide_pool_options(tide_pool *p, struct tide_options *opts)
{
	if (!p || !opts)
		return tide__fail(-EINVAL, "pool or options are NULL");
	*opts = p->opt;
	return 0;
}

int tide_pool_stats(tide_pool *p, struct tide_stats *stats)
{
	struct request req = { .kind = REQ_STATS, .stats = stats };
	int ret;

	if (!p || !stats)
		return tide__fail(-EINVAL, "pool or stats are NULL");
	ret = p->nshards ? tide__shards_stats(p, stats) : tide__request(p, &req);
	if (ret == 0)
		tide__keepers_stats(p, stats);
	return ret;
}

void tide__loop_stop(struct tide_pool *p)
{
	stop_loop(p);
}
