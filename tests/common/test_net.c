/* net: a real ROUTER and DEALER over tcp://127.0.0.1 (ephemeral port), inproc
 * and CURVE; a serving thread answers PULLs and keeps serving after garbage;
 * timeouts and bind failures give the errors net.h promises. */
#include "common/net.h"

#include "common/check.h"
#include "common/msg.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define D 4           /* the toy server's embedding size */
#define WAIT_MS 10000 /* generous: a Debug ASan build on a busy machine */

/* A toy pserver: a thread that owns its ROUTER (rule 11: the socket stays
 * with the thread that made it) and answers until SHUTDOWN. */
struct server {
  struct net *net;
  const char *bind;
  const struct net_opts *opts;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int ready;          /* 1 bound, -1 failed */
  char endpoint[256]; /* as bound */
  char err[256];
  int served, malformed; /* counts, read after join */
  pthread_t thread;
};

static void reply_pull(struct net_sock *s, const struct net_peer *peer,
                       const struct msg *req, struct msg_enc *enc) {
  static uint16_t plen[64];
  static uint32_t count[64], clicks[64];
  static float vals[64 * D];
  CHECK(req->n <= 64, "n=%u", req->n);
  struct msg rep;
  msg_reply_to(&rep, req, 1);
  rep.n = req->n;
  rep.step = req->step;
  for (uint32_t i = 0; i < req->n; i++) {
    plen[i] = (uint16_t)(1 + req->keys[i] % D); /* ragged prefixes */
    count[i] = (uint32_t)req->keys[i];
    clicks[i] = (uint32_t)req->keys[i] / 2;
    for (int j = 0; j < plen[i]; j++)
      vals[rep.nvals + (uint32_t)j] = (float)req->keys[i] * 10 + (float)j;
    rep.nvals += plen[i];
  }
  rep.plen = plen;
  rep.count = count;
  rep.clicks = clicks;
  rep.vals = vals;
  char err[256];
  CHECK(net_send_msg(s, peer, &rep, enc, err, sizeof(err)) == 0, "%s", err);
}

static void *serve(void *arg) {
  struct server *sv = arg;
  struct net_sock *s =
      net_server_new(sv->net, sv->bind, sv->opts, sv->err, sizeof(sv->err));
  pthread_mutex_lock(&sv->mu);
  sv->ready = s ? 1 : -1;
  if (s)
    snprintf(sv->endpoint, sizeof(sv->endpoint), "%s", net_sock_endpoint(s));
  pthread_cond_signal(&sv->cv);
  pthread_mutex_unlock(&sv->mu);
  if (!s)
    return NULL;
  struct net_msg *in = net_msg_new();
  struct msg_enc enc;
  msg_enc_init(&enc);
  struct msg req = {0}, rep;
  char err[256];
  for (;;) {
    int rc = net_recv(s, in, WAIT_MS, err, sizeof(err));
    if (rc == NET_TIMEOUT)
      break; /* the test gave up: do not hang */
    if (rc == -1 && net_msg_peer(in)->len == 0)
      break;
    if (rc == -1 || msg_decode(net_msg_frames(in), net_msg_nframes(in), &req,
                               err, sizeof(err)) < 0) {
      /* Malformed: an ERROR echoing what could be read, and keep serving. */
      sv->malformed++;
      msg_error_to(&rep, rc == -1 ? NULL : &req, 1,
                   rc == -1 ? MSG_E_MALFORMED : (enum msg_err)req.code, err);
      CHECK(net_send_msg(s, net_msg_peer(in), &rep, &enc, err, sizeof(err)) ==
                0,
            "%s", err);
      continue;
    }
    sv->served++;
    if (req.op == MSG_PULL) {
      reply_pull(s, net_msg_peer(in), &req, &enc);
    } else {
      msg_reply_to(&rep, &req, 1);
      CHECK(net_send_msg(s, net_msg_peer(in), &rep, &enc, err, sizeof(err)) ==
                0,
            "%s", err);
      if (req.op == MSG_SHUTDOWN)
        break;
    }
  }
  msg_deinit(&req);
  msg_enc_deinit(&enc);
  net_msg_free(in);
  net_sock_free(s);
  return NULL;
}

static void server_start(struct server *sv, struct net *net, const char *bind,
                         const struct net_opts *opts) {
  memset(sv, 0, sizeof(*sv));
  sv->net = net;
  sv->bind = bind;
  sv->opts = opts;
  pthread_mutex_init(&sv->mu, NULL);
  pthread_cond_init(&sv->cv, NULL);
  assert_int_equal(pthread_create(&sv->thread, NULL, serve, sv), 0);
  pthread_mutex_lock(&sv->mu);
  while (!sv->ready)
    pthread_cond_wait(&sv->cv, &sv->mu);
  pthread_mutex_unlock(&sv->mu);
  if (sv->ready < 0)
    fail_msg("server did not start: %s", sv->err);
}

static void server_join(struct server *sv) {
  pthread_join(sv->thread, NULL);
  pthread_mutex_destroy(&sv->mu);
  pthread_cond_destroy(&sv->cv);
}

/* Sends a PULL of keys and checks the toy server's reply exactly. */
static void pull_and_check(struct net_sock *c, struct net_msg *in,
                           uint64_t id) {
  static const uint64_t keys[] = {5, 6, 7, 1000003};
  struct msg req = {.op = MSG_PULL,
                    .id = id,
                    .from = 0,
                    .table = 3,
                    .n = 4,
                    .step = 11,
                    .keys = keys};
  struct msg_enc enc;
  msg_enc_init(&enc);
  char err[256];
  assert_int_equal(net_send_msg(c, NULL, &req, &enc, err, sizeof(err)), 0);
  msg_enc_deinit(&enc);
  int rc = net_recv(c, in, WAIT_MS, err, sizeof(err));
  if (rc)
    fail_msg("no reply: %s", err);
  struct msg rep = {0};
  if (msg_decode(net_msg_frames(in), net_msg_nframes(in), &rep, err,
                 sizeof(err)))
    fail_msg("reply does not decode: %s", err);
  assert_int_equal(rep.op, MSG_PULL);
  assert_true(rep.reply);
  assert_int_equal(rep.id, id);
  assert_int_equal(rep.from, 1);
  assert_int_equal(rep.table, 3);
  assert_int_equal(rep.n, 4);
  assert_int_equal(rep.step, 11);
  uint32_t at = 0;
  for (int i = 0; i < 4; i++) {
    assert_int_equal(rep.plen[i], 1 + keys[i] % D);
    assert_int_equal(rep.count[i], (uint32_t)keys[i]);
    assert_int_equal(rep.clicks[i], (uint32_t)keys[i] / 2);
    for (int j = 0; j < rep.plen[i]; j++)
      assert_true(rep.vals[at + (uint32_t)j] == (float)keys[i] * 10 + (float)j);
    at += rep.plen[i];
  }
  assert_int_equal(rep.nvals, at);
  msg_deinit(&rep);
}

static void simple(struct net_sock *c, struct net_msg *in, uint8_t op,
                   uint64_t id) {
  struct msg req = {.op = op, .id = id, .step = 1};
  struct msg_enc enc;
  msg_enc_init(&enc);
  char err[256];
  assert_int_equal(net_send_msg(c, NULL, &req, &enc, err, sizeof(err)), 0);
  msg_enc_deinit(&enc);
  if (net_recv(c, in, WAIT_MS, err, sizeof(err)))
    fail_msg("no reply to %s: %s", msg_op_name(op), err);
  struct msg rep = {0};
  assert_int_equal(msg_decode(net_msg_frames(in), net_msg_nframes(in), &rep,
                              err, sizeof(err)),
                   0);
  assert_int_equal(rep.op, op);
  assert_true(rep.reply);
  assert_int_equal(rep.id, id);
  msg_deinit(&rep);
}

/* The whole conversation: PULLs, garbage (ERROR reply, server goes on),
 * a barrier, and SHUTDOWN. */
static void conversation(const char *bind, const struct net_opts *sopts,
                         const struct net_opts *copts) {
  char err[256];
  struct net *net = net_new(err, sizeof(err));
  assert_non_null(net);
  struct server sv;
  server_start(&sv, net, bind, sopts);
  const char *eps[] = {sv.endpoint};
  struct net_sock *c = net_client_new(net, eps, 1, copts, err, sizeof(err));
  if (!c)
    fail_msg("client: %s", err);
  assert_string_equal(net_sock_endpoint(c), sv.endpoint);
  struct net_msg *in = net_msg_new();

  pull_and_check(c, in, 100);
  /* Garbage: the server answers ERROR and keeps serving. */
  static const uint8_t junk[] = {0x91, 0x01};
  struct msg_frame f = {junk, sizeof(junk)};
  assert_int_equal(net_send(c, NULL, &f, 1, err, sizeof(err)), 0);
  assert_int_equal(net_recv(c, in, WAIT_MS, err, sizeof(err)), 0);
  struct msg rep = {0};
  assert_int_equal(msg_decode(net_msg_frames(in), net_msg_nframes(in), &rep,
                              err, sizeof(err)),
                   0);
  assert_int_equal(rep.op, MSG_ERROR);
  assert_int_equal(rep.code, MSG_E_MALFORMED);
  assert_non_null(strstr(rep.text, "not a msgpack map"));
  msg_deinit(&rep);
  /* Too many frames: discarded by net_recv, still answered. */
  struct msg_frame many[NET_MAX_FRAMES + 3];
  for (size_t i = 0; i < ARRAY_LEN(many); i++)
    many[i] = f;
  assert_int_equal(net_send(c, NULL, many, ARRAY_LEN(many), err, sizeof(err)),
                   0);
  assert_int_equal(net_recv(c, in, WAIT_MS, err, sizeof(err)), 0);
  assert_int_equal(msg_decode(net_msg_frames(in), net_msg_nframes(in), &rep,
                              err, sizeof(err)),
                   0);
  assert_int_equal(rep.op, MSG_ERROR);
  assert_non_null(strstr(rep.text, "a message of 19 frames"));
  msg_deinit(&rep);

  pull_and_check(c, in, 101);
  simple(c, in, MSG_BARRIER, 102);
  simple(c, in, MSG_SHUTDOWN, 103);
  server_join(&sv);
  assert_int_equal(sv.served, 4);
  assert_int_equal(sv.malformed, 2);
  net_msg_free(in);
  net_sock_free(c);
  net_free(net);
}

static void test_tcp(void **state) {
  (void)state;
  conversation("tcp://127.0.0.1:*", NULL, NULL);
}

static void test_inproc(void **state) {
  (void)state;
  conversation("inproc://maskps-test-net", NULL, NULL);
}

static void test_curve(void **state) {
  (void)state;
  struct net_keypair skp, ckp, back;
  char err[256];
  assert_int_equal(net_keypair_new(&skp, err, sizeof(err)), 0);
  assert_int_equal(net_keypair_new(&ckp, err, sizeof(err)), 0);
  assert_int_equal(strlen(skp.pub), NET_KEY_LEN);
  assert_string_not_equal(skp.pub, ckp.pub);
  memcpy(back.sec, skp.sec, sizeof(back.sec));
  assert_int_equal(net_keypair_from_secret(&back, err, sizeof(err)), 0);
  assert_string_equal(back.pub, skp.pub);
  strcpy(back.sec, "short");
  assert_int_equal(net_keypair_from_secret(&back, err, sizeof(err)), -1);

  struct net_opts so = {.curve_self = &skp};
  struct net_opts co = {.curve_self = &ckp, .curve_server_pub = skp.pub};
  conversation("tcp://127.0.0.1:*", &so, &co);
  /* A client without its own keypair gets an ephemeral one. */
  struct net_opts co2 = {.curve_server_pub = skp.pub};
  conversation("tcp://127.0.0.1:*", &so, &co2);
}

/* A server with a list of client keys admits the listed client and no
 * other, even one that knows the server's key. */
static void test_curve_client_list(void **state) {
  (void)state;
  struct net_keypair skp, good, bad;
  char err[256];
  assert_int_equal(net_keypair_new(&skp, err, sizeof(err)), 0);
  assert_int_equal(net_keypair_new(&good, err, sizeof(err)), 0);
  assert_int_equal(net_keypair_new(&bad, err, sizeof(err)), 0);
  const char *allowed[] = {good.pub};
  struct net_opts so = {
      .curve_self = &skp, .curve_clients = allowed, .ncurve_clients = 1};
  struct net_opts co = {.curve_self = &good, .curve_server_pub = skp.pub};
  conversation("tcp://127.0.0.1:*", &so, &co);

  struct net *net = net_new(err, sizeof(err));
  struct net_sock *s =
      net_server_new(net, "tcp://127.0.0.1:*", &so, err, sizeof(err));
  assert_non_null(s);
  const char *eps[] = {net_sock_endpoint(s)};
  struct net_opts bo = {.curve_self = &bad, .curve_server_pub = skp.pub};
  struct net_sock *c = net_client_new(net, eps, 1, &bo, err, sizeof(err));
  assert_non_null(c);
  static const uint8_t b[] = {0x80};
  struct msg_frame f = {b, 1};
  assert_int_equal(net_send(c, NULL, &f, 1, err, sizeof(err)), 0);
  struct net_msg *in = net_msg_new();
  assert_int_equal(net_recv(s, in, 500, err, sizeof(err)), NET_TIMEOUT);
  /* The listed client still gets in, on the same server. */
  struct net_sock *g = net_client_new(net, eps, 1, &co, err, sizeof(err));
  assert_int_equal(net_send(g, NULL, &f, 1, err, sizeof(err)), 0);
  assert_int_equal(net_recv(s, in, WAIT_MS, err, sizeof(err)), 0);
  assert_int_equal(net_msg_nframes(in), 1);
  assert_int_equal(net_msg_frames(in)[0].len, 1);
  /* A malformed key in the list is refused up front. */
  const char *junk[] = {"not a key"};
  struct net_opts jo = {
      .curve_self = &skp, .curve_clients = junk, .ncurve_clients = 1};
  assert_null(net_server_new(net, "tcp://127.0.0.1:*", &jo, err, sizeof(err)));
  assert_non_null(strstr(err, "client key 0"));
  net_msg_free(in);
  net_sock_free(g);
  net_sock_free(c);
  net_sock_free(s);
  net_free(net);
}

/* A client that trusts the wrong server key never completes the handshake:
 * its request is never delivered (no plaintext fallback), and it gets no
 * reply. */
static void test_curve_wrong_key(void **state) {
  (void)state;
  struct net_keypair skp, other;
  char err[256];
  assert_int_equal(net_keypair_new(&skp, err, sizeof(err)), 0);
  assert_int_equal(net_keypair_new(&other, err, sizeof(err)), 0);
  struct net *net = net_new(err, sizeof(err));
  struct net_opts so = {.curve_self = &skp};
  struct net_sock *s =
      net_server_new(net, "tcp://127.0.0.1:*", &so, err, sizeof(err));
  assert_non_null(s);
  const char *eps[] = {net_sock_endpoint(s)};
  struct net_opts co = {.curve_server_pub = other.pub};
  struct net_sock *c = net_client_new(net, eps, 1, &co, err, sizeof(err));
  assert_non_null(c);
  struct net_opts plain = {0};
  struct net_sock *p = net_client_new(net, eps, 1, &plain, err, sizeof(err));
  assert_non_null(p);
  static const uint8_t b[] = {0x80};
  struct msg_frame f = {b, 1};
  /* Both requests are queued; neither may arrive. */
  assert_int_equal(net_send(c, NULL, &f, 1, err, sizeof(err)), 0);
  assert_int_equal(net_send(p, NULL, &f, 1, err, sizeof(err)), 0);
  struct net_msg *in = net_msg_new();
  assert_int_equal(net_recv(s, in, 500, err, sizeof(err)), NET_TIMEOUT);
  assert_non_null(strstr(err, "timed out"));
  /* CURVE options that are incomplete are refused up front. */
  struct net_opts half = {.curve_server_pub = "tooshort"};
  assert_null(net_client_new(net, eps, 1, &half, err, sizeof(err)));
  assert_non_null(strstr(err, "Z85"));
  assert_null(net_server_new(net, "tcp://127.0.0.1:*",
                             &(struct net_opts){.curve_server_pub = skp.pub},
                             err, sizeof(err)));
  assert_non_null(strstr(err, "needs its own keypair"));
  net_msg_free(in);
  net_sock_free(p);
  net_sock_free(c);
  net_sock_free(s);
  net_free(net);
}

static void test_receive_timeout(void **state) {
  (void)state;
  char err[256];
  struct net *net = net_new(err, sizeof(err));
  struct net_sock *s =
      net_server_new(net, "tcp://127.0.0.1:*", NULL, err, sizeof(err));
  assert_non_null(s);
  const char *eps[] = {net_sock_endpoint(s)};
  struct net_sock *c = net_client_new(net, eps, 1, NULL, err, sizeof(err));
  assert_non_null(c);
  struct net_msg *in = net_msg_new();
  uint64_t t0 = clock_ns();
  assert_int_equal(net_recv(c, in, 150, err, sizeof(err)), NET_TIMEOUT);
  double ms = (double)(clock_ns() - t0) / 1e6;
  assert_true(ms >= 140 && ms < 5000);
  assert_non_null(strstr(err, "timed out after 150 ms"));
  assert_non_null(strstr(err, eps[0]));
  /* Polling (timeout 0) on an empty socket returns at once. */
  assert_int_equal(net_recv(s, in, 0, err, sizeof(err)), NET_TIMEOUT);
  /* Replying to a peer that never connected is an error, not a silent
   * drop. */
  struct net_peer ghost = {.id = {0, 1, 2, 3, 4}, .len = 5};
  static const uint8_t b[] = {0x80};
  struct msg_frame f = {b, 1};
  assert_int_equal(net_send(s, &ghost, &f, 1, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "peer not connected"));
  net_msg_free(in);
  net_sock_free(c);
  net_sock_free(s);
  net_free(net);
}

/* A client whose server is not there: requests queue up to the high-water
 * mark, then net_send times out with a message saying why. Port 1 on the
 * loopback has no listener. */
static void test_send_queue_full(void **state) {
  (void)state;
  char err[256];
  struct net *net = net_new(err, sizeof(err));
  const char *eps[] = {"tcp://127.0.0.1:1"};
  struct net_opts o = {.send_timeout_ms = 100, .hwm = 2};
  struct net_sock *c = net_client_new(net, eps, 1, &o, err, sizeof(err));
  assert_non_null(c);
  static const uint8_t b[] = {0x80};
  struct msg_frame f = {b, 1};
  int rc = 0, sent = 0;
  while (sent < 50 && (rc = net_send(c, NULL, &f, 1, err, sizeof(err))) == 0)
    sent++;
  assert_int_equal(rc, NET_TIMEOUT);
  assert_true(sent >= 1 && sent < 50);
  assert_non_null(strstr(err, "queue full"));
  assert_non_null(strstr(err, eps[0]));
  net_sock_free(c);
  net_free(net);
}

/* A worker may start before its pserver: a request sent before the bind is
 * delivered once the server is up. */
static void test_server_starts_late(void **state) {
  (void)state;
  char err[256];
  struct net *net = net_new(err, sizeof(err));
  const char *eps[] = {"inproc://maskps-late"};
  struct net_sock *c = net_client_new(net, eps, 1, NULL, err, sizeof(err));
  assert_non_null(c);
  struct msg req = {.op = MSG_BARRIER, .id = 9, .step = 4};
  struct msg_enc enc;
  msg_enc_init(&enc);
  assert_int_equal(net_send_msg(c, NULL, &req, &enc, err, sizeof(err)), 0);
  msg_enc_deinit(&enc);
  struct server sv;
  server_start(&sv, net, eps[0], NULL);
  struct net_msg *in = net_msg_new();
  assert_int_equal(net_recv(c, in, WAIT_MS, err, sizeof(err)), 0);
  struct msg rep = {0};
  assert_int_equal(msg_decode(net_msg_frames(in), net_msg_nframes(in), &rep,
                              err, sizeof(err)),
                   0);
  assert_int_equal(rep.op, MSG_BARRIER);
  assert_int_equal(rep.id, 9);
  msg_deinit(&rep);
  simple(c, in, MSG_SHUTDOWN, 10);
  server_join(&sv);
  assert_int_equal(sv.served, 2);
  net_msg_free(in);
  net_sock_free(c);
  net_free(net);
}

static void test_bind_errors(void **state) {
  (void)state;
  char err[256];
  struct net *net = net_new(err, sizeof(err));
  struct net_sock *s =
      net_server_new(net, "tcp://127.0.0.1:*", NULL, err, sizeof(err));
  assert_non_null(s);
  const char *ep = net_sock_endpoint(s);
  assert_true(strncmp(ep, "tcp://127.0.0.1:", 16) == 0);
  assert_true(atoi(ep + 16) > 0);
  /* The same port twice. */
  assert_null(net_server_new(net, ep, NULL, err, sizeof(err)));
  assert_non_null(strstr(err, "address already in use"));
  assert_non_null(strstr(err, ep));
  /* The same inproc name twice. */
  struct net_sock *a =
      net_server_new(net, "inproc://maskps-twice", NULL, err, sizeof(err));
  assert_non_null(a);
  assert_null(
      net_server_new(net, "inproc://maskps-twice", NULL, err, sizeof(err)));
  assert_non_null(strstr(err, "address already in use"));
  /* Malformed endpoints. */
  assert_null(net_server_new(net, "tcp://127.0.0.1", NULL, err, sizeof(err)));
  assert_non_null(strstr(err, "invalid endpoint"));
  assert_null(net_server_new(net, "bogus://x", NULL, err, sizeof(err)));
  assert_non_null(strstr(err, "transport not supported"));
  assert_non_null(strstr(err, "bogus://x"));
  assert_null(
      net_server_new(net, "tcp://192.0.2.1:5555", NULL, err, sizeof(err)));
  assert_non_null(strstr(err, "not available on this host"));
  const char *bad[] = {"tcp://127.0.0.1"};
  assert_null(net_client_new(net, bad, 1, NULL, err, sizeof(err)));
  assert_non_null(strstr(err, "cannot connect to tcp://127.0.0.1"));
  net_sock_free(a);
  net_sock_free(s);
  net_free(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tcp),
      cmocka_unit_test(test_inproc),
      cmocka_unit_test(test_curve),
      cmocka_unit_test(test_curve_client_list),
      cmocka_unit_test(test_curve_wrong_key),
      cmocka_unit_test(test_receive_timeout),
      cmocka_unit_test(test_send_queue_full),
      cmocka_unit_test(test_server_starts_late),
      cmocka_unit_test(test_bind_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
