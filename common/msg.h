/*
 * msg: the wire protocol between workers and pservers (DESIGN.md "Wire
 * protocol"). It turns a struct msg into frames and frames back into a
 * struct msg; it does not touch sockets (that is common/net.h) and knows
 * nothing about stores or models.
 *
 * A message is a multipart ZeroMQ message. Frame 0 is a msgpack map (the
 * header); the frames after it are raw little-endian arrays whose lengths the
 * header's counts fix exactly. Bulk data never goes through msgpack's typed
 * decoding (~160 MB/s); raw frames are read at memory speed.
 *
 * Header keys (short strings; values are msgpack unsigned ints unless said):
 *
 *   key    field        meaning
 *   v      -            protocol version, must equal MSG_VERSION
 *   op     op           enum msg_op
 *   id     id           request id; a reply echoes its request's id
 *   from   from         sender rank (a worker's rank, or a pserver's shard)
 *   re     reply        msgpack bool: false for a request, true for a reply
 *   t      table        table id (dense chunks use their own table id)
 *   n      n            number of keys
 *   nf     nvals        number of floats (ragged total, or dense chunk length)
 *   step   step         global step (u64)
 *   off    off          float offset of a dense chunk in the flat vector
 *   dir    text         checkpoint directory (str, <= MSG_MAX_PATH bytes)
 *   json   text         stats as a JSON object (str, <= MSG_MAX_JSON bytes)
 *   code   code         enum msg_err (any u32 is accepted, for newer peers)
 *   msg    text         error message (str, <= MSG_MAX_ERRTEXT bytes)
 *
 * Every message carries v, op, id, from, re. What else it carries, exactly
 * (a key that is missing or that does not belong to the op is an error):
 *
 *   op          re  header keys beyond the common five  frames after frame 0
 *   ----------  --  ----------------------------------  ----------------------
 *   PULL         0  t n step                            keys u64[n]
 *   PULL         1  t n nf step                         plen u16[n]
 *                                                       count u32[n]
 *                                                       clicks u32[n]
 *                                                       vals f32[nf]
 *   PUSH         0  t n nf step                         keys u64[n]
 *                                                       glen u16[n]
 *                                                       plen u16[n]
 *                                                       count u32[n]
 *                                                       clicks u32[n]
 *                                                       vals f32[nf]
 *   PUSH         1  t n step                            -
 *   PULL_DENSE   0  t off nf step                       -
 *   PULL_DENSE   1  t off nf step                       vals f32[nf]
 *   PUSH_DENSE   0  t off nf step                       vals f32[nf]
 *   PUSH_DENSE   1  t off nf step                       -
 *   BARRIER     0/1 step                                -
 *   CHECKPOINT  0/1 step dir                            -
 *   STATS        0  -                                   -
 *   STATS        1  json                                -
 *   SHUTDOWN    0/1 -                                   -
 *   ERROR        1  code msg                            -
 *
 * Meaning of the arrays:
 *   PULL reply: plen[i] is key i's stored prefix length p (0 = not admitted
 *     yet, reads as zeros; D for tables without AMTL), count/clicks its
 *     stats (AMTL frequency features), and vals the keys' values back to
 *     back, ragged: key i's p floats follow key i-1's, nf = sum(plen).
 *     Ragged rather than padded n*D because AMTL exists to keep short
 *     prefixes: padding would send the zeros the pserver does not store
 *     (at a mean p of D/4, 4x the bytes). The worker pads into [B,F,D] while
 *     scattering, which it has to do anyway.
 *   PUSH request: glen[i] is the number of gradient floats sent for key i
 *     (the prefix the worker used in its forward pass, <= D), vals holds
 *     them ragged (nf = sum(glen)); plen[i] is the prefix length the pserver
 *     should store from now on (0 = keep the stored length; non-AMTL tables
 *     send 0 or D); count[i]/clicks[i] are key i's occurrences and clicks in
 *     this batch (stats and admission); step is the worker's global step.
 *   Dense: the chunk is floats [off, off+nf) of the flat dense vector; a
 *     PULL_DENSE request carries no floats, its reply carries the values; a
 *     PUSH_DENSE request carries gradients. BARRIER's worker rank is `from`.
 *   The PULL request's step lets a sync-mode pserver hold the pull of step
 *   t+1 until step t's update is applied; the replies' step is the pserver's
 *   step when it answered (for staleness bookkeeping).
 *
 * Reply convention: a reply has the request's op with re=true and echoes id;
 * a request that fails gets an ERROR (always re=true) echoing id instead.
 *
 * Strictness: unknown header keys are REJECTED, not ignored. Peers of one
 * protocol version agree on the key set, so an unknown key means a build
 * mismatch or a corrupt frame, and saying so at once beats silently dropping
 * a field someone meant. New fields come with a new MSG_VERSION.
 *
 * Byte order: all raw frames are little-endian (build fails elsewhere).
 */
#ifndef MASKPS_MSG_H
#define MASKPS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSG_VERSION 1

/* Hard limits the decoder enforces (and the encoder CHECKs). */
#define MSG_MAX_KEYS (1u << 20)   /* keys per PULL/PUSH message */
#define MSG_MAX_FLOATS (1u << 26) /* floats per message: 256 MiB */
#define MSG_MAX_PATH 1024         /* bytes of a checkpoint directory name */
#define MSG_MAX_ERRTEXT 1024      /* bytes of an error message */
#define MSG_MAX_JSON (1u << 20)   /* bytes of a STATS reply's JSON */
#define MSG_MAX_HEADER_BYTES (MSG_MAX_JSON + 4096) /* frame 0 */
#define MSG_MAX_FRAMES 7 /* header + the most raw frames (PUSH: 6) */

enum msg_op {
  MSG_PULL = 1,
  MSG_PUSH = 2,
  MSG_PULL_DENSE = 3,
  MSG_PUSH_DENSE = 4,
  MSG_BARRIER = 5,
  MSG_CHECKPOINT = 6,
  MSG_STATS = 7,
  MSG_SHUTDOWN = 8,
  MSG_ERROR = 9,
  MSG_OP_COUNT_
};

/* Codes an ERROR reply carries. */
enum msg_err {
  MSG_E_MALFORMED = 1, /* the request did not decode */
  MSG_E_VERSION = 2,   /* protocol version mismatch */
  MSG_E_UNKNOWN_TABLE = 3,
  MSG_E_RANGE = 4, /* dense chunk or prefix length out of range */
  MSG_E_STORE = 5, /* the store failed (disk, RocksDB) */
  MSG_E_SHUTTING_DOWN = 6,
  MSG_E_UNSUPPORTED = 7, /* a valid op this server does not serve */
  MSG_E_INTERNAL = 8,
  MSG_ERR_COUNT_
};

/* One frame: bytes and their length. Borrowed in both directions. */
struct msg_frame {
  const void *data;
  size_t len;
};

/*
 * A message, decoded or to be encoded. Only the fields the op's row of the
 * table above names are meaningful; the decoder zeroes the rest.
 *
 * Arrays: after msg_decode they are correctly aligned for their type and
 * point either into the frames (borrowed: valid while the frames are) or,
 * when a frame was not aligned (ZeroMQ gives no alignment guarantee), into a
 * copy owned by the msg and freed by msg_deinit(). text is always a copy,
 * NUL-terminated. For msg_encode the arrays are borrowed from the caller and
 * must stay valid until the encoded frames are sent.
 */
struct msg {
  uint8_t op;            /* enum msg_op */
  bool reply;            /* re */
  uint64_t id;           /* request id, echoed by the reply */
  uint32_t from;         /* sender rank */
  uint32_t table;        /* t */
  uint32_t n;            /* keys, <= MSG_MAX_KEYS */
  uint32_t nvals;        /* nf: floats in vals (or dense chunk length) */
  uint64_t step;         /* global step */
  uint64_t off;          /* dense chunk offset, in floats */
  uint32_t code;         /* ERROR: enum msg_err */
  const char *text;      /* dir (CHECKPOINT), json (STATS reply), msg (ERROR) */
  uint32_t text_len;     /* bytes of text, without a terminator */
  const uint64_t *keys;  /* [n] feature ids */
  const uint16_t *glen;  /* [n] PUSH: gradient floats per key */
  const uint16_t *plen;  /* [n] prefix lengths (see the table) */
  const uint32_t *count; /* [n] occurrences */
  const uint32_t *clicks; /* [n] clicks */
  const float *vals;      /* [nvals] values or gradients */
  void *own_;             /* msg_decode's copies; private */
};

/* Encoded frames: frame 0 (the header) is owned by the msg_enc and reused by
 * the next msg_encode; the other frames borrow the encoded msg's arrays. */
struct msg_enc {
  struct msg_frame frames[MSG_MAX_FRAMES];
  size_t nframes;
  char *hdr_;   /* private: header bytes */
  size_t hlen_; /* private */
  size_t hcap_; /* private */
};

/* Zeroes m (no allocation). Equivalent to `struct msg m = {0}`. */
void msg_init(struct msg *m);
/* Frees what msg_decode copied; m is zeroed and may be decoded into again. */
void msg_deinit(struct msg *m);

/* Sets up a reply to req: same op and table, id echoed, reply=true, the
 * given sender rank; every other field zero. */
void msg_reply_to(struct msg *rep, const struct msg *req, uint32_t from);
/* Sets up an ERROR reply to req (req may be NULL when nothing of the request
 * could be read: id 0). text is borrowed, truncated to MSG_MAX_ERRTEXT. */
void msg_error_to(struct msg *rep, const struct msg *req, uint32_t from,
                  enum msg_err code, const char *text);

void msg_enc_init(struct msg_enc *e);
void msg_enc_deinit(struct msg_enc *e);

/* Builds e->frames for m. Never fails on a valid message; a message the
 * decoder would reject (counts over the limits, lengths that do not add up
 * to nvals, a prefix length over ROW_MAX_DIM, an unknown op) is our own bug
 * and CHECK-fails naming the problem. */
void msg_encode(const struct msg *m, struct msg_enc *e);

/* Validates frames and fills m. m must have been initialised (msg_init or
 * a previous decode); a previous decode's copies are released first.
 * Returns 0, or -1 with a message in err: no frames, a header that is not a
 * flat msgpack map, wrong protocol version, unknown op, unknown, duplicate,
 * missing or misplaced header keys, a value of the wrong type or range,
 * counts over the MSG_MAX_* limits, a wrong number of frames, a raw frame
 * whose length is not what the counts imply, prefix lengths over ROW_MAX_DIM
 * or not summing to nf, trailing bytes. Trusts no byte; never reads outside
 * the frames. On -1, m->code is the code for the ERROR reply
 * (MSG_E_VERSION for a protocol version mismatch, else MSG_E_MALFORMED) and
 * m->id, m->op, m->from hold what could be read (0 otherwise), so a server
 * can answer with msg_error_to(&rep, &req, rank, req.code, err). Call
 * msg_deinit() after success and failure alike. */
int msg_decode(const struct msg_frame *frames, size_t nframes, struct msg *m,
               char *err, size_t errlen);

/* True if a and b would encode to the same frames (only the fields their op
 * uses are compared; arrays by bytes, so NaNs compare by bit pattern). */
bool msg_equal(const struct msg *a, const struct msg *b);

/* "PULL", "PUSH", ...; "?" for an unknown op. */
const char *msg_op_name(unsigned op);
/* "malformed", "version", ...; "?" for an unknown code. */
const char *msg_err_name(unsigned code);

#endif
