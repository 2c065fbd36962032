/* model_dcn: DCN and DCNv2 (MODELS.md; tests/nn/README.md "dcn",
 * "dcnv2_*"). x_0 = V_emb (B, C), C = F*D, L cross layers:
 *
 *   DCN     x_{l+1} = x_0 (x_l . w_l) + b_l + x_l        cross.l.weight (C)
 *   DCNv2   x_{l+1} = x_0 * (W_l x_l + b_l) + x_l        cross.l.weight (C, C)
 *   mixture x_{l+1} = sum_k g_k x_0 * (U_k tanh(C_k tanh(V_k x_l)) + b_l)
 *                     + x_l,  g = softmax(G x_l)          cross.l.{V,C,U,bias},
 *                                                         gate.weight (K, C)
 *                                                         shared by all layers
 * and the structure around the cross network:
 *   parallel (DCN always):  logit = fc([x_L; mlp(x_0)])
 *   stacked:                logit = fc(mlp(x_L))
 *   crossnet_only:          logit = fc(x_L)
 * mlp = hidden Linear+ReLU layers mlp.0 .. (no logit layer of its own).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "worker/nn/mlp.h"
#include "worker/nn/model_impl.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

enum cross_kind {
  CROSS_VECTOR, /* DCN */
  CROSS_FULL,   /* DCNv2, full-rank W */
  CROSS_MIX,    /* DCNv2, low-rank mixture of experts */
};

struct dcn {
  struct params *p; /* borrowed */
  int C, L, Bmax;
  enum cross_kind cross;
  enum model_dcnv2_structure structure;
  int R, K;                  /* mixture rank and experts */
  int wid[MODEL_MAX_LAYERS]; /* cross.l.weight (vector or (C, C)) */
  int bid[MODEL_MAX_LAYERS]; /* cross.l.bias (C) */
  int Vid[MODEL_MAX_LAYERS], Cid[MODEL_MAX_LAYERS], Uid[MODEL_MAX_LAYERS];
  int gate_id; /* gate.weight (K, C), mixture */
  bool has_mlp;
  struct mlp mlp;                   /* C -> hidden (on x_0 or x_L) */
  int fc_w, fc_b;                   /* fc (1, fc_in) */
  int fc_in;                        /* width of the fc input */
  float *xs[MODEL_MAX_LAYERS + 1];  /* (Bmax, C): xs[0] = x_0 (copy of E),
                                       xs[l+1] the output of cross layer l */
  float *cache[MODEL_MAX_LAYERS];   /* per layer: u (Bmax, C) for CROSS_FULL,
                                       the mixture's cache for CROSS_MIX */
  float *work;                      /* backward scratch of one cross layer */
  float *dxs[MODEL_MAX_LAYERS + 1]; /* (Bmax, C) dLoss/d xs[l], l >= 1 */
  float *cat;                       /* (Bmax, fc_in) [x_L; h], parallel */
  float *dcat;                      /* (Bmax, fc_in) */
  float *dh;                        /* (Bmax, H) dLoss/d mlp output */
};

/* The mixture layer l's parameters as the op wants them. */
static struct nn_crossmix mix_layer(const struct dcn *s, int l) {
  struct params *p = s->p;
  return (struct nn_crossmix){
      .V = params_value(p, s->Vid[l]),
      .Cm = params_value(p, s->Cid[l]),
      .U = params_value(p, s->Uid[l]),
      .b = params_value(p, s->bid[l]),
      .G = params_value(p, s->gate_id),
      .dV = params_grad(p, s->Vid[l]),
      .dCm = params_grad(p, s->Cid[l]),
      .dU = params_grad(p, s->Uid[l]),
      .db = params_grad(p, s->bid[l]),
      .dG = params_grad(p, s->gate_id),
      .C = s->C,
      .R = s->R,
      .K = s->K,
  };
}

static void *init_common(bool v2, const struct model_options *o, int F, int D,
                         int Bmax, struct params *p, char *err, size_t errlen) {
  const char *name = v2 ? "dcnv2" : "dcn";
  enum model_dcnv2_structure st = v2 ? o->dcnv2_structure : MODEL_PARALLEL;
  if (o->cross_layers < 1 || o->cross_layers > MODEL_MAX_LAYERS) {
    snprintf(err, errlen, "model %s: cross_layers %d (expected 1..%d)", name,
             o->cross_layers, MODEL_MAX_LAYERS);
    return NULL;
  }
  if (st != MODEL_CROSSNET_ONLY && st != MODEL_STACKED &&
      st != MODEL_PARALLEL) {
    snprintf(err, errlen, "model %s: unknown structure %d", name, (int)st);
    return NULL;
  }
  if (st != MODEL_CROSSNET_ONLY && o->nhidden < 1) {
    snprintf(err, errlen,
             "model %s: hidden_units is empty, but the %s structure has an "
             "MLP (give at least one width, or use crossnet_only)",
             name, st == MODEL_STACKED ? "stacked" : "parallel");
    return NULL;
  }
  if (v2 && o->low_rank < 0) {
    snprintf(err, errlen, "model dcnv2: low_rank %d is negative", o->low_rank);
    return NULL;
  }
  if (v2 && o->low_rank > 0 && o->num_experts < 1) {
    snprintf(err, errlen,
             "model dcnv2: num_experts %d; a low-rank cross needs at least 1",
             o->num_experts);
    return NULL;
  }
  if (v2 && o->low_rank == 0 && o->num_experts > 1) {
    snprintf(err, errlen,
             "model dcnv2: %d experts with a full-rank cross (low_rank 0); "
             "set low_rank >= 1 for a mixture, or num_experts 1",
             o->num_experts);
    return NULL;
  }

  struct dcn *s = xcalloc(1, sizeof(*s));
  s->p = p;
  int C = s->C = F * D;
  int L = s->L = o->cross_layers;
  s->Bmax = Bmax;
  s->structure = st;
  s->cross = !v2 ? CROSS_VECTOR : o->low_rank > 0 ? CROSS_MIX : CROSS_FULL;
  s->R = o->low_rank;
  s->K = o->num_experts;
  size_t row = (size_t)Bmax * C * sizeof(float); // one (Bmax, C) buffer
  size_t work = 0;
  char nm[PARAMS_NAME_MAX + 1];
  for (int l = 0; l < L; l++) {
    switch (s->cross) {
    case CROSS_VECTOR:
      // torch.nn.Linear(C, 1, bias=False) in FuxiCTR: Xavier on (1, C)
      snprintf(nm, sizeof(nm), "cross.%d.weight", l);
      s->wid[l] = params_add(p, nm, 1, 1, C, PARAMS_XAVIER_NORMAL, 1.0f);
      break;
    case CROSS_FULL:
      snprintf(nm, sizeof(nm), "cross.%d.weight", l);
      s->wid[l] = params_add(p, nm, 1, C, C, PARAMS_XAVIER_NORMAL, 1.0f);
      s->cache[l] = xaligned(row);
      work = row;
      break;
    case CROSS_MIX:
      // K expert matrices each, Xavier matrix by matrix (FuxiCTR's
      // CrossNetMix)
      snprintf(nm, sizeof(nm), "cross.%d.V", l);
      s->Vid[l] = params_add(p, nm, s->K, s->R, C, PARAMS_XAVIER_NORMAL, 1.0f);
      snprintf(nm, sizeof(nm), "cross.%d.C", l);
      s->Cid[l] =
          params_add(p, nm, s->K, s->R, s->R, PARAMS_XAVIER_NORMAL, 1.0f);
      snprintf(nm, sizeof(nm), "cross.%d.U", l);
      s->Uid[l] = params_add(p, nm, s->K, C, s->R, PARAMS_XAVIER_NORMAL, 1.0f);
      break;
    }
    snprintf(nm, sizeof(nm), "cross.%d.bias", l);
    s->bid[l] = params_add(p, nm, 1, 1, C, PARAMS_ZEROS, 0.0f);
  }
  if (s->cross == CROSS_MIX) {
    // One gate for all layers; FuxiCTR keeps K Linear(C, 1, bias=False)
    // gates, so Xavier sees K matrices of (1, C).
    s->gate_id =
        params_add(p, "gate.weight", s->K, 1, C, PARAMS_XAVIER_NORMAL, 1.0f);
    struct nn_crossmix shape = {.C = C, .R = s->R, .K = s->K};
    for (int l = 0; l < L; l++)
      s->cache[l] =
          xaligned(nn_crossmix_cache_len(&shape, Bmax) * sizeof(float));
    work = nn_crossmix_work_len(&shape, Bmax) * sizeof(float);
  }
  if (work)
    s->work = xaligned(work);
  for (int l = 0; l <= L; l++) {
    s->xs[l] = xaligned(row);
    s->dxs[l] = xaligned(row);
  }

  int H = 0;
  s->has_mlp = st != MODEL_CROSSNET_ONLY;
  if (s->has_mlp) {
    mlp_init_bn(&s->mlp, p, "mlp", C, o->hidden, o->nhidden, false,
                o->dropout, o->dropout_seed, Bmax, o->use_bn);
    H = mlp_out_width(&s->mlp);
    s->dh = xaligned((size_t)Bmax * H * sizeof(float));
  }
  s->fc_in = st == MODEL_PARALLEL ? C + H : st == MODEL_STACKED ? H : C;
  if (st == MODEL_PARALLEL)
    s->cat = xaligned((size_t)Bmax * s->fc_in * sizeof(float));
  s->dcat = xaligned((size_t)Bmax * s->fc_in * sizeof(float));
  s->fc_w =
      params_add(p, "fc.weight", 1, 1, s->fc_in, PARAMS_XAVIER_NORMAL, 1.0f);
  s->fc_b = params_add(p, "fc.bias", 1, 1, 1, PARAMS_ZEROS, 0.0f);
  return s;
}

static void *dcn_init(const struct model_options *o, int F, int D, int Bmax,
                      struct params *p, char *err, size_t errlen) {
  return init_common(false, o, F, D, Bmax, p, err, errlen);
}

static void *dcnv2_init(const struct model_options *o, int F, int D, int Bmax,
                        struct params *p, char *err, size_t errlen) {
  return init_common(true, o, F, D, Bmax, p, err, errlen);
}

static void dcn_forward(void *self, const float *E, const float *w,
                        float *logits, int B, bool train) {
  struct dcn *s = self;
  struct params *p = s->p;
  int C = s->C, L = s->L;
  CHECK(E, "E (B, F*D) is required");
  memcpy(s->xs[0], E, (size_t)B * C * sizeof(float)); // x_0 (B, C)
  const float *x0 = s->xs[0];
  for (int l = 0; l < L; l++) {
    const float *xl = s->xs[l];
    float *y = s->xs[l + 1]; // (B, C)
    switch (s->cross) {
    case CROSS_VECTOR:
      nn_cross_forward(x0, xl, params_value(p, s->wid[l]),
                       params_value(p, s->bid[l]), y, B, C);
      break;
    case CROSS_FULL:
      nn_cross2_forward(x0, xl, params_value(p, s->wid[l]),
                        params_value(p, s->bid[l]), y, s->cache[l], B, C);
      break;
    case CROSS_MIX: {
      struct nn_crossmix m = mix_layer(s, l);
      nn_crossmix_forward(&m, x0, xl, y, s->cache[l], B);
      break;
    }
    }
  }
  const float *xL = s->xs[L];
  const float *in = xL; // fc input (B, fc_in)
  switch (s->structure) {
  case MODEL_CROSSNET_ONLY:
    break;
  case MODEL_STACKED:
    in = mlp_forward(&s->mlp, xL, B, train); // (B, H)
    break;
  case MODEL_PARALLEL: {
    const float *h = mlp_forward(&s->mlp, x0, B, train); // (B, H)
    const float *xs2[2] = {xL, h};
    int w2[2] = {C, mlp_out_width(&s->mlp)};
    nn_concat_forward(2, xs2, w2, s->cat, B); // (B, C + H)
    in = s->cat;
    break;
  }
  }
  nn_linear_forward(in, params_value(p, s->fc_w), params_value(p, s->fc_b),
                    logits, B, s->fc_in, 1); // (B, 1)
}

static void dcn_backward(void *self, const float *dlogits, float *dE, float *dw,
                         int B) {
  struct dcn *s = self;
  struct params *p = s->p;
  int C = s->C, L = s->L;
  size_t n = (size_t)B * C;
  const float *x0 = s->xs[0], *xL = s->xs[L];
  float *dxL = s->dxs[L];
  memset(dxL, 0, n * sizeof(float));
  memset(s->dcat, 0, (size_t)B * s->fc_in * sizeof(float));

  // fc and the structure around the cross network
  switch (s->structure) {
  case MODEL_CROSSNET_ONLY:
    nn_linear_backward(xL, params_value(p, s->fc_w), dlogits, dxL,
                       params_grad(p, s->fc_w), params_grad(p, s->fc_b), B,
                       s->fc_in, 1);
    break;
  case MODEL_STACKED: {
    const float *h = s->mlp.out[s->mlp.n - 1]; // (B, H)
    nn_linear_backward(h, params_value(p, s->fc_w), dlogits, s->dcat,
                       params_grad(p, s->fc_w), params_grad(p, s->fc_b), B,
                       s->fc_in, 1);
    mlp_backward(&s->mlp, xL, s->dcat, dxL, B);
    break;
  }
  case MODEL_PARALLEL: {
    nn_linear_backward(s->cat, params_value(p, s->fc_w), dlogits, s->dcat,
                       params_grad(p, s->fc_w), params_grad(p, s->fc_b), B,
                       s->fc_in, 1);
    int w2[2] = {C, mlp_out_width(&s->mlp)};
    float *ys[2] = {dxL, s->dh};
    nn_split_forward(s->dcat, 2, w2, ys, B); // dx_L, dh = columns of dcat
    mlp_backward(&s->mlp, x0, s->dh, dE, B); // x_0 = E: straight into dE
    break;
  }
  }

  // the cross layers, last to first; every layer also feeds dE through x_0
  // (dE may be NULL: then only the parameters get gradients)
  for (int l = L - 1; l >= 0; l--) {
    const float *xl = s->xs[l];
    const float *dy = s->dxs[l + 1];
    float *dxl = l ? s->dxs[l] : dE; // x_0 == x_l for layer 0
    if (l)
      memset(dxl, 0, n * sizeof(float));
    switch (s->cross) {
    case CROSS_VECTOR:
      nn_cross_backward(x0, xl, params_value(p, s->wid[l]), dy, dE, dxl,
                        params_grad(p, s->wid[l]), params_grad(p, s->bid[l]), B,
                        C);
      break;
    case CROSS_FULL:
      nn_cross2_backward(x0, xl, params_value(p, s->wid[l]), s->cache[l], dy,
                         dE, dxl, params_grad(p, s->wid[l]),
                         params_grad(p, s->bid[l]), s->work, B, C);
      break;
    case CROSS_MIX: {
      struct nn_crossmix m = mix_layer(s, l);
      nn_crossmix_backward(&m, x0, xl, s->cache[l], dy, dE, dxl, s->work, B);
      break;
    }
    }
  }
}

static double dcn_flops(const void *self) {
  const struct dcn *s = self;
  double C = s->C, R = s->R, K = s->K, per = 0;
  switch (s->cross) {
  case CROSS_VECTOR:
    per = 3 * C; // dot, scale, add
    break;
  case CROSS_FULL:
    per = C * C + 2 * C;
    break;
  case CROSS_MIX:
    per = K * C + K * (R * C + R * R + C * R + 2 * C);
    break;
  }
  return s->L * per + (s->has_mlp ? mlp_flops(&s->mlp) : 0) + s->fc_in;
}

static void dcn_free(void *self) {
  struct dcn *s = self;
  if (!s)
    return;
  if (s->has_mlp)
    mlp_deinit(&s->mlp);
  for (int l = 0; l <= MODEL_MAX_LAYERS; l++) {
    free(s->xs[l]);
    free(s->dxs[l]);
  }
  for (int l = 0; l < MODEL_MAX_LAYERS; l++)
    free(s->cache[l]);
  free(s->work);
  free(s->cat);
  free(s->dcat);
  free(s->dh);
  free(s);
}

const struct model_impl model_impl_dcn = {
    .name = "dcn",
    .uses_lr_weights = false,
    .init = dcn_init,
    .forward = dcn_forward,
    .backward = dcn_backward,
    .flops = dcn_flops,
    .free = dcn_free,
};

const struct model_impl model_impl_dcnv2 = {
    .name = "dcnv2",
    .uses_lr_weights = false,
    .init = dcnv2_init,
    .forward = dcn_forward,
    .backward = dcn_backward,
    .flops = dcn_flops,
    .free = dcn_free,
};
