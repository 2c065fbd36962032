/* model_maskfusion: MaskFusion on a DNN (MODELS.md "MaskFusion",
 * tests/nn/README.md "maskfusion").
 *
 * x = V_emb = E (B, C), C = F*D; L = nhidden layers of widths H_t.
 *
 *   mask controllers  alpha_t = ctrl.t.1(ReLU(ctrl.t.0(x)))   (B, F), t < L
 *                     m_{t,f} = softmax over t of alpha_{t,f}  (per field
 *                     and instance: normalised ACROSS layers)
 *   instance norm     Ê = IN(E) (B, F, D): each e_f over its own D entries,
 *                     one scalar gamma, beta per field (inorm, (F))
 *   fusion            ĥ_{-1} = x;  h_t = ReLU(mlp.t(ĥ_{t-1}))
 *                     ĥ_t = [m_t ⊗ Ê; h_t]      (B, C + H_t)
 *   logit             fc(ĥ_{L-1})
 *
 * Controller hidden width: MASKFUSION_CTRL_HIDDEN (struct model_options has
 * no field for it yet; the config's model.controller_units is where it
 * belongs). Dropout (options.dropout, training only) acts on each h_t
 * after its ReLU, before the concatenation, as a DNN's hidden layers: mask
 * seed dropout_seed + t, the count of training forwards as the step.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "worker/nn/model_impl.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

#define IN_EPS 1e-5f
/* Hidden units of each mask controller (the reference fixture's width). */
#define MASKFUSION_CTRL_HIDDEN 8

struct maskfusion {
  struct params *p; /* borrowed */
  int F, D, C, Bmax;
  int L;                   /* hidden layers = mask controllers */
  int Hc;                  /* controller hidden width */
  int H[MODEL_MAX_LAYERS]; /* hidden widths */
  int c0w[MODEL_MAX_LAYERS], c0b[MODEL_MAX_LAYERS]; /* ctrl.t.0 (Hc, C) */
  int c1w[MODEL_MAX_LAYERS], c1b[MODEL_MAX_LAYERS]; /* ctrl.t.1 (F, Hc) */
  int inw, inb;                                     /* inorm (F) gamma, beta */
  int mw[MODEL_MAX_LAYERS], mb[MODEL_MAX_LAYERS];   /* mlp.t (H_t, in_t) */
  int fcw, fcb;                                     /* fc (1, C + H_{L-1}) */
  float drop;          /* dropout rate on h_t; 0 = off */
  uint64_t seed, step; /* dropout masks: seed + t, training step */
  bool dropped;        /* the last forward applied dropout */
  /* forward activations */
  float *x;                    /* (Bmax, C) copy of E */
  float *ca[MODEL_MAX_LAYERS]; /* (Bmax, Hc) ReLU(ctrl.t.0(x)) */
  float *alpha;                /* (L, B, F) controller logits */
  float *mask;                 /* (L, B, F) m = softmax over L */
  float *en;                   /* (Bmax, C) Ê */
  float *imean, *irstd;        /* (Bmax*F) instance-norm cache */
  float *h[MODEL_MAX_LAYERS];  /* (Bmax, H_t) ReLU(mlp.t(ĥ_{t-1})) */
  float *me[MODEL_MAX_LAYERS]; /* (Bmax, C) m_t ⊗ Ê */
  float *hc[MODEL_MAX_LAYERS]; /* (Bmax, C + H_t) ĥ_t */
  /* backward scratch */
  float *dhc[MODEL_MAX_LAYERS]; /* (Bmax, C + H_t) dLoss/d ĥ_t */
  float *dh, *dhpre;            /* (Bmax, max H_t) */
  float *ddrop;                 /* (Bmax, max H_t) dLoss/d ReLU output */
  float *dme;                   /* (Bmax, C) */
  float *den;                   /* (Bmax, C) dLoss/d Ê */
  float *dmask, *dalpha;        /* (L, B, F) */
  float *dca, *dcapre;          /* (Bmax, Hc) */
};

static float *buf(size_t rows, int w) {
  return xaligned(rows * (size_t)w * sizeof(float));
}

static void zero(float *x, int B, int w) {
  memset(x, 0, (size_t)B * w * sizeof(float));
}

static void maskfusion_free(void *self) {
  struct maskfusion *s = self;
  if (!s)
    return;
  for (int t = 0; t < s->L; t++) {
    free(s->ca[t]);
    free(s->h[t]);
    free(s->me[t]);
    free(s->hc[t]);
    free(s->dhc[t]);
  }
  free(s->x);
  free(s->alpha);
  free(s->mask);
  free(s->en);
  free(s->imean);
  free(s->irstd);
  free(s->dh);
  free(s->dhpre);
  free(s->ddrop);
  free(s->dme);
  free(s->den);
  free(s->dmask);
  free(s->dalpha);
  free(s->dca);
  free(s->dcapre);
  free(s);
}

static void *maskfusion_init(const struct model_options *o, int F, int D,
                             int Bmax, struct params *p, char *err,
                             size_t errlen) {
  if (o->nhidden < 1) {
    snprintf(err, errlen,
             "model maskfusion: needs at least one hidden layer (the fusion "
             "layers are the DNN's hidden layers)");
    return NULL;
  }
  struct maskfusion *s = xcalloc(1, sizeof(*s));
  char nm[PARAMS_NAME_MAX + 1];
  s->p = p;
  s->F = F;
  s->D = D;
  s->C = F * D;
  s->Bmax = Bmax;
  s->L = o->nhidden;
  s->Hc = MASKFUSION_CTRL_HIDDEN;
  s->drop = o->dropout;
  s->seed = o->dropout_seed;
  int C = s->C, Hc = s->Hc, Hmax = 1;
  for (int t = 0; t < s->L; t++) {
    snprintf(nm, sizeof(nm), "ctrl.%d.0.weight", t);
    s->c0w[t] = params_add(p, nm, 1, Hc, C, PARAMS_XAVIER_NORMAL, 1.0f);
    snprintf(nm, sizeof(nm), "ctrl.%d.0.bias", t);
    s->c0b[t] = params_add(p, nm, 1, 1, Hc, PARAMS_ZEROS, 0.0f);
    snprintf(nm, sizeof(nm), "ctrl.%d.1.weight", t);
    s->c1w[t] = params_add(p, nm, 1, F, Hc, PARAMS_XAVIER_NORMAL, 1.0f);
    snprintf(nm, sizeof(nm), "ctrl.%d.1.bias", t);
    s->c1b[t] = params_add(p, nm, 1, 1, F, PARAMS_ZEROS, 0.0f);
  }
  s->inw = params_add(p, "inorm.weight", 1, 1, F, PARAMS_ONES, 0.0f);
  s->inb = params_add(p, "inorm.bias", 1, 1, F, PARAMS_ZEROS, 0.0f);
  int in = C; // ĥ_{-1} = x
  for (int t = 0; t < s->L; t++) {
    int Ht = s->H[t] = o->hidden[t];
    if (Ht > Hmax)
      Hmax = Ht;
    snprintf(nm, sizeof(nm), "mlp.%d.weight", t);
    s->mw[t] = params_add(p, nm, 1, Ht, in, PARAMS_XAVIER_NORMAL, 1.0f);
    snprintf(nm, sizeof(nm), "mlp.%d.bias", t);
    s->mb[t] = params_add(p, nm, 1, 1, Ht, PARAMS_ZEROS, 0.0f);
    in = C + Ht;
    s->ca[t] = buf(Bmax, Hc);
    s->h[t] = buf(Bmax, Ht);
    s->me[t] = buf(Bmax, C);
    s->hc[t] = buf(Bmax, C + Ht);
    s->dhc[t] = buf(Bmax, C + Ht);
  }
  s->fcw = params_add(p, "fc.weight", 1, 1, in, PARAMS_XAVIER_NORMAL, 1.0f);
  s->fcb = params_add(p, "fc.bias", 1, 1, 1, PARAMS_ZEROS, 0.0f);
  s->x = buf(Bmax, C);
  s->alpha = buf((size_t)s->L * Bmax, F);
  s->mask = buf((size_t)s->L * Bmax, F);
  s->en = buf(Bmax, C);
  s->imean = buf(Bmax, F);
  s->irstd = buf(Bmax, F);
  s->dh = buf(Bmax, Hmax);
  s->dhpre = buf(Bmax, Hmax);
  s->ddrop = buf(Bmax, Hmax);
  s->dme = buf(Bmax, C);
  s->den = buf(Bmax, C);
  s->dmask = buf((size_t)s->L * Bmax, F);
  s->dalpha = buf((size_t)s->L * Bmax, F);
  s->dca = buf(Bmax, Hc);
  s->dcapre = buf(Bmax, Hc);
  return s;
}

static void maskfusion_forward(void *self, const float *E, const float *w,
                               float *logits, int B, bool train) {
  (void)w;
  struct maskfusion *s = self;
  const struct params *p = s->p;
  int F = s->F, D = s->D, C = s->C, Hc = s->Hc, L = s->L;
  size_t BF = (size_t)B * F; // alpha, mask: layer t at t*B*F (packed for B)
  memcpy(s->x, E, (size_t)B * C * sizeof(float)); // (B, C)
  s->dropped = train && s->drop > 0; // the only train/eval difference
  if (s->dropped)
    s->step++;
  // Mask controllers on the raw x, then the softmax across the L layers.
  for (int t = 0; t < L; t++) {
    nn_linear_forward(s->x, params_value(p, s->c0w[t]),
                      params_value(p, s->c0b[t]), s->ca[t], B, C, Hc);
    nn_relu_forward(s->ca[t], s->ca[t], (size_t)B * Hc); // (B, Hc)
    nn_linear_forward(s->ca[t], params_value(p, s->c1w[t]),
                      params_value(p, s->c1b[t]), s->alpha + t * BF, B, Hc,
                      F); // (B, F)
  }
  nn_softmax_forward(s->alpha, s->mask, 1, L, (int)BF, 1.0f); // (L, B, F)
  nn_instancenorm_forward(s->x, params_value(p, s->inw),
                          params_value(p, s->inb), s->en, s->imean, s->irstd, B,
                          F, D, IN_EPS); // (B, F, D)
  // Fusion layers.
  const float *prev = s->x; // ĥ_{t-1}
  int in = C;
  for (int t = 0; t < L; t++) {
    int Ht = s->H[t];
    nn_linear_forward(prev, params_value(p, s->mw[t]),
                      params_value(p, s->mb[t]), s->h[t], B, in, Ht);
    nn_relu_forward(s->h[t], s->h[t], (size_t)B * Ht); // (B, H_t)
    if (s->dropped)
      nn_dropout_forward(s->h[t], s->h[t], (size_t)B * Ht, s->drop, s->seed + t,
                         s->step);
    nn_field_scale_forward(s->mask + t * BF, s->en, s->me[t], B, F, D,
                           B); // (B, C)
    const float *parts[2] = {s->me[t], s->h[t]};
    int widths[2] = {C, Ht};
    nn_concat_forward(2, parts, widths, s->hc[t], B); // (B, C + H_t)
    prev = s->hc[t];
    in = C + Ht;
  }
  nn_linear_forward(prev, params_value(p, s->fcw), params_value(p, s->fcb),
                    logits, B, in, 1); // (B)
}

static void maskfusion_backward(void *self, const float *dlogits, float *dE,
                                float *dw, int B) {
  (void)dw;
  struct maskfusion *s = self;
  const struct params *p = s->p;
  int F = s->F, D = s->D, C = s->C, Hc = s->Hc, L = s->L;
  size_t BF = (size_t)B * F;
  int top = C + s->H[L - 1];
  zero(s->dhc[L - 1], B, top);
  nn_linear_backward(s->hc[L - 1], params_value(p, s->fcw), dlogits,
                     s->dhc[L - 1], params_grad(p, s->fcw),
                     params_grad(p, s->fcb), B, top, 1);
  zero(s->dmask, L * B, F);
  zero(s->den, B, C);
  for (int t = L - 1; t >= 0; t--) {
    int Ht = s->H[t];
    // ĥ_t = [m_t ⊗ Ê; h_t]
    zero(s->dme, B, C);
    zero(s->dh, B, Ht);
    float *parts[2] = {s->dme, s->dh};
    int widths[2] = {C, Ht};
    nn_concat_backward(2, widths, s->dhc[t], parts, B);
    nn_field_scale_backward(s->mask + t * BF, s->en, s->dme, s->dmask + t * BF,
                            s->den, B, F, D, B);
    // h_t = ReLU(mlp.t(ĥ_{t-1}))
    const float *g = s->dh; // dLoss/d ReLU output
    if (s->dropped) {
      zero(s->ddrop, B, Ht);
      nn_dropout_backward(s->dh, s->ddrop, (size_t)B * Ht, s->drop, s->seed + t,
                          s->step);
      g = s->ddrop;
    }
    // h_t > 0 exactly where the ReLU passed and dropout kept.
    zero(s->dhpre, B, Ht);
    nn_relu_backward(s->h[t], g, s->dhpre, (size_t)B * Ht);
    const float *prev = t ? s->hc[t - 1] : s->x;
    int in = t ? C + s->H[t - 1] : C;
    float *dprev = dE;
    if (t) {
      dprev = s->dhc[t - 1];
      zero(dprev, B, in);
    }
    nn_linear_backward(prev, params_value(p, s->mw[t]), s->dhpre, dprev,
                       params_grad(p, s->mw[t]), params_grad(p, s->mb[t]), B,
                       in, Ht);
  }
  nn_instancenorm_backward(s->x, params_value(p, s->inw), s->imean, s->irstd,
                           s->den, dE, params_grad(p, s->inw),
                           params_grad(p, s->inb), B, F, D);
  zero(s->dalpha, L * B, F);
  nn_softmax_backward(s->mask, s->dmask, s->dalpha, 1, L, (int)BF, 1.0f);
  for (int t = 0; t < L; t++) {
    zero(s->dca, B, Hc);
    nn_linear_backward(s->ca[t], params_value(p, s->c1w[t]), s->dalpha + t * BF,
                       s->dca, params_grad(p, s->c1w[t]),
                       params_grad(p, s->c1b[t]), B, Hc, F);
    zero(s->dcapre, B, Hc);
    nn_relu_backward(s->ca[t], s->dca, s->dcapre, (size_t)B * Hc);
    nn_linear_backward(s->x, params_value(p, s->c0w[t]), s->dcapre, dE,
                       params_grad(p, s->c0w[t]), params_grad(p, s->c0b[t]), B,
                       C, Hc);
  }
}

static double maskfusion_flops(const void *self) {
  const struct maskfusion *s = self;
  double f = 0;
  int in = s->C;
  for (int t = 0; t < s->L; t++) {
    f += (double)s->Hc * s->C + (double)s->F * s->Hc; // controller
    f += (double)in * s->H[t] + s->C;                 // layer + mask scale
    in = s->C + s->H[t];
  }
  return f + in + 4.0 * s->C; // fc + instance norm
}

const struct model_impl model_impl_maskfusion = {
    .name = "maskfusion",
    .uses_lr_weights = false,
    .init = maskfusion_init,
    .forward = maskfusion_forward,
    .backward = maskfusion_backward,
    .flops = maskfusion_flops,
    .free = maskfusion_free,
};
