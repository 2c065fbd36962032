/* model_masknet: SerMaskNet and ParaMaskNet (MODELS.md "MaskNet",
 * tests/nn/README.md "sermasknet", "paramasknet").
 *
 * x = V_emb = E (B, C), C = F*D. A MaskBlock with input v_in (B, I) and
 * output width O:
 *
 *   V_mask = mask.1(ReLU(mask.0(x)))          mask.0 (A, C), mask.1 (I, A),
 *                                             A = int(r * I) the aggregation
 *   out    = ReLU(LN(hidden(V_mask * v_in)))  hidden (O, I) no bias, ln (O)
 *
 * The mask input is always the raw x. v_in of the first block is LN_EMB(x),
 * one LayerNorm per field with its own (F, D) affine (emb_ln), or x itself
 * without emb_layernorm; without net_layernorm out = ReLU(hidden(...)).
 *
 *   serial:   block i > 0 takes block i-1's out; logit = fc(out of the last)
 *   parallel: every block takes LN_EMB(x); V_merge = [out_0; ...; out_{u-1}]
 *             -> mlp.0 .. mlp.{n-1} (Linear + ReLU) -> mlp.n (1) = logit
 *
 * Widths: block i's output is block_dim[i]; a serial block's input is the
 * previous block's output. Dropout (options.dropout, training only) follows
 * FuxiCTR: at the end of every MaskBlock (after its ReLU) and after each
 * hidden ReLU of ParaMaskNet's head; masks from nn_dropout with seed
 * dropout_seed + i for block i, dropout_seed + 64 + i for head layer i, and
 * the count of training forwards as the step.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "worker/nn/model_impl.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

#define LN_EPS 1e-5f

/* One MaskBlock: parameter ids, activations of the last forward and the
 * scratch of its backward, each (Bmax, width). */
struct maskblock {
  int I, O, A;             /* input, output, aggregation width */
  int m0w, m0b, m1w, m1b;  /* mask.0 (A, C) + (A), mask.1 (I, A) + (I) */
  int hw;                  /* hidden (O, I), no bias */
  int lnw, lnb;            /* ln (O) gamma, beta; -1 without net_layernorm */
  float *agg;              /* (Bmax, A) ReLU(mask.0(x)) */
  float *vmask;            /* (Bmax, I) V_mask */
  float *masked;           /* (Bmax, I) V_mask * v_in */
  float *z;                /* (Bmax, O) hidden(masked) */
  float *zn;               /* (Bmax, O) LN(z); == z without LN */
  float *out;              /* (Bmax, O) ReLU(zn) */
  float *mean, *rstd;      /* (Bmax) LN cache */
  float *dout;             /* (Bmax, O) dLoss/d out, set by its consumer */
  float *ddrop;            /* (Bmax, O) dLoss/d ReLU output (dropout only) */
  float *dzn, *dz;         /* (Bmax, O) */
  float *dmasked, *dvmask; /* (Bmax, I) */
  float *dagg, *daggpre;   /* (Bmax, A) */
};

/* A stack of Linear layers, ReLU after all but the last (a logit layer of
 * width 1): ParaMaskNet's head, named <prefix>.<i> as the fixtures. */
struct head {
  int n;                           /* linear layers, last one the logit */
  int in;                          /* input width */
  int width[MODEL_MAX_LAYERS + 1]; /* output width of layer i */
  int wid[MODEL_MAX_LAYERS + 1], bid[MODEL_MAX_LAYERS + 1];
  float *out[MODEL_MAX_LAYERS + 1];   /* (Bmax, width) after ReLU */
  float *dout[MODEL_MAX_LAYERS + 1];  /* (Bmax, width) dLoss/d out */
  float *dpre[MODEL_MAX_LAYERS + 1];  /* (Bmax, width) before ReLU */
  float *ddrop[MODEL_MAX_LAYERS + 1]; /* (Bmax, width) after ReLU, dropout */
};

/* Dropout of one network: rate, seeds, and whether the last forward used
 * it (then backward replays the same masks). */
struct drop {
  float rate;    /* 0 = off */
  uint64_t seed; /* dropout_seed from the options */
  uint64_t step; /* training forwards so far */
  bool on;       /* the last forward applied dropout */
};

struct masknet {
  struct params *p; /* borrowed */
  bool parallel;    /* ParaMaskNet, else SerMaskNet */
  bool emb_ln, net_ln;
  int F, D, C, Bmax;
  int nblocks;
  struct drop drop;
  struct maskblock blk[MODEL_MAX_LAYERS];
  int elnw, elnb;       /* emb_ln (F, D) gamma, beta; -1 when off */
  float *x;             /* (Bmax, C) copy of the forward's E */
  float *vemb;          /* (Bmax, C) LN_EMB(x) (emb_ln only) */
  float *emean, *erstd; /* (Bmax*F) its cache */
  float *dvemb;         /* (Bmax, C) dLoss/d LN_EMB(x) */
  /* serial */
  int fcw, fcb; /* fc (1, O_last), (1) */
  /* parallel */
  int M;                 /* merged width: sum of block widths */
  float *merge, *dmerge; /* (Bmax, M) */
  struct head head;
};

static float *buf(int Bmax, int w) {
  return xaligned((size_t)Bmax * w * sizeof(float));
}

static void zero(float *x, int B, int w) {
  memset(x, 0, (size_t)B * w * sizeof(float));
}

/* ---- MaskBlock ---- */

static void block_init(struct maskblock *k, struct params *p, int i, int C,
                       int I, int O, int A, bool net_ln, bool dropout,
                       int Bmax) {
  char nm[PARAMS_NAME_MAX + 1];
  k->I = I;
  k->O = O;
  k->A = A;
#define ADD(field, suffix, rows, cols, init, scale)                            \
  do {                                                                         \
    snprintf(nm, sizeof(nm), "block.%d.%s", i, suffix);                        \
    k->field = params_add(p, nm, 1, rows, cols, init, scale);                  \
  } while (0)
  ADD(m0w, "mask.0.weight", A, C, PARAMS_XAVIER_NORMAL, 1.0f);
  ADD(m0b, "mask.0.bias", 1, A, PARAMS_ZEROS, 0.0f);
  ADD(m1w, "mask.1.weight", I, A, PARAMS_XAVIER_NORMAL, 1.0f);
  ADD(m1b, "mask.1.bias", 1, I, PARAMS_ZEROS, 0.0f);
  ADD(hw, "hidden.weight", O, I, PARAMS_XAVIER_NORMAL, 1.0f);
  k->lnw = k->lnb = -1;
  if (net_ln) {
    ADD(lnw, "ln.weight", 1, O, PARAMS_ONES, 0.0f);
    ADD(lnb, "ln.bias", 1, O, PARAMS_ZEROS, 0.0f);
  }
#undef ADD
  k->agg = buf(Bmax, A);
  k->vmask = buf(Bmax, I);
  k->masked = buf(Bmax, I);
  k->z = buf(Bmax, O);
  k->zn = net_ln ? buf(Bmax, O) : k->z;
  k->out = buf(Bmax, O);
  k->mean = buf(Bmax, 1);
  k->rstd = buf(Bmax, 1);
  k->dout = buf(Bmax, O);
  k->ddrop = dropout ? buf(Bmax, O) : NULL;
  k->dzn = buf(Bmax, O);
  k->dz = net_ln ? buf(Bmax, O) : k->dzn;
  k->dmasked = buf(Bmax, I);
  k->dvmask = buf(Bmax, I);
  k->dagg = buf(Bmax, A);
  k->daggpre = buf(Bmax, A);
}

static void block_deinit(struct maskblock *k) {
  if (k->zn != k->z)
    free(k->zn);
  if (k->dz != k->dzn)
    free(k->dz);
  free(k->agg);
  free(k->vmask);
  free(k->masked);
  free(k->z);
  free(k->out);
  free(k->mean);
  free(k->rstd);
  free(k->dout);
  free(k->ddrop);
  free(k->dzn);
  free(k->dmasked);
  free(k->dvmask);
  free(k->dagg);
  free(k->daggpre);
}

/* k->out (B, O) from the mask input x (B, C) and v_in (B, I); block i of
 * the network whose dropout is d. */
static void block_forward(struct maskblock *k, const struct params *p,
                          const struct drop *d, int i, const float *x,
                          const float *vin, int B, int C) {
  int I = k->I, O = k->O, A = k->A;
  nn_linear_forward(x, params_value(p, k->m0w), params_value(p, k->m0b), k->agg,
                    B, C, A); // (B, A)
  nn_relu_forward(k->agg, k->agg, (size_t)B * A);
  nn_linear_forward(k->agg, params_value(p, k->m1w), params_value(p, k->m1b),
                    k->vmask, B, A, I);                    // (B, I) V_mask
  nn_mul_forward(k->vmask, vin, k->masked, (size_t)B * I); // (B, I)
  nn_linear_forward(k->masked, params_value(p, k->hw), NULL, k->z, B, I,
                    O); // (B, O)
  if (k->lnw >= 0)
    nn_layernorm_forward(k->z, params_value(p, k->lnw), params_value(p, k->lnb),
                         k->zn, k->mean, k->rstd, B, O, LN_EPS);
  nn_relu_forward(k->zn, k->out, (size_t)B * O); // (B, O)
  if (d->on)
    nn_dropout_forward(k->out, k->out, (size_t)B * O, d->rate, d->seed + i,
                       d->step);
}

/* From k->dout (B, O): accumulates the block's parameter gradients,
 * dx (B, C) (the mask input; NULL: nobody needs it) and dvin (B, I)
 * (NULL likewise). x, vin: the forward's inputs. */
static void block_backward(struct maskblock *k, const struct params *p,
                           const struct drop *d, int i, const float *x,
                           const float *vin, float *dx, float *dvin, int B,
                           int C) {
  int I = k->I, O = k->O, A = k->A;
  const float *g = k->dout; // dLoss/d ReLU output
  if (d->on) {
    zero(k->ddrop, B, O);
    nn_dropout_backward(k->dout, k->ddrop, (size_t)B * O, d->rate, d->seed + i,
                        d->step);
    g = k->ddrop;
  }
  // out > 0 exactly where the ReLU passed and dropout kept (kept units are
  // scaled by 1/(1-p) > 0), and a dropped unit's g is already 0: the ReLU
  // mask of out is the right one.
  zero(k->dzn, B, O);
  nn_relu_backward(k->out, g, k->dzn, (size_t)B * O);
  if (k->lnw >= 0) {
    zero(k->dz, B, O);
    nn_layernorm_backward(k->z, params_value(p, k->lnw), k->mean, k->rstd,
                          k->dzn, k->dz, params_grad(p, k->lnw),
                          params_grad(p, k->lnb), B, O);
  }
  zero(k->dmasked, B, I);
  nn_linear_backward(k->masked, params_value(p, k->hw), k->dz, k->dmasked,
                     params_grad(p, k->hw), NULL, B, I, O);
  zero(k->dvmask, B, I);
  nn_mul_backward(k->vmask, vin, k->dmasked, k->dvmask, dvin, (size_t)B * I);
  zero(k->dagg, B, A);
  nn_linear_backward(k->agg, params_value(p, k->m1w), k->dvmask, k->dagg,
                     params_grad(p, k->m1w), params_grad(p, k->m1b), B, A, I);
  zero(k->daggpre, B, A);
  nn_relu_backward(k->agg, k->dagg, k->daggpre, (size_t)B * A);
  nn_linear_backward(x, params_value(p, k->m0w), k->daggpre, dx,
                     params_grad(p, k->m0w), params_grad(p, k->m0b), B, C, A);
}

/* ---- ParaMaskNet's head ---- */

static void head_init(struct head *h, struct params *p, int in,
                      const int *hidden, int nhidden, bool dropout, int Bmax) {
  char nm[PARAMS_NAME_MAX + 1];
  h->n = nhidden + 1;
  h->in = in;
  int I = in;
  for (int i = 0; i < h->n; i++) {
    int O = i < nhidden ? hidden[i] : 1;
    h->width[i] = O;
    snprintf(nm, sizeof(nm), "mlp.%d.weight", i);
    h->wid[i] = params_add(p, nm, 1, O, I, PARAMS_XAVIER_NORMAL, 1.0f);
    snprintf(nm, sizeof(nm), "mlp.%d.bias", i);
    h->bid[i] = params_add(p, nm, 1, 1, O, PARAMS_ZEROS, 0.0f);
    h->out[i] = buf(Bmax, O);
    h->dout[i] = buf(Bmax, O);
    h->dpre[i] = buf(Bmax, O);
    h->ddrop[i] = dropout ? buf(Bmax, O) : NULL;
    I = O;
  }
}

static void head_deinit(struct head *h) {
  for (int i = 0; i < h->n; i++) {
    free(h->out[i]);
    free(h->dout[i]);
    free(h->dpre[i]);
    free(h->ddrop[i]);
  }
}

/* Dropout seeds of the head's layers, after the blocks' (block i uses
 * seed + i, i < MODEL_MAX_LAYERS). */
#define HEAD_SEED 64

/* logits (B) = the head on x (B, in). */
static void head_forward(struct head *h, const struct params *p,
                         const struct drop *d, const float *x, float *logits,
                         int B) {
  const float *in = x;
  int I = h->in;
  for (int i = 0; i < h->n; i++) {
    int O = h->width[i];
    bool last = i == h->n - 1;
    float *y = last ? logits : h->out[i]; // (B, O)
    nn_linear_forward(in, params_value(p, h->wid[i]),
                      params_value(p, h->bid[i]), y, B, I, O);
    if (!last) {
      nn_relu_forward(y, y, (size_t)B * O);
      if (d->on)
        nn_dropout_forward(y, y, (size_t)B * O, d->rate,
                           d->seed + HEAD_SEED + i, d->step);
    }
    in = y;
    I = O;
  }
}

/* From dlogits (B): the head's parameter gradients and dx (B, in) +=. */
static void head_backward(struct head *h, const struct params *p,
                          const struct drop *d, const float *x,
                          const float *dlogits, float *dx, int B) {
  const float *g = dlogits; // dLoss/d (x W^T + b) of layer i
  for (int i = h->n - 1; i >= 0; i--) {
    int O = h->width[i], I = i ? h->width[i - 1] : h->in;
    const float *in = i ? h->out[i - 1] : x;
    float *din = dx;
    if (i) {
      din = h->dout[i - 1];
      zero(din, B, I);
    }
    nn_linear_backward(in, params_value(p, h->wid[i]), g, din,
                       params_grad(p, h->wid[i]), params_grad(p, h->bid[i]), B,
                       I, O);
    if (i) {
      const float *gr = din; // dLoss/d ReLU output of layer i-1
      if (d->on) {
        zero(h->ddrop[i - 1], B, I);
        nn_dropout_backward(din, h->ddrop[i - 1], (size_t)B * I, d->rate,
                            d->seed + HEAD_SEED + i - 1, d->step);
        gr = h->ddrop[i - 1];
      }
      zero(h->dpre[i - 1], B, I);
      nn_relu_backward(h->out[i - 1], gr, h->dpre[i - 1], (size_t)B * I);
      g = h->dpre[i - 1];
    }
  }
}

/* ---- the model ---- */

static void *masknet_init(bool parallel, const struct model_options *o, int F,
                          int D, int Bmax, struct params *p, char *err,
                          size_t errlen) {
  const char *name = parallel ? "paramasknet" : "sermasknet";
  int C = F * D;
  if (o->num_blocks < 1 || o->num_blocks > MODEL_MAX_LAYERS) {
    snprintf(err, errlen, "model %s: num_blocks %d (expected 1..%d)", name,
             o->num_blocks, MODEL_MAX_LAYERS);
    return NULL;
  }
  if (!(o->reduction_ratio > 0) || o->reduction_ratio > 1024) {
    snprintf(err, errlen,
             "model %s: reduction_ratio %g (expected > 0 and <= 1024)", name,
             (double)o->reduction_ratio);
    return NULL;
  }
  int A[MODEL_MAX_LAYERS], I[MODEL_MAX_LAYERS];
  for (int i = 0; i < o->num_blocks; i++) {
    if (o->block_dim[i] < 1) {
      snprintf(err, errlen, "model %s: block %d has width %d", name, i,
               o->block_dim[i]);
      return NULL;
    }
    I[i] = parallel || i == 0 ? C : o->block_dim[i - 1];
    // int(r * I) as FuxiCTR (Python's int truncates).
    A[i] = (int)((double)o->reduction_ratio * I[i]);
    if (A[i] < 1) {
      snprintf(err, errlen,
               "model %s: block %d's aggregation width int(%g * %d) is 0; "
               "raise reduction_ratio",
               name, i, (double)o->reduction_ratio, I[i]);
      return NULL;
    }
  }
  struct masknet *s = xcalloc(1, sizeof(*s));
  s->p = p;
  s->parallel = parallel;
  s->emb_ln = o->emb_layernorm;
  s->net_ln = o->net_layernorm;
  s->F = F;
  s->D = D;
  s->C = C;
  s->Bmax = Bmax;
  s->nblocks = o->num_blocks;
  s->drop.rate = o->dropout;
  s->drop.seed = o->dropout_seed;
  bool dropout = o->dropout > 0;
  s->x = buf(Bmax, C);
  s->elnw = s->elnb = -1;
  if (s->emb_ln) {
    s->elnw = params_add(p, "emb_ln.weight", 1, F, D, PARAMS_ONES, 0.0f);
    s->elnb = params_add(p, "emb_ln.bias", 1, F, D, PARAMS_ZEROS, 0.0f);
    s->vemb = buf(Bmax, C);
    s->dvemb = buf(Bmax, C);
    s->emean = buf(Bmax, F);
    s->erstd = buf(Bmax, F);
  }
  for (int i = 0; i < s->nblocks; i++) {
    block_init(&s->blk[i], p, i, C, I[i], o->block_dim[i], A[i], s->net_ln,
               dropout, Bmax);
    s->M += o->block_dim[i];
  }
  if (parallel) {
    s->merge = buf(Bmax, s->M);
    s->dmerge = buf(Bmax, s->M);
    head_init(&s->head, p, s->M, o->hidden, o->nhidden, dropout, Bmax);
  } else {
    int O = s->blk[s->nblocks - 1].O;
    s->fcw = params_add(p, "fc.weight", 1, 1, O, PARAMS_XAVIER_NORMAL, 1.0f);
    s->fcb = params_add(p, "fc.bias", 1, 1, 1, PARAMS_ZEROS, 0.0f);
  }
  return s;
}

static void *sermasknet_init(const struct model_options *o, int F, int D,
                             int Bmax, struct params *p, char *err,
                             size_t errlen) {
  return masknet_init(false, o, F, D, Bmax, p, err, errlen);
}

static void *paramasknet_init(const struct model_options *o, int F, int D,
                              int Bmax, struct params *p, char *err,
                              size_t errlen) {
  return masknet_init(true, o, F, D, Bmax, p, err, errlen);
}

static void masknet_forward(void *self, const float *E, const float *w,
                            float *logits, int B, bool train) {
  (void)w;
  struct masknet *s = self;
  const struct params *p = s->p;
  int C = s->C;
  CHECK(B >= 1 && B <= s->Bmax, "B %d Bmax %d", B, s->Bmax);
  s->drop.on = train && s->drop.rate > 0; // the only train/eval difference
  if (s->drop.on)
    s->drop.step++;
  memcpy(s->x, E, (size_t)B * C * sizeof(float)); // (B, C) x = V_emb
  const float *v0 = s->x;                         // first block's v_in
  if (s->emb_ln) {
    nn_field_layernorm_forward(s->x, params_value(p, s->elnw),
                               params_value(p, s->elnb), s->vemb, s->emean,
                               s->erstd, B, s->F, s->D, LN_EPS);
    v0 = s->vemb; // (B, C) LN_EMB(x)
  }
  if (!s->parallel) {
    const float *v = v0;
    for (int i = 0; i < s->nblocks; i++) {
      block_forward(&s->blk[i], p, &s->drop, i, s->x, v, B, C);
      v = s->blk[i].out; // (B, O_i)
    }
    int O = s->blk[s->nblocks - 1].O;
    nn_linear_forward(v, params_value(p, s->fcw), params_value(p, s->fcb),
                      logits, B, O, 1); // (B)
    return;
  }
  const float *outs[MODEL_MAX_LAYERS];
  int widths[MODEL_MAX_LAYERS];
  for (int i = 0; i < s->nblocks; i++) {
    block_forward(&s->blk[i], p, &s->drop, i, s->x, v0, B, C);
    outs[i] = s->blk[i].out;
    widths[i] = s->blk[i].O;
  }
  nn_concat_forward(s->nblocks, outs, widths, s->merge, B); // (B, M)
  head_forward(&s->head, p, &s->drop, s->merge, logits, B); // (B)
}

static void masknet_backward(void *self, const float *dlogits, float *dE,
                             float *dw, int B) {
  (void)dw;
  struct masknet *s = self;
  const struct params *p = s->p;
  int C = s->C;
  const float *v0 = s->emb_ln ? s->vemb : s->x;
  // dLoss/d v0: through LN_EMB when on, else straight into dE.
  float *dv0 = s->emb_ln ? s->dvemb : dE;
  if (s->emb_ln)
    zero(s->dvemb, B, C);
  if (!s->parallel) {
    struct maskblock *last = &s->blk[s->nblocks - 1];
    zero(last->dout, B, last->O);
    nn_linear_backward(last->out, params_value(p, s->fcw), dlogits, last->dout,
                       params_grad(p, s->fcw), params_grad(p, s->fcb), B,
                       last->O, 1);
    for (int i = s->nblocks - 1; i >= 0; i--) {
      struct maskblock *k = &s->blk[i];
      const float *vin = i ? s->blk[i - 1].out : v0;
      float *dvin = dv0;
      if (i) {
        dvin = s->blk[i - 1].dout;
        zero(dvin, B, s->blk[i - 1].O);
      }
      block_backward(k, p, &s->drop, i, s->x, vin, dE, dvin, B, C);
    }
  } else {
    zero(s->dmerge, B, s->M);
    head_backward(&s->head, p, &s->drop, s->merge, dlogits, s->dmerge, B);
    float *douts[MODEL_MAX_LAYERS];
    int widths[MODEL_MAX_LAYERS];
    for (int i = 0; i < s->nblocks; i++) {
      douts[i] = s->blk[i].dout;
      widths[i] = s->blk[i].O;
      zero(douts[i], B, widths[i]);
    }
    nn_concat_backward(s->nblocks, widths, s->dmerge, douts, B);
    for (int i = 0; i < s->nblocks; i++)
      block_backward(&s->blk[i], p, &s->drop, i, s->x, v0, dE, dv0, B, C);
  }
  if (s->emb_ln)
    nn_field_layernorm_backward(s->x, params_value(p, s->elnw), s->emean,
                                s->erstd, s->dvemb, dE, params_grad(p, s->elnw),
                                params_grad(p, s->elnb), B, s->F, s->D);
}

static double masknet_flops(const void *self) {
  const struct masknet *s = self;
  double f = 0;
  for (int i = 0; i < s->nblocks; i++) {
    const struct maskblock *k = &s->blk[i];
    f += (double)k->A * s->C + (double)k->I * k->A + (double)k->O * k->I;
  }
  if (!s->parallel)
    return f + s->blk[s->nblocks - 1].O;
  int I = s->head.in;
  for (int i = 0; i < s->head.n; i++) {
    f += (double)I * s->head.width[i];
    I = s->head.width[i];
  }
  return f;
}

static void masknet_free(void *self) {
  struct masknet *s = self;
  if (!s)
    return;
  for (int i = 0; i < s->nblocks; i++)
    block_deinit(&s->blk[i]);
  if (s->parallel)
    head_deinit(&s->head);
  free(s->x);
  free(s->vemb);
  free(s->dvemb);
  free(s->emean);
  free(s->erstd);
  free(s->merge);
  free(s->dmerge);
  free(s);
}

const struct model_impl model_impl_sermasknet = {
    .name = "sermasknet",
    .uses_lr_weights = false,
    .init = sermasknet_init,
    .forward = masknet_forward,
    .backward = masknet_backward,
    .flops = masknet_flops,
    .free = masknet_free,
};

const struct model_impl model_impl_paramasknet = {
    .name = "paramasknet",
    .uses_lr_weights = false,
    .init = paramasknet_init,
    .forward = masknet_forward,
    .backward = masknet_backward,
    .flops = masknet_flops,
    .free = masknet_free,
};
