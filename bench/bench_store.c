/* bench_store: the shard store against raw RocksDB (issue 4's bench).
 *
 *   bench_store [memory_mb] [seconds_per_rep] [reps] [workdir]
 *               (defaults 64 3 3 /tmp)
 *
 * One step = store_pull of a batch of 4096 distinct keys of one D=16 Adam
 * table, then store_push of their gradients (full prefixes), like a
 * worker's sparse half of a training step. keys/s counts keys
 * read-modified-written per second: one step of 4096 keys counts 4096 (not
 * 8192 as bench_ps's pulled + pushed count does). Keys are drawn UNIFORMLY
 * from the key set of the case: that is the worst case for the row cache
 * (with Zipf skew the hot rows stay cached and the store gains more over
 * RocksDB), and it makes the 5x case an honest out-of-memory test rather
 * than one whose hot set fits anyway.
 *
 * Settings shared by store and raw: memory_mb (store: 1/2 row cache, 1/4
 * block cache, 1/4 memtables; raw: 3/4 block cache, 1/4 memtables, i.e. the
 * store's row cache given to RocksDB), values of 224 bytes (a row of D=16
 * with Adam state: 32 + 4*16*3), 12-byte keys, the WAL off on both sides
 * (store: STORE_WAL_OFF, write-back; raw: WriteOptions.disableWAL), Bloom
 * filters and the RocksDB options of pserver/store.c (store_raw_open).
 *
 * Cases:
 *   hot  working set = 0.5x the row cache (its bytes per row: 224 + the
 *        cache's per-row overhead + 2 slots), preloaded;
 *   big  a table of 5x memory_mb in 224-byte rows, preloaded;
 * each measured for the store (pull + push), raw batched RMW (one batched
 * MultiGet + one WriteBatch per 4096 keys) and raw Get/Put RMW (per key).
 * Each is run reps times for seconds_per_rep; medians are reported. Both
 * sides load their keys in key order first, then compact fully (untimed
 * for the ratio; the load rates are printed). Each case runs in its own child process, so its
 * RSS is its own and not what earlier cases left in the allocator. RSS is
 * sampled every 50 ms from /proc/self/statm; the maximum per phase of the
 * anonymous part (resident - shared: the libraries' mapped code, ~10 MB
 * for librocksdb, is not the store's memory) is compared with memory_mb.
 * glibc's malloc matters here: its mmap threshold grows after large frees,
 * after which RocksDB's 1 MB memtable arena blocks and the block cache's
 * blocks share the heap with the row cache's rows and fragment it; run
 * with MALLOC_MMAP_THRESHOLD_=65536 in the environment to fix the
 * threshold (the bench prints which). Then: checkpoint GB/s of the
 * big store (into the same file system: hard links; and into /dev/shm, a
 * tmpfs: a real copy), and the STATS bytes per row (store_table_scan's
 * value_bytes, which maskps-pserver's STATS record prints per table) of
 * AMTL tables whose rows were pushed to prefix k = 2, 4, 8, 16.
 *
 * The raw baseline is store.c's benchmark-only store_raw_* (see store.h):
 * this file does not include rocksdb/c.h. */

#include "common/check.h"
#include "common/keys.h"
#include "pserver/cache.h"
#include "pserver/store.h"
#include "tests/pserver/store_testlib.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 4096
#define D 16
#define ROW_BYTES 224 /* 32 + 4 * D * 3 */
#define TABLE 1
#define MAX_REPS 15

/* ---- RSS sampling ------------------------------------------------------- */

#define MAX_SAMPLES (1 << 16)
enum {
  PH_IDLE,
  PH_BIG_LOAD,
  PH_BIG_STORE,
  PH_CKPT,
  PH_BIG_RAW_LOAD,
  PH_BIG_RAW,
  PH_HOT_STORE,
  PH_HOT_RAW,
  PH_N
};
static const char *const ph_name[PH_N] = {
    "idle",          "big store load", "big store", "checkpoint",
    "big raw load",  "big raw",        "hot store", "hot raw"};
/* Samples live in a shared mapping: each case runs in a child process (so
 * that its RSS is its own, not what earlier cases left in the allocator)
 * and the parent reads them afterwards. */
struct sample {
  double t;
  uint32_t rss_kb;  /* resident */
  uint32_t anon_kb; /* resident - shared: the process's own memory, not the
                       shared libraries' pages (librocksdb alone is ~10 MB) */
  uint8_t phase;
};
static struct sample *samples;
static _Atomic size_t *nsamples;
static _Atomic int cur_phase, stop_sampler;
static double t_start;

/* Resident KB, and in *anon the resident KB not shared with files. */
static uint32_t rss_kb2(uint32_t *anon) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, res = 0, shared = 0;
  if (f) {
    if (fscanf(f, "%lu %lu %lu", &size, &res, &shared) != 3)
      res = shared = 0;
    fclose(f);
  }
  const unsigned long kb = (unsigned long)sysconf(_SC_PAGESIZE) / 1024;
  if (anon)
    *anon = (uint32_t)((res - shared) * kb);
  return (uint32_t)(res * kb);
}


static void *sampler(void *arg) {
  (void)arg;
  const struct timespec d = {0, 50 * 1000 * 1000};
  while (!atomic_load(&stop_sampler)) {
    size_t i = atomic_load(nsamples);
    if (i < MAX_SAMPLES) {
      samples[i].t = clock_sec() - t_start;
      samples[i].rss_kb = rss_kb2(&samples[i].anon_kb);
      samples[i].phase = (uint8_t)atomic_load(&cur_phase);
      atomic_store(nsamples, i + 1);
    }
    nanosleep(&d, NULL);
  }
  return NULL;
}

static uint32_t phase_max_kb(int ph) {
  uint32_t m = 0;
  for (size_t i = 0; i < atomic_load(nsamples); i++)
    if (samples[i].phase == ph && samples[i].rss_kb > m)
      m = samples[i].rss_kb;
  return m;
}

static uint32_t phase_max_anon_kb(int ph) {
  uint32_t m = 0;
  for (size_t i = 0; i < atomic_load(nsamples); i++)
    if (samples[i].phase == ph && samples[i].anon_kb > m)
      m = samples[i].anon_kb;
  return m;
}

/* CPU seconds of the whole process (every thread: RocksDB's flushes and
 * compactions included). On a shared machine keys per CPU second is the
 * steadier measure: wall time also counts the time other jobs hold the
 * cores. */
static double cpu_sec(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- keys --------------------------------------------------------------- */

static uint64_t rng = 42;
static uint64_t rnd(void) {
  rng += 0x9e3779b97f4a7c15ull;
  return keys_mix64(rng);
}

/* Key number i of a case's key set. */
static uint64_t fid_of(uint64_t i) {
  return keys_mix64(i + 1);
}

/* BATCH distinct keys drawn uniformly from [0, n); bits: n-bit scratch,
 * all clear on entry and on return. */
static void make_batch(uint64_t *keys, uint64_t n, uint8_t *bits) {
  static uint64_t idx[BATCH];
  size_t k = 0;
  while (k < BATCH) {
    uint64_t i = rnd() % n;
    if (bits[i / 8] & (1u << (i % 8)))
      continue;
    bits[i / 8] |= (uint8_t)(1u << (i % 8));
    idx[k] = i;
    keys[k++] = fid_of(i);
  }
  for (size_t j = 0; j < BATCH; j++)
    bits[idx[j] / 8] &= (uint8_t)~(1u << (idx[j] % 8));
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* The case's n keys in RocksDB key order (big-endian fid after one table
 * prefix = numeric order): both sides load them sorted, as a bulk import
 * would, so that loading produces non-overlapping files instead of hours
 * of compaction on a shared 2-core machine. Freed before the timed part
 * (one mmap'ed block: its pages leave RSS). */
static uint64_t *sorted_keys(uint64_t n) {
  uint64_t *k = xmalloc(n * sizeof(uint64_t));
  for (uint64_t i = 0; i < n; i++)
    k[i] = fid_of(i);
  qsort(k, n, sizeof(uint64_t), cmp_u64);
  return k;
}

static int cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp_dbl);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static _Noreturn void die(const char *what, const char *err) {
  fprintf(stderr, "bench_store: %s: %s\n", what, err);
  exit(1);
}

/* ---- the cases ------------------------------------------------------------ */

struct bufs {
  uint64_t keys[BATCH];
  float grads[BATCH * D];
  uint16_t p[BATCH];
  uint32_t count[BATCH], clicks[BATCH];
  float values[BATCH * D];
  uint8_t *bits;
};

struct result {
  double store[MAX_REPS], batched[MAX_REPS], single[MAX_REPS]; /* wall */
  double cstore[MAX_REPS], cbatched[MAX_REPS], csingle[MAX_REPS]; /* CPU */
  double load_s, raw_load_s, compact_s, raw_compact_s, hit_rate, ck_same_gbs, ck_shm_gbs;
  uint64_t ck_bytes;
  uint32_t rss_store_kb, rss_raw_kb;
  struct store_stats st;
};

static struct store_table bench_table(void) {
  struct store_table t = make_table(TABLE, D, ROW_OPT_ADAM);
  return t;
}

static uint64_t dir_bytes(const char *dir) {
  DIR *d = opendir(dir);
  uint64_t sum = 0;
  struct dirent *e;
  char path[4096];
  struct stat st;
  while (d && (e = readdir(d))) {
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
      sum += (uint64_t)st.st_size;
  }
  if (d)
    closedir(d);
  return sum;
}

/* Times one checkpoint of s into dir; returns GB/s of the checkpoint's
 * bytes (*bytes), and removes it. */
static double checkpoint_gbs(struct store *s, const char *dir,
                             uint64_t *bytes) {
  char err[1024];
  double t0 = clock_sec();
  if (store_checkpoint(s, dir, err, sizeof(err)) < 0)
    die("checkpoint", err);
  double dt = clock_sec() - t0;
  *bytes = dir_bytes(dir);
  rm_tree(dir);
  return (double)*bytes / dt / 1e9;
}

static void run_store(const char *dir, size_t mb, uint64_t nkeys, double secs,
                      int reps, struct bufs *b, struct result *res, int big) {
  char err[1024];
  struct store_table t = bench_table();
  struct store_options o;
  store_options_defaults(&o);
  o.tables = &t;
  o.ntables = 1;
  o.memory_mb = mb;
  o.wal = STORE_WAL_OFF;
  atomic_store(&cur_phase, big ? PH_BIG_LOAD : PH_HOT_STORE);
  struct store *s = store_open(dir, &o, err, sizeof(err));
  if (!s)
    die("store_open", err);
  const struct store_pull_out out = {b->p, b->count, b->clicks, NULL,
                                     b->values};
  uint64_t step = 1;
  double t0 = clock_sec();
  uint64_t *all = sorted_keys(nkeys);
  for (uint64_t i = 0; i < nkeys; i += BATCH) {
    size_t n = nkeys - i < BATCH ? (size_t)(nkeys - i) : BATCH;
    if (store_push(s, TABLE, n, all + i, NULL, b->grads, NULL, NULL, NULL,
                   step, err, sizeof(err)) < 0)
      die("load push", err);
  }
  free(all);
  res->load_s = clock_sec() - t0;
  /* Both sides start the timed part fully compacted: the store's load
   * reaches RocksDB in eviction order (random), raw's in key order, and
   * the timed part should not measure that difference. */
  t0 = clock_sec();
  if (store_compact(s, err, sizeof(err)) < 0)
    die("compact", err);
  res->compact_s = clock_sec() - t0;
  const int phase = big ? PH_BIG_STORE : PH_HOT_STORE;
  atomic_store(&cur_phase, phase);
  struct store_stats a, z;
  store_stats(s, &a, err, sizeof(err));
  for (int r = 0; r < reps; r++) {
    uint64_t done = 0;
    double t1 = clock_sec(), t2, c1 = cpu_sec();
    do {
      make_batch(b->keys, nkeys, b->bits);
      if (store_pull(s, TABLE, BATCH, b->keys, &out, err, sizeof(err)) < 0)
        die("pull", err);
      if (store_push(s, TABLE, BATCH, b->keys, NULL, b->grads, NULL, NULL,
                     NULL, ++step, err, sizeof(err)) < 0)
        die("push", err);
      done += BATCH;
      t2 = clock_sec();
    } while (t2 - t1 < secs);
    res->store[r] = (double)done / (t2 - t1);
    res->cstore[r] = (double)done / (cpu_sec() - c1);
  }
  store_stats(s, &z, err, sizeof(err));
  uint64_t h = z.row_cache_hits - a.row_cache_hits,
           m = z.row_cache_misses - a.row_cache_misses;
  res->hit_rate = h + m ? (double)h / (double)(h + m) : 0;
  res->st = z;
  res->rss_store_kb = phase_max_anon_kb(phase);
  if (big) {
    atomic_store(&cur_phase, PH_CKPT);
    char ck[4200];
    snprintf(ck, sizeof(ck), "%s-ckpt", dir);
    res->ck_same_gbs = checkpoint_gbs(s, ck, &res->ck_bytes);
    snprintf(ck, sizeof(ck), "/dev/shm/bench_store-ckpt-%d", (int)getpid());
    uint64_t bytes;
    res->ck_shm_gbs = checkpoint_gbs(s, ck, &bytes);
  }
  if (store_close(s, err, sizeof(err)) < 0)
    die("store_close", err);
  atomic_store(&cur_phase, PH_IDLE);
}

static void amtl_bytes(const char *dir, struct bufs *b);

static void run_raw(const char *dir, size_t mb, uint64_t nkeys, double secs,
                    int reps, struct bufs *b, struct result *res, int big) {
  char err[1024];
  atomic_store(&cur_phase, big ? PH_BIG_RAW_LOAD : PH_HOT_RAW);
  struct store_raw *r = store_raw_open(dir, mb, ROW_BYTES, err, sizeof(err));
  if (!r)
    die("store_raw_open", err);
  double t0 = clock_sec();
  uint64_t *all = sorted_keys(nkeys);
  for (uint64_t i = 0; i < nkeys; i += BATCH) {
    size_t n = nkeys - i < BATCH ? (size_t)(nkeys - i) : BATCH;
    if (store_raw_put(r, n, all + i, err, sizeof(err)) < 0)
      die("raw load", err);
  }
  free(all);
  res->raw_load_s = clock_sec() - t0;
  t0 = clock_sec();
  if (store_raw_compact(r, err, sizeof(err)) < 0)
    die("raw compact", err);
  res->raw_compact_s = clock_sec() - t0;
  const int phase = big ? PH_BIG_RAW : PH_HOT_RAW;
  atomic_store(&cur_phase, phase);
  /* All batched reps first, then the Get/Put ones: batched RMW then starts
   * from the same state as the store's timed part (freshly compacted, only
   * its own writes since), which is the ratio the issue asks for. Get/Put
   * runs on what batched left behind: more compaction debt. */
  for (int batched = 1; batched >= 0; batched--)
    for (int rep = 0; rep < reps; rep++) {
      uint64_t done = 0;
      double t1 = clock_sec(), t2, c1 = cpu_sec();
      do {
        make_batch(b->keys, nkeys, b->bits);
        /* Get/Put goes key by key anyway; calling it on slices of the
         * batch lets a segment end on time when RocksDB delays writes
         * (each delayed Put can sleep a millisecond). */
        const size_t step = batched ? BATCH : 64;
        for (size_t k = 0; k < BATCH; k += step) {
          if (store_raw_rmw(r, step, b->keys + k, batched, err,
                            sizeof(err)) < 0)
            die("raw rmw", err);
          done += step;
          t2 = clock_sec();
          if (t2 - t1 >= secs)
            break;
        }
      } while (t2 - t1 < secs);
      (batched ? res->batched : res->single)[rep] = (double)done / (t2 - t1);
      (batched ? res->cbatched : res->csingle)[rep] =
          (double)done / (cpu_sec() - c1);
    }
  res->rss_raw_kb = phase_max_anon_kb(phase);
  store_raw_close(r);
  atomic_store(&cur_phase, PH_IDLE);
}

/* Runs one case in a child process with its own RSS sampler; the results
 * land in shared memory. */
enum { CASE_STORE, CASE_RAW, CASE_AMTL };
static void run_case(int kind, const char *dir, size_t mb, uint64_t nkeys,
                     double secs, int reps, struct bufs *b,
                     struct result *res, int big) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(1);
  }
  if (pid == 0) {
    pthread_t th;
    atomic_store(&stop_sampler, 0);
    pthread_create(&th, NULL, sampler, NULL);
    if (kind == CASE_STORE)
      run_store(dir, mb, nkeys, secs, reps, b, res, big);
    else if (kind == CASE_RAW)
      run_raw(dir, mb, nkeys, secs, reps, b, res, big);
    else
      amtl_bytes(dir, b);
    atomic_store(&stop_sampler, 1);
    pthread_join(th, NULL);
    fflush(stdout);
    _exit(0);
  }
  int st;
  if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "bench_store: a case failed (status %d)\n", st);
    exit(1);
  }
}

/* STATS bytes per row of AMTL tables whose rows were pushed to prefix k. */
static void amtl_bytes(const char *dir, struct bufs *b) {
  static const unsigned ks[] = {2, 4, 8, 16};
  enum { NT = 4, ROWS = 2000 };
  struct store_table t[NT];
  for (int i = 0; i < NT; i++) {
    t[i] = make_table(100 + ks[i], D, ROW_OPT_ADAM);
    t[i].amtl = 1;
  }
  struct store_options o;
  store_options_defaults(&o);
  o.tables = t;
  o.ntables = NT;
  o.memory_mb = 16;
  o.wal = STORE_WAL_OFF;
  char err[1024];
  struct store *s = store_open(dir, &o, err, sizeof(err));
  if (!s)
    die("store_open amtl", err);
  uint16_t newp[BATCH];
  printf("\nAMTL rows (D=%d, Adam, %d rows per table, pushed to prefix k; "
         "STATS value_bytes / rows):\n",
         D, ROWS);
  printf("| k  | rows | hist[k] | STATS value_bytes | bytes/row | 32+12k |\n"
         "| -- | ---: | ------: | ----------------: | --------: | -----: |\n");
  for (int i = 0; i < NT; i++) {
    for (size_t j = 0; j < ROWS; j++) {
      b->keys[j] = fid_of(j);
      newp[j] = (uint16_t)ks[i];
    }
    if (store_push(s, t[i].id, ROWS, b->keys, NULL, b->grads, newp, NULL,
                   NULL, 1, err, sizeof(err)) < 0)
      die("amtl push", err);
    struct store_table_stats ts;
    uint64_t hist[D + 1];
    if (store_table_scan(s, t[i].id, &ts, hist, err, sizeof(err)) < 0)
      die("amtl scan", err);
    printf("| %2u | %4llu | %7llu | %17llu | %9.1f | %6u |\n", ks[i],
           (unsigned long long)ts.rows, (unsigned long long)hist[ks[i]],
           (unsigned long long)ts.value_bytes,
           (double)ts.value_bytes / (double)ts.rows, 32 + 12 * ks[i]);
  }
  if (store_close(s, err, sizeof(err)) < 0)
    die("store_close amtl", err);
}

static void print_rss_series(size_t mb) {
  printf("\nRSS max per phase (budget %zu MB, budget + 10%% = %.1f MB):\n"
         "| phase | RSS max MB | anon RSS max MB | anon / budget |\n"
         "| ----- | ----: | ----: | ----: |\n",
         mb, 1.1 * (double)mb);
  for (int ph = 1; ph < PH_N; ph++) {
    uint32_t m = phase_max_kb(ph), a = phase_max_anon_kb(ph);
    if (m)
      printf("| %s | %.1f | %.1f | %.2f |\n", ph_name[ph], m / 1024.0,
             a / 1024.0, a / 1024.0 / (double)mb);
  }
  printf("\nRSS over time (MB, max of each 1 s window):\n| t (s) | phase "
         "| RSS MB | anon RSS MB |\n| ----: | ----- | -----: | -----: |\n");
  size_t n = atomic_load(nsamples);
  for (size_t i = 0; i < n;) {
    double w = (double)(long)samples[i].t;
    uint32_t m = 0, a = 0;
    int ph = samples[i].phase;
    size_t j = i;
    for (; j < n && samples[j].t < w + 1 && samples[j].phase == ph; j++) {
      if (samples[j].rss_kb > m)
        m = samples[j].rss_kb;
      if (samples[j].anon_kb > a)
        a = samples[j].anon_kb;
    }
    printf("| %5.0f | %s | %6.1f | %6.1f |\n", w, ph_name[ph], m / 1024.0,
           a / 1024.0);
    i = j;
  }
}

static void print_case(const char *name, const double *st, const double *bt,
                       const double *sg, const struct result *r, int reps,
                       size_t mb) {
  double s[MAX_REPS], b[MAX_REPS], g[MAX_REPS];
  memcpy(s, st, sizeof(s));
  memcpy(b, bt, sizeof(b));
  memcpy(g, sg, sizeof(g));
  double ms = median(s, reps), mb_ = median(b, reps), mg = median(g, reps);
  printf("| %-4s | %9.0f | %9.0f | %9.0f | %6.2f | %6.2f | %5.1f%% | %6.1f "
         "| %6.1f | %5.0f |\n",
         name, ms, mb_, mg, ms / mb_, ms / mg, 100 * r->hit_rate,
         r->rss_store_kb / 1024.0, r->rss_raw_kb / 1024.0, (double)mb);
}

static void print_table(const struct result *hot, const struct result *big,
                        int reps, size_t mb, int cpu) {
  printf("\n%s (median of %d); x = store / raw\n",
         cpu ? "keys per CPU second of the process (all threads)"
             : "keys/s = keys read-modified-written per wall second",
         reps);
  printf("| case | store     | raw batch | raw get/put | x batch | x get/put "
         "| row cache hits | anon RSS store MB | anon RSS raw MB | budget MB |\n"
         "| ---- | --------: | --------: | --------: | -----: | -----: | "
         "-----: | -----: | -----: | ----: |\n");
  if (cpu) {
    print_case("hot", hot->cstore, hot->cbatched, hot->csingle, hot, reps, mb);
    print_case("big", big->cstore, big->cbatched, big->csingle, big, reps, mb);
  } else {
    print_case("hot", hot->store, hot->batched, hot->single, hot, reps, mb);
    print_case("big", big->store, big->batched, big->single, big, reps, mb);
  }
}

int main(int argc, char **argv) {
  size_t mb = argc > 1 ? (size_t)atol(argv[1]) : 64;
  double secs = argc > 2 ? atof(argv[2]) : 3.0;
  int reps = argc > 3 ? atoi(argv[3]) : 3;
  const char *work = argc > 4 ? argv[4] : "/tmp";
  if (mb < 4 || !(secs > 0) || reps < 1 || reps > MAX_REPS) {
    fprintf(stderr, "usage: bench_store [memory_mb>=4] [seconds_per_rep] "
                    "[reps 1..%d] [workdir]\n",
            MAX_REPS);
    return 2;
  }
  t_start = clock_sec();
  struct bufs *b = xcalloc(1, sizeof(*b));
  for (size_t i = 0; i < BATCH * D; i++)
    b->grads[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-4f;
  const uint64_t nbig = (uint64_t)5 * (mb << 20) / ROW_BYTES;
  /* Bytes per cached row: the row, the allocator overhead the cache
   * charges, and its share of a slot array (32-byte slots) kept between
   * 3/8 and 3/4 full: about 2 slots per row. */
  const double cached_row = ROW_BYTES + CACHE_ROW_OVERHEAD + 2 * 32;
  const uint64_t nhot = (uint64_t)(0.5 * (double)(mb << 20) / 2 / cached_row);
  b->bits = xcalloc(nbig / 8 + 1, 1);

  char root[4096], dir[4200];
  snprintf(root, sizeof(root), "%s/bench_store-%d", work, (int)getpid());
  if (mkdir(root, 0700) < 0) {
    perror(root);
    return 1;
  }
  uint32_t base_anon_kb;
  const uint32_t base_kb = rss_kb2(&base_anon_kb);
  samples = mmap(NULL, MAX_SAMPLES * sizeof(*samples) + 64,
                 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct result *big = mmap(NULL, 2 * sizeof(struct result),
                            PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                            -1, 0);
  if (samples == MAP_FAILED || big == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  nsamples = (_Atomic size_t *)(void *)(samples + MAX_SAMPLES);
  struct result *hot = big + 1;

  printf("bench_store: memory_mb %zu, batch %d distinct uniform keys, D=%d "
         "Adam (%d-byte rows), WAL off both sides, %d x %.1f s per case\n",
         mb, BATCH, D, ROW_BYTES, reps, secs);
  printf("big: %llu keys (%.0f MB of rows = %.1fx memory_mb); hot: %llu keys "
         "(%.1f MB of cached rows = 0.5x the %zu MB row cache)\n",
         (unsigned long long)nbig, nbig * (double)ROW_BYTES / 1048576.0,
         nbig * (double)ROW_BYTES / (double)(mb << 20),
         (unsigned long long)nhot, nhot * cached_row / 1048576.0, mb / 2);
  const char *mt = getenv("MALLOC_MMAP_THRESHOLD_");
  printf("glibc MALLOC_MMAP_THRESHOLD_=%s\n", mt ? mt : "(unset: dynamic)");
  printf("RSS before any store: %.1f MB, of which anon %.1f MB (each case "
         "runs in a fresh child process forked from here)\n",
         base_kb / 1024.0, base_anon_kb / 1024.0);

  snprintf(dir, sizeof(dir), "%s/big", root);
  run_case(CASE_STORE, dir, mb, nbig, secs, reps, b, big, 1);
  printf("big store: load %.1f s (%.0f keys/s, pushes of unseen keys in "
         "key order), then full compaction %.1f s\n",
         big->load_s, nbig / big->load_s, big->compact_s);
  snprintf(dir, sizeof(dir), "%s/bigraw", root);
  run_case(CASE_RAW, dir, mb, nbig, secs, reps, b, big, 1);
  printf("big raw: load %.1f s (%.0f keys/s, WriteBatches in key order), "
         "then full compaction %.1f s\n",
         big->raw_load_s, nbig / big->raw_load_s, big->raw_compact_s);
  snprintf(dir, sizeof(dir), "%s/hot", root);
  run_case(CASE_STORE, dir, mb, nhot, secs, reps, b, hot, 0);
  snprintf(dir, sizeof(dir), "%s/hotraw", root);
  run_case(CASE_RAW, dir, mb, nhot, secs, reps, b, hot, 0);

  print_table(hot, big, reps, mb, 0);
  print_table(hot, big, reps, mb, 1);
  printf("(anon RSS = resident - shared, max over the timed part; it includes %.1f MB the process had before any store)\n",
         base_anon_kb / 1024.0);
  printf("big store after the run: %llu rows estimated, %.1f MB SST, "
         "%.1f MB memtables, block cache %.1f/%.1f MB, row cache %.1f/%.1f "
         "MB, %.1f MB compaction debt\n",
         (unsigned long long)big->st.rows_estimate, big->st.sst_bytes / 1048576.0,
         big->st.memtable_bytes / 1048576.0,
         big->st.block_cache_bytes / 1048576.0,
         big->st.block_cache_budget / 1048576.0,
         big->st.row_cache_bytes / 1048576.0,
         big->st.row_cache_budget / 1048576.0,
         big->st.pending_compaction_bytes / 1048576.0);
  printf("\ncheckpoint of the big store (%.1f MB): %.2f GB/s same file "
         "system (hard links), %.2f GB/s into /dev/shm (copied)\n",
         big->ck_bytes / 1048576.0, big->ck_same_gbs, big->ck_shm_gbs);
  printf("\nper rep (keys/s):\n");
  for (int r = 0; r < reps; r++)
    printf("  rep %d: big store %.0f batch %.0f get/put %.0f | hot store %.0f "
           "batch %.0f get/put %.0f | per CPU s: big %.0f %.0f %.0f, hot "
           "%.0f %.0f %.0f\n",
           r, big->store[r], big->batched[r], big->single[r], hot->store[r],
           hot->batched[r], hot->single[r], big->cstore[r], big->cbatched[r],
           big->csingle[r], hot->cstore[r], hot->cbatched[r],
           hot->csingle[r]);

  snprintf(dir, sizeof(dir), "%s/amtl", root);
  run_case(CASE_AMTL, dir, mb, 0, secs, reps, b, NULL, 0);
  print_rss_series(mb);
  rm_tree(root);
  free(b->bits);
  free(b);
  return 0;
}
