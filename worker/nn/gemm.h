/*
 * gemm: every matrix product of the dense network, and the only place that
 * talks to BLAS (OpenBLAS, pthread variant; cblas.h is included by gemm.c
 * alone, STYLE.md rule 5).
 *
 * All matrices are row-major and tightly packed (leading dimension = the
 * number of columns as stored). gemm computes
 *
 *   C (M, N) = alpha * op(A) (M, K) * op(B) (K, N) + beta * C
 *
 * with op(A) = A when ta is false (A stored (M, K)) or A^T when ta is true
 * (A stored (K, M)); likewise op(B) = B (stored (K, N)) or B^T (stored
 * (N, K)). beta = 0 overwrites C (whatever it held, NaN included); beta = 1
 * accumulates, which is how every backward pass adds into its gradients.
 *
 * M, N, K here are gemm's own letters, not the model legend of nn/ops.h.
 *
 * Not here: strided views, batched products, other precisions.
 */
#ifndef MASKPS_NN_GEMM_H
#define MASKPS_NN_GEMM_H

#include <stdbool.h>

/* C = alpha * op(A) op(B) + beta * C through cblas_sgemm. M, N or K of 0 is
 * allowed (K = 0 scales C by beta). CHECKs negative sizes. */
void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
          const float *B, float beta, float *C);

/* The same contract computed with three plain loops and a double
 * accumulator: the reference gemm is tested against. Slow; tests only. */
void gemm_naive(bool ta, bool tb, int M, int N, int K, float alpha,
                const float *A, const float *B, float beta, float *C);

/* Threads OpenBLAS uses for every later call in this process (n >= 1).
 * OpenBLAS keeps one global pool, so this is per process, not per call. */
void gemm_set_threads(int n);
/* Threads OpenBLAS currently uses. */
int gemm_threads(void);

#endif
