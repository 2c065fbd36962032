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
                     const int32_t *idx, float *out, int B, int F, int D,
                     int U) {
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
  }
}

void nn_embed_scatter(const float *dout, const uint16_t *prefix,
                      const int32_t *idx, float *drows, int B, int F, int D,
                      int U) {
  for (size_t bf = 0; bf < (size_t)B * F; bf++) {
    int u = idx[bf];
    CHECK(u >= -1 && u < U, "idx[%zu]=%d outside [-1, %d)", bf, u, U);
    if (u < 0)
      continue;
    int p = row_len(prefix, u, D);
    CHECK(p <= D, "prefix of row %d is %d > D=%d", u, p, D);
    const float *g = dout + bf * D;
    float *dr = drows + (size_t)u * D;
    for (int j = 0; j < p; j++)
      dr[j] += g[j];
  }
}

void nn_masked_pool_forward(const float *x, const float *mask, float *y,
                            int B, int L, int D, bool mean) {
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

void nn_masked_pool_backward(const float *mask, const float *dy, float *dx,
                             int B, int L, int D, bool mean) {
  for (int r = 0; r < B; r++) {
    const float *dr = dy + (size_t)r * D;
    float cnt = 0.0f;
    for (int l = 0; l < L; l++)
      cnt += mask[(size_t)r * L + l];
    float k = mean && cnt != 0.0f ? 1.0f / cnt : 1.0f;
    for (int l = 0; l < L; l++) {
      float m = mask[(size_t)r * L + l] * k;
      if (m == 0.0f)
        continue;
      float *dxl = dx + ((size_t)r * L + l) * D;
      for (int d = 0; d < D; d++)
        dxl[d] += m * dr[d];
    }
  }
}
