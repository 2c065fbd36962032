/* Helpers shared by the pserver network tests (header-only, static): a
 * pserver (store + serving loop) run by a thread on tcp://127.0.0.1 with an
 * ephemeral port, and a checksum of pulled rows. Not a test itself. */
#ifndef MASKPS_TESTS_PS_TESTLIB_H
#define MASKPS_TESTS_PS_TESTLIB_H

#include "common/ps.h"
#include "pserver/server.h"
#include "pserver/store.h"
#include "store_testlib.h"

#include <pthread.h>
#include <signal.h>

#define TS_MEMORY_MB 16

/* Store options of shard `rank` of S for the given tables and dense vector. */
static inline struct store_options ts_options(const struct store_table *t,
                                              size_t nt, uint64_t dense_total,
                                              uint32_t S, uint32_t rank,
                                              enum store_wal wal) {
  struct store_options o;
  store_options_defaults(&o);
  o.tables = t;
  o.ntables = nt;
  o.memory_mb = TS_MEMORY_MB;
  o.wal = wal;
  uint64_t off, len;
  ps_dense_block(dense_total, S, rank, &off, &len);
  o.dense_size = (size_t)len;
  return o;
}

/* A pserver in a thread. Fill the inputs, ts_start, use `endpoint`,
 * stop it with SHUTDOWN or by setting `stop`, then ts_join. */
struct test_server {
  /* inputs */
  const char *dir;
  const struct store_table *tables;
  size_t ntables;
  uint32_t rank, S, W;
  uint64_t dense_total;
  enum store_wal wal;
  size_t memory_mb;           /* 0 = TS_MEMORY_MB */
  int sync;                   /* server_opts.sync */
  const struct net_opts *net; /* server_opts.net (CURVE); NULL = plain */
  const char *bind;           /* endpoint to bind; NULL = tcp://127.0.0.1:* */
  /* outputs */
  char endpoint[256];
  int rc; /* server_run's result; -2 if it never started */
  char err[1024];
  volatile sig_atomic_t stop;
  /* private */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int ready; /* 1 serving, -1 failed to start */
};

static inline void *ts_main(void *arg) {
  struct test_server *ts = arg;
  struct store_options o = ts_options(ts->tables, ts->ntables, ts->dense_total,
                                      ts->S, ts->rank, ts->wal);
  if (ts->memory_mb)
    o.memory_mb = ts->memory_mb;
  struct store *st = store_open(ts->dir, &o, ts->err, sizeof(ts->err));
  struct server *srv = NULL;
  if (st) {
    struct server_opts so = {.endpoint =
                                 ts->bind ? ts->bind : "tcp://127.0.0.1:*",
                             .rank = ts->rank,
                             .nshards = ts->S,
                             .workers = ts->W,
                             .dense_total = ts->dense_total,
                             .tables = ts->tables,
                             .ntables = ts->ntables,
                             .poll_ms = 20,
                             .sync = ts->sync,
                             .net = ts->net};
    srv = server_new(st, &so, ts->err, sizeof(ts->err));
  }
  pthread_mutex_lock(&ts->mu);
  ts->ready = srv ? 1 : -1;
  if (srv)
    snprintf(ts->endpoint, sizeof(ts->endpoint), "%s", server_endpoint(srv));
  pthread_cond_signal(&ts->cv);
  pthread_mutex_unlock(&ts->mu);
  if (srv) {
    ts->rc = server_run(srv, &ts->stop, ts->err, sizeof(ts->err));
    server_free(srv);
  }
  char e[512];
  if (st && store_close(st, e, sizeof(e)) < 0) {
    snprintf(ts->err, sizeof(ts->err), "store_close: %s", e);
    ts->rc = -1;
  }
  return NULL;
}

/* Starts the thread and waits until it serves. Returns 0, or -1 (message
 * in ts->err). */
static inline int ts_start(struct test_server *ts) {
  ts->rc = -2;
  ts->ready = 0;
  ts->stop = 0;
  pthread_mutex_init(&ts->mu, NULL);
  pthread_cond_init(&ts->cv, NULL);
  if (pthread_create(&ts->thread, NULL, ts_main, ts) != 0)
    abort();
  pthread_mutex_lock(&ts->mu);
  while (ts->ready == 0)
    pthread_cond_wait(&ts->cv, &ts->mu);
  pthread_mutex_unlock(&ts->mu);
  if (ts->ready < 0) {
    pthread_join(ts->thread, NULL);
    fprintf(stderr, "test server: %s\n", ts->err);
    return -1;
  }
  return 0;
}

/* Waits for the thread (after SHUTDOWN or stop). Returns server_run's
 * result. */
static inline int ts_join(struct test_server *ts) {
  pthread_join(ts->thread, NULL);
  pthread_mutex_destroy(&ts->mu);
  pthread_cond_destroy(&ts->cv);
  if (ts->rc != 0)
    fprintf(stderr, "test server: %s\n", ts->err);
  return ts->rc;
}

/* FNV-1a over bytes, chained through h. */
static inline uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 0x100000001b3ull;
  }
  return h;
}
#define FNV_SEED 0xcbf29ce484222325ull

/* Pulls keys through ps and hashes plen, count, clicks and values. Returns
 * 0 with *sum set, or -1 (message on stderr). */
static inline int ps_checksum(struct ps *ps, uint32_t table, unsigned dim,
                              size_t n, const uint64_t *keys, uint64_t *sum) {
  struct ps_rows r = {calloc(n, 2), calloc(n, 4), calloc(n, 4),
                      calloc(n * dim + 1, 4), n * dim};
  char err[1024];
  long got = ps_pull(ps, table, 0, n, keys, &r, err, sizeof(err));
  if (got < 0)
    fprintf(stderr, "ps_checksum: %s\n", err);
  else {
    uint64_t h = fnv(FNV_SEED, r.plen, n * 2);
    h = fnv(h, r.count, n * 4);
    h = fnv(h, r.clicks, n * 4);
    *sum = fnv(h, r.vals, (size_t)got * 4);
  }
  free(r.plen);
  free(r.count);
  free(r.clicks);
  free(r.vals);
  return got < 0 ? -1 : 0;
}

#endif
