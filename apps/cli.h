/* The tide command: subcommands and the helpers they share. */
#ifndef TIDE_CLI_H
#define TIDE_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Each subcommand gets argv with argv[0] = its own name; returns the exit status. */
typedef int tide_cmd_fn(int argc, char **argv);
tide_cmd_fn tide_cmd_sort, tide_cmd_doctor, tide_cmd_run, tide_cmd_options;

#endif
