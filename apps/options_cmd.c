/* tide options: the TIDE_* table with defaults and the values in effect. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "internal.h"

static const char *kind_name(enum tide__opt_kind k)
{
	switch (k) {
	case OPT_SIZE: return "size";
	case OPT_UINT: return "count";
	case OPT_INT: return "integer";
	case OPT_BOOL: return "boolean";
	case OPT_PERCENT: return "percent";
	case OPT_WRITEBACK: return "fixed|direct|auto";
	case OPT_PATH: return "path";
	}
	return "?";
}

int tide_cmd_options(int argc, char **argv)
{
	bool markdown = argc > 1 && !strcmp(argv[1], "--markdown");
	struct tide_options o;
	struct tide__preload_options po;
	char value[64];

	if (argc > 1 && !markdown) {
		fprintf(strcmp(argv[1], "--help") ? stderr : stdout, "usage: tide options [--markdown]\n"
			"Lists every TIDE_* option, its default and the value the environment gives.\n");
		return strcmp(argv[1], "--help") ? 2 : 0;
	}
	tide_options_init(&o);
	tide__preload_options_init(&po);
	if (markdown) {
		printf("| variable | type | default | meaning |\n|---|---|---|---|\n");
		for (size_t i = 0; i < tide__noptions; i++) {
			const char *def = tide__options[i].def;

			printf("| `%s` | %s | %s%s%s | %s |\n", tide__options[i].name,
			       kind_name(tide__options[i].kind), *def ? "`" : "", *def ? def : "empty",
			       *def ? "`" : "", tide__options[i].help);
		}
		return 0;
	}
	printf("%-20s %-10s %-10s %s\n", "VARIABLE", "DEFAULT", "IN EFFECT", "MEANING");
	for (size_t i = 0; i < tide__noptions; i++) {
		const void *fields = tide__options[i].scope == OPT_POOL ? (const void *)&o
									 : (const void *)&po;

		tide__option_format(fields, &tide__options[i], value, sizeof(value));
		printf("%-20s %-10s %-10s %s\n", tide__options[i].name, tide__options[i].def, value,
		       tide__options[i].help);
	}
	return 0;
}
