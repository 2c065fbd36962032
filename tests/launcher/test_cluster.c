/* cluster: distributed mode against embedded mode, and the local cluster's
 * fault handling, on a few thousand rows of common/gen.h.
 *
 *   equivalence: one worker in sync mode (worker/train.h over worker/ps_net.h)
 *     against two real maskps-pserver processes on tcp loopback gives the
 *     same per-step losses, the same final dense vector and the same
 *     embedding rows (every key, prefix length and value) as embedded mode
 *     (pserver/ps_local.h over one store) with dense_via_ps, to 1e-6;
 *   a pserver or a worker killed with SIGKILL during `maskps train` ends the
 *     run within a bound, exit 1, with a message naming the process;
 *   SIGINT to `maskps train` exits 130 and leaves no process behind, the
 *     pservers having flushed and closed their stores;
 *   the last two also in async mode, where the worker overlaps the next
 *     step's pulls with the current step (tests/launcher/test_cluster_async.c
 *     checks what those pulls read). */
#include "common/config.h"
#include "common/gen.h"
#include "common/ps.h"
#include "launcher_testlib.h"
#include "pserver/ps_local.h"
#include "pserver/store.h"
#include "worker/ps_net.h"
#include "worker/train.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define ROWS 3000
#define MAX_STEPS 256
#define S 2 /* pservers */

static char g_dir[64];
static int g_port; /* base port of this test process's clusters */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int setup(void **state) {
  (void)state;
  strcpy(g_dir, "/tmp/maskps-cluster-XXXXXX");
  if (!mkdtemp(g_dir))
    return -1;
  /* distinct ports per test process, away from the default 27000 */
  g_port = 30000 + (int)(getpid() % 3000) * 8;
  char err[256], p[128];
  struct gen *g = gen_new(1, 0.001, err, sizeof(err));
  if (!g)
    return -1;
  snprintf(p, sizeof(p), "%s/train.tsv", g_dir);
  struct gen_out out = {fopen(p, "w"), "train", 1, NULL};
  if (!out.f)
    return -1;
  int rc = gen_write(g, 0, ROWS, &out, 1, NULL, NULL, err, sizeof(err));
  rc |= fclose(out.f);
  /* held-out rows (later row numbers) for validation and test */
  snprintf(p, sizeof(p), "%s/test.tsv", g_dir);
  struct gen_out held = {fopen(p, "w"), "test", 1, NULL};
  if (!held.f)
    return -1;
  rc |= gen_write(g, ROWS, ROWS + 600, &held, 1, NULL, NULL, err, sizeof(err));
  rc |= fclose(held.f);
  gen_free(g);
  return rc ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  testlib_rm_tree(g_dir);
  return 0;
}

/* The tests' model: a small DNN with AMTL (prefixes shrink after step 5,
 * so the ragged push and the prefix lengths are compared too). */
static struct config *make_config(const char *run, const char *const *sets) {
  char text[2048];
  snprintf(text, sizeof(text),
           "data:\n"
           "  train: [%s/train.tsv]\n"
           "model:\n"
           "  name: dnn\n"
           "  hidden_units: [32, 32]\n"
           "embedding:\n"
           "  dim: 8\n"
           "  amtl: true\n"
           "  amtl_warmup_steps: 5\n"
           "train:\n"
           "  batch_size: 128\n"
           "  epochs: 1\n"
           "  seed: 7\n"
           "  threads: 1\n"
           "  run_dir: %s/%s\n"
           "cluster:\n"
           "  base_port: %d\n"
           "  request_timeout_ms: 5000\n"
           "log:\n"
           "  level: warn\n"
           "  interval_s: 1000\n"
           "  progress: off\n"
           "pserver:\n"
           "  memory_mb: 64\n"
           "  cache_mb: 16\n"
           "  block_cache_mb: 8\n"
           "  write_buffer_mb: 8\n"
           "  wal: off\n",
           g_dir, g_dir, run, g_port);
  char err[1024];
  struct config *cfg = testlib_config(text, sets, err, sizeof(err));
  if (!cfg)
    fail_msg("%s", err);
  return cfg;
}

static void write_config(const struct config *cfg, const char *path) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(config_dump(cfg, f), 0);
  assert_int_equal(fclose(f), 0);
}

/* fork + exec argv with stdout and stderr into log; returns the pid. */
static pid_t spawn(char *const *argv, const char *log) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execv(argv[0], argv);
    _exit(127);
  }
  return pid;
}

/* Waits for pid at most limit_s; returns its status, or -1 on timeout
 * (then it is killed). */
static int wait_bounded(pid_t pid, double limit_s) {
  double t0 = now_s();
  for (;;) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      return st;
    if (now_s() - t0 > limit_s) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
    sleep_ms(20);
  }
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f)
    return calloc(1, 1);
  char *s = calloc(1, 1 << 20);
  size_t n = fread(s, 1, (1 << 20) - 1, f);
  s[n] = 0;
  fclose(f);
  return s;
}

/* ---- equivalence ----------------------------------------------------------
 */

struct run {
  double loss[MAX_STEPS];
  uint64_t nsteps;
  float *dense; /* the store's final dense vector */
  size_t ndense;
  /* every row of table 0, in feature-id order (merged over shards) */
  uint64_t *fid;
  uint16_t *p;
  float *vals; /* [nrows * D], p[i] used per row */
  size_t nrows, caprows;
};

static void on_step(void *ctx, uint64_t step, double loss) {
  struct run *r = ctx;
  assert_int_equal(step, r->nsteps + 1);
  assert_true(step <= MAX_STEPS);
  r->loss[r->nsteps++] = loss;
}

static struct trainer *new_trainer(const struct config *cfg, struct run *r) {
  char err[1024];
  struct train_opts o = {
      .cfg = cfg, .dense_via_ps = true, .on_step = on_step, .ctx = r};
  struct trainer *tr = train_new(&o, err, sizeof(err));
  if (!tr) {
    print_error("train_new: %s\n", err);
    fail();
  }
  return tr;
}

static void tables_of(const struct config *cfg, struct trainer *tr,
                      struct store_table *t, size_t *nt) {
  uint32_t ids[TRAIN_MAX_TABLES];
  int dims[TRAIN_MAX_TABLES];
  *nt = (size_t)train_tables(tr, ids, dims);
  ps_local_tables_from_config(cfg, (uint32_t)*nt, t);
  for (size_t i = 0; i < *nt; i++) {
    t[i].id = ids[i];
    t[i].dim = (unsigned)dims[i];
    t[i].amtl = i == 0 ? t[i].amtl : 0;
  }
}

static void train_and_pull(struct trainer *tr, struct ps *ps, struct run *r) {
  char err[1024];
  struct train_result res;
  if (train_run(tr, ps, &res, err, sizeof(err))) {
    print_error("train_run: %s\n", err);
    fail();
  }
  assert_int_equal(res.steps, r->nsteps);
  r->ndense = train_dense_total(tr);
  r->dense = calloc(r->ndense, sizeof(float));
  assert_int_equal(ps_pull_dense(ps, r->nsteps + 1, 0, r->ndense, r->dense, err,
                                 sizeof(err)),
                   0);
}

/* Appends every row of table 0 of store dir (opened with so) to r. */
static void collect_rows(const char *dir, const struct store_options *so,
                         unsigned D, struct run *r) {
  char err[1024];
  struct store *st = store_open(dir, so, err, sizeof(err));
  if (!st)
    print_error("store_open %s: %s\n", dir, err);
  assert_non_null(st);
  struct store_iter *it = store_iter_new(st, 0, err, sizeof(err));
  assert_non_null(it);
  uint64_t fid;
  struct row row;
  int rc;
  while ((rc = store_iter_next(it, &fid, &row, err, sizeof(err))) == 1) {
    if (r->nrows == r->caprows) {
      r->caprows = r->caprows ? 2 * r->caprows : 1024;
      r->fid = realloc(r->fid, r->caprows * sizeof(uint64_t));
      r->p = realloc(r->p, r->caprows * sizeof(uint16_t));
      r->vals = realloc(r->vals, r->caprows * D * sizeof(float));
    }
    assert_true(row.p >= 1 && row.p <= D);
    r->fid[r->nrows] = fid;
    r->p[r->nrows] = row.p;
    memcpy(r->vals + r->nrows * D, row.values, row.p * sizeof(float));
    r->nrows++;
  }
  assert_int_equal(rc, 0);
  store_iter_free(it);
  assert_int_equal(store_close(st, err, sizeof(err)), 0);
}

/* Sorts r's rows by feature id (shards each give their own order). */
static void sort_rows(struct run *r, unsigned D) {
  /* insertion of an index permutation: n is a few thousand */
  size_t n = r->nrows;
  size_t *idx = malloc(n * sizeof(size_t));
  for (size_t i = 0; i < n; i++)
    idx[i] = i;
  for (size_t i = 1; i < n; i++) {
    size_t v = idx[i], j = i;
    while (j > 0 && r->fid[idx[j - 1]] > r->fid[v]) {
      idx[j] = idx[j - 1];
      j--;
    }
    idx[j] = v;
  }
  uint64_t *fid = malloc(n * sizeof(uint64_t));
  uint16_t *p = malloc(n * sizeof(uint16_t));
  float *vals = malloc(n * D * sizeof(float));
  for (size_t i = 0; i < n; i++) {
    fid[i] = r->fid[idx[i]];
    p[i] = r->p[idx[i]];
    memcpy(vals + i * D, r->vals + idx[i] * D, D * sizeof(float));
  }
  free(r->fid), free(r->p), free(r->vals), free(idx);
  r->fid = fid, r->p = p, r->vals = vals;
}

static void run_free(struct run *r) {
  free(r->dense), free(r->fid), free(r->p), free(r->vals);
}

static void embedded_run(struct run *r) {
  struct config *cfg = make_config("emb", NULL);
  struct trainer *tr = new_trainer(cfg, r);
  struct store_table t[TRAIN_MAX_TABLES];
  size_t nt;
  tables_of(cfg, tr, t, &nt);
  uint64_t dense = train_dense_total(tr);
  struct store_options so;
  ps_local_store_options(cfg, dense, 1, 0, &so);
  so.tables = t;
  so.ntables = nt;
  char dir[256], err[1024];
  snprintf(dir, sizeof(dir), "%s/emb-db", g_dir);
  struct store *st = store_open(dir, &so, err, sizeof(err));
  assert_non_null(st);
  struct ps *ps = ps_local_new(&st, 1, t, nt, dense, err, sizeof(err));
  assert_non_null(ps);
  train_and_pull(tr, ps, r);
  ps_free(ps);
  assert_int_equal(store_close(st, err, sizeof(err)), 0);
  so.create_if_missing = 0;
  collect_rows(dir, &so, t[0].dim, r);
  train_free(tr);
  config_free(cfg);
}

static void distributed_run(struct run *r) {
  static const char *const sets[] = {"cluster.pservers=2", "train.mode=sync",
                                     NULL};
  struct config *cfg = make_config("dist", sets);
  struct trainer *tr = new_trainer(cfg, r);
  struct store_table t[TRAIN_MAX_TABLES];
  size_t nt;
  tables_of(cfg, tr, t, &nt);
  assert_int_equal(nt, 1); /* a DNN: table 0 only */
  uint64_t dense = train_dense_total(tr);
  char cpath[256], dbs[S][256], eps[S][64], err[1024];
  snprintf(cpath, sizeof(cpath), "%s/dist.yaml", g_dir);
  write_config(cfg, cpath);
  pid_t pid[S];
  char dense_s[32], tables_s[32];
  snprintf(dense_s, sizeof(dense_s), "%llu", (unsigned long long)dense);
  snprintf(tables_s, sizeof(tables_s), "0:%u", t[0].dim);
  const char *epp[S];
  for (int i = 0; i < S; i++) {
    char rank[8], log[256];
    snprintf(rank, sizeof(rank), "%d", i);
    snprintf(dbs[i], sizeof(dbs[i]), "%s/dist-db/shard-%d", g_dir, i);
    snprintf(log, sizeof(log), "%s/dist-pserver-%d.log", g_dir, i);
    snprintf(eps[i], sizeof(eps[i]), "tcp://127.0.0.1:%d", g_port + i);
    epp[i] = eps[i];
    char *argv[] = {MASKPS_PSERVER_BIN,
                    "--config",
                    cpath,
                    "--rank",
                    rank,
                    "--dense-floats",
                    dense_s,
                    "--tables",
                    tables_s,
                    "--db",
                    dbs[i],
                    NULL};
    pid[i] = spawn(argv, log);
  }
  struct ps_net_opts po = {.endpoints = epp,
                           .nshards = S,
                           .rank = 0,
                           .dense_total = dense,
                           .timeout_ms = 20000};
  struct ps *ps = ps_net_new(&po, err, sizeof(err));
  assert_non_null(ps);
  train_and_pull(tr, ps, r);
  if (ps_net_shutdown(ps, err, sizeof(err)))
    print_error("shutdown: %s\n", err);
  ps_free(ps);
  for (int i = 0; i < S; i++) {
    int st = wait_bounded(pid[i], 30);
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  for (int i = 0; i < S; i++) {
    struct store_options so;
    ps_local_store_options(cfg, dense, S, (uint32_t)i, &so);
    so.tables = t;
    so.ntables = nt;
    so.create_if_missing = 0;
    collect_rows(dbs[i], &so, t[0].dim, r);
  }
  train_free(tr);
  config_free(cfg);
}

static void test_sync_one_worker_equals_embedded(void **state) {
  (void)state;
  struct run *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
  embedded_run(a);
  distributed_run(b);
  const unsigned D = 8;
  sort_rows(a, D);
  sort_rows(b, D);
  /* losses, step by step */
  assert_true(a->nsteps >= 20);
  assert_int_equal(a->nsteps, b->nsteps);
  double dl = 0;
  for (uint64_t i = 0; i < a->nsteps; i++)
    dl = fmax(dl, fabs(a->loss[i] - b->loss[i]));
  /* the loss moved: a run that trained nothing would also "agree" */
  assert_true(a->loss[a->nsteps - 1] < a->loss[0] - 0.01);
  /* the dense vector */
  assert_int_equal(a->ndense, b->ndense);
  double dd = 0, moved = 0;
  for (size_t i = 0; i < a->ndense; i++)
    dd = fmax(dd, fabs((double)a->dense[i] - (double)b->dense[i]));
  /* rows: the same keys, prefixes and values */
  assert_true(a->nrows > 1000);
  assert_int_equal(a->nrows, b->nrows);
  size_t shrunk = 0;
  double dr = 0, sum_a = 0, sum_b = 0;
  for (size_t i = 0; i < a->nrows; i++) {
    assert_true(a->fid[i] == b->fid[i]);
    assert_int_equal(a->p[i], b->p[i]);
    shrunk += a->p[i] < D;
    for (unsigned j = 0; j < a->p[i]; j++) {
      double x = a->vals[i * D + j], y = b->vals[i * D + j];
      dr = fmax(dr, fabs(x - y));
      sum_a += x * (double)(j + 1);
      sum_b += y * (double)(j + 1);
      moved += fabs(x);
    }
  }
  print_message("%llu steps, %zu dense floats, %zu rows (%zu with a prefix "
                "< D), checksums %.9g / %.9g; max differences: loss %g, "
                "dense %g, rows %g\n",
                (unsigned long long)a->nsteps, a->ndense, a->nrows, shrunk,
                sum_a, sum_b, dl, dd, dr);
  assert_true(moved > 0);
  assert_true(shrunk > 0); /* AMTL truncated some rows: plen travelled */
  assert_true(dl <= 1e-6);
  assert_true(dd <= 1e-6);
  assert_true(dr <= 1e-6);
  assert_true(fabs(sum_a - sum_b) <= 1e-6 * fmax(1, fabs(sum_a)));
  run_free(a), run_free(b);
  free(a), free(b);
}

/* ---- the learning-rate scale -----------------------------------------------
 */

/* Closed forms through ps: a sparse SGD row moves by -lr*g, then by
 * -lr*scale*g after ps_set_lr_scale(scale); the dense Adam's first step
 * (fresh state: m/sqrt(v) = sign g) moves by -lr, then by -lr*scale; a
 * second scale is absolute, not compounded. */
static void check_lr_scale(struct ps *ps, const struct config *cfg) {
  char err[1024];
  const unsigned D = (unsigned)cfg->embedding.dim;
  const double lr = cfg->optimizer.sparse_lr, dlr = cfg->optimizer.lr;
  uint64_t key = 12345;
  uint16_t plen[1], glen[1] = {(uint16_t)D};
  uint32_t count[1], clicks[1];
  float v0[64], v1[64], g[64];
  for (unsigned j = 0; j < D; j++)
    g[j] = 1.0f;
  struct ps_rows rows = {plen, count, clicks, v0, 64};
  struct ps_grads pg = {
      .table = 0, .step = 1, .n = 1, .keys = &key, .glen = glen, .grads = g};
  const float scales[] = {1.0f, 0.5f, 0.25f};
  float dense[2] = {0, 0}, dgrad[2] = {1, -1};
  for (int k = 0; k < 3; k++) {
    if (k > 0)
      assert_int_equal(ps_set_lr_scale(ps, scales[k], err, sizeof(err)), 0);
    rows.vals = v0;
    assert_int_equal(ps_pull(ps, 0, pg.step, 1, &key, &rows, err, sizeof(err)),
                     (long)D);
    assert_int_equal(ps_push(ps, &pg, err, sizeof(err)), 0);
    rows.vals = v1;
    assert_int_equal(ps_pull(ps, 0, pg.step, 1, &key, &rows, err, sizeof(err)),
                     (long)D);
    for (unsigned j = 0; j < D; j++)
      assert_true(fabs((v0[j] - v1[j]) - lr * scales[k]) < 1e-6);
    pg.step++;
    /* dense: fresh values and Adam state, one step */
    float z[2] = {0, 0};
    assert_int_equal(ps_set_dense(ps, 0, 2, z, err, sizeof(err)), 0);
    assert_int_equal(ps_push_dense(ps, pg.step, 0, 2, dgrad, err, sizeof(err)),
                     0);
    assert_int_equal(ps_pull_dense(ps, pg.step, 0, 2, dense, err, sizeof(err)),
                     0);
    assert_true(fabs(dense[0] + dlr * scales[k]) < 1e-6 * dlr);
    assert_true(fabs(dense[1] - dlr * scales[k]) < 1e-6 * dlr);
  }
  assert_int_equal(ps_set_lr_scale(ps, 0.0f, err, sizeof(err)), -1);
  assert_int_equal(ps_set_lr_scale(ps, NAN, err, sizeof(err)), -1);
}

static void test_lr_scale_local_and_net(void **state) {
  (void)state;
  static const char *const sets[] = {"optimizer.sparse=sgd",
                                     "optimizer.sparse_lr=0.1",
                                     "optimizer.lr=0.01",
                                     "embedding.amtl=false",
                                     "embedding.min_count=1",
                                     "cluster.pservers=1",
                                     NULL};
  struct config *cfg = make_config("lr", sets);
  char err[1024], dir[256];
  struct store_table t;
  ps_local_tables_from_config(cfg, 1, &t);
  /* in process */
  struct store_options so;
  ps_local_store_options(cfg, 2, 1, 0, &so);
  so.tables = &t;
  so.ntables = 1;
  snprintf(dir, sizeof(dir), "%s/lr-db", g_dir);
  struct store *st = store_open(dir, &so, err, sizeof(err));
  assert_non_null(st);
  struct ps *ps = ps_local_new(&st, 1, &t, 1, 2, err, sizeof(err));
  assert_non_null(ps);
  check_lr_scale(ps, cfg);
  ps_free(ps);
  assert_int_equal(store_close(st, err, sizeof(err)), 0);
  /* a pserver process: the scale travels as PUSH_DENSE table PS_LR_SCALE */
  char cpath[256], log[256], tables[16], ep[64], db[256];
  snprintf(cpath, sizeof(cpath), "%s/lr.yaml", g_dir);
  write_config(cfg, cpath);
  snprintf(log, sizeof(log), "%s/lr-pserver.log", g_dir);
  snprintf(tables, sizeof(tables), "0:%u", t.dim);
  snprintf(db, sizeof(db), "%s/lr-net-db", g_dir);
  snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", g_port + 4);
  char *argv[] = {MASKPS_PSERVER_BIN,
                  "--config",
                  cpath,
                  "--rank",
                  "0",
                  "--dense-floats",
                  "2",
                  "--tables",
                  tables,
                  "--db",
                  db,
                  "--endpoint",
                  ep,
                  NULL};
  pid_t pid = spawn(argv, log);
  const char *eps[] = {ep};
  struct ps_net_opts po = {
      .endpoints = eps, .nshards = 1, .dense_total = 2, .timeout_ms = 20000};
  ps = ps_net_new(&po, err, sizeof(err));
  assert_non_null(ps);
  check_lr_scale(ps, cfg);
  assert_int_equal(ps_net_shutdown(ps, err, sizeof(err)), 0);
  ps_free(ps);
  int st2 = wait_bounded(pid, 30);
  assert_true(st2 != -1 && WIFEXITED(st2) && WEXITSTATUS(st2) == 0);
  config_free(cfg);
}

/* ---- faults of `maskps train` -------------------------------------------- */

/* The pid of launcher's child running `prog` with `--rank rank`, or -1. */
static pid_t find_child(pid_t launcher, const char *prog, int rank) {
  DIR *d = opendir("/proc");
  assert_non_null(d);
  struct dirent *e;
  pid_t found = -1;
  while (found < 0 && (e = readdir(d)) != NULL) {
    pid_t pid = (pid_t)atoi(e->d_name);
    if (pid <= 0)
      continue;
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *rp = strrchr(buf, ')'); /* "pid (comm) state ppid ..." */
    int ppid = 0;
    char stc;
    if (!rp || sscanf(rp + 1, " %c %d", &stc, &ppid) != 2 || ppid != launcher)
      continue;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    f = fopen(path, "r");
    if (!f)
      continue;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    /* argv[0] then --config X --rank R: NUL-separated */
    const char *a0 = buf;
    const char *args = buf + strlen(buf) + 1;
    char want[16];
    snprintf(want, sizeof(want), "%d", rank);
    bool rank_ok = false;
    for (const char *s = args; s < buf + n; s += strlen(s) + 1)
      if (!strcmp(s, "--rank") && s + strlen(s) + 1 < buf + n &&
          !strcmp(s + strlen(s) + 1, want))
        rank_ok = true;
    if (strstr(a0, prog) && rank_ok)
      found = pid;
  }
  closedir(d);
  return found;
}

/* Starts `maskps train` on a long run (many epochs) of a fresh run dir in
 * train.mode `mode` and waits until its worker 0 logged a training record.
 * (In async mode the worker has a pull started for the next step most of
 * the time: batch t+1's pulls overlap step t.) */
static pid_t start_long_run(const char *run, const char *mode, char *errlog,
                            size_t len, char *config_path, size_t cplen) {
  char mode_set[64];
  snprintf(mode_set, sizeof(mode_set), "train.mode=%s", mode);
  const char *const sets[] = {"cluster.pservers=2",
                              "train.epochs=10000",
                              "train.patience=1000",
                              "log.jsonl=true",
                              "log.interval_s=0.05",
                              "log.level=info",
                              mode_set,
                              NULL};
  struct config *cfg = make_config(run, sets);
  snprintf(config_path, cplen, "%s/%s.yaml", g_dir, run);
  write_config(cfg, config_path);
  char jsonl[512];
  snprintf(jsonl, sizeof(jsonl), "%s/logs/worker-0.jsonl", cfg->train.run_dir);
  config_free(cfg);
  snprintf(errlog, len, "%s/%s.out", g_dir, run);
  char *argv[] = {MASKPS_BIN, "train", config_path, NULL};
  pid_t pid = spawn(argv, errlog);
  double t0 = now_s();
  for (;;) {
    char *s = slurp(jsonl);
    bool trained = strstr(s, "\"event\":\"train\"") != NULL;
    free(s);
    if (trained)
      break;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      char *out = slurp(errlog);
      print_error("maskps train ended early (status 0x%x):\n%s\n", st, out);
      free(out);
      fail();
    }
    if (now_s() - t0 > 60) {
      kill(pid, SIGKILL);
      fail_msg("no training record in %s after 60 s", jsonl);
    }
    sleep_ms(20);
  }
  return pid;
}

static void kill_child_and_check(const char *run, const char *mode,
                                 const char *prog, const char *role, int rank) {
  char errlog[256], cpath[256];
  pid_t launcher =
      start_long_run(run, mode, errlog, sizeof(errlog), cpath, sizeof(cpath));
  pid_t victim = find_child(launcher, prog, rank);
  assert_true(victim > 0);
  pid_t others[3] = {find_child(launcher, "maskps-pserver", 0),
                     find_child(launcher, "maskps-pserver", 1),
                     find_child(launcher, "maskps-worker", 0)};
  double t0 = now_s();
  assert_int_equal(kill(victim, SIGKILL), 0);
  int st = wait_bounded(launcher, 30);
  double took = now_s() - t0;
  char *out = slurp(errlog);
  print_message("%s %d killed: maskps ended after %.1f s\n", role, rank, took);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 1)
    print_error("status 0x%x, output:\n%s\n", st, out);
  assert_true(st != -1);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
  char want[64];
  snprintf(want, sizeof(want), "%s %d (pid %d) was killed by signal 9", role,
           rank, (int)victim);
  if (!strstr(out, want))
    print_error("no \"%s\" in:\n%s\n", want, out);
  assert_non_null(strstr(out, want));
  assert_non_null(strstr(out, "last lines of"));
  /* bounded: the failure grace, not a request timeout (5 s x retries) */
  assert_true(took < 15);
  for (int i = 0; i < 3; i++) /* nothing left behind */
    assert_true(others[i] > 0 && kill(others[i], 0) == -1 && errno == ESRCH);
  free(out);
}

static void test_pserver_killed(void **state) {
  (void)state;
  kill_child_and_check("kill-ps", "sync", "maskps-pserver", "pserver", 1);
}

/* The same with the pull overlap: the pserver dies with pulls started. */
static void test_pserver_killed_async(void **state) {
  (void)state;
  kill_child_and_check("kill-ps-async", "async", "maskps-pserver", "pserver",
                       0);
}

static void test_worker_killed(void **state) {
  (void)state;
  kill_child_and_check("kill-wk", "sync", "maskps-worker", "worker", 0);
}

/* SIGINT in train.mode `mode` (run dir `run`): exit 130, every process
 * gone, the pservers closed cleanly, the worker stopped after a step. */
static void sigint_and_check(const char *run, const char *mode) {
  char errlog[256], cpath[256];
  pid_t launcher =
      start_long_run(run, mode, errlog, sizeof(errlog), cpath, sizeof(cpath));
  pid_t kids[3] = {find_child(launcher, "maskps-pserver", 0),
                   find_child(launcher, "maskps-pserver", 1),
                   find_child(launcher, "maskps-worker", 0)};
  for (int i = 0; i < 3; i++)
    assert_true(kids[i] > 0);
  assert_int_equal(kill(launcher, SIGINT), 0);
  int st = wait_bounded(launcher, 30);
  char *out = slurp(errlog);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 130)
    print_error("status 0x%x, output:\n%s\n", st, out);
  assert_true(st != -1 && WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 130);
  for (int i = 0; i < 3; i++)
    assert_true(kill(kids[i], 0) == -1 && errno == ESRCH);
  /* the pservers stopped cleanly: flushed and closed their stores */
  for (int i = 0; i < 2; i++) {
    char p[256];
    snprintf(p, sizeof(p), "%s/%s/logs/pserver-%d.log", g_dir, run, i);
    char *log = slurp(p);
    if (!strstr(log, "closed; bye"))
      print_error("pserver %d log:\n%s\n", i, log);
    assert_non_null(strstr(log, "closed; bye"));
    free(log);
  }
  /* and the worker stopped after a step, not killed */
  assert_non_null(strstr(out, "interrupted"));
  assert_null(strstr(out, "SIGKILL"));
  free(out);
}

static void test_sigint_stops_everything(void **state) {
  (void)state;
  sigint_and_check("sigint", "sync");
}

/* With the pull overlap, the worker stops with the next step's pulls
 * started: it drops them and still ends cleanly. */
static void test_sigint_stops_everything_async(void **state) {
  (void)state;
  sigint_and_check("sigint-async", "async");
}

/* A whole local-cluster run (run directory and files named by name):
 * maskps train exits 0 and prints embedded mode's summary (test metrics,
 * storage line) with a test AUC above min_auc; the rank-0 worker left its
 * JSONL and every process its log; maskps predict on the run directory
 * (one checkpoint per pserver) reproduces the printed test AUC. */
static void train_then_predict(const char *name, const char *const *sets,
                               double min_auc) {
  struct config *cfg = make_config(name, sets);
  char cpath[256], out_path[256], probs[256], run[256], pred_err[256];
  snprintf(cpath, sizeof(cpath), "%s/%s.yaml", g_dir, name);
  snprintf(run, sizeof(run), "%s", cfg->train.run_dir);
  config_free(cfg);
  FILE *f = fopen(cpath, "w");
  assert_non_null(f);
  struct config *c2 = make_config(name, sets);
  char err[512];
  assert_int_equal(config_set(c2, "data.valid=[]", err, sizeof(err)), 0);
  char test_set[256];
  snprintf(test_set, sizeof(test_set), "data.test=[%s/test.tsv]", g_dir);
  assert_int_equal(config_set(c2, test_set, err, sizeof(err)), 0);
  assert_int_equal(config_dump(c2, f), 0);
  assert_int_equal(fclose(f), 0);
  config_free(c2);
  snprintf(out_path, sizeof(out_path), "%s/%s.out", g_dir, name);
  char *argv[] = {MASKPS_BIN, "train", cpath, NULL};
  int st = wait_bounded(spawn(argv, out_path), 120);
  char *out = slurp(out_path);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    print_error("status 0x%x, output:\n%s\n", st, out);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  const char *t = strstr(out, "test AUC ");
  assert_non_null(t);
  double auc = atof(t + strlen("test AUC "));
  print_message("test AUC %.4f\n", auc);
  assert_true(auc > min_auc); /* it learned */
  assert_non_null(strstr(out, "embeddings: "));
  free(out);
  const char *files[] = {"logs/worker-0.jsonl", "logs/worker-0.log",
                         "logs/pserver-0.log",  "logs/pserver-1.log",
                         "config.yaml",         "best/dense.bin",
                         "best/shard-1"};
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", run, files[i]);
    if (access(p, F_OK))
      print_error("missing %s\n", p);
    assert_int_equal(access(p, F_OK), 0);
  }
  char test_path[256];
  snprintf(test_path, sizeof(test_path), "%s/test.tsv", g_dir);
  snprintf(probs, sizeof(probs), "%s/probs", g_dir);
  snprintf(pred_err, sizeof(pred_err), "%s/pred.err", g_dir);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int o = open(probs, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(pred_err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, STDOUT_FILENO);
    dup2(e, STDERR_FILENO);
    execl(MASKPS_BIN, MASKPS_BIN, "predict", run, test_path, (char *)NULL);
    _exit(127);
  }
  st = wait_bounded(pid, 60);
  char *pe = slurp(pred_err);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    print_error("predict: status 0x%x:\n%s\n", st, pe);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  const char *a = strstr(pe, "AUC ");
  assert_non_null(a);
  double pauc = atof(a + 4);
  print_message("cluster run: test AUC %.4f, predict %.4f\n", auc, pauc);
  assert_true(fabs(pauc - auc) < 1e-4); /* both printed with 4 digits */
  free(pe);
}

static void test_train_then_predict(void **state) {
  (void)state;
  static const char *const sets[] = {"cluster.pservers=2", "log.jsonl=true",
                                     "log.level=info", "train.epochs=3", NULL};
  train_then_predict("full", sets, 0.6);
}

/* BatchNorm in a cluster: one worker keeps its running statistics with the
 * dense parameters, so predict (which reads them from best/dense.bin) must
 * reproduce the run's test AUC; statistics not saved or not used would
 * give another one. (BN lowers this tiny run's AUC: 0.61 against 0.67.) */
static void test_train_then_predict_bn(void **state) {
  (void)state;
  static const char *const sets[] = {"cluster.pservers=2", "log.jsonl=true",
                                     "log.level=info",     "train.epochs=3",
                                     "model.use_bn=true",  NULL};
  train_then_predict("full-bn", sets, 0.55);
}

/* Two workers in sync mode share the dense vector on the pservers: each
 * reads half of the training lines (the same number of steps), rank 0 sets
 * the initial values and evaluates, and the run ends cleanly. */
static void test_two_workers_sync(void **state) {
  (void)state;
  static const char *const sets[] = {"cluster.pservers=2", "cluster.workers=2",
                                     "log.level=info", "data.split_test=0.1",
                                     NULL};
  struct config *cfg = make_config("two", sets);
  char cpath[256], out_path[256], run[256];
  snprintf(cpath, sizeof(cpath), "%s/two.yaml", g_dir);
  snprintf(run, sizeof(run), "%s", cfg->train.run_dir);
  write_config(cfg, cpath);
  config_free(cfg);
  snprintf(out_path, sizeof(out_path), "%s/two.out", g_dir);
  char *argv[] = {MASKPS_BIN, "train", cpath, NULL};
  int st = wait_bounded(spawn(argv, out_path), 120);
  char *out = slurp(out_path);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    print_error("status 0x%x, output:\n%s\n", st, out);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  assert_non_null(strstr(out, "test AUC "));
  /* ~2700 training lines over 2 workers, batches of 128: 11 steps each */
  const char *t = strstr(out, "trained ");
  assert_non_null(t);
  long steps0 = atol(t + strlen("trained "));
  char p[512];
  snprintf(p, sizeof(p), "%s/logs/worker-1.log", run);
  char *log1 = slurp(p);
  const char *t1 = strstr(log1, "trained ");
  if (!t1)
    print_error("worker 1's log:\n%s\n", log1);
  assert_non_null(t1);
  assert_int_equal(atol(t1 + strlen("trained ")), steps0);
  assert_true(steps0 >= 10 && steps0 <= 11);
  free(log1);
  free(out);
}

/* A worker alone, its pserver never started: it fails with a message
 * naming the pserver once its request timeout and retries are spent
 * (300 ms x (1 + 3 retries) + backoff 0.1 + 0.2 + 0.4 s), never hangs. */
static void test_worker_without_pserver_times_out(void **state) {
  (void)state;
  static const char *const sets[] = {"cluster.pservers=1",
                                     "cluster.request_timeout_ms=300", NULL};
  struct config *cfg = make_config("alone", sets);
  char cpath[256], out_path[256], port[16];
  snprintf(cpath, sizeof(cpath), "%s/alone.yaml", g_dir);
  write_config(cfg, cpath);
  snprintf(port, sizeof(port), "%d", (int)cfg->cluster.base_port);
  config_free(cfg);
  snprintf(out_path, sizeof(out_path), "%s/alone.out", g_dir);
  char *argv[] = {MASKPS_WORKER_BIN, "--config", cpath, "--rank", "0", NULL};
  double t0 = now_s();
  int st = wait_bounded(spawn(argv, out_path), 60);
  double took = now_s() - t0;
  char *out = slurp(out_path);
  print_message("worker without pserver: exit after %.1f s\n", took);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 1)
    print_error("status 0x%x, output:\n%s\n", st, out);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1);
  assert_non_null(strstr(out, "did not answer"));
  assert_non_null(strstr(out, port)); /* the endpoint is named */
  assert_true(took >= 1.2 && took < 30);
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sync_one_worker_equals_embedded),
      cmocka_unit_test(test_lr_scale_local_and_net),
      cmocka_unit_test(test_train_then_predict),
      cmocka_unit_test(test_train_then_predict_bn),
      cmocka_unit_test(test_two_workers_sync),
      cmocka_unit_test(test_worker_without_pserver_times_out),
      cmocka_unit_test(test_pserver_killed),
      cmocka_unit_test(test_worker_killed),
      cmocka_unit_test(test_sigint_stops_everything),
      cmocka_unit_test(test_pserver_killed_async),
      cmocka_unit_test(test_sigint_stops_everything_async),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
