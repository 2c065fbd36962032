/* sparse_opt: every optimizer against its closed form or an independent
 * double-precision recurrence; lazy decay against eager decay. */
#include "pserver/sparse_opt.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define P 4
#define N 50

/* A row of P entries with the given optimizer and initial values. */
struct fixture {
  struct row r;
  float w[P], st[2 * P];
};

static void make(struct fixture *f, const struct sparse_opt *o,
                 const float *w0) {
  memset(f, 0, sizeof(*f));
  f->r.opt = (uint8_t)o->kind;
  f->r.p = P;
  f->r.values = f->w;
  f->r.state = f->st;
  memcpy(f->w, w0, sizeof(f->w));
  sparse_opt_init_state(o, f->st, P, 0, P);
}

static const float w0[P] = {0.5f, -0.25f, 0.0f, 1.0f};
static const float g[P] = {0.3f, -0.1f, 0.02f, 1.5f};

static void push_n(const struct sparse_opt *o, struct fixture *f, int n) {
  for (int k = 1; k <= n; k++)
    sparse_opt_apply(o, &f->r, g, (uint64_t)k);
}

static void test_sgd_closed_form(void **state) {
  (void)state;
  struct sparse_opt o;
  sparse_opt_defaults(&o, ROW_OPT_SGD);
  o.lr = 0.01f;
  struct fixture f;
  make(&f, &o, w0);
  push_n(&o, &f, N);
  for (int j = 0; j < P; j++)
    assert_float_equal(f.w[j], w0[j] - N * 0.01 * g[j], 1e-5);
  assert_int_equal(f.r.opt_step, N);
  assert_int_equal(f.r.last_step, N);
}

static void test_adagrad_sum_formula(void **state) {
  (void)state;
  struct sparse_opt o;
  sparse_opt_defaults(&o, ROW_OPT_ADAGRAD);
  o.lr = 0.05f;
  o.adagrad_init = 0.1f;
  o.eps = 1e-10f;
  struct fixture f;
  make(&f, &o, w0);
  push_n(&o, &f, N);
  for (int j = 0; j < P; j++) {
    /* w_N = w0 - lr g sum_{k=1..N} 1 / (sqrt(a0 + k g^2) + eps) */
    double sum = 0;
    for (int k = 1; k <= N; k++)
      sum += 1.0 / (sqrt(0.1 + k * (double)g[j] * g[j]) + 1e-10);
    assert_float_equal(f.w[j], w0[j] - 0.05 * g[j] * sum, 1e-5);
    assert_float_equal(f.st[j], 0.1 + N * (double)g[j] * g[j], 1e-4);
  }
}

static void test_adam_bias_corrected(void **state) {
  (void)state;
  struct sparse_opt o;
  sparse_opt_defaults(&o, ROW_OPT_ADAM);
  o.lr = 0.01f;
  struct fixture f;
  make(&f, &o, w0);
  push_n(&o, &f, N);
  for (int j = 0; j < P; j++) {
    double w = w0[j], m = 0, v = 0;
    for (int t = 1; t <= N; t++) {
      m = 0.9 * m + 0.1 * g[j];
      v = 0.999 * v + 0.001 * (double)g[j] * g[j];
      double mh = m / (1 - pow(0.9, t)), vh = v / (1 - pow(0.999, t));
      w -= 0.01 * mh / (sqrt(vh) + 1e-8);
    }
    assert_float_equal(f.w[j], w, 1e-5);
    /* For a constant g, mhat = g and vhat = g^2 exactly: each step moves
     * lr * g / (|g| + eps), i.e. lr * sign(g). */
    assert_float_equal(f.w[j], w0[j] - N * 0.01 * (g[j] > 0 ? 1 : -1), 1e-4);
  }
  assert_int_equal(f.r.opt_step, N);
}

static void test_ftrl_per_coordinate(void **state) {
  (void)state;
  struct sparse_opt o;
  sparse_opt_defaults(&o, ROW_OPT_FTRL);
  o.lr = 0.1f; /* alpha */
  o.ftrl_beta = 1.0f;
  o.l1 = 1.0f;
  o.l2 = 0.5f;
  /* From w = 0, z = k g while |k g| <= l1 (w stays 0, sigma w = 0): with
   * g = 0.3, w is exactly 0 for 3 pushes, and the 4th gives the textbook
   * -(z - l1) / ((beta + sqrt(n)) / alpha + l2) with z = 1.2, n = 0.36. */
  const float zero[P] = {0};
  const float gc[P] = {0.3f, 0.3f, 0.3f, 0.3f};
  struct fixture f;
  make(&f, &o, zero);
  for (int k = 1; k <= 3; k++) {
    sparse_opt_apply(&o, &f.r, gc, (uint64_t)k);
    assert_true(f.w[0] == 0.0f);
    assert_float_equal(f.st[0], k * 0.3, 1e-6);  /* z */
    assert_float_equal(f.st[P], k * 0.09, 1e-6); /* n */
  }
  sparse_opt_apply(&o, &f.r, gc, 4);
  assert_float_equal(f.w[0], -(1.2 - 1.0) / ((1.0 + 0.6) / 0.1 + 0.5), 1e-6);

  /* General case: nonzero start, mixed signs, against a double recurrence. */
  make(&f, &o, w0);
  push_n(&o, &f, N);
  for (int j = 0; j < P; j++) {
    double w = w0[j], z = 0, n = 0;
    for (int k = 1; k <= N; k++) {
      double sigma = (sqrt(n + (double)g[j] * g[j]) - sqrt(n)) / 0.1;
      z += g[j] - sigma * w;
      n += (double)g[j] * g[j];
      w = fabs(z) <= 1.0
              ? 0.0
              : -(z - copysign(1.0, z)) / ((1.0 + sqrt(n)) / 0.1 + 0.5);
    }
    assert_float_equal(f.w[j], w, 1e-5);
  }
  /* g = 0.02 never leaves the L1 ball in 50 pushes: exactly 0 (sparsity). */
  assert_true(f.w[2] == 0.0f);
}

/* Eager: every row decays on every global step, the gradient step only on
 * the steps the row is in the batch. Lazy: the optimizer only sees the
 * touched steps. They must agree. */
static void lazy_vs_eager(enum row_opt kind) {
  struct sparse_opt o;
  sparse_opt_defaults(&o, kind);
  o.lr = 0.05f;
  o.weight_decay = 0.2f;
  o.lazy_decay = 1;
  const int touched[] = {3, 4, 9, 10, 11, 30, 31, 100};
  const int nt = (int)(sizeof(touched) / sizeof(*touched));
  struct fixture f;
  make(&f, &o, w0);
  for (int i = 0; i < nt; i++)
    sparse_opt_apply(&o, &f.r, g, (uint64_t)touched[i]);
  for (int j = 0; j < P; j++) {
    double w = w0[j], m = 0, v = 0;
    int t = 0, ti = 0;
    /* The row is born at its first update (step 3). */
    for (int step = touched[0]; step <= touched[nt - 1]; step++) {
      int hit = ti < nt && touched[ti] == step;
      if (kind == ROW_OPT_SGD) {
        /* coupled L2: SGD on g + lambda w, with g = 0 on untouched steps */
        w -= 0.05 * ((hit ? g[j] : 0.0) + 0.2 * w);
      } else {
        w *= 1 - 0.05 * 0.2;
        if (hit) {
          t++;
          m = 0.9 * m + 0.1 * g[j];
          v = 0.999 * v + 0.001 * (double)g[j] * g[j];
          w -= 0.05 * (m / (1 - pow(0.9, t))) /
               (sqrt(v / (1 - pow(0.999, t))) + 1e-8);
        }
      }
      ti += hit;
    }
    assert_float_equal(f.w[j], w, 1e-5);
  }
}

static void test_lazy_decay_equals_eager(void **state) {
  (void)state;
  lazy_vs_eager(ROW_OPT_SGD);
  lazy_vs_eager(ROW_OPT_ADAM);
}

static void test_decay_without_lazy_and_same_step(void **state) {
  (void)state;
  struct sparse_opt o;
  sparse_opt_defaults(&o, ROW_OPT_SGD);
  o.lr = 0.1f;
  o.weight_decay = 0.5f;
  const float zg[P] = {0};
  struct fixture f;
  make(&f, &o, w0);
  sparse_opt_apply(&o, &f.r, zg, 1);
  sparse_opt_apply(&o, &f.r, zg, 100); /* not lazy: one decay per update */
  assert_float_equal(f.w[0], 0.5 * 0.95 * 0.95, 1e-7);
  o.lazy_decay = 1;
  sparse_opt_apply(&o, &f.r, zg, 100); /* same step again: no decay */
  assert_float_equal(f.w[0], 0.5 * 0.95 * 0.95, 1e-7);
  sparse_opt_apply(&o, &f.r, zg, 103); /* three missed steps */
  assert_float_equal(f.w[0], 0.5 * pow(0.95, 5), 1e-7);
}

static void test_din_frequency_regularisation(void **state) {
  (void)state;
  struct sparse_opt o;
  sparse_opt_defaults(&o, ROW_OPT_SGD);
  o.lr = 0.1f;
  o.freq_l2 = 0.4f;
  struct fixture f;
  make(&f, &o, w0);
  f.r.count = 8; /* lambda / n = 0.05 */
  sparse_opt_apply(&o, &f.r, g, 1);
  for (int j = 0; j < P; j++)
    assert_float_equal(f.w[j], w0[j] - 0.1 * (g[j] + 0.05 * w0[j]), 1e-7);
  /* A frequent row is regularised less than a rare one. */
  struct fixture rare, freq;
  make(&rare, &o, w0);
  make(&freq, &o, w0);
  rare.r.count = 1;
  freq.r.count = 1000;
  const float zg[P] = {0};
  sparse_opt_apply(&o, &rare.r, zg, 1);
  sparse_opt_apply(&o, &freq.r, zg, 1);
  assert_true(fabsf(rare.w[3]) < fabsf(freq.w[3]));
}

static void test_validate(void **state) {
  (void)state;
  struct sparse_opt o;
  char err[128];
  for (int k = 0; k < ROW_OPT_COUNT_; k++) {
    sparse_opt_defaults(&o, (enum row_opt)k);
    assert_int_equal(sparse_opt_validate(&o, err, sizeof(err)), 0);
  }
  sparse_opt_defaults(&o, ROW_OPT_FTRL);
  o.weight_decay = 0.1f;
  assert_int_equal(sparse_opt_validate(&o, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "weight_decay"));
  sparse_opt_defaults(&o, ROW_OPT_ADAM);
  o.beta2 = 1.0f;
  assert_int_equal(sparse_opt_validate(&o, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "beta2"));
  o.beta2 = 0.999f;
  o.lr = NAN;
  assert_int_equal(sparse_opt_validate(&o, err, sizeof(err)), -1);
}

static void test_dense_adam(void **state) {
  (void)state;
  struct sparse_opt o;
  sparse_opt_defaults(&o, ROW_OPT_ADAM);
  o.lr = 0.02f;
  float w[P], m[P] = {0}, v[P] = {0};
  uint32_t t[P] = {0, 0, 5, 0}; /* entry 2 already took 5 steps of g */
  memcpy(w, w0, sizeof(w));
  /* bring entry 2's moments to where 5 steps of g would leave them */
  double m2 = 0, v2 = 0;
  for (int k = 0; k < 5; k++) {
    m2 = 0.9 * m2 + 0.1 * g[2];
    v2 = 0.999 * v2 + 0.001 * (double)g[2] * g[2];
  }
  m[2] = (float)m2;
  v[2] = (float)v2;
  for (int k = 0; k < N; k++)
    sparse_opt_adam_dense(&o, w, m, v, t, g, P);
  for (int j = 0; j < P; j++) {
    double wj = w0[j], mj = j == 2 ? m2 : 0, vj = j == 2 ? v2 : 0;
    for (int k = 1; k <= N; k++) {
      int tt = k + (j == 2 ? 5 : 0);
      mj = 0.9 * mj + 0.1 * g[j];
      vj = 0.999 * vj + 0.001 * (double)g[j] * g[j];
      wj -= 0.02 * (mj / (1 - pow(0.9, tt))) /
            (sqrt(vj / (1 - pow(0.999, tt))) + 1e-8);
    }
    assert_float_equal(w[j], wj, 1e-5);
  }
  assert_int_equal(t[0], N);
  assert_int_equal(t[2], N + 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sgd_closed_form),
      cmocka_unit_test(test_adagrad_sum_formula),
      cmocka_unit_test(test_adam_bias_corrected),
      cmocka_unit_test(test_ftrl_per_coordinate),
      cmocka_unit_test(test_lazy_decay_equals_eager),
      cmocka_unit_test(test_decay_without_lazy_and_same_step),
      cmocka_unit_test(test_din_frequency_regularisation),
      cmocka_unit_test(test_validate),
      cmocka_unit_test(test_dense_adam),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
