/* mlp: Linear (+ ReLU + dropout) layers with their activations; see mlp.h. */
#include "worker/nn/mlp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

void mlp_init(struct mlp *m, struct params *p, const char *prefix, int in,
              const int *hidden, int nhidden, bool logit, float dropout,
              uint64_t seed, int Bmax) {
  mlp_init_bn(m, p, prefix, in, hidden, nhidden, logit, dropout, seed, Bmax,
              false);
}

void mlp_init_bn(struct mlp *m, struct params *p, const char *prefix, int in,
                 const int *hidden, int nhidden, bool logit, float dropout,
                 uint64_t seed, int Bmax, bool bn) {
  CHECK(nhidden >= 0 && nhidden <= MODEL_MAX_LAYERS && nhidden + logit >= 1,
        "nhidden %d logit %d", nhidden, (int)logit);
  CHECK(in >= 1 && Bmax >= 1 && dropout >= 0 && dropout < 1, "in %d Bmax %d",
        in, Bmax);
  memset(m, 0, sizeof(*m));
  m->p = p;
  m->n = nhidden + (logit ? 1 : 0);
  m->in = in;
  m->logit = logit;
  m->dropout = dropout;
  m->seed = seed;
  m->Bmax = Bmax;
  m->bn = bn;
  int I = in;
  for (int i = 0; i < m->n; i++) {
    int O = i < nhidden ? hidden[i] : 1;
    CHECK(O >= 1, "layer %d width %d", i, O);
    m->width[i] = O;
    char name[PARAMS_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%s.%d.weight", prefix, i);
    m->wid[i] = params_add(p, name, 1, O, I, PARAMS_XAVIER_NORMAL, 1.0f);
    snprintf(name, sizeof(name), "%s.%d.bias", prefix, i);
    m->bid[i] = params_add(p, name, 1, 1, O, PARAMS_ZEROS, 0.0f);
    size_t sz = (size_t)Bmax * O * sizeof(float);
    m->out[i] = xaligned(sz);
    if (i < m->n - 1) // the last layer's dout is the caller's dy
      m->dout[i] = xaligned(sz);
    m->dpre[i] = xaligned(sz);
    bool hid = !(logit && i == m->n - 1);
    if (hid && dropout > 0)
      m->ddrop[i] = xaligned(sz);
    if (hid && bn) {
      snprintf(name, sizeof(name), "%s.%d.bn.weight", prefix, i);
      m->bnw[i] = params_add(p, name, 1, 1, O, PARAMS_ONES, 1.0f);
      snprintf(name, sizeof(name), "%s.%d.bn.bias", prefix, i);
      m->bnb[i] = params_add(p, name, 1, 1, O, PARAMS_ZEROS, 0.0f);
      snprintf(name, sizeof(name), "%s.%d.bn.running_mean", prefix, i);
      m->bnm[i] = params_add_state(p, name, 1, 1, O, PARAMS_ZEROS, 0.0f);
      snprintf(name, sizeof(name), "%s.%d.bn.running_var", prefix, i);
      m->bnv[i] = params_add_state(p, name, 1, 1, O, PARAMS_ONES, 1.0f);
      m->lin[i] = xaligned(sz);
      m->dlin[i] = xaligned(sz);
      m->bmean[i] = xaligned((size_t)O * sizeof(float));
      m->brstd[i] = xaligned((size_t)O * sizeof(float));
    }
    I = O;
  }
}

void mlp_deinit(struct mlp *m) {
  for (int i = 0; i < MLP_MAX_LAYERS; i++) {
    free(m->out[i]);
    free(m->dout[i]);
    free(m->dpre[i]);
    free(m->ddrop[i]);
    free(m->lin[i]);
    free(m->dlin[i]);
    free(m->bmean[i]);
    free(m->brstd[i]);
  }
  memset(m, 0, sizeof(*m));
}

int mlp_out_width(const struct mlp *m) {
  return m->width[m->n - 1];
}

/* Layer i is hidden (ReLU, dropout) unless it is the logit layer. */
static bool is_hidden(const struct mlp *m, int i) {
  return !(m->logit && i == m->n - 1);
}

/* y (B, O) = BatchNorm of layer i's linear output lin[i]: batch statistics
 * in training (B >= 2), else the running ones, which then also fill the
 * cache so that a one-row training batch has a backward. */
static void bn_forward(struct mlp *m, int i, float *y, int B, bool train) {
  int O = m->width[i];
  struct nn_bnstats st = {.H = O,
                          .eps = 1e-5f,
                          .momentum = 0.1f,
                          .run_mean = params_value(m->p, m->bnm[i]),
                          .run_var = params_value(m->p, m->bnv[i])};
  const float *g = params_value(m->p, m->bnw[i]);
  const float *b = params_value(m->p, m->bnb[i]);
  if (m->bn_batch) {
    nn_batchnorm_forward(m->lin[i], g, b, y, m->bmean[i], m->brstd[i], &st, B,
                         true);
    return;
  }
  nn_batchnorm_forward(m->lin[i], g, b, y, NULL, NULL, &st, B, false);
  if (train)
    for (int h = 0; h < O; h++) {
      m->bmean[i][h] = st.run_mean[h];
      m->brstd[i][h] = 1.0f / sqrtf(st.run_var[h] + st.eps);
    }
}

/* From dy (B, O), the gradient of layer i's norm output: its weight and
 * bias gradients accumulate, dx (B, O) += the gradient of lin[i]. */
static void bn_backward(struct mlp *m, int i, const float *dy, float *dx,
                        int B) {
  int O = m->width[i];
  const float *g = params_value(m->p, m->bnw[i]);
  float *dg = params_grad(m->p, m->bnw[i]), *db = params_grad(m->p, m->bnb[i]);
  const float *mean = m->bmean[i], *rstd = m->brstd[i], *x = m->lin[i];
  if (m->bn_batch) {
    nn_batchnorm_backward(x, g, mean, rstd, dy, dx, dg, db, B, O);
    return;
  }
  for (int r = 0; r < B; r++) // fixed statistics: an affine map
    for (int h = 0; h < O; h++) {
      size_t k = (size_t)r * O + h;
      dg[h] += dy[k] * (x[k] - mean[h]) * rstd[h];
      db[h] += dy[k];
      dx[k] += dy[k] * g[h] * rstd[h];
    }
}

const float *mlp_forward(struct mlp *m, const float *x, int B, bool train) {
  CHECK(B >= 1 && B <= m->Bmax, "B %d Bmax %d", B, m->Bmax);
  m->dropped = train && m->dropout > 0;
  if (m->dropped)
    m->step++;
  m->bn_batch = m->bn && train && B >= 2;
  const float *h = x; // (B, I_i)
  int I = m->in;
  for (int i = 0; i < m->n; i++) {
    int O = m->width[i];
    float *y = m->out[i]; // (B, O)
    bool bn = m->bn && is_hidden(m, i);
    nn_linear_forward(h, params_value(m->p, m->wid[i]),
                      params_value(m->p, m->bid[i]), bn ? m->lin[i] : y, B, I,
                      O);
    if (bn)
      bn_forward(m, i, y, B, train);
    if (is_hidden(m, i)) {
      nn_relu_forward(y, y, (size_t)B * O);
      if (m->dropped)
        nn_dropout_forward(y, y, (size_t)B * O, m->dropout, m->seed + i,
                           m->step);
    }
    h = y;
    I = O;
  }
  return h;
}

void mlp_backward(struct mlp *m, const float *x, const float *dy, float *dx,
                  int B) {
  CHECK(B >= 1 && B <= m->Bmax, "B %d Bmax %d", B, m->Bmax);
  const float *g = dy; // dLoss/d out[i], (B, O_i)
  for (int i = m->n - 1; i >= 0; i--) {
    int O = m->width[i], I = i ? m->width[i - 1] : m->in;
    size_t n = (size_t)B * O;
    const float *gpre = g; // dLoss/d (x W^T + b)
    if (is_hidden(m, i)) {
      const float *grelu = g; // dLoss/d ReLU output
      if (m->dropped) {
        memset(m->ddrop[i], 0, n * sizeof(float));
        nn_dropout_backward(g, m->ddrop[i], n, m->dropout, m->seed + i,
                            m->step);
        grelu = m->ddrop[i];
      }
      // out[i] > 0 exactly where the ReLU passed and dropout kept
      // (kept units are scaled by 1/(1-p) > 0); a dropped unit's grelu is
      // already 0, so the ReLU mask of out[i] is the right one.
      memset(m->dpre[i], 0, n * sizeof(float));
      nn_relu_backward(m->out[i], grelu, m->dpre[i], n);
      gpre = m->dpre[i];
      if (m->bn) { // dpre is dLoss/d norm output: through the norm
        memset(m->dlin[i], 0, n * sizeof(float));
        bn_backward(m, i, m->dpre[i], m->dlin[i], B);
        gpre = m->dlin[i];
      }
    }
    const float *in = i ? m->out[i - 1] : x;
    float *din = dx;
    if (i) {
      din = m->dout[i - 1];
      memset(din, 0, (size_t)B * I * sizeof(float));
    }
    nn_linear_backward(in, params_value(m->p, m->wid[i]), gpre, din,
                       params_grad(m->p, m->wid[i]),
                       params_grad(m->p, m->bid[i]), B, I, O);
    g = din;
  }
}

double mlp_flops(const struct mlp *m) {
  double f = 0;
  int I = m->in;
  for (int i = 0; i < m->n; i++) {
    f += (double)I * m->width[i];
    I = m->width[i];
  }
  return f;
}
