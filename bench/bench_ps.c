/* bench_ps: what the network costs a worker, per step.
 *
 *   bench_ps [seconds_per_case]    (default 3)
 *
 * One step = ps_pull of a batch of 4096 distinct keys of one D=16 Adam
 * table, then ps_push of their gradients (every key's full prefix), like a
 * worker's sparse half of a training step. Keys are drawn from a pool of
 * 1M (skewed so that rows recur and the row cache matters), over two
 * shards. Cases, in one run so they see the same machine:
 *   local  ps_local over two stores in this thread (embedded mode);
 *   net    ps_net over tcp://127.0.0.1 to two pserver threads (the
 *          distributed path: msgpack header, raw frames, two servers
 *          working in parallel).
 * Stores use WAL off (write-back row cache, the fast training mode) and
 * 256 MiB each. Reported: steps/s and keys/s (pulled + pushed keys / s),
 * and the net/local ratio. Numbers depend on the 2 shared cores: the two
 * pservers and the client compete for them. */
#include "common/check.h"
#include "common/keys.h"
#include "common/ps.h"
#include "pserver/ps_local.h"
#include "tests/pserver/ps_testlib.h" /* the pserver-in-a-thread helper */
#include "worker/ps_net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS 2
#define BATCH 4096
#define D 16
#define POOL (1u << 20)
#define TABLE 1

static uint64_t rng = 1;
static uint64_t rnd(void) {
  rng += 0x9e3779b97f4a7c15ull;
  return keys_mix64(rng);
}

struct batch {
  uint64_t keys[BATCH];
  uint16_t glen[BATCH];
  float grads[BATCH * D];
  struct ps_rows rows;
};

static void make_batch(struct batch *b, uint8_t *taken) {
  static uint32_t idx[BATCH];
  size_t n = 0;
  while (n < BATCH) {
    uint64_t u = rnd() % POOL, v = rnd() % POOL, i = u < v ? u : v;
    if (taken[i])
      continue;
    taken[i] = 1;
    idx[n] = (uint32_t)i;
    b->keys[n++] = keys_mix64(i + 1);
  }
  for (size_t i = 0; i < BATCH; i++)
    taken[idx[i]] = 0;
  for (size_t i = 0; i < BATCH * D; i++)
    b->grads[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-4f;
}

/* Runs steps for `secs`; returns steps/s. */
static double run(struct ps *ps, struct batch *b, uint8_t *taken, double secs) {
  char err[1024];
  uint64_t step = 0;
  double t0 = clock_sec(), t;
  do {
    make_batch(b, taken);
    long got =
        ps_pull(ps, TABLE, step, BATCH, b->keys, &b->rows, err, sizeof(err));
    if (got < 0) {
      fprintf(stderr, "bench_ps: pull: %s\n", err);
      exit(1);
    }
    for (size_t i = 0; i < BATCH; i++)
      b->glen[i] = b->rows.plen[i];
    struct ps_grads g = {.table = TABLE,
                         .step = step + 1,
                         .n = BATCH,
                         .keys = b->keys,
                         .glen = b->glen,
                         .grads = b->grads};
    if (ps_push(ps, &g, err, sizeof(err)) < 0) {
      fprintf(stderr, "bench_ps: push: %s\n", err);
      exit(1);
    }
    step++;
    t = clock_sec();
  } while (t - t0 < secs);
  return (double)step / (t - t0);
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 3.0;
  if (!(secs > 0)) {
    fprintf(stderr, "usage: bench_ps [seconds_per_case]\n");
    return 2;
  }
  struct store_table t = make_table(TABLE, D, ROW_OPT_ADAM);
  char dirs[2 * NS][64];
  char err[1024];

  /* local */
  struct store *stores[NS];
  for (uint32_t s = 0; s < NS; s++) {
    struct store_options o = ts_options(&t, 1, 0, NS, s, STORE_WAL_OFF);
    o.memory_mb = 256;
    stores[s] = store_open(temp_dir(dirs[s]), &o, err, sizeof(err));
    if (!stores[s]) {
      fprintf(stderr, "bench_ps: %s\n", err);
      return 1;
    }
  }
  struct ps *local = ps_local_new(stores, NS, &t, 1, 0, err, sizeof(err));

  /* net: the same stores behind two pserver threads. */
  struct test_server ts[NS];
  const char *eps[NS];
  for (uint32_t s = 0; s < NS; s++) {
    ts[s] = (struct test_server){.dir = temp_dir(dirs[NS + s]),
                                 .tables = &t,
                                 .ntables = 1,
                                 .rank = s,
                                 .S = NS,
                                 .W = 1,
                                 .wal = STORE_WAL_OFF,
                                 .memory_mb = 256};
    if (ts_start(&ts[s]) < 0)
      return 1;
    eps[s] = ts[s].endpoint;
  }
  struct ps_net_opts no = {.endpoints = eps, .nshards = NS, .retries = -1};
  struct ps *net = ps_net_new(&no, err, sizeof(err));
  if (!net) {
    fprintf(stderr, "bench_ps: %s\n", err);
    return 1;
  }

  struct batch *b = xcalloc(1, sizeof(*b));
  b->rows =
      (struct ps_rows){xmalloc(BATCH * 2), xmalloc(BATCH * 4),
                       xmalloc(BATCH * 4), xmalloc(BATCH * D * 4), BATCH * D};
  uint8_t *taken = xcalloc(POOL, 1);
  printf("bench_ps: %d shards, batch %d distinct keys, D=%d, pool %u keys, "
         "%.1f s per case\n",
         NS, BATCH, D, POOL, secs);
  printf("| case  | steps/s | keys/s (pull+push) |\n"
         "| ----- | ------: | -----------------: |\n");
  double sl = run(local, b, taken, secs);
  printf("| local | %7.1f | %18.0f |\n", sl, sl * 2 * BATCH);
  double sn = run(net, b, taken, secs);
  printf("| net   | %7.1f | %18.0f |\n", sn, sn * 2 * BATCH);
  printf("net / local = %.2f\n", sn / sl);
  for (uint32_t s = 0; s < NS; s++) {
    char *json = ps_net_stats(net, s, err, sizeof(err));
    if (json) {
      char *p = strstr(json, "\"pull_us\"");
      char *e = p ? strstr(p, ",\"tables\"") : NULL;
      if (e)
        *e = 0;
      printf("pserver %u latency: %s\n", s, p ? p : "?");
      free(json);
    }
  }

  if (ps_net_shutdown(net, err, sizeof(err)) < 0)
    fprintf(stderr, "bench_ps: %s\n", err);
  for (uint32_t s = 0; s < NS; s++)
    ts_join(&ts[s]);
  ps_free(net);
  ps_free(local);
  for (uint32_t s = 0; s < NS; s++) {
    store_close(stores[s], err, sizeof(err));
    rm_tree(dirs[s]);
    rm_tree(dirs[NS + s]);
  }
  free(taken);
  free(b->rows.plen);
  free(b->rows.count);
  free(b->rows.clicks);
  free(b->rows.vals);
  free(b);
  return 0;
}
