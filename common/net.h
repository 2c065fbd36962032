/*
 * net: the small layer over ZeroMQ that carries maskps messages between
 * processes (and between threads, over inproc://). It moves frames; what the
 * frames mean is common/msg.h. It is the only module that includes zmq.h.
 *
 * Sockets:
 *   - a server is a ROUTER bound to one endpoint (a pserver). Every received
 *     message comes with the sender's routing id (struct net_peer), which a
 *     reply must name; replies to a peer that has gone fail with an error
 *     instead of vanishing (ZMQ_ROUTER_MANDATORY).
 *   - a client is a DEALER connected to one or several endpoints. With
 *     several, ZeroMQ deals requests round-robin among the connected ones,
 *     which suits interchangeable replicas only: a worker that must reach a
 *     given shard uses one client per pserver.
 *   No delimiter frame is used: a client sends [frames...], the server sees
 *   [routing id][frames...] and net hides the routing id.
 *
 * Settings, and why:
 *   - linger NET_LINGER_MS (bounded): a socket closed right after its last
 *     send (a pserver answering SHUTDOWN) still gets that reply out, but a
 *     dead peer cannot make a close or net_free hang for longer than that;
 *     what is still unsent then is dropped (clients retry requests).
 *   - send and receive high-water marks of NET_DEFAULT_HWM messages, and a
 *     send timeout (NET_DEFAULT_SEND_TIMEOUT_MS), so a peer that stops
 *     reading is reported instead of blocking a worker forever.
 *   - clients do NOT set ZMQ_IMMEDIATE: a request sent before its pserver
 *     is up waits in the queue and leaves when the connection comes up (a
 *     worker may start first), so an absent pserver shows up as a receive
 *     timeout. IMMEDIATE would turn it into a send timeout, but it also
 *     makes ZeroMQ discard replies already received from a peer that
 *     disconnects right after sending them (measured: ~1 in 10 SHUTDOWN
 *     replies lost), which is worse.
 *   - ZMQ_MAXMSGSIZE bounds each received frame at NET_MAX_FRAME_BYTES (the
 *     largest frame the protocol allows): a peer sending more is
 *     disconnected before its bytes are buffered.
 *   - ZMTP heartbeats every 10 s and TCP keepalive detect dead peers on
 *     links that carry no traffic.
 *
 * Security (config security.curve): CURVE when struct net_opts names keys.
 * All traffic is encrypted and the server proves its identity (clients know
 * its public key). A server given a list of client public keys also
 * authenticates its clients: net runs a ZAP handler thread per context (the
 * first such server starts it) that admits only listed keys; a client not
 * on the list never completes its handshake, so its requests are never
 * delivered. Without a list any client that knows the server's public key
 * may connect.
 *
 * Threads: the context is thread-safe; a socket must stay with the thread
 * that created it (STYLE.md rule 11). Errors are returned as -1 (or NULL)
 * with a message naming the endpoint and translating ZeroMQ's errno.
 */
#ifndef MASKPS_NET_H
#define MASKPS_NET_H

#include <stddef.h>
#include <stdint.h>

#include "common/msg.h"

#define NET_TIMEOUT (-2)                  /* net_recv/net_send: timed out */
#define NET_LINGER_MS 1000                /* unsent data kept after close */
#define NET_DEFAULT_HWM 1000              /* messages queued per peer */
#define NET_DEFAULT_SEND_TIMEOUT_MS 30000 /* before net_send gives up */
#define NET_MAX_FRAMES 16 /* frames a received message may have */
#define NET_MAX_FRAME_BYTES ((int64_t)4 * MSG_MAX_FLOATS + 4096)
#define NET_KEY_LEN 40 /* a CURVE key in Z85 text, without the NUL */

struct net;      /* a ZeroMQ context */
struct net_sock; /* a ROUTER server or a DEALER client */
struct net_msg;  /* a received multipart message */

/* The routing id of a client as a server sees it. Plain data: copy it to
 * reply later. */
struct net_peer {
  uint8_t id[255];
  uint8_t len;
};

/* A CURVE keypair as Z85 text (NUL-terminated). */
struct net_keypair {
  char pub[NET_KEY_LEN + 1];
  char sec[NET_KEY_LEN + 1];
};

/* Socket options; pass NULL for the defaults. Zeroed fields mean default. */
struct net_opts {
  int hwm;             /* messages; 0 = NET_DEFAULT_HWM */
  int send_timeout_ms; /* 0 = NET_DEFAULT_SEND_TIMEOUT_MS, -1 = forever */
  /* CURVE: both NULL = plaintext. A server sets curve_self (its keypair);
   * a client sets curve_server_pub and may set curve_self (a keypair is
   * generated when it does not). */
  const struct net_keypair *curve_self;
  const char *curve_server_pub;
  /* Server only: the Z85 public keys of the clients it admits (borrowed
   * during net_server_new). ncurve_clients 0 = any client. */
  const char *const *curve_clients;
  size_t ncurve_clients;
};

/* A new context. Returns NULL with err set if ZeroMQ cannot start one.
 * Caller owns the result; free with net_free() after closing every socket
 * (it waits for them, and up to NET_LINGER_MS for their unsent messages),
 * which also stops the ZAP handler if one was started. */
struct net *net_new(char *err, size_t errlen);
void net_free(struct net *n);

/* A ROUTER bound to endpoint ("tcp://127.0.0.1:5555", "tcp://0.0.0.0:*" for any
 * port, "inproc://name", "ipc:///path"). Returns NULL with err naming the
 * endpoint and the cause: address already in use, invalid endpoint,
 * unsupported transport, address not on this host, no CURVE support, a
 * malformed key.
 * Caller owns the result; free with net_sock_free(). */
struct net_sock *net_server_new(struct net *n, const char *endpoint,
                                const struct net_opts *opts, char *err,
                                size_t errlen);

/* A DEALER connected to each of the nendpoints endpoints (>= 1). Connecting
 * does not wait for the peer; a bad endpoint string fails here, an absent
 * peer shows up as a receive timeout (requests wait for it, up to the
 * high-water mark; then net_send times out). Returns NULL with err set. Caller
 * owns the result; free with net_sock_free(). */
struct net_sock *net_client_new(struct net *n, const char *const *endpoints,
                                size_t nendpoints, const struct net_opts *opts,
                                char *err, size_t errlen);

/* Closes the socket. Unsent messages get NET_LINGER_MS to leave (net_free
 * waits for them that long at most), then are dropped. NULL is fine. */
void net_sock_free(struct net_sock *s);

/* The endpoint as bound, with a wildcard port resolved
 * ("tcp://127.0.0.1:41234"); for a client, the first endpoint. Borrowed,
 * valid until net_sock_free. */
const char *net_sock_endpoint(const struct net_sock *s);

/* Sends frames[0..n) as one multipart message (n >= 1). A server must name
 * the peer `to` (from net_msg_peer); a client passes NULL. The bytes are
 * copied: frames may be reused as soon as this returns. Returns 0 once the
 * message is queued (not delivered: only a reply proves that); NET_TIMEOUT
 * if the send timeout passed with the queue full (peer not reading); -1 with
 * err set otherwise (a server's peer gone, context terminated). */
int net_send(struct net_sock *s, const struct net_peer *to,
             const struct msg_frame *frames, size_t n, char *err,
             size_t errlen);

/* msg_encode(m, enc) then net_send of the frames: enc is scratch space that
 * the caller keeps to reuse its header buffer. */
int net_send_msg(struct net_sock *s, const struct net_peer *to,
                 const struct msg *m, struct msg_enc *enc, char *err,
                 size_t errlen);

/* A reusable holder for received messages. Caller owns the result; free
 * with net_msg_free() (NULL is fine). */
struct net_msg *net_msg_new(void);
void net_msg_free(struct net_msg *m);

/* Waits up to timeout_ms (-1: forever, 0: only what is there) for one
 * message and stores it in `into`, replacing what it held (pointers from
 * before become invalid). Returns 0; NET_TIMEOUT with err "timed out after N
 * ms"; -1 with err set: interrupted by a signal, context terminated, or a
 * message of more than NET_MAX_FRAMES frames (discarded whole; for a server
 * the peer is still recorded, so it can answer with an ERROR). */
int net_recv(struct net_sock *s, struct net_msg *into, int timeout_ms,
             char *err, size_t errlen);

/* The frames of the last received message, without the routing id, as
 * msg_decode wants them. Borrowed from `m` until its next net_recv. */
const struct msg_frame *net_msg_frames(const struct net_msg *m);
size_t net_msg_nframes(const struct net_msg *m);
/* Who sent it (server sockets only; len 0 on a client). Borrowed. */
const struct net_peer *net_msg_peer(const struct net_msg *m);

/* A fresh CURVE keypair (the launcher makes one per pserver). Returns 0, or
 * -1 with err set if this libzmq was built without CURVE. */
int net_keypair_new(struct net_keypair *kp, char *err, size_t errlen);
/* Fills kp->pub from kp->sec. Returns 0, or -1 if sec is not a valid Z85
 * key or CURVE is unavailable. */
int net_keypair_from_secret(struct net_keypair *kp, char *err, size_t errlen);

#endif
