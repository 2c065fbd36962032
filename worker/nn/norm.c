/* norm: LayerNorm (whole row, per field), instance norm, BatchNorm and
 * Dice, which is a BatchNorm without affine feeding a sigmoid gate.
 *
 * Every normalisation here has the same backward: with xhat = (x - mean) *
 * rstd over a group of n entries and dxhat the gradient reaching xhat,
 *   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
 * (the mean and biased variance depend on every x of the group). */
#include <math.h>
#include <stdlib.h>

#include "common/check.h"
#include "worker/nn/ops.h"

/* ---- row-wise: LayerNorm, per-field LayerNorm, instance norm ---- */

/* Mean and rstd of one group of n floats at stride 1, in double. Four
 * partial sums break the add-latency chain (the loops do not vectorise at
 * -O2): ~3x on a 400-wide row. */
static void group_stats(const float *x, int n, float eps, float *mean,
                        float *rstd) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += x[i];
    s1 += x[i + 1];
    s2 += x[i + 2];
    s3 += x[i + 3];
  }
  for (; i < n; i++)
    s0 += x[i];
  double mu = (s0 + s1 + s2 + s3) / n;
  double v0 = 0.0, v1 = 0.0, v2 = 0.0, v3 = 0.0;
  for (i = 0; i + 4 <= n; i += 4) {
    double d0 = x[i] - mu, d1 = x[i + 1] - mu, d2 = x[i + 2] - mu,
           d3 = x[i + 3] - mu;
    v0 += d0 * d0;
    v1 += d1 * d1;
    v2 += d2 * d2;
    v3 += d3 * d3;
  }
  for (; i < n; i++)
    v0 += (x[i] - mu) * (x[i] - mu);
  double v = (v0 + v1 + v2 + v3) / n; // biased, as torch normalises
  *mean = (float)mu;
  *rstd = (float)(1.0 / sqrt(v + eps));
}

/* One LayerNorm row: xr, yr (C), affine g, b (C) or NULL. */
static void ln_row_forward(const float *xr, const float *g, const float *b,
                           float *yr, float *mean, float *rstd, int C,
                           float eps) {
  group_stats(xr, C, eps, mean, rstd);
  for (int c = 0; c < C; c++) {
    float v = (xr[c] - *mean) * *rstd;
    yr[c] = v * (g ? g[c] : 1.0f) + (b ? b[c] : 0.0f);
  }
}

static void ln_row_backward(const float *xr, const float *g, float mu, float rs,
                            const float *dr, float *dxr, float *dg, float *db,
                            int C) {
  double s1 = 0.0, s2 = 0.0; // sum dxhat, sum dxhat * xhat
  for (int c = 0; c < C; c++) {
    float xh = (xr[c] - mu) * rs;
    float dxh = dr[c] * (g ? g[c] : 1.0f);
    s1 += dxh;
    s2 += (double)dxh * xh;
    if (dg)
      dg[c] += dr[c] * xh;
    if (db)
      db[c] += dr[c];
  }
  if (!dxr)
    return;
  float m1 = (float)(s1 / C), m2 = (float)(s2 / C);
  for (int c = 0; c < C; c++) {
    float xh = (xr[c] - mu) * rs;
    float dxh = dr[c] * (g ? g[c] : 1.0f);
    dxr[c] += rs * (dxh - m1 - xh * m2);
  }
}

void nn_layernorm_forward(const float *x, const float *gamma, const float *beta,
                          float *y, float *mean, float *rstd, int N, int C,
                          float eps) {
  CHECK(N >= 0 && C >= 1 && eps >= 0.0f, "N=%d C=%d eps=%g", N, C, eps);
  for (int r = 0; r < N; r++)
    ln_row_forward(x + (size_t)r * C, gamma, beta, y + (size_t)r * C, &mean[r],
                   &rstd[r], C, eps);
}

void nn_layernorm_backward(const float *x, const float *gamma,
                           const float *mean, const float *rstd,
                           const float *dy, float *dx, float *dgamma,
                           float *dbeta, int N, int C) {
  for (int r = 0; r < N; r++)
    ln_row_backward(x + (size_t)r * C, gamma, mean[r], rstd[r],
                    dy + (size_t)r * C, dx ? dx + (size_t)r * C : NULL, dgamma,
                    dbeta, C);
}

/* (B, F*D) is (B*F, D) in memory: row r = b*F + f is field f's embedding,
 * normalised with field f's affine, gamma + f*D. */
void nn_field_layernorm_forward(const float *x, const float *gamma,
                                const float *beta, float *y, float *mean,
                                float *rstd, int B, int F, int D, float eps) {
  CHECK(B >= 0 && F >= 1 && D >= 1 && eps >= 0.0f, "B=%d F=%d D=%d eps=%g", B,
        F, D, eps);
  for (int r = 0; r < B * F; r++) {
    size_t f = (size_t)(r % F) * D;
    ln_row_forward(x + (size_t)r * D, gamma ? gamma + f : NULL,
                   beta ? beta + f : NULL, y + (size_t)r * D, &mean[r],
                   &rstd[r], D, eps);
  }
}

void nn_field_layernorm_backward(const float *x, const float *gamma,
                                 const float *mean, const float *rstd,
                                 const float *dy, float *dx, float *dgamma,
                                 float *dbeta, int B, int F, int D) {
  for (int r = 0; r < B * F; r++) {
    size_t f = (size_t)(r % F) * D, o = (size_t)r * D;
    ln_row_backward(x + o, gamma ? gamma + f : NULL, mean[r], rstd[r], dy + o,
                    dx ? dx + o : NULL, dgamma ? dgamma + f : NULL,
                    dbeta ? dbeta + f : NULL, D);
  }
}

void nn_instancenorm_forward(const float *x, const float *gamma,
                             const float *beta, float *y, float *mean,
                             float *rstd, int B, int F, int D, float eps) {
  CHECK(B >= 0 && F >= 1 && D >= 1, "B=%d F=%d D=%d", B, F, D);
  for (int r = 0; r < B * F; r++) {
    int f = r % F;
    const float *xr = x + (size_t)r * D; // e_f of one instance, (D)
    float *yr = y + (size_t)r * D;
    group_stats(xr, D, eps, &mean[r], &rstd[r]);
    float g = gamma ? gamma[f] : 1.0f, b = beta ? beta[f] : 0.0f;
    for (int d = 0; d < D; d++)
      yr[d] = (xr[d] - mean[r]) * rstd[r] * g + b;
  }
}

void nn_instancenorm_backward(const float *x, const float *gamma,
                              const float *mean, const float *rstd,
                              const float *dy, float *dx, float *dgamma,
                              float *dbeta, int B, int F, int D) {
  for (int r = 0; r < B * F; r++) {
    int f = r % F;
    const float *xr = x + (size_t)r * D, *dr = dy + (size_t)r * D;
    float mu = mean[r], rs = rstd[r], g = gamma ? gamma[f] : 1.0f;
    double s1 = 0.0, s2 = 0.0, sg = 0.0, sb = 0.0;
    for (int d = 0; d < D; d++) {
      float xh = (xr[d] - mu) * rs;
      s1 += dr[d] * g;
      s2 += (double)dr[d] * g * xh;
      sg += (double)dr[d] * xh;
      sb += dr[d];
    }
    if (dgamma)
      dgamma[f] += (float)sg;
    if (dbeta)
      dbeta[f] += (float)sb;
    if (!dx)
      continue;
    float m1 = (float)(s1 / D), m2 = (float)(s2 / D);
    float *dxr = dx + (size_t)r * D;
    for (int d = 0; d < D; d++) {
      float xh = (xr[d] - mu) * rs;
      dxr[d] += rs * (dr[d] * g - m1 - xh * m2);
    }
  }
}

/* ---- column-wise: BatchNorm and Dice ---- */

void nn_bnstats_init(struct nn_bnstats *s) {
  for (int h = 0; h < s->H; h++) {
    s->run_mean[h] = 0.0f;
    s->run_var[h] = 1.0f;
  }
}

/* The statistics a batch-normalised forward uses: in training this batch's
 * (cached, and folded into the running averages), else the running ones. */
static void bn_stats(const float *x, struct nn_bnstats *s, int B, bool train,
                     float *mean, float *rstd) {
  int H = s->H;
  CHECK(H >= 1 && B >= 1, "H=%d B=%d", H, B);
  if (!train) {
    for (int h = 0; h < H; h++) {
      mean[h] = s->run_mean[h];
      rstd[h] = 1.0f / sqrtf(s->run_var[h] + s->eps);
    }
    return;
  }
  CHECK(B >= 2, "batch statistics need B >= 2, got %d", B);
  double *sum = xcalloc((size_t)H * 2, sizeof(double)), *sq = sum + H;
  for (int r = 0; r < B; r++)
    for (int h = 0; h < H; h++)
      sum[h] += x[(size_t)r * H + h];
  for (int h = 0; h < H; h++)
    sum[h] /= B;
  for (int r = 0; r < B; r++)
    for (int h = 0; h < H; h++) {
      double c = x[(size_t)r * H + h] - sum[h];
      sq[h] += c * c;
    }
  float m = s->momentum;
  for (int h = 0; h < H; h++) {
    double var = sq[h] / B;
    mean[h] = (float)sum[h];
    rstd[h] = (float)(1.0 / sqrt(var + s->eps));
    s->run_mean[h] = (1.0f - m) * s->run_mean[h] + m * (float)sum[h];
    s->run_var[h] = (1.0f - m) * s->run_var[h] + m * (float)(var * B / (B - 1));
  }
  free(sum);
}

/* dx (B,H) += rstd * (dxhat - mean_b(dxhat) - xhat * mean_b(dxhat * xhat)).
 * The per-column sums s1 = sum_b dxhat, s2 = sum_b dxhat * xhat come first;
 * dxhat is then recomputed by dxhat_at rather than stored, to keep a
 * (B,H) buffer out of every backward call. */
typedef float (*dxhat_fn)(const float *x, const float *p, const float *dy,
                          float xh, size_t i, int h);

static float bn_dxhat(const float *x, const float *gamma, const float *dy,
                      float xh, size_t i, int h) {
  return dy[i] * (gamma ? gamma[h] : 1.0f);
}

/* Safe at any x: expf(-x) = inf gives exactly 0. */
static inline float sigmoidf(float x) {
  return 1.0f / (1.0f + expf(-x));
}

/* Dice: y = x * (a + p (1 - a)) with p = sigmoid(xhat), so the part of the
 * gradient that flows through xhat is dy * x * (1 - a) * p * (1 - p). */
static float dice_dxhat(const float *x, const float *alpha, const float *dy,
                        float xh, size_t i, int h) {
  float p = sigmoidf(xh);
  return dy[i] * x[i] * (1.0f - alpha[h]) * p * (1.0f - p);
}

static void bn_dx(const float *x, const float *mean, const float *rstd,
                  dxhat_fn dxhat_at, const float *prm, const float *dy,
                  float *dx, int B, int H) {
  double *s1 = xcalloc((size_t)H * 2, sizeof(double)), *s2 = s1 + H;
  for (int r = 0; r < B; r++)
    for (int h = 0; h < H; h++) {
      size_t i = (size_t)r * H + h;
      float xh = (x[i] - mean[h]) * rstd[h];
      float d = dxhat_at(x, prm, dy, xh, i, h);
      s1[h] += d;
      s2[h] += (double)d * xh;
    }
  for (int h = 0; h < H; h++) {
    s1[h] /= B;
    s2[h] /= B;
  }
  for (int r = 0; r < B; r++)
    for (int h = 0; h < H; h++) {
      size_t i = (size_t)r * H + h;
      float xh = (x[i] - mean[h]) * rstd[h];
      float d = dxhat_at(x, prm, dy, xh, i, h);
      dx[i] += rstd[h] * (d - (float)s1[h] - xh * (float)s2[h]);
    }
  free(s1);
}

void nn_batchnorm_forward(const float *x, const float *gamma, const float *beta,
                          float *y, float *mean, float *rstd,
                          struct nn_bnstats *s, int B, bool train) {
  int H = s->H;
  float *mu = mean, *rs = rstd, *tmp = NULL;
  if (!train) { // evaluation leaves the training cache alone
    tmp = xmalloc(sizeof(float) * 2 * H);
    mu = tmp;
    rs = tmp + H;
  }
  bn_stats(x, s, B, train, mu, rs);
  for (int r = 0; r < B; r++)
    for (int h = 0; h < H; h++) {
      size_t i = (size_t)r * H + h;
      float v = (x[i] - mu[h]) * rs[h];
      y[i] = v * (gamma ? gamma[h] : 1.0f) + (beta ? beta[h] : 0.0f);
    }
  free(tmp);
}

void nn_batchnorm_backward(const float *x, const float *gamma,
                           const float *mean, const float *rstd,
                           const float *dy, float *dx, float *dgamma,
                           float *dbeta, int B, int H) {
  if (dgamma || dbeta)
    for (int r = 0; r < B; r++)
      for (int h = 0; h < H; h++) {
        size_t i = (size_t)r * H + h;
        if (dgamma)
          dgamma[h] += dy[i] * (x[i] - mean[h]) * rstd[h];
        if (dbeta)
          dbeta[h] += dy[i];
      }
  if (dx)
    bn_dx(x, mean, rstd, bn_dxhat, gamma, dy, dx, B, H);
}

void nn_dice_forward(const float *x, const float *alpha, float *y, float *mean,
                     float *rstd, struct nn_bnstats *s, int B, bool train) {
  int H = s->H;
  float *mu = mean, *rs = rstd, *tmp = NULL;
  if (!train) {
    tmp = xmalloc(sizeof(float) * 2 * H);
    mu = tmp;
    rs = tmp + H;
  }
  bn_stats(x, s, B, train, mu, rs);
  for (int r = 0; r < B; r++)
    for (int h = 0; h < H; h++) {
      size_t i = (size_t)r * H + h;
      float p = sigmoidf((x[i] - mu[h]) * rs[h]);
      y[i] = x[i] * (alpha[h] + p * (1.0f - alpha[h])); // p*x + (1-p)*a*x
    }
  free(tmp);
}

void nn_dice_backward(const float *x, const float *alpha, const float *mean,
                      const float *rstd, const float *dy, float *dx,
                      float *dalpha, int B, int H) {
  for (int r = 0; r < B; r++)
    for (int h = 0; h < H; h++) {
      size_t i = (size_t)r * H + h;
      float p = sigmoidf((x[i] - mean[h]) * rstd[h]);
      if (dx) // the direct path; the path through p is in bn_dx
        dx[i] += dy[i] * (alpha[h] + p * (1.0f - alpha[h]));
      if (dalpha)
        dalpha[h] += dy[i] * x[i] * (1.0f - p);
    }
  if (dx)
    bn_dx(x, mean, rstd, dice_dxhat, alpha, dy, dx, B, H);
}
