/* loss: binary cross-entropy on logits, the CTR loss. */
#include <math.h>

#include "common/check.h"
#include "worker/nn/ops.h"

double nn_logloss_forward(const float *z, const float *y, int B) {
  CHECK(B >= 1, "B=%d", B);
  double s = 0.0;
  for (int i = 0; i < B; i++) {
    /* -y log s(z) - (1-y) log(1 - s(z)) rewritten so that exp only sees
     * -|z| <= 0: no overflow, and log1p keeps precision for large |z|. */
    double zi = z[i];
    s += fmax(zi, 0.0) - zi * y[i] + log1p(exp(-fabs(zi)));
  }
  return s / B;
}

void nn_logloss_backward(const float *z, const float *y, float *dz, int B,
                         float scale) {
  CHECK(B >= 1, "B=%d", B);
  float k = scale / (float)B;
  for (int i = 0; i < B; i++) {
    float zi = z[i], p;
    if (zi >= 0.0f) {
      p = 1.0f / (1.0f + expf(-zi));
    } else {
      float e = expf(zi);
      p = e / (1.0f + e);
    }
    dz[i] += k * (p - y[i]);
  }
}
