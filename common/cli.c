#include "common/cli.h"

#include "common/check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int usage_error(const struct cli_spec *spec, const char *fmt,
                       const char *arg) {
  fprintf(stderr, "%s: ", spec->prog);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n%s", spec->usage);
  return 2;
}

void cli_args_free(struct cli_args *a) {
  free(a->sets);
  a->sets = NULL;
  a->nsets = 0;
}

int cli_parse(int argc, char **argv, const struct cli_spec *spec,
              struct cli_args *out) {
  out->config_path = NULL;
  out->rank = UINT64_MAX;
  out->sets = xcalloc(argc > 0 ? (size_t)argc : 1, sizeof(char *));
  out->nsets = 0;
  int status = CLI_CONTINUE;
  for (int i = 1; i < argc && status == CLI_CONTINUE; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(spec->help, stdout);
      status = 0;
      break;
    }
    if (i + 1 >= argc) {
      status = usage_error(spec, "%s needs a value (or is unknown)", a);
      break;
    }
    const char *v = argv[++i];
    int took = 1;
    if (!strcmp(a, "--config"))
      out->config_path = v;
    else if (!strcmp(a, "--rank"))
      took = cli_parse_u64(v, &out->rank) ? -1 : 1;
    else if (!strcmp(a, "--set"))
      out->sets[out->nsets++] = v;
    else
      took = spec->option ? spec->option(spec->ctx, a, v) : 0;
    if (took == 0)
      status = usage_error(spec, "unknown option %s", a);
    else if (took < 0)
      status = usage_error(spec, "bad value for %s", a);
  }
  if (status == CLI_CONTINUE && (!out->config_path || out->rank == UINT64_MAX))
    status = usage_error(spec, "%s", "--config and --rank are required");
  if (status != CLI_CONTINUE)
    cli_args_free(out);
  return status;
}

struct config *cli_load_config(const char *prog, struct cli_args *a) {
  char err[8192] = "";
  struct config *cfg = config_new();
  int rc = config_read_file(cfg, a->config_path, err, sizeof(err));
  for (size_t i = 0; rc == 0 && i < a->nsets; i++)
    rc = config_set(cfg, a->sets[i], err, sizeof(err));
  cli_args_free(a);
  if (rc == 0)
    rc = config_validate(cfg, err, sizeof(err));
  if (rc != 0) {
    fprintf(stderr, "%s: %s\n", prog, err);
    config_free(cfg);
    return NULL;
  }
  return cfg;
}

struct logger *cli_logger_open(const char *prog, const struct config *cfg,
                               const char *role, uint64_t rank) {
  char path[4096], err[4096] = "";
  const char *jsonl = NULL;
  if (cfg->log.jsonl) {
    snprintf(path, sizeof(path), "%s/logs", cfg->train.run_dir);
    if (cli_make_dirs(path) == 0) {
      snprintf(path, sizeof(path), "%s/logs/%s-%llu.jsonl", cfg->train.run_dir,
               role, (unsigned long long)rank);
      jsonl = path;
    }
  }
  struct logger *lg =
      logger_new(role, (int)rank, jsonl, cfg->log.level, err, sizeof(err));
  if (!lg)
    fprintf(stderr, "%s: %s\n", prog, err);
  return lg;
}

int cli_parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-')
    return -1;
  *out = v;
  return 0;
}

int cli_make_dirs(const char *path) {
  char *p = xstrdup(path);
  for (char *q = *p ? p + 1 : p; *q; q++) { /* not the root's '/' */
    if (*q != '/')
      continue;
    *q = 0;
    if (mkdir(p, 0755) < 0 && errno != EEXIST) {
      free(p);
      return -1;
    }
    *q = '/';
  }
  int rc = mkdir(p, 0755) < 0 && errno != EEXIST ? -1 : 0;
  free(p);
  return rc;
}

static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) {
  (void)sig;
  g_stop_signal = 1;
}

volatile sig_atomic_t *cli_stop_flag(void) {
  return &g_stop_signal;
}

void cli_catch_stop_signals(void) {
  struct sigaction sa = {.sa_handler = on_stop_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}
