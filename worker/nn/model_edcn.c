/* model_edcn: EDCN (MODELS.md; tests/nn/README.md "edcn_*"). A cross
 * layer and a deep layer run side by side and exchange information after
 * every layer. x = V_emb (B, C), C = F*D, L layers, temperature tau:
 *
 *   regulation l:  g_c = softmax(reg.l.g_cross / tau), g_h = softmax(
 *                  reg.l.g_deep / tau) over the F fields, each repeated over
 *                  the field's D entries: (c, h) = (g_c * u, g_h * u)
 *   (c_0, h_0) = regulation_0(x);  x_0 := c_0
 *   layer l:  c' = c_l + x_0 (c_l . w_l) + b_l     cross.l.{weight (C), bias}
 *                  (without the c_l term when !cross_residual, FuxiCTR's EDCN)
 *             h' = dropout(ReLU(deep.l(h_l)))       deep.l (C, C)
 *             f_l = bridge(c', h'): hadamard c' * h', add c' + h',
 *                   concat ReLU(bridge.l([c'; h'])) with bridge.l (C, 2C)
 *             (c_{l+1}, h_{l+1}) = regulation_{l+1}(f_l)   for l + 1 < L
 *   logit = fc([c'_{L-1}; h'_{L-1}; f_{L-1}])      fc (1, 3C)
 *
 * With use_bn (FuxiCTR's `batch_norm`), each regulation output is batch-
 * normalised: c_l = BN_c,l(g_c * u), h_l = BN_h,l(g_h * u), BatchNorm1d over
 * the C columns (reg.l.bn_cross / reg.l.bn_deep: weight 1, bias 0, running
 * statistics as state). Without it (the default, as FuxiCTR's) the model
 * cannot train from the usual init: embeddings of std 1e-4 give c', h' of
 * ~1e-6, each Hadamard bridge squares that scale (f_0 ~ 1e-12, f_1 ~ 1e-27,
 * f_2 underflows), so at L = 3 the logit is fc.bias alone and every gradient
 * but those of fc.bias and the last layer's biases is below 1e-24: training
 * moves only biases, and the prediction stays a constant (AUC 0.5). The
 * norm divides each regulation output by sqrt(var + eps) (~300x at this
 * init, where eps outweighs the tiny variance), so no layer's scale
 * collapses: at init dE and every trained tensor get a nonzero gradient
 * (tests/nn/test_models.c, test_edcn_init_gradients).
 * A training batch of one row has no batch statistics: it is normalised
 * with the running ones (and not folded into them), like evaluation.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "worker/nn/model_impl.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

struct edcn {
  struct params *p; /* borrowed */
  int F, D, C, L, Bmax;
  enum model_bridge bridge;
  float tau;           /* regulation temperature */
  bool residual;       /* c' keeps c_l */
  float dropout;       /* after the deep ReLU, training only */
  uint64_t seed, step; /* dropout mask of layer l: (seed + l, step) */
  bool dropped;        /* the last forward applied dropout */
  bool bn;             /* BatchNorm on the regulation outputs */
  bool bn_batch;       /* the last forward normalised with batch statistics */
  /* parameter ids, per layer */
  int gc_id[MODEL_MAX_LAYERS], gh_id[MODEL_MAX_LAYERS]; /* reg.l.g_* (F) */
  int cw_id[MODEL_MAX_LAYERS], cb_id[MODEL_MAX_LAYERS]; /* cross.l (C) */
  int dw_id[MODEL_MAX_LAYERS], db_id[MODEL_MAX_LAYERS]; /* deep.l (C, C) */
  int bw_id[MODEL_MAX_LAYERS], bb_id[MODEL_MAX_LAYERS]; /* bridge.l (C, 2C) */
  int fc_w, fc_b;                                       /* fc (1, 3C) */
  /* with bn: [0] cross, [1] deep; weight, bias (C), running mean, var (C) */
  int bnw_id[MODEL_MAX_LAYERS][2], bnb_id[MODEL_MAX_LAYERS][2];
  int bnm_id[MODEL_MAX_LAYERS][2], bnv_id[MODEL_MAX_LAYERS][2];
  /* activations, per layer l; (Bmax, C) unless noted */
  float *x;                    /* copy of E */
  float *gc[MODEL_MAX_LAYERS]; /* (F) softmaxed cross gate */
  float *gh[MODEL_MAX_LAYERS]; /* (F) softmaxed deep gate */
  float *c[MODEL_MAX_LAYERS];  /* c_l; c[0] is x_0 */
  float *h[MODEL_MAX_LAYERS];  /* h_l */
  /* with bn: the gated inputs before the norm, [0] g_c * u, [1] g_h * u, and
   * the statistics they were normalised with, mean and rstd (C) */
  float *pre[MODEL_MAX_LAYERS][2];
  float *bmean[MODEL_MAX_LAYERS][2], *brstd[MODEL_MAX_LAYERS][2];
  float *cp[MODEL_MAX_LAYERS]; /* c' */
  float *hp[MODEL_MAX_LAYERS]; /* h' */
  float *ch[MODEL_MAX_LAYERS]; /* (Bmax, 2C) [c'; h'], concat bridge */
  float *f[MODEL_MAX_LAYERS];  /* f_l */
  float *cat;                  /* (Bmax, 3C) the fc input */
  /* backward scratch */
  float *dc, *dh, *dcp, *dhp, *dpre, *ddrop, *dx0; /* (Bmax, C) */
  float *dbn;                                      /* (Bmax, C), with bn */
  float *df[MODEL_MAX_LAYERS];                     /* (Bmax, C) */
  float *dch;                                      /* (Bmax, 2C) */
  float *dcat;                                     /* (Bmax, 3C) */
  float *dg;                                       /* (F) */
};

/* ---- the cross layer without its residual (FuxiCTR's EDCN) -------------
 * nn_cross_* always adds x_l; this one is y = x0 * (xl . w) + b, backward
 * beside it (checked by the edcn_hadamard_nores fixture). */

/* y (B,C) = x0 (B,C) * (xl (B,C) . w (C)) + b (C). */
static void cross_nores_forward(const float *x0, const float *xl,
                                const float *w, const float *b, float *y, int B,
                                int C) {
  for (int r = 0; r < B; r++) {
    const float *x0r = x0 + (size_t)r * C, *xlr = xl + (size_t)r * C;
    float *yr = y + (size_t)r * C;
    float s = 0.0f; // w . x_l, one scalar per row
    for (int c = 0; c < C; c++)
      s += w[c] * xlr[c];
    for (int c = 0; c < C; c++)
      yr[c] = x0r[c] * s + b[c];
  }
}

/* dx0, dxl (B,C) (either NULL; they may alias), dw, db (C) accumulate:
 * with s = xl . w and ds = dy . x0 per row: dx0 += dy s, dxl += ds w,
 * dw += ds xl, db += dy. */
static void cross_nores_backward(const float *x0, const float *xl,
                                 const float *w, const float *dy, float *dx0,
                                 float *dxl, float *dw, float *db, int B,
                                 int C) {
  for (int r = 0; r < B; r++) {
    const float *x0r = x0 + (size_t)r * C, *xlr = xl + (size_t)r * C;
    const float *dr = dy + (size_t)r * C;
    float s = 0.0f, ds = 0.0f;
    for (int c = 0; c < C; c++) {
      s += w[c] * xlr[c];
      ds += dr[c] * x0r[c];
    }
    for (int c = 0; c < C; c++) {
      if (dx0)
        dx0[(size_t)r * C + c] += dr[c] * s;
      if (dxl)
        dxl[(size_t)r * C + c] += ds * w[c];
      dw[c] += ds * xlr[c];
      db[c] += dr[c];
    }
  }
}

/* ---- BatchNorm of a regulation output (with use_bn) --------------------
 * k = 0 normalises g_c * u into c_l, k = 1 g_h * u into h_l. */

static void reg_bn_forward(struct edcn *s, int l, int k, float *y, int B,
                           bool train) {
  struct params *p = s->p;
  struct nn_bnstats st = {.H = s->C,
                          .eps = 1e-5f,
                          .momentum = 0.1f,
                          .run_mean = params_value(p, s->bnm_id[l][k]),
                          .run_var = params_value(p, s->bnv_id[l][k])};
  const float *g = params_value(p, s->bnw_id[l][k]);
  const float *b = params_value(p, s->bnb_id[l][k]);
  if (train && B >= 2) {
    nn_batchnorm_forward(s->pre[l][k], g, b, y, s->bmean[l][k], s->brstd[l][k],
                         &st, B, true);
    return;
  }
  // evaluation, or a one-row training batch: the running statistics, kept
  // in the cache too so that a training backward can follow
  nn_batchnorm_forward(s->pre[l][k], g, b, y, NULL, NULL, &st, B, false);
  if (train)
    for (int c = 0; c < s->C; c++) {
      s->bmean[l][k][c] = st.run_mean[c];
      s->brstd[l][k][c] = 1.0f / sqrtf(st.run_var[c] + st.eps);
    }
}

/* From dy (B, C), the gradient of BN's output: accumulates its weight and
 * bias gradients and returns the gradient of its input in s->dbn (valid
 * until the next call). */
static const float *reg_bn_backward(struct edcn *s, int l, int k,
                                    const float *dy, int B) {
  struct params *p = s->p;
  int C = s->C;
  const float *g = params_value(p, s->bnw_id[l][k]);
  const float *mean = s->bmean[l][k], *rstd = s->brstd[l][k];
  float *dgam = params_grad(p, s->bnw_id[l][k]);
  float *dbet = params_grad(p, s->bnb_id[l][k]);
  memset(s->dbn, 0, (size_t)B * C * sizeof(float));
  if (s->bn_batch) {
    nn_batchnorm_backward(s->pre[l][k], g, mean, rstd, dy, s->dbn, dgam, dbet,
                          B, C);
    return s->dbn;
  }
  // fixed statistics: y = (x - mean) rstd g + b is affine in x
  for (int r = 0; r < B; r++)
    for (int c = 0; c < C; c++) {
      size_t i = (size_t)r * C + c;
      dgam[c] += dy[i] * (s->pre[l][k][i] - mean[c]) * rstd[c];
      dbet[c] += dy[i];
      s->dbn[i] = dy[i] * g[c] * rstd[c];
    }
  return s->dbn;
}

static void *edcn_init(const struct model_options *o, int F, int D, int Bmax,
                       struct params *p, char *err, size_t errlen) {
  if (o->cross_layers < 1 || o->cross_layers > MODEL_MAX_LAYERS) {
    snprintf(err, errlen, "model edcn: cross_layers %d (expected 1..%d)",
             o->cross_layers, MODEL_MAX_LAYERS);
    return NULL;
  }
  if (o->bridge != MODEL_BRIDGE_HADAMARD && o->bridge != MODEL_BRIDGE_ADD &&
      o->bridge != MODEL_BRIDGE_CONCAT) {
    snprintf(err, errlen,
             "model edcn: unknown bridge %d (expected hadamard, add or "
             "concat)",
             (int)o->bridge);
    return NULL;
  }
  if (!(o->temperature > 0)) {
    snprintf(err, errlen, "model edcn: temperature %g must be > 0",
             (double)o->temperature);
    return NULL;
  }
  struct edcn *s = xcalloc(1, sizeof(*s));
  s->p = p;
  s->F = F;
  s->D = D;
  int C = s->C = F * D;
  int L = s->L = o->cross_layers;
  s->Bmax = Bmax;
  s->bridge = o->bridge;
  s->tau = o->temperature;
  s->residual = o->cross_residual;
  s->dropout = o->dropout;
  s->seed = o->dropout_seed;
  s->bn = o->use_bn;
  size_t row = (size_t)Bmax * C * sizeof(float);
  char nm[PARAMS_NAME_MAX + 1];
  for (int l = 0; l < L; l++) {
    // gate logits start at 1 (every field weighs 1/F), MODELS.md
    snprintf(nm, sizeof(nm), "reg.%d.g_cross", l);
    s->gc_id[l] = params_add(p, nm, 1, 1, F, PARAMS_CONST, 1.0f);
    snprintf(nm, sizeof(nm), "reg.%d.g_deep", l);
    s->gh_id[l] = params_add(p, nm, 1, 1, F, PARAMS_CONST, 1.0f);
    snprintf(nm, sizeof(nm), "cross.%d.weight", l);
    s->cw_id[l] = params_add(p, nm, 1, 1, C, PARAMS_XAVIER_NORMAL, 1.0f);
    snprintf(nm, sizeof(nm), "cross.%d.bias", l);
    s->cb_id[l] = params_add(p, nm, 1, 1, C, PARAMS_ZEROS, 0.0f);
    snprintf(nm, sizeof(nm), "deep.%d.weight", l);
    s->dw_id[l] = params_add(p, nm, 1, C, C, PARAMS_XAVIER_NORMAL, 1.0f);
    snprintf(nm, sizeof(nm), "deep.%d.bias", l);
    s->db_id[l] = params_add(p, nm, 1, 1, C, PARAMS_ZEROS, 0.0f);
    if (s->bridge == MODEL_BRIDGE_CONCAT) {
      snprintf(nm, sizeof(nm), "bridge.%d.weight", l);
      s->bw_id[l] = params_add(p, nm, 1, C, 2 * C, PARAMS_XAVIER_NORMAL, 1.0f);
      snprintf(nm, sizeof(nm), "bridge.%d.bias", l);
      s->bb_id[l] = params_add(p, nm, 1, 1, C, PARAMS_ZEROS, 0.0f);
      s->ch[l] = xaligned(2 * row);
    }
    s->gc[l] = xaligned((size_t)F * sizeof(float));
    s->gh[l] = xaligned((size_t)F * sizeof(float));
    s->c[l] = xaligned(row);
    s->h[l] = xaligned(row);
    s->cp[l] = xaligned(row);
    s->hp[l] = xaligned(row);
    s->f[l] = xaligned(row);
    s->df[l] = xaligned(row);
    for (int k = 0; s->bn && k < 2; k++) {
      static const char *const side[2] = {"cross", "deep"};
      snprintf(nm, sizeof(nm), "reg.%d.bn_%s.weight", l, side[k]);
      s->bnw_id[l][k] = params_add(p, nm, 1, 1, C, PARAMS_ONES, 1.0f);
      snprintf(nm, sizeof(nm), "reg.%d.bn_%s.bias", l, side[k]);
      s->bnb_id[l][k] = params_add(p, nm, 1, 1, C, PARAMS_ZEROS, 0.0f);
      snprintf(nm, sizeof(nm), "reg.%d.bn_%s.running_mean", l, side[k]);
      s->bnm_id[l][k] = params_add_state(p, nm, 1, 1, C, PARAMS_ZEROS, 0.0f);
      snprintf(nm, sizeof(nm), "reg.%d.bn_%s.running_var", l, side[k]);
      s->bnv_id[l][k] = params_add_state(p, nm, 1, 1, C, PARAMS_ONES, 1.0f);
      s->pre[l][k] = xaligned(row);
      s->bmean[l][k] = xaligned((size_t)C * sizeof(float));
      s->brstd[l][k] = xaligned((size_t)C * sizeof(float));
    }
  }
  if (s->bn)
    s->dbn = xaligned(row);
  s->fc_w = params_add(p, "fc.weight", 1, 1, 3 * C, PARAMS_XAVIER_NORMAL, 1.0f);
  s->fc_b = params_add(p, "fc.bias", 1, 1, 1, PARAMS_ZEROS, 0.0f);
  s->x = xaligned(row);
  s->cat = xaligned(3 * row);
  s->dc = xaligned(row);
  s->dh = xaligned(row);
  s->dcp = xaligned(row);
  s->dhp = xaligned(row);
  s->dpre = xaligned(row);
  s->ddrop = xaligned(row);
  s->dx0 = xaligned(row);
  s->dch = xaligned(2 * row);
  s->dcat = xaligned(3 * row);
  s->dg = xaligned((size_t)F * sizeof(float));
  return s;
}

static void edcn_forward(void *self, const float *E, const float *w,
                         float *logits, int B, bool train) {
  struct edcn *s = self;
  struct params *p = s->p;
  int F = s->F, D = s->D, C = s->C, L = s->L;
  size_t n = (size_t)B * C;
  s->dropped = train && s->dropout > 0;
  if (s->dropped)
    s->step++;
  s->bn_batch = train && B >= 2;
  CHECK(E, "E (B, F*D) is required");
  memcpy(s->x, E, n * sizeof(float)); // x (B, C)
  const float *x0 = s->c[0];
  for (int l = 0; l < L; l++) {
    // regulation: field gates on the layer input u
    const float *u = l ? s->f[l - 1] : s->x; // (B, C)
    nn_softmax_forward(params_value(p, s->gc_id[l]), s->gc[l], 1, F, 1,
                       s->tau); // (F)
    nn_softmax_forward(params_value(p, s->gh_id[l]), s->gh[l], 1, F, 1, s->tau);
    if (s->bn) {
      nn_field_scale_forward(s->gc[l], u, s->pre[l][0], B, F, D, 1);
      nn_field_scale_forward(s->gh[l], u, s->pre[l][1], B, F, D, 1);
      reg_bn_forward(s, l, 0, s->c[l], B, train); // c_l (B, C)
      reg_bn_forward(s, l, 1, s->h[l], B, train); // h_l (B, C)
    } else {
      nn_field_scale_forward(s->gc[l], u, s->c[l], B, F, D, 1); // c_l (B, C)
      nn_field_scale_forward(s->gh[l], u, s->h[l], B, F, D, 1); // h_l (B, C)
    }
    // cross: c' (B, C)
    if (s->residual)
      nn_cross_forward(x0, s->c[l], params_value(p, s->cw_id[l]),
                       params_value(p, s->cb_id[l]), s->cp[l], B, C);
    else
      cross_nores_forward(x0, s->c[l], params_value(p, s->cw_id[l]),
                          params_value(p, s->cb_id[l]), s->cp[l], B, C);
    // deep: h' (B, C)
    nn_linear_forward(s->h[l], params_value(p, s->dw_id[l]),
                      params_value(p, s->db_id[l]), s->hp[l], B, C, C);
    nn_relu_forward(s->hp[l], s->hp[l], n);
    if (s->dropped)
      nn_dropout_forward(s->hp[l], s->hp[l], n, s->dropout, s->seed + l,
                         s->step);
    // bridge: f_l (B, C)
    switch (s->bridge) {
    case MODEL_BRIDGE_HADAMARD:
      nn_mul_forward(s->cp[l], s->hp[l], s->f[l], n);
      break;
    case MODEL_BRIDGE_ADD:
      nn_add_forward(s->cp[l], s->hp[l], s->f[l], n);
      break;
    case MODEL_BRIDGE_CONCAT: {
      const float *xs2[2] = {s->cp[l], s->hp[l]};
      int w2[2] = {C, C};
      nn_concat_forward(2, xs2, w2, s->ch[l], B); // (B, 2C)
      nn_linear_forward(s->ch[l], params_value(p, s->bw_id[l]),
                        params_value(p, s->bb_id[l]), s->f[l], B, 2 * C, C);
      nn_relu_forward(s->f[l], s->f[l], n);
      break;
    }
    }
  }
  const float *xs3[3] = {s->cp[L - 1], s->hp[L - 1], s->f[L - 1]};
  int w3[3] = {C, C, C};
  nn_concat_forward(3, xs3, w3, s->cat, B); // (B, 3C)
  nn_linear_forward(s->cat, params_value(p, s->fc_w), params_value(p, s->fc_b),
                    logits, B, 3 * C, 1); // (B, 1)
}

static void edcn_backward(void *self, const float *dlogits, float *dE,
                          float *dw, int B) {
  struct edcn *s = self;
  struct params *p = s->p;
  int F = s->F, D = s->D, C = s->C, L = s->L;
  size_t n = (size_t)B * C;
  const float *x0 = s->c[0];

  // fc: dcat -> (dc', dh', df) of the last layer
  memset(s->dcat, 0, 3 * n * sizeof(float));
  nn_linear_backward(s->cat, params_value(p, s->fc_w), dlogits, s->dcat,
                     params_grad(p, s->fc_w), params_grad(p, s->fc_b), B, 3 * C,
                     1);
  memset(s->dx0, 0, n * sizeof(float)); // every cross layer reads x_0
  for (int l = L - 1; l >= 0; l--) {
    // dLoss/d c', h', f_l: the fc's columns for the last layer; for the
    // others f_l reaches the loss only through regulation_{l+1}, which
    // filled df[l] below
    if (l == L - 1) {
      int w3[3] = {C, C, C};
      float *ys[3] = {s->dcp, s->dhp, s->df[l]};
      nn_split_forward(s->dcat, 3, w3, ys, B);
    } else {
      memset(s->dcp, 0, n * sizeof(float));
      memset(s->dhp, 0, n * sizeof(float));
    }

    // bridge
    switch (s->bridge) {
    case MODEL_BRIDGE_HADAMARD:
      nn_mul_backward(s->cp[l], s->hp[l], s->df[l], s->dcp, s->dhp, n);
      break;
    case MODEL_BRIDGE_ADD:
      nn_add_backward(s->df[l], s->dcp, s->dhp, n);
      break;
    case MODEL_BRIDGE_CONCAT: {
      memset(s->dpre, 0, n * sizeof(float));
      nn_relu_backward(s->f[l], s->df[l], s->dpre, n);
      memset(s->dch, 0, 2 * n * sizeof(float));
      nn_linear_backward(s->ch[l], params_value(p, s->bw_id[l]), s->dpre,
                         s->dch, params_grad(p, s->bw_id[l]),
                         params_grad(p, s->bb_id[l]), B, 2 * C, C);
      int w2[2] = {C, C};
      float *dxs[2] = {s->dcp, s->dhp};
      nn_concat_backward(2, w2, s->dch, dxs, B);
      break;
    }
    }

    // deep: dh_l from dh'
    const float *gdeep = s->dhp; // dLoss/d ReLU output
    if (s->dropped) {
      memset(s->ddrop, 0, n * sizeof(float));
      nn_dropout_backward(s->dhp, s->ddrop, n, s->dropout, s->seed + l,
                          s->step);
      gdeep = s->ddrop;
    }
    memset(s->dpre, 0, n * sizeof(float));
    nn_relu_backward(s->hp[l], gdeep, s->dpre, n); // hp > 0: passed, kept
    memset(s->dh, 0, n * sizeof(float));
    nn_linear_backward(s->h[l], params_value(p, s->dw_id[l]), s->dpre, s->dh,
                       params_grad(p, s->dw_id[l]), params_grad(p, s->db_id[l]),
                       B, C, C);

    // cross: dc_l, and x_0's share into dx0 (for layer 0, c_0 is x_0: its
    // whole gradient collects in dx0, completed by this last iteration)
    float *dc = l ? s->dc : s->dx0;
    if (l)
      memset(dc, 0, n * sizeof(float));
    if (s->residual)
      nn_cross_backward(x0, s->c[l], params_value(p, s->cw_id[l]), s->dcp,
                        s->dx0, dc, params_grad(p, s->cw_id[l]),
                        params_grad(p, s->cb_id[l]), B, C);
    else
      cross_nores_backward(x0, s->c[l], params_value(p, s->cw_id[l]), s->dcp,
                           s->dx0, dc, params_grad(p, s->cw_id[l]),
                           params_grad(p, s->cb_id[l]), B, C);

    // regulation: gates and their input u (f_{l-1}, or E for layer 0)
    const float *u = l ? s->f[l - 1] : s->x;
    float *du = l ? s->df[l - 1] : dE; // dE may be NULL
    if (l)
      memset(du, 0, n * sizeof(float));
    memset(s->dg, 0, (size_t)F * sizeof(float));
    const float *dcin = s->bn ? reg_bn_backward(s, l, 0, dc, B) : dc;
    nn_field_scale_backward(s->gc[l], u, dcin, s->dg, du, B, F, D, 1);
    nn_softmax_backward(s->gc[l], s->dg, params_grad(p, s->gc_id[l]), 1, F, 1,
                        s->tau);
    memset(s->dg, 0, (size_t)F * sizeof(float));
    nn_field_scale_backward(s->gh[l], u,
                            s->bn ? reg_bn_backward(s, l, 1, s->dh, B) : s->dh,
                            s->dg, du, B, F, D, 1);
    nn_softmax_backward(s->gh[l], s->dg, params_grad(p, s->gh_id[l]), 1, F, 1,
                        s->tau);
  }
}

static double edcn_flops(const void *self) {
  const struct edcn *s = self;
  double C = s->C;
  double per = 2 * C       // regulation
               + 3 * C     // cross
               + C * C + C // deep
               + (s->bridge == MODEL_BRIDGE_CONCAT ? 2 * C * C : C);
  return s->L * (per + (s->bn ? 4 * C : 0)) + 3 * C;
}

static void edcn_free(void *self) {
  struct edcn *s = self;
  if (!s)
    return;
  for (int l = 0; l < MODEL_MAX_LAYERS; l++) {
    free(s->gc[l]);
    free(s->gh[l]);
    free(s->c[l]);
    free(s->h[l]);
    free(s->cp[l]);
    free(s->hp[l]);
    free(s->ch[l]);
    free(s->f[l]);
    free(s->df[l]);
    for (int k = 0; k < 2; k++) {
      free(s->pre[l][k]);
      free(s->bmean[l][k]);
      free(s->brstd[l][k]);
    }
  }
  free(s->dbn);
  free(s->x);
  free(s->cat);
  free(s->dc);
  free(s->dh);
  free(s->dcp);
  free(s->dhp);
  free(s->dpre);
  free(s->ddrop);
  free(s->dx0);
  free(s->dch);
  free(s->dcat);
  free(s->dg);
  free(s);
}

const struct model_impl model_impl_edcn = {
    .name = "edcn",
    .uses_lr_weights = false,
    .init = edcn_init,
    .forward = edcn_forward,
    .backward = edcn_backward,
    .flops = edcn_flops,
    .free = edcn_free,
};
