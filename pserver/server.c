/* server: the pserver's serving loop (see server.h). */
#include "pserver/server.h"

#include "common/check.h"
#include "common/keys.h"
#include "common/msg.h"
#include "common/ps.h"
#include "pserver/ps_local.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Latency histogram: bucket b holds latencies l (us) with
 * floor(4 log2(1 + l)) == b, so a bucket spans a quarter octave. */
#define LAT_BUCKETS 128
struct lat {
  uint64_t b[LAT_BUCKETS];
  uint64_t n;
};

static void lat_add(struct lat *h, uint64_t ns) {
  double us = (double)ns / 1e3;
  int b = (int)(4.0 * log2(1.0 + us));
  if (b >= LAT_BUCKETS)
    b = LAT_BUCKETS - 1;
  h->b[b < 0 ? 0 : b]++;
  h->n++;
}

/* The q-quantile in us: the middle of the bucket that holds it. */
static double lat_quantile(const struct lat *h, double q) {
  if (h->n == 0)
    return 0;
  uint64_t want = (uint64_t)ceil(q * (double)h->n), acc = 0;
  if (want == 0)
    want = 1;
  for (int b = 0; b < LAT_BUCKETS; b++) {
    acc += h->b[b];
    if (acc >= want)
      return exp2((b + 0.5) / 4.0) - 1.0;
  }
  return exp2(LAT_BUCKETS / 4.0) - 1.0;
}

/* A worker waiting at a barrier. */
struct waiter {
  struct net_peer peer;
  uint64_t id;
  uint32_t from;
  uint64_t step;
};

/* A push held in sync mode (workers > 1) until its step's barrier: owned
 * copies of the request's arrays. */
struct held {
  uint8_t op;     /* MSG_PUSH or MSG_PUSH_DENSE */
  uint32_t from;  /* worker rank: the order of the sum */
  uint64_t seq;   /* arrival order, to keep one rank's pushes in order */
  uint64_t step;  /* the worker's step */
  uint32_t table; /* PUSH */
  uint32_t n;     /* PUSH: keys */
  uint64_t off;   /* PUSH_DENSE: offset in the whole dense vector */
  uint32_t nvals; /* floats in vals */
  uint64_t *keys;
  uint16_t *glen, *plen;
  uint32_t *count, *clicks;
  float *vals;
  size_t *goff; /* [n + 1] PUSH: key i's gradients start at vals + goff[i] */
};

struct done {
  uint32_t from;
  uint64_t id;
  uint8_t op;
  bool used;
};

struct server {
  struct net *net;
  struct net_sock *sock;
  struct net_msg *in;
  struct msg_enc enc;
  struct msg req;
  struct store *store;
  struct logger *log;
  uint32_t rank, S, W;
  bool hold; /* sync mode with W > 1: pushes wait for the barrier */
  struct held *held;
  size_t nheld, capheld;
  uint64_t held_seq;
  uint64_t dense_off, dense_len; /* this shard's block of the dense vector */
  struct store_table *tables;
  size_t ntables;
  int poll_ms;
  /* Reply buffers, grown to the largest request seen. */
  uint16_t *plen;
  uint32_t *count, *clicks;
  size_t cap_keys;
  float *vals;
  size_t cap_vals;
  /* Barrier: waiters of the step being gathered. */
  struct waiter *wait;
  size_t nwait, capwait;
  uint64_t released; /* largest step released so far */
  bool any_released;
  /* Recent pushes, for retried requests. */
  struct done done[SERVER_DEDUP];
  unsigned done_pos;
  /* Counters. */
  uint64_t step; /* largest step of a request seen */
  uint64_t requests[MSG_OP_COUNT_];
  uint64_t errors, malformed, dropped;
  struct lat pull_lat, push_lat;
  int shutdown;
  double stats_every_s;
  uint64_t logged_requests; /* requests counted at the last record */
  char err[1024];
};

/* ---- replies ------------------------------------------------------------ */

static void send_to(struct server *srv, const struct net_peer *peer,
                    const struct msg *m) {
  char e[512];
  int rc = net_send_msg(srv->sock, peer, m, &srv->enc, e, sizeof(e));
  if (rc != 0)
    logger_debug(srv->log, "pserver %u: reply %s id %llu not sent: %s",
                 srv->rank, msg_op_name(m->op), (unsigned long long)m->id, e);
}

/* An ERROR reply to the request being handled (req may be the partly
 * decoded one). */
static void send_error(struct server *srv, const struct net_peer *peer,
                       const struct msg *req, enum msg_err code,
                       const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void send_error(struct server *srv, const struct net_peer *peer,
                       const struct msg *req, enum msg_err code,
                       const char *fmt, ...) {
  char text[MSG_MAX_ERRTEXT];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  srv->errors++;
  struct msg rep;
  msg_error_to(&rep, req, srv->rank, code, text);
  send_to(srv, peer, &rep);
}

/* Answers req with the store's failure, whose text is in srv->err. */
static void store_failed(struct server *srv, const struct net_peer *peer,
                         const struct msg *req) {
  send_error(srv, peer, req, MSG_E_STORE, "pserver %u: %s", srv->rank,
             srv->err);
}

static void grow(struct server *srv, size_t keys, size_t vals) {
  if (keys > srv->cap_keys) {
    srv->cap_keys = keys;
    srv->plen = xrealloc(srv->plen, keys * sizeof(uint16_t));
    srv->count = xrealloc(srv->count, keys * sizeof(uint32_t));
    srv->clicks = xrealloc(srv->clicks, keys * sizeof(uint32_t));
  }
  if (vals > srv->cap_vals) {
    srv->cap_vals = vals;
    srv->vals = xrealloc(srv->vals, vals * sizeof(float));
  }
}

/* ---- request handlers --------------------------------------------------- */

/* The request's table, or NULL after an ERROR reply. */
static const struct store_table *table_of(struct server *srv,
                                          const struct net_peer *peer,
                                          const struct msg *req) {
  const struct store_table *t =
      ps_local_table(srv->tables, srv->ntables, req->table);
  if (!t)
    send_error(srv, peer, req, MSG_E_UNKNOWN_TABLE,
               "pserver %u: unknown table %u (%zu tables served)", srv->rank,
               req->table, srv->ntables);
  return t;
}

/* 0 if every key belongs to this shard, else -1 after an ERROR reply: a
 * client with another shard count would otherwise create rows where no
 * pull of the right client ever looks. */
static int check_shard(struct server *srv, const struct net_peer *peer,
                       const struct msg *req) {
  if (srv->S == 1)
    return 0;
  for (uint32_t i = 0; i < req->n; i++) {
    uint32_t s = keys_shard(req->keys[i], srv->S);
    if (s != srv->rank) {
      send_error(srv, peer, req, MSG_E_RANGE,
                 "pserver %u of %u: key 0x%016llx belongs to shard %u "
                 "(does the worker use the same number of pservers?)",
                 srv->rank, srv->S, (unsigned long long)req->keys[i], s);
      return -1;
    }
  }
  return 0;
}

static void on_pull(struct server *srv, const struct net_peer *peer,
                    const struct msg *req) {
  uint64_t t0 = clock_ns();
  const struct store_table *t = table_of(srv, peer, req);
  if (!t || check_shard(srv, peer, req) < 0)
    return;
  if ((uint64_t)req->n * t->dim > MSG_MAX_FLOATS) {
    send_error(srv, peer, req, MSG_E_RANGE,
               "pserver %u: a pull of %u keys of dim %u could return more "
               "than %u floats; split it",
               srv->rank, req->n, t->dim, MSG_MAX_FLOATS);
    return;
  }
  grow(srv, req->n, (size_t)req->n * t->dim);
  long total = ps_local_shard_pull(srv->store, t, req->n, req->keys, srv->plen,
                                   srv->count, srv->clicks, srv->vals, srv->err,
                                   sizeof(srv->err));
  if (total < 0) {
    store_failed(srv, peer, req);
    return;
  }
  struct msg rep;
  msg_reply_to(&rep, req, srv->rank);
  rep.n = req->n;
  rep.nvals = (uint32_t)total;
  rep.step = srv->step;
  rep.plen = srv->plen;
  rep.count = srv->count;
  rep.clicks = srv->clicks;
  rep.vals = srv->vals;
  send_to(srv, peer, &rep);
  lat_add(&srv->pull_lat, clock_ns() - t0);
}

static bool seen_push(struct server *srv, const struct msg *req) {
  for (unsigned i = 0; i < SERVER_DEDUP; i++) {
    const struct done *d = &srv->done[i];
    if (d->used && d->id == req->id && d->from == req->from && d->op == req->op)
      return true;
  }
  return false;
}

static void note_push(struct server *srv, const struct msg *req) {
  struct done *d = &srv->done[srv->done_pos++ % SERVER_DEDUP];
  d->used = true;
  d->id = req->id;
  d->from = req->from;
  d->op = req->op;
}

static void ack(struct server *srv, const struct net_peer *peer,
                const struct msg *req) {
  struct msg rep;
  msg_reply_to(&rep, req, srv->rank);
  rep.step = srv->step;
  if (req->op == MSG_PUSH) {
    rep.n = req->n;
  } else if (req->op == MSG_PUSH_DENSE || req->op == MSG_PULL_DENSE) {
    rep.off = req->off;
    rep.nvals = req->nvals;
  }
  send_to(srv, peer, &rep);
}

/* The end of a push (sparse or dense) that was applied or held: the
 * shard's step catches up with the pusher's, the push is remembered so
 * that a resend is only acknowledged, and the pusher gets its ack. */
static void push_applied(struct server *srv, const struct net_peer *peer,
                         const struct msg *req) {
  if (req->step > srv->step)
    srv->step = req->step;
  note_push(srv, req);
  ack(srv, peer, req);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The checks the store would make, made when a push is held so that its
 * sender hears of a bad push (and not the whole step at the barrier).
 * Returns 0, or -1 after an ERROR reply. */
static int check_push(struct server *srv, const struct net_peer *peer,
                      const struct msg *req, const struct store_table *t) {
  for (uint32_t i = 0; i < req->n; i++) {
    unsigned p = req->plen[i];
    if (req->glen[i] > t->dim || p > t->dim ||
        (!t->amtl && p != 0 && p != t->dim)) {
      send_error(srv, peer, req, MSG_E_RANGE,
                 "pserver %u: table %u (dim %u%s) key 0x%016llx: glen %u, "
                 "plen %u out of range",
                 srv->rank, t->id, t->dim, t->amtl ? ", amtl" : "",
                 (unsigned long long)req->keys[i], req->glen[i], p);
      return -1;
    }
  }
  uint64_t *sorted = xmalloc((req->n ? req->n : 1) * sizeof(uint64_t));
  memcpy(sorted, req->keys, req->n * sizeof(uint64_t));
  qsort(sorted, req->n, sizeof(uint64_t), cmp_u64);
  int rc = 0;
  for (uint32_t i = 1; i < req->n && rc == 0; i++)
    if (sorted[i] == sorted[i - 1]) {
      send_error(srv, peer, req, MSG_E_RANGE,
                 "pserver %u: table %u: key 0x%016llx appears twice in one "
                 "push (sum its gradients first)",
                 srv->rank, t->id, (unsigned long long)sorted[i]);
      rc = -1;
    }
  free(sorted);
  return rc;
}

static void *dup_array(const void *p, size_t bytes) {
  void *q = xmalloc(bytes ? bytes : 1);
  if (bytes)
    memcpy(q, p, bytes);
  return q;
}

/* Keeps a copy of req until its step's barrier. */
static void hold(struct server *srv, const struct msg *req) {
  if (srv->nheld == srv->capheld) {
    srv->capheld = srv->capheld ? 2 * srv->capheld : 16;
    srv->held = xrealloc(srv->held, srv->capheld * sizeof(*srv->held));
  }
  struct held *h = &srv->held[srv->nheld++];
  memset(h, 0, sizeof(*h));
  h->op = req->op;
  h->from = req->from;
  h->seq = srv->held_seq++;
  h->step = req->step;
  h->table = req->table;
  h->n = req->n;
  h->off = req->off;
  h->nvals = req->nvals;
  h->vals = dup_array(req->vals, req->nvals * sizeof(float));
  if (req->op == MSG_PUSH) {
    h->keys = dup_array(req->keys, req->n * sizeof(uint64_t));
    h->glen = dup_array(req->glen, req->n * sizeof(uint16_t));
    h->plen = dup_array(req->plen, req->n * sizeof(uint16_t));
    h->count = dup_array(req->count, req->n * sizeof(uint32_t));
    h->clicks = dup_array(req->clicks, req->n * sizeof(uint32_t));
    h->goff = xmalloc((req->n + 1) * sizeof(size_t));
    h->goff[0] = 0;
    for (uint32_t i = 0; i < req->n; i++)
      h->goff[i + 1] = h->goff[i] + req->glen[i];
  }
}

static void held_clear(struct server *srv) {
  for (size_t i = 0; i < srv->nheld; i++) {
    struct held *h = &srv->held[i];
    free(h->keys);
    free(h->glen);
    free(h->plen);
    free(h->count);
    free(h->clicks);
    free(h->vals);
    free(h->goff);
  }
  srv->nheld = 0;
}

/* One key's contribution from one held push, for sorting. */
struct contrib {
  uint64_t key;
  uint32_t from;
  uint64_t seq;
  const struct held *h;
  uint32_t i; /* index of the key in h */
};

static int cmp_contrib(const void *a, const void *b) {
  const struct contrib *x = a, *y = b;
  if (x->key != y->key)
    return x->key < y->key ? -1 : 1;
  if (x->from != y->from)
    return x->from < y->from ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static uint32_t sat32(uint64_t x) {
  return x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
}

/* Sums the held pushes of table t per key in (rank, arrival) order and
 * applies them as one push. Returns 0 or -1 with srv->err set. */
static int apply_table(struct server *srv, const struct store_table *t,
                       uint64_t step) {
  size_t m = 0;
  for (size_t k = 0; k < srv->nheld; k++)
    if (srv->held[k].op == MSG_PUSH && srv->held[k].table == t->id)
      m += srv->held[k].n;
  if (m == 0)
    return 0;
  struct contrib *c = xmalloc(m * sizeof(*c));
  size_t at = 0;
  for (size_t k = 0; k < srv->nheld; k++) {
    const struct held *h = &srv->held[k];
    if (h->op != MSG_PUSH || h->table != t->id)
      continue;
    for (uint32_t i = 0; i < h->n; i++)
      c[at++] = (struct contrib){h->keys[i], h->from, h->seq, h, i};
  }
  qsort(c, m, sizeof(*c), cmp_contrib);
  uint64_t *keys = xmalloc(m * sizeof(uint64_t));
  uint16_t *glen = xmalloc(m * sizeof(uint16_t));
  uint16_t *plen = xmalloc(m * sizeof(uint16_t));
  uint32_t *count = xmalloc(m * sizeof(uint32_t));
  uint32_t *clicks = xmalloc(m * sizeof(uint32_t));
  float *g = xmalloc(m * t->dim * sizeof(float));
  size_t n = 0, f = 0;
  for (size_t a = 0; a < m;) {
    size_t b = a;
    unsigned gl = 0, pl = 0;
    uint64_t cnt = 0, clk = 0;
    while (b < m && c[b].key == c[a].key) {
      const struct held *h = c[b].h;
      uint32_t i = c[b].i;
      gl = h->glen[i] > gl ? h->glen[i] : gl;
      pl = h->plen[i] > pl ? h->plen[i] : pl;
      cnt += h->count[i];
      clk += h->clicks[i];
      b++;
    }
    /* Entry e is the sum, in (rank, arrival) order, of the contributions
     * that have it; the first one is copied, not added to 0, so a key that
     * one worker pushed gets that worker's gradient bit for bit. Entries
     * nobody sent (past every glen) are 0. */
    float *acc = g + f;
    memset(acc, 0, gl * sizeof(float));
    unsigned covered = 0;
    for (size_t j = a; j < b; j++) {
      const struct held *h = c[j].h;
      const float *src = h->vals + h->goff[c[j].i];
      unsigned len = h->glen[c[j].i];
      for (unsigned e = 0; e < len; e++)
        acc[e] = e >= covered ? src[e] : acc[e] + src[e];
      covered = len > covered ? len : covered;
    }
    keys[n] = c[a].key;
    glen[n] = (uint16_t)gl;
    plen[n] = (uint16_t)pl;
    count[n] = sat32(cnt);
    clicks[n] = sat32(clk);
    f += gl;
    n++;
    a = b;
  }
  int rc = ps_local_shard_push(srv->store, t, n, keys, glen, g, plen, count,
                               clicks, step, srv->err, sizeof(srv->err));
  free(c);
  free(keys);
  free(glen);
  free(plen);
  free(count);
  free(clicks);
  free(g);
  return rc;
}

static int cmp_held_order(const void *a, const void *b) {
  const struct held *x = *(const struct held *const *)a;
  const struct held *y = *(const struct held *const *)b;
  if (x->from != y->from)
    return x->from < y->from ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sums the held dense pushes per float in (rank, arrival) order and applies
 * one Adam step to each contiguous run of pushed floats. */
static int apply_dense(struct server *srv) {
  size_t nd = 0;
  for (size_t k = 0; k < srv->nheld; k++)
    nd += srv->held[k].op == MSG_PUSH_DENSE;
  if (nd == 0)
    return 0;
  const struct held **order = xmalloc(nd * sizeof(*order));
  nd = 0;
  for (size_t k = 0; k < srv->nheld; k++)
    if (srv->held[k].op == MSG_PUSH_DENSE)
      order[nd++] = &srv->held[k];
  qsort(order, nd, sizeof(*order), cmp_held_order);
  size_t L = (size_t)srv->dense_len;
  float *acc = xcalloc(L ? L : 1, sizeof(float));
  uint8_t *touched = xcalloc(L ? L : 1, 1);
  for (size_t k = 0; k < nd; k++) {
    const struct held *h = order[k];
    size_t base = (size_t)(h->off - srv->dense_off);
    for (uint32_t e = 0; e < h->nvals; e++) {
      acc[base + e] =
          touched[base + e] ? acc[base + e] + h->vals[e] : h->vals[e];
      touched[base + e] = 1;
    }
  }
  int rc = 0;
  for (size_t a = 0; a < L && rc == 0;) {
    if (!touched[a]) {
      a++;
      continue;
    }
    size_t b = a;
    while (b < L && touched[b])
      b++;
    rc = store_dense_push(srv->store, a, b - a, acc + a, srv->err,
                          sizeof(srv->err));
    a = b;
  }
  free(order);
  free(acc);
  free(touched);
  return rc;
}

/* Applies every held push (the step is complete). Returns 0 or -1 with
 * srv->err set; the held pushes are dropped either way. */
static int apply_held(struct server *srv, uint64_t step) {
  int rc = 0;
  for (size_t i = 0; i < srv->ntables && rc == 0; i++)
    rc = apply_table(srv, &srv->tables[i], step);
  if (rc == 0)
    rc = apply_dense(srv);
  held_clear(srv);
  return rc;
}

static void on_push(struct server *srv, const struct net_peer *peer,
                    const struct msg *req) {
  uint64_t t0 = clock_ns();
  if (seen_push(srv, req)) {
    ack(srv, peer, req);
    return;
  }
  const struct store_table *t = table_of(srv, peer, req);
  if (!t || check_shard(srv, peer, req) < 0)
    return;
  if (srv->hold) {
    if (check_push(srv, peer, req, t) < 0)
      return;
    hold(srv, req);
  } else if (ps_local_shard_push(srv->store, t, req->n, req->keys, req->glen,
                                 req->vals, req->plen, req->count, req->clicks,
                                 req->step, srv->err, sizeof(srv->err)) < 0) {
    store_failed(srv, peer, req);
    return;
  }
  push_applied(srv, peer, req);
  lat_add(&srv->push_lat, clock_ns() - t0);
}

/* 0 if [off, off + nvals) lies in this shard's dense block, else -1 after
 * an ERROR reply. */
static int dense_range(struct server *srv, const struct net_peer *peer,
                       const struct msg *req) {
  uint64_t lo = req->off, n = req->nvals;
  if (lo < srv->dense_off || n > srv->dense_len ||
      lo - srv->dense_off > srv->dense_len - n) {
    send_error(srv, peer, req, MSG_E_RANGE,
               "pserver %u: dense chunk [%llu, %llu) is not inside this "
               "shard's block [%llu, %llu)",
               srv->rank, (unsigned long long)lo, (unsigned long long)(lo + n),
               (unsigned long long)srv->dense_off,
               (unsigned long long)(srv->dense_off + srv->dense_len));
    return -1;
  }
  return 0;
}

static int dense_table(struct server *srv, const struct net_peer *peer,
                       const struct msg *req);

static void on_pull_dense(struct server *srv, const struct net_peer *peer,
                          const struct msg *req) {
  if (dense_table(srv, peer, req) < 0 || dense_range(srv, peer, req) < 0)
    return;
  grow(srv, 0, req->nvals);
  if (store_dense_pull(srv->store, req->off - srv->dense_off, req->nvals,
                       srv->vals, srv->err, sizeof(srv->err)) < 0) {
    store_failed(srv, peer, req);
    return;
  }
  struct msg rep;
  msg_reply_to(&rep, req, srv->rank);
  rep.off = req->off;
  rep.nvals = req->nvals;
  rep.step = srv->step;
  rep.vals = srv->vals;
  send_to(srv, peer, &rep);
}

/* 0 if the dense request's table is one of ps.h's PS_DENSE_*, else -1
 * after an ERROR reply. */
static int dense_table(struct server *srv, const struct net_peer *peer,
                       const struct msg *req) {
  bool ok = req->table == PS_DENSE_GRADS ||
            (req->op == MSG_PUSH_DENSE &&
             (req->table == PS_DENSE_SET || req->table == PS_LR_SCALE));
  if (!ok)
    send_error(srv, peer, req, MSG_E_UNKNOWN_TABLE,
               "pserver %u: %s of dense table %u (0 = gradients; PUSH_DENSE "
               "only: 1 = values to set, 2 = a learning-rate scale)",
               srv->rank, msg_op_name(req->op), req->table);
  return ok ? 0 : -1;
}

static void on_push_dense(struct server *srv, const struct net_peer *peer,
                          const struct msg *req) {
  if (seen_push(srv, req)) {
    ack(srv, peer, req);
    return;
  }
  if (dense_table(srv, peer, req) < 0)
    return;
  if (req->table == PS_LR_SCALE) { /* a schedule change: never held */
    if (req->off != 0 || req->nvals != 1) {
      send_error(srv, peer, req, MSG_E_RANGE,
                 "pserver %u: a learning-rate scale is one float at offset "
                 "0 (got %u at %llu)",
                 srv->rank, req->nvals, (unsigned long long)req->off);
      return;
    }
    if (store_set_lr_scale(srv->store, req->vals[0], srv->err,
                           sizeof(srv->err)) < 0) {
      send_error(srv, peer, req, MSG_E_RANGE, "pserver %u: %s", srv->rank,
                 srv->err);
      return;
    }
    logger_info(srv->log, "pserver %u: learning rates x %g from step %llu",
                srv->rank, (double)req->vals[0],
                (unsigned long long)req->step + 1);
    note_push(srv, req);
    ack(srv, peer, req);
    return;
  }
  if (dense_range(srv, peer, req) < 0)
    return;
  int rc;
  size_t off = (size_t)(req->off - srv->dense_off);
  if (req->table == PS_DENSE_SET) /* values: never held */
    rc = store_dense_set(srv->store, off, req->nvals, req->vals, srv->err,
                         sizeof(srv->err));
  else if (srv->hold) {
    hold(srv, req);
    rc = 0;
  } else
    rc = store_dense_push(srv->store, off, req->nvals, req->vals, srv->err,
                          sizeof(srv->err));
  if (rc < 0) {
    store_failed(srv, peer, req);
    return;
  }
  push_applied(srv, peer, req);
}

/* Answers every waiter of `step`: OK, or an ERROR with text when the
 * step's pushes could not be applied. */
static void release_barrier(struct server *srv, uint64_t step,
                            const char *fail) {
  size_t keep = 0;
  for (size_t i = 0; i < srv->nwait; i++) {
    struct waiter *w = &srv->wait[i];
    if (w->step != step) {
      srv->wait[keep++] = *w;
      continue;
    }
    struct msg q;
    msg_init(&q);
    q.op = MSG_BARRIER;
    q.id = w->id;
    q.from = w->from;
    q.step = step;
    if (fail) {
      send_error(srv, &w->peer, &q, MSG_E_STORE,
                 "pserver %u: applying the pushes of step %llu failed: %s",
                 srv->rank, (unsigned long long)step, fail);
      continue;
    }
    struct msg rep;
    msg_reply_to(&rep, &q, srv->rank);
    rep.step = step;
    send_to(srv, &w->peer, &rep);
  }
  srv->nwait = keep;
  if (!srv->any_released || step > srv->released)
    srv->released = step;
  srv->any_released = true;
}

static void on_barrier(struct server *srv, const struct net_peer *peer,
                       const struct msg *req) {
  if (req->from >= srv->W) {
    send_error(srv, peer, req, MSG_E_RANGE,
               "pserver %u: barrier from worker %u, but the run has %u "
               "workers (cluster.workers)",
               srv->rank, req->from, srv->W);
    return;
  }
  if (srv->any_released && req->step <= srv->released) {
    /* A retry of a barrier already released (its reply was lost). */
    struct msg rep;
    msg_reply_to(&rep, req, srv->rank);
    rep.step = req->step;
    send_to(srv, peer, &rep);
    return;
  }
  size_t arrived = 0;
  bool found = false;
  for (size_t i = 0; i < srv->nwait; i++) {
    struct waiter *w = &srv->wait[i];
    if (w->step != req->step)
      continue;
    if (w->from == req->from) { /* a retry: answer the newest request */
      w->peer = *peer;
      w->id = req->id;
      found = true;
    }
    arrived++;
  }
  if (!found) {
    if (srv->nwait == srv->capwait) {
      srv->capwait = srv->capwait ? 2 * srv->capwait : 8;
      srv->wait = xrealloc(srv->wait, srv->capwait * sizeof(*srv->wait));
    }
    srv->wait[srv->nwait++] =
        (struct waiter){*peer, req->id, req->from, req->step};
    arrived++;
  }
  if (arrived < srv->W)
    return;
  if (srv->nheld && apply_held(srv, req->step) < 0) {
    logger_error(srv->log, "pserver %u: step %llu: %s", srv->rank,
                 (unsigned long long)req->step, srv->err);
    release_barrier(srv, req->step, srv->err);
    return;
  }
  release_barrier(srv, req->step, NULL);
}

static void on_checkpoint(struct server *srv, const struct net_peer *peer,
                          const struct msg *req) {
  if (ps_local_shard_checkpoint(srv->store, srv->rank, req->text, srv->err,
                                sizeof(srv->err)) < 0) {
    store_failed(srv, peer, req);
    return;
  }
  logger_info(srv->log, "pserver %u: checkpoint of step %llu in %s/shard-%u",
              srv->rank, (unsigned long long)req->step, req->text, srv->rank);
  struct msg rep;
  msg_reply_to(&rep, req, srv->rank);
  rep.step = req->step;
  rep.text = req->text;
  rep.text_len = req->text_len;
  send_to(srv, peer, &rep);
}

static void on_stats(struct server *srv, const struct net_peer *peer,
                     const struct msg *req) {
  char *json = server_stats_json(srv, srv->err, sizeof(srv->err));
  if (!json) {
    store_failed(srv, peer, req);
    return;
  }
  struct msg rep;
  msg_reply_to(&rep, req, srv->rank);
  rep.text = json;
  rep.text_len = (uint32_t)strlen(json);
  send_to(srv, peer, &rep);
  free(json);
}

static void fail_waiters(struct server *srv) {
  if (srv->nheld) {
    logger_warn(srv->log,
                "pserver %u: dropping %zu pushes of a step whose barrier "
                "never completed",
                srv->rank, srv->nheld);
    held_clear(srv);
  }
  for (size_t i = 0; i < srv->nwait; i++) {
    struct waiter *w = &srv->wait[i];
    struct msg q;
    msg_init(&q);
    q.op = MSG_BARRIER;
    q.id = w->id;
    q.from = w->from;
    send_error(srv, &w->peer, &q, MSG_E_SHUTTING_DOWN,
               "pserver %u is shutting down", srv->rank);
  }
  srv->nwait = 0;
}

static void on_shutdown(struct server *srv, const struct net_peer *peer,
                        const struct msg *req) {
  fail_waiters(srv);
  if (store_flush(srv->store, srv->err, sizeof(srv->err)) < 0) {
    send_error(srv, peer, req, MSG_E_STORE,
               "pserver %u: flush before shutdown failed: %s", srv->rank,
               srv->err);
  } else {
    struct msg rep;
    msg_reply_to(&rep, req, srv->rank);
    send_to(srv, peer, &rep);
  }
  logger_info(srv->log, "pserver %u: SHUTDOWN from rank %u", srv->rank,
              req->from);
  srv->shutdown = 1;
}

/* Decodes and answers one received message. */
static void handle(struct server *srv) {
  const struct net_peer *peer = net_msg_peer(srv->in);
  struct msg *req = &srv->req;
  char e[512];
  if (msg_decode(net_msg_frames(srv->in), net_msg_nframes(srv->in), req, e,
                 sizeof(e)) < 0) {
    srv->malformed++;
    if (srv->malformed <= 5)
      logger_warn(srv->log, "pserver %u: malformed request (id %llu): %s%s",
                  srv->rank, (unsigned long long)req->id, e,
                  srv->malformed == 5 ? " (further ones are only counted)"
                                      : "");
    enum msg_err code = strstr(e, "version") ? MSG_E_VERSION : MSG_E_MALFORMED;
    send_error(srv, peer, req, code, "pserver %u: malformed request: %s",
               srv->rank, e);
    return;
  }
  if (req->reply) {
    srv->malformed++;
    send_error(srv, peer, req, MSG_E_MALFORMED,
               "pserver %u: got a %s reply; pservers take requests only",
               srv->rank, msg_op_name(req->op));
    return;
  }
  if (req->op < MSG_OP_COUNT_)
    srv->requests[req->op]++;
  switch (req->op) {
  case MSG_PULL:
    on_pull(srv, peer, req);
    break;
  case MSG_PUSH:
    on_push(srv, peer, req);
    break;
  case MSG_PULL_DENSE:
    on_pull_dense(srv, peer, req);
    break;
  case MSG_PUSH_DENSE:
    on_push_dense(srv, peer, req);
    break;
  case MSG_BARRIER:
    on_barrier(srv, peer, req);
    break;
  case MSG_CHECKPOINT:
    on_checkpoint(srv, peer, req);
    break;
  case MSG_STATS:
    on_stats(srv, peer, req);
    break;
  case MSG_SHUTDOWN:
    on_shutdown(srv, peer, req);
    break;
  default:
    send_error(srv, peer, req, MSG_E_UNSUPPORTED,
               "pserver %u: op %s (%u) is not a request a pserver serves",
               srv->rank, msg_op_name(req->op), req->op);
    break;
  }
}

/* ---- lifecycle and loop ------------------------------------------------- */

struct server *server_new(struct store *st, const struct server_opts *o,
                          char *err, size_t errlen) {
  if (o->nshards == 0 || o->rank >= o->nshards || o->workers == 0 ||
      o->ntables == 0) {
    snprintf(err, errlen,
             "pserver: bad options: rank %u of %u shards, %u workers, %zu "
             "tables (need rank < shards, >= 1 worker, >= 1 table)",
             o->rank, o->nshards, o->workers, o->ntables);
    return NULL;
  }
  struct server *srv = xcalloc(1, sizeof(*srv));
  srv->net = net_new(err, errlen);
  if (!srv->net) {
    free(srv);
    return NULL;
  }
  srv->sock = net_server_new(srv->net, o->endpoint, o->net, err, errlen);
  if (!srv->sock) {
    net_free(srv->net);
    free(srv);
    return NULL;
  }
  srv->in = net_msg_new();
  msg_enc_init(&srv->enc);
  msg_init(&srv->req);
  srv->store = st;
  srv->log = o->log;
  srv->rank = o->rank;
  srv->S = o->nshards;
  srv->W = o->workers;
  srv->hold = o->sync && o->workers > 1;
  srv->stats_every_s = o->stats_every_s;
  ps_dense_block(o->dense_total, o->nshards, o->rank, &srv->dense_off,
                 &srv->dense_len);
  srv->tables = xmalloc(o->ntables * sizeof(*srv->tables));
  memcpy(srv->tables, o->tables, o->ntables * sizeof(*srv->tables));
  srv->ntables = o->ntables;
  srv->poll_ms = o->poll_ms > 0 ? o->poll_ms : SERVER_POLL_MS;
  return srv;
}

const char *server_endpoint(const struct server *srv) {
  return net_sock_endpoint(srv->sock);
}

int server_step(struct server *srv, int timeout_ms, char *err, size_t errlen) {
  char e[512];
  int rc = net_recv(srv->sock, srv->in, timeout_ms, e, sizeof(e));
  if (rc == NET_TIMEOUT)
    return 0;
  if (rc < 0) {
    const struct net_peer *peer = net_msg_peer(srv->in);
    if (peer->len > 0) { /* too many frames: still answerable */
      srv->malformed++;
      send_error(srv, peer, NULL, MSG_E_MALFORMED, "pserver %u: %s", srv->rank,
                 e);
      return 1;
    }
    if (errno == EINTR || strstr(e, "nterrupted"))
      return 0; /* a signal: the caller looks at its stop flag */
    snprintf(err, errlen, "pserver %u: %s", srv->rank, e);
    return -1;
  }
  if (net_msg_peer(srv->in)->len == 0) {
    srv->dropped++;
    return 1;
  }
  handle(srv);
  msg_deinit(&srv->req);
  return srv->shutdown ? 2 : 1;
}

int server_run(struct server *srv, volatile sig_atomic_t *stop, char *err,
               size_t errlen) {
  logger_info(srv->log, "pserver %u of %u: serving on %s (%u workers)",
              srv->rank, srv->S, server_endpoint(srv), srv->W);
  int rc = 0;
  double next_stats = clock_sec() + srv->stats_every_s;
  while (!(stop && *stop)) {
    if (srv->stats_every_s > 0 && clock_sec() >= next_stats) {
      server_log_stats(srv);
      next_stats = clock_sec() + srv->stats_every_s;
    }
    int r = server_step(srv, srv->poll_ms, err, errlen);
    if (r < 0) {
      rc = -1;
      break;
    }
    if (r == 2) {
      if (srv->stats_every_s > 0)
        server_log_stats(srv);
      return 0; /* SHUTDOWN flushed before answering */
    }
  }
  if (stop && *stop)
    logger_info(srv->log, "pserver %u: stop requested (signal); flushing",
                srv->rank);
  fail_waiters(srv);
  if (srv->stats_every_s > 0)
    server_log_stats(srv); /* the last numbers, however short the run */
  char e[512];
  if (store_flush(srv->store, e, sizeof(e)) < 0) {
    if (rc == 0)
      snprintf(err, errlen, "pserver %u: final flush failed: %s", srv->rank, e);
    rc = -1;
  }
  return rc;
}

void server_free(struct server *srv) {
  if (!srv)
    return;
  msg_deinit(&srv->req);
  msg_enc_deinit(&srv->enc);
  net_msg_free(srv->in);
  net_sock_free(srv->sock);
  net_free(srv->net);
  free(srv->tables);
  free(srv->plen);
  free(srv->count);
  free(srv->clicks);
  free(srv->vals);
  free(srv->wait);
  held_clear(srv);
  free(srv->held);
  free(srv);
}

/* ---- stats -------------------------------------------------------------- */

struct sbuf {
  char *s;
  size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    CHECK(n >= 0, "vsnprintf");
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    b->cap = 2 * b->cap + (size_t)n + 64;
    b->s = xrealloc(b->s, b->cap);
  }
}

static double finite_or_zero(double x) {
  return isfinite(x) ? x : 0;
}

int server_log_stats(struct server *srv) {
  struct store_stats st;
  char e[512];
  if (store_stats(srv->store, &st, e, sizeof(e)) < 0) {
    logger_warn(srv->log, "pserver %u: stats: %s", srv->rank, e);
    return -1;
  }
  uint64_t total = 0;
  for (unsigned op = 1; op < MSG_OP_COUNT_; op++)
    total += srv->requests[op];
  double since = (double)(total - srv->logged_requests);
  srv->logged_requests = total;
  return logger_record(
      srv->log, srv->step, "pserver", "keys", (double)st.rows_estimate,
      "bytes_disk", (double)st.sst_bytes, "bytes_memtable",
      (double)st.memtable_bytes, "row_cache_bytes", (double)st.row_cache_bytes,
      "block_cache_bytes", (double)st.block_cache_bytes, "cache_hit_rate",
      st.row_cache_hit_rate, "write_stopped", (double)st.write_stopped,
      "delayed_write_rate", (double)st.delayed_write_rate,
      "compaction_debt_bytes", (double)st.pending_compaction_bytes,
      "pull_p50_us", lat_quantile(&srv->pull_lat, 0.5), "pull_p99_us",
      lat_quantile(&srv->pull_lat, 0.99), "push_p50_us",
      lat_quantile(&srv->push_lat, 0.5), "push_p99_us",
      lat_quantile(&srv->push_lat, 0.99), "requests", since, "errors",
      (double)srv->errors, "malformed", (double)srv->malformed, NULL);
}

char *server_stats_json(struct server *srv, char *err, size_t errlen) {
  struct store_stats st;
  if (store_stats(srv->store, &st, err, errlen) < 0)
    return NULL;
  struct sbuf b = {xmalloc(4096), 0, 4096};
  b.s[0] = 0;
  sb_printf(&b,
            "{\"rank\":%u,\"keys\":%llu,\"bytes_disk\":%llu,"
            "\"bytes_live\":%llu,\"bytes_memtable\":%llu,"
            "\"row_cache_bytes\":%llu,\"row_cache_budget\":%llu,"
            "\"block_cache_bytes\":%llu,\"cache_hit_rate\":%.6g,"
            "\"stalls\":{\"write_stopped\":%llu,\"delayed_write_rate\":%llu},"
            "\"compaction_debt_bytes\":%llu,\"admitted\":%llu,"
            "\"expired\":%llu,\"step\":%llu,\"requests\":{",
            srv->rank, (unsigned long long)st.rows_estimate,
            (unsigned long long)st.sst_bytes, (unsigned long long)st.live_bytes,
            (unsigned long long)st.memtable_bytes,
            (unsigned long long)st.row_cache_bytes,
            (unsigned long long)st.row_cache_budget,
            (unsigned long long)st.block_cache_bytes,
            finite_or_zero(st.row_cache_hit_rate),
            (unsigned long long)st.write_stopped,
            (unsigned long long)st.delayed_write_rate,
            (unsigned long long)st.pending_compaction_bytes,
            (unsigned long long)st.admitted, (unsigned long long)st.expired,
            (unsigned long long)srv->step);
  for (unsigned op = 1; op < MSG_OP_COUNT_; op++)
    sb_printf(&b, "%s\"%s\":%llu", op > 1 ? "," : "", msg_op_name(op),
              (unsigned long long)srv->requests[op]);
  sb_printf(
      &b,
      "},\"errors\":%llu,\"malformed\":%llu,\"dropped\":%llu,"
      "\"pull_us\":{\"p50\":%.3g,\"p99\":%.3g,\"n\":%llu},"
      "\"push_us\":{\"p50\":%.3g,\"p99\":%.3g,\"n\":%llu}",
      (unsigned long long)srv->errors, (unsigned long long)srv->malformed,
      (unsigned long long)srv->dropped, lat_quantile(&srv->pull_lat, 0.5),
      lat_quantile(&srv->pull_lat, 0.99), (unsigned long long)srv->pull_lat.n,
      lat_quantile(&srv->push_lat, 0.5), lat_quantile(&srv->push_lat, 0.99),
      (unsigned long long)srv->push_lat.n);
  size_t before_tables = b.len;
  sb_printf(&b, ",\"tables\":[");
  for (size_t i = 0; i < srv->ntables; i++) {
    const struct store_table *t = &srv->tables[i];
    uint64_t *hist = xcalloc(t->dim + 1, sizeof(uint64_t));
    struct store_table_stats ts;
    if (store_table_scan(srv->store, t->id, &ts, hist, err, errlen) < 0) {
      free(hist);
      free(b.s);
      return NULL;
    }
    sb_printf(&b,
              "%s{\"id\":%u,\"dim\":%u,\"amtl\":%s,\"rows\":%llu,"
              "\"pending\":%llu,\"value_bytes\":%llu,\"mean_p\":%.6g,"
              "\"hist\":[",
              i ? "," : "", t->id, t->dim, t->amtl ? "true" : "false",
              (unsigned long long)ts.rows, (unsigned long long)ts.pending,
              (unsigned long long)ts.value_bytes, finite_or_zero(ts.mean_p));
    for (unsigned k = 0; k <= t->dim; k++)
      sb_printf(&b, "%s%llu", k ? "," : "", (unsigned long long)hist[k]);
    sb_printf(&b, "]}");
    free(hist);
  }
  sb_printf(&b, "]}");
  if (b.len > MSG_MAX_JSON) {
    b.len = before_tables;
    sb_printf(&b, ",\"tables_truncated\":true}");
  }
  return b.s;
}
