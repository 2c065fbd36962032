/*
 * amtl: the Adaptively-Masked Twins-based Layer (DESIGN.md "AMTL",
 * tests/nn/README.md "amtl_dnn"), which sits between the embedding lookup
 * and ANY model and picks, per (example, field), how many leading
 * embedding dimensions the value keeps.
 *
 *   E (B, F*D), freq s (B, F, S), alpha (B, F)
 *     twin nets per field f:  hAML_f, lAML_f : S -> H_0 -> ... -> D logits
 *                             (ReLU between layers, none after the last)
 *     h  = alpha * hAML(s) + (1 - alpha) * lAML(s)          (B, F, D)
 *     t  = softmax(h / tau) over D;  k = argmax t;  p = k + 1
 *     t^ = t + stopgrad(onehot(k) - t)     forward value: the one-hot
 *     m  = t^ M, M[i][j] = 1 for j <= i   (m_j = 1 for j <= k, else 0)
 *     Ê  = E * m                                            (B, F*D)
 *
 * The forward is the HARD choice (what inference uses and what the pserver
 * stores: p floats per key); gradients flow through the soft t (the
 * straight-through estimator):
 *
 *     dE  += m * dÊ                      exactly 0 beyond each prefix
 *     dt^_i = sum_{j <= i} e_j dÊ_j      dh = softmax backward (1/tau)
 *     d hAML = alpha dh, d lAML = (1 - alpha) dh, through the twin nets.
 *
 * Twin-net parameters, registered by the fixture names, stacked over the
 * fields so that field f's slice is an ordinary linear layer:
 *   amtl.h.<i>.weight (F, O_i, I_i), amtl.h.<i>.bias (F, O_i), i = 0..n,
 *   with I_0 = S, O_n = D; amtl.l.* the same. Training init: Xavier-normal
 *   weights (per field matrix), zero biases.
 *
 * alpha is an input: the layer does not decide how frequent a value is.
 * amtl_freq_features builds s and alpha from the rows' stats the way the
 * reference fixture does.
 *
 * Not here: when stored prefixes may shrink (warm-up, hysteresis: the
 * worker's policy), the gather of rows into E, the push of prefixes.
 */
#ifndef MASKPS_NN_AMTL_H
#define MASKPS_NN_AMTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct params;

#define AMTL_MAX_LAYERS 8 /* hidden layers of a twin net */
/* Frequency features before the optional log2-count one-hot. */
#define AMTL_BASE_FEATURES 4

struct amtl_options {
  int F, D;    /* fields; full embedding size (prefixes 1..D) */
  int S;       /* frequency features per value, >= 1 */
  int nhidden; /* hidden layers of each twin net, 1..AMTL_MAX_LAYERS */
  int hidden[AMTL_MAX_LAYERS]; /* their widths */
  float temperature;           /* tau > 0 of the prefix softmax */
};

/* One twin net (h-AML or l-AML) for all fields, field-major activations. */
struct amtl_twin {
  int wid[AMTL_MAX_LAYERS + 1];     /* params id of layer i's W (F, O_i, I_i) */
  int bid[AMTL_MAX_LAYERS + 1];     /* params id of layer i's b (F, O_i) */
  float *out[AMTL_MAX_LAYERS + 1];  /* (F, Bmax, O_i): after ReLU if hidden */
  float *dout[AMTL_MAX_LAYERS + 1]; /* (F, Bmax, O_i) dLoss/d out */
  float *dpre[AMTL_MAX_LAYERS + 1]; /* (F, Bmax, O_i) before ReLU */
};

/* The layer's state: read the activations of the last forward freely
 * (tests, logs); write nothing. Rows are (b, f) pairs, b*F + f. */
struct amtl {
  struct params *p; /* borrowed */
  int F, D, S, Bmax;
  int n;                          /* linear layers per twin (hidden + 1) */
  int width[AMTL_MAX_LAYERS + 1]; /* O_i; width[n-1] = D */
  float tau;
  struct amtl_twin twin[2]; /* [0] h-AML (frequent), [1] l-AML (rare) */
  float *E;                 /* (Bmax, F*D) copy of the forward's E */
  float *alpha;             /* (Bmax, F) copy of the forward's alpha */
  float *sf;                /* (F, Bmax, S) freq, field-major */
  float *h;                 /* (Bmax, F, D) mixed logits */
  float *t;                 /* (Bmax, F, D) soft t = softmax(h / tau) */
  float *onehot;            /* (Bmax, F, D) forward value of t^ */
  float *m;                 /* (Bmax, F, D) prefix mask, 0/1 */
  int32_t *k;               /* (Bmax, F) argmax, p = k + 1 */
  float *dm;                /* (Bmax, F, D) E * dÊ (backward scratch) */
  float *dthat;             /* (Bmax, F, D) dLoss/d t^ = dLoss/d t */
  float *dh;                /* (Bmax, F, D) dLoss/d h */
};

/* Features per value that amtl_freq_features writes for count_buckets
 * one-hot log2 buckets (0: none, the reference fixture's 4 features). */
int amtl_num_features(int count_buckets);

/* Frequency features of B*F values from their rows' stats, count and
 * clicks (B, F) (a missing value: count 0), into freq (B, F, S) with
 * S = amtl_num_features(count_buckets), and alpha (B, F):
 *   s_0 = log(1 + count)
 *   s_1 = s_0 / max over the batch's rows b of field f's s_0 (0 if that
 *         max is 0): the count normalised within its field, in [0, 1]
 *   s_2 = clicks / count (0 for count 0)        the click rate
 *   s_3 = 1 if count >= 100 else 0              "seen often"
 *   s_4.. one-hot of the log2 bucket: 0 for count 0, else
 *         min(count_buckets - 1, 1 + floor(log2(count)))
 *   alpha = s_1 (about 1 for the batch's most frequent values, 0 for new)
 * Float32 arithmetic as the PyTorch fixture. count_buckets >= 0. */
void amtl_freq_features(const uint32_t *count, const uint32_t *clicks, int B,
                        int F, int count_buckets, float *freq, float *alpha);

/* The layer's options for F fields from cfg's embedding section: D =
 * embedding.dim, twin hidden widths embedding.amtl_hidden_units, tau =
 * embedding.amtl_temperature, S = amtl_num_features(embedding.
 * amtl_count_buckets). Returns 0, or -1 with err set (more hidden layers
 * than AMTL_MAX_LAYERS, F < 1). */
int amtl_options_from_config(struct amtl_options *o, const struct config *cfg,
                             int F, char *err, size_t errlen);

/* Registers the twin nets in params (which must not be allocated yet) and
 * allocates activations for Bmax rows. Returns NULL with the reason in err
 * for options that do not fit (F, D, S < 1, D > 65535, no hidden layer, a
 * width < 1, tau <= 0). Caller owns the result; free with amtl_free(). */
struct amtl *amtl_new(const struct amtl_options *o, int Bmax,
                      struct params *params, char *err, size_t errlen);
/* Frees the layer (not its params); NULL is fine. */
void amtl_free(struct amtl *a);

/* Forward of B <= Bmax rows: Ehat (B, F*D) = E masked to each value's
 * prefix (entries beyond it exactly 0), prefix (B, F) = p = k + 1 in 1..D,
 * the length the worker pushes for that key. freq (B, F, S), alpha (B, F)
 * in [0, 1] are data. Ehat must not alias E; prefix may be NULL. */
void amtl_forward(struct amtl *a, const float *E, const float *freq,
                  const float *alpha, float *Ehat, uint16_t *prefix, int B);

/* From dEhat (B, F*D), the gradient of the last forward's Ehat:
 * accumulates dE (B, F*D) (exactly 0 added beyond each prefix; NULL: not
 * needed) and the twin nets' gradients in params. */
void amtl_backward(struct amtl *a, const float *dEhat, float *dE, int B);

/* Multiply-adds of one forward per example (both twins, all fields). */
double amtl_flops(const struct amtl *a);

#endif
