/*
 * ops: the dense layers of every maskps model, forward and backward side by
 * side over raw float arrays (STYLE.md rule 6). The models (DNN, DCN, DCNv2,
 * EDCN, MaskNet, MaskFusion, DIN, AMTL) are compositions of these calls.
 *
 * Legend of dimension letters, used in every shape comment below and in the
 * models built on these ops:
 *
 *   B  batch rows               F  fields             D  embedding size
 *   I  linear input width       O  linear output width
 *   H  feature width of an element-wise / normalised layer
 *   C  width of a cross-layer vector (F*D when it is the embeddings)
 *   R  low rank (DCNv2 mixture)  K  experts (DCNv2 mixture)
 *   L  padded sequence length    U  unique keys pulled for a batch
 *   N  a plain element or row count
 *
 * Shapes are row-major and packed: (B, F*D) means B rows of F*D floats, field
 * f of row b at offset b*F*D + f*D.
 *
 * Conventions that hold for every op:
 *   - forward OVERWRITES its output; the output never aliases an input unless
 *     the comment says in-place is fine.
 *   - backward ACCUMULATES (+=) into every gradient it is given, so a tensor
 *     that feeds two consumers gets both contributions and grads are zeroed
 *     once per step (params_zero_grad). A gradient pointer may be NULL when
 *     nobody needs it (an input that is data, a layer without bias); the
 *     comment says which may.
 *   - gradients are named with a d prefix: dy is dLoss/dy.
 *   - "cache" arrays are written by forward and read back by backward
 *     (statistics, intermediate products): the caller owns them, one per
 *     layer instance, sized as commented.
 *   - shape mismatches are our own bugs and CHECKed; non-finite values are
 *     data problems, found by nn_find_nonfinite (bottom of this file).
 *
 * Weight layout: a linear layer's W is (O, I), torch.nn.Linear's layout, so
 * PyTorch fixtures copy over unchanged: y = x W^T + b.
 *
 * A hidden layer as a model writes it (W, b, dW, db are params.h views;
 * h is kept from forward to backward; dz is zeroed scratch):
 *
 *   forward:   nn_linear_forward(x, W, b, h, B, I, O);       // h (B,O)
 *              nn_relu_forward(h, h, (size_t)B * O);         // in place
 *   backward:  nn_relu_backward(h, dh, dz, (size_t)B * O);   // dz (B,O)
 *              nn_linear_backward(x, W, dz, dx, dW, db, B, I, O);
 *
 * Not here: parameters and optimizers (nn/params.h), the matrix product itself
 * (nn/gemm.h), the models.
 */
#ifndef MASKPS_NN_OPS_H
#define MASKPS_NN_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------
 * Linear algebra and plumbing (linear.c)
 * ---------------------------------------------------------------------- */

/* y (B,O) = x (B,I) W^T + b, W (O,I), b (O) or NULL for no bias. */
void nn_linear_forward(const float *x, const float *W, const float *b, float *y,
                       int B, int I, int O);
/* dx (B,I) += dy W; dW (O,I) += dy^T x; db (O) += sum_b dy.
 * dx may be NULL (x is data), db NULL (no bias). */
void nn_linear_backward(const float *x, const float *W, const float *dy,
                        float *dx, float *dW, float *db, int B, int I, int O);

/* y (B,H) += b (H), in place: a bias on its own (after a bias-free W). */
void nn_bias_forward(float *y, const float *b, int B, int H);
/* db (H) += sum over rows of dy (B,H). (dy passes through unchanged.) */
void nn_bias_backward(const float *dy, float *db, int B, int H);

/* y (N) = a (N) * b (N), element-wise (the Hadamard product). */
void nn_mul_forward(const float *a, const float *b, float *y, size_t n);
/* da += dy * b; db += dy * a. Either may be NULL. */
void nn_mul_backward(const float *a, const float *b, const float *dy, float *da,
                     float *db, size_t n);

/* y (N) = a (N) + b (N). y may alias a or b. */
void nn_add_forward(const float *a, const float *b, float *y, size_t n);
/* da += dy; db += dy. Either may be NULL. */
void nn_add_backward(const float *dy, float *da, float *db, size_t n);

/* y (N) = a (N) - b (N) (DIN's q - k). y may alias a or b. */
void nn_sub_forward(const float *a, const float *b, float *y, size_t n);
/* da += dy; db -= dy. Either may be NULL. */
void nn_sub_backward(const float *dy, float *da, float *db, size_t n);

/* Field scaling: y[b,f,:] = m[b,f] * e[b,f,:] with e, y (B,F,D) and m (mB,F),
 * mB = B for per-instance weights (MaskFusion's m_t) or mB = 1 for one
 * weight per field shared by the batch (EDCN's regulation gate). With
 * F = 1 it scales whole rows: y[n,:] = m[n] * e[n,:] (AMTL's alpha mix). */
void nn_field_scale_forward(const float *m, const float *e, float *y, int B,
                            int F, int D, int mB);
/* dm (mB,F) += sum_d dy*e; de (B,F,D) += m*dy. Either may be NULL. */
void nn_field_scale_backward(const float *m, const float *e, const float *dy,
                             float *dm, float *de, int B, int F, int D, int mB);

/* Repeat each row L times: y (B,L,H)[b,l,:] = x (B,H)[b,:] (DIN's target
 * item next to each history item). */
void nn_repeat_forward(const float *x, float *y, int B, int L, int H);
/* dx (B,H) += sum over l of dy (B,L,H). */
void nn_repeat_backward(const float *dy, float *dx, int B, int L, int H);

/* Sum of each row: y (B) = sum_h x (B,H) (LR's sum of 1-dim embeddings,
 * scores over a list). */
void nn_rowsum_forward(const float *x, float *y, int B, int H);
/* dx (B,H) += dy (B) on every entry of the row. */
void nn_rowsum_backward(const float *dy, float *dx, int B, int H);

/* Concatenation along the feature axis: y (B, sum w) = [x_0; ...; x_{n-1}],
 * x_i (B, w_i). */
void nn_concat_forward(int n, const float *const *xs, const int *w, float *y,
                       int B);
/* dx_i (B, w_i) += its columns of dy; a NULL dx_i is skipped. */
void nn_concat_backward(int n, const int *w, const float *dy, float *const *dxs,
                        int B);

/* The inverse: y_i (B, w_i) = columns of x (B, sum w). */
void nn_split_forward(const float *x, int n, const int *w, float *const *ys,
                      int B);
/* dx (B, sum w) += [dy_0; ...]; a NULL dy_i contributes nothing. */
void nn_split_backward(int n, const int *w, const float *const *dys, float *dx,
                       int B);

/* ------------------------------------------------------------------------
 * Activations, softmax, dropout (act.c)
 * ---------------------------------------------------------------------- */

/* y = max(x, 0), element-wise over N; in place (y == x) is fine. */
void nn_relu_forward(const float *x, float *y, size_t n);
/* dx += dy where y > 0. Takes the OUTPUT y, so in-place forward works. */
void nn_relu_backward(const float *y, const float *dy, float *dx, size_t n);

/* y = 1 / (1 + exp(-x)), computed without overflow; in place is fine. */
void nn_sigmoid_forward(const float *x, float *y, size_t n);
/* dx += dy * y * (1 - y), from the output y. */
void nn_sigmoid_backward(const float *y, const float *dy, float *dx, size_t n);

/* y = tanh(x); in place is fine. */
void nn_tanh_forward(const float *x, float *y, size_t n);
/* dx += dy * (1 - y^2), from the output y. */
void nn_tanh_backward(const float *y, const float *dy, float *dx, size_t n);

/* PReLU with one slope per unit: y (B,H) = x > 0 ? x : a[h] * x, a (H).
 * (torch.nn.PReLU(H); for one shared slope pass H = 1 and B = rows*width.) */
void nn_prelu_forward(const float *x, const float *a, float *y, int B, int H);
/* dx += dy * (x > 0 ? 1 : a); da (H) += sum_b dy * min(x, 0). */
void nn_prelu_backward(const float *x, const float *a, const float *dy,
                       float *dx, float *da, int B, int H);

/* Softmax of x / T along one axis. x and y are viewed as (N0, A, N1): the
 * softmax runs over the middle axis A for each of the N0*N1 (outer, inner)
 * pairs; N1 = 1 is the last axis. T > 0 is the temperature (1 = plain
 * softmax, small = sharper). Max-subtracted, so any finite x works. */
void nn_softmax_forward(const float *x, float *y, int N0, int A, int N1,
                        float T);
/* dx += (y * (dy - sum_A(dy * y))) / T, from the output y. */
void nn_softmax_backward(const float *y, const float *dy, float *dx, int N0,
                         int A, int N1, float T);

/* Softmax over the last axis of x (B,L) / T restricted to the entries with
 * mask (B,L) != 0 (padding gets y = 0; a row with no real entry is all 0),
 * for attention over a padded sequence. Backward is nn_softmax_backward with
 * (B, L, 1): the zeros of y already stop the gradient at the padding. */
void nn_masked_softmax_forward(const float *x, const float *mask, float *y,
                               int B, int L, float T);

/* Inverted dropout with drop probability p in [0, 1): y = x * keep / (1 - p)
 * with keep a Bernoulli(1 - p) draw that depends only on (seed, step, i):
 * no state, no storage, the same mask again in backward and on a replay.
 * Give every dropout layer its own seed, and mix the worker rank into it
 * when several workers train (else they drop the same units). p = 0 copies
 * x (evaluation mode is p = 0). In place is fine. */
void nn_dropout_forward(const float *x, float *y, size_t n, float p,
                        uint64_t seed, uint64_t step);
/* dx += dy * keep / (1 - p), regenerating the forward mask. */
void nn_dropout_backward(const float *dy, float *dx, size_t n, float p,
                         uint64_t seed, uint64_t step);
/* Whether element i is kept by the mask of (seed, step, p). */
bool nn_dropout_keep(uint64_t seed, uint64_t step, size_t i, float p);

/* ------------------------------------------------------------------------
 * Normalisation (norm.c)
 * ---------------------------------------------------------------------- */

/* LayerNorm over the last dim: for each of the N rows of x (N,C),
 * y = (x - mean) * rstd * gamma + beta, with mean and biased variance over
 * the row's C entries and rstd = 1 / sqrt(var + eps) (torch.nn.LayerNorm).
 * gamma, beta (C), each NULL for none. Cache: mean (N), rstd (N). */
void nn_layernorm_forward(const float *x, const float *gamma, const float *beta,
                          float *y, float *mean, float *rstd, int N, int C,
                          float eps);
/* dx (N,C), dgamma, dbeta (C) accumulate; each may be NULL. */
void nn_layernorm_backward(const float *x, const float *gamma,
                           const float *mean, const float *rstd,
                           const float *dy, float *dx, float *dgamma,
                           float *dbeta, int N, int C);

/* Per-field LayerNorm (MaskNet's LN_EMB, as FuxiCTR: one LayerNorm(D) per
 * field): each field's D entries of x (B, F*D) normalised on their own, with
 * field f's own affine gamma, beta (F, D) at row f (each NULL for none).
 * Cache: mean, rstd (B*F). (One gamma (D) shared by all fields instead is
 * nn_layernorm over N = B*F rows of C = D.) */
void nn_field_layernorm_forward(const float *x, const float *gamma,
                                const float *beta, float *y, float *mean,
                                float *rstd, int B, int F, int D, float eps);
void nn_field_layernorm_backward(const float *x, const float *gamma,
                                 const float *mean, const float *rstd,
                                 const float *dy, float *dx, float *dgamma,
                                 float *dbeta, int B, int F, int D);

/* Instance norm of each field embedding (MaskFusion): statistics over e_j's
 * own D entries per instance, as above, but the affine is one scalar per
 * field: gamma, beta (F) (torch.nn.InstanceNorm1d(F, affine=True) on
 * (B, F, D)). Cache: mean, rstd (B*F). gamma/beta NULL for none. */
void nn_instancenorm_forward(const float *x, const float *gamma,
                             const float *beta, float *y, float *mean,
                             float *rstd, int B, int F, int D, float eps);
/* dx (B,F*D), dgamma, dbeta (F) accumulate; each may be NULL. */
void nn_instancenorm_backward(const float *x, const float *gamma,
                              const float *mean, const float *rstd,
                              const float *dy, float *dx, float *dgamma,
                              float *dbeta, int B, int F, int D);

/* Running statistics of a batch-normalised layer (BatchNorm, Dice): torch's
 * conventions, momentum 0.1 for BatchNorm1d (FuxiCTR's Dice uses 0.01),
 * running = (1 - momentum) * running + momentum * batch, the running variance
 * unbiased (B / (B - 1)), starting at mean 0, var 1 (nn_bnstats_init). */
struct nn_bnstats {
  int H;           /* features */
  float eps;       /* added to the variance before the square root */
  float momentum;  /* weight of the new batch in the running averages */
  float *run_mean; /* (H), caller-owned (e.g. a non-trained param) */
  float *run_var;  /* (H) */
};
/* Sets run_mean = 0 and run_var = 1. */
void nn_bnstats_init(struct nn_bnstats *s);

/* BatchNorm over the batch axis of x (B,H), affine gamma, beta (H) (NULL for
 * none). train: normalise with this batch's mean and biased variance, store
 * them in the cache mean, rstd (H) and update the running averages (needs
 * B >= 2). !train (evaluation): normalise with the running averages, cache
 * untouched, no backward. */
void nn_batchnorm_forward(const float *x, const float *gamma, const float *beta,
                          float *y, float *mean, float *rstd,
                          struct nn_bnstats *s, int B, bool train);
/* Backward of the training forward, through the batch statistics.
 * dx (B,H), dgamma, dbeta (H) accumulate; each may be NULL. */
void nn_batchnorm_backward(const float *x, const float *gamma,
                           const float *mean, const float *rstd,
                           const float *dy, float *dx, float *dgamma,
                           float *dbeta, int B, int H);

/* Dice (DIN): p = sigmoid((x - E[x]) / sqrt(Var[x] + eps)) per unit h,
 * y (B,H) = p * x + (1 - p) * alpha[h] * x, alpha (H) learned. Statistics as
 * nn_batchnorm_forward without affine (train: batch, cached in mean, rstd
 * (H); !train: running averages). */
void nn_dice_forward(const float *x, const float *alpha, float *y, float *mean,
                     float *rstd, struct nn_bnstats *s, int B, bool train);
/* Backward of the training forward, through p and the batch statistics.
 * dx (B,H), dalpha (H) accumulate; either may be NULL. */
void nn_dice_backward(const float *x, const float *alpha, const float *mean,
                      const float *rstd, const float *dy, float *dx,
                      float *dalpha, int B, int H);

/* ------------------------------------------------------------------------
 * Cross layers: DCN, DCNv2 and its low-rank mixture (cross.c)
 * ---------------------------------------------------------------------- */

/* DCN: y (B,C) = x0 * (xl . w) + b + xl, with x0, xl (B,C), w, b (C).
 * For the first layer xl == x0 is fine (and dx0 == dxl in backward). */
void nn_cross_forward(const float *x0, const float *xl, const float *w,
                      const float *b, float *y, int B, int C);
/* dx0, dxl (B,C), dw, db (C) accumulate; dx0/dxl may be NULL. */
void nn_cross_backward(const float *x0, const float *xl, const float *w,
                       const float *dy, float *dx0, float *dxl, float *dw,
                       float *db, int B, int C);

/* DCNv2: y (B,C) = x0 * (xl W^T + b) + xl, W (C,C) in linear layout, b (C).
 * Cache u (B,C) = xl W^T + b for backward. */
void nn_cross2_forward(const float *x0, const float *xl, const float *W,
                       const float *b, float *y, float *u, int B, int C);
/* dx0, dxl (B,C), dW (C,C), db (C) accumulate; dx0/dxl may be NULL.
 * work (B,C) is scratch. */
void nn_cross2_backward(const float *x0, const float *xl, const float *W,
                        const float *u, const float *dy, float *dx0, float *dxl,
                        float *dW, float *db, float *work, int B, int C);

/* DCNv2's low-rank mixture of experts (DCN-Mix, FuxiCTR's CrossNetMix):
 *   expert k: E_k = x0 * (U_k tanh(Cm_k tanh(V_k xl)) + b)
 *   gate:     g = softmax over k of (G xl)
 *   y (B,C) = sum_k g_k E_k + xl
 * Parameters (one layer): V (K,R,C), Cm (K,R,R), U (K,C,R) (each expert a
 * linear layout), b (C) shared by the experts, G (K,C) gate weights without
 * bias. FuxiCTR shares one G by all layers: give every layer the same G and
 * dG, and the gradients add up. */
struct nn_crossmix {
  const float *V, *Cm, *U, *b, *G; /* values, shapes above */
  float *dV, *dCm, *dU, *db, *dG;  /* their gradients (backward only) */
  int C, R, K;                     /* width, rank, experts */
};
/* Floats the forward cache and the backward scratch need for B rows. */
size_t nn_crossmix_cache_len(const struct nn_crossmix *m, int B);
size_t nn_crossmix_work_len(const struct nn_crossmix *m, int B);
/* y (B,C); cache (nn_crossmix_cache_len floats) kept for backward. */
void nn_crossmix_forward(const struct nn_crossmix *m, const float *x0,
                         const float *xl, float *y, float *cache, int B);
/* dx0, dxl (B,C) (may be NULL) and m's parameter gradients accumulate;
 * work has nn_crossmix_work_len floats. */
void nn_crossmix_backward(const struct nn_crossmix *m, const float *x0,
                          const float *xl, const float *cache, const float *dy,
                          float *dx0, float *dxl, float *work, int B);

/* ------------------------------------------------------------------------
 * Loss (loss.c)
 * ---------------------------------------------------------------------- */

/* Mean binary cross-entropy on logits z (B) against labels y (B) in [0, 1]:
 * (1/B) sum max(z,0) - z*y + log1p(exp(-|z|)), exact for any finite z
 * (no overflow at z = +-100). Summed in double. B >= 1. */
double nn_logloss_forward(const float *z, const float *y, int B);
/* dz (B) += scale * (sigmoid(z) - y) / B; scale is dLoss/dlogloss, 1 when
 * the logloss is the loss. */
void nn_logloss_backward(const float *z, const float *y, float *dz, int B,
                         float scale);

/* ------------------------------------------------------------------------
 * Embeddings of pulled rows, and pooling (embed.c)
 * ---------------------------------------------------------------------- */

/* A batch's embedding block as pulled from the parameter store: U unique
 * keys, row u at rows + u*D. prefix (U) gives each row's stored prefix length
 * p in 0..D (AMTL; NULL = every row is full D): entries at and beyond p are
 * treated as zero whatever the block holds, and get no gradient.
 * idx (B*F) maps (b, f) to its unique row, or -1 for "no row" (a missing
 * value or padding): zeros, no gradient. An idx outside [-1, U) or a prefix
 * above D is a CHECK (our bug): prefixes arrive from the pserver, so the
 * code that decodes a pull reply must refuse p > D there, as an outside
 * fault with a message. vals (B*F) scales each (b, f)'s row by the
 * feature's value (libFM idx:x, CSV value columns; NULL = every value 1). */

/* out (B, F*D): field f of row b = vals[b*F+f] x row idx[b*F+f], masked to
 * its prefix. */
void nn_embed_gather(const float *rows, const uint16_t *prefix,
                     const int32_t *idx, const float *vals, float *out, int B,
                     int F, int D, int U);
/* drows (U,D) += vals[b*F+f] x dout (B, F*D) summed per unique key, for
 * entries j < p only (drows beyond a row's prefix stay untouched). */
void nn_embed_scatter(const float *dout, const uint16_t *prefix,
                      const int32_t *idx, const float *vals, float *drows,
                      int B, int F, int D, int U);

/* Masked pooling over a padded sequence x (B,L,D) with mask (B,L) (1 for a
 * real item, 0 for padding; other weights work too): y (B,D) =
 * sum_l mask*x, divided by sum_l mask when mean (a row with no items gives
 * zeros). */
void nn_masked_pool_forward(const float *x, const float *mask, float *y, int B,
                            int L, int D, bool mean);
/* dx (B,L,D) += mask * dy (/ sum mask when mean). dmask (B,L) += the
 * gradient of the weights (DIN's attention scores a_j): sum_d dy * x for
 * sum pooling, sum_d dy * (x - y) / sum mask for mean pooling; x is read only
 * for dmask and may be NULL when dmask is; its padding entries must be
 * finite then (nn_embed_gather writes zeros there). dx or dmask may be
 * NULL. */
void nn_masked_pool_backward(const float *x, const float *mask, const float *dy,
                             float *dx, float *dmask, int B, int L, int D,
                             bool mean);

/* FM's pairwise term per row of e (B,F,D):
 * y (B) = 1/2 sum_d [(sum_f e_fd)^2 - sum_f e_fd^2]. */
void nn_fm_forward(const float *e, float *y, int B, int F, int D);
/* de (B,F,D) += dy_b * (sum_f' e_f'd - e_fd). */
void nn_fm_backward(const float *e, const float *dy, float *de, int B, int F,
                    int D);

/* AMTL prefix masks (DESIGN.md "AMTL"). t (N,D) holds, per key, a weight for
 * each prefix length 1..D (index k keeps dims 0..k).
 * Hard choice: y (N,D) = one-hot of the arg max of each row of t (ties: the
 * first, i.e. the shorter prefix). Used as a straight-through estimator: the
 * backward of this step is the identity (add dy to dt), which the caller
 * does with nn_add_backward. */
void nn_onehot_argmax(const float *t, float *y, int N, int D);
/* m (N,D) = t M with M[i][j] = 1 for j <= i: m_j = sum_{i >= j} t_i, so a
 * one-hot at k gives a mask of k+1 leading ones. */
void nn_prefix_mask_forward(const float *t, float *m, int N, int D);
/* dt_i += sum_{j <= i} dm_j (a running sum): with dm = e * dL/de_hat this is
 * DESIGN.md's M (e * dL/de_hat). */
void nn_prefix_mask_backward(const float *dm, float *dt, int N, int D);

/* ------------------------------------------------------------------------
 * Non-finite values (finite.c): outside faults, not bugs
 * ---------------------------------------------------------------------- */

/* Index of the first NaN or +-Inf in x (N), or -1 if all are finite. */
long nn_find_nonfinite(const float *x, size_t n);

/* 0 if x (N) is all finite; otherwise -1 with err set to e.g.
 * "logits[17] = nan (first non-finite of 4096)" so the training loop can
 * stop with a message that names the tensor; what is borrowed. */
int nn_check_finite(const char *what, const float *x, size_t n, char *err,
                    size_t errlen);

#endif
