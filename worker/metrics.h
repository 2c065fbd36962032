/*
 * metrics: the evaluation numbers of a CTR model (MODELS.md "Training
 * conventions"): AUC, logloss, and gAUC (per-group AUC weighted by the
 * group's impressions, groups with one class skipped).
 *
 * Streaming-friendly: an evaluation pass adds (logit, label, group) per
 * example with metrics_add, then metrics_compute sorts once and computes
 * everything. Memory is 16 bytes per example added (an eval set of 10M
 * examples holds 160 MB; split it over workers if that is too much).
 *
 * Scores are LOGITS, not probabilities: AUC only needs a monotone score, and
 * logloss from logits is exact where sigmoid(z) would round to 0 or 1 in
 * float (no eps clamp as sklearn's log_loss applies; for probabilities away
 * from 0 and 1 the two agree to float precision).
 *
 * AUC is exact: the Mann-Whitney statistic over sorted scores, tied scores
 * sharing their mean rank (a tie between a positive and a negative counts
 * one half, as sklearn's roc_auc_score). O(n log n).
 *
 * Not here: probability calibration, per-field metrics, multi-worker
 * merging (each worker computes on its share; the launcher merges later).
 */
#ifndef MASKPS_METRICS_H
#define MASKPS_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Everything one evaluation reports. Undefined numbers are NAN: AUC when
 * one class is absent, gAUC when no group has both classes, logloss of an
 * empty set. */
struct metrics_result {
  uint64_t n;           /* examples */
  uint64_t positives;   /* examples with label 1 */
  double auc;           /* area under the ROC curve */
  double logloss;       /* mean binary cross-entropy, natural log */
  double gauc;          /* impression-weighted mean of per-group AUC */
  uint64_t gauc_groups; /* groups that entered gAUC (both classes present) */
  uint64_t nonfinite;   /* examples whose logit was NaN/Inf (AUC, gAUC and
                           logloss are NAN when > 0) */
};

struct metrics;

/* An empty accumulator. Caller owns it; free with metrics_free(). */
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* Forgets every example (the buffer is kept for the next pass). */
void metrics_reset(struct metrics *m);

/* Adds n examples: logits[i], labels[i] (0 or 1; CHECKed), groups[i] (NULL =
 * every example in group 0, i.e. gAUC equals AUC). Borrows the arrays for
 * the call only. */
void metrics_add(struct metrics *m, const float *logits, const float *labels,
                 const uint64_t *groups, size_t n);

/* Examples added since the last reset. */
size_t metrics_count(const struct metrics *m);

/* Computes every metric over the examples added so far (reorders the
 * internal buffer; adding more afterwards is fine). */
void metrics_compute(struct metrics *m, struct metrics_result *out);

/* One-shot helpers over arrays (same definitions as metrics_compute). */
double metrics_auc(const float *scores, const float *labels, size_t n);
double metrics_logloss(const float *logits, const float *labels, size_t n);
double metrics_gauc(const float *scores, const float *labels,
                    const uint64_t *groups, size_t n, uint64_t *ngroups);

#endif
