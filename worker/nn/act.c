/* act: element-wise activations, softmax along an axis, dropout. */
#include <math.h>
#include <string.h>

#include "common/check.h"
#include "common/keys.h"
#include "worker/nn/ops.h"

void nn_relu_forward(const float *x, float *y, size_t n) {
  for (size_t i = 0; i < n; i++)
    y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void nn_relu_backward(const float *y, const float *dy, float *dx, size_t n) {
  // A select on an unconditional load vectorises; the branch it replaces
  // compiled to scalar code mispredicting on about half of real activations
  // (6% of a DNN 400x3 training step, bench_models). A NaN dy behind a
  // closed unit still adds 0.
  for (size_t i = 0; i < n; i++) {
    float g = dy[i];
    dx[i] += y[i] > 0.0f ? g : 0.0f;
  }
}

/* Branch-free and safe at any x: for x << 0, expf(-x) overflows to +inf and
 * 1 / (1 + inf) is exactly 0; for x >> 0 it is 1 / (1 + 0). (A branch on the
 * sign costs a mispredict per element on real activations.) */
static inline float sigmoidf(float x) {
  return 1.0f / (1.0f + expf(-x));
}

void nn_sigmoid_forward(const float *x, float *y, size_t n) {
  for (size_t i = 0; i < n; i++)
    y[i] = sigmoidf(x[i]);
}

void nn_sigmoid_backward(const float *y, const float *dy, float *dx, size_t n) {
  for (size_t i = 0; i < n; i++)
    dx[i] += dy[i] * y[i] * (1.0f - y[i]);
}

void nn_tanh_forward(const float *x, float *y, size_t n) {
  for (size_t i = 0; i < n; i++)
    y[i] = tanhf(x[i]);
}

void nn_tanh_backward(const float *y, const float *dy, float *dx, size_t n) {
  for (size_t i = 0; i < n; i++)
    dx[i] += dy[i] * (1.0f - y[i] * y[i]);
}

void nn_prelu_forward(const float *x, const float *a, float *y, int B, int H) {
  for (int r = 0; r < B; r++)
    for (int h = 0; h < H; h++) {
      size_t i = (size_t)r * H + h;
      y[i] = x[i] > 0.0f ? x[i] : a[h] * x[i];
    }
}

void nn_prelu_backward(const float *x, const float *a, const float *dy,
                       float *dx, float *da, int B, int H) {
  for (int r = 0; r < B; r++)
    for (int h = 0; h < H; h++) {
      size_t i = (size_t)r * H + h;
      int pos = x[i] > 0.0f;
      if (dx)
        dx[i] += pos ? dy[i] : a[h] * dy[i];
      if (da && !pos)
        da[h] += dy[i] * x[i];
    }
}

void nn_softmax_forward(const float *x, float *y, int N0, int A, int N1,
                        float T) {
  CHECK(N0 >= 0 && A >= 1 && N1 >= 1 && T > 0.0f, "N0=%d A=%d N1=%d T=%g", N0,
        A, N1, T);
  float invT = 1.0f / T;
  for (int o = 0; o < N0; o++)
    for (int in = 0; in < N1; in++) {
      const float *xv = x + (size_t)o * A * N1 + in; // stride N1 along A
      float *yv = y + (size_t)o * A * N1 + in;
      float mx = xv[0];
      for (int a = 1; a < A; a++)
        mx = fmaxf(mx, xv[(size_t)a * N1]);
      /* exp((x - max) / T) <= 1: no overflow at any temperature; the max
       * entry contributes exactly 1, so the sum is >= 1 (no 0/0). */
      double s = 0.0;
      for (int a = 0; a < A; a++) {
        float e = expf((xv[(size_t)a * N1] - mx) * invT);
        yv[(size_t)a * N1] = e;
        s += e;
      }
      float inv = (float)(1.0 / s);
      for (int a = 0; a < A; a++)
        yv[(size_t)a * N1] *= inv;
    }
}

void nn_softmax_backward(const float *y, const float *dy, float *dx, int N0,
                         int A, int N1, float T) {
  CHECK(N0 >= 0 && A >= 1 && N1 >= 1 && T > 0.0f, "N0=%d A=%d N1=%d T=%g", N0,
        A, N1, T);
  float invT = 1.0f / T;
  for (int o = 0; o < N0; o++)
    for (int in = 0; in < N1; in++) {
      size_t base = (size_t)o * A * N1 + in;
      float dot = 0.0f;
      for (int a = 0; a < A; a++) {
        size_t i = base + (size_t)a * N1;
        dot += dy[i] * y[i];
      }
      for (int a = 0; a < A; a++) {
        size_t i = base + (size_t)a * N1;
        dx[i] += y[i] * (dy[i] - dot) * invT;
      }
    }
}

void nn_masked_softmax_forward(const float *x, const float *mask, float *y,
                               int B, int L, float T) {
  CHECK(B >= 0 && L >= 1 && T > 0.0f, "B=%d L=%d T=%g", B, L, T);
  for (int r = 0; r < B; r++) {
    const float *xr = x + (size_t)r * L, *mr = mask + (size_t)r * L;
    float *yr = y + (size_t)r * L;
    float mx = -INFINITY;
    for (int l = 0; l < L; l++)
      if (mr[l] != 0.0f)
        mx = fmaxf(mx, xr[l]);
    double s = 0.0;
    for (int l = 0; l < L; l++) {
      yr[l] = mr[l] != 0.0f ? expf((xr[l] - mx) / T) : 0.0f;
      s += yr[l];
    }
    if (s == 0.0) // no real entry: nothing to attend to
      continue;
    float inv = (float)(1.0 / s);
    for (int l = 0; l < L; l++)
      yr[l] *= inv;
  }
}

/* A counter-based draw: a 24-bit uniform from hashing (seed, step, i), so
 * any element's mask bit is known without generating the others. */
static uint64_t dropout_stream(uint64_t seed, uint64_t step) {
  return keys_mix64(seed ^ keys_mix64(step + 0x5851f42d4c957f2dull));
}

/* keys_mix64 (splitmix64's finaliser), repeated here so that it inlines into
 * the per-element loop: a call per element was a third of dropout's time. */
static inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Element i is kept when its 24-bit uniform u = h >> 40 is >= p * 2^24
 * (an integer compare; P(keep) = 1 - p up to 2^-24). */
static inline uint64_t drop_threshold(float p) {
  return (uint64_t)((double)p * 16777216.0);
}

static inline bool keep_at(uint64_t stream, size_t i, uint64_t thr) {
  return (mix64(stream + (uint64_t)i) >> 40) >= thr;
}

bool nn_dropout_keep(uint64_t seed, uint64_t step, size_t i, float p) {
  return keep_at(dropout_stream(seed, step), i, drop_threshold(p));
}

void nn_dropout_forward(const float *x, float *y, size_t n, float p,
                        uint64_t seed, uint64_t step) {
  CHECK(p >= 0.0f && p < 1.0f, "p=%g", p);
  if (p == 0.0f) {
    if (y != x)
      memmove(y, x, sizeof(float) * n);
    return;
  }
  uint64_t st = dropout_stream(seed, step), thr = drop_threshold(p);
  float scale = 1.0f / (1.0f - p);
  for (size_t i = 0; i < n; i++) // a multiply, not a branch per element
    y[i] = x[i] * (keep_at(st, i, thr) ? scale : 0.0f);
}

void nn_dropout_backward(const float *dy, float *dx, size_t n, float p,
                         uint64_t seed, uint64_t step) {
  CHECK(p >= 0.0f && p < 1.0f, "p=%g", p);
  uint64_t st = dropout_stream(seed, step), thr = drop_threshold(p);
  float scale = 1.0f / (1.0f - p);
  for (size_t i = 0; i < n; i++)
    dx[i] += dy[i] * (keep_at(st, i, thr) ? scale : 0.0f);
}
