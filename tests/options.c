/* The options table: defaults, TIDE_* environment, sizes, bad values,
 * explicit values winning over the environment. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "internal.h"

Test(options, sizes)
{
	uint64_t v;

	cr_expect_eq(tide__parse_size("4096", &v), 0); cr_expect_eq(v, 4096);
	cr_expect_eq(tide__parse_size("64K", &v), 0); cr_expect_eq(v, 64 * KiB);
	cr_expect_eq(tide__parse_size("64KiB", &v), 0); cr_expect_eq(v, 64 * KiB);
	cr_expect_eq(tide__parse_size("2m", &v), 0); cr_expect_eq(v, 2 * MiB);
	cr_expect_eq(tide__parse_size("3 GiB", &v), 0); cr_expect_eq(v, 3ull << 30);
	cr_expect_eq(tide__parse_size("1T", &v), 0); cr_expect_eq(v, 1ull << 40);
	cr_expect_eq(tide__parse_size("12Q", &v), -EINVAL);
	cr_expect_eq(tide__parse_size("-5", &v), -EINVAL);
	cr_expect_eq(tide__parse_size("", &v), -EINVAL);
	cr_expect_eq(tide__parse_size("99999999999999G", &v), -ERANGE);
}

Test(options, defaults_match_table)
{
	struct tide_options o;
	struct tide__preload_options po;
	char buf[64];

	unsetenv("TIDE_BUDGET");
	tide_options_init(&o);
	cr_expect_eq(tide__options_check(&o), 0, "defaults are invalid: %s", tide_last_error());
	tide__preload_options_init(&po);
	for (size_t i = 0; i < tide__noptions; i++) {
		const void *fields = tide__options[i].scope == OPT_POOL ? (const void *)&o
									 : (const void *)&po;
		uint64_t size;

		tide__option_format(fields, &tide__options[i], buf, sizeof(buf));
		if (tide__options[i].kind == OPT_SIZE) {
			cr_assert_eq(tide__parse_size(tide__options[i].def, &size), 0);
			cr_expect_eq(strtoull(buf, NULL, 10), size, "%s", tide__options[i].name);
		} else if (tide__options[i].kind != OPT_BOOL) {
			cr_expect_str_eq(buf, tide__options[i].def, "%s", tide__options[i].name);
		}
	}
}

Test(options, find_by_any_spelling)
{
	const struct tide__option *o = tide__option_find("TIDE_BUDGET");

	cr_assert_not_null(o);
	cr_expect_eq(tide__option_find("budget"), o);
	cr_expect_eq(tide__option_find("Budget"), o);
	cr_expect_str_eq(tide__option_find("page-size")->name, "TIDE_PAGE_SIZE");
	cr_expect_eq(tide__option_find("preload_min")->scope, OPT_PRELOAD);
	cr_expect_null(tide__option_find("no-such-option"));
	cr_expect_null(tide__option_find(""));
	cr_expect_eq(tide__option_valid(o, "12M"), 0);
	cr_expect_eq(tide__option_valid(o, "twelve"), -EINVAL);
	cr_expect_eq(tide__option_valid(tide__option_find("writeback"), "direct"), 0);
	cr_expect_eq(tide__option_valid(tide__option_find("writeback"), "fast"), -EINVAL);
}

Test(options, preload_environment, .init = cr_redirect_stderr)
{
	struct tide__preload_options po;

	setenv("TIDE_PRELOAD_MIN", "1M", 1);
	setenv("TIDE_PRELOAD_WRITE", "maybe", 1);   /* invalid: warns, keeps 1 */
	setenv("TIDE_PRELOAD_STATS", "/tmp/stats", 1);
	tide__preload_options_init(&po);
	cr_expect_eq(po.min, 1 * MiB);
	cr_expect_eq(po.write, 1);
	cr_expect_str_eq(po.stats, "/tmp/stats");
	fflush(stderr);
	cr_expect_stderr_eq_str("tide: warning: TIDE_PRELOAD_WRITE=\"maybe\" is not valid "
				"(LD_PRELOAD (tide run): take writable MAP_SHARED mappings too; 0 "
				"leaves them to the kernel); keeping the default 1\n");
}

Test(options, environment, .init = cr_redirect_stderr)
{
	struct tide_options o;

	setenv("TIDE_BUDGET", "12M", 1);
	setenv("TIDE_WRITEBACK", "direct", 1);
	setenv("TIDE_HIGH_WATER", "150", 1);      /* invalid: warns, keeps 90 */
	setenv("TIDE_ODIRECT", "off", 1);
	tide_options_init(&o);
	cr_expect_eq(o.budget, 12 * MiB);
	cr_expect_eq(o.writeback, TIDE_WRITEBACK_DIRECT);
	cr_expect_eq(o.high_water, 90);
	cr_expect_eq(o.odirect, 0);
	fflush(stderr);
	cr_expect_stderr_eq_str("tide: warning: TIDE_HIGH_WATER=\"150\" is not valid "
				"(percent of the budget at which eviction starts); keeping the default 90\n");
}

Test(options, explicit_wins)
{
	struct tide_options o;
	tide_pool *pool;
	struct tide_options got;

	test_require_uffd();
	setenv("TIDE_BUDGET", "12M", 1);
	setenv("TIDE_QUEUE_DEPTH", "4", 1);
	tide_options_init(&o);
	o.budget = 3 * MiB;
	cr_assert_eq(tide_pool_create(&pool, &o), 0, "%s", tide_last_error());
	cr_assert_eq(tide_pool_options(pool, &got), 0);
	cr_expect_eq(got.budget, 3 * MiB, "the caller's budget lost to the environment");
	cr_expect_eq(got.queue_depth, 4, "the environment's queue depth was not applied");
	cr_expect_neq(got.writeback, TIDE_WRITEBACK_AUTO, "auto was not resolved");
	cr_assert_eq(tide_pool_destroy(pool), 0);
}

Test(options, verbose_prints_settings, .init = cr_redirect_stderr)
{
	struct tide_options o;
	tide_pool *pool;
	char line[256];
	bool saw_budget = false;
	FILE *err;

	test_require_uffd();
	setenv("TIDE_VERBOSE", "1", 1);
	setenv("TIDE_BUDGET", "5M", 1);
	tide_options_init(&o);
	cr_assert_eq(tide_pool_create(&pool, &o), 0);
	cr_assert_eq(tide_pool_destroy(pool), 0);
	fflush(stderr);
	err = cr_get_redirected_stderr();
	while (fgets(line, sizeof(line), err))
		saw_budget |= strstr(line, "TIDE_BUDGET") && strstr(line, "5242880");
	cr_expect(saw_budget, "TIDE_VERBOSE=1 did not print the effective budget");
}

Test(options, docs_match_table)
{
	const char *bin = getenv("TIDE_BIN"), *src = getenv("TIDE_SRC");
	char cmd[4096], line[512], path[4096];
	FILE *gen, *doc;
	int rows = 0;

	if (!bin || !src)
		cr_skip_test("TIDE_BIN or TIDE_SRC is not set (run through meson test)");
	snprintf(cmd, sizeof(cmd), "%s options --markdown", bin);
	snprintf(path, sizeof(path), "%s/docs/options.md", src);
	gen = popen(cmd, "r");
	doc = fopen(path, "r");
	cr_assert(gen && doc, "cannot run %s or open %s", cmd, path);
	/* Every generated row appears, in order, in the document. */
	while (fgets(line, sizeof(line), gen)) {
		char want[512];
		bool found = false;

		strcpy(want, line);
		while (fgets(line, sizeof(line), doc))
			if (!strcmp(line, want)) {
				found = true;
				break;
			}
		cr_expect(found, "docs/options.md lacks (or misorders) the row: %s", want);
		rows++;
	}
	pclose(gen);
	fclose(doc);
	cr_expect_gt(rows, 2);
}
