/*
 * server: the pserver's serving loop. A ROUTER bound to one endpoint
 * answers the requests of common/msg.h against one shard store:
 *
 *   PULL        rows of the keys (pending keys: plen 0, no floats)
 *   PUSH        optimizer step on the rows; answered after it is applied
 *   PULL_DENSE  values of a chunk of this shard's dense block
 *   PUSH_DENSE  one Adam step on such a chunk (table PS_DENSE_GRADS), or
 *               its values overwritten (table PS_DENSE_SET, common/ps.h)
 *   BARRIER     sync mode: held until all W workers sent BARRIER of the same
 *               step, then every one of them is answered together
 *   CHECKPOINT  store_checkpoint into <dir>/shard-<rank>
 *   STATS       JSON (see server_stats_json)
 *   SHUTDOWN    flush the store, answer, leave the loop
 *
 * Redis's habit (STYLE.md): a request that does not decode, carries an
 * unknown op, a reply flag, a key of another shard, a range outside this
 * shard, an unknown table or anything the store refuses gets an ERROR reply
 * echoing its id (id 0 if not even that could be read) and the loop goes on;
 * nothing of a refused request is applied. A message with no readable
 * routing id cannot be answered and is dropped (counted).
 *
 * Retries: a client that timed out resends a request with the same id. A
 * PUSH or PUSH_DENSE whose (sender rank, id) is among the last
 * SERVER_DEDUP pushes applied is answered without being applied again, so
 * a slow (not lost) push is not applied twice. This memory does not survive
 * a restart.
 *
 * Sync mode with several workers (opts.sync, workers > 1): BSP as
 * DESIGN.md puts it, a step's gradients from all workers are summed before
 * one update. A PUSH or PUSH_DENSE is checked (table, shard, lengths,
 * duplicate keys; a bad one gets its ERROR at once), answered, and held;
 * when the last worker's BARRIER of the step arrives, the held pushes are
 * summed per key in worker-rank order (so the result does not depend on
 * arrival order: deterministic), applied as one push per table and one
 * Adam step per dense float, and only then are the barriers answered (with
 * an ERROR if applying failed). Per key: gradients summed entry by entry
 * over the longest glen, counts and clicks summed, the new prefix the
 * largest asked for (0 = keep only if every worker said keep). With one
 * worker, or in async mode, a push is applied when it arrives. Pushes still
 * held at shutdown (a step without its barrier) are dropped, with a
 * warning.
 *
 * Not done here: holding a sync-mode PULL of step t+1 until step t is
 * applied (the worker's barrier already orders them).
 *
 * Threads: one. The server borrows the store (one thread owns a store) and
 * its socket stays with the thread that called server_new; server_run must
 * run on that thread.
 */
#ifndef MASKPS_SERVER_H
#define MASKPS_SERVER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "common/logger.h"
#include "common/net.h"
#include "pserver/store.h"

#define SERVER_DEDUP 256   /* recent pushes remembered for retries */
#define SERVER_POLL_MS 100 /* default: how often the loop checks *stop */

struct server_opts {
  const char *endpoint;             /* to bind: "tcp://0.0.0.0:27000" */
  uint32_t rank;                    /* this shard's index, < nshards */
  uint32_t nshards;                 /* S: keys of other shards are refused */
  uint32_t workers;                 /* W: workers a BARRIER waits for */
  uint64_t dense_total;             /* floats in the whole dense vector */
  const struct store_table *tables; /* the store's tables (copied) */
  size_t ntables;
  const struct net_opts *net; /* NULL = plaintext defaults */
  struct logger *log;         /* borrowed; NULL = stderr lines */
  int poll_ms;                /* 0 = SERVER_POLL_MS */
  int sync;                   /* 1: train.mode sync (see above) */
  double stats_every_s;       /* server_run logs a "pserver" record this
                                 often (log.interval_s) and once when it
                                 stops; 0 = never */
};

struct server;

/* Binds the ROUTER (with its own ZeroMQ context) for the store `st`
 * (borrowed: it must outlive the server and is not closed by it). Returns
 * NULL with err set: bad options (rank >= nshards, no workers), endpoint in
 * use or invalid. Caller owns the result; free with server_free(). */
struct server *server_new(struct store *st, const struct server_opts *o,
                          char *err, size_t errlen);

/* The endpoint as bound, wildcard port resolved. Borrowed. */
const char *server_endpoint(const struct server *srv);

/* Serves until a SHUTDOWN request (answered after store_flush) or until
 * *stop becomes nonzero (checked every poll_ms; a signal handler may set
 * it), then flushes the store. Held barriers get an ERROR "shutting down".
 * Returns 0 on a clean exit, -1 with err set if the socket failed for good
 * or the final flush failed. stop may be NULL. */
int server_run(struct server *srv, volatile sig_atomic_t *stop, char *err,
               size_t errlen);

/* Writes one JSONL record (event "pserver") with the cheap statistics:
 * keys, bytes on disk, memtable and caches, cache hit rate, stalls,
 * compaction debt, pull/push latency p50/p99 (us) and the requests since
 * the last record. No table scan. Returns 0, or -1 if the store's
 * statistics or the write failed. */
int server_log_stats(struct server *srv);

/* Answers at most one request, waiting up to timeout_ms (-1 forever).
 * Returns 1 if a message was handled, 0 on timeout, 2 after SHUTDOWN was
 * handled, -1 with err set if the socket failed for good. For a serving
 * loop of one's own (tests, a future multi-store server). */
int server_step(struct server *srv, int timeout_ms, char *err, size_t errlen);

/* The STATS JSON object, as a STATS reply carries it:
 *   {"rank":0,"keys":N,"bytes_disk":N,"bytes_live":N,"bytes_memtable":N,
 *    "row_cache_bytes":N,"row_cache_budget":N,"block_cache_bytes":N,
 *    "cache_hit_rate":x,"stalls":{"write_stopped":0|1,
 *    "delayed_write_rate":N},"compaction_debt_bytes":N,"admitted":N,
 *    "expired":N,"step":N,"requests":{"PULL":N,...},"errors":N,
 *    "malformed":N,"pull_us":{"p50":x,"p99":x,"n":N},"push_us":{...},
 *    "tables":[{"id":0,"rows":N,"pending":N,"mean_p":x,"hist":[...]},...]}
 * hist[k] counts rows storing a prefix of k (hist[0] pending rows). The
 * tables part scans every row (store_table_scan): O(rows), for occasional
 * use; it is dropped (with "tables_truncated":true) when the JSON would
 * exceed MSG_MAX_JSON. Latencies are in microseconds, from a histogram of
 * quarter-octave buckets (+-10%). Caller owns the string; free(). NULL
 * with err set if the store's statistics fail. */
char *server_stats_json(struct server *srv, char *err, size_t errlen);

/* Closes the socket and the context. The store is not touched. NULL ok. */
void server_free(struct server *srv);

#endif
