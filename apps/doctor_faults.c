/*
 * tide doctor: what one 4 KiB fault costs here, each way tide can serve it.
 *
 * On a VM the answer depends on where the threads run more than on tide:
 * a fault served by a service thread on another vCPU pays two hand-offs
 * between vCPUs, one served beside the faulting thread pays two context
 * switches, one served by the faulting thread itself (TIDE_SIGNAL_FAULTS)
 * neither. So the doctor measures it: a pool with the options a pool would
 * have here (the TIDE_* environment), a region over a store in memory (a
 * fill costs a copy, no I/O), touched a page at a time in an order no
 * read-ahead follows, unmapped and touched again until the time is up. The
 * pool's own fault count divides the time the touches took, and every byte
 * read is checked against the store.
 */
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doctor_faults.h"
#include "internal.h"
#include "tide.h"

#define REGION_BYTES (8u << 20)
#define PAGE_BYTES   4096u
#define POOL_BUDGET  (32u << 20)

static const char *const way_names[DOCTOR_FAULT_WAYS] = {
	[DOCTOR_FAULT_SERVICE] = "service",
	[DOCTOR_FAULT_PINNED] = "pinned",
	[DOCTOR_FAULT_SIGNAL] = "signal",
};

static const char *const way_what[DOCTOR_FAULT_WAYS] = {
	[DOCTOR_FAULT_SERVICE] = "service thread, as placed",
	[DOCTOR_FAULT_PINNED] = "service thread, beside app",
	[DOCTOR_FAULT_SIGNAL] = "faulting thread (signal)",
};

const char *doctor_fault_way_name(enum doctor_fault_way w)
{
	return w < DOCTOR_FAULT_WAYS ? way_names[w] : "?";
}

const char *doctor_fault_way_what(enum doctor_fault_way w)
{
	return w < DOCTOR_FAULT_WAYS ? way_what[w] : "?";
}

/* The store: REGION_BYTES in memory; a fill copies and completes at once.
 * The region is mapped read-only, so the store needs no write or flush. */
static int mem_read(void *store, struct tide_io *io, void *buf, size_t len, uint64_t off)
{
	size_t n = off < REGION_BYTES ? (REGION_BYTES - off < len ? REGION_BYTES - off : len) : 0;

	memcpy(buf, (unsigned char *)store + off, n);
	tide_io_complete(io, (ssize_t)n);
	return 0;
}

static const struct tide_store_ops mem_ops = { .read = mem_read };

/* A call that failed with -errno `err`: tide's own sentence for a tide
 * call, the errno's for a system call. */
static int fail(struct doctor_fault_cost *c, int err, const char *what, bool tide_call)
{
	c->err = err < 0 ? err : -EIO;
	snprintf(c->why, sizeof(c->why), "%s: %s", what,
		 tide_call && tide_last_error()[0] ? tide_last_error() : strerror(-c->err));
	return c->err;
}

/* Touch every page once per pass, in steps of ~0.618 of the region (no two
 * touches near each other, so read-ahead never starts), and unmap after
 * each pass so the next faults again. */
static int touch(struct doctor_fault_cost *c, tide_pool *pool, unsigned char *data, double secs)
{
	const unsigned pages = REGION_BYTES / PAGE_BYTES;
	/* Odd, so coprime with the page count, a power of two: every page
	 * once per pass. */
	const unsigned stride = (unsigned)(pages * 0.618) | 1;
	uint64_t spent = 0, deadline = tide__now_ns() + (uint64_t)(secs * 1e9);
	struct tide_stats before, after;
	int ret;

	_Static_assert(!((REGION_BYTES / PAGE_BYTES) & (REGION_BYTES / PAGE_BYTES - 1)),
		       "the walk's stride needs a power-of-two page count");
	if ((ret = tide_pool_stats(pool, &before)) < 0)
		return fail(c, ret, "tide_pool_stats", true);
	do {
		unsigned char *base = tide_map_store(pool, &mem_ops, data, 0, REGION_BYTES,
						     TIDE_PROT_READ, PAGE_BYTES);
		uint64_t t0;
		unsigned bad = 0;

		if (!base)
			return fail(c, -errno, "tide_map_store", true);
		t0 = tide__now_ns();
		for (unsigned i = 0, pg = 0; i < pages; i++, pg = (pg + stride) % pages)
			bad += *(volatile unsigned char *)(base + (size_t)pg * PAGE_BYTES) !=
			       data[(size_t)pg * PAGE_BYTES];
		spent += tide__now_ns() - t0;
		if ((ret = tide_unmap(base)) < 0)
			return fail(c, ret, "tide_unmap", true);
		if (bad) {
			c->wrong = bad;
			snprintf(c->why, sizeof(c->why), "%u of %u pages read back other bytes "
				 "than the store holds", bad, pages);
			return c->err = -EIO;
		}
	} while (tide__now_ns() < deadline);
	if ((ret = tide_pool_stats(pool, &after)) < 0)
		return fail(c, ret, "tide_pool_stats", true);
	c->faults = after.faults - before.faults;
	if (!c->faults) {
		snprintf(c->why, sizeof(c->why), "the pool counted no fault");
		return c->err = -EIO;
	}
	c->us = (double)spent / 1e3 / (double)c->faults;
	return 0;
}

static void measure(struct doctor_fault_cost *c, enum doctor_fault_way way,
		    unsigned char *data, double secs)
{
	struct tide_options o;
	cpu_set_t was, here;
	bool pinned = false;
	tide_pool *pool;
	int ret, cpu;

	tide_options_init(&o);
	o.budget = POOL_BUDGET;
	o.service_threads = 1;
	o.service_cpu = -1;
	o.signal_faults = way == DOCTOR_FAULT_SIGNAL;
	if (way == DOCTOR_FAULT_PINNED) {
		/* This thread and the service thread on the CPU it runs on;
		 * its own affinity comes back after. */
		cpu = sched_getcpu();
		if (cpu < 0 || sched_getaffinity(0, sizeof(was), &was) < 0) {
			fail(c, -errno, cpu < 0 ? "sched_getcpu" : "sched_getaffinity", false);
			return;
		}
		CPU_ZERO(&here);
		CPU_SET(cpu, &here);
		if (sched_setaffinity(0, sizeof(here), &here) < 0) {
			fail(c, -errno, "sched_setaffinity", false);
			return;
		}
		pinned = true;
		o.service_cpu = cpu;
		o.wake_poll_us = 0;    /* nobody sleeps on another vCPU */
	}
	if ((ret = tide_pool_create(&pool, &o)) < 0) {
		fail(c, ret, "tide_pool_create", true);
	} else {
		touch(c, pool, data, secs);
		if ((ret = tide_pool_destroy(pool)) < 0 && !c->err)
			fail(c, ret, "tide_pool_destroy", true);
	}
	if (pinned)
		sched_setaffinity(0, sizeof(was), &was);
}

void doctor_faults_measure(struct doctor_fault_cost cost[DOCTOR_FAULT_WAYS], double secs)
{
	unsigned char *data = malloc(REGION_BYTES);

	memset(cost, 0, sizeof(cost[0]) * DOCTOR_FAULT_WAYS);
	if (!data) {
		for (int w = 0; w < DOCTOR_FAULT_WAYS; w++) {
			cost[w].err = -ENOMEM;
			snprintf(cost[w].why, sizeof(cost[w].why), "out of memory");
		}
		return;
	}
	for (size_t i = 0; i < REGION_BYTES; i++)
		data[i] = (unsigned char)(i * 131 + (i >> 12) * 7 + 1);
	for (int w = 0; w < DOCTOR_FAULT_WAYS; w++)
		measure(&cost[w], (enum doctor_fault_way)w, data, secs);
	free(data);
}
