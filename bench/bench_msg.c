/* bench_msg: what the wire protocol costs per PULL reply.
 *
 *   bench_msg [seconds_per_case]    (default 0.5)
 *
 * The message: a PULL reply for 4096 keys at D=16, every key with its full
 * prefix (the fixed-D case): 4096 x (2 + 4 + 4) bytes of prefix lengths and
 * stats plus 65536 floats, ~296 KiB. Cases:
 *   1. msg_encode + msg_decode, frames aligned (decode borrows: the cost is
 *      the header and the validation of every prefix length);
 *   2. the same with every raw frame at an odd address, as ZeroMQ may hand
 *      them over (decode copies them);
 *   3. a full round trip over tcp://127.0.0.1 through common/net: a ROUTER
 *      thread answers each 8-byte-key PULL with this reply.
 * GB/s counts the wire bytes of the reply (all frames). A last line shows
 * what ragged replies save when AMTL keeps a mean prefix of D/4. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/msg.h"
#include "common/net.h"

#define NKEYS 4096
#define D 16

static double g_secs = 0.5;
static uint16_t plen[NKEYS];
static uint32_t count[NKEYS], clicks[NKEYS];
static float vals[NKEYS * D];
static uint64_t keys[NKEYS];

static void build_reply(struct msg *m) {
  msg_init(m);
  m->op = MSG_PULL;
  m->reply = true;
  m->id = 12345;
  m->table = 1;
  m->n = NKEYS;
  m->step = 1000;
  m->plen = plen;
  m->count = count;
  m->clicks = clicks;
  m->vals = vals;
  m->nvals = 0;
  for (int i = 0; i < NKEYS; i++) {
    plen[i] = D;
    count[i] = (uint32_t)i;
    clicks[i] = (uint32_t)i / 3;
    m->nvals += D;
  }
  for (int i = 0; i < NKEYS * D; i++)
    vals[i] = (float)i * 1e-3f;
}

static size_t wire_bytes(const struct msg_enc *e) {
  size_t b = 0;
  for (size_t i = 0; i < e->nframes; i++)
    b += e->frames[i].len;
  return b;
}

static void codec(bool misaligned) {
  struct msg m, d = {0};
  build_reply(&m);
  struct msg_enc e;
  msg_enc_init(&e);
  msg_encode(&m, &e);
  size_t bytes = wire_bytes(&e);
  /* Frames copied where the case wants them (decode reads these). */
  struct msg_frame f[MSG_MAX_FRAMES];
  uint8_t *blk[MSG_MAX_FRAMES];
  for (size_t i = 0; i < e.nframes; i++) {
    blk[i] = xaligned(e.frames[i].len + 8);
    memcpy(blk[i] + misaligned, e.frames[i].data, e.frames[i].len);
    f[i].data = blk[i] + misaligned;
    f[i].len = e.frames[i].len;
  }
  char err[256];
  long n = 0;
  double t0 = clock_sec(), t;
  do {
    msg_encode(&m, &e);
    f[0].data = e.frames[0].data; /* the fresh header */
    CHECK(msg_decode(f, e.nframes, &d, err, sizeof(err)) == 0, "%s", err);
    CHECK(d.n == NKEYS, "n=%u", d.n);
    n++;
    t = clock_sec();
  } while (t - t0 < g_secs);
  double per = (t - t0) / (double)n;
  printf("encode+decode %-10s  %7.1f us/reply  %6.2f GB/s  (%zu bytes)\n",
         misaligned ? "misaligned" : "aligned", per * 1e6,
         (double)bytes / per / 1e9, bytes);
  msg_deinit(&d);
  for (size_t i = 0; i < e.nframes; i++)
    free(blk[i]);
  msg_enc_deinit(&e);
}

struct srv {
  struct net *net;
  char endpoint[256];
  int ready;
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

static void *serve(void *arg) {
  struct srv *sv = arg;
  char err[256];
  struct net_sock *s =
      net_server_new(sv->net, "tcp://127.0.0.1:*", NULL, err, sizeof(err));
  CHECK(s, "%s", err);
  pthread_mutex_lock(&sv->mu);
  snprintf(sv->endpoint, sizeof(sv->endpoint), "%s", net_sock_endpoint(s));
  sv->ready = 1;
  pthread_cond_signal(&sv->cv);
  pthread_mutex_unlock(&sv->mu);
  struct net_msg *in = net_msg_new();
  struct msg req = {0}, rep;
  struct msg_enc e;
  msg_enc_init(&e);
  for (;;) {
    CHECK(net_recv(s, in, -1, err, sizeof(err)) == 0, "%s", err);
    CHECK(msg_decode(net_msg_frames(in), net_msg_nframes(in), &req, err,
                     sizeof(err)) == 0,
          "%s", err);
    if (req.op == MSG_SHUTDOWN) {
      msg_reply_to(&rep, &req, 0);
      CHECK(net_send_msg(s, net_msg_peer(in), &rep, &e, err, sizeof(err)) == 0,
            "%s", err);
      break;
    }
    build_reply(&rep);
    rep.id = req.id;
    CHECK(net_send_msg(s, net_msg_peer(in), &rep, &e, err, sizeof(err)) == 0,
          "%s", err);
  }
  msg_deinit(&req);
  msg_enc_deinit(&e);
  net_msg_free(in);
  net_sock_free(s);
  return NULL;
}

static void over_tcp(void) {
  char err[256];
  struct srv sv = {.ready = 0};
  sv.net = net_new(err, sizeof(err));
  CHECK(sv.net, "%s", err);
  pthread_mutex_init(&sv.mu, NULL);
  pthread_cond_init(&sv.cv, NULL);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, serve, &sv) == 0, "pthread_create");
  pthread_mutex_lock(&sv.mu);
  while (!sv.ready)
    pthread_cond_wait(&sv.cv, &sv.mu);
  pthread_mutex_unlock(&sv.mu);
  const char *eps[] = {sv.endpoint};
  struct net_sock *c = net_client_new(sv.net, eps, 1, NULL, err, sizeof(err));
  CHECK(c, "%s", err);
  struct net_msg *in = net_msg_new();
  struct msg_enc e;
  msg_enc_init(&e);
  for (int i = 0; i < NKEYS; i++)
    keys[i] = (uint64_t)i * 7919;
  struct msg req = {.op = MSG_PULL, .table = 1, .n = NKEYS, .keys = keys};
  struct msg rep = {0};
  size_t bytes = 0;
  long n = 0;
  double t0 = clock_sec(), t;
  do {
    req.id = (uint64_t)n;
    CHECK(net_send_msg(c, NULL, &req, &e, err, sizeof(err)) == 0, "%s", err);
    CHECK(net_recv(c, in, 10000, err, sizeof(err)) == 0, "%s", err);
    CHECK(msg_decode(net_msg_frames(in), net_msg_nframes(in), &rep, err,
                     sizeof(err)) == 0,
          "%s", err);
    CHECK(rep.id == (uint64_t)n && rep.n == NKEYS, "id=%llu n=%u",
          (unsigned long long)rep.id, rep.n);
    bytes = 0;
    for (size_t i = 0; i < net_msg_nframes(in); i++)
      bytes += net_msg_frames(in)[i].len;
    n++;
    t = clock_sec();
  } while (t - t0 < g_secs);
  double per = (t - t0) / (double)n;
  printf("PULL round trip tcp     %7.1f us/pull   %6.2f GB/s  (reply; "
         "request %zu bytes)\n",
         per * 1e6, (double)bytes / per / 1e9, (size_t)NKEYS * 8);
  req = (struct msg){.op = MSG_SHUTDOWN, .id = 1};
  CHECK(net_send_msg(c, NULL, &req, &e, err, sizeof(err)) == 0, "%s", err);
  CHECK(net_recv(c, in, 10000, err, sizeof(err)) == 0, "%s", err);
  pthread_join(th, NULL);
  msg_deinit(&rep);
  msg_enc_deinit(&e);
  net_msg_free(in);
  net_sock_free(c);
  net_free(sv.net);
  pthread_mutex_destroy(&sv.mu);
  pthread_cond_destroy(&sv.cv);
}

int main(int argc, char **argv) {
  if (argc > 1)
    g_secs = atof(argv[1]);
  printf("PULL reply: %d keys, D=%d, every prefix full\n", NKEYS, D);
  codec(false);
  codec(true);
  over_tcp();
  size_t fixed = (size_t)NKEYS * (2 + 4 + 4 + 4 * D);
  size_t amtl = (size_t)NKEYS * (2 + 4 + 4 + 4 * (D / 4));
  printf("ragged vs padded at mean p = D/4: %zu vs %zu bytes (%.2fx)\n", amtl,
         fixed, (double)fixed / (double)amtl);
  return 0;
}
