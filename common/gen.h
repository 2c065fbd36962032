/*
 * gen: a synthetic Criteo-shaped click log, generated from a seed.
 *
 * What the rows look like (the Criteo TSV format, worker/data.h):
 *
 *   label \t I1..I13 \t C1..C26 \n        40 columns
 *
 *   label  0 or 1, drawn from a hidden model (below); CTR ~ GEN_TARGET_CTR.
 *   I1..13 integers or empty. Log-normal counts floor(exp(mu + sigma*z)),
 *          each field with its own median, spread and missing rate; I2 is
 *          occasionally negative (-1..-3) like Criteo's I2.
 *   C1..26 8 lowercase hex digits or empty. Each field draws a rank from a
 *          Zipf distribution P(k) ~ k^-s over its vocabulary (3 to 20M
 *          values, times vocab_scale) and prints a fixed bijective 32-bit
 *          scramble of (field, rank), so no two ranks share a token.
 *
 * The hidden click model is a function of the printed row only, so its
 * probabilities are what the best possible model could predict:
 *
 *   logit = bias
 *         + sum over C-fields of  w_f(token)         w ~ N(0, sd_f^2),
 *                                                    from hash(seed, f, token)
 *         + sum over 6 field pairs of  g * <u_a(token_a), v_b(token_b)>
 *             (C1xC2, C5xC6, C7xC11, C10xC13, C14xC17, C23xC20; g = 0.5,
 *             rank-4 factors in [-1,1] from hashes: an additive model
 *             cannot see them, an FM/deep model can)
 *         + sum over I-fields of  a_j * t_j + q_j * (t_j^2 - 1)
 *             t_j = clamp((ln(1 + max(x,0)) - mu_j) / sigma_j, -3, 3),
 *             missing read as 0 (as the project's parser does)
 *   p     = sigmoid(logit), rounded to a multiple of 1/GEN_PROB_LEVELS
 *   label = 1 with probability exactly p
 *
 * `bias` is calibrated at gen_new so the CTR is GEN_TARGET_CTR (on 8192
 * rows of a calibration stream). Because p is quantised, the Bayes-optimal
 * AUC of the rows (p against the labels, ties counted 1/2) is computed
 * exactly from two histograms (struct gen_stats), for billions of rows.
 * With vocab_scale 1 it is about 0.80 (0.77 without the pair terms); the
 * tests pin it to 0.75..0.85. It is an upper bound for any model: one that
 * reads rows with worker/data.h sees numeric values only through Criteo
 * buckets, and tokens seen once or never in training cannot be learned,
 * so a good model ends some way below it. Measured once for orientation
 * (seed 1, test rows after the training rows): a hashed logistic regression
 * with Adagrad, one pass, reaches AUC 0.756 against a Bayes AUC of 0.790 on
 * 1M rows at vocab_scale 0.001, and 0.739 against 0.802 on 2M rows at
 * vocab_scale 1; the pair terms are what an FM or deep model can add.
 *
 * Determinism: row i is a function of (seed, vocab_scale, i) only. A
 * counter-based generator (splitmix64 keyed by a hash of seed and i) feeds
 * each row, so any range [start, start+n) can be generated alone, and parts
 * concatenate to the same bytes as one run. The struct is read-only after
 * gen_new: several threads may call gen_row on one gen.
 *
 * Zipf sampling without O(vocabulary) memory: one alias table (Walker/Vose;
 * O(1) per draw) per field holds the first GEN_ZIPF_HEAD ranks one slot
 * each, then "buckets" of consecutive ranks, each at most 2% wider than its
 * first rank (~800 buckets reach 2^32 ranks). A bucket's mass, the sum of
 * k^-s over it, is summed directly for buckets under 1024 ranks, else by
 * Euler-Maclaurin (then its first rank is > 50,000 and the relative error
 * < 1e-15); within a bucket [lo, hi] a rank is drawn uniformly and kept
 * with probability (lo/k)^s, which is exact rejection sampling (~99% kept;
 * a cheap lower bound avoids the pow() nearly always). So the draws follow
 * k^-s exactly up to the 2^-32 resolution of the alias thresholds and the
 * double rounding of the masses; memory is < 40 KB per field whatever the
 * vocabulary. The numeric fields use the same trick: an alias table of the
 * exact probabilities of the values 0..1023, and an exact normal-tail
 * sampler for larger values.
 *
 * Not here: the command-line program (common/main_gen.c) and any reading of
 * the rows (worker/data.h).
 */
#ifndef MASKPS_GEN_H
#define MASKPS_GEN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GEN_NUMERIC 13
#define GEN_CATEGORICAL 26
#define GEN_FIELDS 39
#define GEN_LINE_MAX 512      /* bytes; a formatted line never exceeds it */
#define GEN_PROB_LEVELS 65536 /* p is a multiple of 1/GEN_PROB_LEVELS */
#define GEN_TARGET_CTR 0.225  /* what the bias is calibrated to */
#define GEN_ZIPF_HEAD 1024    /* ranks with their own alias slot */
#define GEN_MAX_SPLITS 8      /* outputs gen_write can split rows over */
#define GEN_MAX_VOCAB 4000000000ull /* tokens are 32-bit */

struct gen;

/* One generated row, before formatting. */
struct gen_row {
  uint8_t label;                        /* 0 or 1 */
  uint32_t prob_q;                      /* p * GEN_PROB_LEVELS, 1..65535 */
  uint8_t num_missing[GEN_NUMERIC];     /* 1: the I-field is empty */
  int64_t num[GEN_NUMERIC];             /* value (0 when missing) */
  uint8_t cat_missing[GEN_CATEGORICAL]; /* 1: the C-field is empty */
  uint32_t cat[GEN_CATEGORICAL];        /* token, printed as %08x */
  uint64_t cat_rank[GEN_CATEGORICAL];   /* Zipf rank 1..vocab; 0 if empty */
};

/* A field's configuration after vocab_scale. Fields 0..12 are I1..I13,
 * 13..38 are C1..C26 (the order of worker/data.h). */
struct gen_field_info {
  const char *name; /* "I1".."I13", "C1".."C26" */
  double missing;   /* probability that the field is empty */
  /* numeric fields (0 for categorical ones): */
  double mu, sigma; /* value = floor(exp(mu + sigma * z)), z ~ N(0,1) */
  double negative;  /* probability of a negative value -1..-3 */
  /* categorical fields (0 for numeric ones): */
  uint64_t vocab; /* number of distinct tokens */
  double zipf_s;  /* Zipf exponent: P(rank k) ~ k^-zipf_s */
};

/* A generator for (seed, vocab_scale). vocab_scale multiplies every
 * C-field's vocabulary (rounded; never below min(vocab, 3) nor above
 * GEN_MAX_VOCAB) so a demo's tables stay small. Returns NULL with the
 * reason in err if vocab_scale is not a finite number in (0, 1000].
 * Takes ~20 ms (alias tables, bias calibration). Caller owns the result;
 * free with gen_free(). */
struct gen *gen_new(uint64_t seed, double vocab_scale, char *err,
                    size_t errlen);
void gen_free(struct gen *g);

/* The configuration of field 0..GEN_FIELDS-1 (CHECKs the index). */
struct gen_field_info gen_field(const struct gen *g, unsigned field);

/* The calibrated bias of the hidden model (logit units). */
double gen_bias(const struct gen *g);

/* Fills *r with row i (a function of seed, vocab_scale and i only). */
void gen_row(const struct gen *g, uint64_t i, struct gen_row *r);

/* The hidden model's logit for a row, from its printed fields only
 * (tokens, values, empties): bias + all terms, before quantisation. */
double gen_logit(const struct gen *g, const struct gen_row *r);

/* The token that C-field c (0..25) prints for rank 1..vocab. */
uint32_t gen_token(const struct gen *g, unsigned c, uint64_t rank);

/* Writes the row as one Criteo TSV line ending in '\n' into buf, which
 * must hold GEN_LINE_MAX bytes. Returns the line's length (no NUL). */
size_t gen_format(const struct gen_row *r, char *buf);

/* Which of n outputs row i goes to when rows are split by fractions
 * frac[0..n-1] (summing to 1): a hash of (seed, i) independent of the
 * row's content, so a split is deterministic and splits of parts
 * concatenate. Returns 0..n-1. */
unsigned gen_split_index(const struct gen *g, uint64_t i, const double *frac,
                         unsigned n);

/* Counts over generated rows: rows, clicks, bytes, and the histograms of
 * quantised probabilities of positive and negative rows (for the exact
 * Bayes AUC). 1 MiB; mergeable, so parallel parts can be combined. */
struct gen_stats {
  uint64_t rows;                 /* rows counted */
  uint64_t clicks;               /* rows with label 1 */
  uint64_t bytes;                /* formatted bytes, '\n' included */
  uint64_t pos[GEN_PROB_LEVELS]; /* label-1 rows by prob_q */
  uint64_t neg[GEN_PROB_LEVELS]; /* label-0 rows by prob_q */
};

/* Zeroed stats. Caller owns the result; free with gen_stats_free(). */
struct gen_stats *gen_stats_new(void);
void gen_stats_free(struct gen_stats *st);
/* Counts one row of `bytes` formatted bytes. */
void gen_stats_add(struct gen_stats *st, const struct gen_row *r, size_t bytes);
/* dst += src. */
void gen_stats_merge(struct gen_stats *dst, const struct gen_stats *src);
/* Clicks / rows; 0 when there are no rows. */
double gen_stats_ctr(const struct gen_stats *st);
/* AUC of the true probabilities against the labels (ties 1/2): the
 * Bayes-optimal AUC of these rows. 0.5 when one class is absent. */
double gen_stats_auc(const struct gen_stats *st);

/* The Zipf sampler the C-fields use, on its own: ranks 1..n with
 * P(k) = k^-s / sum_j j^-s, ranks 1..head each in its own alias slot, the
 * rest in buckets at most bucket_ratio times wider than their first rank
 * (the generator uses head GEN_ZIPF_HEAD, ratio 0.02). Memory O(head +
 * log(n) / bucket_ratio). CHECKs s in (0, 10], n in 1..GEN_MAX_VOCAB,
 * head >= 1, bucket_ratio in (0, 1]. Caller owns the result; free with
 * gen_zipf_free(). Read-only after creation: draws may run in parallel. */
struct gen_zipf;
struct gen_zipf *gen_zipf_new(double s, uint64_t n, uint32_t head,
                              double bucket_ratio);
void gen_zipf_free(struct gen_zipf *z);
/* One rank, advancing *state (a splitmix64 state: any 64-bit value is a
 * valid seed; the same state gives the same draws). */
uint64_t gen_zipf_draw(const struct gen_zipf *z, uint64_t *state);
/* The vocabulary n. */
uint64_t gen_zipf_n(const struct gen_zipf *z);

/* One output of gen_write. */
struct gen_out {
  FILE *f;                 /* borrowed; gen_write flushes, never closes */
  const char *name;        /* for error messages ("train.tsv", "-") */
  double frac;             /* share of rows (ignored with one output) */
  struct gen_stats *stats; /* borrowed, counts this output's rows; or NULL */
};

/* Called every 2^16 rows with the rows written so far. */
typedef void (*gen_progress_fn)(void *ctx, uint64_t done);

/* Generates rows [start, start + n) and writes them, buffered, to outs
 * (nout 1..GEN_MAX_SPLITS; with several outputs each row goes to
 * gen_split_index). Stops at the first write error. Returns 0, or -1 with
 * "<name>: write failed: <strerror>" in err (a full disk, a closed pipe).
 * The caller still has to fclose the files and check that result. */
int gen_write(const struct gen *g, uint64_t start, uint64_t n,
              struct gen_out *outs, unsigned nout, gen_progress_fn progress,
              void *ctx, char *err, size_t errlen);

#endif
