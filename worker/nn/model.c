/* model: the table of model kinds, options, and the checks every kind
 * shares; the models themselves are model_<kind>.c (see model_impl.h). */
#include "worker/nn/model.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "common/config.h"
#include "worker/nn/gemm.h"
#include "worker/nn/model_impl.h"
#include "worker/nn/params.h"

/* A slice's replica: the kind's state for Bmax / T rows, registered in its
 * own params set (values shared with the model's, gradients its own), run
 * by its own thread. */
struct replica {
  struct model *m;
  int idx;          /* slice 1..T-1; slice 0 is the caller's */
  void *self;       /* the kind's state */
  struct params *p; /* the replica's tensors: values borrowed */
  size_t base;      /* where they sit in the caller's flat buffers */
  pthread_t thread;
};

enum job { JOB_FORWARD, JOB_BACKWARD };

struct model {
  const struct model_impl *impl; /* the kind's functions */
  void *self;                    /* the kind's state (slice 0, or all) */
  int Bmax;                      /* rows forward/backward accept */
  int lastB;                     /* rows of the last forward; 0 = none */
  int S;                         /* slices of the last forward (1 = one
                                    pass); backward uses the same */
  int F, D;                      /* E is (B, F*D), w is (B, F) */
  struct params *params;         /* the caller's set (slice 0's) */
  int T;                         /* slices at most; 1 = never split */
  struct replica *reps;          /* [T - 1] */
  /* the hand-off, under mu: the caller fills the job, bumps gen and waits
   * until pending (replicas still on this job) falls to 0 */
  pthread_mutex_t mu;
  pthread_cond_t go, done;
  uint64_t gen;
  int pending;
  bool quit;
  enum job job;
  const float *E, *w, *dlogits;
  float *logits, *dE, *dw;
  int B;
  bool train;
};

/* Names of every kind, as the config and the fixtures spell them. */
static const char *const kind_names[MODEL_KIND_COUNT_] = {
    [MODEL_LR] = "lr",
    [MODEL_FM] = "fm",
    [MODEL_DNN] = "dnn",
    [MODEL_DEEPFM] = "deepfm",
    [MODEL_DCN] = "dcn",
    [MODEL_DCNV2] = "dcnv2",
    [MODEL_EDCN] = "edcn",
    [MODEL_SERMASKNET] = "sermasknet",
    [MODEL_PARAMASKNET] = "paramasknet",
    [MODEL_MASKFUSION] = "maskfusion",
};

/* The kinds built so far; NULL = named but not implemented yet. */
static const struct model_impl *const impls[MODEL_KIND_COUNT_] = {
    [MODEL_LR] = &model_impl_lr,
    [MODEL_FM] = &model_impl_fm,
    [MODEL_DNN] = &model_impl_dnn,
    [MODEL_DEEPFM] = &model_impl_deepfm,
    [MODEL_DCN] = &model_impl_dcn,
    [MODEL_DCNV2] = &model_impl_dcnv2,
    [MODEL_EDCN] = &model_impl_edcn,
    [MODEL_SERMASKNET] = &model_impl_sermasknet,
    [MODEL_PARAMASKNET] = &model_impl_paramasknet,
    [MODEL_MASKFUSION] = &model_impl_maskfusion,
};

const char *model_kind_name(enum model_kind k) {
  if ((int)k < 0 || k >= MODEL_KIND_COUNT_)
    return "?";
  return kind_names[k];
}

int model_kind_parse(const char *name) {
  for (int k = 0; name && k < MODEL_KIND_COUNT_; k++)
    if (strcmp(name, kind_names[k]) == 0)
      return k;
  return -1;
}

void model_options_default(struct model_options *o, enum model_kind kind) {
  // The defaults of the config schema (common/config.c), so a model built
  // from defaults is the one a default config builds.
  memset(o, 0, sizeof(*o));
  o->kind = kind;
  o->nhidden = 3;
  for (int i = 0; i < o->nhidden; i++)
    o->hidden[i] = 400;
  o->dropout = 0;
  o->dropout_seed = 2024;
  o->threads = 1;
  o->cross_layers = 3;
  o->dcnv2_structure = MODEL_PARALLEL;
  o->low_rank = 0;
  o->num_experts = 1;
  o->bridge = MODEL_BRIDGE_HADAMARD;
  o->temperature = 1;
  o->cross_residual = true;
  o->num_blocks = 3;
  for (int i = 0; i < MODEL_MAX_LAYERS; i++)
    o->block_dim[i] = 64;
  o->reduction_ratio = 1;
  o->emb_layernorm = true;
  o->net_layernorm = true;
  o->nctrl = 1;
  o->ctrl_hidden[0] = 64;
  o->instance_norm = true;
}

int model_options_from_config(struct model_options *o, const struct config *cfg,
                              char *err, size_t errlen) {
  const struct config_model *c = &cfg->model;
  // config_model_name lists the kinds in the same order, but map by name so
  // a reordering of either enum cannot silently build another model.
  static const struct {
    enum config_model_name c;
    enum model_kind k;
  } kinds[] = {
      {CONFIG_MODEL_LR, MODEL_LR},
      {CONFIG_MODEL_FM, MODEL_FM},
      {CONFIG_MODEL_DNN, MODEL_DNN},
      {CONFIG_MODEL_DEEPFM, MODEL_DEEPFM},
      {CONFIG_MODEL_DCN, MODEL_DCN},
      {CONFIG_MODEL_DCNV2, MODEL_DCNV2},
      {CONFIG_MODEL_EDCN, MODEL_EDCN},
      {CONFIG_MODEL_SERMASKNET, MODEL_SERMASKNET},
      {CONFIG_MODEL_PARAMASKNET, MODEL_PARAMASKNET},
      {CONFIG_MODEL_MASKFUSION, MODEL_MASKFUSION},
  };
  int kind = -1;
  for (size_t i = 0; i < ARRAY_LEN(kinds); i++)
    if (kinds[i].c == c->name)
      kind = (int)kinds[i].k;
  if (kind < 0) {
    snprintf(err, errlen, "model.name: unknown model number %d", (int)c->name);
    return -1;
  }
  model_options_default(o, (enum model_kind)kind);
  const char *name = kind_names[kind];
  if (c->hidden_units.n > MODEL_MAX_LAYERS) {
    snprintf(err, errlen,
             "model.hidden_units: %zu layers, at most %d are supported",
             c->hidden_units.n, MODEL_MAX_LAYERS);
    return -1;
  }
  o->nhidden = (int)c->hidden_units.n;
  for (size_t i = 0; i < c->hidden_units.n; i++) {
    int64_t h = c->hidden_units.v[i];
    if (h < 1 || h > (1 << 20)) {
      snprintf(err, errlen,
               "model.hidden_units[%zu]: %lld is out of range "
               "(expected 1..%d)",
               i, (long long)h, 1 << 20);
      return -1;
    }
    o->hidden[i] = (int)h;
  }
  if (c->activation != CONFIG_ACT_RELU) {
    snprintf(err, errlen,
             "model.activation: only relu is implemented (model %s)", name);
    return -1;
  }
  if (c->use_bn && kind != MODEL_EDCN && kind != MODEL_DNN &&
      kind != MODEL_DEEPFM && kind != MODEL_DCN && kind != MODEL_DCNV2) {
    snprintf(err, errlen,
             "model.use_bn: batch norm is implemented for dnn, deepfm, dcn "
             "and dcnv2 (their MLP's hidden layers) and edcn (its regulation "
             "outputs), not for model %s; set it to false",
             name);
    return -1;
  }
  o->use_bn = c->use_bn;
  o->dropout = (float)c->dropout;
  o->dropout_seed = (uint64_t)cfg->train.seed;
  // train.threads 0 = one per CPU this process may run on (cpusets,
  // taskset), not the machine's count
  cpu_set_t cpus;
  int cores =
      sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
  o->threads = cfg->train.threads > 0 ? (int)cfg->train.threads
               : cores > 0            ? cores
                                      : 1;
  if (o->threads > MODEL_MAX_THREADS) // only from counting a huge machine's
    o->threads = MODEL_MAX_THREADS;   // CPUs: the config caps train.threads
  if (c->cross_layers > MODEL_MAX_LAYERS) {
    snprintf(err, errlen, "model.cross_layers: %lld, at most %d are supported",
             (long long)c->cross_layers, MODEL_MAX_LAYERS);
    return -1;
  }
  o->cross_layers = (int)c->cross_layers;
  switch (c->dcnv2_structure) {
  case CONFIG_DCNV2_CROSSNET_ONLY:
    o->dcnv2_structure = MODEL_CROSSNET_ONLY;
    break;
  case CONFIG_DCNV2_STACKED:
    o->dcnv2_structure = MODEL_STACKED;
    break;
  case CONFIG_DCNV2_PARALLEL:
    o->dcnv2_structure = MODEL_PARALLEL;
    break;
  }
  o->low_rank = (int)c->low_rank;
  o->num_experts = (int)c->num_experts;
  switch (c->bridge) {
  case CONFIG_BRIDGE_HADAMARD:
    o->bridge = MODEL_BRIDGE_HADAMARD;
    break;
  case CONFIG_BRIDGE_ADD:
    o->bridge = MODEL_BRIDGE_ADD;
    break;
  case CONFIG_BRIDGE_CONCAT:
    o->bridge = MODEL_BRIDGE_CONCAT;
    break;
  }
  o->temperature = (float)c->temperature;
  o->cross_residual = c->cross_residual;
  if (c->num_blocks > MODEL_MAX_LAYERS) {
    snprintf(err, errlen, "model.num_blocks: %lld, at most %d are supported",
             (long long)c->num_blocks, MODEL_MAX_LAYERS);
    return -1;
  }
  o->num_blocks = (int)c->num_blocks;
  if (c->block_dims.n && (int64_t)c->block_dims.n != c->num_blocks) {
    snprintf(err, errlen,
             "model.block_dims: %zu widths for model.num_blocks %lld (give "
             "one per block, or none to use model.block_dim for all)",
             c->block_dims.n, (long long)c->num_blocks);
    return -1;
  }
  for (int i = 0; i < MODEL_MAX_LAYERS; i++)
    o->block_dim[i] =
        (int)(i < (int)c->block_dims.n ? c->block_dims.v[i] : c->block_dim);
  o->reduction_ratio = (float)c->reduction_ratio;
  o->emb_layernorm = c->emb_layernorm;
  o->net_layernorm = c->net_layernorm;
  if (c->controller_units.n > MODEL_MAX_LAYERS) {
    snprintf(err, errlen,
             "model.controller_units: %zu layers, at most %d are supported",
             c->controller_units.n, MODEL_MAX_LAYERS);
    return -1;
  }
  o->nctrl = (int)c->controller_units.n;
  for (size_t i = 0; i < c->controller_units.n; i++)
    o->ctrl_hidden[i] = (int)c->controller_units.v[i];
  o->instance_norm = c->instance_norm;
  return 0;
}

/* Slices a batch of B rows is split into: as many as the model has (T),
 * but never fewer than MODEL_SPLIT_MIN_ROWS rows each; 1 = one pass. */
static int slices_for(const struct model *m, int B) {
  int S = B / MODEL_SPLIT_MIN_ROWS;
  return S < 1 ? 1 : S > m->T ? m->T : S;
}

/* Runs the current job on slice k (rows [B k / S, B (k+1) / S)) with the
 * kind's state self, whose gradients are in p. */
static void run_slice(struct model *m, int k, void *self, struct params *p) {
  int r0 = (int)((int64_t)m->B * k / m->S);
  int r1 = (int)((int64_t)m->B * (k + 1) / m->S);
  size_t e = (size_t)r0 * (size_t)m->F * (size_t)m->D, f = (size_t)r0 * m->F;
  if (m->job == JOB_FORWARD) {
    m->impl->forward(self, m->E + e, m->w ? m->w + f : NULL, m->logits + r0,
                     r1 - r0, m->train);
    return;
  }
  if (p != m->params) // a replica's gradients are this pass's alone
    memset(p->grads, 0, p->len * sizeof(float));
  m->impl->backward(self, m->dlogits + r0, m->dE ? m->dE + e : NULL,
                    m->dw ? m->dw + f : NULL, r1 - r0);
}

static void *replica_main(void *arg) {
  struct replica *r = arg;
  struct model *m = r->m;
  uint64_t seen = 0;
  pthread_mutex_lock(&m->mu);
  for (;;) {
    while (m->gen == seen && !m->quit)
      pthread_cond_wait(&m->go, &m->mu);
    if (m->quit)
      break;
    seen = m->gen;
    if (r->idx >= m->S) // this batch has fewer slices than we are
      continue;
    pthread_mutex_unlock(&m->mu);
    run_slice(m, r->idx, r->self, r->p);
    pthread_mutex_lock(&m->mu);
    if (--m->pending == 0)
      pthread_cond_signal(&m->done);
  }
  pthread_mutex_unlock(&m->mu);
  return NULL;
}

/* One job over the S slices of the batch: replicas 1..S-1 on their
 * threads, slice 0 here, OpenBLAS at one thread meanwhile (the slices
 * already use the cores). */
static void run_split(struct model *m) {
  CHECK(m->params->values, "model %s: params_alloc before forward",
        m->impl->name);
  for (int i = 0; i < m->T - 1; i++) {
    struct replica *r = &m->reps[i];
    if (!r->p->values) // the caller allocates params after model_new
      r->base = params_alloc_shared(r->p, m->params);
    CHECK(r->p->values == m->params->values + r->base,
          "model %s: the parameter buffer moved", m->impl->name);
  }
  int blas = gemm_threads();
  if (blas != 1)
    gemm_set_threads(1);
  pthread_mutex_lock(&m->mu);
  m->pending = m->S - 1;
  m->gen++;
  pthread_cond_broadcast(&m->go);
  pthread_mutex_unlock(&m->mu);
  run_slice(m, 0, m->self, m->params);
  pthread_mutex_lock(&m->mu);
  while (m->pending > 0)
    pthread_cond_wait(&m->done, &m->mu);
  pthread_mutex_unlock(&m->mu);
  if (blas != 1)
    gemm_set_threads(blas);
}

/* Stops and frees the first n replicas (their threads started). */
static void stop_replicas(struct model *m, int n) {
  pthread_mutex_lock(&m->mu);
  m->quit = true;
  pthread_cond_broadcast(&m->go);
  pthread_mutex_unlock(&m->mu);
  for (int i = 0; i < n; i++)
    CHECK(pthread_join(m->reps[i].thread, NULL) == 0, "join");
}

static void free_replicas(struct model *m, int n) {
  for (int i = 0; i < n; i++) {
    if (m->reps[i].self)
      m->impl->free(m->reps[i].self);
    params_free(m->reps[i].p);
  }
  free(m->reps);
  m->reps = NULL;
}

/* Builds the T - 1 replicas and their threads. 0, or -1 with err set (a
 * thread that cannot start is an outside fault: a process or container
 * limit). */
static int start_replicas(struct model *m, const struct model_options *o, int T,
                          char *err, size_t errlen) {
  // A full batch's slices have ceil(Bmax / T) rows; a smaller batch cut
  // into S < T slices (B < (S + 1) x MODEL_SPLIT_MIN_ROWS) has fewer than
  // 2 x MODEL_SPLIT_MIN_ROWS rows per slice.
  int Brep = (m->Bmax + T - 1) / T;
  if (Brep < 2 * MODEL_SPLIT_MIN_ROWS)
    Brep =
        2 * MODEL_SPLIT_MIN_ROWS < m->Bmax ? 2 * MODEL_SPLIT_MIN_ROWS : m->Bmax;
  m->reps = xcalloc((size_t)T - 1, sizeof(*m->reps));
  for (int i = 0; i < T - 1; i++) {
    struct replica *r = &m->reps[i];
    r->m = m;
    r->idx = i + 1;
    r->p = params_new();
    r->self = m->impl->init(o, m->F, m->D, Brep, r->p, err, errlen);
    if (!r->self) { // cannot happen after slice 0's init succeeded
      free_replicas(m, i + 1);
      return -1;
    }
  }
  CHECK(pthread_mutex_init(&m->mu, NULL) == 0, "mutex");
  CHECK(pthread_cond_init(&m->go, NULL) == 0, "cond");
  CHECK(pthread_cond_init(&m->done, NULL) == 0, "cond");
  m->T = T;
  for (int i = 0; i < T - 1; i++) {
    int rc =
        pthread_create(&m->reps[i].thread, NULL, replica_main, &m->reps[i]);
    if (rc) {
      snprintf(err, errlen,
               "model %s: cannot start compute thread %d of %d: %s (lower "
               "train.threads)",
               m->impl->name, i + 2, T, strerror(rc));
      stop_replicas(m, i);
      free_replicas(m, T - 1);
      pthread_cond_destroy(&m->go);
      pthread_cond_destroy(&m->done);
      pthread_mutex_destroy(&m->mu);
      m->T = 1;
      return -1;
    }
  }
  return 0;
}

int model_threads(const struct model *m) {
  return m->T;
}

struct model *model_new(const struct model_options *o, int F, int D, int Bmax,
                        struct params *params, char *err, size_t errlen) {
  CHECK(params && params->values == NULL,
        "model_new needs a params set that is not allocated yet");
  if ((int)o->kind < 0 || o->kind >= MODEL_KIND_COUNT_) {
    snprintf(err, errlen, "model: unknown kind %d", (int)o->kind);
    return NULL;
  }
  const char *name = kind_names[o->kind];
  const struct model_impl *impl = impls[o->kind];
  if (!impl) {
    snprintf(err, errlen, "model %s: not implemented in this build", name);
    return NULL;
  }
  if (F < 1 || D < 1 || Bmax < 1) {
    snprintf(err, errlen,
             "model %s: needs F >= 1 fields, D >= 1 floats per embedding and "
             "a batch of Bmax >= 1 rows (got F %d, D %d, Bmax %d)",
             name, F, D, Bmax);
    return NULL;
  }
  if (o->nhidden < 0 || o->nhidden > MODEL_MAX_LAYERS) {
    snprintf(err, errlen, "model %s: %d hidden layers (expected 0..%d)", name,
             o->nhidden, MODEL_MAX_LAYERS);
    return NULL;
  }
  for (int i = 0; i < o->nhidden; i++)
    if (o->hidden[i] < 1) {
      snprintf(err, errlen, "model %s: hidden layer %d has width %d", name, i,
               o->hidden[i]);
      return NULL;
    }
  if (o->kind == MODEL_MASKFUSION) {
    if (o->nctrl < 0 || o->nctrl > MODEL_MAX_LAYERS) {
      snprintf(err, errlen, "model %s: %d controller layers (expected 0..%d)",
               name, o->nctrl, MODEL_MAX_LAYERS);
      return NULL;
    }
    for (int i = 0; i < o->nctrl; i++)
      if (o->ctrl_hidden[i] < 1) {
        snprintf(err, errlen, "model %s: controller layer %d has width %d",
                 name, i, o->ctrl_hidden[i]);
        return NULL;
      }
  }
  if (!(o->dropout >= 0 && o->dropout < 1)) {
    snprintf(err, errlen, "model %s: dropout %g is not in [0, 1)", name,
             (double)o->dropout);
    return NULL;
  }
  if (o->threads < 0 || o->threads > MODEL_MAX_THREADS) {
    snprintf(err, errlen, "model %s: %d threads (expected 0..%d)", name,
             o->threads, MODEL_MAX_THREADS);
    return NULL;
  }
  void *self = impl->init(o, F, D, Bmax, params, err, errlen);
  if (!self)
    return NULL;
  struct model *m = xcalloc(1, sizeof(*m));
  m->impl = impl;
  m->self = self;
  m->Bmax = Bmax;
  m->F = F;
  m->D = D;
  m->params = params;
  m->T = 1;
  // Rows coupled by BatchNorm's batch statistics or by dropout's
  // row-indexed mask must stay in one pass (model.h "Threads").
  bool splittable = !o->use_bn && o->dropout == 0;
  // as many slices as threads, but each at least MODEL_SPLIT_MIN_ROWS rows
  int T = o->threads < Bmax / MODEL_SPLIT_MIN_ROWS
              ? o->threads
              : Bmax / MODEL_SPLIT_MIN_ROWS;
  if (T > 1 && splittable && start_replicas(m, o, T, err, errlen)) {
    model_free(m);
    return NULL;
  }
  return m;
}

void model_free(struct model *m) {
  if (!m)
    return;
  if (m->T > 1) {
    stop_replicas(m, m->T - 1);
    free_replicas(m, m->T - 1);
    pthread_cond_destroy(&m->go);
    pthread_cond_destroy(&m->done);
    pthread_mutex_destroy(&m->mu);
  }
  m->impl->free(m->self);
  free(m);
}

bool model_uses_lr_weights(const struct model *m) {
  return m->impl->uses_lr_weights;
}

void model_forward(struct model *m, const float *E, const float *w,
                   float *logits, int B, bool train) {
  CHECK(B >= 1 && B <= m->Bmax, "B %d Bmax %d", B, m->Bmax);
  CHECK(logits, "model %s: logits is required", m->impl->name);
  CHECK(!m->impl->uses_lr_weights || w, "model %s needs w (B, F)",
        m->impl->name);
  m->lastB = B;
  m->S = slices_for(m, B);
  if (m->S == 1) {
    m->impl->forward(m->self, E, w, logits, B, train);
    return;
  }
  m->job = JOB_FORWARD;
  m->E = E;
  m->w = w;
  m->logits = logits;
  m->B = B;
  m->train = train;
  run_split(m);
}

void model_backward(struct model *m, const float *dlogits, float *dE, float *dw,
                    int B) {
  CHECK(B == m->lastB, "backward of %d rows after a forward of %d", B,
        m->lastB);
  CHECK(dlogits, "model %s: dlogits is required", m->impl->name);
  if (m->S == 1) {
    m->impl->backward(m->self, dlogits, dE, dw, B);
    return;
  }
  m->job = JOB_BACKWARD;
  m->dlogits = dlogits;
  m->dE = dE;
  m->dw = dw;
  m->B = B;
  run_split(m);
  // The replicas' gradients into the caller's: summed in slice order, so
  // the result does not depend on which thread finished first.
  for (int i = 0; i < m->S - 1; i++) {
    const struct replica *r = &m->reps[i];
    float *g = m->params->grads + r->base;
    const float *gr = r->p->grads;
    for (size_t j = 0; j < r->p->len; j++)
      g[j] += gr[j];
  }
}

double model_flops_per_example(const struct model *m) {
  return m->impl->flops(m->self);
}
