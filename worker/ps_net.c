/* ps_net: common/ps.h over ZeroMQ to S pservers (see ps_net.h). */
#include "worker/ps_net.h"

#include "common/check.h"
#include "common/keys.h"
#include "common/msg.h"
#include "common/row.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* One pserver: its socket and the request of the current round. */
struct shard {
  struct net_sock *sock;
  char *endpoint;
  struct net_msg *in; /* the last reply's frames (rep borrows them) */
  struct msg req;     /* arrays borrowed from the client's scratch */
  struct msg rep;     /* decoded reply */
  bool active;        /* part of the current round */
  int attempts;       /* sends of req so far */
  uint64_t sent_ns;   /* clock_ns() of the last send */
};

struct client {
  struct net *net;
  struct shard *sh; /* [S] */
  uint32_t S, rank;
  uint64_t dense_total;
  int timeout_ms, retries, backoff_ms;
  struct logger *log;
  struct msg_enc enc;
  uint64_t next_id;
  /* Scratch for grouping one call's keys by shard, grown as needed. */
  size_t cap;
  uint32_t *shard_of; /* [n] shard of key i */
  size_t *from;       /* [n] grouped position g -> caller's index */
  size_t *voff;       /* [n + 1] ragged offsets in the caller's order */
  uint64_t *gk;       /* [n] keys grouped by shard */
  uint16_t *gl, *gp;  /* [n] glen, plen grouped */
  uint32_t *gc, *gck; /* [n] count, clicks grouped */
  size_t capv;
  float *gv;   /* [capv] gradients grouped */
  size_t *pos; /* [S + 1] start of shard s's group */
  size_t *cur; /* [S] fill cursor of group() */
};

static void scratch(struct client *c, size_t n, size_t nv) {
  if (n > c->cap) {
    c->cap = n;
    c->shard_of = xrealloc(c->shard_of, n * sizeof(uint32_t));
    c->from = xrealloc(c->from, n * sizeof(size_t));
    c->voff = xrealloc(c->voff, (n + 1) * sizeof(size_t));
    c->gk = xrealloc(c->gk, n * sizeof(uint64_t));
    c->gl = xrealloc(c->gl, n * sizeof(uint16_t));
    c->gp = xrealloc(c->gp, n * sizeof(uint16_t));
    c->gc = xrealloc(c->gc, n * sizeof(uint32_t));
    c->gck = xrealloc(c->gck, n * sizeof(uint32_t));
  }
  if (nv > c->capv) {
    c->capv = nv;
    c->gv = xrealloc(c->gv, nv * sizeof(float));
  }
}

/* Groups keys by shard: pos[s]..pos[s+1] are shard s's positions, from[g]
 * the caller's index of grouped position g, gk[g] its key. */
static void group(struct client *c, size_t n, const uint64_t *keys) {
  memset(c->pos, 0, (c->S + 1) * sizeof(size_t));
  for (size_t i = 0; i < n; i++) {
    c->shard_of[i] = keys_shard(keys[i], c->S);
    c->pos[c->shard_of[i] + 1]++;
  }
  for (uint32_t s = 0; s < c->S; s++)
    c->pos[s + 1] += c->pos[s];
  /* A stable counting sort. */
  memcpy(c->cur, c->pos, c->S * sizeof(size_t));
  for (size_t i = 0; i < n; i++) {
    size_t g = c->cur[c->shard_of[i]]++;
    c->from[g] = i;
    c->gk[g] = keys[i];
  }
}

static void begin(struct client *c) {
  for (uint32_t s = 0; s < c->S; s++) {
    c->sh[s].active = false;
    c->sh[s].attempts = 0;
  }
}

/* Sets up shard s's request of this round; returns it to fill in. */
static struct msg *request(struct client *c, uint32_t s, enum msg_op op,
                           uint64_t id) {
  struct shard *sh = &c->sh[s];
  msg_init(&sh->req);
  sh->req.op = (uint8_t)op;
  sh->req.id = id;
  sh->req.from = c->rank;
  sh->active = true;
  return &sh->req;
}

static int send_req(struct client *c, struct shard *sh, char *err,
                    size_t errlen) {
  char e[512];
  sh->attempts++;
  sh->sent_ns = clock_ns();
  int rc = net_send_msg(sh->sock, NULL, &sh->req, &c->enc, e, sizeof(e));
  if (rc != 0) {
    snprintf(err, errlen, "pserver %s: cannot send %s (id %llu): %s",
             sh->endpoint, msg_op_name(sh->req.op),
             (unsigned long long)sh->req.id, e);
    return -1;
  }
  return 0;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/* Waits for shard sh's reply to its request, resending on timeouts. */
static int await(struct client *c, struct shard *sh, char *err, size_t errlen) {
  char e[512];
  for (;;) {
    int64_t left = (int64_t)c->timeout_ms -
                   (int64_t)((clock_ns() - sh->sent_ns) / 1000000u);
    int rc = net_recv(sh->sock, sh->in, left > 0 ? (int)left : 0, e, sizeof(e));
    if (rc == 0) {
      if (msg_decode(net_msg_frames(sh->in), net_msg_nframes(sh->in), &sh->rep,
                     e, sizeof(e)) < 0) {
        snprintf(err, errlen,
                 "pserver %s: its reply to %s (id %llu) does not decode: %s "
                 "(a pserver of another maskps version?)",
                 sh->endpoint, msg_op_name(sh->req.op),
                 (unsigned long long)sh->req.id, e);
        return -1;
      }
      if (!sh->rep.reply || sh->rep.id != sh->req.id)
        continue; /* a late answer to an earlier request: drop it */
      if (sh->rep.op == MSG_ERROR) {
        snprintf(err, errlen, "pserver %s refused %s (id %llu): %s: %.*s",
                 sh->endpoint, msg_op_name(sh->req.op),
                 (unsigned long long)sh->req.id, msg_err_name(sh->rep.code),
                 (int)sh->rep.text_len, sh->rep.text ? sh->rep.text : "");
        return -1;
      }
      if (sh->rep.op != sh->req.op) {
        snprintf(err, errlen,
                 "pserver %s answered %s (id %llu) with a %s reply",
                 sh->endpoint, msg_op_name(sh->req.op),
                 (unsigned long long)sh->req.id, msg_op_name(sh->rep.op));
        return -1;
      }
      return 0;
    }
    if (rc < 0 && strstr(e, "interrupted")) /* a signal: wait on */
      continue;
    if (rc != NET_TIMEOUT) {
      snprintf(err, errlen, "pserver %s: waiting for %s (id %llu): %s",
               sh->endpoint, msg_op_name(sh->req.op),
               (unsigned long long)sh->req.id, e);
      return -1;
    }
    if (sh->attempts > c->retries) {
      snprintf(err, errlen,
               "pserver %s did not answer %s (id %llu): %d attempts, %d ms "
               "each; is it running and reachable? (cluster.request_"
               "timeout_ms sets the wait)",
               sh->endpoint, msg_op_name(sh->req.op),
               (unsigned long long)sh->req.id, sh->attempts, c->timeout_ms);
      return -1;
    }
    int pause = c->backoff_ms
                << (sh->attempts - 1 < 10 ? sh->attempts - 1 : 10);
    logger_warn(c->log,
                "pserver %s: no answer to %s (id %llu) in %d ms; retry %d of "
                "%d in %d ms",
                sh->endpoint, msg_op_name(sh->req.op),
                (unsigned long long)sh->req.id, c->timeout_ms, sh->attempts,
                c->retries, pause);
    sleep_ms(pause);
    if (send_req(c, sh, err, errlen) < 0)
      return -1;
  }
}

/* Sends every active shard's request, then gathers the replies. */
static int round_trip(struct client *c, char *err, size_t errlen) {
  for (uint32_t s = 0; s < c->S; s++)
    if (c->sh[s].active && send_req(c, &c->sh[s], err, errlen) < 0)
      return -1;
  for (uint32_t s = 0; s < c->S; s++)
    if (c->sh[s].active && await(c, &c->sh[s], err, errlen) < 0)
      return -1;
  return 0;
}

/* ---- the ps operations -------------------------------------------------- */

static long net_pull(void *ctx, uint32_t table, uint64_t step, size_t n,
                     const uint64_t *keys, const struct ps_rows *out, char *err,
                     size_t errlen) {
  struct client *c = ctx;
  if (n == 0)
    return 0;
  scratch(c, n, 0);
  group(c, n, keys);
  begin(c);
  uint64_t id = c->next_id++;
  for (uint32_t s = 0; s < c->S; s++) {
    size_t m = c->pos[s + 1] - c->pos[s];
    if (m == 0)
      continue;
    if (m > MSG_MAX_KEYS) {
      snprintf(err, errlen,
               "pull of %zu keys sends %zu to pserver %s, over the %u a "
               "message may carry; split the batch",
               n, m, c->sh[s].endpoint, MSG_MAX_KEYS);
      return -1;
    }
    struct msg *q = request(c, s, MSG_PULL, id);
    q->table = table;
    q->n = (uint32_t)m;
    q->step = step;
    q->keys = c->gk + c->pos[s];
  }
  if (round_trip(c, err, errlen) < 0)
    return -1;
  /* Prefix lengths in the caller's order, then the ragged offsets. */
  for (uint32_t s = 0; s < c->S; s++) {
    struct shard *sh = &c->sh[s];
    if (!sh->active)
      continue;
    if (sh->rep.n != sh->req.n) {
      snprintf(err, errlen, "pserver %s answered a pull of %u keys with %u",
               sh->endpoint, sh->req.n, sh->rep.n);
      return -1;
    }
    for (uint32_t j = 0; j < sh->rep.n; j++) {
      size_t i = c->from[c->pos[s] + j];
      out->plen[i] = sh->rep.plen[j];
      out->count[i] = sh->rep.count[j];
      out->clicks[i] = sh->rep.clicks[j];
    }
  }
  c->voff[0] = 0;
  for (size_t i = 0; i < n; i++)
    c->voff[i + 1] = c->voff[i] + out->plen[i];
  if (c->voff[n] > out->vals_cap) {
    snprintf(err, errlen,
             "pull of %zu keys of table %u returned %zu floats, more than "
             "vals_cap %zu (give room for n * D)",
             n, table, c->voff[n], out->vals_cap);
    return -1;
  }
  for (uint32_t s = 0; s < c->S; s++) {
    struct shard *sh = &c->sh[s];
    if (!sh->active)
      continue;
    const float *v = sh->rep.vals;
    for (uint32_t j = 0; j < sh->rep.n; j++) {
      size_t i = c->from[c->pos[s] + j];
      if (out->plen[i]) { /* v is NULL when the reply has no floats */
        memcpy(out->vals + c->voff[i], v, out->plen[i] * sizeof(float));
        v += out->plen[i];
      }
    }
  }
  return (long)c->voff[n];
}

static int net_push(void *ctx, const struct ps_grads *g, char *err,
                    size_t errlen) {
  struct client *c = ctx;
  size_t n = g->n;
  if (n == 0)
    return 0;
  scratch(c, n, 0);
  c->voff[0] = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned p = g->plen ? g->plen[i] : 0;
    if (g->glen[i] > ROW_MAX_DIM || p > ROW_MAX_DIM) {
      snprintf(err, errlen,
               "push to table %u: key 0x%016llx has glen %u / plen %u, over "
               "the largest dim %u",
               g->table, (unsigned long long)g->keys[i], g->glen[i], p,
               ROW_MAX_DIM);
      return -1;
    }
    c->voff[i + 1] = c->voff[i] + g->glen[i];
  }
  const size_t *goff = c->voff;         /* gradient offsets, caller's order */
  scratch(c, n, goff[n] ? goff[n] : 1); /* n unchanged: voff stays */
  group(c, n, g->keys);
  begin(c);
  uint64_t id = c->next_id++;
  size_t f = 0;
  int rc = 0;
  for (uint32_t s = 0; s < c->S && rc == 0; s++) {
    size_t a = c->pos[s], m = c->pos[s + 1] - a, f0 = f;
    if (m == 0)
      continue;
    for (size_t j = a; j < a + m; j++) {
      size_t i = c->from[j];
      c->gl[j] = g->glen[i];
      c->gp[j] = g->plen ? g->plen[i] : 0;
      c->gc[j] = g->count ? g->count[i] : 1;
      c->gck[j] = g->clicks ? g->clicks[i] : 0;
      if (g->glen[i]) {
        memcpy(c->gv + f, g->grads + goff[i], g->glen[i] * sizeof(float));
        f += g->glen[i];
      }
    }
    if (m > MSG_MAX_KEYS || f - f0 > MSG_MAX_FLOATS) {
      snprintf(err, errlen,
               "push of %zu keys sends %zu keys / %zu floats to pserver %s, "
               "over a message's %u / %u; split the batch",
               n, m, f - f0, c->sh[s].endpoint, MSG_MAX_KEYS, MSG_MAX_FLOATS);
      rc = -1;
      break;
    }
    struct msg *q = request(c, s, MSG_PUSH, id);
    q->table = g->table;
    q->n = (uint32_t)m;
    q->nvals = (uint32_t)(f - f0);
    q->step = g->step;
    q->keys = c->gk + a;
    q->glen = c->gl + a;
    q->plen = c->gp + a;
    q->count = c->gc + a;
    q->clicks = c->gck + a;
    q->vals = c->gv + f0;
  }
  if (rc < 0)
    return -1;
  return round_trip(c, err, errlen);
}

/* Splits [off, off + len) over the dense blocks into one request per
 * pserver involved. */
static int dense_requests(struct client *c, enum msg_op op, uint32_t table,
                          uint64_t step, size_t off, size_t len,
                          const float *grads, char *err, size_t errlen) {
  if (len > c->dense_total || off > c->dense_total - len) {
    snprintf(err, errlen,
             "dense range [%zu, %zu) outside the dense vector of %llu floats",
             off, off + len, (unsigned long long)c->dense_total);
    return -1;
  }
  begin(c);
  uint64_t id = c->next_id++;
  for (uint32_t s = 0; s < c->S; s++) {
    uint64_t bo, bl;
    ps_dense_block(c->dense_total, c->S, s, &bo, &bl);
    uint64_t lo = off > bo ? off : bo;
    uint64_t hi = off + len < bo + bl ? off + len : bo + bl;
    if (lo >= hi)
      continue;
    if (hi - lo > MSG_MAX_FLOATS) {
      snprintf(err, errlen,
               "dense chunk of %llu floats for pserver %s is over a "
               "message's %u",
               (unsigned long long)(hi - lo), c->sh[s].endpoint,
               MSG_MAX_FLOATS);
      return -1;
    }
    struct msg *q = request(c, s, op, id);
    q->table = table;
    q->off = lo;
    q->nvals = (uint32_t)(hi - lo);
    q->step = step;
    if (grads)
      q->vals = grads + (lo - off);
  }
  return round_trip(c, err, errlen);
}

static int net_pull_dense(void *ctx, uint64_t step, size_t off, size_t len,
                          float *out, char *err, size_t errlen) {
  struct client *c = ctx;
  if (len == 0)
    return 0;
  if (dense_requests(c, MSG_PULL_DENSE, PS_DENSE_GRADS, step, off, len, NULL,
                     err, errlen))
    return -1;
  for (uint32_t s = 0; s < c->S; s++) {
    struct shard *sh = &c->sh[s];
    if (!sh->active)
      continue;
    if (sh->rep.off != sh->req.off || sh->rep.nvals != sh->req.nvals) {
      snprintf(err, errlen,
               "pserver %s answered dense [%llu, +%u) with [%llu, +%u)",
               sh->endpoint, (unsigned long long)sh->req.off, sh->req.nvals,
               (unsigned long long)sh->rep.off, sh->rep.nvals);
      return -1;
    }
    memcpy(out + (sh->req.off - off), sh->rep.vals,
           sh->rep.nvals * sizeof(float));
  }
  return 0;
}

static int net_push_dense(void *ctx, uint64_t step, size_t off, size_t len,
                          const float *grads, char *err, size_t errlen) {
  if (len == 0)
    return 0;
  return dense_requests(ctx, MSG_PUSH_DENSE, PS_DENSE_GRADS, step, off, len,
                        grads, err, errlen);
}

static int net_set_dense(void *ctx, size_t off, size_t len, const float *values,
                         char *err, size_t errlen) {
  if (len == 0)
    return 0;
  return dense_requests(ctx, MSG_PUSH_DENSE, PS_DENSE_SET, 0, off, len, values,
                        err, errlen);
}

/* PS_LR_SCALE: one float to every pserver, dense block or not. */
static int net_set_lr_scale(void *ctx, float scale, char *err,
                            size_t errlen) {
  struct client *c = ctx;
  begin(c);
  uint64_t id = c->next_id++;
  for (uint32_t s = 0; s < c->S; s++) {
    struct msg *q = request(c, s, MSG_PUSH_DENSE, id);
    q->table = PS_LR_SCALE;
    q->off = 0;
    q->nvals = 1;
    q->vals = &scale; /* encoded before round_trip returns */
  }
  return round_trip(c, err, errlen);
}

/* One request with no arrays to every pserver. */
static int broadcast(struct client *c, enum msg_op op, uint64_t step,
                     const char *text, char *err, size_t errlen) {
  begin(c);
  uint64_t id = c->next_id++;
  for (uint32_t s = 0; s < c->S; s++) {
    struct msg *q = request(c, s, op, id);
    q->step = step;
    if (text) {
      q->text = text;
      q->text_len = (uint32_t)strlen(text);
    }
  }
  return round_trip(c, err, errlen);
}

static int net_barrier(void *ctx, uint64_t step, char *err, size_t errlen) {
  return broadcast(ctx, MSG_BARRIER, step, NULL, err, errlen);
}

static int net_checkpoint(void *ctx, uint64_t step, const char *dir, char *err,
                          size_t errlen) {
  if (strlen(dir) == 0 || strlen(dir) > MSG_MAX_PATH) {
    snprintf(err, errlen,
             "checkpoint directory name of %zu bytes (must be 1..%d)",
             strlen(dir), MSG_MAX_PATH);
    return -1;
  }
  return broadcast(ctx, MSG_CHECKPOINT, step, dir, err, errlen);
}

static void net_ctx_free(void *ctx) {
  struct client *c = ctx;
  if (!c)
    return;
  for (uint32_t s = 0; c->sh && s < c->S; s++) {
    struct shard *sh = &c->sh[s];
    msg_deinit(&sh->rep);
    net_msg_free(sh->in);
    net_sock_free(sh->sock);
    free(sh->endpoint);
  }
  net_free(c->net);
  msg_enc_deinit(&c->enc);
  free(c->sh);
  free(c->shard_of);
  free(c->from);
  free(c->voff);
  free(c->gk);
  free(c->gl);
  free(c->gp);
  free(c->gc);
  free(c->gck);
  free(c->gv);
  free(c->pos);
  free(c->cur);
  free(c);
}

static const struct ps_ops net_ops = {
    .name = "net",
    .pull = net_pull,
    .push = net_push,
    .pull_dense = net_pull_dense,
    .push_dense = net_push_dense,
    .set_dense = net_set_dense,
    .set_lr_scale = net_set_lr_scale,
    .barrier = net_barrier,
    .checkpoint = net_checkpoint,
    .free = net_ctx_free,
};

struct ps *ps_net_new(const struct ps_net_opts *o, char *err, size_t errlen) {
  if (o->nshards == 0 || !o->endpoints) {
    snprintf(err, errlen, "ps_net: no pserver endpoints");
    return NULL;
  }
  struct client *c = xcalloc(1, sizeof(*c));
  c->S = o->nshards;
  c->rank = o->rank;
  c->dense_total = o->dense_total;
  c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : PS_NET_TIMEOUT_MS;
  c->retries = o->retries > 0   ? o->retries
               : o->retries < 0 ? 0
                                : PS_NET_RETRIES;
  c->backoff_ms = o->backoff_ms > 0 ? o->backoff_ms : PS_NET_BACKOFF_MS;
  c->log = o->log;
  msg_enc_init(&c->enc);
  c->pos = xcalloc(c->S + 1, sizeof(size_t));
  c->cur = xcalloc(c->S, sizeof(size_t));
  /* Ids that another client (or an earlier run of this one) is unlikely to
   * have used: a pserver recognises retries by (rank, id). */
  c->next_id = keys_mix64(clock_ns() ^ ((uint64_t)getpid() << 32) ^
                          (uint64_t)(uintptr_t)c) >>
               1;
  c->net = net_new(err, errlen);
  if (!c->net) {
    net_ctx_free(c);
    return NULL;
  }
  c->sh = xcalloc(c->S, sizeof(*c->sh));
  for (uint32_t s = 0; s < c->S; s++) {
    struct shard *sh = &c->sh[s];
    sh->endpoint = xstrdup(o->endpoints[s]);
    sh->in = net_msg_new();
    msg_init(&sh->rep);
    struct net_opts no = {0};
    if (o->net)
      no = *o->net;
    if (o->server_pubs)
      no.curve_server_pub = o->server_pubs[s];
    sh->sock =
        net_client_new(c->net, &o->endpoints[s], 1,
                       o->net || o->server_pubs ? &no : NULL, err, errlen);
    if (!sh->sock) {
      net_ctx_free(c);
      return NULL;
    }
  }
  struct ps *ps = xcalloc(1, sizeof(*ps));
  ps->ops = &net_ops;
  ps->ctx = c;
  ps->nshards = c->S;
  ps->dense_total = c->dense_total;
  return ps;
}

static struct client *client_of(struct ps *ps) {
  CHECK(ps->ops == &net_ops, "not a ps_net (%s)", ps->ops->name);
  return ps->ctx;
}

int ps_net_shutdown(struct ps *ps, char *err, size_t errlen) {
  return broadcast(client_of(ps), MSG_SHUTDOWN, 0, NULL, err, errlen);
}

char *ps_net_stats(struct ps *ps, uint32_t shard, char *err, size_t errlen) {
  struct client *c = client_of(ps);
  CHECK(shard < c->S, "shard %u of %u", shard, c->S);
  begin(c);
  request(c, shard, MSG_STATS, c->next_id++);
  if (round_trip(c, err, errlen) < 0)
    return NULL;
  const struct msg *r = &c->sh[shard].rep;
  char *s = xmalloc((size_t)r->text_len + 1);
  memcpy(s, r->text, r->text_len);
  s[r->text_len] = 0;
  return s;
}

const char *ps_net_endpoint(const struct ps *ps, uint32_t shard) {
  CHECK(ps->ops == &net_ops, "not a ps_net");
  const struct client *c = ps->ctx;
  CHECK(shard < c->S, "shard %u of %u", shard, c->S);
  return c->sh[shard].endpoint;
}
