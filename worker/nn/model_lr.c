/* model_lr: LR and FM (MODELS.md, tests/nn/README.md "lr", "fm").
 *
 *   LR: logit = lr.bias + sum_f w_f
 *   FM: logit = lr.bias + sum_f w_f + 1/2 sum_d [(sum_f e_fd)^2 - sum_f e_fd^2]
 *
 * w (B, F) are the 1-dim LR embeddings (a D = 1 table of their own, pulled
 * with the rows), E (B, F*D) the field embeddings; LR ignores E.
 */
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "worker/nn/model_impl.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

struct lr {
  struct params *p; /* borrowed */
  int F, D, Bmax;
  bool fm;     /* FM's pairwise term on */
  int bias_id; /* lr.bias (1) */
  float *E;    /* (Bmax, F*D) copy of the forward's E (FM) */
  float *pair; /* (Bmax) FM's pairwise term */
};

static void *lr_init_common(bool fm, const struct model_options *o, int F,
                            int D, int Bmax, struct params *p) {
  struct lr *s = xcalloc(1, sizeof(*s));
  s->p = p;
  s->F = F;
  s->D = D;
  s->Bmax = Bmax;
  s->fm = fm;
  s->bias_id = params_add(p, "lr.bias", 1, 1, 1, PARAMS_ZEROS, 0.0f);
  if (fm) {
    s->E = xaligned((size_t)Bmax * F * D * sizeof(float));
    s->pair = xaligned((size_t)Bmax * sizeof(float));
  }
  return s;
}

static void *lr_init(const struct model_options *o, int F, int D, int Bmax,
                     struct params *p, char *err, size_t errlen) {
  return lr_init_common(false, o, F, D, Bmax, p);
}

static void *fm_init(const struct model_options *o, int F, int D, int Bmax,
                     struct params *p, char *err, size_t errlen) {
  return lr_init_common(true, o, F, D, Bmax, p);
}

static void lr_forward(void *self, const float *E, const float *w,
                       float *logits, int B, bool train) {
  struct lr *s = self;
  int F = s->F, D = s->D;
  nn_rowsum_forward(w, logits, B, F);                            // (B)
  nn_bias_forward(logits, params_value(s->p, s->bias_id), B, 1); // + b
  if (s->fm) {
    CHECK(E, "fm needs E");
    memcpy(s->E, E, (size_t)B * F * D * sizeof(float));
    nn_fm_forward(s->E, s->pair, B, F, D);      // (B)
    nn_add_forward(logits, s->pair, logits, B); // + pairwise
  }
}

static void lr_backward(void *self, const float *dlogits, float *dE, float *dw,
                        int B) {
  struct lr *s = self;
  int F = s->F, D = s->D;
  if (s->fm && dE)
    nn_fm_backward(s->E, dlogits, dE, B, F, D);
  nn_bias_backward(dlogits, params_grad(s->p, s->bias_id), B, 1);
  if (dw)
    nn_rowsum_backward(dlogits, dw, B, F);
}

static double lr_flops(const void *self) {
  const struct lr *s = self;
  // F adds for the sum; FM: two sums and a square per (f, d).
  return s->F + (s->fm ? 2.0 * s->F * s->D : 0.0);
}

static void lr_free(void *self) {
  struct lr *s = self;
  if (!s)
    return;
  free(s->E);
  free(s->pair);
  free(s);
}

const struct model_impl model_impl_lr = {
    .name = "lr",
    .uses_lr_weights = true,
    .init = lr_init,
    .forward = lr_forward,
    .backward = lr_backward,
    .flops = lr_flops,
    .free = lr_free,
};

const struct model_impl model_impl_fm = {
    .name = "fm",
    .uses_lr_weights = true,
    .init = fm_init,
    .forward = lr_forward,
    .backward = lr_backward,
    .flops = lr_flops,
    .free = lr_free,
};
