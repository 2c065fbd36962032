/*
 * batch: one training step's examples, turned into what the parameter store
 * and the dense model each want (DESIGN.md "Processes and data flow").
 *
 *   examples (B, F feature ids)
 *     -> distinct keys U, in first-seen order (deterministic), an index map
 *        idx (B*F) -> 0..U-1, and each key's occurrences and clicks in the
 *        batch (the push's count/clicks: admission and AMTL statistics);
 *     -> after ps_pull of each table: the ragged rows expanded to (U, D) with
 *        zeros past each key's prefix, then gathered into E (B, F*D) (the
 *        model's input) with nn_embed_gather;
 *     -> after the model's backward: dE scattered (summed) per key, for the
 *        entries below the key's prefix only, and packed ragged for ps_push:
 *        key u sends exactly prefix[u] floats, so a gradient beyond a prefix
 *        is never pushed.
 *
 * Tables: every key of the batch is looked up in each of the batch's tables
 * (at most BATCH_MAX_TABLES; e.g. the D-float embeddings and, for LR, FM and
 * DeepFM, a 1-float "LR weight" table). A table's arrays below are views the
 * caller may read, and the AMTL layer may write `prefix` (the prefix the
 * forward uses) and `newp` (the prefix the store keeps) between batch_expand
 * and batch_gather.
 *
 * Prefixes: after batch_expand, prefix[u] = the pulled plen[u]: the stored
 * prefix (D for tables without AMTL), or 0 for a key the store has not
 * admitted (min_count): it reads as zeros and sends no gradient.
 *
 * Values: an example may carry a value per field (data_example.valued, e.g.
 * a CSV value column or a libFM "idx:0.5"). Then the model input is the
 * row times the value, E[b, f, :] = x[b, f] * row, in every table (the LR
 * weight too, as an FM takes w_i x_i), and the row's gradient is
 * x[b, f] * dE[b, f, :], summed over the row's occurrences in the batch
 * (nn_embed_gather/scatter's vals). A batch in which every value is 1
 * passes no values, so binary data computes exactly as before values
 * existed.
 *
 * Memory: all buffers are sized for Bmax*F distinct keys at batch_new; no
 * allocation per step. Not thread-safe; a batch belongs to one thread.
 */
#ifndef MASKPS_BATCH_H
#define MASKPS_BATCH_H

#include "common/ps.h"
#include "worker/data.h"

#include <stddef.h>
#include <stdint.h>

#define BATCH_MAX_TABLES 2

struct batch_table {
  uint32_t id; /* table id in the parameter store */
  int D;       /* floats in a full row */
  /* filled by ps_pull through batch_pull_out: */
  uint16_t *plen;   /* [U] floats pulled per key (0 = not admitted) */
  uint32_t *count;  /* [U] occurrences the store has seen */
  uint32_t *clicks; /* [U] clicks the store has seen */
  float *vals;      /* [Bmax*F*D] ragged pulled values */
  /* the forward's view, set by batch_expand: */
  float *rows;      /* [U*D] row u at rows + u*D, zeros past plen[u] */
  uint16_t *prefix; /* [U] prefix the forward uses (and pushes), 0..D */
  uint16_t *newp;   /* [U] prefix to store from now on, 0 = keep (AMTL) */
  int has_newp;     /* 1: push newp; 0: push NULL (keep every prefix);
                       batch_expand resets it to 0 */
  /* the backward's result, set by batch_scatter: */
  float *drows;  /* [U*D] gradient per key, zero past prefix[u] */
  float *grads;  /* [sum prefix] ragged, key u's prefix[u] floats in order */
  size_t ngrads; /* floats in grads */
};

struct batch {
  int Bmax, F;          /* capacity: examples, fields per example */
  int B;                /* examples added since batch_clear */
  size_t U;             /* distinct keys so far */
  float *labels;        /* [Bmax] 0/1 */
  uint64_t *groups;     /* [Bmax] gAUC group ids */
  float *xvals;         /* [Bmax*F] value per (b, f); meaningful only when
                           has_vals (else every value is 1) */
  int has_vals;         /* 1: some example added since batch_clear had
                           values (xvals filled for all B rows) */
  int32_t *idx;         /* [Bmax*F] (b, f) -> key 0..U-1, -1 = no feature */
  uint64_t *keys;       /* [Bmax*F] the distinct keys, first-seen order */
  uint32_t *occ;        /* [U] occurrences in this batch */
  uint32_t *occ_clicks; /* [U] occurrences with label 1 */
  int ntables;
  struct batch_table t[BATCH_MAX_TABLES];
  /* private: open-addressing set of the keys (slot -> key index + 1) */
  uint32_t *slots;
  uint32_t *key_slot; /* [U] the slot of each key, for clearing */
  size_t mask;        /* slots - 1 (a power of two >= 2 Bmax F) */
};

/* A batch for up to Bmax examples of F fields, looked up in ntables tables
 * (ids[i], dims[i] floats per row). CHECKs the sizes (Bmax, F >= 1,
 * 1 <= ntables <= BATCH_MAX_TABLES, dims in 1..4096). Caller owns the
 * result; free with batch_free(). */
struct batch *batch_new(int Bmax, int F, int ntables, const uint32_t *ids,
                        const int *dims);
void batch_free(struct batch *b);

/* Empties the batch (B = 0, U = 0). */
void batch_clear(struct batch *b);

/* Adds one example: its label, group, and keys[0..nkeys) as fields
 * 0..nkeys-1 (with their values when ex->valued); fields nkeys..F-1 get no
 * feature (-1). CHECKs B < Bmax and nkeys <= F. */
void batch_add(struct batch *b, const struct data_example *ex);

/* Points out at table t's pull buffers (room for U keys of D floats) for
 * ps_pull(ps, b->t[t].id, step, b->U, b->keys, out, ...). */
void batch_pull_out(struct batch *b, int t, struct ps_rows *out);

/* After the pull of table t: expands the ragged values into rows (U, D)
 * with zeros past each plen, sets prefix = plen, newp = 0 and has_newp = 0.
 * CHECKs that
 * every plen is in 0..D. */
void batch_expand(struct batch *b, int t);

/* out (B, F*D) = table t's rows by (b, f), masked to prefix (zeros for
 * missing features), times the (b, f) value when the batch has values.
 * For a 1-float table this is w (B, F). */
void batch_gather(struct batch *b, int t, float *out);

/* From dout (B, F*D): drows = the gradient summed per key (entries below
 * prefix only; each occurrence's times its value when the batch has
 * values), then packed ragged into grads (prefix[u] floats per key).
 * Returns the squared L2 norm of the packed gradient (for global norm
 * clipping together with the dense gradients). */
double batch_scatter(struct batch *b, int t, const float *dout);

/* Multiplies table t's packed gradient by s (grad-norm clipping). */
void batch_scale_grads(struct batch *b, int t, float s);

/* The push of table t for step: distinct keys, glen = prefix, the packed
 * grads, newp when the table has AMTL prefixes (else NULL), this batch's
 * occurrences and clicks. Borrows b's arrays: valid until the next
 * batch_clear. */
void batch_push_in(const struct batch *b, int t, uint64_t step,
                   struct ps_grads *g);

#endif
