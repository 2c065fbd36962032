/* gradcheck: every op of nn/ops.h against finite differences.
 *
 * For each op: inputs and parameters are drawn (float-representable, fixed
 * seed); the float op runs forward, then backward with dout = R for a random
 * R, which makes its gradients those of the scalar loss sum(out * R). The
 * same loss is computed by a small double-precision reference forward written
 * here from the formula (not from the op's code), and differentiated by
 * central differences in double with h = 1e-6: truncation error ~h^2 and
 * rounding ~1e-16/h, both ~1e-10, so the numeric gradient is the truth to
 * far better than float precision.
 *
 * Tolerance, per gradient entry: |analytic - numeric| <= 1e-3 |numeric| +
 * 1e-4 g + 1e-7, with g the RMS of that tensor's numeric gradient. Float32
 * rounding in a forward + backward over sums of <= ~200 terms is ~200 * 2^-24
 * ~ 1e-5 of the terms' size; a missing or wrong term of the derivative shows
 * up at the size of g, 1000x above the tolerance.
 *
 * The same harness then runs forward + backward a second time without
 * zeroing and requires every gradient to have doubled (backward accumulates),
 * to 1e-5 relative (the second pass adds in a different order).
 *
 * Inputs of kinked ops (ReLU, PReLU) are kept >= 0.05 away from the kink so
 * that x +- h never crosses it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/check.h"
#include "common/keys.h"
#include "worker/nn/ops.h"

/* ---- the harness ---- */

#define MAXT 8

struct gt {
  const char *name;
  size_t n;
  int grad;  /* 0: data (labels, masks): no gradient checked */
  double *v; /* the values the double reference reads (perturbed in place) */
  float *f;  /* float copy the op reads */
  float *g;  /* the op's gradient */
};

struct gcase {
  const char *name;
  int nt;
  struct gt t[MAXT];
  size_t nout;
  /* float op: forward into out, then backward with dout into t[i].g */
  void (*run)(struct gcase *c, float *out, const float *dout);
  /* double reference forward from t[i].v */
  void (*ref)(struct gcase *c, double *out);
};

static uint64_t g_seed = 1;

static float urand(void) {
  uint64_t h = keys_mix64(g_seed++ * 0x9e3779b97f4a7c15ull);
  return (float)((double)(h >> 40) / (double)(1 << 23) - 1.0); /* [-1,1) */
}

/* Adds a tensor with values uniform in [lo, hi]; away > 0 keeps |x| >= away. */
static struct gt *add(struct gcase *c, const char *name, size_t n, int grad,
                      float lo, float hi, float away) {
  CHECK(c->nt < MAXT, "nt=%d", c->nt);
  struct gt *t = &c->t[c->nt++];
  t->name = name;
  t->n = n;
  t->grad = grad;
  t->v = xcalloc(n + 1, sizeof(double));
  t->f = xcalloc(n + 1, sizeof(float));
  t->g = xcalloc(n + 1, sizeof(float));
  for (size_t i = 0; i < n; i++) {
    float x = lo + (hi - lo) * 0.5f * (urand() + 1.0f);
    if (away > 0 && fabsf(x) < away)
      x = x < 0 ? x - away : x + away;
    t->f[i] = x;
    t->v[i] = x;
  }
  return t;
}

static void set(struct gt *t, size_t i, float x) {
  t->f[i] = x;
  t->v[i] = x;
}

static double ref_loss(struct gcase *c, const double *R, double *out) {
  c->ref(c, out);
  double s = 0.0;
  for (size_t i = 0; i < c->nout; i++)
    s += out[i] * R[i];
  return s;
}

static void gradcheck(struct gcase *c) {
  size_t no = c->nout;
  double *R = xmalloc(sizeof(double) * no),
         *dout = xmalloc(sizeof(double) * no);
  float *Rf = xmalloc(sizeof(float) * no), *out = xmalloc(sizeof(float) * no);
  for (size_t i = 0; i < no; i++) {
    Rf[i] = urand();
    R[i] = Rf[i];
  }
  /* forward agrees with the reference */
  c->run(c, out, Rf);
  c->ref(c, dout);
  for (size_t i = 0; i < no; i++)
    if (!(fabs(out[i] - dout[i]) <= 1e-5 * (1.0 + fabs(dout[i]))))
      fail_msg("%s: out[%zu] = %.8g, reference %.8g", c->name, i, out[i],
               dout[i]);
  const double h = 1e-6;
  for (int k = 0; k < c->nt; k++) {
    struct gt *t = &c->t[k];
    if (!t->grad)
      continue;
    double *num = xmalloc(sizeof(double) * (t->n + 1)), ss = 0.0;
    for (size_t i = 0; i < t->n; i++) {
      double v0 = t->v[i];
      t->v[i] = v0 + h;
      double lp = ref_loss(c, R, dout);
      t->v[i] = v0 - h;
      double lm = ref_loss(c, R, dout);
      t->v[i] = v0;
      num[i] = (lp - lm) / (2 * h);
      ss += num[i] * num[i];
    }
    double g = sqrt(ss / (double)t->n);
    for (size_t i = 0; i < t->n; i++) {
      double tol = 1e-3 * fabs(num[i]) + 1e-4 * g + 1e-7;
      if (!(fabs(t->g[i] - num[i]) <= tol))
        fail_msg("%s: d%s[%zu] = %.8g, finite difference %.8g (tol %.2g)",
                 c->name, t->name, i, t->g[i], num[i], tol);
    }
    free(num);
  }
  /* backward accumulates: a second pass without zeroing doubles the grads */
  float *first[MAXT];
  for (int k = 0; k < c->nt; k++) {
    first[k] = xmalloc(sizeof(float) * (c->t[k].n + 1));
    memcpy(first[k], c->t[k].g, sizeof(float) * c->t[k].n);
  }
  c->run(c, out, Rf);
  for (int k = 0; k < c->nt; k++) {
    struct gt *t = &c->t[k];
    if (t->grad)
      for (size_t i = 0; i < t->n; i++)
        if (!(fabsf(t->g[i] - 2 * first[k][i]) <=
              1e-5f * fabsf(first[k][i]) + 1e-7f))
          fail_msg("%s: d%s[%zu] = %.8g after two passes, first pass %.8g: "
                   "backward does not accumulate",
                   c->name, t->name, i, t->g[i], first[k][i]);
    free(first[k]);
    free(t->v);
    free(t->f);
    free(t->g);
  }
  free(R);
  free(dout);
  free(Rf);
  free(out);
}

#define T(c, i) ((c)->t[i])

/* ---- double references ---- */

static void d_linear(const double *x, const double *W, const double *b,
                     double *y, int B, int I, int O) {
  for (int r = 0; r < B; r++)
    for (int o = 0; o < O; o++) {
      double s = b ? b[o] : 0.0;
      for (int i = 0; i < I; i++)
        s += x[r * I + i] * W[o * I + i];
      y[r * O + o] = s;
    }
}

static double d_sigmoid(double x) {
  return 1.0 / (1.0 + exp(-x));
}

/* Normalise groups: element (g, j) at x[g*gs + j*js] for j < n. */
static void d_norm(const double *x, double *y, int ngroups, int n, size_t gs,
                   size_t js, double eps) {
  for (int gi = 0; gi < ngroups; gi++) {
    size_t o = (size_t)gi * gs;
    double mu = 0, var = 0;
    for (int j = 0; j < n; j++)
      mu += x[o + j * js];
    mu /= n;
    for (int j = 0; j < n; j++)
      var += (x[o + j * js] - mu) * (x[o + j * js] - mu);
    var /= n;
    for (int j = 0; j < n; j++)
      y[o + j * js] = (x[o + j * js] - mu) / sqrt(var + eps);
  }
}

/* dims shared by a case's run and ref */
static int B_, I_, O_, H_, F_, D_, C_, R_, K_, L_, U_, N0_, A_, N1_;
static float T_, P_, EPS_;

/* ---- linear family ---- */

static void run_linear(struct gcase *c, float *out, const float *dout) {
  nn_linear_forward(T(c, 0).f, T(c, 1).f, T(c, 2).f, out, B_, I_, O_);
  nn_linear_backward(T(c, 0).f, T(c, 1).f, dout, T(c, 0).g, T(c, 1).g,
                     T(c, 2).g, B_, I_, O_);
}
static void ref_linear(struct gcase *c, double *out) {
  d_linear(T(c, 0).v, T(c, 1).v, T(c, 2).v, out, B_, I_, O_);
}

static void test_linear(void **state) {
  (void)state;
  B_ = 5, I_ = 7, O_ = 3;
  struct gcase c = {.name = "linear",
                    .nout = (size_t)B_ * O_,
                    .run = run_linear,
                    .ref = ref_linear};
  add(&c, "x", B_ * I_, 1, -1, 1, 0);
  add(&c, "W", O_ * I_, 1, -1, 1, 0);
  add(&c, "b", O_, 1, -1, 1, 0);
  gradcheck(&c);
}

static void run_bias(struct gcase *c, float *out, const float *dout) {
  memcpy(out, T(c, 0).f, sizeof(float) * B_ * H_);
  nn_bias_forward(out, T(c, 1).f, B_, H_);
  nn_add_backward(dout, T(c, 0).g, NULL, (size_t)B_ * H_); /* pass-through */
  nn_bias_backward(dout, T(c, 1).g, B_, H_);
}
static void ref_bias(struct gcase *c, double *out) {
  for (int i = 0; i < B_ * H_; i++)
    out[i] = T(c, 0).v[i] + T(c, 1).v[i % H_];
}

static void run_mul_add(struct gcase *c, float *out, const float *dout) {
  size_t n = (size_t)B_ * H_;
  float *p = xmalloc(sizeof(float) * n);
  float *dp = xcalloc(n, sizeof(float));
  nn_mul_forward(T(c, 0).f, T(c, 1).f, p, n); /* out = (a*b + a) - b */
  nn_add_forward(p, T(c, 0).f, out, n);
  nn_sub_forward(out, T(c, 1).f, out, n);
  nn_sub_backward(dout, dp, T(c, 1).g, n); /* d(a*b + a) is dp for now */
  memcpy(p, dp, sizeof(float) * n);
  memset(dp, 0, sizeof(float) * n);
  nn_add_backward(p, dp, T(c, 0).g, n);
  nn_mul_backward(T(c, 0).f, T(c, 1).f, dp, T(c, 0).g, T(c, 1).g, n);
  free(p);
  free(dp);
}
static void ref_mul_add(struct gcase *c, double *out) {
  for (int i = 0; i < B_ * H_; i++)
    out[i] = T(c, 0).v[i] * T(c, 1).v[i] + T(c, 0).v[i] - T(c, 1).v[i];
}

static void test_bias_mul_add(void **state) {
  (void)state;
  B_ = 4, H_ = 6;
  struct gcase c = {.name = "bias",
                    .nout = (size_t)B_ * H_,
                    .run = run_bias,
                    .ref = ref_bias};
  add(&c, "y", B_ * H_, 1, -1, 1, 0);
  add(&c, "b", H_, 1, -1, 1, 0);
  gradcheck(&c);
  struct gcase m = {.name = "mul+add-sub",
                    .nout = (size_t)B_ * H_,
                    .run = run_mul_add,
                    .ref = ref_mul_add};
  add(&m, "a", B_ * H_, 1, -1, 1, 0);
  add(&m, "b", B_ * H_, 1, -1, 1, 0);
  gradcheck(&m);
}

static int mB_;
static void run_fscale(struct gcase *c, float *out, const float *dout) {
  nn_field_scale_forward(T(c, 0).f, T(c, 1).f, out, B_, F_, D_, mB_);
  nn_field_scale_backward(T(c, 0).f, T(c, 1).f, dout, T(c, 0).g, T(c, 1).g, B_,
                          F_, D_, mB_);
}
static void ref_fscale(struct gcase *c, double *out) {
  for (int r = 0; r < B_; r++)
    for (int f = 0; f < F_; f++)
      for (int d = 0; d < D_; d++) {
        int i = (r * F_ + f) * D_ + d;
        out[i] = T(c, 0).v[(mB_ == 1 ? 0 : r * F_) + f] * T(c, 1).v[i];
      }
}

static void test_field_scale(void **state) {
  (void)state;
  B_ = 3, F_ = 4, D_ = 5;
  for (mB_ = 1; mB_ <= B_; mB_ += B_ - 1) {
    struct gcase c = {.name = mB_ == 1 ? "field_scale shared" : "field_scale",
                      .nout = (size_t)B_ * F_ * D_,
                      .run = run_fscale,
                      .ref = ref_fscale};
    add(&c, "m", mB_ * F_, 1, -1, 1, 0);
    add(&c, "e", B_ * F_ * D_, 1, -1, 1, 0);
    gradcheck(&c);
  }
}

/* out (B, L*H + B) = [repeat(x) flattened; rowsum(x)] as two outputs */
static void run_repeat(struct gcase *c, float *out, const float *dout) {
  nn_repeat_forward(T(c, 0).f, out, B_, L_, H_);
  nn_rowsum_forward(T(c, 0).f, out + (size_t)B_ * L_ * H_, B_, H_);
  nn_repeat_backward(dout, T(c, 0).g, B_, L_, H_);
  nn_rowsum_backward(dout + (size_t)B_ * L_ * H_, T(c, 0).g, B_, H_);
}
static void ref_repeat(struct gcase *c, double *out) {
  for (int r = 0; r < B_; r++) {
    double s = 0;
    for (int h = 0; h < H_; h++) {
      s += T(c, 0).v[r * H_ + h];
      for (int l = 0; l < L_; l++)
        out[(r * L_ + l) * H_ + h] = T(c, 0).v[r * H_ + h];
    }
    out[B_ * L_ * H_ + r] = s;
  }
}

static void test_repeat_rowsum(void **state) {
  (void)state;
  B_ = 3, L_ = 4, H_ = 2;
  struct gcase c = {.name = "repeat/rowsum",
                    .nout = (size_t)B_ * L_ * H_ + B_,
                    .run = run_repeat,
                    .ref = ref_repeat};
  add(&c, "x", B_ * H_, 1, -1, 1, 0);
  gradcheck(&c);
}

/* concat [a (B,2); b (B,3); c (B,1)], then split it back into (B,4),(B,2)
 * and output split_1 * 2 ++ split_0 (so both directions carry gradient). */
static void run_concat(struct gcase *c, float *out, const float *dout) {
  int w[3] = {2, 3, 1}, w2[2] = {4, 2};
  const float *xs[3] = {T(c, 0).f, T(c, 1).f, T(c, 2).f};
  float *dxs[3] = {T(c, 0).g, T(c, 1).g, T(c, 2).g};
  float cat[6 * 8], s0[4 * 8], s1[2 * 8], dcat[6 * 8] = {0};
  float *ys[2] = {s0, s1};
  CHECK(B_ <= 8, "B_=%d", B_);
  nn_concat_forward(3, xs, w, cat, B_);
  nn_split_forward(cat, 2, w2, ys, B_);
  /* out (B, 6) = [s1; s0] by concat again */
  int w3[2] = {2, 4};
  const float *zs[2] = {s1, s0};
  nn_concat_forward(2, zs, w3, out, B_);
  float ds0[4 * 8] = {0}, ds1[2 * 8] = {0};
  float *dzs[2] = {ds1, ds0};
  nn_concat_backward(2, w3, dout, dzs, B_);
  const float *dys[2] = {ds0, ds1};
  nn_split_backward(2, w2, dys, dcat, B_);
  nn_concat_backward(3, w, dcat, dxs, B_);
}
static void ref_concat(struct gcase *c, double *out) {
  for (int r = 0; r < B_; r++) {
    double cat[6] = {T(c, 0).v[r * 2],     T(c, 0).v[r * 2 + 1],
                     T(c, 1).v[r * 3],     T(c, 1).v[r * 3 + 1],
                     T(c, 1).v[r * 3 + 2], T(c, 2).v[r]};
    double o[6] = {cat[4], cat[5], cat[0], cat[1], cat[2], cat[3]};
    memcpy(out + r * 6, o, sizeof(o));
  }
}

static void test_concat_split(void **state) {
  (void)state;
  B_ = 3;
  struct gcase c = {.name = "concat/split",
                    .nout = (size_t)B_ * 6,
                    .run = run_concat,
                    .ref = ref_concat};
  add(&c, "a", B_ * 2, 1, -1, 1, 0);
  add(&c, "b", B_ * 3, 1, -1, 1, 0);
  add(&c, "c", B_ * 1, 1, -1, 1, 0);
  gradcheck(&c);
}

/* ---- activations ---- */

static int act_kind_; /* 0 relu, 1 sigmoid, 2 tanh */
static void run_act(struct gcase *c, float *out, const float *dout) {
  size_t n = T(c, 0).n;
  void (*fw[3])(const float *, float *, size_t) = {
      nn_relu_forward, nn_sigmoid_forward, nn_tanh_forward};
  void (*bw[3])(const float *, const float *, float *, size_t) = {
      nn_relu_backward, nn_sigmoid_backward, nn_tanh_backward};
  fw[act_kind_](T(c, 0).f, out, n);
  bw[act_kind_](out, dout, T(c, 0).g, n);
}
static void ref_act(struct gcase *c, double *out) {
  for (size_t i = 0; i < T(c, 0).n; i++) {
    double x = T(c, 0).v[i];
    out[i] = act_kind_ == 0   ? (x > 0 ? x : 0)
             : act_kind_ == 1 ? d_sigmoid(x)
                              : tanh(x);
  }
}

static void test_relu_sigmoid_tanh(void **state) {
  (void)state;
  const char *names[3] = {"relu", "sigmoid", "tanh"};
  for (act_kind_ = 0; act_kind_ < 3; act_kind_++) {
    struct gcase c = {
        .name = names[act_kind_], .nout = 40, .run = run_act, .ref = ref_act};
    add(&c, "x", 40, 1, -4, 4, 0.05f);
    gradcheck(&c);
  }
}

static void run_prelu(struct gcase *c, float *out, const float *dout) {
  nn_prelu_forward(T(c, 0).f, T(c, 1).f, out, B_, H_);
  nn_prelu_backward(T(c, 0).f, T(c, 1).f, dout, T(c, 0).g, T(c, 1).g, B_, H_);
}
static void ref_prelu(struct gcase *c, double *out) {
  for (int i = 0; i < B_ * H_; i++) {
    double x = T(c, 0).v[i];
    out[i] = x > 0 ? x : T(c, 1).v[i % H_] * x;
  }
}

static void test_prelu(void **state) {
  (void)state;
  B_ = 6, H_ = 4;
  struct gcase c = {.name = "prelu",
                    .nout = (size_t)B_ * H_,
                    .run = run_prelu,
                    .ref = ref_prelu};
  add(&c, "x", B_ * H_, 1, -2, 2, 0.05f);
  add(&c, "a", H_, 1, 0, 0.5f, 0);
  gradcheck(&c);
}

static void run_softmax(struct gcase *c, float *out, const float *dout) {
  nn_softmax_forward(T(c, 0).f, out, N0_, A_, N1_, T_);
  nn_softmax_backward(out, dout, T(c, 0).g, N0_, A_, N1_, T_);
}
static void ref_softmax(struct gcase *c, double *out) {
  const double *x = T(c, 0).v;
  for (int o = 0; o < N0_; o++)
    for (int in = 0; in < N1_; in++) {
      double s = 0;
      for (int a = 0; a < A_; a++)
        s += exp(x[(o * A_ + a) * N1_ + in] / T_);
      for (int a = 0; a < A_; a++)
        out[(o * A_ + a) * N1_ + in] = exp(x[(o * A_ + a) * N1_ + in] / T_) / s;
    }
}

static void test_softmax_axes_and_temperatures(void **state) {
  (void)state;
  /* last axis, middle axis (MaskFusion: over layers per field), first axis */
  const int shapes[][3] = {{4, 5, 1}, {3, 4, 5}, {1, 6, 3}};
  const float temps[] = {1.0f, 0.5f, 3.0f};
  for (size_t s = 0; s < ARRAY_LEN(shapes); s++) {
    N0_ = shapes[s][0], A_ = shapes[s][1], N1_ = shapes[s][2], T_ = temps[s];
    struct gcase c = {.name = "softmax",
                      .nout = (size_t)N0_ * A_ * N1_,
                      .run = run_softmax,
                      .ref = ref_softmax};
    add(&c, "x", c.nout, 1, -2, 2, 0);
    gradcheck(&c);
  }
}

static uint64_t DSEED_ = 77, DSTEP_ = 5;
static void run_dropout(struct gcase *c, float *out, const float *dout) {
  nn_dropout_forward(T(c, 0).f, out, T(c, 0).n, P_, DSEED_, DSTEP_);
  nn_dropout_backward(dout, T(c, 0).g, T(c, 0).n, P_, DSEED_, DSTEP_);
}
static void ref_dropout(struct gcase *c, double *out) {
  for (size_t i = 0; i < T(c, 0).n; i++)
    out[i] = nn_dropout_keep(DSEED_, DSTEP_, i, P_) ? T(c, 0).v[i] / (1.0 - P_)
                                                    : 0.0;
}

static void test_dropout_grad(void **state) {
  (void)state;
  for (P_ = 0.0f; P_ < 0.7f; P_ += 0.3f) {
    struct gcase c = {
        .name = "dropout", .nout = 50, .run = run_dropout, .ref = ref_dropout};
    add(&c, "x", 50, 1, -1, 1, 0);
    gradcheck(&c);
  }
}

/* ---- normalisation ---- */

static int gamma_on_;
static void run_layernorm(struct gcase *c, float *out, const float *dout) {
  float mean[64], rstd[64];
  const float *g = gamma_on_ ? T(c, 1).f : NULL,
              *b = gamma_on_ ? T(c, 2).f : NULL;
  nn_layernorm_forward(T(c, 0).f, g, b, out, mean, rstd, B_, H_, EPS_);
  nn_layernorm_backward(T(c, 0).f, g, mean, rstd, dout, T(c, 0).g,
                        gamma_on_ ? T(c, 1).g : NULL,
                        gamma_on_ ? T(c, 2).g : NULL, B_, H_);
}
static void ref_layernorm(struct gcase *c, double *out) {
  d_norm(T(c, 0).v, out, B_, H_, H_, 1, EPS_);
  if (gamma_on_)
    for (int i = 0; i < B_ * H_; i++)
      out[i] = out[i] * T(c, 1).v[i % H_] + T(c, 2).v[i % H_];
}

static void test_layernorm(void **state) {
  (void)state;
  B_ = 4, H_ = 7, EPS_ = 1e-5f;
  for (gamma_on_ = 0; gamma_on_ < 2; gamma_on_++) {
    struct gcase c = {.name = "layernorm",
                      .nout = (size_t)B_ * H_,
                      .run = run_layernorm,
                      .ref = ref_layernorm};
    add(&c, "x", B_ * H_, 1, -2, 2, 0);
    if (gamma_on_) {
      add(&c, "gamma", H_, 1, 0.5f, 1.5f, 0);
      add(&c, "beta", H_, 1, -1, 1, 0);
    }
    gradcheck(&c);
  }
}

static void run_fln(struct gcase *c, float *out, const float *dout) {
  float mean[64], rstd[64];
  nn_field_layernorm_forward(T(c, 0).f, T(c, 1).f, T(c, 2).f, out, mean, rstd,
                             B_, F_, D_, EPS_);
  nn_field_layernorm_backward(T(c, 0).f, T(c, 1).f, mean, rstd, dout, T(c, 0).g,
                              T(c, 1).g, T(c, 2).g, B_, F_, D_);
}
static void ref_fln(struct gcase *c, double *out) {
  d_norm(T(c, 0).v, out, B_ * F_, D_, D_, 1, EPS_);
  for (int i = 0; i < B_ * F_ * D_; i++) { /* field f's own (D) affine */
    int fd = i % (F_ * D_);
    out[i] = out[i] * T(c, 1).v[fd] + T(c, 2).v[fd];
  }
}

static void run_inorm(struct gcase *c, float *out, const float *dout) {
  float mean[64], rstd[64];
  nn_instancenorm_forward(T(c, 0).f, T(c, 1).f, T(c, 2).f, out, mean, rstd, B_,
                          F_, D_, EPS_);
  nn_instancenorm_backward(T(c, 0).f, T(c, 1).f, mean, rstd, dout, T(c, 0).g,
                           T(c, 1).g, T(c, 2).g, B_, F_, D_);
}
static void ref_inorm(struct gcase *c, double *out) {
  d_norm(T(c, 0).v, out, B_ * F_, D_, D_, 1, EPS_);
  for (int i = 0; i < B_ * F_ * D_; i++) {
    int f = (i / D_) % F_;
    out[i] = out[i] * T(c, 1).v[f] + T(c, 2).v[f];
  }
}

static void test_field_layernorm_and_instancenorm(void **state) {
  (void)state;
  B_ = 3, F_ = 4, D_ = 5, EPS_ = 1e-5f;
  struct gcase c = {.name = "field_layernorm",
                    .nout = (size_t)B_ * F_ * D_,
                    .run = run_fln,
                    .ref = ref_fln};
  add(&c, "x", c.nout, 1, -2, 2, 0);
  add(&c, "gamma", F_ * D_, 1, 0.5f, 1.5f, 0);
  add(&c, "beta", F_ * D_, 1, -1, 1, 0);
  gradcheck(&c);
  struct gcase n = {.name = "instancenorm",
                    .nout = (size_t)B_ * F_ * D_,
                    .run = run_inorm,
                    .ref = ref_inorm};
  add(&n, "x", n.nout, 1, -2, 2, 0);
  add(&n, "gamma", F_, 1, 0.5f, 1.5f, 0);
  add(&n, "beta", F_, 1, -1, 1, 0);
  gradcheck(&n);
}

static void run_batchnorm(struct gcase *c, float *out, const float *dout) {
  float mean[16], rstd[16], rm[16], rv[16];
  struct nn_bnstats s = {
      .H = H_, .eps = EPS_, .momentum = 0.1f, .run_mean = rm, .run_var = rv};
  nn_bnstats_init(&s);
  nn_batchnorm_forward(T(c, 0).f, T(c, 1).f, T(c, 2).f, out, mean, rstd, &s, B_,
                       true);
  nn_batchnorm_backward(T(c, 0).f, T(c, 1).f, mean, rstd, dout, T(c, 0).g,
                        T(c, 1).g, T(c, 2).g, B_, H_);
}
static void ref_batchnorm(struct gcase *c, double *out) {
  d_norm(T(c, 0).v, out, H_, B_, 1, H_, EPS_); /* groups = columns */
  for (int i = 0; i < B_ * H_; i++)
    out[i] = out[i] * T(c, 1).v[i % H_] + T(c, 2).v[i % H_];
}

static void run_dice(struct gcase *c, float *out, const float *dout) {
  float mean[16], rstd[16], rm[16], rv[16];
  struct nn_bnstats s = {
      .H = H_, .eps = EPS_, .momentum = 0.01f, .run_mean = rm, .run_var = rv};
  nn_bnstats_init(&s);
  nn_dice_forward(T(c, 0).f, T(c, 1).f, out, mean, rstd, &s, B_, true);
  nn_dice_backward(T(c, 0).f, T(c, 1).f, mean, rstd, dout, T(c, 0).g, T(c, 1).g,
                   B_, H_);
}
static void ref_dice(struct gcase *c, double *out) {
  double xh[64];
  d_norm(T(c, 0).v, xh, H_, B_, 1, H_, EPS_);
  for (int i = 0; i < B_ * H_; i++) {
    double p = d_sigmoid(xh[i]), x = T(c, 0).v[i], a = T(c, 1).v[i % H_];
    out[i] = p * x + (1 - p) * a * x;
  }
}

static void test_batchnorm_and_dice(void **state) {
  (void)state;
  B_ = 6, H_ = 4, EPS_ = 1e-5f;
  struct gcase c = {.name = "batchnorm",
                    .nout = (size_t)B_ * H_,
                    .run = run_batchnorm,
                    .ref = ref_batchnorm};
  add(&c, "x", c.nout, 1, -2, 2, 0);
  add(&c, "gamma", H_, 1, 0.5f, 1.5f, 0);
  add(&c, "beta", H_, 1, -1, 1, 0);
  gradcheck(&c);
  struct gcase d = {.name = "dice",
                    .nout = (size_t)B_ * H_,
                    .run = run_dice,
                    .ref = ref_dice};
  add(&d, "x", d.nout, 1, -2, 2, 0);
  add(&d, "alpha", H_, 1, -0.5f, 0.5f, 0);
  gradcheck(&d);
}

/* ---- cross layers ---- */

static void run_cross(struct gcase *c, float *out, const float *dout) {
  nn_cross_forward(T(c, 0).f, T(c, 1).f, T(c, 2).f, T(c, 3).f, out, B_, C_);
  nn_cross_backward(T(c, 0).f, T(c, 1).f, T(c, 2).f, dout, T(c, 0).g, T(c, 1).g,
                    T(c, 2).g, T(c, 3).g, B_, C_);
}
static void ref_cross(struct gcase *c, double *out) {
  const double *x0 = T(c, 0).v, *xl = T(c, 1).v, *w = T(c, 2).v, *b = T(c, 3).v;
  for (int r = 0; r < B_; r++) {
    double s = 0;
    for (int j = 0; j < C_; j++)
      s += w[j] * xl[r * C_ + j];
    for (int j = 0; j < C_; j++)
      out[r * C_ + j] = x0[r * C_ + j] * s + b[j] + xl[r * C_ + j];
  }
}

static void run_cross2(struct gcase *c, float *out, const float *dout) {
  float u[64], work[64];
  nn_cross2_forward(T(c, 0).f, T(c, 1).f, T(c, 2).f, T(c, 3).f, out, u, B_, C_);
  nn_cross2_backward(T(c, 0).f, T(c, 1).f, T(c, 2).f, u, dout, T(c, 0).g,
                     T(c, 1).g, T(c, 2).g, T(c, 3).g, work, B_, C_);
}
static void ref_cross2(struct gcase *c, double *out) {
  double u[64];
  d_linear(T(c, 1).v, T(c, 2).v, T(c, 3).v, u, B_, C_, C_);
  for (int i = 0; i < B_ * C_; i++)
    out[i] = T(c, 0).v[i] * u[i] + T(c, 1).v[i];
}

static void test_cross_dcn_dcnv2(void **state) {
  (void)state;
  B_ = 3, C_ = 5;
  struct gcase c = {.name = "cross",
                    .nout = (size_t)B_ * C_,
                    .run = run_cross,
                    .ref = ref_cross};
  add(&c, "x0", B_ * C_, 1, -1, 1, 0);
  add(&c, "xl", B_ * C_, 1, -1, 1, 0);
  add(&c, "w", C_, 1, -1, 1, 0);
  add(&c, "b", C_, 1, -1, 1, 0);
  gradcheck(&c);
  struct gcase d = {.name = "cross2",
                    .nout = (size_t)B_ * C_,
                    .run = run_cross2,
                    .ref = ref_cross2};
  add(&d, "x0", B_ * C_, 1, -1, 1, 0);
  add(&d, "xl", B_ * C_, 1, -1, 1, 0);
  add(&d, "W", C_ * C_, 1, -1, 1, 0);
  add(&d, "b", C_, 1, -1, 1, 0);
  gradcheck(&d);
}

/* The first layer aliases xl = x0 (and dxl = dx0): one tensor. */
static void run_cross_first(struct gcase *c, float *out, const float *dout) {
  float u[64], work[64];
  nn_cross2_forward(T(c, 0).f, T(c, 0).f, T(c, 1).f, T(c, 2).f, out, u, B_, C_);
  nn_cross2_backward(T(c, 0).f, T(c, 0).f, T(c, 1).f, u, dout, T(c, 0).g,
                     T(c, 0).g, T(c, 1).g, T(c, 2).g, work, B_, C_);
}
static void ref_cross_first(struct gcase *c, double *out) {
  double u[64];
  d_linear(T(c, 0).v, T(c, 1).v, T(c, 2).v, u, B_, C_, C_);
  for (int i = 0; i < B_ * C_; i++)
    out[i] = T(c, 0).v[i] * u[i] + T(c, 0).v[i];
}

static void test_cross2_first_layer_aliasing(void **state) {
  (void)state;
  B_ = 2, C_ = 4;
  struct gcase c = {.name = "cross2 x0==xl",
                    .nout = (size_t)B_ * C_,
                    .run = run_cross_first,
                    .ref = ref_cross_first};
  add(&c, "x0", B_ * C_, 1, -1, 1, 0);
  add(&c, "W", C_ * C_, 1, -1, 1, 0);
  add(&c, "b", C_, 1, -1, 1, 0);
  gradcheck(&c);
}

static void run_crossmix(struct gcase *c, float *out, const float *dout) {
  struct nn_crossmix m = {.V = T(c, 2).f,
                          .Cm = T(c, 3).f,
                          .U = T(c, 4).f,
                          .b = T(c, 5).f,
                          .G = T(c, 6).f,
                          .dV = T(c, 2).g,
                          .dCm = T(c, 3).g,
                          .dU = T(c, 4).g,
                          .db = T(c, 5).g,
                          .dG = T(c, 6).g,
                          .C = C_,
                          .R = R_,
                          .K = K_};
  float *cache = xmalloc(sizeof(float) * nn_crossmix_cache_len(&m, B_));
  float *work = xmalloc(sizeof(float) * nn_crossmix_work_len(&m, B_));
  nn_crossmix_forward(&m, T(c, 0).f, T(c, 1).f, out, cache, B_);
  nn_crossmix_backward(&m, T(c, 0).f, T(c, 1).f, cache, dout, T(c, 0).g,
                       T(c, 1).g, work, B_);
  free(cache);
  free(work);
}
static void ref_crossmix(struct gcase *c, double *out) {
  const double *x0 = T(c, 0).v, *xl = T(c, 1).v, *V = T(c, 2).v,
               *Cm = T(c, 3).v, *U = T(c, 4).v, *b = T(c, 5).v, *G = T(c, 6).v;
  double v1[16], v2[16], u[16], lg[8];
  for (int r = 0; r < B_; r++) {
    const double *x0r = x0 + r * C_, *xlr = xl + r * C_;
    d_linear(xlr, G, NULL, lg, 1, C_, K_);
    double mx = lg[0], s = 0;
    for (int k = 1; k < K_; k++)
      mx = fmax(mx, lg[k]);
    for (int k = 0; k < K_; k++)
      s += exp(lg[k] - mx);
    for (int j = 0; j < C_; j++)
      out[r * C_ + j] = xlr[j];
    for (int k = 0; k < K_; k++) {
      double gk = exp(lg[k] - mx) / s;
      d_linear(xlr, V + k * R_ * C_, NULL, v1, 1, C_, R_);
      for (int i = 0; i < R_; i++)
        v1[i] = tanh(v1[i]);
      d_linear(v1, Cm + k * R_ * R_, NULL, v2, 1, R_, R_);
      for (int i = 0; i < R_; i++)
        v2[i] = tanh(v2[i]);
      d_linear(v2, U + k * C_ * R_, b, u, 1, R_, C_);
      for (int j = 0; j < C_; j++)
        out[r * C_ + j] += gk * x0r[j] * u[j];
    }
  }
}

static void test_crossmix(void **state) {
  (void)state;
  B_ = 3, C_ = 6, R_ = 2, K_ = 3;
  struct gcase c = {.name = "crossmix",
                    .nout = (size_t)B_ * C_,
                    .run = run_crossmix,
                    .ref = ref_crossmix};
  add(&c, "x0", B_ * C_, 1, -1, 1, 0);
  add(&c, "xl", B_ * C_, 1, -1, 1, 0);
  add(&c, "V", K_ * R_ * C_, 1, -1, 1, 0);
  add(&c, "Cm", K_ * R_ * R_, 1, -1, 1, 0);
  add(&c, "U", K_ * C_ * R_, 1, -1, 1, 0);
  add(&c, "b", C_, 1, -1, 1, 0);
  add(&c, "G", K_ * C_, 1, -1, 1, 0);
  gradcheck(&c);
}

/* ---- loss ---- */

static void run_logloss(struct gcase *c, float *out, const float *dout) {
  out[0] = (float)nn_logloss_forward(T(c, 0).f, T(c, 1).f, B_);
  nn_logloss_backward(T(c, 0).f, T(c, 1).f, T(c, 0).g, B_, dout[0]);
}
static void ref_logloss(struct gcase *c, double *out) {
  double s = 0;
  for (int i = 0; i < B_; i++) {
    double p = d_sigmoid(T(c, 0).v[i]), y = T(c, 1).v[i];
    s += -y * log(p) - (1 - y) * log(1 - p);
  }
  out[0] = s / B_;
}

static void test_logloss_grad(void **state) {
  (void)state;
  B_ = 9;
  struct gcase c = {
      .name = "logloss", .nout = 1, .run = run_logloss, .ref = ref_logloss};
  add(&c, "z", B_, 1, -5, 5, 0);
  struct gt *y = add(&c, "y", B_, 0, 0, 1, 0);
  for (int i = 0; i < B_; i++)
    set(y, i, i % 3 == 0 ? 1.0f : i % 3 == 1 ? 0.0f : 0.25f);
  gradcheck(&c);
}

/* ---- embeddings and pooling ---- */

static const int32_t IDX_[] = {0, 2, -1, 1, 2, 2, 3, 0, 1, 3, 2, 0};
static const uint16_t PREFIX_[] = {4, 2, 0, 3};

/* per-(b, f) feature values (libFM idx:x, CSV value columns), or NULL */
static const float VALS_[] = {1.5f, -2,    0.25f, 1,    3,     -0.5f,
                              2,    0.75f, -1,    0.5f, 1.25f, -3};
static const float *vals_;

static void run_embed(struct gcase *c, float *out, const float *dout) {
  nn_embed_gather(T(c, 0).f, PREFIX_, IDX_, vals_, out, B_, F_, D_, U_);
  nn_embed_scatter(dout, PREFIX_, IDX_, vals_, T(c, 0).g, B_, F_, D_, U_);
}
static void ref_embed(struct gcase *c, double *out) {
  for (int bf = 0; bf < B_ * F_; bf++)
    for (int j = 0; j < D_; j++) {
      int u = IDX_[bf];
      double x = vals_ ? vals_[bf] : 1;
      out[bf * D_ + j] =
          u >= 0 && j < PREFIX_[u] ? x * T(c, 0).v[u * D_ + j] : 0;
    }
}

static void test_embed_gather_scatter(void **state) {
  (void)state;
  B_ = 4, F_ = 3, D_ = 4, U_ = 4;
  struct gcase c = {.name = "embed",
                    .nout = (size_t)B_ * F_ * D_,
                    .run = run_embed,
                    .ref = ref_embed};
  /* The block holds garbage beyond each prefix (as a reused buffer would):
   * gather must read zeros there, and the finite differences prove that
   * nothing beyond p gets gradient (the reference does not read it). */
  add(&c, "rows", U_ * D_, 1, 3, 9, 0);
  gradcheck(&c);
  /* and with each occurrence scaled by its feature value: a key seen with
   * several values gets the sum of value x gradient */
  struct gcase cv = {.name = "embed with values",
                     .nout = (size_t)B_ * F_ * D_,
                     .run = run_embed,
                     .ref = ref_embed};
  add(&cv, "rows", U_ * D_, 1, 3, 9, 0);
  vals_ = VALS_;
  gradcheck(&cv);
  vals_ = NULL;
}

static int mean_;
static void run_pool(struct gcase *c, float *out, const float *dout) {
  nn_masked_pool_forward(T(c, 0).f, T(c, 1).f, out, B_, L_, D_, mean_);
  nn_masked_pool_backward(T(c, 0).f, T(c, 1).f, dout, T(c, 0).g, T(c, 1).g, B_,
                          L_, D_, mean_);
}
static void ref_pool(struct gcase *c, double *out) {
  for (int r = 0; r < B_; r++) {
    double cnt = 0;
    for (int l = 0; l < L_; l++)
      cnt += T(c, 1).v[r * L_ + l];
    for (int d = 0; d < D_; d++) {
      double s = 0;
      for (int l = 0; l < L_; l++)
        s += T(c, 1).v[r * L_ + l] * T(c, 0).v[(r * L_ + l) * D_ + d];
      out[r * D_ + d] = mean_ && cnt != 0 ? s / cnt : s;
    }
  }
}

static void test_masked_pool(void **state) {
  (void)state;
  B_ = 3, L_ = 4, D_ = 2;
  for (mean_ = 0; mean_ < 2; mean_++) {
    struct gcase c = {.name = mean_ ? "mean pool" : "sum pool",
                      .nout = (size_t)B_ * D_,
                      .run = run_pool,
                      .ref = ref_pool};
    add(&c, "x", B_ * L_ * D_, 1, -1, 1, 0);
    struct gt *m = add(&c, "mask", B_ * L_, 0, 0, 1, 0);
    const float mk[] = {1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0}; /* row 2 empty */
    for (int i = 0; i < B_ * L_; i++)
      set(m, i, mk[i]);
    gradcheck(&c);
    /* attention weights as the mask (DIN): their gradient too; positive so
     * that no row's weight sum crosses 0 under +-h */
    struct gcase w = {.name = mean_ ? "weighted mean pool" : "weighted pool",
                      .nout = (size_t)B_ * D_,
                      .run = run_pool,
                      .ref = ref_pool};
    add(&w, "x", B_ * L_ * D_, 1, -1, 1, 0);
    add(&w, "weights", B_ * L_, 1, 0.1f, 1, 0);
    gradcheck(&w);
  }
}

static void run_msoftmax(struct gcase *c, float *out, const float *dout) {
  nn_masked_softmax_forward(T(c, 0).f, T(c, 1).f, out, B_, L_, T_);
  nn_softmax_backward(out, dout, T(c, 0).g, B_, L_, 1, T_);
}
static void ref_msoftmax(struct gcase *c, double *out) {
  for (int r = 0; r < B_; r++) {
    double s = 0;
    for (int l = 0; l < L_; l++)
      if (T(c, 1).v[r * L_ + l] != 0)
        s += exp(T(c, 0).v[r * L_ + l] / T_);
    for (int l = 0; l < L_; l++)
      out[r * L_ + l] =
          T(c, 1).v[r * L_ + l] != 0 ? exp(T(c, 0).v[r * L_ + l] / T_) / s : 0;
  }
}

static void test_masked_softmax(void **state) {
  (void)state;
  B_ = 3, L_ = 4, T_ = 0.7f;
  struct gcase c = {.name = "masked softmax",
                    .nout = (size_t)B_ * L_,
                    .run = run_msoftmax,
                    .ref = ref_msoftmax};
  add(&c, "x", B_ * L_, 1, -2, 2, 0);
  struct gt *m = add(&c, "mask", B_ * L_, 0, 0, 1, 0);
  const float mk[] = {1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0}; /* row 2 empty */
  for (int i = 0; i < B_ * L_; i++)
    set(m, i, mk[i]);
  gradcheck(&c);
}

static void run_fm(struct gcase *c, float *out, const float *dout) {
  nn_fm_forward(T(c, 0).f, out, B_, F_, D_);
  nn_fm_backward(T(c, 0).f, dout, T(c, 0).g, B_, F_, D_);
}
static void ref_fm(struct gcase *c, double *out) {
  for (int r = 0; r < B_; r++) { /* the pairwise definition */
    double s = 0;
    for (int f = 0; f < F_; f++)
      for (int g = f + 1; g < F_; g++)
        for (int d = 0; d < D_; d++)
          s += T(c, 0).v[(r * F_ + f) * D_ + d] *
               T(c, 0).v[(r * F_ + g) * D_ + d];
    out[r] = s;
  }
}

static void run_prefix(struct gcase *c, float *out, const float *dout) {
  nn_prefix_mask_forward(T(c, 0).f, out, B_, D_);
  nn_prefix_mask_backward(dout, T(c, 0).g, B_, D_);
}
static void ref_prefix(struct gcase *c, double *out) {
  for (int r = 0; r < B_; r++) /* m = t M, M[i][j] = 1 if j <= i */
    for (int j = 0; j < D_; j++) {
      double s = 0;
      for (int i = 0; i < D_; i++)
        s += T(c, 0).v[r * D_ + i] * (j <= i ? 1.0 : 0.0);
      out[r * D_ + j] = s;
    }
}

static void test_fm_and_prefix_mask(void **state) {
  (void)state;
  B_ = 3, F_ = 4, D_ = 3;
  struct gcase c = {
      .name = "fm", .nout = (size_t)B_, .run = run_fm, .ref = ref_fm};
  add(&c, "e", B_ * F_ * D_, 1, -1, 1, 0);
  gradcheck(&c);
  B_ = 3, D_ = 5;
  struct gcase p = {.name = "prefix mask",
                    .nout = (size_t)B_ * D_,
                    .run = run_prefix,
                    .ref = ref_prefix};
  add(&p, "t", B_ * D_, 1, 0, 1, 0);
  gradcheck(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_linear),
      cmocka_unit_test(test_bias_mul_add),
      cmocka_unit_test(test_field_scale),
      cmocka_unit_test(test_concat_split),
      cmocka_unit_test(test_repeat_rowsum),
      cmocka_unit_test(test_relu_sigmoid_tanh),
      cmocka_unit_test(test_prelu),
      cmocka_unit_test(test_softmax_axes_and_temperatures),
      cmocka_unit_test(test_dropout_grad),
      cmocka_unit_test(test_layernorm),
      cmocka_unit_test(test_field_layernorm_and_instancenorm),
      cmocka_unit_test(test_batchnorm_and_dice),
      cmocka_unit_test(test_cross_dcn_dcnv2),
      cmocka_unit_test(test_cross2_first_layer_aliasing),
      cmocka_unit_test(test_crossmix),
      cmocka_unit_test(test_logloss_grad),
      cmocka_unit_test(test_embed_gather_scatter),
      cmocka_unit_test(test_masked_pool),
      cmocka_unit_test(test_masked_softmax),
      cmocka_unit_test(test_fm_and_prefix_mask),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
