/* model_dnn: DNN and DeepFM (MODELS.md, tests/nn/README.md "dnn",
 * "deepfm").
 *
 *   DNN:    logit = mlp(x), x = V_emb (B, F*D); mlp = hidden Linear+ReLU
 *           layers mlp.0 .. mlp.{n-1}, then the logit layer mlp.n (1, H)
 *   DeepFM: logit = lr.bias + sum_f w_f + FM(E) + mlp(x)
 *           (the mlp's last bias and lr.bias are both kept, as FuxiCTR)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "worker/nn/mlp.h"
#include "worker/nn/model_impl.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

struct dnn {
  struct params *p; /* borrowed */
  int F, D, C;      /* C = F*D */
  bool deepfm;      /* add the LR and FM terms */
  struct mlp mlp;   /* C -> hidden... -> 1 */
  int bias_id;      /* lr.bias (1), DeepFM */
  float *x;         /* (Bmax, C) copy of the forward's E */
  float *pair;      /* (Bmax) FM's pairwise term, DeepFM */
};

static void *init_common(bool deepfm, const struct model_options *o, int F,
                         int D, int Bmax, struct params *p, char *err,
                         size_t errlen) {
  const char *name = deepfm ? "deepfm" : "dnn";
  if (o->nhidden < 1) {
    snprintf(err, errlen,
             "model %s: hidden_units is empty; the MLP needs at least one "
             "hidden layer, like [400, 400]",
             name);
    return NULL;
  }
  struct dnn *s = xcalloc(1, sizeof(*s));
  s->p = p;
  s->F = F;
  s->D = D;
  s->C = F * D;
  s->deepfm = deepfm;
  if (deepfm)
    s->bias_id = params_add(p, "lr.bias", 1, 1, 1, PARAMS_ZEROS, 0.0f);
  mlp_init_bn(&s->mlp, p, "mlp", s->C, o->hidden, o->nhidden, true,
              o->dropout, o->dropout_seed, Bmax, o->use_bn);
  s->x = xaligned((size_t)Bmax * s->C * sizeof(float));
  if (deepfm)
    s->pair = xaligned((size_t)Bmax * sizeof(float));
  return s;
}

static void *dnn_init(const struct model_options *o, int F, int D, int Bmax,
                      struct params *p, char *err, size_t errlen) {
  return init_common(false, o, F, D, Bmax, p, err, errlen);
}

static void *deepfm_init(const struct model_options *o, int F, int D, int Bmax,
                         struct params *p, char *err, size_t errlen) {
  return init_common(true, o, F, D, Bmax, p, err, errlen);
}

static void dnn_forward(void *self, const float *E, const float *w,
                        float *logits, int B, bool train) {
  struct dnn *s = self;
  int F = s->F, D = s->D;
  CHECK(E, "E (B, F*D) is required");
  memcpy(s->x, E, (size_t)B * s->C * sizeof(float));     // (B, C), kept for dW
  const float *y = mlp_forward(&s->mlp, s->x, B, train); // (B, 1)
  memcpy(logits, y, (size_t)B * sizeof(float));
  if (s->deepfm) {
    nn_fm_forward(s->x, s->pair, B, F, D); // (B)
    nn_add_forward(logits, s->pair, logits, B);
    for (int b = 0; b < B; b++) { // + sum_f w_f
      float sw = 0;
      for (int f = 0; f < F; f++)
        sw += w[(size_t)b * F + f];
      logits[b] += sw;
    }
    nn_bias_forward(logits, params_value(s->p, s->bias_id), B, 1);
  }
}

static void dnn_backward(void *self, const float *dlogits, float *dE, float *dw,
                         int B) {
  struct dnn *s = self;
  if (s->deepfm) {
    nn_bias_backward(dlogits, params_grad(s->p, s->bias_id), B, 1);
    if (dw)
      nn_rowsum_backward(dlogits, dw, B, s->F);
    if (dE)
      nn_fm_backward(s->x, dlogits, dE, B, s->F, s->D);
  }
  mlp_backward(&s->mlp, s->x, dlogits, dE, B); // dlogits is (B, 1)
}

static double dnn_flops(const void *self) {
  const struct dnn *s = self;
  return mlp_flops(&s->mlp) + (s->deepfm ? s->F + 2.0 * s->C : 0.0);
}

static void dnn_free(void *self) {
  struct dnn *s = self;
  if (!s)
    return;
  mlp_deinit(&s->mlp);
  free(s->x);
  free(s->pair);
  free(s);
}

const struct model_impl model_impl_dnn = {
    .name = "dnn",
    .uses_lr_weights = false,
    .init = dnn_init,
    .forward = dnn_forward,
    .backward = dnn_backward,
    .flops = dnn_flops,
    .free = dnn_free,
};

const struct model_impl model_impl_deepfm = {
    .name = "deepfm",
    .uses_lr_weights = true,
    .init = deepfm_init,
    .forward = dnn_forward,
    .backward = dnn_backward,
    .flops = dnn_flops,
    .free = dnn_free,
};
