/* tide doctor: what one fault costs on this machine, each way tide can serve it. */
#ifndef TIDE_DOCTOR_FAULTS_H
#define TIDE_DOCTOR_FAULTS_H

#include <stdint.h>

enum doctor_fault_way {
	DOCTOR_FAULT_SERVICE,   /* the service thread, wherever the scheduler puts it */
	DOCTOR_FAULT_PINNED,    /* the service thread pinned beside the faulting thread */
	DOCTOR_FAULT_SIGNAL,    /* the faulting thread itself (TIDE_SIGNAL_FAULTS) */
	DOCTOR_FAULT_WAYS,
};

struct doctor_fault_cost {
	int err;              /* 0, or -errno: this way could not be measured */
	unsigned wrong;       /* pages that read back other bytes than the store's */
	char why[160];        /* what failed, when err */
	uint64_t faults;      /* faults the pool counted */
	double us;            /* mean microseconds per fault, as the app saw it */
};

const char *doctor_fault_way_name(enum doctor_fault_way w);  /* its --json key */
const char *doctor_fault_way_what(enum doctor_fault_way w);  /* its line in the table */

/* Fault in `secs` seconds' worth of 4 KiB pages each way, from a store in
 * memory, and check every byte read. */
void doctor_faults_measure(struct doctor_fault_cost cost[DOCTOR_FAULT_WAYS], double secs);

#endif
