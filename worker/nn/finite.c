/* finite: finding NaN/Inf in a buffer, so that bad data or a diverging run
 * becomes a message naming the tensor instead of a silent NaN loss. */
#include <math.h>
#include <stdio.h>

#include "worker/nn/ops.h"

long nn_find_nonfinite(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i]))
      return (long)i;
  return -1;
}

int nn_check_finite(const char *what, const float *x, size_t n, char *err,
                    size_t errlen) {
  long i = nn_find_nonfinite(x, n);
  if (i < 0)
    return 0;
  float v = x[i];
  snprintf(err, errlen, "%s[%ld] = %s (first non-finite of %zu)", what, i,
           isnan(v) ? "nan"
           : v > 0  ? "inf"
                    : "-inf",
           n);
  return -1;
}
