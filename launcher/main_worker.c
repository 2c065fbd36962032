/* maskps-worker: one worker of a distributed run (DESIGN.md "Processes and
 * data flow"): the training loop of worker/train.h against the S pservers
 * of the config over ZeroMQ (worker/ps_net.h).
 *
 * Dense parameters: with several workers they live on the pservers (one
 * shared vector; train_opts.dense_via_ps: pulled and pushed every step).
 * With one worker there is nobody to share them with, and the worker keeps
 * them itself, as embedded mode does: 4 bytes per parameter each way per
 * step (3.9 MB for the demo's SerMaskNet) stay off the wire, and the run
 * does embedded mode's arithmetic. The launcher starts the pservers with
 * --dense-floats 0 then. (The dense-through-the-pservers path is the one
 * tests/launcher/test_cluster.c proves equal to embedded mode.)
 *
 *   maskps-worker --config FILE --rank R [--set section.key=value ...]
 *                 [--progress-fd N]
 *
 * `maskps train` starts W of them beside S maskps-pserver processes; run it
 * by hand to debug. Pserver i is reached at tcp://cluster.host:
 * cluster.base_port+i; each request waits cluster.request_timeout_ms and is
 * retried PS_NET_RETRIES times, so a worker whose pserver died fails with a
 * message naming it instead of hanging.
 *
 * Rank R reads the training lines i with i mod W == R. Rank 0 sets the
 * initial dense values, evaluates, keeps the best state in run_dir/best
 * (each pserver checkpoints its shard there) and prints the run's summary
 * on stdout, the same as embedded mode, with the AMTL storage line from
 * the pservers' STATS.
 *
 * Logs: human lines on stderr, JSONL records in run_dir/logs/worker-R.jsonl;
 * with --progress-fd N, the progress line goes to file descriptor N (the
 * launcher hands its terminal to rank 0 this way).
 *
 * Exit codes: 0 done; 1 the run failed (a pserver unreachable, data,
 * divergence); 2 bad command line or config; 130 stopped by SIGINT/SIGTERM
 * (after the current step). */
#include "common/check.h"
#include "common/cli.h"
#include "common/config.h"
#include "common/logger.h"
#include "common/ps.h"
#include "launcher/summary.h"
#include "worker/nn/gemm.h"
#include "worker/ps_net.h"
#include "worker/train.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: maskps-worker --config FILE --rank R [--set section.key=value "
    "...] [--progress-fd N]\n";

/* --progress-fd N: the one option of ours beyond cli.h's. */
static int worker_option(void *ctx, const char *name, const char *value) {
  uint64_t *progress_fd = ctx;
  if (strcmp(name, "--progress-fd"))
    return 0;
  return cli_parse_u64(value, progress_fd) || *progress_fd < 1 ||
                 *progress_fd > 1024
             ? -1
             : 1;
}

/* The number after "\"name\":" in s, or NAN. */
static double json_num(const char *s, const char *name) {
  char pat[64];
  snprintf(pat, sizeof(pat), "\"%s\":", name);
  const char *p = strstr(s, pat);
  return p ? strtod(p + strlen(pat), NULL) : NAN;
}

/* Sums table 0's rows, value bytes and prefix lengths over the pservers'
 * STATS (server_stats_json: "tables":[{"id":0,...,"rows":..,
 * "value_bytes":..,"mean_p":..}, ...]) and prints the storage line. */
static void report_storage(struct ps *ps, const struct config *cfg,
                           struct logger *lg, uint64_t step) {
  uint64_t rows = 0, bytes = 0;
  double psum = 0;
  for (uint32_t s = 0; s < ps->nshards; s++) {
    char err[512];
    char *json = ps_net_stats(ps, s, err, sizeof(err));
    if (!json) {
      logger_warn(lg, "storage statistics unavailable: %s", err);
      return;
    }
    const char *t0 = strstr(json, "\"tables\":[{\"id\":0,");
    if (t0) {
      double r = json_num(t0, "rows"), b = json_num(t0, "value_bytes"),
             mp = json_num(t0, "mean_p");
      if (r > 0 && isfinite(b) && isfinite(mp)) {
        rows += (uint64_t)r;
        bytes += (uint64_t)b;
        psum += mp * r;
      }
    }
    free(json);
  }
  if (rows)
    summary_storage(rows, bytes, psum / (double)rows,
                    (long long)cfg->embedding.dim, lg, step, stdout);
}

int main(int argc, char **argv) {
  uint64_t progress_fd = 0;
  const struct cli_spec spec = {.prog = "maskps-worker",
                                .usage = USAGE,
                                .help = USAGE,
                                .option = worker_option,
                                .ctx = &progress_fd};
  struct cli_args args;
  int rc = cli_parse(argc, argv, &spec, &args);
  if (rc != CLI_CONTINUE)
    return rc;
  const uint64_t rank = args.rank;
  struct config *cfg = cli_load_config(spec.prog, &args);
  if (!cfg)
    return 2;
  char err[4096] = "";
  const uint64_t S = (uint64_t)cfg->cluster.pservers,
                 W = (uint64_t)cfg->cluster.workers;
  if (S == 0 || rank >= W) {
    fprintf(stderr,
            "maskps-worker: rank %llu with cluster.pservers %llu and "
            "cluster.workers %llu (a worker needs pservers >= 1 and rank < "
            "workers)\n",
            (unsigned long long)rank, (unsigned long long)S,
            (unsigned long long)W);
    config_free(cfg);
    return 2;
  }
  if (cfg->security.curve) {
    fprintf(stderr, "maskps-worker: security.curve is not supported by the "
                    "local cluster yet; set it to false\n");
    config_free(cfg);
    return 2;
  }

  struct logger *lg = cli_logger_open(spec.prog, cfg, "worker", rank);
  if (!lg) {
    config_free(cfg);
    return 1;
  }
  if (cfg->train.threads > 0)
    gemm_set_threads((int)cfg->train.threads);
  FILE *progress = progress_fd ? fdopen((int)progress_fd, "w") : NULL;
  /* The launcher put us in our own process group, in the terminal's
   * background: with `stty tostop` a write there would stop us (SIGTTOU)
   * unless the signal is ignored. */
  if (progress)
    signal(SIGTTOU, SIG_IGN);
  char best[4096];
  snprintf(best, sizeof(best), "%s/best", cfg->train.run_dir);
  struct train_opts to = {
      .cfg = cfg,
      .log = lg,
      .progress = progress,
      .dense_via_ps = W > 1, /* see the header comment */
      .best_dir = rank == 0 ? best : NULL,
      .stop = cli_stop_flag(),
      .rank = (uint32_t)rank,
      .nranks = (uint32_t)W,
  };
  int status = 1;
  struct ps *ps = NULL;
  char **eps = xcalloc(S, sizeof(char *));
  struct trainer *tr = train_new(&to, err, sizeof(err));
  if (!tr) {
    logger_error(lg, "%s", err);
    status = 2;
    goto out;
  }
  for (uint64_t i = 0; i < S; i++) {
    char ep[512];
    snprintf(ep, sizeof(ep), "tcp://%s:%llu", cfg->cluster.host,
             (unsigned long long)(cfg->cluster.base_port + (int64_t)i));
    eps[i] = xstrdup(ep);
  }
  struct ps_net_opts po = {
      .endpoints = (const char *const *)eps,
      .nshards = (uint32_t)S,
      .rank = (uint32_t)rank,
      .dense_total = W > 1 ? train_dense_total(tr) : 0,
      .timeout_ms = (int)cfg->cluster.request_timeout_ms,
      .log = lg,
  };
  ps = ps_net_new(&po, err, sizeof(err));
  if (!ps) {
    logger_error(lg, "%s", err);
    goto out;
  }
  logger_info(lg,
              "worker %llu of %llu: %s, %d fields x %lld floats, %llu dense "
              "parameters, %llu pservers from %s, mode %s",
              (unsigned long long)rank, (unsigned long long)W,
              config_enum_name("model", "name", (int)cfg->model.name),
              train_fields(tr), (long long)cfg->embedding.dim,
              (unsigned long long)train_dense_total(tr), (unsigned long long)S,
              eps[0], config_enum_name("train", "mode", (int)cfg->train.mode));
  cli_catch_stop_signals();
  struct train_result res;
  if (train_run(tr, ps, &res, err, sizeof(err))) {
    logger_error(lg, "%s", err);
    goto out;
  }
  if (rank == 0) {
    summary_print(&res, stdout);
    report_storage(ps, cfg, lg, res.steps);
    fflush(stdout);
  } else {
    logger_info(lg, "trained %llu steps, %.0f samples/s",
                (unsigned long long)res.steps, res.samples_per_s);
  }
  status = res.interrupted ? 130 : 0;
out:
  ps_free(ps);
  for (uint64_t i = 0; i < S; i++)
    free(eps[i]);
  free(eps);
  train_free(tr);
  if (progress)
    fclose(progress);
  logger_free(lg);
  config_free(cfg);
  return status;
}
