/* train: reader -> batch -> pull -> model -> push, evaluation and the
 * plateau schedule. See train.h for the rules; this file is the loop. */
#include "worker/train.h"

#include "common/check.h"
#include "common/config.h"
#include "common/keys.h"
#include "common/logger.h"
#include "worker/batch.h"
#include "worker/eta.h"
#include "worker/nn/amtl.h"
#include "worker/nn/model.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"
#include "worker/reader.h"
#include "worker/shuffle.h"
#include "worker/warm_dense.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- data sources ------------------------------------------------------- */

enum { PART_ALL = -1, PART_TRAIN = 0, PART_VALID = 1, PART_TEST = 2 };

/* A reader and the part of its lines this pass wants. */
struct source {
  struct reader *r;
  int part;                       /* PART_*; ALL = every line */
  double split_valid, split_test; /* held-out fractions of the lines */
  uint64_t split_key;             /* mixed data.split_seed */
  uint64_t max_lines;             /* 0 = all */
  struct shuffle *shuf;           /* data.shuffle_buffer; NULL = file order */
  _Atomic uint64_t taken;         /* examples read this pass (before the
                                   * shuffle; read by the progress line) */
};

/* Which part a training line belongs to: a hash of (line, seed) in [0, 1)
 * against the held-out fractions, so the split does not depend on the
 * content, the epoch or the batch size. */
static int split_part(const struct source *s, uint64_t line) {
  double u = (double)(keys_mix64(line ^ s->split_key) >> 11) * 0x1.0p-53;
  if (u < s->split_test)
    return PART_TEST;
  if (u < s->split_test + s->split_valid)
    return PART_VALID;
  return PART_TRAIN;
}

/* Next example of the source in file order: 1, 0 at the end, -1 on a
 * reader error. */
static int source_read(struct source *s, struct data_example *ex) {
  for (;;) {
    if (s->max_lines && reader_lines(s->r) >= s->max_lines)
      return 0;
    int rc = reader_next(s->r, ex);
    if (rc <= 0)
      return rc;
    if (s->part == PART_ALL)
      break;
    /* reader_next counts every line it reads, of every share */
    if (split_part(s, reader_lines(s->r) - 1) == s->part)
      break;
  }
  /* one writer (the thread reading the pass): no locked add needed */
  atomic_store_explicit(
      &s->taken, atomic_load_explicit(&s->taken, memory_order_relaxed) + 1,
      memory_order_relaxed);
  return 1;
}

/* Next example of the source, through the shuffle buffer if it has one
 * (the reader's end drains it): 1, 0 at the end, -1 on a reader error. */
static int source_next(struct source *s, struct data_example *ex) {
  if (!s->shuf)
    return source_read(s, ex);
  for (;;) {
    int rc = source_read(s, ex);
    if (rc < 0)
      return rc;
    if (rc == 0)
      return shuffle_drain(s->shuf, ex);
    if (shuffle_add(s->shuf, ex, ex))
      return 1;
  }
}

/* Starts a pass over the source again; shuffled (the training data) in the
 * order of seed. */
static void source_rewind(struct source *s, uint64_t seed) {
  reader_rewind(s->r);
  s->taken = 0;
  if (s->shuf)
    shuffle_reset(s->shuf, seed);
}

static void source_close(struct source *s) {
  reader_free(s->r);
  s->r = NULL;
  shuffle_free(s->shuf);
  s->shuf = NULL;
}

/* ---- the trainer -------------------------------------------------------- */

struct trainer {
  struct train_opts o;
  const struct config *cfg;
  struct source train, valid, test;
  bool has_valid, has_test;
  int F, D, Bmax;
  int ntables;
  uint32_t ids[TRAIN_MAX_TABLES];
  int dims[TRAIN_MAX_TABLES];
  bool lrw; /* the model takes LR weights: table 1 */
  struct params *p;
  struct model *m;
  struct batch *b;               /* the current batch: one of bufs */
  struct batch *bufs[3];         /* the batches training rotates: bufs[2] only
                                    with the pull overlap (else NULL) */
  uint64_t *prefetch_keys;       /* [F] the reader thread's example buffer */
  uint64_t *exkeys;              /* [F] one example's keys */
  float *prefetch_vals, *exvals; /* [F] their values (libFM, CSV) */
  float *E, *dE;                 /* (Bmax, F*D) */
  float *w, *dw;                 /* (Bmax, F) when lrw */
  float *logits, *dlogits;       /* (Bmax) */
  float *best;                   /* [params len] best dense values */
  /* AMTL (embedding.amtl), in front of the model on table 0: */
  struct amtl *amtl;   /* NULL without AMTL */
  int S;               /* frequency features per value */
  uint32_t *cnt, *clk; /* (Bmax, F) the store's count/clicks per value */
  float *freq, *alpha; /* (Bmax, F, S), (Bmax, F) */
  float *Ehat, *dEhat; /* (Bmax, F*D) masked embeddings, their grad */
  uint16_t *pbf;       /* (Bmax, F) chosen prefix per value */
  double phase[4];     /* seconds in read, pull, compute, push: run */
  double phase_rec[4]; /* the same since the last record */
  uint64_t steps_rec;  /* steps since the last record */
  double prefix_sum;   /* sum of chosen prefixes since the last record */
  uint64_t prefix_n;   /* values counted in prefix_sum */
  struct metrics *met;
  double lr;       /* current dense lr */
  double lr_scale; /* product of the decays so far (the store's scale) */
  /* The pull overlap (see pull_ahead): */
  bool overlap;                  /* train.prefetch in async/ssp mode */
  struct batch *ahead;           /* batch t+1, taken during step t */
  int started[TRAIN_MAX_TABLES]; /* ps_pull_start handles of the batch to
                                    train next (ahead, then b until
                                    pull_and_gather); -1 = none */
};

/* Opens a source over paths (or the training files with a split part). */
static int source_open(struct trainer *tr, struct source *s,
                       const struct config_strings *paths, int part,
                       const char *what, char *err, size_t errlen) {
  const struct config *cfg = tr->cfg;
  /* Only the training pass is shared among workers; the evaluating worker
   * (rank 0) reads all of valid and test. */
  bool share = !strcmp(what, "train") && tr->o.nranks > 1;
  struct reader_options ro = {
      .paths = (const char *const *)paths->v,
      .npaths = paths->n,
      .rank = share ? tr->o.rank : 0,
      .nranks = share ? tr->o.nranks : 1,
      .bad_line_fraction = cfg->data.bad_line_fraction,
      .report_first = (uint32_t)cfg->data.report_bad_lines,
      .log = tr->o.log,
  };
  struct data_csv_spec csv;
  reader_options_from_config(&ro, &csv, cfg);
  /* CSV: every pass reads the columns training reads, in its order */
  const struct data_csv_schema *ts =
      tr->train.r && s != &tr->train ? reader_csv_schema(tr->train.r) : NULL;
  if (ts) {
    ro.csv_expect = (const char *const *)ts->names;
    ro.ncsv_expect = ts->ncols;
  }
  char rerr[512];
  memset(s, 0, sizeof(*s));
  s->r = reader_open(&ro, rerr, sizeof(rerr));
  if (!s->r)
    return errorf(err, errlen, "data.%s: %s", what, rerr);
  s->part = part;
  s->split_valid = cfg->data.split_valid;
  s->split_test = cfg->data.split_test;
  s->split_key = keys_mix64((uint64_t)cfg->data.split_seed ^ 0x5eedULL);
  s->max_lines = (uint64_t)cfg->data.max_lines;
  return 0;
}

/* Opens train, valid and test sources and learns F. */
static int open_data(struct trainer *tr, char *err, size_t errlen) {
  const struct config *cfg = tr->cfg;
  if (source_open(tr, &tr->train, &cfg->data.train,
                  cfg->data.split_valid > 0 || cfg->data.split_test > 0
                      ? PART_TRAIN
                      : PART_ALL,
                  "train", err, errlen))
    return -1;
  tr->F = (int)reader_nfields(tr->train.r);
  if (tr->F <= 0) {
    errorf(err, errlen,
           "data.train: no valid line to learn the field count from");
    return -1;
  }
  /* Only the training pass is shuffled: evaluation and predict keep the
   * file order (predict answers line by line). */
  if (cfg->data.shuffle_buffer > 0) {
    char serr[256];
    uint64_t n = (uint64_t)cfg->data.shuffle_buffer;
    if (shuffle_check(n, (uint32_t)tr->F, shuffle_memory_limit(), serr,
                      sizeof(serr)))
      return errorf(err, errlen,
                    "data.shuffle_buffer: %s (half of this machine's memory); "
                    "lower it",
                    serr);
    tr->train.shuf = shuffle_new((size_t)n, (uint32_t)tr->F);
  }
  /* validation and test: their own files, or a held-out part of train */
  struct {
    struct source *s;
    const struct config_strings *paths;
    double split;
    int part;
    const char *what;
    bool *has;
  } parts[] = {
      {&tr->valid, &cfg->data.valid, cfg->data.split_valid, PART_VALID, "valid",
       &tr->has_valid},
      {&tr->test, &cfg->data.test, cfg->data.split_test, PART_TEST, "test",
       &tr->has_test},
  };
  for (size_t i = 0; i < ARRAY_LEN(parts); i++) {
    int rc = 0;
    if (parts[i].paths->n)
      rc = source_open(tr, parts[i].s, parts[i].paths, PART_ALL, parts[i].what,
                       err, errlen);
    else if (parts[i].split > 0)
      rc = source_open(tr, parts[i].s, &cfg->data.train, parts[i].part,
                       parts[i].what, err, errlen);
    else
      continue;
    if (rc)
      return -1;
    *parts[i].has = true;
    int F = (int)reader_nfields(parts[i].s->r);
    if (F != tr->F) {
      errorf(err, errlen,
             "data.%s has %d fields per line, data.train has %d: they must "
             "match",
             parts[i].what, F, tr->F);
      return -1;
    }
  }

  return 0;
}

struct trainer *train_new(const struct train_opts *o, char *err,
                          size_t errlen) {
  CHECK(o->cfg, "no config");
  const struct config *cfg = o->cfg;
  struct trainer *tr = xcalloc(1, sizeof(*tr));
  tr->o = *o;
  tr->cfg = cfg;
  if (o->fields > 0)
    tr->F = o->fields;
  else if (open_data(tr, err, errlen))
    goto fail;
  tr->D = (int)cfg->embedding.dim;
  tr->Bmax = (int)cfg->train.batch_size;
  struct model_options mo;
  char merr[512];
  if (model_options_from_config(&mo, cfg, merr, sizeof(merr))) {
    errorf(err, errlen, "%s", merr);
    goto fail;
  }
  /* EDCN's Hadamard bridge multiplies cross and deep outputs that start at
   * the embeddings' scale: with init_std 1e-4 the products (~1e-8) carry
   * no gradient and the model predicts a constant unless BatchNorm
   * rescales them (in PyTorch too; BENCHMARKS.md). Say so before the run. */
  if (mo.kind == MODEL_EDCN && mo.bridge == MODEL_BRIDGE_HADAMARD &&
      !mo.use_bn && cfg->embedding.init_std < 1e-2)
    logger_warn(tr->o.log,
                "model.name edcn with model.bridge hadamard, model.use_bn "
                "false and embedding.init_std %g: the bridge's products "
                "vanish and the model may learn nothing (AUC 0.5); set "
                "model.use_bn: true or model.bridge: add",
                cfg->embedding.init_std);
  tr->p = params_new();
  tr->m = model_new(&mo, tr->F, tr->D, tr->Bmax, tr->p, merr, sizeof(merr));
  if (!tr->m) {
    errorf(err, errlen, "model.name %s: %s",
           config_enum_name("model", "name", (int)cfg->model.name), merr);
    goto fail;
  }
  logger_info(tr->o.log, "model %s: %d compute thread(s) per batch%s",
              config_enum_name("model", "name", (int)cfg->model.name),
              model_threads(tr->m),
              model_threads(tr->m) < mo.threads
                  ? " (batch_size / 128 rows, or use_bn/dropout, allow no more)"
                  : "");
  if (cfg->embedding.amtl) {
    struct amtl_options ao;
    if (amtl_options_from_config(&ao, cfg, tr->F, merr, sizeof(merr))) {
      errorf(err, errlen, "%s", merr);
      goto fail;
    }
    tr->amtl = amtl_new(&ao, tr->Bmax, tr->p, merr, sizeof(merr));
    if (!tr->amtl) {
      errorf(err, errlen, "embedding.amtl: %s", merr);
      goto fail;
    }
    size_t BF = (size_t)tr->Bmax * (size_t)tr->F;
    tr->S = ao.S;
    tr->cnt = xcalloc(BF, sizeof(uint32_t));
    tr->clk = xcalloc(BF, sizeof(uint32_t));
    tr->freq = xaligned(BF * (size_t)ao.S * sizeof(float));
    tr->alpha = xaligned(BF * sizeof(float));
    tr->Ehat = xaligned(BF * (size_t)tr->D * sizeof(float));
    tr->dEhat = xaligned(BF * (size_t)tr->D * sizeof(float));
    tr->pbf = xcalloc(BF, sizeof(uint16_t));
  }
  params_alloc(tr->p, (uint64_t)cfg->train.seed);
  if (warm_dense_load(tr->p, cfg, o->log, err, errlen) < 0)
    goto fail;
  tr->lrw = model_uses_lr_weights(tr->m);
  tr->ntables = tr->lrw ? 2 : 1;
  tr->ids[0] = 0;
  tr->dims[0] = tr->D;
  tr->ids[1] = 1;
  tr->dims[1] = 1;
  /* Sync mode pulls after the previous step's barrier, always; ssp with
   * staleness 1 has a barrier every step, so nothing to overlap. */
  tr->overlap =
      cfg->train.prefetch &&
      (cfg->train.mode == CONFIG_MODE_ASYNC ||
       (cfg->train.mode == CONFIG_MODE_SSP && cfg->train.staleness > 1));
  for (int i = 0; i < (tr->overlap ? 3 : 2); i++)
    tr->bufs[i] = batch_new(tr->Bmax, tr->F, tr->ntables, tr->ids, tr->dims);
  for (int i = 0; i < TRAIN_MAX_TABLES; i++)
    tr->started[i] = -1;
  tr->b = tr->bufs[0];
  tr->prefetch_keys = xcalloc((size_t)tr->F, sizeof(uint64_t));
  size_t BF = (size_t)tr->Bmax * (size_t)tr->F;
  tr->exkeys = xcalloc((size_t)tr->F, sizeof(uint64_t));
  tr->prefetch_vals = xcalloc((size_t)tr->F, sizeof(float));
  tr->exvals = xcalloc((size_t)tr->F, sizeof(float));
  tr->E = xaligned(BF * (size_t)tr->D * sizeof(float));
  tr->dE = xaligned(BF * (size_t)tr->D * sizeof(float));
  if (tr->lrw) {
    tr->w = xaligned(BF * sizeof(float));
    tr->dw = xaligned(BF * sizeof(float));
  }
  tr->logits = xaligned((size_t)tr->Bmax * sizeof(float));
  tr->dlogits = xaligned((size_t)tr->Bmax * sizeof(float));
  tr->best = xmalloc(tr->p->len * sizeof(float));
  memcpy(tr->best, tr->p->values, tr->p->len * sizeof(float));
  tr->met = metrics_new();
  tr->lr = cfg->optimizer.lr;
  tr->lr_scale = 1;
  return tr;
fail:
  train_free(tr);
  return NULL;
}

void train_free(struct trainer *tr) {
  if (!tr)
    return;
  source_close(&tr->train);
  source_close(&tr->valid);
  source_close(&tr->test);
  model_free(tr->m);
  params_free(tr->p);
  batch_free(tr->bufs[0]);
  batch_free(tr->bufs[1]);
  batch_free(tr->bufs[2]);
  free(tr->prefetch_keys);
  free(tr->exkeys);
  free(tr->prefetch_vals);
  free(tr->exvals);
  free(tr->E);
  free(tr->dE);
  free(tr->w);
  free(tr->dw);
  free(tr->logits);
  free(tr->dlogits);
  free(tr->best);
  metrics_free(tr->met);
  amtl_free(tr->amtl);
  free(tr->cnt);
  free(tr->clk);
  free(tr->freq);
  free(tr->alpha);
  free(tr->Ehat);
  free(tr->dEhat);
  free(tr->pbf);
  free(tr);
}

int train_tables(const struct trainer *tr, uint32_t *ids, int *dims) {
  for (int i = 0; i < tr->ntables; i++) {
    ids[i] = tr->ids[i];
    dims[i] = tr->dims[i];
  }
  return tr->ntables;
}

uint64_t train_dense_total(const struct trainer *tr) {
  return tr->p->len;
}
int train_fields(const struct trainer *tr) {
  return tr->F;
}
struct params *train_params(struct trainer *tr) {
  return tr->p;
}

/* ---- one batch ---------------------------------------------------------- */

/* Fills b from src with keys and vals as the example buffer: returns its
 * size (0 at the end) or -1. */
static int fill_into(struct batch *b, uint64_t *keys, float *vals,
                     struct source *src, char *err, size_t errlen) {
  batch_clear(b);
  struct data_example ex = {.keys = keys, .vals = vals};
  while (b->B < b->Bmax) {
    int rc = source_next(src, &ex);
    if (rc < 0)
      return errorf(err, errlen, "%s", reader_error(src->r));
    if (rc == 0)
      break;
    batch_add(b, &ex);
  }
  return b->B;
}

/* Fills the current batch tr->b from src (evaluation passes). */
static int fill_batch(struct trainer *tr, struct source *src, char *err,
                      size_t errlen) {
  return fill_into(tr->b, tr->exkeys, tr->exvals, src, err, errlen);
}

/* ---- prefetch: batch t+1 is read while batch t trains ------------------
 *
 * One thread per training pass reads, parses, hashes and de-duplicates the
 * next batch (DESIGN.md: the worker overlaps this with compute). Two
 * batches alternate: the one the main thread trains (tr->b) and the one the
 * thread fills; with the pull overlap (below) a third holds batch t+1
 * while its pulls are in flight, and the thread never gets that one. What
 * passes between the threads is the ownership of a batch, under one mutex
 * (STYLE.md rule 11 asks for ZeroMQ messages; a pointer handoff between two
 * fixed buffers is the same protocol without copying 40 MB batches through a
 * socket). The reader of the training data belongs to the thread while it runs
 * and to the main thread otherwise. The batches come in the same order as
 * without the thread, so runs stay deterministic. */
struct prefetch {
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct trainer *tr;
  struct batch *filled; /* handed to the main thread; NULL = not yet */
  int filled_rc;        /* its size, 0 at the end of the data, -1 error */
  struct batch *spare;  /* for the thread to fill next; NULL = none */
  bool quit;            /* the main thread stops early */
  char err[512];        /* the thread's error, read after a -1 */
};

static void *prefetch_main(void *arg) {
  struct prefetch *pf = arg;
  for (;;) {
    pthread_mutex_lock(&pf->mu);
    while (!pf->spare && !pf->quit)
      pthread_cond_wait(&pf->cv, &pf->mu);
    struct batch *b = pf->quit ? NULL : pf->spare;
    pf->spare = NULL;
    pthread_mutex_unlock(&pf->mu);
    if (!b)
      return NULL;
    int rc = fill_into(b, pf->tr->prefetch_keys, pf->tr->prefetch_vals,
                       &pf->tr->train, pf->err, sizeof(pf->err));
    pthread_mutex_lock(&pf->mu);
    pf->filled = b;
    pf->filled_rc = rc;
    pthread_cond_broadcast(&pf->cv);
    pthread_mutex_unlock(&pf->mu);
    if (rc <= 0)
      return NULL;
  }
}

/* Starts a training pass's reader thread on the batch that is not
 * current. Returns 0, or -1 with err set (no thread could be made). */
static int prefetch_start(struct prefetch *pf, struct trainer *tr, char *err,
                          size_t errlen) {
  memset(pf, 0, sizeof(*pf));
  pf->tr = tr;
  pf->spare = tr->b == tr->bufs[0] ? tr->bufs[1] : tr->bufs[0];
  pthread_mutex_init(&pf->mu, NULL);
  pthread_cond_init(&pf->cv, NULL);
  int e = pthread_create(&pf->th, NULL, prefetch_main, pf);
  if (e) {
    pthread_cond_destroy(&pf->cv);
    pthread_mutex_destroy(&pf->mu);
    return errorf(err, errlen, "cannot start the data reader thread: %s",
                  strerror(e));
  }
  return 0;
}

/* The next batch becomes tr->b (the previous one goes back to the thread).
 * Returns its size, 0 at the end of the data, or -1 with err set. */
static int prefetch_next(struct prefetch *pf, char *err, size_t errlen) {
  struct trainer *tr = pf->tr;
  pthread_mutex_lock(&pf->mu);
  while (!pf->filled)
    pthread_cond_wait(&pf->cv, &pf->mu);
  int rc = pf->filled_rc;
  struct batch *prev = tr->b;
  tr->b = pf->filled;
  pf->filled = NULL;
  if (rc > 0) {
    pf->spare = prev;
    pthread_cond_broadcast(&pf->cv);
  }
  pthread_mutex_unlock(&pf->mu);
  if (rc < 0)
    return errorf(err, errlen, "%s", pf->err);
  return rc;
}

/* Stops the thread (after the batch it is reading, if any) and joins it. */
static void prefetch_stop(struct prefetch *pf) {
  pthread_mutex_lock(&pf->mu);
  pf->quit = true;
  pthread_cond_broadcast(&pf->cv);
  pthread_mutex_unlock(&pf->mu);
  pthread_join(pf->th, NULL);
  pthread_cond_destroy(&pf->cv);
  pthread_mutex_destroy(&pf->mu);
}

/* With the pull overlap: the reader's next batch goes to *got while the
 * current one (tr->b) stays, and the thread gets the third buffer to fill:
 * the one neither current nor just handed out (the batch trained before
 * tr->b, done with, or one no step used yet). Returns the size of *got, 0
 * at the end of the data, or -1 with err set. */
static int prefetch_ahead(struct prefetch *pf, struct batch **got, char *err,
                          size_t errlen) {
  struct trainer *tr = pf->tr;
  pthread_mutex_lock(&pf->mu);
  while (!pf->filled)
    pthread_cond_wait(&pf->cv, &pf->mu);
  int rc = pf->filled_rc;
  *got = pf->filled;
  pf->filled = NULL;
  if (rc > 0) {
    for (int i = 0; i < 3; i++)
      if (tr->bufs[i] != tr->b && tr->bufs[i] != *got)
        pf->spare = tr->bufs[i];
    CHECK(pf->spare && tr->bufs[2], "no third batch for the pull overlap");
    pthread_cond_broadcast(&pf->cv);
  }
  pthread_mutex_unlock(&pf->mu);
  if (rc < 0)
    return errorf(err, errlen, "%s", pf->err);
  return rc;
}

/* Table t's rows of the current batch into out: the pull started for it
 * during the previous step (pull_ahead), or a pull now. */
static long pull_rows(struct trainer *tr, struct ps *ps, int t, uint64_t step,
                      const struct ps_rows *out, char *err, size_t errlen) {
  struct batch *b = tr->b;
  int h = tr->started[t];
  if (h < 0)
    return ps_pull(ps, b->t[t].id, step, b->U, b->keys, out, err, errlen);
  tr->started[t] = -1;
  return ps_pull_finish(ps, h, err, errlen);
}

/* Pulls every table of the batch and builds E (and w). */
static int pull_and_gather(struct trainer *tr, struct ps *ps, uint64_t step,
                           char *err, size_t errlen) {
  struct batch *b = tr->b;
  for (int t = 0; t < tr->ntables; t++) {
    struct ps_rows out;
    batch_pull_out(b, t, &out);
    char perr[512];
    if (pull_rows(tr, ps, t, step, &out, perr, sizeof(perr)) < 0)
      return errorf(err, errlen, "step %llu: pull of table %u: %s",
                    (unsigned long long)step, b->t[t].id, perr);
    batch_expand(b, t);
  }
  batch_gather(b, 0, tr->E);
  if (tr->lrw)
    batch_gather(b, 1, tr->w);
  return 0;
}

/* The model's input: E itself, or with AMTL the masked Ehat. Runs the
 * AMTL forward on the batch's values, with the store's stats as frequency
 * features; returns the input to give the model. */
static const float *amtl_input(struct trainer *tr) {
  if (!tr->amtl)
    return tr->E;
  struct batch *b = tr->b;
  const struct batch_table *t0 = &b->t[0];
  size_t BF = (size_t)b->B * (size_t)tr->F;
  for (size_t i = 0; i < BF; i++) {
    int32_t u = b->idx[i];
    tr->cnt[i] = u < 0 ? 0 : t0->count[u];
    tr->clk[i] = u < 0 ? 0 : t0->clicks[u];
  }
  amtl_freq_features(tr->cnt, tr->clk, b->B, tr->F,
                     (int)tr->cfg->embedding.amtl_count_buckets, tr->freq,
                     tr->alpha);
  amtl_forward(tr->amtl, tr->E, tr->freq, tr->alpha, tr->Ehat, tr->pbf, b->B);
  return tr->Ehat;
}

/* After an AMTL forward in training: per key, the prefix to store is the
 * longest any of its values chose in this batch (every occurrence keeps
 * what it used); the gradient pushed is the part of it the row stores now
 * (dims past the stored prefix were zeros in the forward and are not
 * stored: growth fills them from the deterministic init). Keys the store
 * has not admitted keep their prefix (0) and push nothing. */
static void amtl_prefixes(struct trainer *tr) {
  struct batch *b = tr->b;
  struct batch_table *t0 = &b->t[0];
  for (size_t u = 0; u < b->U; u++)
    t0->newp[u] = 0;
  size_t BF = (size_t)b->B * (size_t)tr->F;
  for (size_t i = 0; i < BF; i++) {
    int32_t u = b->idx[i];
    if (u < 0)
      continue;
    if (tr->pbf[i] > t0->newp[u])
      t0->newp[u] = tr->pbf[i];
    tr->prefix_sum += tr->pbf[i];
    tr->prefix_n++;
  }
  for (size_t u = 0; u < b->U; u++) {
    if (t0->plen[u] == 0) {
      t0->newp[u] = 0;
      t0->prefix[u] = 0;
    } else if (t0->newp[u] < t0->prefix[u]) {
      t0->prefix[u] = t0->newp[u];
    }
  }
  t0->has_newp = 1;
}

static int pull_dense(struct trainer *tr, struct ps *ps, uint64_t step,
                      char *err, size_t errlen) {
  char perr[512];
  if (ps_pull_dense(ps, step, 0, tr->p->len, tr->p->values, perr, sizeof(perr)))
    return errorf(err, errlen, "step %llu: dense pull: %s",
                  (unsigned long long)step, perr);
  return 0;
}

/* One training step on the filled batch; *loss gets its mean logloss. */
enum { PH_READ, PH_PULL, PH_COMPUTE, PH_PUSH };

/* Adds the time since *t to phase ph and restarts *t. */
static void phase_add(struct trainer *tr, int ph, double *t) {
  double now = clock_sec();
  tr->phase[ph] += now - *t;
  tr->phase_rec[ph] += now - *t;
  *t = now;
}

/* ---- the pull overlap ----------------------------------------------------
 *
 * Async and ssp modes (train.prefetch): during step t, once batch t's rows
 * are in, batch t+1 is taken from the reader and its pulls are started
 * (ps_pull_start); the pservers answer them while batch t computes and
 * pushes, and step t+1 collects the replies (ps_pull_finish, in
 * pull_and_gather) instead of pulling. The pulls of t+1 are sent before
 * the push of t, so they read the rows without batch t's update (ps.h's
 * ordering: deterministic, the same embedded and distributed): one step
 * more staleness, which async mode allows. In ssp mode no pull is started
 * across a barrier (step t a multiple of train.staleness): step t+1 then
 * pulls after the barrier as without the overlap, so the bound holds as it
 * is: the rows a worker reads at step t carry every worker's pushes of
 * steps <= t - staleness, with or without the overlap (a pull started
 * during step t-1 is sent after the barrier of the last multiple of
 * staleness before t-1, which is also the last one before t). Nor across
 * an evaluation, the last step or a stop request: what follows them pulls
 * as without the overlap.
 *
 * Why split pulls on one thread rather than a pulling stage with its own
 * sockets on a thread of its own: one thread keeps every ps call on the
 * thread that owns the ps (ps.h; STYLE.md rule 11: no socket shared), the
 * pulls of t+1 and the push of t then travel on one connection per
 * pserver in the order they were made, which makes what a pull reads a
 * function of the config (a second connection would race with the push),
 * and the embedded store needs no second handle. It also needs no
 * batch to cross one more thread: the reader thread hands batches over as
 * before, with a third buffer in the rotation (batch t trains, batch t+1
 * waits for its rows, the reader fills t+2). */

/* In step t, after batch t's pulls: takes batch t+1 and starts its pulls,
 * unless the step is one the overlap must not cross (above). *t is the
 * phase clock: waiting for the reader counts as reading. Returns 0, or -1
 * with err set (a data error of batch t+1, a pull that could not be
 * sent). */
static int pull_ahead(struct trainer *tr, struct ps *ps, struct prefetch *pf,
                      uint64_t step, double *t, char *err, size_t errlen) {
  const struct config *cfg = tr->cfg;
  const uint64_t max_steps = (uint64_t)cfg->train.max_steps;
  const uint64_t eval_every = (uint64_t)cfg->train.eval_every_steps;
  if (!tr->overlap || (max_steps && step >= max_steps) ||
      (tr->o.stop && *tr->o.stop) || (eval_every && step % eval_every == 0) ||
      (cfg->train.mode == CONFIG_MODE_SSP &&
       step % (uint64_t)cfg->train.staleness == 0))
    return 0;
  struct batch *nb;
  int B = prefetch_ahead(pf, &nb, err, errlen);
  phase_add(tr, PH_READ, t);
  if (B < 0)
    return -1;
  tr->ahead = nb; /* with B == 0: the end of the data, no pull */
  for (int i = 0; B > 0 && i < tr->ntables; i++) {
    struct ps_rows out;
    batch_pull_out(nb, i, &out);
    char perr[512];
    tr->started[i] = ps_pull_start(ps, nb->t[i].id, step + 1, nb->U, nb->keys,
                                   &out, perr, sizeof(perr));
    if (tr->started[i] < 0)
      return errorf(err, errlen, "step %llu: pull of table %u: %s",
                    (unsigned long long)step + 1, nb->t[i].id, perr);
  }
  phase_add(tr, PH_PULL, t);
  return 0;
}

/* The next batch becomes tr->b: the one step t took ahead, or the reader
 * thread's next. Returns its size, 0 at the end of the data, or -1 with
 * err set. */
static int next_batch(struct trainer *tr, struct prefetch *pf, char *err,
                      size_t errlen) {
  if (!tr->ahead)
    return prefetch_next(pf, err, errlen);
  tr->b = tr->ahead; /* the old tr->b is done: pull_ahead reuses it */
  tr->ahead = NULL;
  return tr->b->B;
}

/* A training pass ends (stop, error, early stop) with batch t+1 taken and
 * its pulls started: they are dropped, their replies discarded. */
static void drop_ahead(struct trainer *tr, struct ps *ps) {
  for (int i = 0; i < TRAIN_MAX_TABLES; i++)
    if (tr->started[i] >= 0) {
      ps_pull_abandon(ps, tr->started[i]);
      tr->started[i] = -1;
    }
  tr->ahead = NULL;
}

static int train_step(struct trainer *tr, struct ps *ps, struct prefetch *pf,
                      uint64_t step, double *loss, char *err, size_t errlen) {
  const struct config *cfg = tr->cfg;
  struct batch *b = tr->b;
  int B = b->B;
  double t = clock_sec();
  if (pull_and_gather(tr, ps, step, err, errlen))
    return -1;
  if (tr->o.dense_via_ps && pull_dense(tr, ps, step, err, errlen))
    return -1;
  phase_add(tr, PH_PULL, &t);
  if (pull_ahead(tr, ps, pf, step, &t, err, errlen))
    return -1;
  params_zero_grad(tr->p);
  const float *in = amtl_input(tr);
  if (tr->amtl)
    amtl_prefixes(tr);
  model_forward(tr->m, in, tr->w, tr->logits, B, true);
  *loss = nn_logloss_forward(tr->logits, b->labels, B);
  memset(tr->dlogits, 0, (size_t)B * sizeof(float));
  nn_logloss_backward(tr->logits, b->labels, tr->dlogits, B, 1.0f);
  size_t BF = (size_t)B * (size_t)tr->F;
  memset(tr->dE, 0, BF * (size_t)tr->D * sizeof(float));
  if (tr->lrw)
    memset(tr->dw, 0, BF * sizeof(float));
  if (tr->amtl) {
    memset(tr->dEhat, 0, BF * (size_t)tr->D * sizeof(float));
    model_backward(tr->m, tr->dlogits, tr->dEhat, tr->dw, B);
    amtl_backward(tr->amtl, tr->dEhat, tr->dE, B);
  } else {
    model_backward(tr->m, tr->dlogits, tr->dE, tr->dw, B);
  }

  /* global norm over every gradient of the step, dense and sparse */
  double sq = batch_scatter(b, 0, tr->dE);
  if (tr->lrw)
    sq += batch_scatter(b, 1, tr->dw);
  double dn = params_clip_grad_norm(tr->p, 0); /* measure only */
  double norm = sqrt(dn * dn + sq);
  if (!isfinite(norm) || !isfinite(*loss))
    return errorf(err, errlen,
                  "step %llu: the loss diverged (loss %g, gradient norm %g); "
                  "lower optimizer.lr or optimizer.sparse_lr",
                  (unsigned long long)step, *loss, norm);
  double clip = cfg->optimizer.clip_norm;
  if (clip > 0 && norm > clip) {
    float s = (float)(clip / (norm + 1e-6));
    for (size_t i = 0; i < tr->p->len; i++)
      tr->p->grads[i] *= s;
    for (int i = 0; i < tr->ntables; i++)
      batch_scale_grads(b, i, s);
  }
  phase_add(tr, PH_COMPUTE, &t);

  for (int i = 0; i < tr->ntables; i++) {
    struct ps_grads g;
    batch_push_in(b, i, step, &g);
    char perr[512];
    if (ps_push(ps, &g, perr, sizeof(perr)))
      return errorf(err, errlen, "step %llu: push to table %u: %s",
                    (unsigned long long)step, g.table, perr);
  }
  if (tr->o.dense_via_ps) {
    char perr[512];
    if (ps_push_dense(ps, step, 0, tr->p->len, tr->p->grads, perr,
                      sizeof(perr)))
      return errorf(err, errlen, "step %llu: dense push: %s",
                    (unsigned long long)step, perr);
  } else if (cfg->optimizer.dense == CONFIG_DENSE_SGD) {
    params_sgd_step(tr->p, (float)tr->lr);
  } else {
    struct params_adam a = {
        .lr = (float)tr->lr,
        .beta1 = (float)cfg->optimizer.beta1,
        .beta2 = (float)cfg->optimizer.beta2,
        .eps = (float)cfg->optimizer.eps,
        .weight_decay = (float)cfg->optimizer.dense_l2,
    };
    params_adam_step(tr->p, &a);
  }
  /* sync: every step. ssp: every `staleness` steps, so no worker gets more
   * than staleness steps ahead of the slowest (a worker at the barrier of
   * step k*s waits for all to reach it; the slowest is then past
   * (k-1)*s). */
  if (cfg->train.mode == CONFIG_MODE_SYNC ||
      (cfg->train.mode == CONFIG_MODE_SSP && cfg->train.staleness > 0 &&
       step % (uint64_t)cfg->train.staleness == 0)) {
    char perr[512];
    if (ps_barrier(ps, step, perr, sizeof(perr)))
      return errorf(err, errlen, "step %llu: barrier: %s",
                    (unsigned long long)step, perr);
  }
  phase_add(tr, PH_PUSH, &t);
  tr->steps_rec++;
  return 0;
}

/* ---- the best state on disk --------------------------------------------- */

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

/* Removes a directory tree; a missing one is fine. 0 or -1 (errno). */
static int rm_tree(const char *dir) {
  struct stat st;
  if (lstat(dir, &st) != 0)
    return errno == ENOENT ? 0 : -1;
  return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Checkpoint + dense.bin into best_dir.tmp, then renamed over best_dir. */
static int save_best(struct trainer *tr, struct ps *ps, uint64_t step,
                     char *err, size_t errlen) {
  const char *dir = tr->o.best_dir;
  char tmp[4096], path[4200], perr[512];
  if (snprintf(tmp, sizeof(tmp), "%s.tmp", dir) >= (int)sizeof(tmp))
    return errorf(err, errlen, "%.200s...: path too long", dir);
  if (rm_tree(tmp))
    return errorf(err, errlen, "removing %s: %s", tmp, strerror(errno));
  if (ps_checkpoint(ps, step, tmp, perr, sizeof(perr)))
    return errorf(err, errlen, "checkpoint of the best state: %s", perr);
  snprintf(path, sizeof(path), "%s/dense.bin", tmp);
  if (params_save(tr->p, path, false, perr, sizeof(perr)))
    return errorf(err, errlen, "%s", perr);
  snprintf(path, sizeof(path), "%s/columns.txt", tmp); /* CSV's header */
  if (reader_save_columns(tr->train.r, path, perr, sizeof(perr)))
    return errorf(err, errlen, "%s", perr);
  if (rm_tree(dir) || rename(tmp, dir))
    return errorf(err, errlen, "replacing %s: %s", dir, strerror(errno));
  return 0;
}

/* ---- evaluation --------------------------------------------------------- */

static double sigmoid(double z) {
  return z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z));
}

/* Forward passes over a source (rewound first); metrics into out; one
 * probability per example to probs when not NULL. `strict`: a bad line is
 * an error (predict must answer every line). `step` is the step the pulls
 * carry: the callers pass the next training step's number, so that a
 * sync-mode pserver orders them after the last step's update, like the
 * pull of a step that would follow. */
static int eval_source(struct trainer *tr, struct ps *ps, struct source *src,
                       uint64_t step, FILE *probs, bool strict,
                       struct metrics_result *out, char *err, size_t errlen) {
  source_rewind(src, 0);
  metrics_reset(tr->met);
  if (tr->o.dense_via_ps && pull_dense(tr, ps, step, err, errlen))
    return -1;
  for (;;) {
    int B = fill_batch(tr, src, err, errlen);
    if (B < 0)
      return -1;
    if (strict && reader_bad_lines(src->r))
      return errorf(err, errlen,
                    "%llu malformed line(s) (see above): every line needs an "
                    "answer, fix or remove them",
                    (unsigned long long)reader_bad_lines(src->r));
    if (B == 0)
      break;
    if (pull_and_gather(tr, ps, step, err, errlen))
      return -1;
    model_forward(tr->m, amtl_input(tr), tr->w, tr->logits, B, false);
    metrics_add(tr->met, tr->logits, tr->b->labels, tr->b->groups, (size_t)B);
    if (probs)
      for (int i = 0; i < B; i++)
        if (fprintf(probs, "%.6f\n", sigmoid(tr->logits[i])) < 0)
          return errorf(err, errlen, "writing predictions failed");
  }
  metrics_compute(tr->met, out);
  return 0;
}

int train_eval_files(struct trainer *tr, struct ps *ps,
                     const char *const *paths, size_t npaths, FILE *probs_out,
                     struct metrics_result *out, char *err, size_t errlen) {
  struct config_strings cs = {.v = (char **)paths, .n = npaths};
  struct source s;
  if (source_open(tr, &s, &cs, PART_ALL, "predict", err, errlen))
    return -1;
  s.max_lines = 0; /* every line gets its answer, whatever data.max_lines */
  if ((int)reader_nfields(s.r) != tr->F) {
    errorf(err, errlen, "%s: %u fields per line, the model was trained on %d",
           paths[0], reader_nfields(s.r), tr->F);
    source_close(&s);
    return -1;
  }
  int rc = eval_source(tr, ps, &s, 0, probs_out, true, out, err, errlen);
  source_close(&s);
  return rc;
}

/* ---- progress ----------------------------------------------------------- */

static void fmt_duration(double s, char *buf, size_t len) {
  if (!(s >= 0) || s > 1e7)
    snprintf(buf, len, "?");
  else if (s >= 3600)
    snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
  else if (s >= 60)
    snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
  else
    snprintf(buf, len, "%.0fs", s);
}

struct progress {
  double t0, last_line, last_rec; /* clock_sec() */
  double loss_sum;                /* since the last record, example-weighted */
  uint64_t loss_n;
  uint64_t examples_at_rec;
  double train_seconds;
  bool line_shown;
};

static void progress_clear(struct trainer *tr, struct progress *pg) {
  if (tr->o.progress && pg->line_shown) {
    fprintf(tr->o.progress, "\r\033[K");
    fflush(tr->o.progress);
    pg->line_shown = false;
  }
}

/* ---- the loop ----------------------------------------------------------- */

static void log_eval(struct trainer *tr, uint64_t step, const char *event,
                     int epoch, const struct metrics_result *r) {
  logger_record(tr->o.log, step, event, "epoch", (double)epoch, "auc", r->auc,
                "logloss", r->logloss, "gauc", r->gauc, "examples",
                (double)r->n, "positives", (double)r->positives, "lr", tr->lr,
                "lr_scale", tr->lr_scale, NULL);
}

/* The state after step is the best so far: keeps the dense values (pulled
 * first when the pservers hold them), saves best/ when asked, and reports
 * the test metrics of this state. */
static int take_best(struct trainer *tr, struct ps *ps, uint64_t step,
                     int epoch, struct train_result *res, char *err,
                     size_t errlen) {
  res->best_epoch = epoch;
  res->best_step = step;
  if (tr->o.dense_via_ps && pull_dense(tr, ps, step + 1, err, errlen))
    return -1;
  memcpy(tr->best, tr->p->values, tr->p->len * sizeof(float));
  if (tr->o.best_dir && save_best(tr, ps, step, err, errlen))
    return -1;
  if (tr->has_test) {
    if (eval_source(tr, ps, &tr->test, step + 1, NULL, false, &res->test, err,
                    errlen))
      return -1;
    log_eval(tr, step, "test", epoch, &res->test);
  }
  return 0;
}

/* Evaluates valid (and test on improvement); updates the schedule. Sets
 * *stop when patience runs out. */
static int evaluate(struct trainer *tr, struct ps *ps, uint64_t step, int epoch,
                    int *bad_evals, double *best_auc, bool *stop,
                    struct train_result *res, char *err, size_t errlen) {
  const struct config *cfg = tr->cfg;
  struct metrics_result v;
  if (tr->o.rank > 0) /* rank 0 evaluates for the run */
    return 0;
  if (!tr->has_valid) /* nothing to select on: the current state is best */
    return take_best(tr, ps, step, epoch, res, err, errlen);
  if (eval_source(tr, ps, &tr->valid, step + 1, NULL, false, &v, err, errlen))
    return -1;
  log_eval(tr, step, "valid", epoch, &v);
  bool better = isfinite(v.auc) && v.auc > *best_auc;
  logger_info(tr->o.log,
              "epoch %d step %llu: valid AUC %.4f logloss %.4f gAUC %.4f%s",
              epoch, (unsigned long long)step, v.auc, v.logloss, v.gauc,
              better ? " (best so far)" : "");
  if (better) {
    *best_auc = v.auc;
    *bad_evals = 0;
    res->valid = v;
    return take_best(tr, ps, step, epoch, res, err, errlen);
  }
  ++*bad_evals;
  if (*bad_evals >= cfg->train.patience) {
    logger_info(tr->o.log,
                "no improvement in %d evaluation(s) (train.patience): "
                "stopping",
                *bad_evals);
    *stop = true;
    res->stopped_early = true;
    return 0;
  }
  tr->lr *= cfg->train.lr_decay_factor;
  tr->lr_scale *= cfg->train.lr_decay_factor;
  /* Every optimizer decays (FuxiCTR's habit): the store's, i.e. the
   * embeddings' and (dense_via_ps) the dense Adam's, through one
   * absolute scale; the worker's own dense optimizer through tr->lr. */
  char perr[512];
  if (ps_set_lr_scale(ps, (float)tr->lr_scale, perr, sizeof(perr)))
    return errorf(err, errlen, "step %llu: lr decay: %s",
                  (unsigned long long)step, perr);
  logger_info(tr->o.log,
              "no improvement: learning rates x %g (dense lr %g, sparse lr "
              "x %g of optimizer.sparse_lr)",
              cfg->train.lr_decay_factor, tr->lr, tr->lr_scale);
  return 0;
}

int train_run(struct trainer *tr, struct ps *ps, struct train_result *res,
              char *err, size_t errlen) {
  const struct config *cfg = tr->cfg;
  memset(res, 0, sizeof(*res));
  res->first_loss = res->last_loss = NAN;
  res->valid.auc = res->valid.logloss = res->valid.gauc = NAN;
  res->test.auc = res->test.logloss = res->test.gauc = NAN;
  res->has_valid = tr->has_valid;
  res->has_test = tr->has_test;
  char perr[512];
  if (!tr->train.r)
    return errorf(err, errlen,
                  "no training data was opened (train_opts.fields)");
  if (tr->o.dense_via_ps) {
    if (ps->dense_total != tr->p->len)
      return errorf(err, errlen,
                    "the parameter store holds %llu dense floats, the model "
                    "has %zu",
                    (unsigned long long)ps->dense_total, tr->p->len);
    if (tr->o.rank == 0 &&
        ps_set_dense(ps, 0, tr->p->len, tr->p->values, perr, sizeof(perr)))
      return errorf(err, errlen, "setting the initial dense values: %s", perr);
  }
  /* Several workers: nobody pulls before rank 0 has set the dense values
   * (any mode: a pserver's barrier works in async mode too). */
  if (tr->o.nranks > 1 && ps_barrier(ps, 0, perr, sizeof(perr)))
    return errorf(err, errlen, "start barrier: %s", perr);
  const uint64_t max_steps = (uint64_t)cfg->train.max_steps;
  const uint64_t eval_every = (uint64_t)cfg->train.eval_every_steps;
  const double interval = cfg->log.interval_s;
  struct progress pg = {.t0 = clock_sec()};
  pg.last_line = pg.last_rec = pg.t0;
  uint64_t step = 0, steps_per_epoch = 0;
  double best_auc = -INFINITY;
  int bad_evals = 0;
  bool stop = false, evaluated_now = false;
  int rc = 0;
  for (int epoch = 1; epoch <= cfg->train.epochs && !stop; epoch++) {
    res->epochs = epoch;
    source_rewind(&tr->train, shuffle_seed((uint64_t)cfg->train.seed,
                                           (uint64_t)epoch, tr->o.rank));
    double epoch_loss = 0, t_epoch = clock_sec();
    uint64_t epoch_examples = 0, epoch_steps = 0;
    struct prefetch pf;
    if (prefetch_start(&pf, tr, err, errlen)) {
      rc = -1;
      goto out;
    }
    for (;;) {
      if (max_steps && step >= max_steps) {
        stop = true;
        break;
      }
      if (tr->o.stop && *tr->o.stop) {
        res->interrupted = stop = true;
        break;
      }
      double t_read = clock_sec(); /* now: waiting for the reader */
      int B = next_batch(tr, &pf, err, errlen);
      if (B < 0) {
        rc = -1;
        break;
      }
      phase_add(tr, PH_READ, &t_read);
      if (B == 0)
        break;
      step++;
      double loss;
      if (train_step(tr, ps, &pf, step, &loss, err, errlen)) {
        rc = -1;
        break;
      }
      evaluated_now = false;
      if (tr->o.on_step)
        tr->o.on_step(tr->o.ctx, step, loss);
      epoch_loss += loss * B;
      epoch_examples += (uint64_t)B;
      epoch_steps++;
      res->steps = step;
      res->examples += (uint64_t)B;
      pg.loss_sum += loss * B;
      pg.loss_n += (uint64_t)B;

      double now = clock_sec();
      double train_s = pg.train_seconds + (now - t_epoch);
      double sps = train_s > 0 ? (double)res->examples / train_s : 0;
      if (now - pg.last_rec >= interval) {
        double per = 1e3 / (double)(tr->steps_rec ? tr->steps_rec : 1);
        logger_record(
            tr->o.log, step, "train", "epoch", (double)epoch, "loss",
            pg.loss_sum / (double)pg.loss_n, "samples_per_s", sps, "lr", tr->lr,
            "examples", (double)res->examples, "read_ms",
            tr->phase_rec[PH_READ] * per, "pull_ms",
            tr->phase_rec[PH_PULL] * per, "compute_ms",
            tr->phase_rec[PH_COMPUTE] * per, "push_ms",
            tr->phase_rec[PH_PUSH] * per, tr->amtl ? "amtl_mean_prefix" : NULL,
            tr->prefix_n ? tr->prefix_sum / (double)tr->prefix_n : NAN, NULL);
        tr->prefix_sum = 0;
        tr->prefix_n = 0;
        memset(tr->phase_rec, 0, sizeof(tr->phase_rec));
        tr->steps_rec = 0;
        pg.last_rec = now;
        pg.loss_sum = 0;
        pg.loss_n = 0;
      }
      if (tr->o.progress && now - pg.last_line >= 0.5) {
        char eta[32];
        struct eta_progress ep = {
            .elapsed_s = train_s,
            .epoch = epoch,
            .epochs = (int)cfg->train.epochs,
            .step = step,
            .max_steps = max_steps,
            .steps_per_epoch = steps_per_epoch,
            .bytes_done = reader_bytes_done(tr->train.r),
            .bytes_total = reader_bytes_total(tr->train.r),
            .lines_done = reader_lines(tr->train.r),
            .max_lines = tr->train.max_lines,
            .examples_read = tr->train.taken,
            .examples_trained = epoch_examples,
        };
        fmt_duration(eta_seconds(&ep), eta, sizeof(eta));
        fprintf(tr->o.progress,
                "\r\033[Kepoch %d step %llu  %.0f samples/s  loss %.4f  ETA %s",
                epoch, (unsigned long long)step, sps,
                epoch_loss / (double)epoch_examples, eta);
        fflush(tr->o.progress);
        pg.line_shown = true;
        pg.last_line = now;
      }
      if (eval_every && step % eval_every == 0) {
        pg.train_seconds += clock_sec() - t_epoch;
        progress_clear(tr, &pg);
        if (evaluate(tr, ps, step, epoch, &bad_evals, &best_auc, &stop, res,
                     err, errlen)) {
          rc = -1;
          break;
        }
        evaluated_now = true;
        t_epoch = clock_sec();
        if (stop)
          break;
      }
    }
    drop_ahead(tr, ps);
    prefetch_stop(&pf);
    if (rc)
      goto out;
    pg.train_seconds += clock_sec() - t_epoch;
    progress_clear(tr, &pg);
    if (epoch == 1)
      steps_per_epoch = epoch_steps;
    if (epoch_examples) {
      double mean = epoch_loss / (double)epoch_examples;
      if (epoch == 1)
        res->first_loss = mean;
      res->last_loss = mean;
      logger_info(tr->o.log, "epoch %d: %llu steps, train loss %.4f", epoch,
                  (unsigned long long)epoch_steps, mean);
    }
    if (res->interrupted)
      break;
    /* per-epoch evaluation; with eval_every_steps, a last one at the end
     * unless the last step was just evaluated */
    bool last = stop || epoch == cfg->train.epochs;
    if (!res->stopped_early && !evaluated_now && (!eval_every || last)) {
      if (evaluate(tr, ps, step, epoch, &bad_evals, &best_auc, &stop, res, err,
                   errlen)) {
        rc = -1;
        goto out;
      }
      evaluated_now = true;
    }
  }
  /* the best dense parameters are the result (if an evaluation chose any:
   * with no valid AUC ever, e.g. one class, the last ones) */
  if (res->best_epoch > 0)
    memcpy(tr->p->values, tr->best, tr->p->len * sizeof(float));
out:
  progress_clear(tr, &pg);
  res->seconds = pg.train_seconds;
  res->samples_per_s =
      pg.train_seconds > 0 ? (double)res->examples / pg.train_seconds : 0;
  res->lr = tr->lr;
  res->read_s = tr->phase[PH_READ];
  res->pull_s = tr->phase[PH_PULL];
  res->compute_s = tr->phase[PH_COMPUTE];
  res->push_s = tr->phase[PH_PUSH];
  logger_record(tr->o.log, step, "done", "ok", rc == 0 ? 1.0 : 0.0, "steps",
                (double)res->steps, "examples", (double)res->examples,
                "samples_per_s", res->samples_per_s, "best_epoch",
                (double)res->best_epoch, "valid_auc", res->valid.auc,
                "test_auc", res->test.auc, "test_logloss", res->test.logloss,
                NULL);
  return rc;
}
