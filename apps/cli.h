/* The tide command: subcommands and the helpers they share. */
#ifndef TIDE_CLI_H
#define TIDE_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Each subcommand gets argv with argv[0] = its own name; returns the exit status. */
typedef int tide_cmd_fn(int argc, char **argv);
tide_cmd_fn tide_cmd_sort, tide_cmd_doctor, tide_cmd_run, tide_cmd_options;

/*
 * Shared helpers (apps/cli.c). Same error contract as the library: 0 or a
 * count on success, -errno on failure.
 */

/* Monotonic clock in nanoseconds. */
uint64_t cli_now_ns(void);

/* Parse a size with an optional K/M/G/T (or KiB, MB...) suffix into *out.
 * On failure prints "tide OPTION: ..." to stderr and returns -EINVAL. */
int cli_parse_size(const char *option, const char *text, uint64_t *out);

/* Parse an unsigned decimal in [min, max]; prints an error and returns -EINVAL
 * when the text is not a number in range. */
int cli_parse_uint(const char *option, const char *text, uint64_t min, uint64_t max,
		   uint64_t *out);

/* "1.50 GiB", "64 KiB", "512 B": binary units, 3 significant digits. */
const char *cli_format_bytes(uint64_t bytes, char *buf, size_t len);

/* "850 ms", "12.4 s", "3m05s", "38 us". */
const char *cli_format_duration(uint64_t ns, char *buf, size_t len);

/*
 * A progress display for one phase at a time, on stderr. On a terminal it
 * redraws one line (phase, bar, percent, rate) at most ten times a second;
 * otherwise it prints one plain line when a phase ends. cli_progress_add()
 * may be called from any thread; it is cheap (one atomic add) between redraws.
 */
struct cli_progress {
	bool tty;
	bool quiet;                 /* print nothing at all */
	char phase[48];
	uint64_t total;             /* units of work in this phase (bytes) */
	uint64_t done;              /* atomic */
	uint64_t start_ns;
	uint64_t last_draw_ns;      /* atomic; whoever wins the CAS redraws */
};
void cli_progress_init(struct cli_progress *p, bool quiet);
/* total 0: the size is not known beforehand (no bar; a rate only from the
 * bytes added). */
void cli_progress_begin(struct cli_progress *p, const char *phase, uint64_t total);
void cli_progress_add(struct cli_progress *p, uint64_t n);
/* Rename the current phase (e.g. "sort: merge 3/6") without resetting it. */
void cli_progress_label(struct cli_progress *p, const char *phase);
/* Ends the phase: a final line with the elapsed time and rate. Returns ns. */
uint64_t cli_progress_end(struct cli_progress *p);

/*
 * A minimal JSON writer: one compact document on one line. Keys are given
 * with each value inside objects and are NULL inside arrays. Strings are
 * escaped (quotes, backslash, control characters); non-finite doubles are
 * written as null. Nesting deeper than CLI_JSON_DEPTH is ignored.
 *
 *   struct cli_json j;
 *   cli_json_begin(&j, stdout);            // opens the top-level object
 *   cli_json_str(&j, "backend", "tide");
 *   cli_json_object(&j, "phases"); ... cli_json_close(&j);
 *   cli_json_end(&j);                      // closes everything, newline
 */
#define CLI_JSON_DEPTH 16
struct cli_json {
	FILE *f;
	int depth;
	bool first[CLI_JSON_DEPTH];
	char close[CLI_JSON_DEPTH]; /* '}' or ']' per level */
};
void cli_json_begin(struct cli_json *j, FILE *f);
void cli_json_object(struct cli_json *j, const char *key);
void cli_json_array(struct cli_json *j, const char *key);
void cli_json_close(struct cli_json *j);
void cli_json_str(struct cli_json *j, const char *key, const char *value);
void cli_json_u64(struct cli_json *j, const char *key, uint64_t value);
void cli_json_i64(struct cli_json *j, const char *key, int64_t value);
void cli_json_double(struct cli_json *j, const char *key, double value);
void cli_json_bool(struct cli_json *j, const char *key, bool value);
void cli_json_null(struct cli_json *j, const char *key);
void cli_json_end(struct cli_json *j);

#endif
