/* maskps: the command a user runs (DESIGN.md "Processes and data flow").
 *
 *   maskps train CONFIG [--set section.key=value ...]
 *   maskps predict RUN_DIR DATA_FILE
 *   maskps table COMMAND ...   (runs maskps-table COMMAND ...)
 *
 * `train` runs embedded mode: the worker loop of worker/train.h against an
 * in-process store (pserver/ps_local.h) in run_dir/db, no sockets. This is
 * the one program that knows both worker/ and pserver/ (it wires them).
 * With cluster.pservers > 0 it runs a local cluster instead
 * (launcher/cluster.h): S maskps-pserver and W maskps-worker processes on
 * this machine, logs per process in run_dir/logs, the same summary.
 *
 * Run directory: config.yaml (every key, as run), logs/worker-0.jsonl
 * (train/valid/test/done records), db/shard-0 (the embedding rows at the
 * end of training), best/ (the state of the best validation: the store's
 * checkpoint best/shard-0 and the dense parameters best/dense.bin; what
 * `maskps predict` reads).
 *
 * Exit codes: 0 done; 1 the run failed (data, store, divergence); 2 the
 * command line or the config is wrong; 130 interrupted (Ctrl-C). */
#include "common/check.h"
#include "common/cli.h"
#include "common/config.h"
#include "common/logger.h"
#include "common/ps.h"
#include "launcher/cluster.h"
#include "launcher/summary.h"
#include "pserver/ps_local.h"
#include "pserver/store.h"
#include "pserver/warm.h"
#include "worker/nn/gemm.h"
#include "worker/nn/params.h"
#include "worker/reader.h"
#include "worker/train.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "maskps: train CTR models on a parameter server.\n"
    "\n"
    "usage:\n"
    "  maskps train CONFIG [--set section.key=value ...]\n"
    "      Train the model CONFIG describes. With no cluster in the config\n"
    "      (cluster.pservers: 0) it runs embedded: one process, the embedding\n"
    "      tables in a local RocksDB under train.run_dir/db. Prints the test\n"
    "      AUC and logloss of the best validation epoch.\n"
    "      With cluster.pservers S > 0 it starts S maskps-pserver and\n"
    "      cluster.workers W maskps-worker processes on this machine (ports\n"
    "      cluster.base_port..+S-1), waits, stops them, and prints the same\n"
    "      summary; if one dies the run stops, naming it with its last log\n"
    "      lines (run_dir/logs/<role>-<rank>.log). Ctrl-C stops them all.\n"
    "      --set overrides any key of the config file, e.g.\n"
    "        --set train.epochs=3 --set model.hidden_units=[400,400]\n"
    "        --set data.train=[data/day_0.tsv] --set train.run_dir=runs/try2\n"
    "      (the key reference is configs/README.md).\n"
    "  maskps predict RUN_DIR DATA_FILE\n"
    "      Print one click probability per line of DATA_FILE (same format as\n"
    "      the training data, label column included and ignored), in input\n"
    "      order, with the trained run in RUN_DIR. A malformed line is an\n"
    "      error: every line must get its answer.\n"
    "  maskps table COMMAND [ARGS...]\n"
    "      The table tool, maskps-table: inspect, verify, export, import and\n"
    "      migrate the embedding tables of stopped runs (S shards to S' "
    "shards,\n"
    "      D to D', fixed length to AMTL prefixes). `maskps table --help`\n"
    "      lists its commands; docs/table-format.md describes the export.\n"
    "  maskps --help\n"
    "\n"
    "The run directory gets config.yaml (every setting, as run),\n"
    "logs/worker-0.jsonl (one JSON object per event: train loss and\n"
    "samples/s, valid and test metrics), db/ (the tables at the end) and\n"
    "best/ (tables and dense parameters of the best validation epoch,\n"
    "which predict uses).\n"
    "\n"
    "Exit status: 0 done, 1 the run failed, 2 bad command line or config,\n"
    "130 interrupted.\n";

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* The store directory of shard 0 for cfg. */
static void db_dir(const struct config *cfg, char *out, size_t len) {
  if (cfg->pserver.db_dir[0])
    snprintf(out, len, "%s/shard-0", cfg->pserver.db_dir);
  else
    snprintf(out, len, "%s/db/shard-0", cfg->train.run_dir);
}

/* The store tables of the trainer's sparse tables (tables[TRAIN_MAX_TABLES])
 * with the config's settings; AMTL only on table 0 (the LR weights' table 1
 * is 1 float, a plain table, as on the pservers). Returns their count. */
static int trainer_store_tables(const struct config *cfg, struct trainer *tr,
                                struct store_table *tables) {
  uint32_t ids[TRAIN_MAX_TABLES];
  int dims[TRAIN_MAX_TABLES];
  int nt = train_tables(tr, ids, dims);
  ps_local_tables_from_config(cfg, (uint32_t)nt, tables);
  for (int i = 0; i < nt; i++) {
    tables[i].id = ids[i];
    tables[i].dim = (unsigned)dims[i];
    tables[i].amtl = i == 0 ? tables[i].amtl : 0;
  }
  return nt;
}

/* Opens the one store of embedded mode in dir (create = 1: a new one)
 * with the trainer's tables and wraps it as a struct ps. NULL with err
 * set. */
static struct ps *open_embedded(const struct config *cfg, struct trainer *tr,
                                const char *dir, bool dense_via_ps, int create,
                                struct store **st_out, char *err,
                                size_t errlen) {
  struct store_table tables[TRAIN_MAX_TABLES];
  int nt = trainer_store_tables(cfg, tr, tables);
  uint64_t dense = dense_via_ps ? train_dense_total(tr) : 0;
  struct store_options so;
  ps_local_store_options(cfg, dense, 1, 0, &so);
  so.tables = tables;
  so.ntables = (size_t)nt;
  so.create_if_missing = create;
  /* warm_start.tables: the store reads through to the old tables (opened
   * before anything is created, so a bad path writes nothing) */
  if (create && warm_attach(cfg, &so, err, errlen) < 0)
    return NULL;
  if (create && cli_make_dirs(dir) < 0) {
    snprintf(err, errlen, "cannot create the store directory %.512s: %s", dir,
             strerror(errno));
    return NULL;
  }
  struct store *st = store_open(dir, &so, err, errlen);
  if (!st)
    return NULL;
  struct ps *ps = ps_local_new(&st, 1, tables, (size_t)nt, dense, err, errlen);
  if (!ps) {
    store_close(st, NULL, 0); /* err already says why */
    return NULL;
  }
  *st_out = st;
  return ps;
}

/* The best state of a local-cluster run: one checkpoint per pserver,
 * dir/shard-<i> for i < nshards, wrapped as one struct ps with the
 * pservers' sharding (keys_shard over nshards), so a prediction reads the
 * rows where they were trained. stores[nshards] get the opened stores.
 * NULL with err set (the stores opened so far closed). */
static struct ps *open_best_shards(const struct config *cfg, struct trainer *tr,
                                   const char *dir, uint32_t nshards,
                                   struct store **stores, char *err,
                                   size_t errlen) {
  struct store_table tables[TRAIN_MAX_TABLES];
  int nt = trainer_store_tables(cfg, tr, tables);
  uint64_t dense = train_dense_total(tr);
  for (uint32_t i = 0; i < nshards; i++) {
    struct store_options so;
    /* the pservers' dense blocks, as they were checkpointed */
    ps_local_store_options(cfg, dense, nshards, i, &so);
    so.tables = tables;
    so.ntables = (size_t)nt;
    so.create_if_missing = 0;
    char path[4200];
    snprintf(path, sizeof(path), "%s/shard-%u", dir, i);
    stores[i] = store_open(path, &so, err, errlen);
    if (!stores[i]) {
      for (uint32_t j = 0; j < i; j++)
        store_close(stores[j], NULL, 0);
      return NULL;
    }
  }
  struct ps *ps =
      ps_local_new(stores, nshards, tables, (size_t)nt, 0, err, errlen);
  if (!ps)
    for (uint32_t j = 0; j < nshards; j++)
      store_close(stores[j], NULL, 0);
  return ps;
}

/* Bytes per stored row of table 0 against a fixed-D table: the AMTL
 * saving (1.0 without AMTL). */
static void report_storage(struct store *st, const struct config *cfg,
                           struct logger *lg, uint64_t step) {
  struct store_table_stats ts;
  uint64_t *hist = xcalloc((size_t)cfg->embedding.dim + 1, sizeof(uint64_t));
  char err[512] = "";
  if (store_table_scan(st, 0, &ts, hist, err, sizeof(err)) == 0)
    summary_storage(ts.rows, ts.value_bytes, ts.mean_p,
                    (long long)cfg->embedding.dim, lg, step, stdout);
  else
    logger_warn(lg, "storage statistics unavailable: %s", err);
  free(hist);
}

static int cmd_train(int argc, char **argv) {
  if (argc < 1) {
    fprintf(stderr, "maskps train: which config? (maskps train CONFIG)\n");
    return 2;
  }
  char err[1024] = "";
  struct config *cfg = config_new();
  if (config_read_file(cfg, argv[0], err, sizeof(err))) {
    fprintf(stderr, "maskps: %s\n", err);
    config_free(cfg);
    return 2;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = NULL;
    if (!strcmp(argv[i], "--set") && i + 1 < argc)
      a = argv[++i];
    else if (!strncmp(argv[i], "--set=", 6))
      a = argv[i] + 6;
    if (!a) {
      fprintf(stderr,
              "maskps train: unexpected argument '%s' (expected --set "
              "section.key=value)\n",
              argv[i]);
      config_free(cfg);
      return 2;
    }
    if (config_set(cfg, a, err, sizeof(err))) {
      fprintf(stderr, "maskps: %s\n", err);
      config_free(cfg);
      return 2;
    }
  }
  if (config_validate(cfg, err, sizeof(err))) {
    fprintf(stderr, "maskps: %s\n", err);
    config_free(cfg);
    return 2;
  }

  /* run directory: refuse to mix a new run into an old one's tables */
  const char *run = cfg->train.run_dir;
  char path[4096], dbdir[4096];
  db_dir(cfg, dbdir, sizeof(dbdir));
  if (exists(dbdir)) {
    fprintf(stderr,
            "maskps: %s exists (tables of an earlier run): remove it or "
            "choose another train.run_dir (--set train.run_dir=...)\n",
            dbdir);
    config_free(cfg);
    return 2;
  }
  snprintf(path, sizeof(path), "%s/logs", run);
  if (cli_make_dirs(path) < 0) {
    fprintf(stderr, "maskps: cannot create %s: %s\n", path, strerror(errno));
    config_free(cfg);
    return 1;
  }
  snprintf(path, sizeof(path), "%s/config.yaml", run);
  FILE *f = fopen(path, "w");
  if (!f || config_dump(cfg, f) || fclose(f)) {
    fprintf(stderr, "maskps: cannot write %s: %s\n", path, strerror(errno));
    config_free(cfg);
    return 1;
  }
  if (cfg->cluster.pservers > 0) {
    cli_catch_stop_signals();
    snprintf(path, sizeof(path), "%s/config.yaml", run);
    int rc = cluster_run(cfg, path, cli_stop_flag());
    config_free(cfg);
    return rc;
  }
  snprintf(path, sizeof(path), "%s/logs/worker-0.jsonl", run);
  struct logger *lg = logger_new("worker", 0, cfg->log.jsonl ? path : NULL,
                                 cfg->log.level, err, sizeof(err));
  if (!lg) {
    fprintf(stderr, "maskps: %s\n", err);
    config_free(cfg);
    return 1;
  }

  if (cfg->train.threads > 0) /* 0: OpenBLAS's default, one per core */
    gemm_set_threads((int)cfg->train.threads);
  bool tty = isatty(STDERR_FILENO);
  char best[4096];
  snprintf(best, sizeof(best), "%s/best", run);
  struct train_opts to = {
      .cfg = cfg,
      .log = lg,
      .progress = cfg->log.progress == CONFIG_PROGRESS_ON ||
                          (cfg->log.progress == CONFIG_PROGRESS_AUTO && tty)
                      ? stderr
                      : NULL,
      .dense_via_ps = false,
      .best_dir = best,
      .stop = cli_stop_flag(),
  };
  int status = 1;
  struct store *st = NULL;
  struct ps *ps = NULL;
  struct trainer *tr = train_new(&to, err, sizeof(err));
  if (!tr) {
    logger_error(lg, "%s", err);
    status = 2;
    goto out;
  }
  ps = open_embedded(cfg, tr, dbdir, to.dense_via_ps, 1, &st, err, sizeof(err));
  if (!ps) {
    logger_error(lg, "%s", err);
    goto out;
  }
  logger_info(lg,
              "embedded mode: %s, %d fields x %lld floats, %llu dense "
              "parameters, store %s",
              config_enum_name("model", "name", (int)cfg->model.name),
              train_fields(tr), (long long)cfg->embedding.dim,
              (unsigned long long)train_dense_total(tr), dbdir);
  cli_catch_stop_signals();
  struct train_result res;
  if (train_run(tr, ps, &res, err, sizeof(err))) {
    logger_error(lg, "%s", err);
    goto out;
  }
  summary_print(&res, stdout);
  report_storage(st, cfg, lg, res.steps);
  status = res.interrupted ? 130 : 0;
out:
  ps_free(ps);
  if (st && store_close(st, err, sizeof(err))) {
    logger_error(lg, "closing the store: %s", err);
    status = 1;
  }
  train_free(tr);
  logger_free(lg);
  config_free(cfg);
  return status;
}

static int cmd_predict(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "maskps predict: expected RUN_DIR DATA_FILE\n");
    return 2;
  }
  const char *run = argv[0], *data = argv[1];
  char err[1024] = "", path[4096];
  snprintf(path, sizeof(path), "%s/config.yaml", run);
  struct config *cfg = config_load_file(path, err, sizeof(err));
  if (!cfg) {
    fprintf(stderr, "maskps predict: %s\n", err);
    return 2;
  }
  /* the run's own directory, wherever it was moved to */
  free(cfg->train.run_dir);
  cfg->train.run_dir = xstrdup(run);
  struct logger *lg =
      logger_new("predict", 0, NULL, LOGGER_WARN, err, sizeof(err));
  /* learn the field count from the data file */
  const char *paths[] = {data};
  struct reader_options ro = {
      .paths = paths,
      .npaths = 1,
      .nranks = 1,
      .bad_line_fraction = 1, /* count them all; refused below */
      .report_first = 10,
      .log = lg,
  };
  struct data_csv_spec csv;
  reader_options_from_config(&ro, &csv, cfg);
  int status = 1;
  /* CSV: the file must have the header the model was trained on */
  char **columns = NULL;
  size_t ncolumns = 0;
  snprintf(path, sizeof(path), "%s/best/columns.txt", run);
  if (reader_load_columns(path, &columns, &ncolumns, err, sizeof(err)) < 0) {
    fprintf(stderr, "maskps predict: %s\n", err);
    logger_free(lg);
    config_free(cfg);
    return 2;
  }
  ro.csv_expect = (const char *const *)columns;
  ro.ncsv_expect = ncolumns;
  struct trainer *tr = NULL;
  struct store *st = NULL, **shards = NULL; /* embedded; a cluster run's */
  uint32_t nshards = 0;
  struct ps *ps = NULL;
  struct reader *r = reader_open(&ro, err, sizeof(err));
  for (size_t i = 0; i < ncolumns; i++)
    free(columns[i]);
  free(columns);
  if (!r) {
    fprintf(stderr, "maskps predict: %s\n", err);
    status = 2;
    goto out;
  }
  /* A first pass that only parses: a malformed line must fail the command
   * before any answer is printed, not after the lines above it. */
  int F = (int)reader_nfields(r);
  uint64_t *keys = xcalloc(F > 0 ? (size_t)F : 1, sizeof(uint64_t));
  float *vals = xcalloc(F > 0 ? (size_t)F : 1, sizeof(float));
  struct data_example ex = {.keys = keys, .vals = vals};
  int rc;
  while ((rc = reader_next(r, &ex)) == 1)
    ;
  uint64_t bad = reader_bad_lines(r);
  free(keys);
  free(vals);
  reader_free(r);
  if (rc < 0 || bad) {
    fprintf(stderr,
            "maskps predict: %s: %llu malformed line(s) (reported above); "
            "every line needs an answer: fix or remove them\n",
            data, (unsigned long long)bad);
    goto out;
  }
  if (F <= 0) {
    fprintf(stderr, "maskps predict: %s: no valid line\n", data);
    goto out;
  }
  struct train_opts to = {.cfg = cfg, .log = lg, .fields = F};
  tr = train_new(&to, err, sizeof(err));
  if (!tr) {
    fprintf(stderr, "maskps predict: %s\n", err);
    goto out;
  }
  snprintf(path, sizeof(path), "%s/best/dense.bin", run);
  char report[1024];
  int n = params_load(train_params(tr), path, false, report, sizeof(report),
                      err, sizeof(err));
  if (n < 0) {
    fprintf(stderr, "maskps predict: %s\n", err);
    goto out;
  }
  if (n != train_params(tr)->count) {
    fprintf(stderr, "maskps predict: %s does not fit the model: %s\n", path,
            report);
    goto out;
  }
  if (cfg->cluster.pservers > 0) {
    nshards = (uint32_t)cfg->cluster.pservers;
    shards = xcalloc(nshards, sizeof(*shards));
    snprintf(path, sizeof(path), "%s/best", run);
    ps = open_best_shards(cfg, tr, path, nshards, shards, err, sizeof(err));
    if (!ps)
      nshards = 0;
  } else {
    snprintf(path, sizeof(path), "%s/best/shard-0", run);
    ps = open_embedded(cfg, tr, path, false, 0, &st, err, sizeof(err));
  }
  if (!ps) {
    fprintf(stderr, "maskps predict: %s\n", err);
    goto out;
  }
  struct metrics_result mr;
  if (train_eval_files(tr, ps, paths, 1, stdout, &mr, err, sizeof(err))) {
    fprintf(stderr, "maskps predict: %s\n", err);
    goto out;
  }
  if (fflush(stdout)) {
    fprintf(stderr, "maskps predict: writing the output failed: %s\n",
            strerror(errno));
    goto out;
  }
  fprintf(stderr, "%llu lines; against their labels: AUC %.4f logloss %.4f\n",
          (unsigned long long)mr.n, mr.auc, mr.logloss);
  status = 0;
out:
  ps_free(ps);
  if (st && store_close(st, err, sizeof(err)))
    fprintf(stderr, "maskps predict: closing the store: %s\n", err);
  for (uint32_t i = 0; i < nshards; i++)
    if (store_close(shards[i], err, sizeof(err)))
      fprintf(stderr, "maskps predict: closing shard %u: %s\n", i, err);
  free(shards);
  train_free(tr);
  logger_free(lg);
  config_free(cfg);
  return status;
}

/* `maskps table ...` is maskps-table under the umbrella command: one program
 * owns the table code (pserver/table.c), so this only finds and runs it. */
static int cmd_table(int argc, char **argv) {
  char bin[PATH_MAX];
  if (cluster_find_program("maskps-table", "pserver", bin, sizeof(bin))) {
    fprintf(stderr,
            "maskps table: cannot find maskps-table next to maskps (or in "
            "$MASKPS_BIN_DIR); build it with `ninja maskps-table`\n");
    return 2;
  }
  char **args = xmalloc(((size_t)argc + 2) * sizeof(*args));
  args[0] = "maskps-table";
  for (int i = 0; i < argc; i++)
    args[i + 1] = argv[i];
  args[argc + 1] = NULL;
  execv(bin, args);
  fprintf(stderr, "maskps table: cannot run %s: %s\n", bin, strerror(errno));
  free(args);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
      !strcmp(argv[1], "help")) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "train"))
    return cmd_train(argc - 2, argv + 2);
  if (!strcmp(argv[1], "predict"))
    return cmd_predict(argc - 2, argv + 2);
  if (!strcmp(argv[1], "table"))
    return cmd_table(argc - 2, argv + 2);
  fprintf(stderr,
          "maskps: unknown command '%s' (train, predict, table; see maskps "
          "--help)\n",
          argv[1]);
  return 2;
}
