/*
 * train: the worker's training loop (DESIGN.md "Processes and data flow",
 * MODELS.md "Training conventions"), written against common/ps.h alone so
 * the same loop runs embedded (an in-process store) and distributed.
 *
 * One step:
 *   reader -> batch (distinct keys, index map, batch counts/clicks)
 *     -> ps_pull of every table -> E (B, F*D) [+ w (B, F) for LR/FM/DeepFM]
 *     -> model forward, logloss, backward -> dE [, dw] -> per-key grads
 *     -> global grad-norm clip over dense AND sparse gradients (FuxiCTR
 *        clips every parameter of the model, embeddings included)
 *     -> ps_push of every table (prefix lengths, counts, clicks) and the
 *        dense step.
 *
 * Tables: table 0 holds the D-float embeddings of every field; models that
 * take LR weights (LR, FM, DeepFM) also read table 1, of 1 float per key
 * (never AMTL). train_tables() says which; whoever opens the store creates
 * them.
 *
 * Dense parameters, two ways (train_opts.dense_via_ps):
 *   0  the worker holds them (params + Adam/SGD): embedded mode's default.
 *      The learning rate is then the worker's, so lr x lr_decay_factor on a
 *      plateau applies to the dense network.
 *   1  through ps_pull_dense/ps_push_dense every step (Adam on the
 *      pserver), the initial values set with ps_set_dense. This is the
 *      distributed path (several workers must share one dense vector); run
 *      embedded this way, it is the reference for the sync-mode
 *      equivalence test.
 * Learning-rate decay (lr x train.lr_decay_factor on a plateau) reaches
 * every optimizer: the worker's dense one through its lr, the store's
 * (the embeddings', and the dense Adam when dense_via_ps) through
 * ps_set_lr_scale with the product of the decays so far; the eval records
 * carry it as lr_scale.
 *
 * Evaluation: once per epoch (or every train.eval_every_steps) on the
 * validation data: AUC, logloss, gAUC. When the validation AUC improves,
 * the dense parameters are kept as the best and the test data is evaluated
 * at once, so "the test metrics of the best state" need no restore of the
 * embedding rows (the store has moved on by the end); otherwise lr is
 * multiplied by train.lr_decay_factor, and after train.patience evaluations
 * without improvement training stops. At the end the best dense parameters
 * are copied back; with opts.best_dir the best rows and dense parameters
 * are also on disk (what `maskps predict` reads), so predicting the test
 * file reproduces the reported test metrics.
 *
 * Validation/test data: data.valid/data.test files, or the lines of the
 * training files held out by data.split_valid/split_test (a hash of the
 * line number and data.split_seed decides, so the split is fixed across
 * runs and epochs). data.max_lines caps every pass.
 *
 * Order: the training pass goes through a shuffle buffer of
 * data.shuffle_buffer examples (worker/shuffle.h; 0 = file order), seeded
 * by train.seed, the epoch and the rank. Evaluation and prediction read in
 * file order.
 *
 * Logs: JSONL records via the logger: "train" every log.interval_s (loss
 * averaged since the last record, samples/s, lr, epoch, and the mean
 * milliseconds per step spent reading, pulling, computing and pushing),
 * "valid" and "test" per evaluation (auc, logloss, gauc, examples), "done"
 * at the end; a progress line on opts.progress (a terminal): samples/s,
 * the epoch's mean loss, and the ETA (worker/eta.h: in epoch 1 from the
 * share of the training files' bytes read, later from steps).
 *
 * Determinism: a run is a function of the config (seeds, data order); two
 * runs of one config give the same per-step losses, bit for bit, when
 * train.threads is fixed (the model splits batches over that many threads,
 * nn/model.h, and train.threads 0 counts this machine's CPUs) and OpenBLAS
 * runs on one thread inside each slice (it does: the split sets that).
 *
 * AMTL (embedding.amtl): the layer of worker/nn/amtl.h sits between the
 * gathered E and the model, on table 0, with the store's count/clicks of
 * each value as its frequency features. Each (example, field) value picks
 * a prefix p; a key's prefix to store (pushed as plen) is the longest its
 * values picked in the batch, and its gradient covers the part of that
 * prefix the row stores now, so nothing beyond a stored prefix is ever
 * pushed. The store refuses to shrink rows before
 * embedding.amtl_warmup_steps (growth is always allowed). Keys not
 * admitted yet (min_count) keep p = 0 and push no gradient. The "train"
 * records carry amtl_mean_prefix (mean p over the values trained since
 * the last record).
 *
 * Threads: during a training pass, one reader thread reads, parses and
 * de-duplicates batch t+1 while the caller's thread trains batch t (two
 * batches alternate, three with the pull overlap; the batch order is the
 * same as without it). Every
 * ps call is made from the caller's thread, as ps.h requires. Evaluation
 * passes read on the caller's thread.
 *
 * Consistency (train.mode): sync calls ps_barrier after every step's
 * pushes; async never (except the start barrier of several workers); ssp
 * every train.staleness steps, which keeps any worker at most staleness
 * steps ahead of the slowest. With several workers, sync and ssp need the
 * same number of steps per epoch on every worker (the training lines
 * divided evenly, batch_size dividing each share), and rank 0's early stop
 * or evaluation-length pauses reach the others only through the barrier:
 * a worker that waits at a barrier nobody else will reach fails after the
 * request timeout (ps_net.h) rather than hang. Dependable: W = 1 (any
 * mode) and W > 1 in async mode.
 *
 * Data: Criteo, libFM or CSV (worker/data.h, worker/reader.h). Examples
 * with values (libFM idx:x, CSV value columns) feed x times the row
 * (worker/batch.h); a CSV group column feeds gAUC.
 *
 * Pull overlap (train.prefetch, async and ssp modes): during step t, once
 * batch t's rows are in, batch t+1's pulls are started (ps_pull_start) and
 * the pservers answer them while batch t computes and pushes; step t+1
 * only collects the replies. Those pulls are sent before batch t's push,
 * so batch t+1 reads rows without batch t's update: one step more
 * staleness in async mode. In ssp mode no pull is started across a
 * barrier, so the bound stays what train.staleness says: the rows read at
 * step t carry every worker's pushes of steps <= t - staleness (staleness
 * 1 leaves nothing to overlap). Runs stay deterministic (one worker: the
 * same losses embedded and distributed), since a started pull reads the
 * rows as of its start (ps.h). Sync mode never overlaps. The dense pull
 * (dense_via_ps) is not overlapped.
 */
#ifndef MASKPS_TRAIN_H
#define MASKPS_TRAIN_H

#include "common/ps.h"
#include "worker/metrics.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct config;
struct logger;
struct params;

#define TRAIN_MAX_TABLES 2

struct train_opts {
  const struct config *cfg; /* borrowed; must outlive the trainer */
  struct logger *log;       /* borrowed; human lines and JSONL; may be NULL */
  FILE *progress;           /* progress line target (a tty), NULL = none */
  bool dense_via_ps;        /* see the header comment */
  /* On every validation improvement, the state of that moment goes to
   * best_dir: the store's checkpoint (ps_checkpoint: best_dir/shard-<i>)
   * and the dense parameters (best_dir/dense.bin, params_save), written to
   * best_dir.tmp and renamed over the previous best, so a crash leaves
   * either the old or the new one whole. NULL = keep nothing on disk. */
  const char *best_dir;
  int fields; /* 0: open the config's data and learn F from data.train;
                 > 0: open no data, F = fields (prediction only: then
                 train_run fails and train_eval_files works) */
  /* called after every training step with its loss (tests); may be NULL */
  void (*on_step)(void *ctx, uint64_t step, double loss);
  void *ctx;
  volatile sig_atomic_t *stop; /* set (Ctrl-C): stop after the step */
  /* Distributed mode with W workers: rank in 0..nranks-1 reads line i of
   * the training data when i mod nranks == rank. Rank 0 alone sets the
   * initial dense values, evaluates, keeps the best state and decides on
   * early stopping; with nranks > 1 every worker waits at a barrier of step
   * 0 before its first pull. 0/0 = 0/1 (one worker). */
  uint32_t rank, nranks;
};

struct train_result {
  uint64_t steps;       /* training steps taken */
  uint64_t examples;    /* training examples seen */
  int epochs;           /* epochs started */
  int best_epoch;       /* epoch of the best validation AUC, 0 = none */
  uint64_t best_step;   /* step of that evaluation */
  double seconds;       /* wall time of the training passes */
  double samples_per_s; /* examples / seconds (evaluation excluded) */
  /* where the training seconds went: reading and parsing + batching, ps
   * pulls (+ gather, AMTL stats), the model forward/backward + clipping,
   * ps pushes + the dense step (+ the barrier) */
  double read_s, pull_s, compute_s, push_s;
  double lr;                   /* dense lr at the end */
  double first_loss;           /* mean training loss of the first epoch */
  double last_loss;            /* mean training loss of the last epoch */
  bool has_valid, has_test;    /* whether there was such data */
  struct metrics_result valid; /* best validation metrics */
  struct metrics_result test;  /* test metrics at the best validation */
  bool stopped_early;          /* patience ran out */
  bool interrupted;            /* opts.stop was set */
};

struct trainer;

/* Opens the readers (learning the field count F), checks the config, and
 * builds the model and its dense parameters (initialised from train.seed).
 * Returns NULL with a message in err for an outside fault (no data file, a
 * model option that does not fit, a setting not supported yet). Caller owns
 * the result; free with train_free(). */
struct trainer *train_new(const struct train_opts *o, char *err, size_t errlen);
void train_free(struct trainer *tr);

/* The tables the loop uses: ids[i], dims[i] floats per row; returns their
 * count (1 or 2). Arrays hold TRAIN_MAX_TABLES. */
int train_tables(const struct trainer *tr, uint32_t *ids, int *dims);

/* Floats in the flat dense vector (the store's dense_total when
 * dense_via_ps). */
uint64_t train_dense_total(const struct trainer *tr);

/* F: fields per example. */
int train_fields(const struct trainer *tr);

/* The dense parameters (borrowed): after train_run, the best ones. */
struct params *train_params(struct trainer *tr);

/* Trains as the config says against ps, whose tables must be those of
 * train_tables (and whose dense_total train_dense_total when dense_via_ps).
 * Fills res (also on failure, as far as it got). Returns 0, or -1 with err
 * set: a data error (too many bad lines, I/O), a parameter-store error,
 * or a diverged loss (a non-finite gradient norm, named with its step). */
int train_run(struct trainer *tr, struct ps *ps, struct train_result *res,
              char *err, size_t errlen);

/* Evaluates the current state on every line of files (paths/globs; the
 * config's format; data.max_lines does not apply) and, when probs_out is
 * not NULL, writes one click probability per line, in input order
 * ("%.6f\n"). Pulls rows without pushing. A malformed line is an error
 * (after the answers of the batches before it were written: check the
 * file first when that matters, as maskps predict does). Returns 0, or -1
 * with err set (unreadable file, malformed line, field count other than
 * the model's, a parameter-store error). */
int train_eval_files(struct trainer *tr, struct ps *ps,
                     const char *const *paths, size_t npaths, FILE *probs_out,
                     struct metrics_result *out, char *err, size_t errlen);

#endif
