#include "common/gen.h"

#include "common/check.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration ------------------------------------------------------
 * Shapes modelled on the public Criteo display-ads log: which fields are
 * often empty, counts with heavy tails, categorical fields from a handful of
 * values to tens of millions. The numbers are ours, chosen to look like it. */

struct num_spec {
  double missing, mu, sigma, negative; /* see struct gen_field_info */
  double a, q; /* hidden model: linear and quadratic weight of t_j */
};

static const struct num_spec NUM[GEN_NUMERIC] = {
    {0.45, 0.4, 1.2, 0.00, 0.30, 0.00},   /* I1 */
    {0.00, 1.5, 2.0, 0.04, -0.15, 0.00},  /* I2: sometimes -1..-3 */
    {0.21, 2.0, 1.5, 0.00, 0.10, 0.00},   /* I3 */
    {0.22, 1.8, 1.0, 0.00, 0.10, -0.10},  /* I4 */
    {0.03, 7.5, 2.0, 0.00, -0.25, 0.00},  /* I5: thousands */
    {0.22, 3.4, 1.6, 0.00, 0.10, 0.00},   /* I6 */
    {0.04, 1.3, 1.5, 0.00, 0.30, 0.10},   /* I7 */
    {0.0005, 2.3, 1.0, 0.00, 0.00, 0.00}, /* I8 */
    {0.04, 3.7, 1.4, 0.00, 0.10, 0.00},   /* I9 */
    {0.45, 0.0, 0.7, 0.00, 0.20, 0.00},   /* I10 */
    {0.04, 0.7, 1.2, 0.00, 0.25, 0.00},   /* I11 */
    {0.77, -0.5, 1.2, 0.00, 0.10, 0.00},  /* I12: mostly empty */
    {0.22, 1.5, 1.3, 0.00, 0.10, -0.05},  /* I13 */
};

struct cat_spec {
  double vocab, s, missing; /* before vocab_scale */
  double sd;                /* hidden model: sd of the per-token weight */
};

static const struct cat_spec CAT[GEN_CATEGORICAL] = {
    {1460, 1.10, 0.00, 0.30},   /* C1 */
    {583, 1.05, 0.00, 0.30},    /* C2 */
    {20e6, 1.05, 0.03, 0.25},   /* C3: tens of millions */
    {2.2e6, 1.10, 0.03, 0.25},  /* C4 */
    {305, 1.20, 0.00, 0.30},    /* C5 */
    {24, 1.30, 0.12, 0.40},     /* C6 */
    {12500, 1.05, 0.00, 0.30},  /* C7 */
    {633, 1.20, 0.00, 0.20},    /* C8 */
    {3, 1.50, 0.00, 0.30},      /* C9 */
    {93000, 1.05, 0.00, 0.30},  /* C10 */
    {5700, 1.10, 0.00, 0.30},   /* C11 */
    {8.4e6, 1.05, 0.03, 0.25},  /* C12 */
    {3200, 1.10, 0.00, 0.30},   /* C13 */
    {27, 1.30, 0.00, 0.40},     /* C14 */
    {15000, 1.05, 0.00, 0.30},  /* C15 */
    {5.5e6, 1.05, 0.03, 0.25},  /* C16 */
    {10, 1.40, 0.00, 0.40},     /* C17 */
    {5650, 1.10, 0.00, 0.30},   /* C18 */
    {2170, 1.10, 0.44, 0.30},   /* C19 */
    {4, 1.30, 0.44, 0.30},      /* C20 */
    {7e6, 1.05, 0.03, 0.25},    /* C21 */
    {18, 1.40, 0.76, 0.30},     /* C22 */
    {15, 1.30, 0.00, 0.40},     /* C23 */
    {286000, 1.10, 0.03, 0.30}, /* C24 */
    {105, 1.20, 0.44, 0.30},    /* C25 */
    {142000, 1.10, 0.44, 0.30}, /* C26 */
};

/* Interacting C-field pairs (0-based) and their scale: learnable by FM-style
 * and deep models, invisible to a purely additive one. */
#define NPAIR 6
#define PAIR_RANK 4
static const struct {
  unsigned a, b;
  double g;
} PAIR[NPAIR] = {{0, 1, 0.5},   {4, 5, 0.5},  {6, 10, 0.5},
                 {13, 16, 0.5}, {9, 12, 0.5}, {22, 19, 0.5}};

static const char *const FIELD_NAME[GEN_FIELDS] = {
    "I1",  "I2",  "I3",  "I4",  "I5",  "I6",  "I7",  "I8",  "I9",  "I10",
    "I11", "I12", "I13", "C1",  "C2",  "C3",  "C4",  "C5",  "C6",  "C7",
    "C8",  "C9",  "C10", "C11", "C12", "C13", "C14", "C15", "C16", "C17",
    "C18", "C19", "C20", "C21", "C22", "C23", "C24", "C25", "C26"};

/* Scales every per-token weight; with the pair scales it sets the Bayes
 * AUC: about 0.80 (0.77 without the pair terms). */
#define WEIGHT_SCALE 0.65
#define CALIB_ROWS 8192 /* CTR error ~0.002 (sd of p / sqrt(rows)) */
/* The key used for a missing C-field in weight hashes: above every 32-bit
 * token, so an empty field has its own weight (it has its own id in the
 * project's parser too). */
#define MISSING_TOKEN 0x100000000ull

/* ---- counter-based randomness ------------------------------------------ */

static inline uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* splitmix64: the stream of one row, keyed by (seed, row). */
static inline uint64_t next64(uint64_t *s) {
  *s += 0x9e3779b97f4a7c15ull;
  return mix64(*s);
}

static inline double unit(uint64_t r) { /* [0, 1), 53 bits */
  return (double)(r >> 11) * 0x1.0p-53;
}

/* Probability -> threshold on a 64-bit draw: P(draw < t) = p (to 2^-64). */
static uint64_t threshold(double p) {
  if (p <= 0)
    return 0;
  if (p >= 1)
    return UINT64_MAX;
  return (uint64_t)ldexp(p, 64);
}

/* A bijection of 32-bit values, keyed: rank -> printed token. Each step
 * (xor with a constant, xorshift, multiply by an odd number) is invertible,
 * so distinct ranks of one field never share a token. */
static inline uint32_t perm32(uint32_t x, uint32_t k1, uint32_t k2) {
  x ^= k1;
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x + k2;
}

/* An approximately standard normal number from a hash: the sum of four
 * 16-bit uniforms, centred and scaled (Irwin-Hall, variance exactly 1,
 * range +-3.46). Good enough for model weights; no transcendental call. */
static inline double hash_normal(uint64_t h) {
  double s = (double)(h & 0xffff) + (double)((h >> 16) & 0xffff) +
             (double)((h >> 32) & 0xffff) + (double)(h >> 48);
  return (s / 65536.0 - 2.0) * 1.7320508075688772;
}

/* ---- alias tables ----------------------------------------------------------
 * Walker's alias method (Vose's construction): a draw from n weighted slots
 * costs one 64-bit random number and two table reads. The high 32 bits pick
 * a slot uniformly, the low 32 bits keep it or move to its alias, so every
 * probability is exact to 2^-32. */

struct alias_slot {
  uint32_t keep;  /* keep the slot when the low 32 bits are below this */
  uint32_t other; /* the slot taken otherwise */
};

struct alias {
  uint32_t n;              /* slots */
  struct alias_slot *slot; /* [n]; one cache line access per draw */
};

/* Builds the table for weights w[0..n-1] (not normalised; w is clobbered). */
static void alias_init(struct alias *a, double *w, uint32_t n) {
  CHECK(n >= 1, "n %u", n);
  a->n = n;
  a->slot = xmalloc(sizeof(struct alias_slot) * n);
  uint32_t *small = xmalloc(sizeof(uint32_t) * n),
           *large = xmalloc(sizeof(uint32_t) * n), ns = 0, nl = 0;
  double sum = 0;
  for (uint32_t i = 0; i < n; i++)
    sum += w[i];
  for (uint32_t i = 0; i < n; i++) {
    w[i] *= n / sum; /* mean 1 */
    if (w[i] < 1)
      small[ns++] = i;
    else
      large[nl++] = i;
  }
  while (ns && nl) {
    uint32_t l = small[--ns], g = large[nl - 1];
    a->slot[l].keep = (uint32_t)fmin(ldexp(w[l], 32), 4294967295.0);
    a->slot[l].other = g;
    w[g] -= 1 - w[l];
    if (w[g] < 1) {
      nl--;
      small[ns++] = g;
    }
  }
  /* What is left has mass 1 up to rounding: always keep it. */
  while (nl) {
    uint32_t i = large[--nl];
    a->slot[i].keep = UINT32_MAX;
    a->slot[i].other = i;
  }
  while (ns) {
    uint32_t i = small[--ns];
    a->slot[i].keep = UINT32_MAX;
    a->slot[i].other = i;
  }
  free(small);
  free(large);
}

static void alias_deinit(struct alias *a) {
  free(a->slot);
}

static inline uint32_t alias_draw(const struct alias *a, uint64_t r) {
  uint32_t i = (uint32_t)(((r >> 32) * a->n) >> 32);
  struct alias_slot sl = a->slot[i];
  return (uint32_t)r < sl.keep ? i : sl.other; /* a cmov, not a branch */
}

/* ---- Zipf sampler -----------------------------------------------------------
 * P(rank k) = k^-s / sum_{j=1..n} j^-s. Slots of one alias table: ranks
 * 1..head, then "buckets" [lo, hi] of consecutive ranks, each at most
 * bucket_ratio times wider than its start, up to n. A bucket's mass is its
 * sum of k^-s: summed directly for buckets of up to 1024 ranks, else by
 * Euler-Maclaurin (then lo > 1024, where it is exact to ~1e-15). Within a
 * bucket a rank is drawn uniformly and kept with probability (lo/k)^s
 * (rejection: exact; keeps ~1 - s*ratio/2 of the draws), tested first
 * against the cheap lower bound 1 - s(k-lo)/lo so that a transcendental
 * call is rarely needed. */

#define ZIPF_BUCKET_RATIO 0.02

struct gen_zipf {
  uint64_t n;       /* vocabulary: ranks 1..n */
  double s;         /* exponent */
  uint32_t head;    /* slots 0..head-1 are ranks 1..head */
  struct alias tab; /* head ranks + buckets */
  uint64_t *lo;     /* [tab.n - head] first rank of each bucket */
  uint64_t *width;  /* [tab.n - head] ranks in each bucket, < 2^32 */
};

/* H(x) = integral of t^-s from 1 to x = (x^(1-s) - 1) / (1 - s), written so
 * that it stays accurate near s = 1 (where it becomes ln x). */
static double zipf_H(double s, double x) {
  double l = log(x), t = (1 - s) * l;
  return (fabs(t) > 1e-8 ? expm1(t) / t : 1 + t / 2) * l;
}

/* Sum of k^-s for k = a..b. Directly for short ranges; otherwise by
 * Euler-Maclaurin, the integral plus end corrections, whose first omitted
 * term is below s^5 a^(-s-5) / 30240: < 1e-15 of the sum for a > 1000. */
static double zipf_range_sum(double s, uint64_t a, uint64_t b) {
  if (b - a < 1024) {
    double sum = 0;
    for (uint64_t k = b; k >= a; k--) /* smallest terms first */
      sum += pow((double)k, -s);
    return sum;
  }
  double x = (double)a, y = (double)b;
  return zipf_H(s, y) - zipf_H(s, x) + (pow(x, -s) + pow(y, -s)) / 2 +
         s / 12 * (pow(x, -s - 1) - pow(y, -s - 1)) -
         s * (s + 1) * (s + 2) / 720 * (pow(x, -s - 3) - pow(y, -s - 3));
}

struct gen_zipf *gen_zipf_new(double s, uint64_t n, uint32_t head,
                              double bucket_ratio) {
  CHECK(s > 0 && s <= 10 && n >= 1 && n <= GEN_MAX_VOCAB && head >= 1 &&
            bucket_ratio > 0 && bucket_ratio <= 1,
        "s %g n %llu head %u ratio %g", s, (unsigned long long)n, head,
        bucket_ratio);
  struct gen_zipf *z = xcalloc(1, sizeof(*z));
  z->n = n;
  z->s = s;
  z->head = n > head ? head : (uint32_t)n;
  uint32_t cap = z->head + 64, nslot = z->head, nb = 0;
  double *w = xmalloc(sizeof(double) * cap);
  z->lo = xmalloc(sizeof(uint64_t) * (cap - z->head));
  z->width = xmalloc(sizeof(uint64_t) * (cap - z->head));
  for (uint32_t k = 1; k <= z->head; k++)
    w[k - 1] = pow(k, -s);
  for (uint64_t lo = (uint64_t)z->head + 1; lo <= n; nb++) {
    uint64_t hi = lo + (uint64_t)(bucket_ratio * (double)lo);
    if (hi > n)
      hi = n;
    if (nslot == cap) {
      cap *= 2;
      w = xrealloc(w, sizeof(double) * cap);
      z->lo = xrealloc(z->lo, sizeof(uint64_t) * (cap - z->head));
      z->width = xrealloc(z->width, sizeof(uint64_t) * (cap - z->head));
    }
    z->lo[nb] = lo;
    z->width[nb] = hi - lo + 1;
    w[nslot++] = zipf_range_sum(s, lo, hi);
    lo = hi + 1;
  }
  alias_init(&z->tab, w, nslot);
  free(w);
  return z;
}

void gen_zipf_free(struct gen_zipf *z) {
  if (!z)
    return;
  alias_deinit(&z->tab);
  free(z->lo);
  free(z->width);
  free(z);
}

/* A rank 1..n with probability k^-s / sum. */
static inline uint64_t zipf_sample(const struct gen_zipf *z, uint64_t *rng) {
  uint32_t slot = alias_draw(&z->tab, next64(rng));
  if (slot < z->head)
    return (uint64_t)slot + 1;
  uint64_t lo = z->lo[slot - z->head];
  uint64_t width = z->width[slot - z->head];
  for (;;) {
    uint64_t r = next64(rng);
    uint64_t k = lo + (((r >> 32) * width) >> 32);
    double u = (double)(uint32_t)r * 0x1.0p-32;
    double d = (double)(k - lo) / (double)lo;
    if (u < 1 - z->s * d || u < exp(-z->s * log1p(d)))
      return k;
  }
}

uint64_t gen_zipf_draw(const struct gen_zipf *z, uint64_t *state) {
  return zipf_sample(z, state);
}

uint64_t gen_zipf_n(const struct gen_zipf *z) {
  return z->n;
}

/* ---- numeric fields
 * ----------------------------------------------------------- value =
 * floor(exp(mu + sigma z)), z ~ N(0,1). Values 0..NUM_TAB-1 come from an alias
 * table of their exact probabilities Phi((ln(v+1) - mu)/sigma) - Phi((ln v -
 * mu)/sigma); one more slot stands for "NUM_TAB or more", where z is drawn from
 * the normal tail beyond z0 = (ln(NUM_TAB) - mu)/sigma (Marsaglia's
 * exponential-tail method when z0 >= 0.5, plain rejection below): exact in both
 * parts. */

#define NUM_TAB 1024

static double std_normal_cdf(double x) {
  return 0.5 * erfc(-x / M_SQRT2);
}

/* N(0,1) by Box-Muller (one of the pair is dropped: the path is rare). */
static double std_normal(uint64_t *rng) {
  double u1 = 1.0 - unit(next64(rng)), u2 = unit(next64(rng));
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* z ~ N(0,1) conditioned on z >= z0. */
static double normal_tail(double z0, uint64_t *rng) {
  if (z0 < 0.5)
    for (;;) { /* accepts with probability >= P(z >= 0.5) = 0.31 */
      double z = std_normal(rng);
      if (z >= z0)
        return z;
    }
  for (;;) { /* Marsaglia 1964: x ~ Exp(z0), keep with exp(-x^2/2) */
    double x = -log(1.0 - unit(next64(rng))) / z0;
    double y = -log(1.0 - unit(next64(rng)));
    if (2 * y >= x * x)
      return z0 + x;
  }
}

/* ---- the generator --------------------------------------------------------
 */

struct gen {
  uint64_t seed;
  double vocab_scale;
  double bias;
  uint64_t row_key;               /* keys the per-row streams */
  uint64_t split_key;             /* keys gen_split_index */
  uint64_t num_miss[GEN_NUMERIC]; /* thresholds on a 64-bit draw */
  uint64_t num_neg[GEN_NUMERIC];
  uint64_t cat_miss[GEN_CATEGORICAL];
  uint32_t perm_k1[GEN_CATEGORICAL], perm_k2[GEN_CATEGORICAL];
  uint64_t w_key[GEN_CATEGORICAL]; /* per-token weight hash keys */
  uint64_t pair_key[NPAIR][2];     /* factor hash keys */
  struct gen_zipf *zipf[GEN_CATEGORICAL];
  struct alias num_tab[GEN_NUMERIC];     /* values 0..NUM_TAB-1, tail */
  double num_z0[GEN_NUMERIC];            /* z where the tail starts */
  double num_term[GEN_NUMERIC][NUM_TAB]; /* logit term of small values */
};

/* The logit term of numeric field j with value x (missing and negative
 * values count as 0, as the project's parser reads them). */
static double num_term(unsigned j, double x) {
  const struct num_spec *ns = &NUM[j];
  double t = (log1p(x < 0 ? 0 : x) - ns->mu) / ns->sigma;
  t = t < -3 ? -3 : t > 3 ? 3 : t;
  return ns->a * t + ns->q * (t * t - 1);
}

static uint64_t scaled_vocab(double v, double scale) {
  double n = floor(v * scale + 0.5);
  double lo = v < 3 ? v : 3;
  if (n < lo)
    n = lo;
  if (n > (double)GEN_MAX_VOCAB)
    n = (double)GEN_MAX_VOCAB;
  return (uint64_t)n;
}

/* Draws the printed fields of a row from the stream *rng. */
static void draw_fields(const struct gen *g, uint64_t *rng, struct gen_row *r) {
  for (unsigned j = 0; j < GEN_NUMERIC; j++) {
    const struct num_spec *ns = &NUM[j];
    uint64_t m = next64(rng);
    r->num_missing[j] = m < g->num_miss[j];
    r->num[j] = 0;
    if (r->num_missing[j])
      continue;
    if (g->num_neg[j] && next64(rng) < g->num_neg[j]) {
      r->num[j] = -1 - (int64_t)(next64(rng) % 3);
      continue;
    }
    uint32_t v = alias_draw(&g->num_tab[j], next64(rng));
    if (v < NUM_TAB) {
      r->num[j] = v;
      continue;
    }
    double e = ns->mu + ns->sigma * normal_tail(g->num_z0[j], rng);
    if (e > 20.7) /* ~1e9: keep values in a sane range */
      e = 20.7;
    double x = floor(exp(e));
    r->num[j] = x < NUM_TAB ? NUM_TAB : (int64_t)x; /* rounding at z0 */
  }
  for (unsigned c = 0; c < GEN_CATEGORICAL; c++) {
    if (g->cat_miss[c] && next64(rng) < g->cat_miss[c]) {
      r->cat_missing[c] = 1;
      r->cat_rank[c] = 0;
      r->cat[c] = 0;
      continue;
    }
    uint64_t k = zipf_sample(g->zipf[c], rng);
    r->cat_missing[c] = 0;
    r->cat_rank[c] = k;
    r->cat[c] = perm32((uint32_t)(k - 1), g->perm_k1[c], g->perm_k2[c]);
  }
}

/* logit without the bias. */
static double raw_logit(const struct gen *g, const struct gen_row *r) {
  double z = 0;
  for (unsigned j = 0; j < GEN_NUMERIC; j++) {
    int64_t x = r->num_missing[j] ? 0 : r->num[j];
    z += x >= 0 && x < NUM_TAB ? g->num_term[j][x] : num_term(j, (double)x);
  }
  uint64_t tok[GEN_CATEGORICAL];
  for (unsigned c = 0; c < GEN_CATEGORICAL; c++) {
    tok[c] = r->cat_missing[c] ? MISSING_TOKEN : r->cat[c];
    z += WEIGHT_SCALE * CAT[c].sd * hash_normal(mix64(g->w_key[c] + tok[c]));
  }
  for (unsigned p = 0; p < NPAIR; p++) {
    uint64_t u = mix64(g->pair_key[p][0] + tok[PAIR[p].a]);
    uint64_t v = mix64(g->pair_key[p][1] + tok[PAIR[p].b]);
    double dot = 0;
    for (unsigned k = 0; k < PAIR_RANK; k++) {
      /* 16-bit values mapped to [-1, 1] */
      double uk = (double)((u >> (16 * k)) & 0xffff) / 32767.5 - 1;
      double vk = (double)((v >> (16 * k)) & 0xffff) / 32767.5 - 1;
      dot += uk * vk;
    }
    z += PAIR[p].g * dot;
  }
  return z;
}

static uint32_t quantise(double logit) {
  double p = 1 / (1 + exp(-logit));
  double q = floor(p * GEN_PROB_LEVELS + 0.5);
  if (q < 1)
    q = 1;
  if (q > GEN_PROB_LEVELS - 1)
    q = GEN_PROB_LEVELS - 1;
  return (uint32_t)q;
}

static uint64_t row_stream(uint64_t key, uint64_t i) {
  return mix64(key ^ mix64(i + 0x632be59bd9b4e019ull));
}

/* Bias b with mean(sigmoid(b + z_i)) = GEN_TARGET_CTR over calibration rows
 * (bisection: the mean is increasing in b). */
static double calibrate(const struct gen *g) {
  double *z = xmalloc(sizeof(double) * CALIB_ROWS);
  uint64_t key = mix64(g->seed ^ 0xca11b7a7e5eedull);
  struct gen_row r;
  for (unsigned i = 0; i < CALIB_ROWS; i++) {
    uint64_t rng = row_stream(key, i);
    draw_fields(g, &rng, &r);
    z[i] = raw_logit(g, &r);
  }
  double lo = -20, hi = 20;
  for (int it = 0; it < 45; it++) { /* to 40 / 2^45 */
    double b = (lo + hi) / 2, m = 0;
    for (unsigned i = 0; i < CALIB_ROWS; i++)
      m += 1 / (1 + exp(-(b + z[i])));
    if (m / CALIB_ROWS < GEN_TARGET_CTR)
      lo = b;
    else
      hi = b;
  }
  free(z);
  return (lo + hi) / 2;
}

struct gen *gen_new(uint64_t seed, double vocab_scale, char *err,
                    size_t errlen) {
  if (!(vocab_scale > 0 && vocab_scale <= 1000)) { /* also rejects NaN */
    snprintf(err, errlen, "vocab scale %g is not in (0, 1000]", vocab_scale);
    return NULL;
  }
  struct gen *g = xcalloc(1, sizeof(*g));
  g->seed = seed;
  g->vocab_scale = vocab_scale;
  /* Every key derives from the seed through its own stream, so changing
   * one part of the model never shifts another. */
  uint64_t ks = mix64(seed ^ 0x6d61736b2d67656eull);
  g->row_key = next64(&ks);
  g->split_key = next64(&ks);
  for (unsigned j = 0; j < GEN_NUMERIC; j++) {
    g->num_miss[j] = threshold(NUM[j].missing);
    g->num_neg[j] = threshold(NUM[j].negative);
  }
  double *w = xmalloc(sizeof(double) * (NUM_TAB + 1));
  for (unsigned j = 0; j < GEN_NUMERIC; j++) {
    const struct num_spec *ns = &NUM[j];
    double prev = 0;
    for (unsigned v = 0; v < NUM_TAB; v++) {
      double c = std_normal_cdf((log(v + 1.0) - ns->mu) / ns->sigma);
      w[v] = c - prev;
      prev = c;
      g->num_term[j][v] = num_term(j, v);
    }
    g->num_z0[j] = (log((double)NUM_TAB) - ns->mu) / ns->sigma;
    w[NUM_TAB] = 0.5 * erfc(g->num_z0[j] / M_SQRT2); /* 1 - Phi(z0) */
    alias_init(&g->num_tab[j], w, NUM_TAB + 1);
  }
  free(w);
  for (unsigned c = 0; c < GEN_CATEGORICAL; c++) {
    g->cat_miss[c] = threshold(CAT[c].missing);
    uint64_t k = next64(&ks);
    g->perm_k1[c] = (uint32_t)k;
    g->perm_k2[c] = (uint32_t)(k >> 32);
    g->w_key[c] = next64(&ks);
    g->zipf[c] = gen_zipf_new(CAT[c].s, scaled_vocab(CAT[c].vocab, vocab_scale),
                              GEN_ZIPF_HEAD, ZIPF_BUCKET_RATIO);
  }
  for (unsigned p = 0; p < NPAIR; p++) {
    g->pair_key[p][0] = next64(&ks);
    g->pair_key[p][1] = next64(&ks);
  }
  g->bias = calibrate(g);
  return g;
}

void gen_free(struct gen *g) {
  if (!g)
    return;
  for (unsigned c = 0; c < GEN_CATEGORICAL; c++)
    gen_zipf_free(g->zipf[c]);
  for (unsigned j = 0; j < GEN_NUMERIC; j++)
    alias_deinit(&g->num_tab[j]);
  free(g);
}

struct gen_field_info gen_field(const struct gen *g, unsigned field) {
  CHECK(field < GEN_FIELDS, "field %u", field);
  struct gen_field_info fi = {.name = FIELD_NAME[field]};
  if (field < GEN_NUMERIC) {
    fi.missing = NUM[field].missing;
    fi.mu = NUM[field].mu;
    fi.sigma = NUM[field].sigma;
    fi.negative = NUM[field].negative;
  } else {
    unsigned c = field - GEN_NUMERIC;
    fi.missing = CAT[c].missing;
    fi.vocab = g->zipf[c]->n;
    fi.zipf_s = CAT[c].s;
  }
  return fi;
}

double gen_bias(const struct gen *g) {
  return g->bias;
}

void gen_row(const struct gen *g, uint64_t i, struct gen_row *r) {
  uint64_t rng = row_stream(g->row_key, i);
  draw_fields(g, &rng, r);
  r->prob_q = quantise(g->bias + raw_logit(g, r));
  /* 16 uniform bits below prob_q: probability exactly prob_q / 2^16 */
  r->label = (uint32_t)(next64(&rng) >> 48) < r->prob_q;
}

double gen_logit(const struct gen *g, const struct gen_row *r) {
  return g->bias + raw_logit(g, r);
}

uint32_t gen_token(const struct gen *g, unsigned c, uint64_t rank) {
  CHECK(c < GEN_CATEGORICAL && rank >= 1 && rank <= g->zipf[c]->n,
        "field %u rank %llu", c, (unsigned long long)rank);
  return perm32((uint32_t)(rank - 1), g->perm_k1[c], g->perm_k2[c]);
}

/* ---- formatting ------------------------------------------------------------
 */

static char *put_int(char *p, int64_t v) {
  char tmp[24];
  int n = 0;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  if (v < 0)
    *p++ = '-';
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  while (n)
    *p++ = tmp[--n];
  return p;
}

/* 8 lowercase hex digits without a loop or table: spread the nibbles into
 * the bytes of a 64-bit word (most significant first in memory), then add
 * '0', and 39 more ('a' - '0' - 10) where the nibble is >= 10. Checked
 * digit by digit against the row in tests/common/test_gen.c. */
static char *put_hex8(char *p, uint32_t v) {
  uint64_t x = v;
  x = ((x & 0xffff0000ull) << 16) | (x & 0xffffull);
  x = ((x & 0x0000ff000000ff00ull) << 8) | (x & 0x000000ff000000ffull);
  x = ((x & 0x00f000f000f000f0ull) << 4) | (x & 0x000f000f000f000full);
  x = __builtin_bswap64(x);
  uint64_t ge10 = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
  x += 0x3030303030303030ull + ge10 * 39;
  memcpy(p, &x, 8);
  return p + 8;
}

size_t gen_format(const struct gen_row *r, char *buf) {
  char *p = buf;
  *p++ = r->label ? '1' : '0';
  for (unsigned j = 0; j < GEN_NUMERIC; j++) {
    *p++ = '\t';
    if (!r->num_missing[j])
      p = put_int(p, r->num[j]);
  }
  for (unsigned c = 0; c < GEN_CATEGORICAL; c++) {
    *p++ = '\t';
    if (!r->cat_missing[c])
      p = put_hex8(p, r->cat[c]);
  }
  *p++ = '\n';
  /* 1 + 13 * 21 + 26 * 9 + 1 = 509 at the very worst */
  CHECK(p - buf <= GEN_LINE_MAX, "line of %td bytes", p - buf);
  return (size_t)(p - buf);
}

unsigned gen_split_index(const struct gen *g, uint64_t i, const double *frac,
                         unsigned n) {
  double u = unit(mix64(g->split_key ^ mix64(i + 0x5b1e7a11ull)));
  double cum = 0;
  for (unsigned k = 0; k + 1 < n; k++) {
    cum += frac[k];
    if (u < cum)
      return k;
  }
  return n - 1;
}

/* ---- stats -----------------------------------------------------------------
 */

struct gen_stats *gen_stats_new(void) {
  return xcalloc(1, sizeof(struct gen_stats));
}

void gen_stats_free(struct gen_stats *st) {
  free(st);
}

void gen_stats_add(struct gen_stats *st, const struct gen_row *r,
                   size_t bytes) {
  st->rows++;
  st->clicks += r->label;
  st->bytes += bytes;
  if (r->label)
    st->pos[r->prob_q]++;
  else
    st->neg[r->prob_q]++;
}

void gen_stats_merge(struct gen_stats *dst, const struct gen_stats *src) {
  dst->rows += src->rows;
  dst->clicks += src->clicks;
  dst->bytes += src->bytes;
  for (unsigned q = 0; q < GEN_PROB_LEVELS; q++) {
    dst->pos[q] += src->pos[q];
    dst->neg[q] += src->neg[q];
  }
}

double gen_stats_ctr(const struct gen_stats *st) {
  return st->rows ? (double)st->clicks / (double)st->rows : 0;
}

double gen_stats_auc(const struct gen_stats *st) {
  /* Mann-Whitney: for each positive, the negatives ranked below it plus half
   * of those tied with it. long double keeps the sums exact past 2^53. */
  long double num = 0, neg_below = 0, npos = 0, nneg = 0;
  for (unsigned q = 0; q < GEN_PROB_LEVELS; q++) {
    num += (long double)st->pos[q] * (neg_below + 0.5L * st->neg[q]);
    neg_below += st->neg[q];
    npos += st->pos[q];
  }
  nneg = neg_below;
  if (npos == 0 || nneg == 0)
    return 0.5;
  return (double)(num / (npos * nneg));
}

/* ---- writing ---------------------------------------------------------------
 */

#define WBUF (1u << 20)

static int flush_out(struct gen_out *o, char *buf, size_t *used, char *err,
                     size_t errlen) {
  errno = 0;
  if (*used && fwrite(buf, 1, *used, o->f) != *used) {
    snprintf(err, errlen, "%s: write failed: %s", o->name,
             errno ? strerror(errno) : "short write");
    return -1;
  }
  *used = 0;
  return 0;
}

int gen_write(const struct gen *g, uint64_t start, uint64_t n,
              struct gen_out *outs, unsigned nout, gen_progress_fn progress,
              void *ctx, char *err, size_t errlen) {
  CHECK(nout >= 1 && nout <= GEN_MAX_SPLITS, "nout %u", nout);
  double frac[GEN_MAX_SPLITS];
  char *buf[GEN_MAX_SPLITS];
  size_t used[GEN_MAX_SPLITS] = {0};
  for (unsigned k = 0; k < nout; k++) {
    frac[k] = outs[k].frac;
    buf[k] = xmalloc(WBUF);
  }
  int rc = 0;
  struct gen_row r;
  for (uint64_t i = 0; i < n && rc == 0; i++) {
    gen_row(g, start + i, &r);
    unsigned k = nout > 1 ? gen_split_index(g, start + i, frac, nout) : 0;
    if (WBUF - used[k] < GEN_LINE_MAX)
      rc = flush_out(&outs[k], buf[k], &used[k], err, errlen);
    size_t len = gen_format(&r, buf[k] + used[k]);
    used[k] += len;
    if (outs[k].stats)
      gen_stats_add(outs[k].stats, &r, len);
    if (progress && ((i + 1) & 0xffff) == 0)
      progress(ctx, i + 1);
  }
  for (unsigned k = 0; k < nout; k++) {
    if (rc == 0)
      rc = flush_out(&outs[k], buf[k], &used[k], err, errlen);
    errno = 0;
    if (rc == 0 && (fflush(outs[k].f) != 0 || ferror(outs[k].f))) {
      snprintf(err, errlen, "%s: write failed: %s", outs[k].name,
               errno ? strerror(errno) : "stream error");
      rc = -1;
    }
    free(buf[k]);
  }
  return rc;
}
