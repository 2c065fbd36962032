/* cross: the explicit feature-crossing layers of DCN and DCNv2. */
#include <string.h>

#include "common/check.h"
#include "worker/nn/gemm.h"
#include "worker/nn/ops.h"

void nn_cross_forward(const float *x0, const float *xl, const float *w,
                      const float *b, float *y, int B, int C) {
  CHECK(B >= 0 && C >= 1, "B=%d C=%d", B, C);
  for (int r = 0; r < B; r++) {
    const float *x0r = x0 + (size_t)r * C, *xlr = xl + (size_t)r * C;
    float *yr = y + (size_t)r * C;
    float s = 0.0f; // w^T x_l, a scalar per row
    for (int c = 0; c < C; c++)
      s += w[c] * xlr[c];
    for (int c = 0; c < C; c++)
      yr[c] = x0r[c] * s + b[c] + xlr[c];
  }
}

void nn_cross_backward(const float *x0, const float *xl, const float *w,
                       const float *dy, float *dx0, float *dxl, float *dw,
                       float *db, int B, int C) {
  for (int r = 0; r < B; r++) {
    const float *x0r = x0 + (size_t)r * C, *xlr = xl + (size_t)r * C;
    const float *dr = dy + (size_t)r * C;
    float s = 0.0f, ds = 0.0f; // s = w.x_l; ds = dL/ds = dy.x_0
    for (int c = 0; c < C; c++) {
      s += w[c] * xlr[c];
      ds += dr[c] * x0r[c];
    }
    for (int c = 0; c < C; c++) {
      if (dx0)
        dx0[(size_t)r * C + c] += dr[c] * s;
      if (dxl)
        dxl[(size_t)r * C + c] += dr[c] + ds * w[c];
      dw[c] += ds * xlr[c];
      db[c] += dr[c];
    }
  }
}

void nn_cross2_forward(const float *x0, const float *xl, const float *W,
                       const float *b, float *y, float *u, int B, int C) {
  CHECK(B >= 0 && C >= 1, "B=%d C=%d", B, C);
  nn_linear_forward(xl, W, b, u, B, C, C); // u (B,C) = xl W^T + b
  size_t n = (size_t)B * C;
  for (size_t i = 0; i < n; i++)
    y[i] = x0[i] * u[i] + xl[i];
}

void nn_cross2_backward(const float *x0, const float *xl, const float *W,
                        const float *u, const float *dy, float *dx0, float *dxl,
                        float *dW, float *db, float *work, int B, int C) {
  size_t n = (size_t)B * C;
  float *du = work; // (B,C)
  for (size_t i = 0; i < n; i++) {
    du[i] = dy[i] * x0[i];
    if (dx0)
      dx0[i] += dy[i] * u[i];
    if (dxl)
      dxl[i] += dy[i]; // the residual
  }
  nn_linear_backward(xl, W, du, dxl, dW, db, B, C, C);
}

/* Offsets inside the mixture's cache: per expert t1, t2 (B,R) and u (B,C),
 * then the gate g (B,K). */
static float *mix_t1(const struct nn_crossmix *m, float *cache, int B, int k) {
  return cache + (size_t)k * B * (2 * m->R + m->C);
}
static float *mix_t2(const struct nn_crossmix *m, float *cache, int B, int k) {
  return mix_t1(m, cache, B, k) + (size_t)B * m->R;
}
static float *mix_u(const struct nn_crossmix *m, float *cache, int B, int k) {
  return mix_t2(m, cache, B, k) + (size_t)B * m->R;
}
static float *mix_g(const struct nn_crossmix *m, float *cache, int B) {
  return mix_t1(m, cache, B, m->K);
}

size_t nn_crossmix_cache_len(const struct nn_crossmix *m, int B) {
  return (size_t)m->K * B * (2 * m->R + m->C) + (size_t)B * m->K;
}

size_t nn_crossmix_work_len(const struct nn_crossmix *m, int B) {
  return (size_t)B * m->C + 2 * (size_t)B * m->R + 2 * (size_t)B * m->K;
}

void nn_crossmix_forward(const struct nn_crossmix *m, const float *x0,
                         const float *xl, float *y, float *cache, int B) {
  int C = m->C, R = m->R, K = m->K;
  CHECK(B >= 0 && C >= 1 && R >= 1 && K >= 1, "B=%d C=%d R=%d K=%d", B, C, R,
        K);
  size_t n = (size_t)B * C;
  memcpy(y, xl, sizeof(float) * n); // the residual
  float *g = mix_g(m, cache, B);    // (B,K)
  nn_linear_forward(xl, m->G, NULL, g, B, C, K);
  nn_softmax_forward(g, g, B, K, 1, 1.0f);
  for (int k = 0; k < K; k++) {
    float *t1 = mix_t1(m, cache, B, k), *t2 = mix_t2(m, cache, B, k);
    float *u = mix_u(m, cache, B, k);
    nn_linear_forward(xl, m->V + (size_t)k * R * C, NULL, t1, B, C, R);
    nn_tanh_forward(t1, t1, (size_t)B * R); // (B,R)
    nn_linear_forward(t1, m->Cm + (size_t)k * R * R, NULL, t2, B, R, R);
    nn_tanh_forward(t2, t2, (size_t)B * R); // (B,R)
    nn_linear_forward(t2, m->U + (size_t)k * C * R, m->b, u, B, R, C);
    for (int r = 0; r < B; r++) {
      float gk = g[(size_t)r * K + k];
      for (int c = 0; c < C; c++) {
        size_t i = (size_t)r * C + c;
        y[i] += gk * x0[i] * u[i]; // g_k * E_k
      }
    }
  }
}

void nn_crossmix_backward(const struct nn_crossmix *m, const float *x0,
                          const float *xl, const float *cache, const float *dy,
                          float *dx0, float *dxl, float *work, int B) {
  int C = m->C, R = m->R, K = m->K;
  float *cch = (float *)cache;     // read only; the offset helpers take float *
  float *du = work;                // (B,C)
  float *dt2 = du + (size_t)B * C; // (B,R)
  float *dt1 = dt2 + (size_t)B * R;   // (B,R)
  float *dg = dt1 + (size_t)B * R;    // (B,K) dL/dg
  float *dlogit = dg + (size_t)B * K; // (B,K) dL/d(G xl)
  const float *g = mix_g(m, cch, B);
  // dL/dg_k = sum_c dy * E_k, with E_k = x0 * u_k
  for (int k = 0; k < K; k++) {
    const float *u = mix_u(m, cch, B, k);
    for (int r = 0; r < B; r++) {
      float s = 0.0f;
      for (int c = 0; c < C; c++) {
        size_t i = (size_t)r * C + c;
        s += dy[i] * x0[i] * u[i];
      }
      dg[(size_t)r * K + k] = s;
    }
  }
  memset(dlogit, 0, sizeof(float) * (size_t)B * K);
  nn_softmax_backward(g, dg, dlogit, B, K, 1, 1.0f);
  nn_linear_backward(xl, m->G, dlogit, dxl, m->dG, NULL, B, C, K);
  for (int k = 0; k < K; k++) {
    const float *t1 = mix_t1(m, cch, B, k), *t2 = mix_t2(m, cch, B, k);
    const float *u = mix_u(m, cch, B, k);
    for (int r = 0; r < B; r++) {
      float gk = g[(size_t)r * K + k];
      for (int c = 0; c < C; c++) {
        size_t i = (size_t)r * C + c;
        du[i] = gk * dy[i] * x0[i];
        if (dx0)
          dx0[i] += gk * dy[i] * u[i];
      }
    }
    memset(dt2, 0, sizeof(float) * (size_t)B * R);
    nn_linear_backward(t2, m->U + (size_t)k * C * R, du, dt2,
                       m->dU + (size_t)k * C * R, m->db, B, R, C);
    memset(dt1, 0, sizeof(float) * (size_t)B * R);
    nn_tanh_backward(t2, dt2, dt1, (size_t)B * R); // dt1 holds dL/dv2
    memset(dt2, 0, sizeof(float) * (size_t)B * R);
    nn_linear_backward(t1, m->Cm + (size_t)k * R * R, dt1, dt2,
                       m->dCm + (size_t)k * R * R, NULL, B, R, R);
    memset(dt1, 0, sizeof(float) * (size_t)B * R);
    nn_tanh_backward(t1, dt2, dt1, (size_t)B * R); // dt1 holds dL/dv1
    nn_linear_backward(xl, m->V + (size_t)k * R * C, dt1, dxl,
                       m->dV + (size_t)k * R * C, NULL, B, C, R);
  }
  if (dxl)
    nn_add_backward(dy, dxl, NULL, (size_t)B * C);
}
