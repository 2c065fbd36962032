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

/* One request to one pserver and what came back for it. */
struct call {
  struct msg req;     /* arrays borrowed from the client's scratch, or from
                         the started pull it belongs to */
  struct net_msg *in; /* the reply's frames (rep borrows them) */
  struct msg rep;     /* the decoded reply, once answered */
  bool active;        /* part of the current round / of its started pull */
  bool answered;      /* rep is the reply to req */
  int attempts;       /* sends of req so far */
  uint64_t since_ns;  /* clock_ns() the wait for the reply counts from: the
                         last send, or a later ps_pull_finish */
};

/* One pserver: its socket and the request of the current blocking call. */
struct shard {
  struct net_sock *sock;
  char *endpoint;
  struct call now;    /* the blocking call's request (push, barrier...) */
  struct net_msg *in; /* a reply read and not yet handed to its call */
  struct msg rep;     /* its decode */
};

/* A pull sent and not yet finished (ps_pull_start). It has its own grouping
 * of the keys and its own request per pserver, because the client's
 * scratch and the shards' `now` serve the calls made in between. */
struct started {
  bool used;
  uint32_t table;     /* for messages */
  size_t n;           /* keys */
  struct ps_rows out; /* the caller's arrays, filled by finish */
  size_t cap;         /* keys the arrays below hold */
  uint64_t *gk;       /* [cap] keys grouped by shard */
  size_t *from;       /* [cap] grouped position -> caller's index */
  size_t *pos;        /* [S + 1] start of shard s's group */
  struct call *calls; /* [S] */
};

/* Slots: PS_MAX_STARTED for ps_pull_start, one more for ps_pull (a pull is
 * a start and a finish), so a blocking pull always finds one. */
#define NSLOTS (PS_MAX_STARTED + 1)
#define BLOCKING_SLOT PS_MAX_STARTED

struct client {
  struct net *net;
  struct shard *sh; /* [S] */
  uint32_t S, rank;
  uint64_t dense_total;
  int timeout_ms, retries, backoff_ms;
  struct logger *log;
  struct msg_enc enc;
  uint64_t next_id;
  struct started st[NSLOTS];
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
 * the caller's index of grouped position g, gk[g] its key. Uses the
 * client's shard_of and cur (scratch(c, n, ...) first). */
static void group(struct client *c, size_t n, const uint64_t *keys,
                  size_t *from, uint64_t *gk, size_t *pos) {
  memset(pos, 0, (c->S + 1) * sizeof(size_t));
  for (size_t i = 0; i < n; i++) {
    c->shard_of[i] = keys_shard(keys[i], c->S);
    pos[c->shard_of[i] + 1]++;
  }
  for (uint32_t s = 0; s < c->S; s++)
    pos[s + 1] += pos[s];
  /* A stable counting sort. */
  memcpy(c->cur, pos, c->S * sizeof(size_t));
  for (size_t i = 0; i < n; i++) {
    size_t g = c->cur[c->shard_of[i]]++;
    from[g] = i;
    gk[g] = keys[i];
  }
}

static void call_reset(struct call *k) {
  k->active = false;
  k->answered = false;
  k->attempts = 0;
}

static void begin(struct client *c) {
  for (uint32_t s = 0; s < c->S; s++)
    call_reset(&c->sh[s].now);
}

/* Sets up the request k (one of shard s's) with a fresh header; returns it
 * to fill in. */
static struct msg *request_in(struct client *c, struct call *k, enum msg_op op,
                              uint64_t id) {
  call_reset(k);
  msg_init(&k->req);
  k->req.op = (uint8_t)op;
  k->req.id = id;
  k->req.from = c->rank;
  k->active = true;
  return &k->req;
}

/* Shard s's request of the current blocking round. */
static struct msg *request(struct client *c, uint32_t s, enum msg_op op,
                           uint64_t id) {
  return request_in(c, &c->sh[s].now, op, id);
}

static int send_req(struct client *c, struct shard *sh, struct call *k,
                    char *err, size_t errlen) {
  char e[512];
  k->attempts++;
  k->since_ns = clock_ns();
  int rc = net_send_msg(sh->sock, NULL, &k->req, &c->enc, e, sizeof(e));
  if (rc != 0) {
    snprintf(err, errlen, "pserver %s: cannot send %s (id %llu): %s",
             sh->endpoint, msg_op_name(k->req.op),
             (unsigned long long)k->req.id, e);
    return -1;
  }
  return 0;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/* The call of shard s waiting for a reply with this id, or NULL: the
 * blocking call's request or a started pull's. */
static struct call *call_of(struct client *c, uint32_t s, uint64_t id) {
  struct call *k = &c->sh[s].now;
  if (k->active && !k->answered && k->req.id == id)
    return k;
  for (int h = 0; h < NSLOTS; h++) {
    if (!c->st[h].used)
      continue;
    k = &c->st[h].calls[s];
    if (k->active && !k->answered && k->req.id == id)
      return k;
  }
  return NULL;
}

/* Reads one message from shard s (waiting up to timeout_ms) and hands it
 * to the call it answers. One socket carries the replies of several calls
 * (a started pull's comes back while a push waits), so replies go by id; a
 * reply nobody waits for (a late answer to a resent, failed or abandoned
 * request) is dropped. Returns 0 (something was read, or a signal
 * interrupted the wait), NET_TIMEOUT, or -1 with the cause in err. */
static int receive(struct client *c, uint32_t s, int timeout_ms, char *err,
                   size_t errlen) {
  struct shard *sh = &c->sh[s];
  char e[384];
  int rc = net_recv(sh->sock, sh->in, timeout_ms, e, sizeof(e));
  if (rc == NET_TIMEOUT)
    return NET_TIMEOUT;
  if (rc < 0 && strstr(e, "interrupted")) /* a signal: wait on */
    return 0;
  if (rc < 0) {
    snprintf(err, errlen, "%s", e);
    return -1;
  }
  if (msg_decode(net_msg_frames(sh->in), net_msg_nframes(sh->in), &sh->rep, e,
                 sizeof(e)) < 0) {
    snprintf(err, errlen,
             "a reply does not decode: %s (a pserver of another maskps "
             "version?)",
             e);
    return -1;
  }
  struct call *k = sh->rep.reply ? call_of(c, s, sh->rep.id) : NULL;
  if (!k)
    return 0;
  /* The reply's frames and decode become the call's; the call's old ones
   * are reused for the next read. */
  struct net_msg *in = k->in;
  k->in = sh->in;
  sh->in = in;
  struct msg rep = k->rep;
  k->rep = sh->rep;
  sh->rep = rep;
  k->answered = true;
  return 0;
}

/* Waits for the reply to shard s's call k, resending on timeouts; checks
 * that it is a reply of the right kind. */
static int await(struct client *c, uint32_t s, struct call *k, char *err,
                 size_t errlen) {
  struct shard *sh = &c->sh[s];
  char e[512];
  while (!k->answered) {
    int64_t left = (int64_t)c->timeout_ms -
                   (int64_t)((clock_ns() - k->since_ns) / 1000000u);
    int rc = receive(c, s, left > 0 ? (int)left : 0, e, sizeof(e));
    if (rc == 0)
      continue;
    if (rc != NET_TIMEOUT) {
      snprintf(err, errlen, "pserver %s: waiting for %s (id %llu): %s",
               sh->endpoint, msg_op_name(k->req.op),
               (unsigned long long)k->req.id, e);
      return -1;
    }
    if (k->attempts > c->retries) {
      snprintf(err, errlen,
               "pserver %s did not answer %s (id %llu): %d attempts, %d ms "
               "each; is it running and reachable? (cluster.request_"
               "timeout_ms sets the wait)",
               sh->endpoint, msg_op_name(k->req.op),
               (unsigned long long)k->req.id, k->attempts, c->timeout_ms);
      return -1;
    }
    int pause = c->backoff_ms << (k->attempts - 1 < 10 ? k->attempts - 1 : 10);
    logger_warn(c->log,
                "pserver %s: no answer to %s (id %llu) in %d ms; retry %d of "
                "%d in %d ms",
                sh->endpoint, msg_op_name(k->req.op),
                (unsigned long long)k->req.id, c->timeout_ms, k->attempts,
                c->retries, pause);
    sleep_ms(pause);
    if (send_req(c, sh, k, err, errlen) < 0)
      return -1;
  }
  if (k->rep.op == MSG_ERROR) {
    snprintf(err, errlen, "pserver %s refused %s (id %llu): %s: %.*s",
             sh->endpoint, msg_op_name(k->req.op),
             (unsigned long long)k->req.id, msg_err_name(k->rep.code),
             (int)k->rep.text_len, k->rep.text ? k->rep.text : "");
    return -1;
  }
  if (k->rep.op != k->req.op) {
    snprintf(err, errlen, "pserver %s answered %s (id %llu) with a %s reply",
             sh->endpoint, msg_op_name(k->req.op),
             (unsigned long long)k->req.id, msg_op_name(k->rep.op));
    return -1;
  }
  return 0;
}

/* Sends every active shard's request, then gathers the replies. */
static int round_trip(struct client *c, char *err, size_t errlen) {
  for (uint32_t s = 0; s < c->S; s++)
    if (c->sh[s].now.active &&
        send_req(c, &c->sh[s], &c->sh[s].now, err, errlen) < 0)
      return -1;
  for (uint32_t s = 0; s < c->S; s++)
    if (c->sh[s].now.active && await(c, s, &c->sh[s].now, err, errlen) < 0)
      return -1;
  return 0;
}

/* ---- the ps operations -------------------------------------------------- */

/* Pulls: one request per pserver holding some of the keys, all sent by
 * start; finish gathers the replies into the caller's key order. */

static void started_release(struct client *c, struct started *p) {
  p->used = false;
  for (uint32_t s = 0; s < c->S; s++)
    call_reset(&p->calls[s]);
}

static int pull_start_in(struct client *c, int h, uint32_t table, uint64_t step,
                         size_t n, const uint64_t *keys,
                         const struct ps_rows *out, char *err, size_t errlen) {
  struct started *p = &c->st[h];
  CHECK(!p->used, "pull slot %d in use", h);
  if (n > p->cap) {
    p->cap = n;
    p->gk = xrealloc(p->gk, n * sizeof(uint64_t));
    p->from = xrealloc(p->from, n * sizeof(size_t));
  }
  scratch(c, n, 0);
  group(c, n, keys, p->from, p->gk, p->pos);
  uint64_t id = c->next_id++;
  for (uint32_t s = 0; s < c->S; s++) {
    call_reset(&p->calls[s]);
    size_t m = p->pos[s + 1] - p->pos[s];
    if (m == 0)
      continue;
    if (m > MSG_MAX_KEYS) {
      snprintf(err, errlen,
               "pull of %zu keys sends %zu to pserver %s, over the %u a "
               "message may carry; split the batch",
               n, m, c->sh[s].endpoint, MSG_MAX_KEYS);
      started_release(c, p);
      return -1;
    }
    struct msg *q = request_in(c, &p->calls[s], MSG_PULL, id);
    q->table = table;
    q->n = (uint32_t)m;
    q->step = step;
    q->keys = p->gk + p->pos[s];
  }
  p->used = true; /* from here on its replies are routed to it */
  p->table = table;
  p->n = n;
  p->out = *out;
  for (uint32_t s = 0; s < c->S; s++)
    if (p->calls[s].active &&
        send_req(c, &c->sh[s], &p->calls[s], err, errlen) < 0) {
      started_release(c, p);
      return -1;
    }
  return h;
}

/* Waits for a started pull's replies and writes them to its out. */
static long pull_collect(struct client *c, struct started *p, char *err,
                         size_t errlen) {
  const struct ps_rows *out = &p->out;
  size_t n = p->n;
  if (n == 0)
    return 0;
  /* The wait counts from now at the earliest: a pull started long ago
   * (the caller computed meanwhile) is not timed out for that. */
  uint64_t now = clock_ns();
  for (uint32_t s = 0; s < c->S; s++)
    if (p->calls[s].active && p->calls[s].since_ns < now)
      p->calls[s].since_ns = now;
  for (uint32_t s = 0; s < c->S; s++)
    if (p->calls[s].active && await(c, s, &p->calls[s], err, errlen) < 0)
      return -1;
  /* Prefix lengths in the caller's order, then the ragged offsets. */
  for (uint32_t s = 0; s < c->S; s++) {
    struct call *k = &p->calls[s];
    if (!k->active)
      continue;
    if (k->rep.n != k->req.n) {
      snprintf(err, errlen, "pserver %s answered a pull of %u keys with %u",
               c->sh[s].endpoint, k->req.n, k->rep.n);
      return -1;
    }
    for (uint32_t j = 0; j < k->rep.n; j++) {
      size_t i = p->from[p->pos[s] + j];
      out->plen[i] = k->rep.plen[j];
      out->count[i] = k->rep.count[j];
      out->clicks[i] = k->rep.clicks[j];
    }
  }
  scratch(c, n, 0);
  c->voff[0] = 0;
  for (size_t i = 0; i < n; i++)
    c->voff[i + 1] = c->voff[i] + out->plen[i];
  if (c->voff[n] > out->vals_cap) {
    snprintf(err, errlen,
             "pull of %zu keys of table %u returned %zu floats, more than "
             "vals_cap %zu (give room for n * D)",
             n, p->table, c->voff[n], out->vals_cap);
    return -1;
  }
  for (uint32_t s = 0; s < c->S; s++) {
    struct call *k = &p->calls[s];
    if (!k->active)
      continue;
    const float *v = k->rep.vals;
    for (uint32_t j = 0; j < k->rep.n; j++) {
      size_t i = p->from[p->pos[s] + j];
      if (out->plen[i]) { /* v is NULL when the reply has no floats */
        memcpy(out->vals + c->voff[i], v, out->plen[i] * sizeof(float));
        v += out->plen[i];
      }
    }
  }
  return (long)c->voff[n];
}

static long pull_finish_in(struct client *c, int h, char *err, size_t errlen) {
  CHECK(h >= 0 && h < NSLOTS && c->st[h].used, "pull handle %d is not started",
        h);
  struct started *p = &c->st[h];
  long rc = pull_collect(c, p, err, errlen);
  started_release(c, p);
  return rc;
}

static int net_pull_start(void *ctx, uint32_t table, uint64_t step, size_t n,
                          const uint64_t *keys, const struct ps_rows *out,
                          char *err, size_t errlen) {
  struct client *c = ctx;
  int h = 0;
  while (h < PS_MAX_STARTED && c->st[h].used)
    h++;
  CHECK(h < PS_MAX_STARTED, "more than %d pulls started", PS_MAX_STARTED);
  return pull_start_in(c, h, table, step, n, keys, out, err, errlen);
}

static long net_pull_finish(void *ctx, int h, char *err, size_t errlen) {
  CHECK(h < PS_MAX_STARTED, "pull handle %d", h);
  return pull_finish_in(ctx, h, err, errlen);
}

static void net_pull_abandon(void *ctx, int h) {
  struct client *c = ctx;
  CHECK(h >= 0 && h < PS_MAX_STARTED && c->st[h].used,
        "pull handle %d is not started", h);
  started_release(c, &c->st[h]);
}

static long net_pull(void *ctx, uint32_t table, uint64_t step, size_t n,
                     const uint64_t *keys, const struct ps_rows *out, char *err,
                     size_t errlen) {
  struct client *c = ctx;
  if (n == 0)
    return 0;
  if (pull_start_in(c, BLOCKING_SLOT, table, step, n, keys, out, err, errlen) <
      0)
    return -1;
  return pull_finish_in(c, BLOCKING_SLOT, err, errlen);
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
  group(c, n, g->keys, c->from, c->gk, c->pos);
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
    const struct call *k = &sh->now;
    if (!k->active)
      continue;
    if (k->rep.off != k->req.off || k->rep.nvals != k->req.nvals) {
      snprintf(err, errlen,
               "pserver %s answered dense [%llu, +%u) with [%llu, +%u)",
               sh->endpoint, (unsigned long long)k->req.off, k->req.nvals,
               (unsigned long long)k->rep.off, k->rep.nvals);
      return -1;
    }
    memcpy(out + (k->req.off - off), k->rep.vals, k->rep.nvals * sizeof(float));
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
static int net_set_lr_scale(void *ctx, float scale, char *err, size_t errlen) {
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

static void call_init(struct call *k) {
  memset(k, 0, sizeof(*k));
  k->in = net_msg_new();
  msg_init(&k->rep);
}

static void call_deinit(struct call *k) {
  msg_deinit(&k->rep);
  net_msg_free(k->in);
}

static void net_ctx_free(void *ctx) {
  struct client *c = ctx;
  if (!c)
    return;
  for (uint32_t s = 0; c->sh && s < c->S; s++) {
    struct shard *sh = &c->sh[s];
    call_deinit(&sh->now);
    msg_deinit(&sh->rep);
    net_msg_free(sh->in);
    net_sock_free(sh->sock);
    free(sh->endpoint);
  }
  for (int h = 0; h < NSLOTS; h++) {
    struct started *p = &c->st[h];
    for (uint32_t s = 0; p->calls && s < c->S; s++)
      call_deinit(&p->calls[s]);
    free(p->calls);
    free(p->gk);
    free(p->from);
    free(p->pos);
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
    .pull_start = net_pull_start,
    .pull_finish = net_pull_finish,
    .pull_abandon = net_pull_abandon,
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
  for (int h = 0; h < NSLOTS; h++) {
    struct started *p = &c->st[h];
    p->pos = xcalloc(c->S + 1, sizeof(size_t));
    p->calls = xcalloc(c->S, sizeof(struct call));
    for (uint32_t s = 0; s < c->S; s++)
      call_init(&p->calls[s]);
  }
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
    call_init(&sh->now);
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
  const struct msg *r = &c->sh[shard].now.rep;
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
