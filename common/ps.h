/*
 * ps: "a parameter store" as the worker sees it (DESIGN.md "Processes and
 * data flow"): pull and push sparse rows, pull and push the flat dense
 * vector, wait at a barrier, checkpoint. A struct of function pointers and a
 * context, with two implementations:
 *
 *   worker/ps_net.h    over ZeroMQ to S pservers (distributed mode);
 *   pserver/ps_local.h in-process over S stores, no sockets (embedded mode).
 *
 * Only the program that wires them knows both: the training loop is written
 * against this header alone, so worker/ never includes pserver/ headers.
 *
 * What it is not: a cache, a batcher or a de-duplicator. The worker hashes,
 * de-duplicates and sums a batch itself; one call is one logical request
 * (an implementation may split it over shards).
 *
 * Shapes and the ragged layout are exactly those of common/msg.h's PULL
 * reply and PUSH request, so the network client moves them without repacking:
 *
 *   pull  (n keys of one table, D = that table's dim):
 *     plen[i]   floats returned for key i: its stored prefix length p
 *               (1..D), or 0 for a key not admitted yet (min_count), which
 *               reads as D zeros and sends none;
 *     count[i], clicks[i]  the key's stats (AMTL frequency features);
 *     vals      back to back: key i's plen[i] floats follow key i-1's; the
 *               caller gives room for n*D floats (the most a pull returns).
 *   push  (n DISTINCT keys of one table; the worker summed the batch):
 *     glen[i]   gradient floats sent for key i (the prefix its forward pass
 *               used, 0..D); grads holds them back to back;
 *     plen[i]   the prefix length to store from now on (AMTL tables: 1..D,
 *               or 0 = keep the stored one); NULL = keep for every key (and
 *               the only choice for tables without AMTL);
 *     count[i], clicks[i]  occurrences and clicks in this batch (admission
 *               and stats); NULL = 1 occurrence, 0 clicks each.
 *
 * Sharding, the same in both implementations (so that embedded and
 * distributed runs agree bit for bit): key k lives on shard
 * keys_shard(k, S); the dense vector of `dense_total` floats is cut into S
 * contiguous blocks by ps_dense_block(). Results come back in the caller's
 * key order whatever the shard order.
 *
 * Errors: -1 with one message in err naming what failed (the pserver
 * endpoint, the table, the key range). A failed call may have been applied
 * on some shards and not others (distributed mode: a pserver that went away
 * mid-request); pulls never change stored values.
 *
 * Threads: a struct ps belongs to one thread (its sockets do).
 */
#ifndef MASKPS_PS_H
#define MASKPS_PS_H

#include <stddef.h>
#include <stdint.h>

/* Output of ps_pull for n keys: caller-owned arrays. */
struct ps_rows {
  uint16_t *plen;   /* [n] floats returned per key (0 = not admitted) */
  uint32_t *count;  /* [n] occurrences seen so far */
  uint32_t *clicks; /* [n] clicks seen so far */
  float *vals;      /* [vals_cap] ragged values, sum(plen) used */
  size_t vals_cap;  /* floats vals holds; n * D always suffices */
};

/* Input of ps_push: borrowed for the call. */
struct ps_grads {
  uint32_t table;         /* table id */
  uint64_t step;          /* the worker's global step */
  size_t n;               /* keys */
  const uint64_t *keys;   /* [n] distinct feature ids */
  const uint16_t *glen;   /* [n] gradient floats per key, 0..D */
  const float *grads;     /* [sum glen] ragged gradients */
  const uint16_t *plen;   /* [n] new prefix length, 0 = keep; NULL = keep */
  const uint32_t *count;  /* [n] occurrences in the batch; NULL = 1 each */
  const uint32_t *clicks; /* [n] clicks in the batch; NULL = 0 each */
};

/* The implementation's entry points; ctx is struct ps's ctx. Same
 * contracts as the ps_* wrappers below. Every pointer is set (an
 * implementation without an operation sets a function returning -1). */
struct ps_ops {
  const char *name; /* "net", "local": for logs */
  long (*pull)(void *ctx, uint32_t table, uint64_t step, size_t n,
               const uint64_t *keys, const struct ps_rows *out, char *err,
               size_t errlen);
  int (*push)(void *ctx, const struct ps_grads *g, char *err, size_t errlen);
  int (*pull_start)(void *ctx, uint32_t table, uint64_t step, size_t n,
                    const uint64_t *keys, const struct ps_rows *out, char *err,
                    size_t errlen);
  long (*pull_finish)(void *ctx, int handle, char *err, size_t errlen);
  void (*pull_abandon)(void *ctx, int handle);
  int (*pull_dense)(void *ctx, uint64_t step, size_t off, size_t len,
                    float *out, char *err, size_t errlen);
  int (*push_dense)(void *ctx, uint64_t step, size_t off, size_t len,
                    const float *grads, char *err, size_t errlen);
  int (*set_dense)(void *ctx, size_t off, size_t len, const float *values,
                   char *err, size_t errlen);
  int (*set_lr_scale)(void *ctx, float scale, char *err, size_t errlen);
  int (*barrier)(void *ctx, uint64_t step, char *err, size_t errlen);
  int (*checkpoint)(void *ctx, uint64_t step, const char *dir, char *err,
                    size_t errlen);
  void (*free)(void *ctx);
};

struct ps {
  const struct ps_ops *ops; /* static table of the implementation */
  void *ctx;                /* owned by the ps; freed by ops->free */
  uint32_t nshards;         /* S */
  uint64_t dense_total;     /* floats in the flat dense vector */
};

/* Pulls n keys of `table` (n may be 0) into out, in the order of keys. step
 * is the caller's global step (a sync-mode pserver may use it to order the
 * pull after the previous step's update; replies are not affected). Keys
 * may repeat (each copy is answered). Returns the floats written to
 * out->vals (sum of plen), or -1 with err set: unknown table, vals_cap too
 * small, a pserver unreachable after its retries, a store error. */
long ps_pull(struct ps *ps, uint32_t table, uint64_t step, size_t n,
             const uint64_t *keys, const struct ps_rows *out, char *err,
             size_t errlen);

/* A pull in two halves, so that it overlaps other work (the worker pulls
 * batch t+1 while it computes batch t): ps_pull_start sends the requests
 * and returns a handle at once; ps_pull_finish(handle) waits for the
 * replies and fills out. Same arguments, results and errors as ps_pull,
 * split between the two: start fails for what it can see at once (too
 * many keys for a message, a pserver it cannot send to, and with ps_local
 * every error), finish for the rest.
 *
 * Ordering: a started pull reads the rows as they were when it was
 * started with respect to this ps's own calls. A push (or anything else)
 * made through the same ps between start and finish is not in its result:
 * ps_local pulls at start; a pserver answers one client's requests in the
 * order they were sent, and start sent them. Other workers' pushes in
 * between may or may not be in it. One exception: when a request or its
 * reply is lost (a pserver restarting) and ps_pull_finish resends it after
 * a timeout, the resent request is answered after what was sent before
 * the resend, this ps's pushes included. Other calls (pushes, blocking pulls,
 * barriers, more started pulls) may be made while pulls are started.
 *
 * Ownership: keys are borrowed for the call of start only (copied); out's
 * arrays are borrowed until finish or abandon returns, and their contents
 * are unspecified until finish returned >= 0. At most PS_MAX_STARTED
 * pulls are started and not finished at a time (more is our bug: CHECK).
 *
 * ps_pull_start returns a handle >= 0, or -1 with err set (then nothing
 * is started). ps_pull_finish returns the floats written to out->vals, or
 * -1 with err set; the handle is spent either way. ps_pull_abandon drops a
 * started pull without waiting (its replies are discarded when they come):
 * for a caller that stops early or failed. A handle from neither start nor
 * a live pull is our bug (CHECK). */
#define PS_MAX_STARTED 4
int ps_pull_start(struct ps *ps, uint32_t table, uint64_t step, size_t n,
                  const uint64_t *keys, const struct ps_rows *out, char *err,
                  size_t errlen);
long ps_pull_finish(struct ps *ps, int handle, char *err, size_t errlen);
void ps_pull_abandon(struct ps *ps, int handle);

/* Applies one push (see the header comment for the arrays): the optimizer
 * runs on every admitted row, stats are added, prefixes change. Returns 0,
 * or -1 with err set (unknown table, duplicate key, glen over D, a prefix
 * out of range, a pserver unreachable, a store error). In sync mode with
 * several workers the pservers answer at once but apply the step's pushes
 * of all workers, summed, when its barrier completes: pull after
 * ps_barrier to see them. */
int ps_push(struct ps *ps, const struct ps_grads *g, char *err, size_t errlen);

/* Dense vector, floats [off, off + len) of dense_total (len may be 0).
 * ps_pull_dense copies the current values into out[len]; ps_push_dense
 * applies one Adam step with grads[len] on the owning shards. Return 0, or
 * -1 with err set (range outside the vector, a pserver unreachable). */
int ps_pull_dense(struct ps *ps, uint64_t step, size_t off, size_t len,
                  float *out, char *err, size_t errlen);
int ps_push_dense(struct ps *ps, uint64_t step, size_t off, size_t len,
                  const float *grads, char *err, size_t errlen);

/* Overwrites dense values [off, off + len) and resets their Adam state (the
 * initial weights; warm start). Applied at once, also in sync mode. With
 * several workers, have one worker set the values (or all set the same
 * values before any step is applied): a late set would undo updates.
 * Returns 0, or -1 with err set (range, a pserver unreachable). */
int ps_set_dense(struct ps *ps, size_t off, size_t len, const float *values,
                 char *err, size_t errlen);

/* The plateau schedule: every optimizer of the store, the sparse tables'
 * and the dense Adam, runs from now on at scale times its configured
 * learning rate (absolute: pass the product of the decays so far). Applied
 * at once on every shard, also in sync mode (call it at a step boundary;
 * one worker, rank 0, decides). Why not a field of struct ps_grads: the
 * decay is a rare event of the whole run, not of one push, and it must
 * reach the dense optimizer too; a control message keeps the PUSH header
 * (common/msg.h) unchanged. Returns 0, or -1 with err set (scale not > 0,
 * a pserver unreachable). */
int ps_set_lr_scale(struct ps *ps, float scale, char *err, size_t errlen);

/* Sync mode: returns once every worker of the run has reached the barrier
 * of `step` on every shard and the step's pushes are applied (a worker
 * calls it after its pushes of the step were answered, and pulls step
 * t+1 after it). In-process (one worker) it returns 0 at once. Returns 0,
 * or -1 with err set: a pserver unreachable, the step's pushes could not
 * be applied, or the slowest worker took longer than the client's request
 * timeout times its attempts (ps_net.h). */
int ps_barrier(struct ps *ps, uint64_t step, char *err, size_t errlen);

/* A consistent checkpoint of every shard: shard i writes dir/shard-<i>
 * (dir is created if missing; shard directories must not exist yet). Call
 * it at a step boundary (after a barrier in sync mode). Returns 0, or -1
 * with err set. */
int ps_checkpoint(struct ps *ps, uint64_t step, const char *dir, char *err,
                  size_t errlen);

/* Releases the implementation (sockets, or the borrowed stores' wrapper).
 * NULL is fine. */
void ps_free(struct ps *ps);

/* "net" / "local". */
const char *ps_name(const struct ps *ps);

/* Wire convention between ps_net and the pserver (common/msg.h leaves the
 * table id of dense messages to its users): the table of a PUSH_DENSE says
 * what its floats are; PULL_DENSE uses PS_DENSE_GRADS. */
#define PS_DENSE_GRADS 0 /* gradients: one Adam step */
#define PS_DENSE_SET 1   /* values: overwrite, reset their Adam state */
#define PS_LR_SCALE                                                            \
  2 /* one float, off 0: ps_set_lr_scale, to every                             \
       pserver (also one without a dense block) */

/* The dense sharding rule: shard s of S owns the contiguous block
 * [*off, *off + *len) of a dense vector of `total` floats; blocks are in
 * shard order and their lengths differ by at most one (the first total % S
 * shards get one float more). */
void ps_dense_block(uint64_t total, uint32_t nshards, uint32_t shard,
                    uint64_t *off, uint64_t *len);

#endif
