/* model threads: a batch split over T threads (model.h "Threads") computes
 * what one pass computes.
 *
 *   - every model kind, T = 2 and T = 3 (an uneven split: 389 rows), in
 *     train mode: logits, dE / dw, every parameter gradient and value equal
 *     the one-thread pass to 1e-4 relative (tests/nn/README's tolerance
 *     where reduction order differs: each row is computed by the same code
 *     on the same values, but OpenBLAS rounds a row differently with the
 *     row count of the product, LayerNorm amplifies that in the masknets
 *     (1.2e-5 seen), and the slices' gradient sums are added in another
 *     order; a wrong slice offset errs by O(1)); two steps with
 *     an SGD step between, so the replicas see the values the caller's
 *     optimizer wrote. Errors are relative to max(|a|, |b|, 1% of the
 *     array's largest value), so a sum that cancels to ~0 is judged by the
 *     rounding of its terms;
 *   - a batch of fewer than T x MODEL_SPLIT_MIN_ROWS rows is split into
 *     fewer slices, and still matches; model_threads() says how many
 *     threads a model really has (T, or 1 where it must not split);
 *   - the same when the caller's params hold other tensors before and
 *     after the model's (the replicas find their stretch of the buffer);
 *   - evaluation forward (train = false) is split too, and matches;
 *   - what must not be split is not: with BatchNorm (batch statistics) or
 *     dropout (row-indexed masks), or a batch below T x
 *     MODEL_SPLIT_MIN_ROWS, T threads give bit-identical results to one;
 *   - a thread count outside 1..MODEL_MAX_THREADS is refused by name.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/check.h"
#include "common/keys.h"
#include "worker/nn/model.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

enum { F = 6, D = 4, C = F * D, BMAX = 400 };

/* One model with its parameters and buffers for BMAX rows. */
struct net {
  struct params *p;
  struct model *m;
  float *logits, *dlogits, *dE, *dw;
};

/* g_extra: the caller's params also hold tensors before and after the
 * model's (as the trainer's hold the AMTL nets after them). */
static bool g_extra;

static void net_init(struct net *n, const struct model_options *o) {
  char err[256];
  n->p = params_new();
  if (g_extra)
    params_add(n->p, "before.w", 1, 3, 7, PARAMS_NORMAL, 1.0f);
  n->m = model_new(o, F, D, BMAX, n->p, err, sizeof(err));
  if (!n->m)
    fail_msg("%s: %s", model_kind_name(o->kind), err);
  if (g_extra)
    params_add(n->p, "after.w", 1, 5, 3, PARAMS_NORMAL, 1.0f);
  params_alloc(n->p, 11);
  n->logits = xcalloc(BMAX, sizeof(float));
  n->dlogits = xcalloc(BMAX, sizeof(float));
  n->dE = xcalloc((size_t)BMAX * C, sizeof(float));
  n->dw = xcalloc((size_t)BMAX * F, sizeof(float));
}

static void net_free(struct net *n) {
  model_free(n->m);
  params_free(n->p);
  free(n->logits), free(n->dlogits), free(n->dE), free(n->dw);
}

/* Uniform in [-a, a), a function of (seed, i) only. */
static float unif(uint64_t seed, size_t i, float a) {
  uint64_t h = keys_mix64(seed * 0x9E3779B97F4A7C15ULL + i + 1);
  return a * (2.0f * (float)((h >> 40) * 0x1p-24) - 1.0f);
}

/* Forward, logloss gradient, backward, SGD: one training step on B rows.
 * Fills n's logits, dE, dw and the gradients. */
static void train_step(struct net *n, const float *E, const float *w,
                       const float *y, int B, bool sgd) {
  bool lrw = model_uses_lr_weights(n->m);
  params_zero_grad(n->p);
  model_forward(n->m, E, lrw ? w : NULL, n->logits, B, true);
  memset(n->dlogits, 0, sizeof(float) * (size_t)B);
  nn_logloss_backward(n->logits, y, n->dlogits, B, 1.0f);
  memset(n->dE, 0, sizeof(float) * (size_t)B * C);
  memset(n->dw, 0, sizeof(float) * (size_t)B * F);
  model_backward(n->m, n->dlogits, n->dE, lrw ? n->dw : NULL, B);
  if (sgd) // SGD, not Adam: Adam's m / sqrt(v) would blow a rounding
    // difference in a near-zero gradient up to a full lr-sized step
    params_sgd_step(n->p, 0.1f);
}

/* Worst |a - b| / max(|a|, |b|, floor x the largest |a|) over n floats; 0
 * for equal arrays. The floor keeps values that cancel to near 0 (whose
 * rounding is that of their larger terms) from dominating. */
static double rel_err(const float *a, const float *b, size_t n, double floor,
                      size_t *at) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < n; i++)
    scale = fmax(scale, fabs((double)a[i]));
  floor *= scale;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (d == 0)
      continue;
    double s = fmax(fmax(fabs((double)a[i]), fabs((double)b[i])), floor);
    if (!(d / s <= worst)) { // NaN counts as worst
      worst = isnan(d) ? INFINITY : d / s;
      *at = i;
    }
  }
  return worst;
}

static void expect_close(const char *what, const char *model, const float *a,
                         const float *b, size_t n, double tol, double floor) {
  size_t at = 0;
  double e = rel_err(a, b, n, floor, &at);
  if (!(e <= tol))
    fail_msg("%s %s: relative error %.3g at %zu (%.9g vs %.9g), tol %.1g",
             model, what, e, at, (double)a[at], (double)b[at], tol);
}

static void expect_same(const char *what, const char *model, const float *a,
                        const float *b, size_t n) {
  if (memcmp(a, b, n * sizeof(float)))
    fail_msg("%s %s: differs between 1 and T threads (must not be split)",
             model, what);
}

struct inputs {
  float *E, *w, *y;
};

static struct inputs make_inputs(uint64_t seed) {
  struct inputs in;
  in.E = xcalloc((size_t)BMAX * C, sizeof(float));
  in.w = xcalloc((size_t)BMAX * F, sizeof(float));
  in.y = xcalloc(BMAX, sizeof(float));
  for (size_t i = 0; i < (size_t)BMAX * C; i++)
    in.E[i] = unif(seed, i, 0.5f);
  for (size_t i = 0; i < (size_t)BMAX * F; i++)
    in.w[i] = unif(seed + 1, i, 0.5f);
  for (size_t i = 0; i < BMAX; i++)
    in.y[i] = (float)(keys_mix64(seed + 7 + i) % 3 == 0);
  return in;
}

static void free_inputs(struct inputs *in) {
  free(in->E), free(in->w), free(in->y);
}

/* One-thread net a and T-thread net b, two steps on B rows: close (split)
 * or identical (same), then the evaluation forward. */
static void compare(const struct model_options *o1, int T, int B, bool same) {
  struct model_options oT = *o1;
  oT.threads = T;
  struct net a, b;
  net_init(&a, o1);
  net_init(&b, &oT);
  // the threads the model really has: a model that quietly stayed on one
  // thread would pass every comparison below
  bool coupled = o1->use_bn || o1->dropout > 0;
  assert_int_equal(model_threads(a.m), 1);
  assert_int_equal(model_threads(b.m), coupled ? 1 : T);
  struct inputs in = make_inputs(3 + (uint64_t)T);
  const char *name = model_kind_name(o1->kind);
  for (int s = 0; s < 2; s++) {
    train_step(&a, in.E, in.w, in.y, B, true);
    train_step(&b, in.E, in.w, in.y, B, true);
    if (same) {
      expect_same("logits", name, a.logits, b.logits, (size_t)B);
      expect_same("dE", name, a.dE, b.dE, (size_t)B * C);
      expect_same("values", name, a.p->values, b.p->values, a.p->len);
      continue;
    }
    double tol = 1e-4;
    expect_close("logits", name, a.logits, b.logits, (size_t)B, tol, 1e-2);
    expect_close("dE", name, a.dE, b.dE, (size_t)B * C, tol, 1e-2);
    if (model_uses_lr_weights(a.m))
      expect_close("dw", name, a.dw, b.dw, (size_t)B * F, tol, 1e-2);
    expect_close("grads", name, a.p->grads, b.p->grads, a.p->len, tol, 1e-2);
    expect_close("values", name, a.p->values, b.p->values, a.p->len, tol, 1e-2);
  }
  model_forward(a.m, in.E, in.w, a.logits, B, false);
  model_forward(b.m, in.E, in.w, b.logits, B, false);
  if (same)
    expect_same("eval logits", name, a.logits, b.logits, (size_t)B);
  else
    expect_close("eval logits", name, a.logits, b.logits, (size_t)B, 1e-4,
                 1e-2);
  free_inputs(&in);
  net_free(&a);
  net_free(&b);
}

static void small_options(struct model_options *o, enum model_kind k) {
  model_options_default(o, k);
  o->nhidden = 2;
  o->hidden[0] = 32;
  o->hidden[1] = 16;
  o->cross_layers = 2;
  o->num_blocks = 2;
  o->block_dim[0] = o->block_dim[1] = 16;
  o->nctrl = 1;
  o->ctrl_hidden[0] = 8;
}

static void test_every_kind_split(void **state) {
  (void)state;
  for (int k = 0; k < MODEL_KIND_COUNT_; k++) {
    struct model_options o;
    small_options(&o, (enum model_kind)k);
    compare(&o, 2, BMAX, false);
    compare(&o, 3, 389, false);
  }
  // a batch with room for fewer slices than threads: 3 threads, 300 rows
  // make 2 slices of 150 (one replica idles)
  struct model_options o3;
  small_options(&o3, MODEL_DCN);
  compare(&o3, 3, 300, false);
  // the other structures and bridges, which take other code paths
  struct model_options o;
  small_options(&o, MODEL_DCNV2);
  o.low_rank = 4;
  o.num_experts = 2;
  o.dcnv2_structure = MODEL_STACKED;
  compare(&o, 2, BMAX, false);
  small_options(&o, MODEL_EDCN);
  o.bridge = MODEL_BRIDGE_CONCAT;
  compare(&o, 2, BMAX, false);
  o.bridge = MODEL_BRIDGE_ADD;
  compare(&o, 2, BMAX, false);
  // the model's tensors in the middle of the caller's flat buffer
  g_extra = true;
  small_options(&o, MODEL_SERMASKNET);
  compare(&o, 2, BMAX, false);
  g_extra = false;
}

static void test_coupled_rows_not_split(void **state) {
  (void)state;
  struct model_options o;
  small_options(&o, MODEL_DNN);
  o.use_bn = true;
  compare(&o, 2, BMAX, true);
  small_options(&o, MODEL_EDCN);
  o.use_bn = true;
  compare(&o, 2, BMAX, true);
  small_options(&o, MODEL_DNN);
  o.dropout = 0.3f;
  compare(&o, 2, BMAX, true);
  // a batch too small to be worth splitting runs in one pass
  small_options(&o, MODEL_SERMASKNET);
  compare(&o, 2, 2 * MODEL_SPLIT_MIN_ROWS - 1, true);
}

static void test_bad_thread_count(void **state) {
  (void)state;
  struct model_options o;
  small_options(&o, MODEL_DNN);
  char err[256];
  for (int t = 0; t < 2; t++) {
    o.threads = t ? MODEL_MAX_THREADS + 1 : -1;
    struct params *p = params_new();
    struct model *m = model_new(&o, F, D, BMAX, p, err, sizeof(err));
    assert_null(m);
    assert_non_null(strstr(err, "threads"));
    params_free(p);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_kind_split),
      cmocka_unit_test(test_coupled_rows_not_split),
      cmocka_unit_test(test_bad_thread_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
