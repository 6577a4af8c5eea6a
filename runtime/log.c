/* Diagnostics: the per-thread last error, warnings, verbose lines. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static __thread char last_error[256];

int tide__fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return err;
}

const char *tide_last_error(void)
{
	return last_error[0] ? last_error : "no error";
}

static void emit(const char *what, const char *fmt, va_list ap)
{
	char line[512];
	int n = snprintf(line, sizeof(line), "tide: %s", what);

	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	/* One write so lines from several threads do not interleave. */
	fprintf(stderr, "%s\n", line);
}

void tide__warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit("warning: ", fmt, ap);
	va_end(ap);
}

void tide__info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit("", fmt, ap);
	va_end(ap);
}

uint64_t tide__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *tide_writeback_name(enum tide_writeback wb)
{
	switch (wb) {
	case TIDE_WRITEBACK_AUTO: return "auto";
	case TIDE_WRITEBACK_FIXED: return "fixed";
	case TIDE_WRITEBACK_DIRECT: return "direct";
	}
	return "?";
}

const char *tide_wake_poll_name(enum tide_wake_poll wp)
{
	switch (wp) {
	case TIDE_WAKE_POLL_OFF: return "off";
	case TIDE_WAKE_POLL_KERNEL: return "kernel";
	case TIDE_WAKE_POLL_QOS: return "qos";
	case TIDE_WAKE_POLL_THREADS: return "threads";
	}
	return "?";
}
