/* linear: fully connected layers, biases, element-wise products and sums,
 * field scaling, concat and split. See nn/ops.h for the legend. */
#include <string.h>

#include "common/check.h"
#include "worker/nn/gemm.h"
#include "worker/nn/ops.h"

void nn_linear_forward(const float *x, const float *W, const float *b, float *y,
                       int B, int I, int O) {
  CHECK(B >= 0 && I > 0 && O > 0, "B=%d I=%d O=%d", B, I, O);
  // y (B,O) = x (B,I) W^T (I,O)
  gemm(false, true, B, O, I, 1.0f, x, W, 0.0f, y);
  if (b)
    nn_bias_forward(y, b, B, O);
}

void nn_linear_backward(const float *x, const float *W, const float *dy,
                        float *dx, float *dW, float *db, int B, int I, int O) {
  CHECK(B >= 0 && I > 0 && O > 0, "B=%d I=%d O=%d", B, I, O);
  if (dx) // dx (B,I) += dy (B,O) W (O,I)
    gemm(false, false, B, I, O, 1.0f, dy, W, 1.0f, dx);
  if (dW) // dW (O,I) += dy^T (O,B) x (B,I)
    gemm(true, false, O, I, B, 1.0f, dy, x, 1.0f, dW);
  if (db)
    nn_bias_backward(dy, db, B, O);
}

void nn_bias_forward(float *y, const float *b, int B, int H) {
  for (int r = 0; r < B; r++) {
    float *yr = y + (size_t)r * H;
    for (int h = 0; h < H; h++)
      yr[h] += b[h];
  }
}

void nn_bias_backward(const float *dy, float *db, int B, int H) {
  for (int r = 0; r < B; r++) {
    const float *dr = dy + (size_t)r * H;
    for (int h = 0; h < H; h++)
      db[h] += dr[h];
  }
}

void nn_mul_forward(const float *a, const float *b, float *y, size_t n) {
  for (size_t i = 0; i < n; i++)
    y[i] = a[i] * b[i];
}

void nn_mul_backward(const float *a, const float *b, const float *dy, float *da,
                     float *db, size_t n) {
  if (da)
    for (size_t i = 0; i < n; i++)
      da[i] += dy[i] * b[i];
  if (db)
    for (size_t i = 0; i < n; i++)
      db[i] += dy[i] * a[i];
}

void nn_add_forward(const float *a, const float *b, float *y, size_t n) {
  for (size_t i = 0; i < n; i++)
    y[i] = a[i] + b[i];
}

void nn_add_backward(const float *dy, float *da, float *db, size_t n) {
  if (da)
    for (size_t i = 0; i < n; i++)
      da[i] += dy[i];
  if (db)
    for (size_t i = 0; i < n; i++)
      db[i] += dy[i];
}

void nn_sub_forward(const float *a, const float *b, float *y, size_t n) {
  for (size_t i = 0; i < n; i++)
    y[i] = a[i] - b[i];
}

void nn_sub_backward(const float *dy, float *da, float *db, size_t n) {
  if (da)
    for (size_t i = 0; i < n; i++)
      da[i] += dy[i];
  if (db)
    for (size_t i = 0; i < n; i++)
      db[i] -= dy[i];
}

void nn_field_scale_forward(const float *m, const float *e, float *y, int B,
                            int F, int D, int mB) {
  CHECK(mB == B || mB == 1, "mB=%d B=%d", mB, B);
  for (int r = 0; r < B; r++) {
    const float *mr = m + (mB == 1 ? 0 : (size_t)r * F); // (F)
    for (int f = 0; f < F; f++) {
      size_t o = ((size_t)r * F + f) * D;
      for (int d = 0; d < D; d++)
        y[o + d] = mr[f] * e[o + d];
    }
  }
}

void nn_field_scale_backward(const float *m, const float *e, const float *dy,
                             float *dm, float *de, int B, int F, int D,
                             int mB) {
  CHECK(mB == B || mB == 1, "mB=%d B=%d", mB, B);
  for (int r = 0; r < B; r++) {
    size_t mo = mB == 1 ? 0 : (size_t)r * F;
    for (int f = 0; f < F; f++) {
      size_t o = ((size_t)r * F + f) * D;
      if (dm) {
        float s = 0.0f;
        for (int d = 0; d < D; d++)
          s += dy[o + d] * e[o + d];
        dm[mo + f] += s;
      }
      if (de)
        for (int d = 0; d < D; d++)
          de[o + d] += m[mo + f] * dy[o + d];
    }
  }
}

void nn_repeat_forward(const float *x, float *y, int B, int L, int H) {
  CHECK(B >= 0 && L >= 1 && H >= 1, "B=%d L=%d H=%d", B, L, H);
  for (int r = 0; r < B; r++)
    for (int l = 0; l < L; l++)
      memcpy(y + ((size_t)r * L + l) * H, x + (size_t)r * H, sizeof(float) * H);
}

void nn_repeat_backward(const float *dy, float *dx, int B, int L, int H) {
  for (int r = 0; r < B; r++)
    for (int l = 0; l < L; l++) {
      const float *d = dy + ((size_t)r * L + l) * H;
      float *o = dx + (size_t)r * H;
      for (int h = 0; h < H; h++)
        o[h] += d[h];
    }
}

void nn_rowsum_forward(const float *x, float *y, int B, int H) {
  CHECK(B >= 0 && H >= 1, "B=%d H=%d", B, H);
  for (int r = 0; r < B; r++) {
    float s = 0.0f;
    for (int h = 0; h < H; h++)
      s += x[(size_t)r * H + h];
    y[r] = s;
  }
}

void nn_rowsum_backward(const float *dy, float *dx, int B, int H) {
  for (int r = 0; r < B; r++)
    for (int h = 0; h < H; h++)
      dx[(size_t)r * H + h] += dy[r];
}

static int total_width(int n, const int *w) {
  CHECK(n >= 1, "n=%d", n);
  int t = 0;
  for (int i = 0; i < n; i++) {
    CHECK(w[i] >= 0, "w[%d]=%d", i, w[i]);
    t += w[i];
  }
  return t;
}

void nn_concat_forward(int n, const float *const *xs, const int *w, float *y,
                       int B) {
  int W = total_width(n, w);
  for (int r = 0; r < B; r++) {
    float *yr = y + (size_t)r * W;
    for (int i = 0; i < n; i++) {
      memcpy(yr, xs[i] + (size_t)r * w[i], sizeof(float) * w[i]);
      yr += w[i];
    }
  }
}

void nn_concat_backward(int n, const int *w, const float *dy, float *const *dxs,
                        int B) {
  int W = total_width(n, w);
  for (int r = 0; r < B; r++) {
    const float *dr = dy + (size_t)r * W;
    for (int i = 0; i < n; i++) {
      if (dxs[i]) {
        float *dx = dxs[i] + (size_t)r * w[i];
        for (int j = 0; j < w[i]; j++)
          dx[j] += dr[j];
      }
      dr += w[i];
    }
  }
}

void nn_split_forward(const float *x, int n, const int *w, float *const *ys,
                      int B) {
  int W = total_width(n, w);
  for (int r = 0; r < B; r++) {
    const float *xr = x + (size_t)r * W;
    for (int i = 0; i < n; i++) {
      memcpy(ys[i] + (size_t)r * w[i], xr, sizeof(float) * w[i]);
      xr += w[i];
    }
  }
}

void nn_split_backward(int n, const int *w, const float *const *dys, float *dx,
                       int B) {
  int W = total_width(n, w);
  for (int r = 0; r < B; r++) {
    float *dr = dx + (size_t)r * W;
    for (int i = 0; i < n; i++) {
      if (dys[i]) {
        const float *d = dys[i] + (size_t)r * w[i];
        for (int j = 0; j < w[i]; j++)
          dr[j] += d[j];
      }
      dr += w[i];
    }
  }
}
