/* bench_models: training throughput of maskps's dense models, and how close
 * it comes to the machine's sgemm on the same matrix products.
 *
 *   bench_models [-m dnn,dcnv2,...] [-b 4096,2048] [-t 1,2] [-s seconds]
 *                [-r rounds]
 *   bench_models -i      (one round per stdin line "model batch threads
 *                         seconds": bench/torch_models.py drives it)
 *
 * Models (Criteo shape: F = 39 fields, D = 16, so C = 624 inputs):
 *   dnn          DNN 400x3 (+ the 1-wide logit layer)
 *   dcnv2        DCNv2, full-rank cross network of 3 layers in PARALLEL with
 *                a DNN 400x3, fc on [cross; deep]
 *   edcn         EDCN, 3 layers, Hadamard bridge, tau 1, cross residual kept
 *   sermasknet   SerMaskNet, 3 blocks of 512, reduction ratio 1 (aggregation
 *                width = the block's input width: 624, 512, 512), LayerNorm
 *                on the embeddings and in every block
 *   paramasknet  ParaMaskNet, 3 blocks of 64, reduction ratio 1, both
 *                LayerNorms, head MLP 400x3
 * One step = forward (train mode, no dropout) + logloss + backward (dE
 * included: a worker pushes it) + an Adam step over the flat parameters,
 * exactly what a worker does per batch apart from the embeddings.
 *
 * The roofline: during one step every gemm() call of the model is recorded
 * (the link wraps gemm, see models.cmake); replaying that list of products
 * alone, on the same threads, is what sgemm reaches on the model's own
 * shapes. Rounds of model steps and rounds of the replay alternate, so the
 * load of the shared machine hits both alike; the medians over rounds are
 * reported. roof = replay time / step time = (GEMM flops per sample x
 * samples/s) / the replay's GFLOP/s. The replay reuses one set of operand
 * buffers, which keeps them warmer in cache than the model's activations
 * are: if anything it flatters sgemm, so roof is not overstated.
 *
 * MASKPS_BENCH_NOSPLIT=1 times the one-pass model (OpenBLAS threads only)
 * instead of the batch split over threads (model.h "Threads"): the A/B.
 *
 * Output: one tab-separated line per (model, batch, threads), after a
 * header line starting with '#' (bench/run_models.sh reads it):
 *   model batch threads samples/s step_ms gemm_mflop/sample sgemm_gflops
 *   roof rounds
 * Exit status 2 on a usage error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/keys.h"
#include "worker/nn/gemm.h"
#include "worker/nn/model.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

#define F_FIELDS 39
#define D_EMB 16
#define MAX_CALLS 256
#define MAX_ROUNDS 64

/* ---- gemm recording (GNU ld --wrap=gemm: the models' calls land here) ---- */

void __real_gemm(bool ta, bool tb, int M, int N, int K, float alpha,
                 const float *A, const float *B, float beta, float *C);
void __wrap_gemm(bool ta, bool tb, int M, int N, int K, float alpha,
                 const float *A, const float *B, float beta, float *C);

struct call {
  bool ta, tb;
  int M, N, K;
  float alpha, beta;
};

static bool g_recording;
static struct call g_calls[MAX_CALLS];
static int g_ncalls;

void __wrap_gemm(bool ta, bool tb, int M, int N, int K, float alpha,
                 const float *A, const float *B, float beta, float *C) {
  if (g_recording) {
    CHECK(g_ncalls < MAX_CALLS, "more than %d gemm calls in one step",
          MAX_CALLS);
    g_calls[g_ncalls++] = (struct call){ta, tb, M, N, K, alpha, beta};
  }
  __real_gemm(ta, tb, M, N, K, alpha, A, B, beta, C);
}

/* ---- helpers ---- */

static float *randbuf(size_t n, uint64_t seed, float scale) {
  float *x = xaligned(sizeof(float) * (n ? n : 1));
  for (size_t i = 0; i < n; i++)
    x[i] =
        scale * (float)((double)(keys_mix64(seed + i) >> 40) / (1 << 23) - 1.0);
  return x;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Parses "a,b,c" of positive ints into v (at most cap). Returns the count,
 * 0 on a malformed list. */
static int parse_ints(const char *s, int *v, int cap) {
  int n = 0;
  while (*s) {
    char *end;
    long x = strtol(s, &end, 10);
    if (end == s || x < 1 || x > (1 << 20) || n == cap)
      return 0;
    v[n++] = (int)x;
    s = end;
    if (*s == ',')
      s++;
    else if (*s)
      return 0;
  }
  return n;
}

/* The benchmark's configuration of a model kind (see the opening block). */
static bool bench_options(struct model_options *o, const char *name) {
  int k = model_kind_parse(name);
  if (k < 0)
    return false;
  model_options_default(o, (enum model_kind)k);
  o->dropout = 0;
  o->nhidden = 3;
  for (int i = 0; i < 3; i++)
    o->hidden[i] = 400;
  switch (k) {
  case MODEL_DNN:
    return true;
  case MODEL_DCNV2:
    o->cross_layers = 3;
    o->dcnv2_structure = MODEL_PARALLEL;
    o->low_rank = 0;
    return true;
  case MODEL_EDCN:
    o->cross_layers = 3;
    o->bridge = MODEL_BRIDGE_HADAMARD;
    o->temperature = 1;
    o->cross_residual = true;
    return true;
  case MODEL_SERMASKNET:
  case MODEL_PARAMASKNET:
    o->num_blocks = 3;
    for (int i = 0; i < 3; i++)
      o->block_dim[i] = k == MODEL_SERMASKNET ? 512 : 64;
    o->reduction_ratio = 1;
    o->emb_layernorm = o->net_layernorm = true;
    return true;
  default:
    return false;
  }
}

/* ---- one training step ---- */

struct run {
  struct params *p; /* the model timed now: m1 or mT */
  struct model *m;
  struct params *p1, *pT;
  struct model *m1; /* threads 1: the one the products are recorded from */
  struct model *mT; /* options.threads = T (its batches split over T) */
  int T;
  struct params_adam adam;
  int B, C;
  float *E, *y, *logits, *dlogits, *dE;
  double loss; /* of the last step, so the work is not optimised away */
};

static void step(struct run *r) {
  params_zero_grad(r->p);
  model_forward(r->m, r->E, NULL, r->logits, r->B, true);
  r->loss = nn_logloss_forward(r->logits, r->y, r->B);
  memset(r->dlogits, 0, sizeof(float) * (size_t)r->B);
  nn_logloss_backward(r->logits, r->y, r->dlogits, r->B, 1.0f);
  memset(r->dE, 0, sizeof(float) * (size_t)r->B * r->C);
  model_backward(r->m, r->dlogits, r->dE, NULL, r->B);
  params_adam_step(r->p, &r->adam);
}

/* The recorded products on scratch operands. */
struct replay {
  int n;
  struct call c[MAX_CALLS];
  float *A, *B, *C;
};

static void replay(const struct replay *rp) {
  for (int i = 0; i < rp->n; i++) {
    const struct call *c = &rp->c[i];
    __real_gemm(c->ta, c->tb, c->M, c->N, c->K, c->alpha, rp->A, rp->B, c->beta,
                rp->C);
  }
}

/* Seconds per call of the step (model) or the replay, over >= secs. */
static double time_round(struct run *r, const struct replay *rp, double secs) {
  int n = 0;
  double t0 = clock_sec(), t;
  do {
    if (rp)
      replay(rp);
    else
      step(r);
    n++;
    t = clock_sec();
  } while (t - t0 < secs);
  return (t - t0) / n;
}

/* One model at one batch size, built and recorded, ready to time. */
struct bench {
  char name[32];
  struct model_options o;
  struct run r;
  struct replay rp;
  double gflop; /* of the products of one step */
  int threads;  /* OpenBLAS threads it was last warmed up with */
};

static void bench_free(struct bench *b) {
  if (!b)
    return;
  free(b->rp.A), free(b->rp.B), free(b->rp.C);
  free(b->r.E), free(b->r.y), free(b->r.logits), free(b->r.dlogits);
  free(b->r.dE);
  model_free(b->r.m1);
  params_free(b->r.p1);
  model_free(b->r.mT);
  params_free(b->r.pT);
  free(b);
}

/* Builds model name for batches of B rows and records the products of one
 * step. NULL with a message on stderr for an unknown name. */
static struct bench *bench_new(const char *name, int B) {
  struct model_options o;
  if (!bench_options(&o, name)) {
    fprintf(stderr,
            "bench_models: unknown model '%s' (dnn, dcnv2, edcn, sermasknet, "
            "paramasknet)\n",
            name);
    return NULL;
  }
  struct bench *b = xcalloc(1, sizeof(*b));
  snprintf(b->name, sizeof(b->name), "%s", name);
  struct run *r = &b->r;
  char err[256];
  r->B = B;
  r->C = F_FIELDS * D_EMB;
  b->o = o;
  r->p = r->p1 = params_new();
  r->m = r->m1 = model_new(&o, F_FIELDS, D_EMB, B, r->p, err, sizeof(err));
  if (!r->m) {
    fprintf(stderr, "bench_models: %s\n", err);
    bench_free(b);
    return NULL;
  }
  params_alloc(r->p, 7);
  r->adam = params_adam_default(1e-4f);
  r->E = randbuf((size_t)B * r->C, 1, 0.05f); // embeddings ~ their init scale
  r->y = xaligned(sizeof(float) * (size_t)B);
  for (int i = 0; i < B; i++)
    r->y[i] = (float)(keys_mix64(99 + (uint64_t)i) % 4 == 0); // ~25% clicks
  r->logits = xaligned(sizeof(float) * (size_t)B);
  r->dlogits = xaligned(sizeof(float) * (size_t)B);
  r->dE = xaligned(sizeof(float) * (size_t)B * r->C);

  // Record one step's products (also a warm-up: page faults).
  g_ncalls = 0;
  g_recording = true;
  step(r);
  g_recording = false;
  struct replay *rp = &b->rp;
  rp->n = g_ncalls;
  memcpy(rp->c, g_calls, sizeof(struct call) * (size_t)g_ncalls);
  size_t na = 1, nb = 1, nc = 1;
  for (int i = 0; i < rp->n; i++) {
    const struct call *c = &rp->c[i];
    size_t a = (size_t)c->M * c->K, bb = (size_t)c->K * c->N,
           cc = (size_t)c->M * c->N;
    na = a > na ? a : na;
    nb = bb > nb ? bb : nb;
    nc = cc > nc ? cc : nc;
    b->gflop += 2.0 * c->M * c->N * c->K / 1e9;
  }
  rp->A = randbuf(na, 2, 0.5f);
  rp->B = randbuf(nb, 3, 0.5f);
  rp->C = randbuf(nc, 4, 0.5f);
  // Check against the model's own count: 3 products per layer (y, dx, dW),
  // 6 flops per multiply-add of the forward.
  double model_gf = 6.0 * model_flops_per_example(r->m) * B / 1e9;
  if (b->gflop < 0.9 * model_gf || b->gflop > 1.1 * model_gf)
    fprintf(stderr,
            "bench_models: %s: recorded %.3f GFLOP/step, the model counts "
            "%.3f (non-GEMM products?)\n",
            name, b->gflop, model_gf);
  return b;
}

/* rounds x (>= secs of steps, then >= secs of the replay) on threads;
 * prints the result line. */
static void bench_time(struct bench *b, int threads, double secs, int rounds) {
  gemm_set_threads(threads);
  // The model a worker with train.threads = threads builds: above one
  // thread its batches are split over threads replicas (model.h
  // "Threads"); the replay keeps the full-batch products on OpenBLAS's
  // threads, which is the roofline a split cannot beat.
  struct run *r = &b->r;
  static int nosplit = -1;
  if (nosplit < 0) { // A/B switch: the one-pass model on OpenBLAS threads
    const char *e = getenv("MASKPS_BENCH_NOSPLIT");
    nosplit = e && *e && strcmp(e, "0") != 0;
  }
  if (nosplit)
    threads = threads > 1 ? -threads : threads;
  if (threads < 0) {
    threads = -threads;
    r->m = r->m1;
    r->p = r->p1;
  } else if (threads > 1 && r->T != threads) {
    model_free(r->mT);
    params_free(r->pT);
    struct model_options o = b->o;
    o.threads = threads;
    char err[256];
    r->pT = params_new();
    r->mT = model_new(&o, F_FIELDS, D_EMB, r->B, r->pT, err, sizeof(err));
    CHECK(r->mT, "%s", err);
    params_alloc(r->pT, 7);
    r->T = threads;
    b->threads = 0; // warm up the new model
  }
  if (!nosplit) {
    r->m = threads > 1 ? r->mT : r->m1;
    r->p = threads > 1 ? r->pT : r->p1;
  }
  if (b->threads != threads) { // warm up: OpenBLAS threads, caches
    for (int i = 0; i < 2; i++)
      step(&b->r), replay(&b->rp);
    b->threads = threads;
  }
  double ts[MAX_ROUNDS], tg[MAX_ROUNDS];
  for (int k = 0; k < rounds; k++) {
    ts[k] = time_round(&b->r, NULL, secs);
    tg[k] = time_round(NULL, &b->rp, secs);
  }
  double t_step = median(ts, rounds), t_gemm = median(tg, rounds);
  int B = b->r.B;
  printf("%s\t%d\t%d\t%.0f\t%.2f\t%.3f\t%.1f\t%.3f\t%d\n", b->name, B, threads,
         B / t_step, t_step * 1e3, b->gflop * 1e3 / B, b->gflop / t_gemm,
         t_gemm / t_step, rounds);
  fflush(stdout);
  if (!(b->r.loss == b->r.loss))
    fprintf(stderr, "bench_models: %s: loss is NaN\n", b->name);
}

/* -i: one case per line of stdin, "model batch threads seconds", one
 * round each, the last model kept built while the lines name it: so a
 * driver can alternate these rounds with PyTorch's, seconds apart. */
static int serve(void) {
  struct bench *b = NULL;
  char line[256], name[32];
  int B, t;
  double secs;
  while (fgets(line, sizeof(line), stdin)) {
    if (sscanf(line, "%31s %d %d %lf", name, &B, &t, &secs) != 4 || B < 1 ||
        B > (1 << 20) || t < 1 || t > 64 || !(secs > 0)) {
      fprintf(stderr, "bench_models: bad request '%s'\n", line);
      bench_free(b);
      return 2;
    }
    if (!b || strcmp(b->name, name) != 0 || b->r.B != B) {
      bench_free(b);
      if (!(b = bench_new(name, B)))
        return 1;
    }
    bench_time(b, t, secs, 1);
  }
  bench_free(b);
  return 0;
}

static int usage(void) {
  fprintf(stderr,
          "usage: bench_models [-m dnn,dcnv2,edcn,sermasknet,paramasknet] "
          "[-b 4096,2048] [-t 1,2] [-s seconds_per_round > 0] "
          "[-r rounds 1..%d]\n"
          "       bench_models -i   (requests \"model batch threads "
          "seconds\" on stdin)\n",
          MAX_ROUNDS);
  return 2;
}

int main(int argc, char **argv) {
  const char *models = "dnn,dcnv2,edcn,sermasknet,paramasknet";
  int batches[8] = {4096}, nb = 1, threads[8] = {1, 2}, nt = 2, rounds = 5;
  double secs = 0.5;
  if (argc == 2 && strcmp(argv[1], "-i") == 0)
    return serve();
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v)
      return usage();
    i++;
    if (strcmp(a, "-m") == 0)
      models = v;
    else if (strcmp(a, "-b") == 0)
      nb = parse_ints(v, batches, 8);
    else if (strcmp(a, "-t") == 0)
      nt = parse_ints(v, threads, 8);
    else if (strcmp(a, "-s") == 0)
      secs = atof(v);
    else if (strcmp(a, "-r") == 0)
      rounds = atoi(v);
    else
      return usage();
  }
  if (!nb || !nt || !(secs > 0) || rounds < 1 || rounds > MAX_ROUNDS)
    return usage();
  printf("#model\tbatch\tthreads\tsamples_s\tstep_ms\tgemm_mflop_sample\t"
         "sgemm_gflops\troof\trounds\n");
  char list[512];
  for (int b = 0; b < nb; b++) {
    snprintf(list, sizeof(list), "%s", models); // strtok_r writes into it
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
         name = strtok_r(NULL, ",", &save)) {
      struct bench *bb = bench_new(name, batches[b]);
      if (!bb)
        return 1;
      for (int t = 0; t < nt; t++)
        bench_time(bb, threads[t], secs, rounds);
      bench_free(bb);
    }
  }
  return 0;
}
