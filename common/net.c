#include "common/net.h"

#include "common/check.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* One server socket's list of admitted client keys, by ZAP domain. */
struct zap_domain {
  char name[32]; /* "maskps-<n>", set as the socket's ZMQ_ZAP_DOMAIN */
  size_t nkeys;
  uint8_t (*keys)[32]; /* binary CURVE public keys */
};

struct net {
  void *ctx;
  /* The ZAP handler (started by the first server with a client list). */
  pthread_mutex_t mu; /* guards everything below */
  bool zap_started;
  int zap_status; /* 1 bound, -1 failed, 0 starting */
  pthread_cond_t zap_cv;
  pthread_t zap_thread;
  struct zap_domain *domains;
  size_t ndomains;
};

struct net_sock {
  void *zs;
  bool server;
  char endpoint[256];
};

struct net_msg {
  zmq_msg_t parts[NET_MAX_FRAMES]; /* initialised ones: [0, nparts) */
  size_t nparts;
  struct msg_frame frames[NET_MAX_FRAMES];
  struct net_peer peer;
};

/* ZeroMQ's errno, said in words a person running a PS can act on (for
 * bind/connect/send/receive, where EINVAL means a bad endpoint). */
static const char *zerr_text(int e) {
  switch (e) {
  case EADDRINUSE:
    return "address already in use (another process, or another pserver, "
           "bound to it)";
  case EINVAL:
    return "invalid endpoint (expected tcp://host:port, tcp://host:*, "
           "ipc://path or inproc://name)";
  case EPROTONOSUPPORT:
    return "transport not supported (use tcp://, ipc:// or inproc://)";
  case ENOCOMPATPROTO:
    return "transport not compatible with this socket type";
  case EADDRNOTAVAIL:
    return "address not available on this host";
  case ENODEV:
    return "no such network interface";
  case EHOSTUNREACH:
    return "peer not connected (it left, or never connected)";
  case EAGAIN:
    return "timed out";
  case ETERM:
    return "the ZeroMQ context is shutting down";
  case EMTHREAD:
    return "no ZeroMQ I/O thread available";
  case EINTR:
    return "interrupted by a signal";
  case EFSM:
    return "socket in the wrong state for this operation";
  default:
    return zmq_strerror(e);
  }
}

static void zfail(char *err, size_t errlen, const char *what,
                  const char *endpoint) {
  int e = zmq_errno();
  if (err && errlen) {
    if (endpoint)
      snprintf(err, errlen, "net: %s %s: %s", what, endpoint, zerr_text(e));
    else
      snprintf(err, errlen, "net: %s: %s", what,
               e == EINVAL ? "invalid argument" : zerr_text(e));
  }
}

struct net *net_new(char *err, size_t errlen) {
  void *ctx = zmq_ctx_new();
  if (!ctx) {
    zfail(err, errlen, "cannot create a ZeroMQ context", NULL);
    return NULL;
  }
  /* Every socket sets a bounded linger; this only guards one that did not
   * get configured (zmq_ctx_term would wait for it forever). */
  zmq_ctx_set(ctx, ZMQ_BLOCKY, 0);
  struct net *n = xcalloc(1, sizeof(*n));
  n->ctx = ctx;
  pthread_mutex_init(&n->mu, NULL);
  pthread_cond_init(&n->zap_cv, NULL);
  return n;
}

void net_free(struct net *n) {
  if (!n)
    return;
  /* Terminating the context wakes the ZAP thread with ETERM; it closes its
   * socket, which lets zmq_ctx_term return. */
  while (zmq_ctx_term(n->ctx) != 0 && zmq_errno() == EINTR) {
  }
  if (n->zap_started)
    pthread_join(n->zap_thread, NULL);
  for (size_t i = 0; i < n->ndomains; i++)
    free(n->domains[i].keys);
  free(n->domains);
  pthread_cond_destroy(&n->zap_cv);
  pthread_mutex_destroy(&n->mu);
  free(n);
}

/* ---- ZAP (RFC 27): client authentication for CURVE servers ------------- */

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

/* Is `key` admitted in `domain`? Domains net did not create (CURVE servers
 * without a client list) admit everyone, as they would without a handler. */
static bool zap_admits(struct net *n, const char *domain, size_t dlen,
                       const uint8_t *key, size_t klen) {
  bool ok = true;
  pthread_mutex_lock(&n->mu);
  for (size_t i = 0; i < n->ndomains; i++) {
    const struct zap_domain *d = &n->domains[i];
    if (strlen(d->name) != dlen || memcmp(d->name, domain, dlen))
      continue;
    ok = false;
    for (size_t j = 0; j < d->nkeys && klen == 32; j++)
      if (!memcmp(d->keys[j], key, 32))
        ok = true;
  }
  pthread_mutex_unlock(&n->mu);
  return ok;
}

static void *zap_main(void *arg) {
  struct net *n = arg;
  void *rep = zmq_socket(n->ctx, ZMQ_REP);
  int linger = 0;
  bool ok = rep &&
            zmq_setsockopt(rep, ZMQ_LINGER, &linger, sizeof(linger)) == 0 &&
            zmq_bind(rep, ZAP_ENDPOINT) == 0;
  pthread_mutex_lock(&n->mu);
  n->zap_status = ok ? 1 : -1;
  pthread_cond_broadcast(&n->zap_cv);
  pthread_mutex_unlock(&n->mu);
  if (!ok) {
    if (rep)
      zmq_close(rep);
    return NULL;
  }
  /* Request: version, request id, domain, address, routing id, mechanism,
   * credentials... Reply: version, request id, status code, status text,
   * user id, metadata. */
  for (;;) {
    zmq_msg_t part[8];
    size_t np = 0;
    bool more = true, dead = false;
    while (more) {
      zmq_msg_t p;
      zmq_msg_init(&p);
      if (zmq_msg_recv(&p, rep, 0) < 0) {
        zmq_msg_close(&p);
        if (zmq_errno() == EINTR)
          continue;
        dead = true; /* ETERM: net_free */
        break;
      }
      more = zmq_msg_more(&p);
      if (np < 8) {
        zmq_msg_init(&part[np]);
        zmq_msg_move(&part[np++], &p);
      }
      zmq_msg_close(&p);
    }
    if (dead) {
      for (size_t i = 0; i < np; i++)
        zmq_msg_close(&part[i]);
      break;
    }
    bool admit = false;
    if (np >= 7 && zmq_msg_size(&part[5]) == 5 &&
        !memcmp(zmq_msg_data(&part[5]), "CURVE", 5))
      admit = zap_admits(n, zmq_msg_data(&part[2]), zmq_msg_size(&part[2]),
                         zmq_msg_data(&part[6]), zmq_msg_size(&part[6]));
    else if (np >= 6)
      admit = true; /* NULL/PLAIN sockets: net sets no domain on those */
    const char *code = admit ? "200" : "400";
    const char *text = admit ? "OK" : "client key not on this server's list";
    zmq_send(rep, "1.0", 3, ZMQ_SNDMORE);
    if (np >= 2)
      zmq_send(rep, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]),
               ZMQ_SNDMORE);
    else
      zmq_send(rep, "", 0, ZMQ_SNDMORE);
    zmq_send(rep, code, 3, ZMQ_SNDMORE);
    zmq_send(rep, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(rep, "", 0, ZMQ_SNDMORE);
    zmq_send(rep, "", 0, 0);
    for (size_t i = 0; i < np; i++)
      zmq_msg_close(&part[i]);
  }
  zmq_close(rep);
  return NULL;
}

/* Registers keys under a new ZAP domain (starting the handler if needed) and
 * sets that domain on the socket. */
static int zap_register(struct net *n, void *zs, const char *const *keys,
                        size_t nkeys, char *err, size_t errlen) {
  uint8_t(*bin)[32] = xcalloc(nkeys, 32);
  for (size_t i = 0; i < nkeys; i++)
    if (!keys[i] || strlen(keys[i]) != NET_KEY_LEN ||
        !zmq_z85_decode(bin[i], keys[i])) {
      if (err && errlen)
        snprintf(err, errlen,
                 "net: client key %zu is not a %d-character Z85 CURVE key", i,
                 NET_KEY_LEN);
      free(bin);
      return -1;
    }
  pthread_mutex_lock(&n->mu);
  if (!n->zap_started) {
    n->zap_started = true;
    CHECK(pthread_create(&n->zap_thread, NULL, zap_main, n) == 0,
          "cannot start the ZAP thread");
  }
  while (n->zap_status == 0)
    pthread_cond_wait(&n->zap_cv, &n->mu);
  int status = n->zap_status;
  struct zap_domain *d = NULL;
  if (status > 0) {
    n->domains = xrealloc(n->domains, (n->ndomains + 1) * sizeof(*d));
    d = &n->domains[n->ndomains];
    snprintf(d->name, sizeof(d->name), "maskps-%zu", n->ndomains);
    d->nkeys = nkeys;
    d->keys = bin;
    n->ndomains++;
  }
  pthread_mutex_unlock(&n->mu);
  if (status < 0) {
    if (err && errlen)
      snprintf(err, errlen,
               "net: cannot start the CURVE client "
               "authentication handler (ZAP)");
    free(bin);
    return -1;
  }
  if (zmq_setsockopt(zs, ZMQ_ZAP_DOMAIN, d->name, strlen(d->name)) != 0) {
    zfail(err, errlen, "cannot set ZMQ_ZAP_DOMAIN", NULL);
    return -1;
  }
  return 0;
}

static int setopt_int(struct net_sock *s, int opt, int v, const char *name,
                      char *err, size_t errlen) {
  if (zmq_setsockopt(s->zs, opt, &v, sizeof(v)) == 0)
    return 0;
  char what[80];
  snprintf(what, sizeof(what), "cannot set %s=%d", name, v);
  zfail(err, errlen, what, NULL);
  return -1;
}

static int setopt_str(struct net_sock *s, int opt, const char *v,
                      const char *name, char *err, size_t errlen) {
  if (v && strlen(v) == NET_KEY_LEN &&
      zmq_setsockopt(s->zs, opt, v, NET_KEY_LEN) == 0)
    return 0;
  if (err && errlen)
    snprintf(err, errlen, "net: %s is not a %d-character Z85 CURVE key", name,
             NET_KEY_LEN);
  return -1;
}

/* The options every maskps socket gets; see net.h for why. */
static int configure(struct net *net, struct net_sock *s,
                     const struct net_opts *o, char *err, size_t errlen) {
  int hwm = o && o->hwm > 0 ? o->hwm : NET_DEFAULT_HWM;
  int sndtimeo = NET_DEFAULT_SEND_TIMEOUT_MS;
  if (o && o->send_timeout_ms)
    sndtimeo = o->send_timeout_ms < 0 ? -1 : o->send_timeout_ms;
  int64_t maxmsg = NET_MAX_FRAME_BYTES;
  if (setopt_int(s, ZMQ_LINGER, NET_LINGER_MS, "ZMQ_LINGER", err, errlen) ||
      setopt_int(s, ZMQ_SNDHWM, hwm, "ZMQ_SNDHWM", err, errlen) ||
      setopt_int(s, ZMQ_RCVHWM, hwm, "ZMQ_RCVHWM", err, errlen) ||
      setopt_int(s, ZMQ_SNDTIMEO, sndtimeo, "ZMQ_SNDTIMEO", err, errlen) ||
      setopt_int(s, ZMQ_TCP_KEEPALIVE, 1, "ZMQ_TCP_KEEPALIVE", err, errlen) ||
      setopt_int(s, ZMQ_HEARTBEAT_IVL, 10000, "ZMQ_HEARTBEAT_IVL", err,
                 errlen) ||
      setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, 30000, "ZMQ_HEARTBEAT_TIMEOUT", err,
                 errlen))
    return -1;
  if (zmq_setsockopt(s->zs, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0) {
    zfail(err, errlen, "cannot set ZMQ_MAXMSGSIZE", NULL);
    return -1;
  }
  if (s->server) {
    if (setopt_int(s, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY", err,
                   errlen))
      return -1;
  }
  bool curve = o && (o->curve_self || o->curve_server_pub);
  if (!curve)
    return 0;
  if (!zmq_has("curve")) {
    if (err && errlen)
      snprintf(err, errlen,
               "net: security.curve is on but this libzmq was "
               "built without CURVE");
    return -1;
  }
  if (s->server) {
    if (!o->curve_self) {
      if (err && errlen)
        snprintf(err, errlen, "net: a CURVE server needs its own keypair");
      return -1;
    }
    if (setopt_int(s, ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER", err, errlen) ||
        setopt_str(s, ZMQ_CURVE_SECRETKEY, o->curve_self->sec,
                   "the server's secret key", err, errlen))
      return -1;
    if (o->ncurve_clients && zap_register(net, s->zs, o->curve_clients,
                                          o->ncurve_clients, err, errlen) < 0)
      return -1;
    return 0;
  }
  if (!o->curve_server_pub) {
    if (err && errlen)
      snprintf(err, errlen,
               "net: a CURVE client needs the server's public "
               "key");
    return -1;
  }
  struct net_keypair eph;
  const struct net_keypair *self = o->curve_self;
  if (!self) {
    if (net_keypair_new(&eph, err, errlen) < 0)
      return -1;
    self = &eph;
  }
  return setopt_str(s, ZMQ_CURVE_SERVERKEY, o->curve_server_pub,
                    "the server's public key", err, errlen) ||
                 setopt_str(s, ZMQ_CURVE_PUBLICKEY, self->pub,
                            "the client's public key", err, errlen) ||
                 setopt_str(s, ZMQ_CURVE_SECRETKEY, self->sec,
                            "the client's secret key", err, errlen)
             ? -1
             : 0;
}

static struct net_sock *sock_new(struct net *n, bool server, char *err,
                                 size_t errlen) {
  void *zs = zmq_socket(n->ctx, server ? ZMQ_ROUTER : ZMQ_DEALER);
  if (!zs) {
    zfail(err, errlen, "cannot create a socket", NULL);
    return NULL;
  }
  struct net_sock *s = xcalloc(1, sizeof(*s));
  s->zs = zs;
  s->server = server;
  return s;
}

struct net_sock *net_server_new(struct net *n, const char *endpoint,
                                const struct net_opts *opts, char *err,
                                size_t errlen) {
  struct net_sock *s = sock_new(n, true, err, errlen);
  if (!s)
    return NULL;
  if (configure(n, s, opts, err, errlen) < 0)
    goto fail;
  if (zmq_bind(s->zs, endpoint) != 0) {
    zfail(err, errlen, "cannot bind", endpoint);
    goto fail;
  }
  size_t len = sizeof(s->endpoint);
  if (zmq_getsockopt(s->zs, ZMQ_LAST_ENDPOINT, s->endpoint, &len) != 0) {
    zfail(err, errlen, "cannot read the bound endpoint of", endpoint);
    goto fail;
  }
  return s;
fail:
  net_sock_free(s);
  return NULL;
}

struct net_sock *net_client_new(struct net *n, const char *const *endpoints,
                                size_t nendpoints, const struct net_opts *opts,
                                char *err, size_t errlen) {
  CHECK(nendpoints >= 1, "a client needs at least one endpoint");
  struct net_sock *s = sock_new(n, false, err, errlen);
  if (!s)
    return NULL;
  if (configure(n, s, opts, err, errlen) < 0)
    goto fail;
  for (size_t i = 0; i < nendpoints; i++)
    if (zmq_connect(s->zs, endpoints[i]) != 0) {
      zfail(err, errlen, "cannot connect to", endpoints[i]);
      goto fail;
    }
  snprintf(s->endpoint, sizeof(s->endpoint), "%s", endpoints[0]);
  return s;
fail:
  net_sock_free(s);
  return NULL;
}

void net_sock_free(struct net_sock *s) {
  if (!s)
    return;
  zmq_close(s->zs);
  free(s);
}

const char *net_sock_endpoint(const struct net_sock *s) {
  return s->endpoint;
}

/* One part; returns 0, NET_TIMEOUT or -1. */
static int send_part(struct net_sock *s, const void *data, size_t len,
                     bool more, char *err, size_t errlen) {
  for (;;) {
    if (zmq_send(s->zs, data, len, more ? ZMQ_SNDMORE : 0) >= 0)
      return 0;
    int e = zmq_errno();
    if (e == EINTR)
      continue;
    if (e == EAGAIN) {
      if (err && errlen)
        snprintf(err, errlen,
                 "net: send on %s timed out (queue full: peer not reading, "
                 "or not connected)",
                 s->endpoint);
      return NET_TIMEOUT;
    }
    zfail(err, errlen, "send on", s->endpoint);
    return -1;
  }
}

int net_send(struct net_sock *s, const struct net_peer *to,
             const struct msg_frame *frames, size_t n, char *err,
             size_t errlen) {
  CHECK(n >= 1, "a message has at least one frame");
  CHECK((to != NULL) == s->server,
        "a server names the peer, a client does not");
  if (s->server) {
    /* With ROUTER_MANDATORY an unknown peer fails here, on the routing id,
     * before any frame is queued. */
    int rc = send_part(s, to->id, to->len, true, err, errlen);
    if (rc)
      return rc;
  }
  for (size_t i = 0; i < n; i++) {
    /* A multipart message is queued whole once its first part is accepted
     * (the high-water mark counts messages), so a later part cannot time
     * out and leave half a message behind. */
    int rc =
        send_part(s, frames[i].data, frames[i].len, i + 1 < n, err, errlen);
    if (rc)
      return rc;
  }
  return 0;
}

int net_send_msg(struct net_sock *s, const struct net_peer *to,
                 const struct msg *m, struct msg_enc *enc, char *err,
                 size_t errlen) {
  msg_encode(m, enc);
  return net_send(s, to, enc->frames, enc->nframes, err, errlen);
}

struct net_msg *net_msg_new(void) {
  return xcalloc(1, sizeof(struct net_msg));
}

static void msg_clear(struct net_msg *m) {
  for (size_t i = 0; i < m->nparts; i++)
    zmq_msg_close(&m->parts[i]);
  m->nparts = 0;
  m->peer.len = 0;
}

void net_msg_free(struct net_msg *m) {
  if (!m)
    return;
  msg_clear(m);
  free(m);
}

const struct msg_frame *net_msg_frames(const struct net_msg *m) {
  return m->frames;
}
size_t net_msg_nframes(const struct net_msg *m) {
  return m->nparts;
}
const struct net_peer *net_msg_peer(const struct net_msg *m) {
  return &m->peer;
}

/* Receives one part into *part (initialised here). */
static int recv_part(struct net_sock *s, zmq_msg_t *part, int flags, char *err,
                     size_t errlen) {
  zmq_msg_init(part);
  for (;;) {
    if (zmq_msg_recv(part, s->zs, flags) >= 0)
      return 0;
    if (zmq_errno() == EINTR && !(flags & ZMQ_DONTWAIT))
      continue;
    zfail(err, errlen, "receive on", s->endpoint);
    zmq_msg_close(part);
    return -1;
  }
}

static bool more_parts(struct net_sock *s) {
  int more = 0;
  size_t len = sizeof(more);
  return zmq_getsockopt(s->zs, ZMQ_RCVMORE, &more, &len) == 0 && more;
}

int net_recv(struct net_sock *s, struct net_msg *into, int timeout_ms,
             char *err, size_t errlen) {
  msg_clear(into);
  zmq_pollitem_t item = {s->zs, 0, ZMQ_POLLIN, 0};
  int rc = zmq_poll(&item, 1, timeout_ms < 0 ? -1 : timeout_ms);
  if (rc < 0) {
    zfail(err, errlen, "waiting on", s->endpoint);
    return -1;
  }
  if (rc == 0) {
    if (err && errlen)
      snprintf(err, errlen, "net: receive on %s timed out after %d ms",
               s->endpoint, timeout_ms);
    return NET_TIMEOUT;
  }
  /* The whole multipart message has arrived: ZeroMQ delivers them
   * atomically, so the parts after the first never block. */
  if (s->server) {
    zmq_msg_t id;
    if (recv_part(s, &id, ZMQ_DONTWAIT, err, errlen) < 0)
      return -1;
    size_t n = zmq_msg_size(&id);
    into->peer.len =
        (uint8_t)(n < sizeof(into->peer.id) ? n : sizeof(into->peer.id));
    memcpy(into->peer.id, zmq_msg_data(&id), into->peer.len);
    zmq_msg_close(&id);
    if (!more_parts(s)) /* a routing id alone: an empty message */
      return 0;
  }
  size_t dropped = 0;
  for (;;) {
    zmq_msg_t *part =
        into->nparts < NET_MAX_FRAMES ? &into->parts[into->nparts] : NULL;
    zmq_msg_t sink;
    if (recv_part(s, part ? part : &sink, ZMQ_DONTWAIT, err, errlen) < 0) {
      msg_clear(into);
      return -1;
    }
    if (part) {
      into->frames[into->nparts].data = zmq_msg_data(part);
      into->frames[into->nparts].len = zmq_msg_size(part);
      into->nparts++;
    } else {
      zmq_msg_close(&sink);
      dropped++;
    }
    if (!more_parts(s))
      break;
  }
  if (dropped) {
    size_t total = into->nparts + dropped;
    struct net_peer peer = into->peer;
    msg_clear(into);
    into->peer = peer; /* so a server can still answer */
    if (err && errlen)
      snprintf(err, errlen,
               "net: a message of %zu frames arrived on %s (at most %d); "
               "discarded",
               total, s->endpoint, NET_MAX_FRAMES);
    return -1;
  }
  return 0;
}

int net_keypair_new(struct net_keypair *kp, char *err, size_t errlen) {
  if (zmq_curve_keypair(kp->pub, kp->sec) != 0) {
    zfail(err, errlen, "cannot generate a CURVE keypair", NULL);
    return -1;
  }
  return 0;
}

int net_keypair_from_secret(struct net_keypair *kp, char *err, size_t errlen) {
  if (strnlen(kp->sec, sizeof(kp->sec)) != NET_KEY_LEN ||
      zmq_curve_public(kp->pub, kp->sec) != 0) {
    if (err && errlen)
      snprintf(err, errlen, "net: not a %d-character Z85 CURVE secret key",
               NET_KEY_LEN);
    return -1;
  }
  return 0;
}
