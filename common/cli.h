/*
 * cli: the command line shared by the per-rank programs (maskps-worker,
 * maskps-pserver): `--config FILE --rank R [--set section.key=value ...]`
 * plus each program's own options, the config those name (file, then the
 * --set overrides in order, then validation), and the process's logger
 * with its records in run_dir/logs/ROLE-RANK.jsonl.
 *
 * Every error is printed here, on stderr, as "PROG: message" (a command
 * line error followed by the program's usage text), so the programs print
 * the same words for the same mistake. The caller only returns the exit
 * status: 2 for a bad command line or config, 1 when the logger cannot be
 * opened.
 *
 * What this is not: the `maskps` command's own parsing (subcommands, a
 * positional CONFIG) or anything that runs; it only reads argv and files.
 */
#ifndef MASKPS_CLI_H
#define MASKPS_CLI_H

#include "common/config.h"
#include "common/logger.h"

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* What cli_parse returns when the program should go on (any other value
 * is the exit status to return at once). */
#define CLI_CONTINUE (-1)

struct cli_spec {
  const char *prog;  /* "maskps-worker": the prefix of every message */
  const char *usage; /* printed after a command line error */
  const char *help;  /* printed on stdout for --help / -h */
  /* The program's own options, each with one value: returns 1 if it took
   * name (0 = unknown option, -1 = bad value). NULL: none. */
  int (*option)(void *ctx, const char *name, const char *value);
  void *ctx;
};

struct cli_args {
  const char *config_path; /* borrowed from argv */
  uint64_t rank;           /* UINT64_MAX: not given */
  const char **sets;       /* the --set values in order; owned */
  size_t nsets;
};

/* Parses argv[1..argc-1]: --help/-h, --config, --rank, --set and the
 * spec's options, each option followed by its value; --config and --rank
 * are required. Returns CLI_CONTINUE with *out filled (out->sets owned by
 * out: pass it to cli_load_config or cli_args_free), or the exit status:
 * 0 after printing the help, 2 after printing a usage error (out->sets
 * then already freed). */
int cli_parse(int argc, char **argv, const struct cli_spec *spec,
              struct cli_args *out);

/* Frees a->sets (idempotent). */
void cli_args_free(struct cli_args *a);

/* Reads a->config_path, applies a->sets in order and validates. Frees
 * a->sets either way. Returns the config (caller frees with config_free),
 * or NULL after printing "PROG: <why>" (exit status 2). */
struct config *cli_load_config(const char *prog, struct cli_args *a);

/* The logger of process ROLE-RANK at cfg->log.level; with cfg->log.jsonl
 * its records go to cfg->train.run_dir/logs/ROLE-RANK.jsonl (the logs
 * directory is created; if that fails the process logs on stderr only).
 * Returns the logger (caller frees with logger_free), or NULL after
 * printing "PROG: <why>" (exit status 1). */
struct logger *cli_logger_open(const char *prog, const struct config *cfg,
                               const char *role, uint64_t rank);

/* Parses a decimal unsigned 64-bit integer, the whole of s ("-1", "",
 * "12x" and overflow refused). Returns 0, or -1 leaving *out alone. */
int cli_parse_u64(const char *s, uint64_t *out);

/* mkdir -p path (mode 0755; existing directories are fine). Returns 0 or
 * -1 with errno set. */
int cli_make_dirs(const char *path);

/* The process's stop flag, which the programs' loops poll (train_opts.stop,
 * cluster_run, server_run) to stop cleanly; 0 until a signal caught by
 * cli_catch_stop_signals arrives. */
volatile sig_atomic_t *cli_stop_flag(void);
/* From now on SIGINT and SIGTERM only set cli_stop_flag(). */
void cli_catch_stop_signals(void);

#endif
