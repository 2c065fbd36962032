/*
 * ps_net: the parameter store of common/ps.h over ZeroMQ, to S pservers
 * (distributed mode). The worker's side of the wire; pserver/server.h is
 * the other.
 *
 * Sharding (the same rule as pserver/ps_local.h, so distributed == embedded):
 * key k goes to pserver keys_shard(k, S); the dense vector's block s
 * (ps_dense_block) to pserver s. One DEALER per pserver, because a key must
 * reach its own shard (a DEALER over several endpoints would deal requests
 * round robin).
 *
 * One call = one request per pserver involved, all sent before any reply
 * is awaited, so the S pservers work in parallel; the replies are then
 * gathered and put back in the caller's key order.
 *
 * Faults: each request waits timeout_ms for its reply; on a timeout it is
 * sent again with the SAME request id (a pserver that applied a slow push
 * answers the retry without applying it twice, see server.h) after a pause
 * of backoff_ms, doubled at each retry. After `retries` retries the call
 * fails with "pserver <endpoint> did not answer <OP> ...". A pserver that
 * restarts in between is reconnected to by ZeroMQ on its own. Replies whose
 * id is not the awaited one (late answers to an earlier, failed request)
 * are dropped. An ERROR reply fails the call with the pserver's message.
 *
 * Started pulls (ps_pull_start): the requests go out at once, the replies
 * are read by ps_pull_finish, and in between other calls may be made: one
 * socket then carries the replies of several requests, which the client
 * tells apart by request id (each call has its own). The pserver answers a
 * client's requests in the order they were sent (one connection, one
 * serving thread), which is what gives ps.h's ordering guarantee. A
 * started pull's reply is waited for timeout_ms from its send or from the
 * call of ps_pull_finish, whichever is later, so the work done in between
 * does not count against it; on a timeout it is resent like any request
 * (and then reads what this client pushed before the resend: ps.h).
 *
 * Limits: one pserver's part of a pull or push carries at most
 * MSG_MAX_KEYS keys and MSG_MAX_FLOATS floats (the pserver refuses a pull
 * that could return more than MSG_MAX_FLOATS); the worker's batches are far
 * below.
 *
 * Not thread-safe: the sockets belong to the thread that called
 * ps_net_new.
 */
#ifndef MASKPS_PS_NET_H
#define MASKPS_PS_NET_H

#include <stddef.h>
#include <stdint.h>

#include "common/logger.h"
#include "common/net.h"
#include "common/ps.h"

#define PS_NET_TIMEOUT_MS 30000 /* default per-attempt reply timeout */
#define PS_NET_RETRIES 3        /* default retries after the first send */
#define PS_NET_BACKOFF_MS 100   /* default first pause before a retry */

struct ps_net_opts {
  const char *const *endpoints; /* [nshards] pserver i's endpoint */
  uint32_t nshards;             /* S >= 1 */
  uint32_t rank;                /* this worker's rank (`from`) */
  uint64_t dense_total;         /* floats in the whole dense vector */
  int timeout_ms;               /* per attempt; 0 = PS_NET_TIMEOUT_MS */
  int retries;    /* resends after a timeout; 0 = PS_NET_RETRIES, -1 none */
  int backoff_ms; /* first pause; 0 = PS_NET_BACKOFF_MS, doubled */
  const struct net_opts *net; /* NULL = plaintext defaults */
  /* CURVE (security.curve): pserver i's public key (Z85), [nshards]; each
   * socket gets net's options with curve_server_pub = server_pubs[i]. NULL
   * = use net as it is for every pserver. */
  const char *const *server_pubs;
  struct logger *log; /* borrowed; retries are logged; may be NULL */
};

/* Connects one DEALER to each endpoint (without waiting for the pservers:
 * an absent one shows up as a timeout at its first request). Returns NULL
 * with err set for a bad endpoint or options. Caller owns the result; free
 * with ps_free(). */
struct ps *ps_net_new(const struct ps_net_opts *o, char *err, size_t errlen);

/* Sends SHUTDOWN to every pserver and waits for their answers (each flushes
 * its store first). ps must come from ps_net_new. Returns 0, or -1 with err
 * naming the pservers that did not answer. */
int ps_net_shutdown(struct ps *ps, char *err, size_t errlen);

/* The STATS JSON of pserver `shard` (see server_stats_json). Returns a
 * string the caller owns (free()), or NULL with err set. */
char *ps_net_stats(struct ps *ps, uint32_t shard, char *err, size_t errlen);

/* The endpoint of pserver `shard`. Borrowed. */
const char *ps_net_endpoint(const struct ps *ps, uint32_t shard);

#endif
