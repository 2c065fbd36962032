/*
 * maskps-pserver: one parameter server shard. Opens its RocksDB store,
 * binds a ROUTER and serves pulls and pushes (pserver/server.h) until a
 * SHUTDOWN request, SIGTERM or SIGINT; then it flushes and closes the store.
 * Exit status: 0 after a clean shutdown, 1 a runtime failure (the message
 * says what and where), 2 a usage or config error.
 */
#include "common/check.h"
#include "common/cli.h"
#include "common/config.h"
#include "common/logger.h"
#include "common/net.h"
#include "common/ps.h"
#include "pserver/ps_local.h"
#include "pserver/server.h"
#include "pserver/store.h"
#include "pserver/warm.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The training loop's tables (worker/train.h): table 0 holds every
 * field's D-float embeddings, table 1 the 1-float LR weights of LR, FM and
 * DeepFM (unused, and empty, for the other models). "D" = embedding.dim. */
#define DEFAULT_TABLES "0:D,1:1"

static const char USAGE[] =
    "usage: maskps-pserver --config FILE --rank R [--set section.key=value "
    "...]\n"
    "                      [--endpoint tcp://HOST:PORT] [--tables SPEC]\n"
    "                      [--dense-floats N] [--db DIR]\n"
    "Try 'maskps-pserver --help' for more.\n";

static const char HELP[] =
    "maskps-pserver: one shard of maskps's parameter server.\n"
    "\n"
    "A run has cluster.pservers shards. Shard R holds the embedding rows\n"
    "whose feature id hashes to R (jump consistent hash over the shard\n"
    "count), in its own RocksDB directory, applies the sparse optimizer to\n"
    "every row pushed to it, and holds block R of the flat dense vector\n"
    "(contiguous blocks, the first ones one float longer when the length\n"
    "does not divide) with its Adam state. Workers reach it over ZeroMQ.\n"
    "The launcher ('maskps') normally starts it; run it by hand to debug.\n"
    "\n"
    "Options:\n"
    "  --config FILE        the run's YAML config (see configs/README.md)\n"
    "  --rank R             this shard's index, 0 .. cluster.pservers-1\n"
    "  --set S.K=V          override one config key (repeatable), e.g.\n"
    "                       --set pserver.memory_mb=512\n"
    "  --endpoint EP        where to listen (default: tcp://cluster.host:\n"
    "                       cluster.base_port+R); tcp://0.0.0.0:27000 for\n"
    "                       all interfaces\n"
    "  --tables SPEC        the sparse tables as id:dim,id:dim,... (dim D\n"
    "                       = embedding.dim), each with the embedding and\n"
    "                       optimizer sections' settings; default 0:D,1:1,\n"
    "                       the training loop's (table 0 every field's\n"
    "                       embeddings, table 1 LR/FM/DeepFM's weights)\n"
    "  --dense-floats N     length of the whole dense vector (the model's\n"
    "                       parameter count); 0 = no dense shard (default)\n"
    "  --db DIR             store directory (default: pserver.db_dir, or\n"
    "                       train.run_dir/db, plus /shard-R)\n"
    "  --help               this text\n"
    "\n"
    "Keys it reads: cluster.pservers, cluster.workers and train.mode (in\n"
    "sync mode a BARRIER waits for every worker, and with several workers\n"
    "a step's pushes are summed in worker order and applied once, when the\n"
    "step's barrier completes), cluster.host, cluster.base_port,\n"
    "pserver.memory_mb and pserver.wal (durability: sync, async, off),\n"
    "embedding.*, optimizer.*, train.seed (initial rows), train.run_dir,\n"
    "log.level, log.jsonl (records in run_dir/logs/pserver-R.jsonl),\n"
    "security.curve (secret key read from keys_dir/pserver-R.secret: 40\n"
    "Z85 characters, as the launcher writes them).\n"
    "\n"
    "Stopping: send SHUTDOWN (the launcher does), or SIGTERM / SIGINT; it\n"
    "stops taking requests, flushes every row and the dense block to disk\n"
    "and exits 0. Restarted on the same directory, it continues from there.\n"
    "\n"
    "Examples:\n"
    "  maskps-pserver --config configs/demo.yaml --rank 0 \\\n"
    "      --set cluster.pservers=2 --dense-floats 120000\n"
    "  maskps-pserver --config run.yaml --rank 1 --endpoint "
    "tcp://0.0.0.0:27001\n";

/* Reads the CURVE secret key of this pserver. */
static int read_key(const char *path, struct net_keypair *kp, char *err,
                    size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "cannot open CURVE key %s: %s", path,
             strerror(errno));
    return -1;
  }
  memset(kp, 0, sizeof(*kp));
  size_t n = fread(kp->sec, 1, NET_KEY_LEN, f);
  fclose(f);
  kp->sec[n] = 0;
  if (n != NET_KEY_LEN || net_keypair_from_secret(kp, err, errlen) < 0) {
    snprintf(err, errlen,
             "%s: not a CURVE secret key (expected %d Z85 characters)", path,
             NET_KEY_LEN);
    return -1;
  }
  return 0;
}

/* Parses "id:dim,..." ("D" = embedding.dim) into tables with the config's
 * settings. Returns 0, or -1 with err set. */
static int parse_tables(const char *spec, const struct config *cfg,
                        struct store_table *out, size_t *n, char *err,
                        size_t errlen) {
  struct store_table base;
  ps_local_tables_from_config(cfg, 1, &base);
  *n = 0;
  const char *p = spec;
  while (*p) {
    char *end;
    errno = 0;
    unsigned long id = strtoul(p, &end, 10);
    if (end == p || *end != ':' || errno || id > UINT32_MAX) {
      snprintf(err, errlen, "expected id:dim at \"%s\"", p);
      return -1;
    }
    p = end + 1;
    unsigned long dim;
    if (*p == 'D') {
      dim = (unsigned long)cfg->embedding.dim;
      end = (char *)p + 1;
    } else {
      dim = strtoul(p, &end, 10);
    }
    if (end == p || (*end && *end != ',') || dim < 1 || dim > ROW_MAX_DIM) {
      snprintf(err, errlen, "expected a dim in 1..%d or D at \"%s\"",
               ROW_MAX_DIM, p);
      return -1;
    }
    for (size_t i = 0; i < *n; i++)
      if (out[i].id == id) {
        snprintf(err, errlen, "table %lu given twice", id);
        return -1;
      }
    if (*n == STORE_MAX_TABLES) {
      snprintf(err, errlen, "more than %d tables", STORE_MAX_TABLES);
      return -1;
    }
    out[*n] = base;
    out[*n].id = (uint32_t)id;
    out[*n].dim = (unsigned)dim;
    /* AMTL is table 0's (worker/train.h): the LR weights' table 1 stays a
     * plain table, as in embedded mode (launcher/main_maskps.c). */
    out[*n].amtl = id == 0 ? base.amtl : 0;
    (*n)++;
    p = *end ? end + 1 : end;
  }
  if (*n == 0) {
    snprintf(err, errlen, "no tables");
    return -1;
  }
  return 0;
}

/* The options of ours beyond cli.h's. */
struct pserver_cli {
  const char *endpoint, *db, *table_spec;
  uint64_t dense;
};

static int pserver_option(void *ctx, const char *name, const char *value) {
  struct pserver_cli *o = ctx;
  if (!strcmp(name, "--endpoint"))
    o->endpoint = value;
  else if (!strcmp(name, "--tables"))
    o->table_spec = value;
  else if (!strcmp(name, "--dense-floats"))
    return cli_parse_u64(value, &o->dense) ? -1 : 1;
  else if (!strcmp(name, "--db"))
    o->db = value;
  else
    return 0;
  return 1;
}

int main(int argc, char **argv) {
  /* The memory budget (pserver.memory_mb) is what the caches and memtables
   * count; what glibc adds is fragmentation. After large frees glibc raises
   * its mmap threshold, and RocksDB's 1 MB memtable blocks then share the
   * heap with the row cache's ~240-byte rows: RSS measured 1.21x the budget
   * on a table 5x the budget, 1.02x with the threshold pinned at 64 KiB
   * (bench/results/store-2026-11-24.md). Set here, not in the store, so an
   * embedded worker's allocator is left alone. */
  mallopt(M_MMAP_THRESHOLD, 64 << 10);
  struct pserver_cli opts = {.table_spec = DEFAULT_TABLES};
  const struct cli_spec spec = {.prog = "maskps-pserver",
                                .usage = USAGE,
                                .help = HELP,
                                .option = pserver_option,
                                .ctx = &opts};
  struct cli_args args;
  int rc = cli_parse(argc, argv, &spec, &args);
  if (rc != CLI_CONTINUE)
    return rc;
  const uint64_t rank = args.rank, dense = opts.dense;
  const char *endpoint = opts.endpoint, *db = opts.db,
             *table_spec = opts.table_spec;
  struct config *cfg = cli_load_config(spec.prog, &args);
  if (!cfg)
    return 2;
  char err[8192];
  const uint64_t S = (uint64_t)cfg->cluster.pservers;
  if (S == 0 || rank >= S) {
    fprintf(stderr,
            "maskps-pserver: rank %llu but cluster.pservers is %llu%s\n",
            (unsigned long long)rank, (unsigned long long)S,
            S == 0 ? " (embedded mode: no pserver runs; set "
                     "cluster.pservers >= 1)"
                   : " (ranks are 0 .. pservers-1)");
    config_free(cfg);
    return 2;
  }

  /* Logger: human lines on stderr, records in run_dir/logs. */
  struct logger *lg = cli_logger_open(spec.prog, cfg, "pserver", rank);
  if (!lg) {
    config_free(cfg);
    return 1;
  }

  /* The store. */
  char dir[4096];
  if (db)
    snprintf(dir, sizeof(dir), "%s", db);
  else if (cfg->pserver.db_dir[0])
    snprintf(dir, sizeof(dir), "%s/shard-%llu", cfg->pserver.db_dir,
             (unsigned long long)rank);
  else
    snprintf(dir, sizeof(dir), "%s/db/shard-%llu", cfg->train.run_dir,
             (unsigned long long)rank);
  if (cli_make_dirs(dir) < 0) {
    logger_error(lg, "cannot create store directory %s: %s", dir,
                 strerror(errno));
    logger_free(lg);
    config_free(cfg);
    return 1;
  }
  struct store_table *tables = xcalloc(STORE_MAX_TABLES, sizeof(*tables));
  size_t ntables = 0;
  if (parse_tables(table_spec, cfg, tables, &ntables, err, sizeof(err)) < 0) {
    fprintf(stderr, "maskps-pserver: --tables %s: %s\n%s", table_spec, err,
            USAGE);
    free(tables);
    logger_free(lg);
    config_free(cfg);
    return 2;
  }
  struct store_options so;
  ps_local_store_options(cfg, dense, (uint32_t)S, (uint32_t)rank, &so);
  so.tables = tables;
  so.ntables = ntables;
  /* warm_start.tables: read through to the old tables on a miss */
  if (warm_attach(cfg, &so, err, sizeof(err)) < 0) {
    logger_error(lg, "%s", err);
    free(tables);
    logger_free(lg);
    config_free(cfg);
    return 1;
  }
  struct store *st = store_open(dir, &so, err, sizeof(err));
  if (!st) {
    logger_error(lg, "%s", err);
    free(tables);
    logger_free(lg);
    config_free(cfg);
    return 1;
  }

  /* The server. */
  char ep[512];
  if (endpoint)
    snprintf(ep, sizeof(ep), "%s", endpoint);
  else
    snprintf(ep, sizeof(ep), "tcp://%s:%llu", cfg->cluster.host,
             (unsigned long long)(cfg->cluster.base_port + (int64_t)rank));
  struct net_keypair kp;
  struct net_opts nopts = {0};
  int status = 0;
  if (cfg->security.curve) {
    char kpath[4096];
    if (cfg->security.keys_dir[0])
      snprintf(kpath, sizeof(kpath), "%s/pserver-%llu.secret",
               cfg->security.keys_dir, (unsigned long long)rank);
    else
      snprintf(kpath, sizeof(kpath), "%s/keys/pserver-%llu.secret",
               cfg->train.run_dir, (unsigned long long)rank);
    if (read_key(kpath, &kp, err, sizeof(err)) < 0) {
      logger_error(lg, "%s", err);
      status = 1;
    }
    nopts.curve_self = &kp;
  }
  struct server_opts o = {
      .endpoint = ep,
      .rank = (uint32_t)rank,
      .nshards = (uint32_t)S,
      .workers = (uint32_t)cfg->cluster.workers,
      .dense_total = dense,
      .tables = tables,
      .ntables = ntables,
      .net = cfg->security.curve ? &nopts : NULL,
      .log = lg,
      .sync = cfg->train.mode == CONFIG_MODE_SYNC,
      .stats_every_s = cfg->log.interval_s,
  };
  struct server *srv = status ? NULL : server_new(st, &o, err, sizeof(err));
  if (!status && !srv) {
    logger_error(lg, "%s", err);
    status = 1;
  }
  if (srv) {
    cli_catch_stop_signals();
    logger_info(lg,
                "store %s: %llu tables (%s), dense block of %zu "
                "floats (%s)",
                dir, (unsigned long long)ntables, table_spec, so.dense_size,
                store_dense_loaded(st) ? "loaded" : "zeros");
    if (server_run(srv, cli_stop_flag(), err, sizeof(err)) < 0) {
      logger_error(lg, "%s", err);
      status = 1;
    }
    char *json = server_stats_json(srv, err, sizeof(err));
    if (json) {
      /* The record has its own rank: pass the fields after "rank", without
       * the object's closing brace. */
      json[strlen(json) - 1] = 0;
      logger_record_json(lg, 0, "pserver_stats", strchr(json, ',') + 1);
      free(json);
    }
    server_free(srv);
  }
  if (store_close(st, err, sizeof(err)) < 0) {
    logger_error(lg, "closing the store: %s", err);
    status = 1;
  } else if (status == 0) {
    logger_info(lg, "store %s closed; bye", dir);
  }
  free(tables);
  logger_free(lg);
  config_free(cfg);
  return status;
}
