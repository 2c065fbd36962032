/* bench_ops: how fast the dense ops run on this machine.
 *
 *   bench_ops [seconds_per_case]    (default 0.3)
 *
 * 1. sgemm GFLOP/s (2*M*N*K flops per call) at the shapes of a CTR MLP with
 *    batch 4096: 39 fields x 16 = 624 inputs, hidden 400, and the three
 *    products of a linear layer (forward, dx, dW), on 1 and 2 threads.
 * 2. linear + ReLU forward and backward as the models call them, as GFLOP/s
 *    of the matrix products they contain and as a fraction of (1): the rest
 *    (bias, ReLU, column sums) is memory-bound work the roofline omits.
 * 3. The memory-bound ops per element (LayerNorm, dropout, ...), in
 *    Gfloat/s, to size them against the products.
 * Each case repeats for at least the given time after one warm-up call and
 * reports the mean. The 2 cores of the target machine are shared: wall-time
 * numbers (1, 2) are as good as the machine was quiet; (3) counts CPU time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/check.h"
#include "common/keys.h"
#include "worker/nn/gemm.h"
#include "worker/nn/ops.h"

static double g_secs = 0.3;

static float *randbuf(size_t n, uint64_t seed) {
  float *x = xaligned(sizeof(float) * (n ? n : 1));
  for (size_t i = 0; i < n; i++)
    x[i] = (float)((double)(keys_mix64(seed + i) >> 40) / (1 << 23) - 1.0);
  return x;
}

/* This thread's CPU seconds: for single-threaded cases, much steadier than
 * wall time on a machine shared with other jobs. */
static double thread_cpu_sec(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Seconds per call of fn(ctx), averaged over >= g_secs of calls, by the
 * clock given (wall time whenever OpenBLAS threads take part). */
static double per_call_on(void (*fn)(void *), void *ctx, double (*now)(void)) {
  fn(ctx); // warm-up: page faults, OpenBLAS thread start
  int n = 0;
  double t0 = now(), t;
  do {
    fn(ctx);
    n++;
    t = now();
  } while (t - t0 < g_secs);
  return (t - t0) / n;
}

static double per_call(void (*fn)(void *), void *ctx) {
  return per_call_on(fn, ctx, clock_sec);
}

struct gemm_case {
  bool ta, tb;
  int M, N, K;
  const char *what;
  float *A, *B, *C;
};

static void run_gemm(void *p) {
  struct gemm_case *c = p;
  gemm(c->ta, c->tb, c->M, c->N, c->K, 1.0f, c->A, c->B, 1.0f, c->C);
}

struct layer {
  int B, I, O;
  float *x, *W, *b, *y, *dy, *dx, *dW, *db;
};

static void run_fwd(void *p) {
  struct layer *l = p;
  nn_linear_forward(l->x, l->W, l->b, l->y, l->B, l->I, l->O);
  nn_relu_forward(l->y, l->y, (size_t)l->B * l->O);
}

static void run_bwd(void *p) {
  struct layer *l = p;
  size_t n = (size_t)l->B * l->O;
  float *dz = l->dx + (size_t)l->B * l->I; // scratch after dx, (B,O)
  memset(dz, 0, sizeof(float) * n);
  nn_relu_backward(l->y, l->dy, dz, n);
  nn_linear_backward(l->x, l->W, dz, l->dx, l->dW, l->db, l->B, l->I, l->O);
}

struct ew {
  int B, H;
  float *x, *y, *g, *b, *mean, *rstd, *dy, *dx, *dg, *db;
  int which;
};

static void run_ew(void *p) {
  struct ew *e = p;
  size_t n = (size_t)e->B * e->H;
  switch (e->which) {
  case 0:
    nn_layernorm_forward(e->x, e->g, e->b, e->y, e->mean, e->rstd, e->B, e->H,
                         1e-5f);
    break;
  case 1:
    nn_layernorm_backward(e->x, e->g, e->mean, e->rstd, e->dy, e->dx, e->dg,
                          e->db, e->B, e->H);
    break;
  case 2:
    nn_dropout_forward(e->x, e->y, n, 0.2f, 1, 2);
    break;
  case 3:
    nn_relu_forward(e->x, e->y, n);
    break;
  case 4:
    nn_sigmoid_forward(e->x, e->y, n);
    break;
  case 5:
    nn_mul_forward(e->x, e->g, e->y, n);
    break;
  }
}

int main(int argc, char **argv) {
  if (argc > 1)
    g_secs = atof(argv[1]);
  if (!(g_secs > 0)) {
    fprintf(stderr, "usage: bench_ops [seconds_per_case > 0]\n");
    return 2;
  }
  const int Bt = 4096;
  const int shapes[][2] = {{624, 400}, {400, 400}, {400, 1}, {624, 1024}};
  double roof[2][4] = {{0}}; // forward sgemm GFLOP/s per threads, shape

  printf("# 1. sgemm, batch %d (GFLOP/s; 2*M*N*K per call)\n", Bt);
  printf("%-10s %-6s %-26s %8s %8s\n", "I->O", "op", "gemm(M,N,K)", "1 thr",
         "2 thr");
  for (size_t s = 0; s < ARRAY_LEN(shapes); s++) {
    int I = shapes[s][0], O = shapes[s][1];
    float *x = randbuf((size_t)Bt * I, 1), *W = randbuf((size_t)O * I, 2);
    float *y = randbuf((size_t)Bt * O, 3), *dx = randbuf((size_t)Bt * I, 4);
    float *dW = randbuf((size_t)O * I, 5);
    struct gemm_case cs[3] = {
        {false, true, Bt, O, I, "fwd", x, W, y},  // y = x W^T
        {false, false, Bt, I, O, "dx", y, W, dx}, // dx += dy W
        {true, false, O, I, Bt, "dW", y, x, dW},  // dW += dy^T x
    };
    for (int k = 0; k < 3; k++) {
      double gf[2];
      for (int t = 1; t <= 2; t++) {
        gemm_set_threads(t);
        double sec = per_call(run_gemm, &cs[k]);
        gf[t - 1] = 2.0 * cs[k].M * cs[k].N * cs[k].K / sec / 1e9;
        if (k == 0)
          roof[t - 1][s] = gf[t - 1];
      }
      char shape[32], io[16];
      snprintf(shape, sizeof(shape), "(%d,%d,%d)%s%s", cs[k].M, cs[k].N,
               cs[k].K, cs[k].ta ? "T" : "", cs[k].tb ? "T" : "");
      snprintf(io, sizeof(io), "%d->%d", I, O);
      printf("%-10s %-6s %-26s %8.1f %8.1f\n", io, cs[k].what, shape, gf[0],
             gf[1]);
    }
    free(x), free(W), free(y), free(dx), free(dW);
  }

  printf("\n# 2. linear+ReLU, batch %d: GFLOP/s of the products inside "
         "(fwd 2BIO, bwd 4BIO), %% of the fwd sgemm\n",
         Bt);
  printf("%-10s %-4s %10s %10s %7s %12s\n", "I->O", "thr", "fwd GF/s",
         "bwd GF/s", "fwd %", "samples/s");
  for (size_t s = 0; s < 3; s++) {
    struct layer l = {.B = Bt, .I = shapes[s][0], .O = shapes[s][1]};
    size_t nx = (size_t)Bt * l.I, ny = (size_t)Bt * l.O;
    l.x = randbuf(nx, 11), l.W = randbuf((size_t)l.O * l.I, 12);
    l.b = randbuf(l.O, 13), l.y = randbuf(ny, 14), l.dy = randbuf(ny, 15);
    l.dx = randbuf(nx + ny, 16), l.dW = randbuf((size_t)l.O * l.I, 17);
    l.db = randbuf(l.O, 18);
    for (int t = 1; t <= 2; t++) {
      gemm_set_threads(t);
      double f = per_call(run_fwd, &l), b = per_call(run_bwd, &l);
      double flop = 2.0 * Bt * l.I * l.O;
      char io[16];
      snprintf(io, sizeof(io), "%d->%d", l.I, l.O);
      printf("%-10s %-4d %10.1f %10.1f %6.0f%% %12.0f\n", io, t, flop / f / 1e9,
             2 * flop / b / 1e9, 100.0 * flop / f / 1e9 / roof[t - 1][s],
             Bt / (f + b));
    }
    free(l.x), free(l.W), free(l.b), free(l.y), free(l.dy), free(l.dx);
    free(l.dW), free(l.db);
  }

  printf("\n# 3. memory-bound ops on (%d, 400), 1 thread (Gfloat/s "
         "processed, by this thread's CPU time)\n",
         Bt);
  const char *names[] = {"layernorm fwd", "layernorm bwd", "dropout fwd",
                         "relu fwd",      "sigmoid fwd",   "mul fwd"};
  struct ew e = {.B = Bt, .H = 400};
  size_t n = (size_t)Bt * 400;
  e.x = randbuf(n, 21), e.y = randbuf(n, 22), e.dy = randbuf(n, 23);
  e.dx = randbuf(n, 24), e.g = randbuf(n, 25), e.b = randbuf(400, 26);
  e.mean = randbuf(Bt, 27), e.rstd = randbuf(Bt, 28);
  e.dg = randbuf(400, 29), e.db = randbuf(400, 30);
  run_ew(&e); // layernorm forward fills mean/rstd for the backward
  for (e.which = 0; e.which < (int)ARRAY_LEN(names); e.which++) {
    double sec = per_call_on(run_ew, &e, thread_cpu_sec);
    printf("%-16s %8.2f Gfloat/s  %8.3f ms\n", names[e.which], n / sec / 1e9,
           sec * 1e3);
  }
  free(e.x), free(e.y), free(e.dy), free(e.dx), free(e.g), free(e.b);
  free(e.mean), free(e.rstd), free(e.dg), free(e.db);
  return 0;
}
