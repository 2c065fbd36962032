/* model_maskfusion: MaskFusion on a DNN (MODELS.md "MaskFusion",
 * tests/nn/README.md "maskfusion").
 *
 * x = V_emb = E (B, C), C = F*D; L = nhidden layers of widths H_t.
 *
 *   mask controllers  alpha_t = ctrl.t.K(ReLU(... ReLU(ctrl.t.0(x))))  (B, F),
 *                     t < L, K = hidden layers of the controller
 *                     m_{t,f} = softmax over t of alpha_{t,f}  (per field
 *                     and instance: normalised ACROSS layers)
 *   instance norm     Ê = IN(E) (B, F, D): each e_f over its own D entries,
 *                     one scalar gamma, beta per field (inorm, (F));
 *                     Ê = E without options.instance_norm
 *   fusion            ĥ_{-1} = x;  h_t = ReLU(mlp.t(ĥ_{t-1}))
 *                     ĥ_t = [m_t ⊗ Ê; h_t]      (B, C + H_t)
 *   logit             fc(ĥ_{L-1})
 *
 * Controller hidden widths: options.ctrl_hidden[0..nctrl) (the config's
 * model.controller_units; the reference fixture has one layer of 8); with
 * nctrl = 0 a controller is the one linear layer ctrl.t.0 (F, C). Dropout (options.dropout, training only) acts on each h_t
 * after its ReLU, before the concatenation, as a DNN's hidden layers: mask
 * seed dropout_seed + t, the count of training forwards as the step.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "worker/nn/mlp.h"
#include "worker/nn/model_impl.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

#define IN_EPS 1e-5f

struct maskfusion {
  struct params *p; /* borrowed */
  int F, D, C, Bmax;
  int L;                   /* hidden layers = mask controllers */
  int Hc;                  /* input width of a controller's last layer */
  int H[MODEL_MAX_LAYERS]; /* hidden widths */
  bool nctrl;              /* the controllers have hidden layers */
  struct mlp ctrl[MODEL_MAX_LAYERS]; /* ctrl.t.0 .. ctrl.t.K-1, ReLU */
  int c1w[MODEL_MAX_LAYERS], c1b[MODEL_MAX_LAYERS]; /* ctrl.t.K (F, Hc) */
  bool inorm;                                       /* instance norm on */
  int inw, inb; /* inorm (F) gamma, beta; -1 without */
  int mw[MODEL_MAX_LAYERS], mb[MODEL_MAX_LAYERS];   /* mlp.t (H_t, in_t) */
  int fcw, fcb;                                     /* fc (1, C + H_{L-1}) */
  float drop;          /* dropout rate on h_t; 0 = off */
  uint64_t seed, step; /* dropout masks: seed + t, training step */
  bool dropped;        /* the last forward applied dropout */
  /* forward activations */
  float *x;                    /* (Bmax, C) copy of E */
  const float *ca[MODEL_MAX_LAYERS]; /* (B, Hc) the controller's last
                                        hidden output (owned by ctrl[t]),
                                        or x */
  float *alpha;                /* (L, B, F) controller logits */
  float *mask;                 /* (L, B, F) m = softmax over L */
  float *en;                   /* (Bmax, C) Ê (x without instance norm) */
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
  float *dca;                   /* (Bmax, Hc) dLoss/d ca */
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
    mlp_deinit(&s->ctrl[t]);
    free(s->h[t]);
    free(s->me[t]);
    free(s->hc[t]);
    free(s->dhc[t]);
  }
  free(s->x);
  free(s->alpha);
  free(s->mask);
  if (s->inorm)
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
  s->drop = o->dropout;
  s->seed = o->dropout_seed;
  s->nctrl = o->nctrl > 0;
  s->inorm = o->instance_norm;
  int C = s->C, Hmax = 1;
  int K = o->nctrl;
  s->Hc = K ? o->ctrl_hidden[K - 1] : C;
  for (int t = 0; t < s->L; t++) {
    // hidden layers ctrl.t.0 .. ctrl.t.K-1 (ReLU, no dropout), then the
    // linear ctrl.t.K to the F field logits
    snprintf(nm, sizeof(nm), "ctrl.%d", t);
    if (K)
      mlp_init(&s->ctrl[t], p, nm, C, o->ctrl_hidden, K, false, 0.0f, 0,
               Bmax);
    snprintf(nm, sizeof(nm), "ctrl.%d.%d.weight", t, K);
    s->c1w[t] = params_add(p, nm, 1, F, s->Hc, PARAMS_XAVIER_NORMAL, 1.0f);
    snprintf(nm, sizeof(nm), "ctrl.%d.%d.bias", t, K);
    s->c1b[t] = params_add(p, nm, 1, 1, F, PARAMS_ZEROS, 0.0f);
  }
  s->inw = s->inb = -1;
  if (s->inorm) {
    s->inw = params_add(p, "inorm.weight", 1, 1, F, PARAMS_ONES, 0.0f);
    s->inb = params_add(p, "inorm.bias", 1, 1, F, PARAMS_ZEROS, 0.0f);
  }
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
  s->en = s->inorm ? buf(Bmax, C) : s->x;
  s->imean = buf(Bmax, F);
  s->irstd = buf(Bmax, F);
  s->dh = buf(Bmax, Hmax);
  s->dhpre = buf(Bmax, Hmax);
  s->ddrop = buf(Bmax, Hmax);
  s->dme = buf(Bmax, C);
  s->den = buf(Bmax, C);
  s->dmask = buf((size_t)s->L * Bmax, F);
  s->dalpha = buf((size_t)s->L * Bmax, F);
  s->dca = s->nctrl ? buf(Bmax, s->Hc) : NULL;
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
    s->ca[t] = s->nctrl ? mlp_forward(&s->ctrl[t], s->x, B, train)
                        : s->x; // (B, Hc)
    nn_linear_forward(s->ca[t], params_value(p, s->c1w[t]),
                      params_value(p, s->c1b[t]), s->alpha + t * BF, B, Hc,
                      F); // (B, F)
  }
  nn_softmax_forward(s->alpha, s->mask, 1, L, (int)BF, 1.0f); // (L, B, F)
  if (s->inorm)
    nn_instancenorm_forward(s->x, params_value(p, s->inw),
                            params_value(p, s->inb), s->en, s->imean, s->irstd,
                            B, F, D, IN_EPS); // (B, F, D)
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
  if (s->inorm)
    nn_instancenorm_backward(s->x, params_value(p, s->inw), s->imean,
                             s->irstd, s->den, dE, params_grad(p, s->inw),
                             params_grad(p, s->inb), B, F, D);
  else if (dE) // Ê = E
    for (size_t i = 0; i < (size_t)B * C; i++)
      dE[i] += s->den[i];
  zero(s->dalpha, L * B, F);
  nn_softmax_backward(s->mask, s->dmask, s->dalpha, 1, L, (int)BF, 1.0f);
  for (int t = 0; t < L; t++) {
    // without hidden layers the controller's input is x: straight into dE
    float *dca = s->nctrl ? s->dca : dE;
    if (s->nctrl)
      zero(dca, B, Hc);
    nn_linear_backward(s->ca[t], params_value(p, s->c1w[t]), s->dalpha + t * BF,
                       dca, params_grad(p, s->c1w[t]),
                       params_grad(p, s->c1b[t]), B, Hc, F);
    if (s->nctrl)
      mlp_backward(&s->ctrl[t], s->x, dca, dE, B);
  }
}

static double maskfusion_flops(const void *self) {
  const struct maskfusion *s = self;
  double f = 0;
  int in = s->C;
  for (int t = 0; t < s->L; t++) {
    f += (s->nctrl ? mlp_flops(&s->ctrl[t]) : 0) +
         (double)s->F * s->Hc; // controller
    f += (double)in * s->H[t] + s->C;                 // layer + mask scale
    in = s->C + s->H[t];
  }
  return f + in + (s->inorm ? 4.0 * s->C : 0); // fc + instance norm
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
