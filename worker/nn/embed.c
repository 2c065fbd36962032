/* embed: a batch's embedding rows from the pulled, de-duplicated block, their
 * gradients back per unique key, and masked pooling over sequences. */
#include <string.h>

#include "common/check.h"
#include "worker/nn/ops.h"

/* The number of leading entries of row u that exist (AMTL prefix). */
static inline int row_len(const uint16_t *prefix, int u, int D) {
  return prefix ? (int)prefix[u] : D;
}

void nn_embed_gather(const float *rows, const uint16_t *prefix,
                     const int32_t *idx, const float *vals, float *out, int B,
                     int F, int D, int U) {
  CHECK(B >= 0 && F >= 1 && D >= 1 && U >= 0, "B=%d F=%d D=%d U=%d", B, F, D,
        U);
  for (size_t bf = 0; bf < (size_t)B * F; bf++) {
    float *o = out + bf * D; // field f of row b, (D)
    int u = idx[bf];
    CHECK(u >= -1 && u < U, "idx[%zu]=%d outside [-1, %d)", bf, u, U);
    int p = u < 0 ? 0 : row_len(prefix, u, D);
    CHECK(p <= D, "prefix of row %d is %d > D=%d", u, p, D);
    if (p > 0)
      memcpy(o, rows + (size_t)u * D, sizeof(float) * p);
    memset(o + p, 0, sizeof(float) * (D - p));
    if (vals)
      for (int j = 0; j < p; j++)
        o[j] *= vals[bf];
  }
}

void nn_embed_scatter(const float *dout, const uint16_t *prefix,
                      const int32_t *idx, const float *vals, float *drows,
                      int B, int F, int D, int U) {
  for (size_t bf = 0; bf < (size_t)B * F; bf++) {
    int u = idx[bf];
    CHECK(u >= -1 && u < U, "idx[%zu]=%d outside [-1, %d)", bf, u, U);
    if (u < 0)
      continue;
    int p = row_len(prefix, u, D);
    CHECK(p <= D, "prefix of row %d is %d > D=%d", u, p, D);
    const float *g = dout + bf * D;
    float *dr = drows + (size_t)u * D;
    float x = vals ? vals[bf] : 1.0f;
    for (int j = 0; j < p; j++)
      dr[j] += x * g[j];
  }
}

void nn_masked_pool_forward(const float *x, const float *mask, float *y, int B,
                            int L, int D, bool mean) {
  CHECK(B >= 0 && L >= 1 && D >= 1, "B=%d L=%d D=%d", B, L, D);
  for (int r = 0; r < B; r++) {
    float *yr = y + (size_t)r * D;
    memset(yr, 0, sizeof(float) * D);
    float cnt = 0.0f;
    for (int l = 0; l < L; l++) {
      float m = mask[(size_t)r * L + l];
      cnt += m;
      if (m == 0.0f) // padding: skip, even if its x is garbage
        continue;
      const float *xl = x + ((size_t)r * L + l) * D;
      for (int d = 0; d < D; d++)
        yr[d] += m * xl[d];
    }
    if (mean && cnt != 0.0f)
      for (int d = 0; d < D; d++)
        yr[d] /= cnt;
  }
}

void nn_masked_pool_backward(const float *x, const float *mask, const float *dy,
                             float *dx, float *dmask, int B, int L, int D,
                             bool mean) {
  CHECK(!dmask || x, "dmask needs x");
  for (int r = 0; r < B; r++) {
    const float *dr = dy + (size_t)r * D;
    float cnt = 0.0f;
    for (int l = 0; l < L; l++)
      cnt += mask[(size_t)r * L + l];
    bool div = mean && cnt != 0.0f;
    float k = div ? 1.0f / cnt : 1.0f;
    /* mean pooling: y = sum m x / sum m, so dy/dm_l = (x_l - y) / sum m;
     * the pooled row y is recomputed here for that. */
    float ydot = 0.0f; // sum_d dy * y
    if (dmask && div)
      for (int l = 0; l < L; l++) {
        float m = mask[(size_t)r * L + l];
        if (m == 0.0f)
          continue;
        const float *xl = x + ((size_t)r * L + l) * D;
        for (int d = 0; d < D; d++)
          ydot += dr[d] * m * xl[d] * k;
      }
    for (int l = 0; l < L; l++) {
      float m = mask[(size_t)r * L + l];
      const float *xl = x ? x + ((size_t)r * L + l) * D : NULL;
      if (dmask && !(mean && !div)) { // an all-zero mean row: no gradient
        float s = 0.0f;
        for (int d = 0; d < D; d++)
          s += dr[d] * xl[d];
        dmask[(size_t)r * L + l] += div ? (s - ydot) * k : s;
      }
      if (!dx || m == 0.0f)
        continue;
      float *dxl = dx + ((size_t)r * L + l) * D;
      for (int d = 0; d < D; d++)
        dxl[d] += m * k * dr[d];
    }
  }
}

void nn_fm_forward(const float *e, float *y, int B, int F, int D) {
  CHECK(B >= 0 && F >= 1 && D >= 1, "B=%d F=%d D=%d", B, F, D);
  for (int r = 0; r < B; r++) {
    double s = 0.0;
    for (int d = 0; d < D; d++) {
      double sum = 0.0, sq = 0.0;
      for (int f = 0; f < F; f++) {
        double v = e[((size_t)r * F + f) * D + d];
        sum += v;
        sq += v * v;
      }
      s += sum * sum - sq;
    }
    y[r] = (float)(0.5 * s);
  }
}

void nn_fm_backward(const float *e, const float *dy, float *de, int B, int F,
                    int D) {
  for (int r = 0; r < B; r++)
    for (int d = 0; d < D; d++) {
      float sum = 0.0f;
      for (int f = 0; f < F; f++)
        sum += e[((size_t)r * F + f) * D + d];
      for (int f = 0; f < F; f++) {
        size_t i = ((size_t)r * F + f) * D + d;
        de[i] += dy[r] * (sum - e[i]);
      }
    }
}

void nn_onehot_argmax(const float *t, float *y, int N, int D) {
  CHECK(N >= 0 && D >= 1, "N=%d D=%d", N, D);
  for (int r = 0; r < N; r++) {
    const float *tr = t + (size_t)r * D;
    float *yr = y + (size_t)r * D;
    int k = 0;
    for (int j = 1; j < D; j++)
      if (tr[j] > tr[k])
        k = j;
    memset(yr, 0, sizeof(float) * D);
    yr[k] = 1.0f;
  }
}

void nn_prefix_mask_forward(const float *t, float *m, int N, int D) {
  CHECK(N >= 0 && D >= 1, "N=%d D=%d", N, D);
  for (int r = 0; r < N; r++) {
    const float *tr = t + (size_t)r * D;
    float *mr = m + (size_t)r * D;
    float s = 0.0f;
    for (int j = D - 1; j >= 0; j--) { // suffix sums
      s += tr[j];
      mr[j] = s;
    }
  }
}

void nn_prefix_mask_backward(const float *dm, float *dt, int N, int D) {
  for (int r = 0; r < N; r++) {
    const float *dr = dm + (size_t)r * D;
    float *tr = dt + (size_t)r * D;
    float s = 0.0f;
    for (int j = 0; j < D; j++) { // prefix sums
      s += dr[j];
      tr[j] += s;
    }
  }
}
