/* Helpers every subcommand shares: sizes, durations, progress, JSON. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "internal.h"

uint64_t cli_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cli_parse_size(const char *option, const char *text, uint64_t *out)
{
	int ret = tide__parse_size(text, out);

	if (ret < 0) {
		fprintf(stderr, "tide: %s \"%s\" is not a size (a number with an optional "
			"K, M, G or T suffix, e.g. 512M)\n", option, text ? text : "");
		return -EINVAL;
	}
	return 0;
}

int cli_parse_uint(const char *option, const char *text, uint64_t min, uint64_t max,
		   uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	if (!text || *text < '0' || *text > '9')
		goto bad;
	v = strtoull(text, &end, 10);
	if (errno || *end || v < min || v > max)
		goto bad;
	*out = v;
	return 0;
bad:
	fprintf(stderr, "tide: %s \"%s\" is not a whole number from %llu to %llu\n", option,
		text ? text : "", (unsigned long long)min, (unsigned long long)max);
	return -EINVAL;
}

const char *cli_format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	unsigned u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, v >= 100 || v == floor(v) ? "%.0f %s" : v >= 10 ? "%.1f %s" :
			 "%.2f %s", v, unit[u]);
	return buf;
}

const char *cli_format_duration(uint64_t ns, char *buf, size_t len)
{
	if (ns < 1000000)
		snprintf(buf, len, "%.0f us", ns / 1e3);
	else if (ns < 1000000000)
		snprintf(buf, len, "%.0f ms", ns / 1e6);
	else if (ns < 60 * 1000000000ull)
		snprintf(buf, len, "%.2f s", ns / 1e9);
	else
		snprintf(buf, len, "%llum%02llus", (unsigned long long)(ns / 60000000000ull),
			 (unsigned long long)(ns / 1000000000ull % 60));
	return buf;
}

/* ---- progress ---- */

void cli_progress_init(struct cli_progress *p, bool quiet)
{
	memset(p, 0, sizeof(*p));
	p->quiet = quiet;
	p->tty = !quiet && isatty(STDERR_FILENO);
}

static void progress_draw(struct cli_progress *p, uint64_t now, bool final)
{
	uint64_t done = __atomic_load_n(&p->done, __ATOMIC_RELAXED);
	double secs = (now - p->start_ns) / 1e9;
	double frac = p->total ? (double)done / p->total : 1;
	char rate[32], took[32];
	char bar[33];
	int fill;

	if (frac > 1)
		frac = 1;
	cli_format_bytes(secs > 0 ? (uint64_t)(done / secs) : 0, rate, sizeof(rate));
	cli_format_duration(now - p->start_ns, took, sizeof(took));
	if (!p->tty) {
		/* No bytes counted (a phase of unknown size that moved none):
		 * no rate rather than a meaningless one. */
		if (final && done)
			fprintf(stderr, "tide: %-16s done in %s (%s/s)\n", p->phase, took, rate);
		else if (final)
			fprintf(stderr, "tide: %-16s done in %s\n", p->phase, took);
		return;
	}
	if (!p->total) {
		/* Size unknown: no bar; the rate once bytes move, and the time. */
		if (done)
			strcat(rate, "/s");
		fprintf(stderr, "\r\033[K%-20s %12s %s%s", p->phase, done ? rate : "-", took,
			final ? "\n" : "");
		fflush(stderr);
		return;
	}
	fill = (int)(frac * 32);
	memset(bar, '#', fill);
	memset(bar + fill, '.', 32 - fill);
	bar[32] = 0;
	/* \r and erase-to-end redraw the same line; the final draw ends it. */
	fprintf(stderr, "\r\033[K%-20s [%s] %3.0f%% %10s/s %s%s", p->phase, bar, frac * 100,
		rate, took, final ? "\n" : "");
	fflush(stderr);
}

void cli_progress_begin(struct cli_progress *p, const char *phase, uint64_t total)
{
	snprintf(p->phase, sizeof(p->phase), "%s", phase);
	p->total = total;
	p->start_ns = cli_now_ns();
	__atomic_store_n(&p->done, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&p->last_draw_ns, p->start_ns, __ATOMIC_RELAXED);
	if (p->tty)
		progress_draw(p, p->start_ns, false);
}

void cli_progress_add(struct cli_progress *p, uint64_t n)
{
	uint64_t last, now;

	__atomic_fetch_add(&p->done, n, __ATOMIC_RELAXED);
	if (!p->tty)
		return;
	last = __atomic_load_n(&p->last_draw_ns, __ATOMIC_RELAXED);
	now = cli_now_ns();
	if (now - last < 100000000)
		return;
	/* Only the thread that moves the timestamp draws, so lines never interleave. */
	if (__atomic_compare_exchange_n(&p->last_draw_ns, &last, now, false, __ATOMIC_RELAXED,
					__ATOMIC_RELAXED))
		progress_draw(p, now, false);
}

void cli_progress_label(struct cli_progress *p, const char *phase)
{
	snprintf(p->phase, sizeof(p->phase), "%s", phase);
}

uint64_t cli_progress_end(struct cli_progress *p)
{
	uint64_t now = cli_now_ns();

	if (!p->quiet)
		progress_draw(p, now, true);
	return now - p->start_ns;
}

/* ---- JSON ---- */

static void json_key(struct cli_json *j, const char *key);

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		switch (*c) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		case '\b': fputs("\\b", f); break;
		case '\f': fputs("\\f", f); break;
		default:
			if (*c < 0x20)
				fprintf(f, "\\u%04x", *c);
			else
				fputc(*c, f);
		}
	}
	fputc('"', f);
}

/* The separator and, inside an object, the key of the next value. */
static void json_key(struct cli_json *j, const char *key)
{
	if (!j->first[j->depth])
		fputc(',', j->f);
	j->first[j->depth] = false;
	if (j->close[j->depth] == '}') {
		json_string(j->f, key ? key : "");
		fputc(':', j->f);
	}
}

static void json_open(struct cli_json *j, const char *key, char open, char close)
{
	json_key(j, key);
	fputc(open, j->f);
	if (j->depth + 1 < CLI_JSON_DEPTH) {
		j->depth++;
		j->first[j->depth] = true;
		j->close[j->depth] = close;
	}
}

void cli_json_begin(struct cli_json *j, FILE *f)
{
	memset(j, 0, sizeof(*j));
	j->f = f;
	j->first[0] = true;
	j->close[0] = 0;
	fputc('{', f);
	j->depth = 1;
	j->first[1] = true;
	j->close[1] = '}';
}

void cli_json_object(struct cli_json *j, const char *key) { json_open(j, key, '{', '}'); }
void cli_json_array(struct cli_json *j, const char *key) { json_open(j, key, '[', ']'); }

void cli_json_close(struct cli_json *j)
{
	if (j->depth <= 0)
		return;
	fputc(j->close[j->depth], j->f);
	j->depth--;
}

void cli_json_str(struct cli_json *j, const char *key, const char *value)
{
	json_key(j, key);
	if (value)
		json_string(j->f, value);
	else
		fputs("null", j->f);
}

void cli_json_u64(struct cli_json *j, const char *key, uint64_t value)
{
	json_key(j, key);
	fprintf(j->f, "%llu", (unsigned long long)value);
}

void cli_json_i64(struct cli_json *j, const char *key, int64_t value)
{
	json_key(j, key);
	fprintf(j->f, "%lld", (long long)value);
}

void cli_json_double(struct cli_json *j, const char *key, double value)
{
	json_key(j, key);
	if (isfinite(value))
		fprintf(j->f, "%.6g", value);
	else
		fputs("null", j->f);
}

void cli_json_bool(struct cli_json *j, const char *key, bool value)
{
	json_key(j, key);
	fputs(value ? "true" : "false", j->f);
}

void cli_json_null(struct cli_json *j, const char *key)
{
	json_key(j, key);
	fputs("null", j->f);
}

void cli_json_end(struct cli_json *j)
{
	while (j->depth > 0)
		cli_json_close(j);
	fputc('\n', j->f);
	fflush(j->f);
}
