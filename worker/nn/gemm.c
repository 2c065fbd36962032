/* gemm: the row-major sgemm wrapper over OpenBLAS, and its naive twin. */
#include "worker/nn/gemm.h"

#include <cblas.h>

#include "common/check.h"

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
          const float *B, float beta, float *C) {
  CHECK(M >= 0 && N >= 0 && K >= 0, "M=%d N=%d K=%d", M, N, K);
  if (M == 0 || N == 0)
    return;
  if (K == 0) {
    /* BLAS would be fine, but say what happens: C = beta * C. */
    for (long i = 0; i < (long)M * N; i++)
      C[i] = beta == 0.0f ? 0.0f : beta * C[i];
    return;
  }
  /* A single output column or row is a matrix-vector product: OpenBLAS's
   * sgemm runs those at a fraction of sgemv's speed (the logit layer, O=1,
   * measured 3x slower), so route them to sgemv. */
  if (N == 1) { // C (M,1) = op(A) b, b = B's K contiguous floats either way
    cblas_sgemv(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, ta ? K : M,
                ta ? M : K, alpha, A, ta ? M : K, B, 1, beta, C, 1);
    return;
  }
  if (M == 1) { // C (1,N) = a op(B) = (op(B)^T a)^T, a = A's K floats
    cblas_sgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? N : K,
                tb ? K : N, alpha, B, tb ? K : N, A, 1, beta, C, 1);
    return;
  }
  /* Leading dimensions of the stored (packed, row-major) matrices. */
  int lda = ta ? M : K;
  int ldb = tb ? K : N;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
              tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
              beta, C, N);
}

void gemm_naive(bool ta, bool tb, int M, int N, int K, float alpha,
                const float *A, const float *B, float beta, float *C) {
  CHECK(M >= 0 && N >= 0 && K >= 0, "M=%d N=%d K=%d", M, N, K);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double s = 0.0;
      for (int k = 0; k < K; k++) {
        float a = ta ? A[(long)k * M + i] : A[(long)i * K + k];
        float b = tb ? B[(long)j * K + k] : B[(long)k * N + j];
        s += (double)a * b;
      }
      float *c = &C[(long)i * N + j];
      /* beta == 0 must overwrite, as BLAS does: 0 * NaN would keep NaN. */
      *c = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * *c));
    }
}

void gemm_set_threads(int n) {
  CHECK(n >= 1, "n=%d", n);
  openblas_set_num_threads(n);
}

int gemm_threads(void) {
  return openblas_get_num_threads();
}
