/* gen: the synthetic click log is well-formed, deterministic, splittable into
 * parts, and has the configured shape: CTR, Zipf exponents, missing rates,
 * and a Bayes AUC that an independent computation reproduces. */
#include "common/gen.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define SEED 20261124ull
#define NROWS 200000

/* ---- one pass over NROWS rows, shared by the shape tests ---------------- */

static struct gen *G;
static uint16_t *Q;    /* [NROWS] prob_q */
static uint8_t *LAB;   /* [NROWS] label */
static uint64_t *RANK; /* [3][NROWS] ranks of the ZIPF_FIELDS (0: empty) */
static uint64_t MISS[GEN_FIELDS], NEG[GEN_NUMERIC], NEG_BAD;
static uint64_t BAD_TOKEN, BAD_RANK;
/* Numeric values at most CUT[t], per field (present, non-negative only). */
static const int64_t CUT[] = {0, 1, 3, 30, 1023, 1024, 5000, 100000};
#define NCUT (sizeof(CUT) / sizeof(*CUT))
static uint64_t LE[GEN_NUMERIC][NCUT], NONNEG[GEN_NUMERIC];
static struct gen_stats *ST, *ST_A, *ST_B; /* all rows; rows < 1000; rest */

/* C2, C7 and C3: indices into the C-fields (see test_zipf_fields). */
static const unsigned ZIPF_FIELDS[3] = {1, 6, 2};

static int setup(void **state) {
  (void)state;
  char err[128];
  G = gen_new(SEED, 1.0, err, sizeof(err));
  if (!G)
    return -1;
  Q = malloc(sizeof(*Q) * NROWS);
  LAB = malloc(NROWS);
  RANK = malloc(sizeof(*RANK) * 3 * NROWS);
  ST = gen_stats_new();
  ST_A = gen_stats_new();
  ST_B = gen_stats_new();
  struct gen_row r;
  char line[GEN_LINE_MAX];
  for (uint64_t i = 0; i < NROWS; i++) {
    gen_row(G, i, &r);
    size_t len = gen_format(&r, line);
    gen_stats_add(ST, &r, len);
    gen_stats_add(i < 1000 ? ST_A : ST_B, &r, len);
    Q[i] = (uint16_t)r.prob_q;
    LAB[i] = r.label;
    for (unsigned j = 0; j < GEN_NUMERIC; j++) {
      MISS[j] += r.num_missing[j];
      NEG[j] += !r.num_missing[j] && r.num[j] < 0;
      NEG_BAD += !r.num_missing[j] && r.num[j] < -3;
      if (r.num_missing[j] || r.num[j] < 0)
        continue;
      NONNEG[j]++;
      for (unsigned t = 0; t < NCUT; t++)
        LE[j][t] += r.num[j] <= CUT[t];
    }
    for (unsigned c = 0; c < GEN_CATEGORICAL; c++) {
      MISS[GEN_NUMERIC + c] += r.cat_missing[c];
      if (r.cat_missing[c])
        continue;
      struct gen_field_info fi = gen_field(G, GEN_NUMERIC + c);
      if (r.cat_rank[c] < 1 || r.cat_rank[c] > fi.vocab) {
        BAD_RANK++;
        continue;
      }
      BAD_TOKEN += r.cat[c] != gen_token(G, c, r.cat_rank[c]);
    }
    for (unsigned z = 0; z < 3; z++)
      RANK[z * NROWS + i] = r.cat_rank[ZIPF_FIELDS[z]];
  }
  return 0;
}

static int teardown(void **state) {
  (void)state;
  gen_free(G);
  free(Q);
  free(LAB);
  free(RANK);
  gen_stats_free(ST);
  gen_stats_free(ST_A);
  gen_stats_free(ST_B);
  return 0;
}

/* ---- format ------------------------------------------------------------- */

/* Parses a line by the format's rules into r (num, cat, *_missing, label).
 * Fails the test at the first rule the line breaks. */
static void parse_line(const char *line, size_t len, struct gen_row *r) {
  assert_true(len >= 2 && len <= GEN_LINE_MAX);
  assert_int_equal(line[len - 1], '\n');
  const char *col[40];
  size_t clen[40], ncol = 0, start = 0;
  for (size_t i = 0; i < len; i++)
    if (line[i] == '\t' || line[i] == '\n') {
      assert_true(ncol < 40);
      col[ncol] = line + start;
      clen[ncol++] = i - start;
      start = i + 1;
    }
  assert_int_equal(ncol, 40);
  assert_int_equal(clen[0], 1);
  assert_true(col[0][0] == '0' || col[0][0] == '1');
  r->label = (uint8_t)(col[0][0] - '0');
  for (unsigned j = 0; j < GEN_NUMERIC; j++) {
    const char *s = col[1 + j];
    size_t n = clen[1 + j], k = 0;
    r->num_missing[j] = n == 0;
    r->num[j] = 0;
    if (n == 0)
      continue;
    int neg = s[0] == '-';
    k = (size_t)neg;
    assert_true(n > k && n - k <= 19);
    assert_false(s[k] == '0' && n - k > 1); /* no leading zeros, no -0 */
    assert_false(neg && s[k] == '0');
    int64_t v = 0;
    for (; k < n; k++) {
      assert_true(s[k] >= '0' && s[k] <= '9');
      v = v * 10 + (s[k] - '0');
    }
    r->num[j] = neg ? -v : v;
  }
  for (unsigned c = 0; c < GEN_CATEGORICAL; c++) {
    const char *s = col[1 + GEN_NUMERIC + c];
    size_t n = clen[1 + GEN_NUMERIC + c];
    r->cat_missing[c] = n == 0;
    r->cat[c] = 0;
    if (n == 0)
      continue;
    assert_int_equal(n, 8);
    uint32_t v = 0;
    for (size_t k = 0; k < 8; k++) {
      int d = s[k] >= '0' && s[k] <= '9'   ? s[k] - '0'
              : s[k] >= 'a' && s[k] <= 'f' ? s[k] - 'a' + 10
                                           : -1;
      assert_true(d >= 0); /* lowercase hex only */
      v = v << 4 | (uint32_t)d;
    }
    r->cat[c] = v;
  }
}

/* Every line is 40 columns of the right kinds, reads back as the row that
 * made it, and the hidden model's logit depends on the printed fields only. */
static void test_lines_parse_back(void **state) {
  (void)state;
  char line[GEN_LINE_MAX];
  struct gen_row r, p;
  for (uint64_t i = 0; i < 10000; i++) {
    gen_row(G, i, &r);
    size_t n = gen_format(&r, line);
    memset(&p, 0, sizeof(p));
    parse_line(line, n, &p);
    assert_int_equal(p.label, r.label);
    for (unsigned j = 0; j < GEN_NUMERIC; j++) {
      assert_int_equal(p.num_missing[j], r.num_missing[j]);
      assert_int_equal(p.num[j], r.num[j]);
    }
    for (unsigned c = 0; c < GEN_CATEGORICAL; c++) {
      assert_int_equal(p.cat_missing[c], r.cat_missing[c]);
      assert_int_equal(p.cat[c], r.cat[c]);
    }
    double lg = gen_logit(G, &p);
    assert_true(lg == gen_logit(G, &r));
    double q = floor(GEN_PROB_LEVELS / (1 + exp(-lg)) + 0.5);
    q = q < 1 ? 1 : q > GEN_PROB_LEVELS - 1 ? GEN_PROB_LEVELS - 1 : q;
    assert_int_equal((uint32_t)q, r.prob_q);
  }
}

/* Tokens are a bijection of ranks; rows carry the token of their rank; only
 * I2 goes negative, and only to -1..-3. */
static void test_tokens_and_values(void **state) {
  (void)state;
  assert_int_equal(BAD_RANK, 0);
  assert_int_equal(BAD_TOKEN, 0);
  struct gen_field_info c1 = gen_field(G, GEN_NUMERIC + 0);
  uint64_t n = c1.vocab;
  uint32_t *t = malloc(sizeof(*t) * n);
  for (uint64_t k = 1; k <= n; k++)
    t[k - 1] = gen_token(G, 0, k);
  for (uint64_t a = 0; a < n; a++)
    for (uint64_t b = a + 1; b < n; b++)
      assert_int_not_equal(t[a], t[b]);
  free(t);
  assert_int_equal(NEG_BAD, 0);
  for (unsigned j = 0; j < GEN_NUMERIC; j++) {
    struct gen_field_info fi = gen_field(G, j);
    if (fi.negative == 0) {
      assert_int_equal(NEG[j], 0);
      continue;
    }
    double present = (double)(NROWS - MISS[j]);
    double sd = sqrt(fi.negative * (1 - fi.negative) / present);
    assert_true(fabs((double)NEG[j] / present - fi.negative) < 5 * sd);
  }
}

/* Numeric values are floor(exp(mu + sigma z)): the share at most v is
 * Phi((ln(v+1) - mu) / sigma), at cut points in the alias table, at its
 * edge (1023, 1024) and in the sampled tail (5000, 100000). */
static void test_numeric_lognormal(void **state) {
  (void)state;
  for (unsigned j = 0; j < GEN_NUMERIC; j++) {
    struct gen_field_info fi = gen_field(G, j);
    double n = (double)NONNEG[j];
    assert_true(n > 0.2 * NROWS);
    for (unsigned t = 0; t < NCUT; t++) {
      double z = (log((double)CUT[t] + 1) - fi.mu) / fi.sigma;
      double want = 0.5 * erfc(-z / sqrt(2.0)), got = (double)LE[j][t] / n;
      double sd = sqrt(want * (1 - want) / n);
      if (fabs(got - want) > 5 * sd + 1e-9)
        fail_msg("I%u: P(x <= %lld) = %.5f, want %.5f", j + 1,
                 (long long)CUT[t], got, want);
    }
  }
  /* I5 is mostly in the tail: the tail sampler is exercised */
  assert_true((double)LE[4][5] / (double)NONNEG[4] < 0.7);
}

/* ---- determinism and parts ---------------------------------------------- */

/* Generates rows [start, start+n) with gen_write into a memory buffer
 * (appending to *buf). With nout > 1, splits by frac into bufs[]. */
static void write_rows(const struct gen *g, uint64_t start, uint64_t n,
                       unsigned nout, const double *frac, char **bufs,
                       size_t *lens) {
  struct gen_out outs[GEN_MAX_SPLITS];
  for (unsigned k = 0; k < nout; k++) {
    outs[k].f = open_memstream(&bufs[k], &lens[k]);
    assert_non_null(outs[k].f);
    outs[k].name = "mem";
    outs[k].frac = frac ? frac[k] : 1;
    outs[k].stats = NULL;
  }
  char err[256];
  assert_int_equal(
      gen_write(g, start, n, outs, nout, NULL, NULL, err, sizeof(err)), 0);
  for (unsigned k = 0; k < nout; k++)
    assert_int_equal(fclose(outs[k].f), 0);
}

static void test_same_seed_same_bytes(void **state) {
  (void)state;
  char err[128];
  struct gen *a = gen_new(7, 0.01, err, sizeof(err));
  struct gen *b = gen_new(7, 0.01, err, sizeof(err));
  struct gen *c = gen_new(8, 0.01, err, sizeof(err));
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  char *ba, *bb, *bc;
  size_t la, lb, lc;
  write_rows(a, 0, 5000, 1, NULL, &ba, &la);
  write_rows(b, 0, 5000, 1, NULL, &bb, &lb);
  write_rows(c, 0, 5000, 1, NULL, &bc, &lc);
  assert_true(la > 5000 * 100);
  assert_int_equal(la, lb);
  assert_memory_equal(ba, bb, la);
  /* Another seed: different data, and different lines nearly everywhere. */
  assert_true(la != lc || memcmp(ba, bc, la) != 0);
  unsigned same = 0;
  for (const char *p = ba, *q = bc; *p && *q;) {
    const char *pe = strchr(p, '\n'), *qe = strchr(q, '\n');
    same += pe - p == qe - q && !memcmp(p, q, (size_t)(pe - p));
    p = pe + 1;
    q = qe + 1;
  }
  assert_true(same < 5);
  assert_true(gen_bias(a) == gen_bias(b));
  free(ba);
  free(bb);
  free(bc);
  gen_free(a);
  gen_free(b);
  gen_free(c);
}

/* Rows [0, n) written in two or three parts concatenate to one run's bytes,
 * also when split over three outputs. */
static void test_parts_concatenate(void **state) {
  (void)state;
  char err[128];
  struct gen *g = gen_new(99, 0.001, err, sizeof(err));
  assert_non_null(g);
  char *whole, *p1, *p2, *p3;
  size_t lw, l1, l2, l3;
  write_rows(g, 0, 6000, 1, NULL, &whole, &lw);
  write_rows(g, 0, 1234, 1, NULL, &p1, &l1);
  write_rows(g, 1234, 4000, 1, NULL, &p2, &l2);
  write_rows(g, 5234, 766, 1, NULL, &p3, &l3);
  assert_int_equal(l1 + l2 + l3, lw);
  assert_memory_equal(whole, p1, l1);
  assert_memory_equal(whole + l1, p2, l2);
  assert_memory_equal(whole + l1 + l2, p3, l3);
  free(whole);
  free(p1);
  free(p2);
  free(p3);

  const double frac[3] = {0.8, 0.1, 0.1};
  char *sw[3], *sa[3], *sb[3];
  size_t lsw[3], lsa[3], lsb[3];
  write_rows(g, 0, 6000, 3, frac, sw, lsw);
  write_rows(g, 0, 2500, 3, frac, sa, lsa);
  write_rows(g, 2500, 3500, 3, frac, sb, lsb);
  size_t lines = 0;
  for (unsigned k = 0; k < 3; k++) {
    assert_int_equal(lsa[k] + lsb[k], lsw[k]);
    assert_memory_equal(sw[k], sa[k], lsa[k]);
    assert_memory_equal(sw[k] + lsa[k], sb[k], lsb[k]);
    for (size_t i = 0; i < lsw[k]; i++)
      lines += sw[k][i] == '\n';
    free(sw[k]);
    free(sa[k]);
    free(sb[k]);
  }
  assert_int_equal(lines, 6000);
  gen_free(g);
}

/* The split index is a deterministic function of the row index with the
 * requested shares. */
static void test_split_shares(void **state) {
  (void)state;
  const double frac[3] = {0.8, 0.1, 0.1};
  uint64_t cnt[3] = {0};
  const uint64_t n = 100000;
  for (uint64_t i = 0; i < n; i++) {
    unsigned k = gen_split_index(G, i, frac, 3);
    assert_true(k < 3);
    assert_int_equal(k, gen_split_index(G, i, frac, 3));
    cnt[k]++;
  }
  for (unsigned k = 0; k < 3; k++) {
    double sd = sqrt(frac[k] * (1 - frac[k]) / (double)n);
    assert_true(fabs((double)cnt[k] / (double)n - frac[k]) < 5 * sd);
  }
  assert_int_equal(gen_split_index(G, 5, frac, 1), 0);
}

/* ---- shape -------------------------------------------------------------- */

static int cmp(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static void test_ctr_calibrated(void **state) {
  (void)state;
  assert_int_equal(ST->rows, NROWS);
  double ctr = gen_stats_ctr(ST);
  assert_true(ctr > 0.20 && ctr < 0.25);
  /* calibrated on 8192 rows of another stream (sd ~0.002) plus this
   * sample's noise (sd ~0.001): 0.01 is 4 sd */
  assert_true(fabs(ctr - GEN_TARGET_CTR) < 0.01);
  /* Labels follow the stated probabilities: in each decile of p, the click
   * rate matches the mean p within 5 binomial sd. */
  uint32_t *q = malloc(sizeof(*q) * NROWS);
  for (uint64_t i = 0; i < NROWS; i++)
    q[i] = (uint32_t)Q[i] << 1 | LAB[i];
  qsort(q, NROWS, sizeof(*q), cmp);
  for (unsigned d = 0; d < 10; d++) {
    size_t lo = d * NROWS / 10, hi = (d + 1) * NROWS / 10;
    double sp = 0, sl = 0, sv = 0;
    for (size_t i = lo; i < hi; i++) {
      double p = (double)(q[i] >> 1) / GEN_PROB_LEVELS;
      sp += p;
      sv += p * (1 - p);
      sl += q[i] & 1;
    }
    assert_true(fabs(sl - sp) < 5 * sqrt(sv) + 1);
  }
  free(q);
}

/* The Bayes AUC from the histograms equals the Mann-Whitney statistic by
 * sorting with mid-ranks for ties, and is in the Criteo-like range. */
static void test_bayes_auc(void **state) {
  (void)state;
  uint32_t *q = malloc(sizeof(*q) * NROWS);
  for (uint64_t i = 0; i < NROWS; i++)
    q[i] = (uint32_t)Q[i] << 1 | LAB[i];
  qsort(q, NROWS, sizeof(*q), cmp);
  double rank_sum = 0, npos = 0;
  for (size_t i = 0; i < NROWS;) {
    size_t j = i;
    while (j < NROWS && q[j] >> 1 == q[i] >> 1)
      j++;
    double mid = (double)(i + 1 + j) / 2; /* ranks i+1..j, 1-based */
    for (size_t k = i; k < j; k++)
      if (q[k] & 1) {
        rank_sum += mid;
        npos++;
      }
    i = j;
  }
  double nneg = NROWS - npos;
  double auc = (rank_sum - npos * (npos + 1) / 2) / (npos * nneg);
  assert_true(fabs(auc - gen_stats_auc(ST)) < 1e-9);
  assert_true(auc > 0.75 && auc < 0.85);
  free(q);

  /* Merged stats are the stats of the union. */
  assert_true(gen_stats_auc(ST_A) != gen_stats_auc(ST));
  gen_stats_merge(ST_A, ST_B);
  assert_int_equal(ST_A->rows, ST->rows);
  assert_int_equal(ST_A->clicks, ST->clicks);
  assert_int_equal(ST_A->bytes, ST->bytes);
  assert_true(gen_stats_auc(ST_A) == gen_stats_auc(ST));
  struct gen_stats *e = gen_stats_new();
  assert_true(gen_stats_auc(e) == 0.5);
  assert_true(gen_stats_ctr(e) == 0);
  gen_stats_free(e);
}

/* Sorts ranks (all < 2^32) by four 8-bit counting passes: linear time,
 * which matters for millions of draws under ASan. */
static void sort_ranks(uint64_t *a, uint64_t m) {
  uint64_t *tmp = malloc(sizeof(*tmp) * m);
  for (unsigned shift = 0; shift < 32; shift += 8) {
    uint64_t pos[257] = {0};
    for (uint64_t i = 0; i < m; i++)
      pos[((a[i] >> shift) & 0xff) + 1]++;
    for (unsigned b = 0; b < 256; b++)
      pos[b + 1] += pos[b];
    for (uint64_t i = 0; i < m; i++)
      tmp[pos[(a[i] >> shift) & 0xff]++] = a[i];
    memcpy(a, tmp, sizeof(*a) * m);
  }
  free(tmp);
}

/* Checks m draws rk[] (sorted here) against Zipf(s, n): the top rank's
 * share is 1/H(n,s); with `slope`, the rank-frequency slope over ranks
 * 1..30 is -s within 0.06; and a chi-square test over bins of consecutive
 * ranks (each expecting >= 40 draws, all n ranks covered) passes at 5 sd.
 * The pmf is summed directly here, independently of the sampler's tables. */
static void check_zipf(uint64_t *rk, uint64_t m, double s, uint64_t n,
                       int slope) {
  for (uint64_t i = 0; i < m; i++)
    assert_true(rk[i] >= 1 && rk[i] <= n);
  sort_ranks(rk, m);
  /* One pass over all n ranks: a bin closes when its mass is 40 draws'
   * worth by a lower bound of H (the integral of x^-s from 1 to n+1); H
   * itself is summed alongside and the bins are normalised afterwards. */
  double Hlow = s == 1 ? log(n + 1.0) : (pow(n + 1.0, 1 - s) - 1) / (1 - s);
  size_t nbin = 0, cap = m / 40 + 2;
  double *bmass = calloc(cap, sizeof(double));
  uint64_t *bobs = calloc(cap, sizeof(uint64_t));
  uint64_t i = 0;
  double H = 0;
  for (uint64_t k = 1; k <= n; k++) {
    double w = pow((double)k, -s);
    H += w;
    bmass[nbin] += w;
    while (i < m && rk[i] == k) {
      bobs[nbin]++;
      i++;
    }
    if (bmass[nbin] / Hlow * (double)m >= 40 || k == n)
      nbin++;
    assert_true(nbin < cap);
  }
  assert_int_equal(i, m); /* no rank outside 1..n */

  uint64_t top = 0;
  while (top < m && rk[top] == 1)
    top++;
  double want = 1 / H, got = (double)top / (double)m;
  assert_true(fabs(got - want) < 5 * sqrt(want * (1 - want) / (double)m));

  if (slope) { /* least squares of log count on log rank */
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    i = 0;
    for (uint64_t k = 1; k <= 30; k++) {
      uint64_t c = 0;
      while (i < m && rk[i] == k) {
        c++;
        i++;
      }
      assert_true(c > 0);
      double x = log((double)k), y = log((double)c);
      sx += x;
      sy += y;
      sxx += x * x;
      sxy += x * y;
    }
    double b = (30 * sxy - sx * sy) / (30 * sxx - sx * sx);
    assert_true(fabs(b + s) < 0.06);
  }

  double chi2 = 0;
  for (size_t b = 0; b < nbin; b++) {
    double e = bmass[b] / H * (double)m;
    chi2 += ((double)bobs[b] - e) * ((double)bobs[b] - e) / e;
  }
  free(bmass);
  free(bobs);
  /* chi-square with nbin-1 degrees of freedom: mean nbin-1, sd
   * sqrt(2(nbin-1)) */
  double df = (double)nbin - 1;
  assert_true(df >= 20);
  assert_true(chi2 < df + 5 * sqrt(2 * df));
}

/* The C-fields of the shared pass follow their Zipf distributions: C2
 * (583 values, all in the alias head), C7 (12,500: head and buckets), C3
 * (20M: mostly buckets). */
static void test_zipf_fields(void **state) {
  (void)state;
  uint64_t *rk = malloc(sizeof(*rk) * NROWS);
  for (unsigned z = 0; z < 3; z++) {
    struct gen_field_info fi = gen_field(G, GEN_NUMERIC + ZIPF_FIELDS[z]);
    uint64_t m = 0;
    for (uint64_t i = 0; i < NROWS; i++)
      if (RANK[z * NROWS + i])
        rk[m++] = RANK[z * NROWS + i];
    check_zipf(rk, m, fi.zipf_s, fi.vocab, 1);
  }
  free(rk);
}

/* The sampler alone, with wide buckets where drawing uniformly inside a
 * bucket (a missing or wrong rejection step) or a wrong bucket mass would
 * be far off: 700k draws, per-rank bins where they expect >= 40. Also s < 1,
 * s = 1 exactly, and the generator's own bucket shape. */
static void test_zipf_sampler(void **state) {
  (void)state;
  const struct {
    double s;
    uint64_t n;
    uint32_t head;
    double ratio;
  } cfg[] = {
      {1.1, 3000, 10, 0.5},   /* buckets [11,16], [17,25], ... */
      {0.8, 1000000, 1, 1.0}, /* doubling buckets; Euler-Maclaurin masses */
      {1.0, 50000, GEN_ZIPF_HEAD, 0.02},
      {2.5, 100, 4, 1.0},
  };
  const uint64_t m = 700000;
  uint64_t *rk = malloc(sizeof(*rk) * m);
  for (size_t c = 0; c < sizeof(cfg) / sizeof(*cfg); c++) {
    struct gen_zipf *z =
        gen_zipf_new(cfg[c].s, cfg[c].n, cfg[c].head, cfg[c].ratio);
    assert_int_equal(gen_zipf_n(z), cfg[c].n);
    uint64_t st = 12345 + c;
    for (uint64_t i = 0; i < m; i++)
      rk[i] = gen_zipf_draw(z, &st);
    check_zipf(rk, m, cfg[c].s, cfg[c].n, 0);
    /* same state, same draws */
    uint64_t a = 99, b = 99;
    for (int i = 0; i < 100; i++)
      assert_int_equal(gen_zipf_draw(z, &a), gen_zipf_draw(z, &b));
    gen_zipf_free(z);
  }
  free(rk);
  gen_zipf_free(NULL);
}

/* Each field is empty at its configured rate (within 5 binomial sd); fields
 * configured never empty are never empty. */
static void test_missing_rates(void **state) {
  (void)state;
  for (unsigned f = 0; f < GEN_FIELDS; f++) {
    double p = gen_field(G, f).missing;
    if (p == 0) {
      assert_int_equal(MISS[f], 0);
      continue;
    }
    double got = (double)MISS[f] / NROWS;
    assert_true(fabs(got - p) < 5 * sqrt(p * (1 - p) / NROWS));
  }
  /* the shape the header promises: several often-empty fields */
  assert_true(gen_field(G, 11).missing > 0.5);               /* I12 */
  assert_true(gen_field(G, GEN_NUMERIC + 21).missing > 0.5); /* C22 */
}

/* vocab_scale multiplies vocabularies (rounded), with a floor for small
 * fields; bad scales are refused with a message. */
static void test_vocab_scale(void **state) {
  (void)state;
  char err[128];
  struct gen *g = gen_new(1, 0.001, err, sizeof(err));
  assert_non_null(g);
  struct gen_field_info c3 = gen_field(G, GEN_NUMERIC + 2);
  struct gen_field_info c3s = gen_field(g, GEN_NUMERIC + 2);
  assert_true(c3.vocab >= 10000000); /* tens of millions at scale 1 */
  assert_int_equal(c3s.vocab, (c3.vocab + 500) / 1000);
  assert_int_equal(gen_field(g, GEN_NUMERIC + 8).vocab, 3); /* C9 keeps 3 */
  assert_string_equal(gen_field(g, GEN_NUMERIC + 8).name, "C9");
  assert_string_equal(gen_field(g, 0).name, "I1");
  struct gen_row r;
  for (uint64_t i = 0; i < 2000; i++) {
    gen_row(g, i, &r);
    for (unsigned c = 0; c < GEN_CATEGORICAL; c++)
      assert_true(r.cat_rank[c] <= gen_field(g, GEN_NUMERIC + c).vocab);
  }
  gen_free(g);
  const double bad[] = {0, -1, 1001, NAN, INFINITY};
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    err[0] = 0;
    assert_null(gen_new(1, bad[i], err, sizeof(err)));
    assert_non_null(strstr(err, "vocab scale"));
  }
  gen_free(NULL);
}

/* A full disk is reported with the file's name and the system's reason. */
static void test_write_error_reported(void **state) {
  (void)state;
  FILE *f = fopen("/dev/full", "w");
  if (!f) {
    skip();
    return;
  }
  struct gen_out out = {.f = f, .name = "/dev/full", .frac = 1};
  char err[256] = "";
  assert_int_equal(gen_write(G, 0, 100, &out, 1, NULL, NULL, err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "/dev/full: write failed"));
  assert_non_null(strstr(err, "No space left"));
  fclose(f);
}

static void count_progress(void *ctx, uint64_t done) {
  uint64_t *calls = ctx;
  assert_int_equal(done, (*calls + 1) << 16);
  (*calls)++;
}

/* gen_write counts rows and bytes into the stats and calls progress. */
static void test_write_stats_and_progress(void **state) {
  (void)state;
  char *buf;
  size_t len;
  struct gen_out out = {.name = "mem", .frac = 1, .stats = gen_stats_new()};
  out.f = open_memstream(&buf, &len);
  uint64_t calls = 0;
  char err[128];
  assert_int_equal(gen_write(G, 10, 66000, &out, 1, count_progress, &calls, err,
                             sizeof(err)),
                   0);
  fclose(out.f);
  assert_int_equal(calls, 1);
  assert_int_equal(out.stats->rows, 66000);
  assert_int_equal(out.stats->bytes, len);
  free(buf);
  gen_stats_free(out.stats);
}

/* ---- the maskps-gen program ---------------------------------------------- */

/* The program next to this test in the build tree (build/common/maskps-gen
 * for build/tests/common/test_gen), or "" when it is not there. */
static void find_program(char *out, size_t cap) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  out[0] = 0;
  if (n <= 0)
    return;
  self[n] = 0;
  for (int up = 0; up < 3; up++) {
    char *slash = strrchr(self, '/');
    if (!slash)
      return;
    *slash = 0;
  }
  int len = snprintf(out, cap, "%s/common/maskps-gen", self);
  if (len < 0 || (size_t)len >= cap || access(out, X_OK) != 0)
    out[0] = 0;
}

/* Runs a shell command; returns its exit status and its output (stdout and
 * stderr as the command redirects them) in out. */
static int run(const char *cmd, char *out, size_t cap) {
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = 0;
  int st = pclose(p);
  assert_true(WIFEXITED(st));
  return WEXITSTATUS(st);
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *buf = NULL;
  size_t cap = 0;
  *len = 0;
  for (;;) {
    if (*len == cap)
      buf = realloc(buf, cap = cap ? 2 * cap : 1 << 16);
    size_t n = fread(buf + *len, 1, cap - *len, f);
    *len += n;
    if (n == 0)
      break;
  }
  fclose(f);
  return buf;
}

/* The program writes what the library writes, splits like gen_write, and
 * refuses bad options and failed writes with the documented messages and
 * exit codes (2 usage, 1 I/O). Skipped when the program is not built. */
static void test_program(void **state) {
  (void)state;
  char prog[4096], cmd[8192], out[8192], dir[] = "/tmp/test_gen_XXXXXX";
  find_program(prog, sizeof(prog));
  if (!prog[0]) {
    skip();
    return;
  }
  assert_non_null(mkdtemp(dir));

  const struct {
    const char *args, *msg;
    int code;
  } bad[] = {
      {"--rows abc", "maskps-gen: --rows: 'abc' is not a positive integer", 2},
      {"--rows 0", "'0' is not a positive integer", 2},
      {"--rows 5 --seed -1", "--seed: '-1' is not a non-negative integer", 2},
      {"--rows 5 --vocab-scale 0", "--vocab-scale: '0' is not a number", 2},
      {"--rows 5 --frobnicate", "unknown option '--frobnicate'", 2},
      {"--seed 5", "--rows is required", 2},
      {"--rows 5 --split a=0.5,b=0.4 --out-dir /tmp", "sum to 0.9", 2},
      {"--rows 5 --split a=1", "--split needs --out-dir", 2},
      {"--rows 5 --out /nonexistent-dir/x.tsv", "cannot open", 1},
      {"--rows 50000 --out /dev/full", "/dev/full: write failed: No space", 1},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    snprintf(cmd, sizeof(cmd), "%s %s 2>&1 >/dev/null", prog, bad[i].args);
    int code = run(cmd, out, sizeof(out));
    if (code != bad[i].code || !strstr(out, bad[i].msg))
      fail_msg("maskps-gen %s: exit %d, said: %s", bad[i].args, code, out);
  }
  snprintf(cmd, sizeof(cmd), "%s --help", prog);
  assert_int_equal(run(cmd, out, sizeof(out)), 0);
  assert_non_null(strstr(out, "Examples:"));

  /* one file: the same bytes as gen_write, and a report */
  snprintf(cmd, sizeof(cmd),
           "%s --rows 3000 --seed 5 --vocab-scale 0.01 --start-row 77 "
           "--out %s/all.tsv --report 2>&1",
           prog, dir);
  assert_int_equal(run(cmd, out, sizeof(out)), 0);
  assert_non_null(strstr(out, "report all rows=3000 ctr="));
  assert_non_null(strstr(out, "bayes_auc="));
  assert_non_null(strstr(out, "rows_per_s="));
  char err[128];
  struct gen *g = gen_new(5, 0.01, err, sizeof(err));
  assert_non_null(g);
  char *want[3];
  size_t wlen[3], len;
  write_rows(g, 77, 3000, 1, NULL, want, wlen);
  snprintf(cmd, sizeof(cmd), "%s/all.tsv", dir);
  char *got = slurp(cmd, &len);
  assert_int_equal(len, wlen[0]);
  assert_memory_equal(got, want[0], len);
  free(got);
  free(want[0]);
  remove(cmd);

  /* a split: each file as gen_write splits */
  snprintf(cmd, sizeof(cmd),
           "%s --rows 3000 --seed 5 --vocab-scale 0.01 --split "
           "train=0.8,valid=0.1,test=0.1 --out-dir %s/sub/dir --report 2>&1",
           prog, dir);
  assert_int_equal(run(cmd, out, sizeof(out)), 0);
  assert_non_null(strstr(out, "report split=valid rows="));
  const double frac[3] = {0.8, 0.1, 0.1};
  const char *names[3] = {"train", "valid", "test"};
  write_rows(g, 0, 3000, 3, frac, want, wlen);
  for (unsigned k = 0; k < 3; k++) {
    snprintf(cmd, sizeof(cmd), "%s/sub/dir/%s.tsv", dir, names[k]);
    got = slurp(cmd, &len);
    assert_int_equal(len, wlen[k]);
    assert_memory_equal(got, want[k], len);
    free(got);
    free(want[k]);
    remove(cmd);
  }
  gen_free(g);
  snprintf(cmd, sizeof(cmd), "%s/sub/dir", dir);
  assert_int_equal(rmdir(cmd), 0);
  snprintf(cmd, sizeof(cmd), "%s/sub", dir);
  assert_int_equal(rmdir(cmd), 0);
  assert_int_equal(rmdir(dir), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lines_parse_back),
      cmocka_unit_test(test_tokens_and_values),
      cmocka_unit_test(test_numeric_lognormal),
      cmocka_unit_test(test_same_seed_same_bytes),
      cmocka_unit_test(test_parts_concatenate),
      cmocka_unit_test(test_split_shares),
      cmocka_unit_test(test_ctr_calibrated),
      cmocka_unit_test(test_bayes_auc),
      cmocka_unit_test(test_zipf_fields),
      cmocka_unit_test(test_zipf_sampler),
      cmocka_unit_test(test_missing_rates),
      cmocka_unit_test(test_vocab_scale),
      cmocka_unit_test(test_write_error_reported),
      cmocka_unit_test(test_write_stats_and_progress),
      cmocka_unit_test(test_program),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
