/* tide: one command, one subcommand per file. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tide.h"

/* A subcommand whose file is not part of this build stays NULL. */
#pragma weak tide_cmd_sort
#pragma weak tide_cmd_doctor
#pragma weak tide_cmd_run
#pragma weak tide_cmd_options

static const struct {
	const char *name;
	tide_cmd_fn *fn;
	const char *help;
} commands[] = {
	{ "sort", tide_cmd_sort, "sort a file of 64-bit integers larger than memory, through the pager" },
	{ "run", tide_cmd_run, "run a program with its mappings paged by tide (LD_PRELOAD)" },
	{ "doctor", tide_cmd_doctor, "check whether this machine can run tide safely, and how" },
	{ "options", tide_cmd_options, "list the TIDE_* options with their defaults and values" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: tide COMMAND [ARGS...]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].fn)
			fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n`tide COMMAND --help` describes a command.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("tide %d.%d.%d\n", TIDE_VERSION_MAJOR, TIDE_VERSION_MINOR, TIDE_VERSION_PATCH);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].fn && !strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "tide: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return 2;
}
