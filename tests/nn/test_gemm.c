/* gemm: the OpenBLAS wrapper agrees with gemm_naive on odd shapes, every
 * transpose pair, alpha/beta (overwrite and accumulate). */
#include "worker/nn/gemm.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/check.h"
#include "common/keys.h"

/* Uniform in [-1, 1), deterministic from (seed, i). */
static float urand(uint64_t seed, long i) {
  uint64_t h = keys_mix64(seed * 0x9e3779b97f4a7c15ull + (uint64_t)i);
  return (float)((double)(h >> 40) / (double)(1 << 23) - 1.0);
}

static void fill(float *x, long n, uint64_t seed) {
  for (long i = 0; i < n; i++)
    x[i] = urand(seed, i);
}

/* Tolerance: a float dot product of K terms has a forward error bounded by
 * gamma_K * sum|a_k b_k| with gamma_K ~ K * 2^-24 (Higham, recursive
 * summation; BLAS blocking only lowers it). We allow (K + 4) * 2^-23 of
 * sum|alpha a b| + |beta c|: twice the bound plus the alpha/beta roundings.
 * A wrong transpose or leading dimension gives O(1) errors. */
static void check_shape(bool ta, bool tb, int M, int N, int K, float alpha,
                        float beta, uint64_t seed) {
  long na = (long)M * K, nb = (long)K * N, nc = (long)M * N;
  float *A = xmalloc(sizeof(float) * (na + 1));
  float *B = xmalloc(sizeof(float) * (nb + 1));
  float *C = xmalloc(sizeof(float) * (nc + 1));
  float *R = xmalloc(sizeof(float) * (nc + 1));
  fill(A, na, seed);
  fill(B, nb, seed + 1);
  fill(C, nc, seed + 2);
  memcpy(R, C, sizeof(float) * nc);
  gemm(ta, tb, M, N, K, alpha, A, B, beta, C);
  gemm_naive(ta, tb, M, N, K, alpha, A, B, beta, R);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double mag = 0;
      for (int k = 0; k < K; k++) {
        float a = ta ? A[(long)k * M + i] : A[(long)i * K + k];
        float b = tb ? B[(long)j * K + k] : B[(long)k * N + j];
        mag += fabs((double)alpha * a * b);
      }
      float c0 = urand(seed + 2, (long)i * N + j);
      mag += fabs((double)beta * c0);
      double tol = (K + 4) * ldexp(1.0, -23) * mag + 1e-30;
      double got = C[(long)i * N + j], want = R[(long)i * N + j];
      if (!(fabs(got - want) <= tol))
        fail_msg("ta=%d tb=%d M=%d N=%d K=%d alpha=%g beta=%g: C[%d][%d] = "
                 "%.9g, naive %.9g, tol %.3g",
                 ta, tb, M, N, K, alpha, beta, i, j, got, want, tol);
    }
  free(A);
  free(B);
  free(C);
  free(R);
}

static void test_odd_shapes_all_transposes(void **state) {
  (void)state;
  const int shapes[][3] = {{1, 1, 1},
                           {3, 5, 7},
                           {7, 3, 5},
                           {129, 65, 33},
                           {33, 129, 65},
                           {2, 1, 300},
                           {1, 17, 1},
                           /* the sgemv paths: one column, one row */
                           {300, 1, 129},
                           {1, 300, 129},
                           {1, 1, 77}};
  uint64_t seed = 1;
  for (size_t s = 0; s < ARRAY_LEN(shapes); s++)
    for (int t = 0; t < 4; t++) {
      check_shape(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f,
                  0.0f, seed++);
      check_shape(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], -0.5f,
                  1.0f, seed++);
      check_shape(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 2.0f,
                  0.25f, seed++);
    }
}

static void test_beta_zero_overwrites_nan(void **state) {
  (void)state;
  float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1};
  float C[4] = {NAN, INFINITY, NAN, -INFINITY}, R[4];
  memcpy(R, C, sizeof(C));
  gemm(false, false, 2, 2, 3, 1.0f, A, B, 0.0f, C); /* (2,3) x (3,2) */
  gemm_naive(false, false, 2, 2, 3, 1.0f, A, B, 0.0f, R);
  const float want[4] = {1 + 3, 2 + 3, 4 + 6, 5 + 6};
  assert_memory_equal(C, want, sizeof(want));
  assert_memory_equal(R, want, sizeof(want));
  /* the same through the sgemv paths (one column, one row) */
  float c2[2] = {NAN, INFINITY};
  gemm(false, false, 2, 1, 3, 1.0f, A, B, 0.0f, c2); /* (2,3) x (1,0,0)^T */
  assert_float_equal(c2[0], 1, 0.0f);
  assert_float_equal(c2[1], 4, 0.0f);
  c2[0] = NAN, c2[1] = NAN;
  gemm(false, false, 1, 2, 3, 1.0f, A, B, 0.0f, c2); /* (1,3) x (3,2) */
  assert_float_equal(c2[0], 1 + 3, 0.0f);
  assert_float_equal(c2[1], 2 + 3, 0.0f);
}

static void test_accumulate_and_k_zero(void **state) {
  (void)state;
  float A[2] = {2, 3}, B[2] = {5, 7}; /* (2,1) x (1,2) outer product */
  float C[4] = {1, 1, 1, 1};
  gemm(false, false, 2, 2, 1, 1.0f, A, B, 1.0f, C);
  const float want[4] = {11, 15, 16, 22};
  assert_memory_equal(C, want, sizeof(want));
  gemm(false, false, 2, 2, 0, 1.0f, A, B, 0.5f, C); /* K = 0: C *= beta */
  const float half[4] = {5.5f, 7.5f, 8, 11};
  assert_memory_equal(C, half, sizeof(half));
}

static void test_threads(void **state) {
  (void)state;
  gemm_set_threads(2);
  assert_true(gemm_threads() >= 1);
  check_shape(false, true, 129, 65, 33, 1.0f, 1.0f, 99);
  gemm_set_threads(1);
  assert_int_equal(gemm_threads(), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_odd_shapes_all_transposes),
      cmocka_unit_test(test_beta_zero_overwrites_nan),
      cmocka_unit_test(test_accumulate_and_k_zero),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
