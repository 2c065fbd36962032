/* metrics: AUC by sorted ranks, logloss from logits, gAUC per group. */
#include "worker/metrics.h"

#include "common/check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct entry {
  float score;    /* logit */
  float label;    /* 0 or 1 */
  uint64_t group; /* gAUC group */
};

struct metrics {
  struct entry *e; /* [cap] */
  size_t n, cap;
};

struct metrics *metrics_new(void) {
  return xcalloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m) {
  if (!m)
    return;
  free(m->e);
  free(m);
}

void metrics_reset(struct metrics *m) {
  m->n = 0;
}

size_t metrics_count(const struct metrics *m) {
  return m->n;
}

void metrics_add(struct metrics *m, const float *logits, const float *labels,
                 const uint64_t *groups, size_t n) {
  if (m->n + n > m->cap) {
    size_t cap = m->cap ? m->cap : 1024;
    while (cap < m->n + n)
      cap *= 2;
    m->e = xrealloc(m->e, cap * sizeof(struct entry));
    m->cap = cap;
  }
  for (size_t i = 0; i < n; i++) {
    CHECK(labels[i] == 0.0f || labels[i] == 1.0f, "label %g at %zu",
          (double)labels[i], i);
    m->e[m->n + i] =
        (struct entry){logits[i], labels[i], groups ? groups[i] : 0};
  }
  m->n += n;
}

static int by_score(const void *a, const void *b) {
  float x = ((const struct entry *)a)->score;
  float y = ((const struct entry *)b)->score;
  return (x > y) - (x < y);
}

static int by_group_score(const void *a, const void *b) {
  const struct entry *x = a, *y = b;
  if (x->group != y->group)
    return (x->group > y->group) - (x->group < y->group);
  return (x->score > y->score) - (x->score < y->score);
}

/* AUC of e[0..n) already sorted by score: (sum of the positives' ranks -
 * P(P+1)/2) / (P N), a run of equal scores sharing its mean rank. NAN when
 * a class is absent. */
static double auc_sorted(const struct entry *e, size_t n) {
  double rank_sum = 0; /* of the positives, 1-based ranks */
  uint64_t pos = 0;
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    uint64_t p = 0;
    while (j < n && e[j].score == e[i].score)
      p += e[j++].label == 1.0f;
    /* ranks i+1 .. j share their mean (i + 1 + j) / 2 */
    rank_sum += (double)p * ((double)(i + 1) + (double)j) * 0.5;
    pos += p;
    i = j;
  }
  uint64_t neg = n - pos;
  if (pos == 0 || neg == 0)
    return NAN;
  return (rank_sum - (double)pos * ((double)pos + 1) * 0.5) /
         ((double)pos * (double)neg);
}

static double logloss_entries(const struct entry *e, size_t n) {
  if (n == 0)
    return NAN;
  double s = 0;
  for (size_t i = 0; i < n; i++) {
    double z = e[i].score, y = e[i].label;
    s += fmax(z, 0) - z * y + log1p(exp(-fabs(z)));
  }
  return s / (double)n;
}

/* gAUC of e[0..n) sorted by (group, score). */
static double gauc_sorted(const struct entry *e, size_t n, uint64_t *ngroups) {
  double num = 0, den = 0;
  uint64_t groups = 0;
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    while (j < n && e[j].group == e[i].group)
      j++;
    double a = auc_sorted(e + i, j - i);
    if (!isnan(a)) {
      num += (double)(j - i) * a;
      den += (double)(j - i);
      groups++;
    }
    i = j;
  }
  if (ngroups)
    *ngroups = groups;
  return groups ? num / den : NAN;
}

void metrics_compute(struct metrics *m, struct metrics_result *out) {
  memset(out, 0, sizeof(*out));
  out->n = m->n;
  for (size_t i = 0; i < m->n; i++) {
    out->positives += m->e[i].label == 1.0f;
    out->nonfinite += !isfinite(m->e[i].score);
  }
  if (out->nonfinite) {
    out->auc = out->logloss = out->gauc = NAN;
    return;
  }
  out->logloss = logloss_entries(m->e, m->n);
  if (m->n > 1) /* m->e is NULL before the first add */
    qsort(m->e, m->n, sizeof(struct entry), by_group_score);
  out->gauc = gauc_sorted(m->e, m->n, &out->gauc_groups);
  if (m->n > 1)
    qsort(m->e, m->n, sizeof(struct entry), by_score);
  out->auc = auc_sorted(m->e, m->n);
}

/* Copies arrays into a temporary accumulator (the one-shot helpers). */
static struct metrics *from_arrays(const float *s, const float *y,
                                   const uint64_t *g, size_t n) {
  struct metrics *m = metrics_new();
  metrics_add(m, s, y, g, n);
  return m;
}

double metrics_auc(const float *scores, const float *labels, size_t n) {
  struct metrics *m = from_arrays(scores, labels, NULL, n);
  struct metrics_result r;
  metrics_compute(m, &r);
  metrics_free(m);
  return r.auc;
}

double metrics_logloss(const float *logits, const float *labels, size_t n) {
  struct metrics *m = from_arrays(logits, labels, NULL, n);
  double l = logloss_entries(m->e, m->n);
  metrics_free(m);
  return l;
}

double metrics_gauc(const float *scores, const float *labels,
                    const uint64_t *groups, size_t n, uint64_t *ngroups) {
  struct metrics *m = from_arrays(scores, labels, groups, n);
  struct metrics_result r;
  metrics_compute(m, &r);
  metrics_free(m);
  if (ngroups)
    *ngroups = r.gauc_groups;
  return r.gauc;
}
