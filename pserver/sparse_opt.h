/*
 * sparse_opt: the optimizers a pserver applies to one embedding row, and to
 * the flat dense vector (Adam). Pure functions over floats: no RocksDB, no
 * cache, no allocation. The store (pserver/store.c) decodes a row, calls
 * sparse_opt_apply, and encodes it back, so value and state change together.
 *
 * Update of one row at global step t with gradient g (the batch's gradient,
 * summed by the worker), for each of its p entries, in this order:
 *
 *   1. frequency-aware regularisation (DIN, Zhou et al. 2018), if freq_l2 > 0:
 *        g' = g + freq_l2 / n * w          n = the row's occurrence count
 *      (rare values are pulled harder towards 0 than frequent ones; n is the
 *      count after this batch's occurrences were added, so never 0 once the
 *      row is seen; n == 0 skips the term);
 *   2. weight decay, if weight_decay (lambda) > 0 and the optimizer is not
 *      FTRL (FTRL has its own l1/l2):
 *        w *= (1 - lr * lambda)^k
 *      with k = 1 ("sparse L2": decay only on the steps the row is updated)
 *      or, with lazy_decay, k = t - last_step: the decay the row would have
 *      received on every global step since its last update, caught up now in
 *      closed form (0 if t <= last_step, e.g. a second push of the same step
 *      in async mode; 1 for a row's first update: a row is born at its first
 *      update, the steps before it do not exist for it);
 *   3. the optimizer step with g':
 *        sgd      w -= lr g'
 *        adagrad  a += g'^2;  w -= lr g' / (sqrt(a) + eps)     a0 =
 * adagrad_init adam     s += 1 (the row's opt_step);  m = b1 m + (1-b1) g'; v =
 * b2 v + (1-b2) g'^2; w -= lr (m / (1-b1^s)) / (sqrt(v / (1-b2^s)) + eps) ftrl
 * (McMahan et al. 2013, FTRL-Proximal, alpha = lr) sigma = (sqrt(n + g'^2) -
 * sqrt(n)) / alpha; z += g' - sigma w;  n += g'^2; w = |z| <= l1 ? 0 : -(z -
 * sign(z) l1) / ((beta + sqrt(n)) / alpha + l2) none     nothing (a frozen
 * table)
 *
 * What is equivalent to what (tested in tests/pserver/test_sparse_opt.c):
 *   - SGD: decay-then-step equals "coupled" L2, i.e. SGD on g + lambda w:
 *     w - lr (g + lambda w) = (1 - lr lambda) w - lr g. So lazy decay with
 *     SGD reproduces, to float rounding, L2-regularised SGD that decays every
 *     row on every global step (eager), while touching only the rows in the
 *     batch.
 *   - Adagrad/Adam: the decay is decoupled (AdamW style: it does not enter
 *     the accumulators). Lazy decay reproduces eager decoupled decay of every
 *     row on every global step. It is NOT coupled L2 for these optimizers:
 *     coupled L2 would feed lambda w into a and v even on steps without data,
 *     which no lazy scheme can catch up in closed form.
 *
 * Adam's bias correction uses the row's own step count (opt_step), not the
 * global step: a row seen for the first time at step 10^6 gets the same
 * first update as at step 1.
 */
#ifndef MASKPS_SPARSE_OPT_H
#define MASKPS_SPARSE_OPT_H

#include <stddef.h>
#include <stdint.h>

#include "common/row.h"

struct sparse_opt {
  enum row_opt kind;  /* which optimizer (and row state layout) */
  float lr;           /* learning rate; FTRL's alpha */
  float beta1, beta2; /* Adam moment decay rates */
  float eps;          /* Adam/Adagrad denominator guard */
  float adagrad_init; /* Adagrad accumulator start value (>= 0) */
  float ftrl_beta;    /* FTRL beta (smoothing of the per-coordinate rate) */
  float l1, l2;       /* FTRL's L1 and L2 strengths */
  float weight_decay; /* lambda of step 2 above; 0 = off; not with FTRL */
  int lazy_decay;     /* 1: catch decay up from last_step (see above) */
  float freq_l2;      /* DIN lambda of step 1; 0 = off */
};

/* Fills o with the usual defaults for kind: lr 0.01 (adagrad 0.05, ftrl
 * alpha 0.05), beta1 0.9, beta2 0.999, eps 1e-8 (adagrad 1e-10),
 * adagrad_init 0.1, ftrl_beta 1, l1 = l2 = 0, no decay, no DIN term. */
void sparse_opt_defaults(struct sparse_opt *o, enum row_opt kind);

/* Checks the hyper-parameters (finite, in range, weight_decay with FTRL).
 * Returns 0, or -1 with a message naming the bad field in err. */
int sparse_opt_validate(const struct sparse_opt *o, char *err, size_t errlen);

/* Initial optimizer state for entries [from, to) of a row whose state is
 * slot-major with stride p (state[s * p + j] is slot s of entry j):
 * adagrad's accumulator = adagrad_init, everything else 0. */
void sparse_opt_init_state(const struct sparse_opt *o, float *state, unsigned p,
                           unsigned from, unsigned to);

/* One update of row r (r->p entries, r->opt == o->kind, CHECKed) with the
 * gradient g[0..r->p) at global step `step`. Uses r->count for the DIN term
 * and r->last_step for lazy decay; increments r->opt_step and sets
 * r->last_step = max(r->last_step, step). Borrows everything. */
void sparse_opt_apply(const struct sparse_opt *o, struct row *r, const float *g,
                      uint64_t step);

/* Adam with per-entry step counts on a flat dense vector (the dense shard):
 * n entries, each with its own step t[i] (incremented here), moments m and
 * v, and decoupled weight decay (o->weight_decay, once per call). Uses lr,
 * beta1, beta2, eps of o (o->kind is ignored). */
void sparse_opt_adam_dense(const struct sparse_opt *o, float *w, float *m,
                           float *v, uint32_t *t, const float *g, size_t n);

#endif
