/*
 * mlp: the multi-layer perceptron shared by the models (DNN, DeepFM, the
 * deep parts of DCN and DCNv2, ParaMaskNet's head, ...): a stack of linear
 * layers, each hidden one followed by ReLU and (training only) dropout,
 * with its own activations sized for Bmax rows.
 *
 *   x (B, I) -> mlp.0 -> ReLU -> dropout -> mlp.1 -> ... -> y (B, O_last)
 *
 * Parameters are registered in a struct params under the names of the
 * PyTorch fixtures (tests/nn/README.md): `<prefix>.<i>.weight` (O_i, I_i),
 * `<prefix>.<i>.bias` (O_i), linear layers numbered from 0. With logit set,
 * one more linear layer `<prefix>.<nhidden>` (1, O_last) ends the stack with
 * no activation: y is then the logit (B, 1). Init as MODELS.md: Xavier-normal
 * weights, zero biases.
 *
 * Dropout (rate p, after each hidden ReLU, inverted) draws its mask from
 * (seed + layer, step) with nn_dropout_*: a training forward advances the
 * step, the next backward replays that same mask.
 *
 * BatchNorm (mlp_init_bn with bn; FuxiCTR's MLP_Block batch_norm): each
 * hidden layer is Linear -> BatchNorm1d -> ReLU -> dropout, the norm
 * `<prefix>.<i>.bn.{weight, bias}` (1, 0) with running statistics
 * `<prefix>.<i>.bn.running_{mean, var}` as params state (eps 1e-5, momentum
 * 0.1). A training forward normalises with the batch's statistics; one of
 * a single row, and evaluation, with the running ones. Not here: other
 * activations.
 *
 * An mlp only borrows its params; it is embedded in a model's state
 * (mlp_init / mlp_deinit).
 */
#ifndef MASKPS_NN_MLP_H
#define MASKPS_NN_MLP_H

#include <stdbool.h>
#include <stdint.h>

#include "worker/nn/model.h"

struct params;

#define MLP_MAX_LAYERS (MODEL_MAX_LAYERS + 1) /* hidden + the logit layer */

struct mlp {
  struct params *p;             /* borrowed: holds every W, b */
  int n;                        /* linear layers (hidden + logit) */
  int in;                       /* I of layer 0 */
  int width[MLP_MAX_LAYERS];    /* O of layer i */
  bool logit;                   /* last layer is the (1, O) logit layer */
  int wid[MLP_MAX_LAYERS];      /* params id of layer i's W (O_i, I_i) */
  int bid[MLP_MAX_LAYERS];      /* params id of layer i's b (O_i) */
  float dropout;                /* rate after hidden layers; 0 = off */
  uint64_t seed;                /* dropout seed of layer 0 (i adds i) */
  uint64_t step;                /* training forwards so far */
  bool dropped;                 /* the last forward applied dropout */
  int Bmax;                     /* rows every buffer holds */
  float *out[MLP_MAX_LAYERS];   /* (Bmax, O_i) layer output (after ReLU and
                                   dropout for a hidden layer) */
  float *dout[MLP_MAX_LAYERS];  /* (Bmax, O_i) dLoss/d out (backward); NULL
                                   for the last layer (its dy is the caller's) */
  float *dpre[MLP_MAX_LAYERS];  /* (Bmax, O_i) dLoss/d pre-activation */
  float *ddrop[MLP_MAX_LAYERS]; /* (Bmax, O_i) dLoss/d ReLU output, only
                                   with dropout */
  bool bn;                      /* BatchNorm on the hidden layers */
  bool bn_batch;                /* the last forward used batch statistics */
  int bnw[MLP_MAX_LAYERS], bnb[MLP_MAX_LAYERS]; /* params ids, with bn */
  int bnm[MLP_MAX_LAYERS], bnv[MLP_MAX_LAYERS]; /* running mean, var */
  float *lin[MLP_MAX_LAYERS];   /* (Bmax, O_i) linear output, with bn */
  float *dlin[MLP_MAX_LAYERS];  /* (Bmax, O_i) dLoss/d lin, with bn */
  float *bmean[MLP_MAX_LAYERS], *brstd[MLP_MAX_LAYERS]; /* (O_i) stats used */
};

/* Registers the layers in p (before params_alloc) and allocates the
 * activations: I = in, hidden widths hidden[0..nhidden), plus the logit
 * layer when logit. nhidden + logit must be >= 1 and nhidden <=
 * MODEL_MAX_LAYERS, widths >= 1, 0 <= dropout < 1 (CHECKed: model.c
 * validates options first). Free with mlp_deinit. */
void mlp_init(struct mlp *m, struct params *p, const char *prefix, int in,
              const int *hidden, int nhidden, bool logit, float dropout,
              uint64_t seed, int Bmax);
/* mlp_init with a BatchNorm after each hidden linear layer when bn. */
void mlp_init_bn(struct mlp *m, struct params *p, const char *prefix, int in,
                 const int *hidden, int nhidden, bool logit, float dropout,
                 uint64_t seed, int Bmax, bool bn);
/* Frees the activations (not the params); a zeroed struct is fine. */
void mlp_deinit(struct mlp *m);

/* Width of the output: 1 with logit, else the last hidden width. */
int mlp_out_width(const struct mlp *m);

/* y (B, out width) from x (B, in); returns y, owned by m and valid until
 * the next forward. train: dropout on (if rate > 0). B <= Bmax. */
const float *mlp_forward(struct mlp *m, const float *x, int B, bool train);

/* From dy (B, out width), the gradient of the last forward's y:
 * accumulates the layers' dW, db in p and dx (B, in) (NULL: x is data).
 * x is the same input the forward saw. */
void mlp_backward(struct mlp *m, const float *x, const float *dy, float *dx,
                  int B);

/* Multiply-adds of one forward per example (the linear layers). */
double mlp_flops(const struct mlp *m);

#endif
