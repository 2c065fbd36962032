/* pserver/server: a pserver over real tcp sockets (127.0.0.1, ephemeral
 * ports), with the pserver in a thread or a forked child.
 *   - 10,000 hostile messages (fixed seed) each get one ERROR reply (or a
 *     harmless valid reply when a flipped byte left a valid pull) and the
 *     server keeps serving with its rows intact (checksum before == after);
 *     then SHUTDOWN: the thread exits 0 and the store reopens with the rows;
 *   - SIGTERM to a forked pserver (a serving loop, and the maskps-pserver
 *     binary on a config file): exit status 0, its store (WAL off, so only
 *     the final flush saves the rows) reopens with the pushed data;
 *   - a client against a pserver that never answers, or no pserver at all:
 *     a clear error naming the endpoint in bounded time;
 *   - a pserver restarting on the same endpoint: requests sent meanwhile
 *     are retried with backoff and succeed, rows unchanged;
 *   - a late reply to a failed request is dropped, not taken for the
 *     next request's;
 *   - a retried push (same id) is applied once;
 *   - a sync barrier of two workers releases both together;
 *   - STATS JSON has the promised fields and counts; the binary writes
 *     periodic and final JSONL records;
 *   - CURVE: a client with the pserver's public key is served, a plaintext
 *     one is not. */
#include "common/check.h"
#include "common/config.h"
#include "common/keys.h"
#include "common/msg.h"
#include "common/net.h"
#include "common/ps.h"
#include "ps_testlib.h"
#include "pserver/ps_local.h"
#include "pserver/server.h"
#include "worker/ps_net.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define D 8
#define TABLE 5
#define NKEYS 300
#define DENSE 64
#define HOSTILE 10000
#define WAIT_MS 10000

static uint64_t rng_state;
static uint64_t rnd(void) {
  rng_state += 0x9e3779b97f4a7c15ull;
  return keys_mix64(rng_state);
}

static struct store_table the_table(void) {
  struct store_table t = make_table(TABLE, D, ROW_OPT_ADAM);
  return t;
}

static uint64_t key_of(uint64_t i) {
  return keys_mix64(i + 77);
}

/* Pushes `steps` steps of gradients for keys 0..NKEYS-1 and some dense
 * gradients. */
static void feed(struct ps *ps, int steps) {
  uint64_t keys[NKEYS];
  uint16_t glen[NKEYS];
  float g[NKEYS * D], dg[DENSE];
  char err[1024];
  for (int s = 1; s <= steps; s++) {
    size_t f = 0;
    for (uint64_t i = 0; i < NKEYS; i++) {
      keys[i] = key_of(i);
      glen[i] = (uint16_t)(1 + (i + (uint64_t)s) % D);
      for (unsigned j = 0; j < glen[i]; j++)
        g[f++] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
    }
    struct ps_grads pg = {.table = TABLE,
                          .step = (uint64_t)s,
                          .n = NKEYS,
                          .keys = keys,
                          .glen = glen,
                          .grads = g};
    if (ps_push(ps, &pg, err, sizeof(err)) < 0)
      fail_msg("push: %s", err);
    for (int i = 0; i < DENSE; i++)
      dg[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
    if (ps_push_dense(ps, (uint64_t)s, 0, DENSE, dg, err, sizeof(err)) < 0)
      fail_msg("push_dense: %s", err);
  }
}

/* Checksum of every fed row and the dense vector. */
static uint64_t checksum(struct ps *ps) {
  uint64_t keys[NKEYS], sum = 0;
  for (uint64_t i = 0; i < NKEYS; i++)
    keys[i] = key_of(i);
  assert_int_equal(ps_checksum(ps, TABLE, D, NKEYS, keys, &sum), 0);
  float dv[DENSE];
  char err[1024];
  if (ps_pull_dense(ps, 0, 0, DENSE, dv, err, sizeof(err)) < 0)
    fail_msg("pull_dense: %s", err);
  return fnv(sum, dv, sizeof(dv));
}

static struct ps *client(const char *ep, int timeout_ms, int retries) {
  const char *eps[1] = {ep};
  struct ps_net_opts o = {.endpoints = eps,
                          .nshards = 1,
                          .dense_total = DENSE,
                          .timeout_ms = timeout_ms,
                          .retries = retries,
                          .backoff_ms = 20};
  char err[1024];
  struct ps *ps = ps_net_new(&o, err, sizeof(err));
  if (!ps)
    fail_msg("ps_net_new: %s", err);
  return ps;
}

/* ---- a hand-written msgpack writer for hostile headers ----------------- */

struct mp {
  uint8_t b[512];
  size_t n;
};
static void mp_byte(struct mp *m, uint8_t x) {
  if (m->n < sizeof(m->b))
    m->b[m->n++] = x;
}
static void mp_map(struct mp *m, unsigned n) {
  mp_byte(m, (uint8_t)(0x80 | n));
}
static void mp_str(struct mp *m, const char *s) {
  size_t l = strlen(s);
  mp_byte(m, (uint8_t)(0xa0 | l));
  for (size_t i = 0; i < l; i++)
    mp_byte(m, (uint8_t)s[i]);
}
static void mp_uint(struct mp *m, uint64_t v) {
  if (v < 128) {
    mp_byte(m, (uint8_t)v);
    return;
  }
  mp_byte(m, 0xcf);
  for (int i = 7; i >= 0; i--)
    mp_byte(m, (uint8_t)(v >> (8 * i)));
}
static void mp_kv(struct mp *m, const char *k, uint64_t v) {
  mp_str(m, k);
  mp_uint(m, v);
}

/* A PULL request header with fields optionally broken. */
enum breakage {
  B_NONE,
  B_VERSION,   /* v != 1 */
  B_OP,        /* unknown op */
  B_HUGE_N,    /* n over MSG_MAX_KEYS */
  B_TYPE,      /* n is a string */
  B_EXTRA_KEY, /* a key the op does not have */
  B_MISSING,   /* step left out */
  B_REPLY,     /* re = true: a pull reply's header without its frames */
};
static void pull_header(struct mp *m, uint64_t id, uint32_t n,
                        enum breakage br) {
  m->n = 0;
  mp_map(m, br == B_EXTRA_KEY ? 9 : br == B_MISSING ? 7 : 8);
  mp_kv(m, "v", br == B_VERSION ? 2 + rnd() % 100 : MSG_VERSION);
  mp_kv(m, "op", br == B_OP ? (rnd() % 2 ? 0 : 10 + rnd() % 240) : MSG_PULL);
  mp_kv(m, "id", id);
  mp_kv(m, "from", 0);
  mp_str(m, "re");
  mp_byte(m, br == B_REPLY ? 0xc3 : 0xc2);
  mp_kv(m, "t", TABLE);
  if (br == B_TYPE) {
    mp_str(m, "n");
    mp_str(m, "four");
  } else {
    mp_kv(m, "n", br == B_HUGE_N ? MSG_MAX_KEYS + 1 + rnd() % 1000000 : n);
  }
  if (br != B_MISSING)
    mp_kv(m, "step", 1);
  if (br == B_EXTRA_KEY)
    mp_kv(m, "zz", 1);
}

/* Builds hostile message number k into frames; returns the frame count
 * and sets *id to the id it carries (0 if none) and *may_pass when the
 * message can still be a valid pull. */
static size_t hostile(uint64_t k, struct msg_frame *fr, struct mp *hdr,
                      uint8_t *bytes, size_t cap, uint64_t *keys,
                      struct msg_enc *enc, uint64_t *id, int *may_pass) {
  *id = 1000000 + k;
  *may_pass = 0;
  for (int i = 0; i < 8; i++)
    keys[i] = key_of(rnd() % NKEYS);
  switch (k % 10) {
  case 0: { /* a valid pull's header cut short */
    struct msg q;
    msg_init(&q);
    q.op = MSG_PULL;
    q.id = *id;
    q.table = TABLE;
    q.n = 4;
    q.keys = keys;
    msg_encode(&q, enc);
    size_t l = rnd() % enc->frames[0].len;
    memcpy(bytes, enc->frames[0].data, l);
    fr[0] = (struct msg_frame){bytes, l};
    fr[1] = enc->frames[1];
    return 2;
  }
  case 1: { /* a valid pull with 1-3 header bytes flipped */
    struct msg q;
    msg_init(&q);
    q.op = MSG_PULL;
    q.id = *id;
    q.table = TABLE;
    q.n = 4;
    q.keys = keys;
    msg_encode(&q, enc);
    size_t l = enc->frames[0].len;
    memcpy(bytes, enc->frames[0].data, l);
    for (uint64_t f = 1 + rnd() % 3; f > 0; f--)
      bytes[rnd() % l] ^= (uint8_t)(1 + rnd() % 255);
    fr[0] = (struct msg_frame){bytes, l};
    fr[1] = enc->frames[1];
    *may_pass = 1;
    return 2;
  }
  case 2:
  case 3: { /* a hand-built header broken one way */
    enum breakage br = (enum breakage)(1 + rnd() % 7);
    pull_header(hdr, *id, 4, br);
    fr[0] = (struct msg_frame){hdr->b, hdr->n};
    fr[1] = (struct msg_frame){keys, 32};
    return 2;
  }
  case 4: { /* a good header, frames that do not match its counts */
    pull_header(hdr, *id, 4, B_NONE);
    fr[0] = (struct msg_frame){hdr->b, hdr->n};
    uint64_t how = rnd() % 4;
    if (how == 0)
      return 1; /* keys frame missing */
    fr[1] = (struct msg_frame){keys, how == 1 ? 24 : 40};
    if (how == 3) {
      fr[1].len = 32;
      fr[2] = (struct msg_frame){keys, 8}; /* one frame too many */
      return 3;
    }
    return 2;
  }
  case 5: { /* random bytes, 1-3 frames */
    size_t nf = 1 + rnd() % 3, at = 0;
    for (size_t f = 0; f < nf; f++) {
      size_t l = rnd() % 200;
      CHECK(at + l <= cap, "cap");
      for (size_t i = 0; i < l; i++)
        bytes[at + i] = (uint8_t)rnd();
      fr[f] = (struct msg_frame){bytes + at, l};
      at += l;
    }
    *id = 0;
    return nf;
  }
  case 6: { /* more frames than a message may have */
    pull_header(hdr, *id, 4, B_NONE);
    fr[0] = (struct msg_frame){hdr->b, hdr->n};
    for (size_t f = 1; f < NET_MAX_FRAMES + 2; f++)
      fr[f] = (struct msg_frame){keys, 8};
    *id = 0;
    return NET_MAX_FRAMES + 2;
  }
  case 7: { /* valid messages the store must refuse: an unknown table, a
             * duplicate key, a gradient longer than D */
    struct msg q;
    msg_init(&q);
    q.op = MSG_PUSH;
    q.id = *id;
    q.n = 2;
    q.table = TABLE;
    static uint16_t glen[2], plen[2];
    static uint32_t cnt[2] = {1, 1}, clk[2];
    static float g[2 * (D + 1)];
    glen[0] = glen[1] = D;
    uint64_t how = rnd() % 3;
    if (how == 0)
      q.table = TABLE + 1 + (uint32_t)(rnd() % 1000);
    else if (how == 1)
      keys[1] = keys[0];
    else
      glen[1] = D + 1;
    q.nvals = glen[0] + glen[1];
    q.keys = keys;
    q.glen = glen;
    q.plen = plen;
    q.count = cnt;
    q.clicks = clk;
    q.vals = g;
    msg_encode(&q, enc);
    memcpy(fr, enc->frames, enc->nframes * sizeof(*fr));
    return enc->nframes;
  }
  case 8: { /* dense ranges outside the vector, unknown dense tables */
    struct msg q;
    msg_init(&q);
    q.op = rnd() % 2 ? MSG_PULL_DENSE : MSG_PUSH_DENSE;
    q.id = *id;
    q.off = DENSE - 2 + rnd() % 1000;
    if (rnd() % 3 == 0) { /* or in range, but of a dense table that is not */
      q.off = 0;
      q.table = 2 + (uint32_t)(rnd() % 100);
    }
    q.nvals = 4;
    static float v[4];
    if (q.op == MSG_PUSH_DENSE)
      q.vals = v;
    msg_encode(&q, enc);
    memcpy(fr, enc->frames, enc->nframes * sizeof(*fr));
    return enc->nframes;
  }
  default: { /* a reply sent to the server; an ERROR as a request */
    struct msg q;
    msg_init(&q);
    if (rnd() % 2) {
      q.op = MSG_PUSH;
      q.reply = true;
      q.table = TABLE;
      q.n = 3;
    } else {
      q.op = MSG_ERROR;
      q.reply = true;
      q.code = MSG_E_INTERNAL;
      q.text = "hello";
      q.text_len = 5;
    }
    q.id = *id;
    msg_encode(&q, enc);
    memcpy(fr, enc->frames, enc->nframes * sizeof(*fr));
    return enc->nframes;
  }
  }
}

static struct test_server serve_one(char *dir, enum store_wal wal,
                                    const struct store_table *t,
                                    uint32_t workers) {
  struct test_server ts = {.dir = temp_dir(dir),
                           .tables = t,
                           .ntables = 1,
                           .rank = 0,
                           .S = 1,
                           .W = workers,
                           .dense_total = DENSE,
                           .wal = wal};
  return ts;
}

static void test_hostile_then_shutdown(void **state) {
  (void)state;
  rng_state = 7;
  char dir[64];
  struct store_table t = the_table();
  struct test_server ts = serve_one(dir, STORE_WAL_ASYNC, &t, 1);
  assert_int_equal(ts_start(&ts), 0);
  struct ps *ps = client(ts.endpoint, WAIT_MS, -1);
  feed(ps, 3);
  uint64_t before = checksum(ps);

  char err[1024];
  struct net *net = net_new(err, sizeof(err));
  const char *eps[1] = {ts.endpoint};
  struct net_sock *raw = net_client_new(net, eps, 1, NULL, err, sizeof(err));
  assert_non_null(raw);
  struct net_msg *in = net_msg_new();
  struct msg rep;
  msg_init(&rep);
  struct msg_enc enc;
  msg_enc_init(&enc);
  static uint8_t bytes[8192];
  struct mp hdr;
  uint64_t keys[8];
  struct msg_frame fr[NET_MAX_FRAMES + 4];
  enum { WINDOW = 50 };
  uint64_t ids[WINDOW];
  int pass[WINDOW];
  size_t errors = 0, passed = 0, id_echoed = 0;
  uint64_t t0 = clock_ns();
  for (uint64_t k = 0; k < HOSTILE; k += WINDOW) {
    /* Pipelined: a window of messages, then their replies in order. */
    for (int w = 0; w < WINDOW; w++) {
      size_t nf = hostile(k + (uint64_t)w, fr, &hdr, bytes, sizeof(bytes), keys,
                          &enc, &ids[w], &pass[w]);
      assert_int_equal(net_send(raw, NULL, fr, nf, err, sizeof(err)), 0);
    }
    for (int w = 0; w < WINDOW; w++) {
      if (net_recv(raw, in, WAIT_MS, err, sizeof(err)) != 0)
        fail_msg("hostile message %llu: no reply: %s",
                 (unsigned long long)(k + (uint64_t)w), err);
      if (msg_decode(net_msg_frames(in), net_msg_nframes(in), &rep, err,
                     sizeof(err)) != 0)
        fail_msg("reply to hostile %llu does not decode: %s",
                 (unsigned long long)(k + (uint64_t)w), err);
      assert_true(rep.reply);
      if (rep.op == MSG_ERROR) {
        errors++;
        assert_true(pass[w] || rep.id == ids[w] || rep.id == 0);
        id_echoed += rep.id == ids[w] && ids[w] != 0;
        assert_true(rep.text_len > 0);
      } else {
        if (!pass[w])
          fail_msg("hostile message %llu (kind %llu) got a %s reply",
                   (unsigned long long)(k + (uint64_t)w),
                   (unsigned long long)((k + (uint64_t)w) % 10),
                   msg_op_name(rep.op));
        assert_int_equal(rep.op, MSG_PULL);
        passed++;
      }
    }
  }
  double secs = (double)(clock_ns() - t0) / 1e9;
  fprintf(stderr,
          "hostile: %zu ERROR replies (%zu with the id echoed), %zu "
          "still-valid pulls, %.2f s\n",
          errors, id_echoed, passed, secs);
  assert_int_equal(errors + passed, HOSTILE);
  assert_true(errors > HOSTILE * 8 / 10);
  /* Kinds 4, 7, 8, 9 have a readable header: their id comes back. */
  assert_true(id_echoed >= HOSTILE * 4 / 10);
  msg_deinit(&rep);
  msg_enc_deinit(&enc);
  net_msg_free(in);
  net_sock_free(raw);
  net_free(net);

  /* Still serving, data intact. */
  assert_int_equal(checksum(ps), before);
  char *json = ps_net_stats(ps, 0, err, sizeof(err));
  if (!json)
    fail_msg("stats: %s", err);
  const char *fields[] = {"\"keys\":",           "\"bytes_disk\":",
                          "\"cache_hit_rate\":", "\"pull_us\":{\"p50\":",
                          "\"push_us\":",        "\"compaction_debt_bytes\":",
                          "\"stalls\":",         "\"hist\":[0,",
                          "\"malformed\":",      "\"rows\":300,"};
  for (size_t i = 0; i < ARRAY_LEN(fields); i++)
    if (!strstr(json, fields[i]))
      fail_msg("stats lack %s: %s", fields[i], json);
  /* hist[D] counts the 300 rows (prefix D, no AMTL). */
  assert_non_null(strstr(json, ",300]"));
  free(json);

  /* SHUTDOWN: the thread leaves its loop with 0; the rows are on disk. */
  assert_int_equal(ps_net_shutdown(ps, err, sizeof(err)), 0);
  assert_int_equal(ts_join(&ts), 0);
  ps_free(ps);
  struct store_options o = ts_options(&t, 1, DENSE, 1, 0, STORE_WAL_ASYNC);
  struct store *st = store_open(dir, &o, err, sizeof(err));
  assert_non_null(st);
  struct ps *loc = ps_local_new(&st, 1, &t, 1, DENSE, err, sizeof(err));
  assert_int_equal(checksum(loc), before);
  ps_free(loc);
  assert_int_equal(store_close(st, err, sizeof(err)), 0);
  rm_tree(dir);
}

/* ---- SIGTERM to a forked pserver ---------------------------------------- */

static volatile sig_atomic_t child_stop;
static void on_term(int sig) {
  (void)sig;
  child_stop = 1;
}

/* The child: serve until SIGTERM, exit 0 on a clean stop. Reports its
 * endpoint on fd. Never returns. */
static _Noreturn void child_main(const char *dir, const struct store_table *t,
                                 int fd) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_term;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  char err[1024];
  struct store_options o = ts_options(t, 1, DENSE, 1, 0, STORE_WAL_OFF);
  struct store *st = store_open(dir, &o, err, sizeof(err));
  if (!st)
    _exit(3);
  struct server_opts so = {.endpoint = "tcp://127.0.0.1:*",
                           .nshards = 1,
                           .workers = 1,
                           .dense_total = DENSE,
                           .tables = t,
                           .ntables = 1,
                           .poll_ms = 20};
  struct server *srv = server_new(st, &so, err, sizeof(err));
  if (!srv)
    _exit(4);
  char ep[256];
  int len = snprintf(ep, sizeof(ep), "%s\n", server_endpoint(srv));
  if (write(fd, ep, (size_t)len) != len)
    _exit(5);
  close(fd);
  int rc = server_run(srv, &child_stop, err, sizeof(err));
  server_free(srv);
  if (store_close(st, err, sizeof(err)) < 0)
    rc = -1;
  _exit(rc == 0 && child_stop ? 0 : 6);
}

static void test_sigterm(void **state) {
  (void)state;
  rng_state = 11;
  char dir[64];
  temp_dir(dir);
  struct store_table t = the_table();
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    child_main(dir, &t, fds[1]);
  }
  close(fds[1]);
  char ep[256] = {0};
  size_t got = 0;
  while (got < sizeof(ep) - 1) {
    ssize_t r = read(fds[0], ep + got, sizeof(ep) - 1 - got);
    if (r <= 0)
      break;
    got += (size_t)r;
    if (memchr(ep, '\n', got))
      break;
  }
  close(fds[0]);
  char *nl = strchr(ep, '\n');
  assert_non_null(nl);
  *nl = 0;
  struct ps *ps = client(ep, WAIT_MS, -1);
  feed(ps, 2);
  uint64_t before = checksum(ps);
  ps_free(ps);
  assert_int_equal(kill(pid, SIGTERM), 0);
  int status = 0;
  pid_t w = 0;
  for (int i = 0; i < 1000 && w == 0; i++) { /* at most ~10 s */
    w = waitpid(pid, &status, WNOHANG);
    if (w == 0)
      usleep(10000);
  }
  if (w == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    fail_msg("the pserver did not exit within 10 s of SIGTERM");
  }
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  char err[1024];
  struct store_options o = ts_options(&t, 1, DENSE, 1, 0, STORE_WAL_OFF);
  struct store *st = store_open(dir, &o, err, sizeof(err));
  assert_non_null(st);
  struct ps *loc = ps_local_new(&st, 1, &t, 1, DENSE, err, sizeof(err));
  assert_int_equal(checksum(loc), before);
  ps_free(loc);
  assert_int_equal(store_close(st, err, sizeof(err)), 0);
  rm_tree(dir);
}

/* The real maskps-pserver binary (built next to this test): started on a
 * config file, fed through ps_net, stopped by SIGTERM: exit status 0 and
 * its store reopens with the rows and dense values it was sent. */
static void test_binary_sigterm(void **state) {
  (void)state;
  rng_state = 13;
  char exe[4096], bin[4200];
  ssize_t l = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  assert_true(l > 0);
  exe[l] = 0;
  *strrchr(exe, '/') = 0; /* .../tests/pserver */
  snprintf(bin, sizeof(bin), "%s/../../pserver/maskps-pserver", exe);
  if (access(bin, X_OK) != 0)
    fail_msg("%s not built (ninja builds it with the tests)", bin);
  char dir[64], cfg_path[128], yaml[1024];
  temp_dir(dir);
  snprintf(cfg_path, sizeof(cfg_path), "%s/run.yaml", dir);
  int yl = snprintf(yaml, sizeof(yaml),
                    "data:\n  train: [unused.txt]\n"
                    "train:\n  run_dir: %s/run\n  seed: 5\n"
                    "cluster:\n  pservers: 1\n"
                    "embedding:\n  dim: %d\n"
                    "pserver:\n  memory_mb: 64\n  cache_mb: 16\n"
                    "  block_cache_mb: 16\n  write_buffer_mb: 8\n"
                    "  wal: 'off'\n",
                    dir, D);
  FILE *f = fopen(cfg_path, "w");
  assert_non_null(f);
  assert_int_equal(fwrite(yaml, 1, (size_t)yl, f), (size_t)yl);
  fclose(f);
  char dense_arg[32];
  snprintf(dense_arg, sizeof(dense_arg), "%d", DENSE);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    execl(bin, bin, "--config", cfg_path, "--rank", "0", "--endpoint",
          "tcp://127.0.0.1:*", "--dense-floats", dense_arg, "--set",
          "log.level=info", "--set", "log.interval_s=0.05", "--tables",
          "0:D,5:D", (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  /* Its stderr says where it serves. */
  char out[8192] = {0};
  size_t got = 0;
  char *ep = NULL;
  while (!ep && got < sizeof(out) - 1) {
    ssize_t r = read(fds[0], out + got, sizeof(out) - 1 - got);
    if (r <= 0)
      break;
    got += (size_t)r;
    char *at = strstr(out, "serving on ");
    if (at && strchr(at, ' ') && strstr(at, " ("))
      ep = at + strlen("serving on ");
  }
  if (!ep)
    fail_msg("maskps-pserver did not start: %s", out);
  *strstr(ep, " (") = 0;
  struct ps *ps = client(ep, WAIT_MS, -1);
  feed(ps, 2);
  uint64_t before = checksum(ps);
  ps_free(ps);
  assert_int_equal(kill(pid, SIGTERM), 0);
  int status = 0;
  pid_t w = 0;
  for (int i = 0; i < 1000 && w == 0; i++) {
    w = waitpid(pid, &status, WNOHANG);
    if (w == 0)
      usleep(10000);
  }
  if (w == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    fail_msg("maskps-pserver did not exit within 10 s of SIGTERM");
  }
  close(fds[0]);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  /* Reopen its store as the config describes it. */
  char err[2048];
  struct config *cfg = config_new();
  assert_int_equal(
      config_read_string(cfg, yaml, (size_t)yl, "run.yaml", err, sizeof(err)),
      0);
  struct store_table tables[2];
  ps_local_tables_from_config(cfg, 2, tables);
  tables[1].id = TABLE; /* --tables 0:D,5:D */
  struct store_options o;
  ps_local_store_options(cfg, DENSE, 1, 0, &o);
  o.tables = tables;
  o.ntables = 2;
  char db[160];
  snprintf(db, sizeof(db), "%s/run/db/shard-0", dir);
  struct store *st = store_open(db, &o, err, sizeof(err));
  if (!st)
    fail_msg("reopen: %s", err);
  assert_int_equal(store_dense_loaded(st), 1);
  struct ps *loc = ps_local_new(&st, 1, tables, 2, DENSE, err, sizeof(err));
  assert_int_equal(checksum(loc), before);
  ps_free(loc);
  assert_int_equal(store_close(st, err, sizeof(err)), 0);
  config_free(cfg);
  /* Its JSONL log: periodic "pserver" records and the final stats. */
  char logp[160], line[16384];
  snprintf(logp, sizeof(logp), "%s/run/logs/pserver-0.jsonl", dir);
  FILE *lf = fopen(logp, "r");
  assert_non_null(lf);
  int periodic = 0, final = 0;
  while (fgets(line, sizeof(line), lf)) {
    periodic += strstr(line, "\"event\":\"pserver\",") != NULL &&
                strstr(line, "\"pull_p99_us\":") != NULL;
    final += strstr(line, "\"event\":\"pserver_stats\"") != NULL &&
             strstr(line, "\"rows\":300,") != NULL;
  }
  fclose(lf);
  assert_true(periodic >= 1);
  assert_int_equal(final, 1);
  rm_tree(dir);
}

/* CURVE: a pserver with a keypair serves a client that knows its public
 * key; a plaintext client gets no answer. */
static void test_curve(void **state) {
  (void)state;
  rng_state = 17;
  char err[1024];
  struct net_keypair kp;
  assert_int_equal(net_keypair_new(&kp, err, sizeof(err)), 0);
  struct net_opts sec = {.curve_self = &kp};
  char dir[64];
  struct store_table t = the_table();
  struct test_server ts = serve_one(dir, STORE_WAL_OFF, &t, 1);
  ts.net = &sec;
  assert_int_equal(ts_start(&ts), 0);
  const char *eps[1] = {ts.endpoint}, *pubs[1] = {kp.pub};
  struct ps_net_opts o = {.endpoints = eps,
                          .nshards = 1,
                          .dense_total = DENSE,
                          .timeout_ms = WAIT_MS,
                          .retries = -1,
                          .server_pubs = pubs};
  struct ps *ps = ps_net_new(&o, err, sizeof(err));
  assert_non_null(ps);
  feed(ps, 1);
  uint64_t a = checksum(ps), b = checksum(ps);
  assert_true(a == b);
  struct ps *plain = client(ts.endpoint, 200, -1);
  uint64_t k = key_of(1);
  struct ps_rows r = {calloc(1, 2), calloc(1, 4), calloc(1, 4), calloc(D, 4),
                      D};
  assert_int_equal(ps_pull(plain, TABLE, 0, 1, &k, &r, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "did not answer"));
  ps_free(plain);
  free(r.plen);
  free(r.count);
  free(r.clicks);
  free(r.vals);
  assert_int_equal(ps_net_shutdown(ps, err, sizeof(err)), 0);
  assert_int_equal(ts_join(&ts), 0);
  ps_free(ps);
  rm_tree(dir);
}

/* ---- timeouts ------------------------------------------------------------ */

static void expect_timeout(const char *ep) {
  struct ps *ps = client(ep, 150, 2);
  uint64_t k = 1;
  struct ps_rows r = {calloc(1, 2), calloc(1, 4), calloc(1, 4), calloc(D, 4),
                      D};
  char err[1024];
  uint64_t t0 = clock_ns();
  long rc = ps_pull(ps, TABLE, 0, 1, &k, &r, err, sizeof(err));
  double ms = (double)(clock_ns() - t0) / 1e6;
  assert_int_equal(rc, -1);
  /* 3 attempts of 150 ms, pauses of 20 and 40 ms: ~510 ms. */
  assert_true(ms >= 450);
  assert_true(ms < 3000);
  assert_non_null(strstr(err, ep));
  assert_non_null(strstr(err, "did not answer PULL"));
  assert_non_null(strstr(err, "3 attempts"));
  free(r.plen);
  free(r.count);
  free(r.clicks);
  free(r.vals);
  ps_free(ps);
}

static void test_timeouts(void **state) {
  (void)state;
  char err[1024];
  struct net *net = net_new(err, sizeof(err));
  /* A ROUTER that never reads. */
  struct net_sock *mute =
      net_server_new(net, "tcp://127.0.0.1:*", NULL, err, sizeof(err));
  assert_non_null(mute);
  expect_timeout(net_sock_endpoint(mute));
  /* Nobody at all: a port that was just free. */
  char ep[256];
  snprintf(ep, sizeof(ep), "%s", net_sock_endpoint(mute));
  net_sock_free(mute);
  expect_timeout(ep);
  net_free(net);
}

/* A fake pserver that leaves the first request unanswered and, on the
 * second, first answers the first (now stale) and then the second: the
 * client's second pull must get its own reply. */
struct fake {
  struct net *net;
  struct net_sock *sock;
  int rc;
};

static void fake_pull_reply(struct net_sock *s, const struct net_peer *peer,
                            uint64_t id, uint32_t marker) {
  uint16_t plen = 1;
  uint32_t cnt = marker, clk = 0;
  float v = (float)marker;
  struct msg rep;
  msg_init(&rep);
  rep.op = MSG_PULL;
  rep.reply = true;
  rep.id = id;
  rep.table = TABLE;
  rep.n = 1;
  rep.nvals = 1;
  rep.plen = &plen;
  rep.count = &cnt;
  rep.clicks = &clk;
  rep.vals = &v;
  struct msg_enc enc;
  msg_enc_init(&enc);
  char err[256];
  CHECK(net_send_msg(s, peer, &rep, &enc, err, sizeof(err)) == 0, "%s", err);
  msg_enc_deinit(&enc);
}

static void *fake_main(void *p) {
  struct fake *f = p;
  struct net_msg *in = net_msg_new();
  struct msg req;
  msg_init(&req);
  char err[256];
  uint64_t first = 0;
  f->rc = -1;
  for (int k = 0; k < 2; k++) {
    if (net_recv(f->sock, in, WAIT_MS, err, sizeof(err)) != 0 ||
        msg_decode(net_msg_frames(in), net_msg_nframes(in), &req, err,
                   sizeof(err)) != 0)
      break;
    if (k == 0) {
      first = req.id;
      continue;
    }
    fake_pull_reply(f->sock, net_msg_peer(in), first, 111);
    fake_pull_reply(f->sock, net_msg_peer(in), req.id, 222);
    f->rc = 0;
  }
  msg_deinit(&req);
  net_msg_free(in);
  return NULL;
}

static void test_stale_reply_dropped(void **state) {
  (void)state;
  char err[1024];
  struct fake f;
  f.net = net_new(err, sizeof(err));
  /* Made here, then used only by the fake's thread (pthread_create is the
   * full barrier ZeroMQ asks for when a socket changes threads). */
  f.sock = net_server_new(f.net, "tcp://127.0.0.1:*", NULL, err, sizeof(err));
  assert_non_null(f.sock);
  char ep[256];
  snprintf(ep, sizeof(ep), "%s", net_sock_endpoint(f.sock));
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, fake_main, &f), 0);
  struct ps *ps = client(ep, 300, -1);
  uint64_t k = 9;
  struct ps_rows r = {calloc(1, 2), calloc(1, 4), calloc(1, 4), calloc(D, 4),
                      D};
  assert_int_equal(ps_pull(ps, TABLE, 0, 1, &k, &r, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "did not answer PULL"));
  /* The stale reply (111) arrives first and is dropped. */
  if (ps_pull(ps, TABLE, 0, 1, &k, &r, err, sizeof(err)) != 1)
    fail_msg("second pull: %s", err);
  assert_int_equal(r.count[0], 222);
  assert_true(r.vals[0] == 222.0f);
  ps_free(ps);
  pthread_join(th, NULL);
  assert_int_equal(f.rc, 0);
  free(r.plen);
  free(r.count);
  free(r.clicks);
  free(r.vals);
  net_sock_free(f.sock);
  net_free(f.net);
}

/* A pserver that restarts (stopped, then back on the same endpoint and
 * store 400 ms later): the client's requests in between are retried with
 * backoff and succeed, and the rows are those of before. */
struct restarter {
  struct test_server *ts;
  int rc;
};

static void *restart_main(void *p) {
  struct restarter *r = p;
  usleep(400 * 1000);
  r->rc = ts_start(r->ts);
  return NULL;
}

static void test_restart_retried(void **state) {
  (void)state;
  rng_state = 23;
  char dir[64];
  struct store_table t = the_table();
  struct test_server ts = serve_one(dir, STORE_WAL_ASYNC, &t, 1);
  assert_int_equal(ts_start(&ts), 0);
  char ep[256];
  snprintf(ep, sizeof(ep), "%s", ts.endpoint);
  struct ps *ps = client(ep, 150, 10);
  feed(ps, 2);
  uint64_t before = checksum(ps);
  ts.stop = 1;
  assert_int_equal(ts_join(&ts), 0);

  struct test_server ts2 = ts;
  ts2.bind = ep;
  struct restarter r = {&ts2, -1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, restart_main, &r), 0);
  uint64_t t0 = clock_ns();
  uint64_t after = checksum(ps); /* sent while nobody serves */
  double ms = (double)(clock_ns() - t0) / 1e6;
  pthread_join(th, NULL);
  assert_int_equal(r.rc, 0);
  assert_true(after == before);
  assert_true(ms >= 300); /* it did wait for the restart */
  char err[1024];
  assert_int_equal(ps_net_shutdown(ps, err, sizeof(err)), 0);
  assert_int_equal(ts_join(&ts2), 0);
  ps_free(ps);
  rm_tree(dir);
}

/* ---- retried pushes, barriers ------------------------------------------- */

static void test_retry_applied_once(void **state) {
  (void)state;
  char dir[64];
  struct store_table t = the_table();
  struct test_server ts = serve_one(dir, STORE_WAL_OFF, &t, 1);
  assert_int_equal(ts_start(&ts), 0);
  char err[1024];
  struct net *net = net_new(err, sizeof(err));
  const char *eps[1] = {ts.endpoint};
  struct net_sock *raw = net_client_new(net, eps, 1, NULL, err, sizeof(err));
  struct net_msg *in = net_msg_new();
  struct msg_enc enc;
  msg_enc_init(&enc);
  struct msg rep;
  msg_init(&rep);
  uint64_t key = key_of(1);
  uint16_t glen = D, plen = 0;
  uint32_t cnt = 1, clk = 1;
  float g[D] = {1, 1, 1, 1, 1, 1, 1, 1};
  for (int send = 0; send < 3; send++) {
    struct msg q;
    msg_init(&q);
    q.op = MSG_PUSH;
    q.id = send < 2 ? 4242 : 4343; /* the second is a retry of the first */
    q.from = 3;
    q.table = TABLE;
    q.n = 1;
    q.nvals = D;
    q.step = 1;
    q.keys = &key;
    q.glen = &glen;
    q.plen = &plen;
    q.count = &cnt;
    q.clicks = &clk;
    q.vals = g;
    assert_int_equal(net_send_msg(raw, NULL, &q, &enc, err, sizeof(err)), 0);
    assert_int_equal(net_recv(raw, in, WAIT_MS, err, sizeof(err)), 0);
    assert_int_equal(msg_decode(net_msg_frames(in), net_msg_nframes(in), &rep,
                                err, sizeof(err)),
                     0);
    assert_int_equal(rep.op, MSG_PUSH);
    assert_int_equal(rep.id, q.id);
  }
  /* Three sends, two distinct pushes: count 2, clicks 2. */
  struct ps *ps = client(ts.endpoint, WAIT_MS, -1);
  struct ps_rows r = {calloc(1, 2), calloc(1, 4), calloc(1, 4), calloc(D, 4),
                      D};
  assert_int_equal(ps_pull(ps, TABLE, 1, 1, &key, &r, err, sizeof(err)), D);
  assert_int_equal(r.count[0], 2);
  assert_int_equal(r.clicks[0], 2);
  free(r.plen);
  free(r.count);
  free(r.clicks);
  free(r.vals);
  assert_int_equal(ps_net_shutdown(ps, err, sizeof(err)), 0);
  assert_int_equal(ts_join(&ts), 0);
  ps_free(ps);
  msg_deinit(&rep);
  msg_enc_deinit(&enc);
  net_msg_free(in);
  net_sock_free(raw);
  net_free(net);
  rm_tree(dir);
}

struct worker_arg {
  const char *ep;
  uint32_t rank;
  int delay_ms;
  double waited_ms; /* time spent in ps_barrier */
  int rc;
  char err[1024];
};

static void *barrier_worker(void *p) {
  struct worker_arg *a = p;
  const char *eps[1] = {a->ep};
  struct ps_net_opts o = {.endpoints = eps,
                          .nshards = 1,
                          .rank = a->rank,
                          .dense_total = DENSE,
                          .timeout_ms = WAIT_MS,
                          .retries = -1};
  struct ps *ps = ps_net_new(&o, a->err, sizeof(a->err));
  if (!ps) {
    a->rc = -1;
    return NULL;
  }
  a->rc = 0;
  for (uint64_t step = 1; step <= 3 && a->rc == 0; step++) {
    usleep((useconds_t)a->delay_ms * 1000);
    uint64_t t0 = clock_ns();
    a->rc = ps_barrier(ps, step, a->err, sizeof(a->err));
    a->waited_ms += (double)(clock_ns() - t0) / 1e6;
  }
  ps_free(ps);
  return NULL;
}

static void test_barrier_two_workers(void **state) {
  (void)state;
  char dir[64];
  struct store_table t = the_table();
  struct test_server ts = serve_one(dir, STORE_WAL_OFF, &t, 2);
  assert_int_equal(ts_start(&ts), 0);
  struct worker_arg a[2] = {{.ep = ts.endpoint, .rank = 0, .delay_ms = 0},
                            {.ep = ts.endpoint, .rank = 1, .delay_ms = 150}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, barrier_worker, &a[i]), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < 2; i++)
    if (a[i].rc != 0)
      fail_msg("worker %d: %s", i, a[i].err);
  /* The fast worker waited for the slow one at each of the 3 barriers. */
  assert_true(a[0].waited_ms >= 3 * 100);
  assert_true(a[1].waited_ms < a[0].waited_ms);
  /* A worker rank outside cluster.workers is refused. */
  char err[1024];
  const char *eps[1] = {ts.endpoint};
  struct ps_net_opts o = {.endpoints = eps,
                          .nshards = 1,
                          .rank = 2,
                          .timeout_ms = WAIT_MS,
                          .retries = -1};
  struct ps *ps = ps_net_new(&o, err, sizeof(err));
  assert_int_equal(ps_barrier(ps, 9, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "2 workers"));
  assert_int_equal(ps_net_shutdown(ps, err, sizeof(err)), 0);
  assert_int_equal(ts_join(&ts), 0);
  ps_free(ps);
  rm_tree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sigterm), /* first: fork before any thread */
      cmocka_unit_test(test_binary_sigterm),
      cmocka_unit_test(test_hostile_then_shutdown),
      cmocka_unit_test(test_curve),
      cmocka_unit_test(test_timeouts),
      cmocka_unit_test(test_stale_reply_dropped),
      cmocka_unit_test(test_restart_retried),
      cmocka_unit_test(test_retry_applied_once),
      cmocka_unit_test(test_barrier_two_workers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
