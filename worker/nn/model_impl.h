/*
 * model_impl: how a model kind plugs into model.c (private to worker/nn).
 *
 * Each kind lives in its own file (model_dnn.c, model_dcn.c, ...) and exports
 * one `const struct model_impl model_impl_<kind>`; model.c keeps the table
 * of kinds and does the checks common to all of them. `self` is the kind's
 * own state, made by init and freed by free.
 */
#ifndef MASKPS_NN_MODEL_IMPL_H
#define MASKPS_NN_MODEL_IMPL_H

#include "worker/nn/model.h"

struct model_impl {
  const char *name;   /* as in the config and the fixtures: "dnn" */
  bool uses_lr_weights; /* takes w (B, F) */
  /* Registers tensors in params, allocates activations for Bmax rows.
   * NULL with err set when the options do not fit. */
  void *(*init)(const struct model_options *o, int F, int D, int Bmax,
                struct params *params, char *err, size_t errlen);
  void (*forward)(void *self, const float *E, const float *w, float *logits,
                  int B, bool train);
  void (*backward)(void *self, const float *dlogits, float *dE, float *dw,
                   int B);
  double (*flops)(const void *self); /* multiply-adds per example, forward */
  void (*free)(void *self);
};

extern const struct model_impl model_impl_lr, model_impl_fm, model_impl_dnn,
    model_impl_deepfm, model_impl_dcn, model_impl_dcnv2, model_impl_edcn,
    model_impl_sermasknet, model_impl_paramasknet, model_impl_maskfusion;

#endif
