/* masknet: SerMaskNet (with and without its LayerNorms), ParaMaskNet and
 * MaskFusion against the committed PyTorch fixtures (tests/nn/README.md).
 *
 * Each model is built from its fixture's meta/config, every parameter is
 * copied in by name (the model must register exactly the fixture's names,
 * with the same element counts: none missing, none extra), then one forward
 * and backward of the logloss on the stored batch; logits, loss, every
 * grad/<p> and grad/input/E are compared with fixture_max_err at the
 * README's tolerance. Bmax is twice the batch, so a batch smaller than the
 * buffers works too. A second backward after zeroing the gradients must give
 * the same values bit for bit (every scratch buffer is cleared), and a
 * backward with dE = NULL the same parameter gradients. Models are built
 * through model_new (the kind table). Also: options that do not fit are
 * refused with a reason, the default options give MODELS.md's training
 * init (Xavier-normal weights, zero biases, gamma 1), and dropout (which
 * the fixtures cannot pin) is off in evaluation and differentiated right in
 * training (finite differences with the same masks).
 *
 * Tolerances (README "Tolerances"): sermasknet 1e-4, sermasknet_noln 1e-5,
 * paramasknet 1e-5, maskfusion 1e-4 (2e-4 for grad/fc.bias, a nearly
 * cancelling sum). A formula slip (a missing LN affine, the mask input
 * normalised, the wrong concatenation order) moves a tensor by >= 1e-2. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/nn/fixture.h"
#include "worker/nn/model.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

/* ---- a few values out of meta/config (flat JSON written by
 * make_fixtures.py: "key": value) ---- */

static const char *json_at(const char *js, const char *key) {
  char pat[64];
  snprintf(pat, sizeof(pat), "\"%s\": ", key);
  const char *s = strstr(js, pat);
  if (!s)
    fail_msg("meta/config has no %s: %s", key, js);
  return s + strlen(pat);
}

static double json_num(const char *js, const char *key) {
  return strtod(json_at(js, key), NULL);
}

static bool json_bool(const char *js, const char *key) {
  return strncmp(json_at(js, key), "true", 4) == 0;
}

/* "key": [a, b, ...] -> v; returns the count. */
static int json_ints(const char *js, const char *key, int *v, int max) {
  const char *s = json_at(js, key);
  assert_int_equal(*s, '[');
  int n = 0;
  s++;
  while (*s && *s != ']') {
    char *end;
    long x = strtol(s, &end, 10);
    if (end == s)
      break;
    assert_true(n < max);
    v[n++] = (int)x;
    s = end;
    while (*s == ',' || *s == ' ')
      s++;
  }
  return n;
}

/* ---- the fixture run ---- */

static struct fixture *open_fx(const char *name) {
  char err[256];
  struct fixture *fx = fixture_open_named(name, err, sizeof(err));
  if (!fx)
    fail_msg("%s", err);
  return fx;
}

static const float *need(const struct fixture *fx, const char *name, size_t n) {
  struct fixture_shape sh;
  const float *v = fixture_get(fx, name, &sh);
  if (!v)
    fail_msg("fixture has no float tensor %s", name);
  if (sh.numel != n)
    fail_msg("%s has %zu elements, expected %zu", name, sh.numel, n);
  return v;
}

static void expect(const struct fixture *fx, const char *model,
                   const char *name, const float *got, size_t n, double tol) {
  size_t worst = 0;
  const float *want = need(fx, name, n);
  double e = fixture_max_err(got, want, n, &worst);
  if (!(e <= tol))
    fail_msg("%s: %s differs from PyTorch by %.3g > %.1g (worst [%zu]: "
             "%.8g vs %.8g)",
             model, name, e, tol, worst, got[worst], want[worst]);
}

/* Copies every param/<p> of meta/param_names into p; fails on a name the
 * model lacks, a size mismatch, or a model tensor the file lacks. Returns
 * the names (a copy of the text, caller frees) for the gradient loop. */
static char *copy_params(const struct fixture *fx, struct params *p) {
  const char *names = fixture_text(fx, "meta/param_names");
  assert_non_null(names);
  char *list = strdup(names);
  char *save = NULL;
  int n = 0;
  char *tmp = strdup(names);
  for (char *nm = strtok_r(tmp, "\n", &save); nm;
       nm = strtok_r(NULL, "\n", &save)) {
    int id = params_find(p, nm);
    if (id < 0)
      fail_msg("the model has no tensor %s", nm);
    const struct params_view *v = params_view(p, id);
    char key[300];
    snprintf(key, sizeof(key), "param/%s", nm);
    memcpy(params_value(p, id), need(fx, key, v->n), v->n * sizeof(float));
    n++;
  }
  free(tmp);
  if (n != p->count) {
    for (int i = 0; i < p->count; i++) {
      char key[300];
      snprintf(key, sizeof(key), "param/%s", params_view(p, i)->name);
      if (!fixture_find(fx, key))
        fail_msg("the model registers %s, which the fixture lacks", key);
    }
    fail_msg("%d fixture params, %d model tensors", n, p->count);
  }
  return list;
}

struct run {
  const char *model;
  struct model_options o;
  double tol;
  const char *loose_name; /* one tensor with a looser tolerance, or NULL */
  double loose_tol;
};

static void run_fixture(const struct run *r) {
  struct fixture *fx = open_fx(r->model);
  const char *js = fixture_text(fx, "meta/config");
  assert_non_null(js);
  int B = (int)json_num(js, "B"), F = (int)json_num(js, "F"),
      D = (int)json_num(js, "D"), C = F * D, Bmax = 2 * B;
  struct params *p = params_new();
  char err[256] = "";
  struct model *m = model_new(&r->o, F, D, Bmax, p, err, sizeof(err));
  if (!m)
    fail_msg("%s: %s", r->model, err);
  assert_false(model_uses_lr_weights(m));
  params_alloc(p, 7);
  char *names = copy_params(fx, p);

  const float *E = need(fx, "input/E", (size_t)B * C);
  const float *y = need(fx, "input/y", B);
  float logits[64], dlogits[64];
  float *dE = calloc((size_t)B * C, sizeof(float));
  model_forward(m, E, NULL, logits, B, true);
  expect(fx, r->model, "output/logits", logits, B, r->tol);
  float loss = (float)nn_logloss_forward(logits, y, B);
  expect(fx, r->model, "output/loss", &loss, 1, r->tol);
  memset(dlogits, 0, sizeof(dlogits));
  nn_logloss_backward(logits, y, dlogits, B, 1.0f);
  params_zero_grad(p);
  model_backward(m, dlogits, dE, NULL, B);
  expect(fx, r->model, "grad/input/E", dE, (size_t)B * C, r->tol);
  char *save = NULL;
  for (char *nm = strtok_r(names, "\n", &save); nm;
       nm = strtok_r(NULL, "\n", &save)) {
    int id = params_find(p, nm);
    const struct params_view *v = params_view(p, id);
    char key[300];
    snprintf(key, sizeof(key), "grad/%s", nm);
    double tol =
        r->loose_name && strcmp(nm, r->loose_name) == 0 ? r->loose_tol : r->tol;
    expect(fx, r->model, key, params_grad(p, id), v->n, tol);
  }

  // Backward again: the same gradients bit for bit (scratch is cleared),
  // and with dE = NULL the parameter gradients do not change.
  float *g1 = malloc(p->len * sizeof(float));
  memcpy(g1, p->grads, p->len * sizeof(float));
  float *dE2 = calloc((size_t)B * C, sizeof(float));
  params_zero_grad(p);
  model_backward(m, dlogits, dE2, NULL, B);
  assert_memory_equal(g1, p->grads, p->len * sizeof(float));
  assert_memory_equal(dE, dE2, (size_t)B * C * sizeof(float));
  params_zero_grad(p);
  model_backward(m, dlogits, NULL, NULL, B);
  assert_memory_equal(g1, p->grads, p->len * sizeof(float));

  // A smaller batch after a larger one: the first rows' logits are the
  // same (rows are independent: no batch statistics in these models).
  float logits2[64];
  model_forward(m, E, NULL, logits2, B / 2, true);
  assert_memory_equal(logits, logits2, (size_t)(B / 2) * sizeof(float));

  free(g1);
  free(dE2);
  free(dE);
  free(names);
  model_free(m);
  params_free(p);
  fixture_free(fx);
}

/* SerMaskNet's options from its config: blocks = "hidden" widths. */
static struct model_options masknet_options(const char *model,
                                            enum model_kind kind) {
  struct fixture *fx = open_fx(model);
  const char *js = fixture_text(fx, "meta/config");
  struct model_options o;
  memset(&o, 0, sizeof(o));
  o.kind = kind;
  o.reduction_ratio = (float)json_num(js, "ratio");
  o.emb_layernorm = json_bool(js, "emb_ln");
  o.net_layernorm = json_bool(js, "net_ln");
  if (kind == MODEL_SERMASKNET) {
    o.num_blocks = json_ints(js, "hidden", o.block_dim, MODEL_MAX_LAYERS);
  } else {
    o.num_blocks = (int)json_num(js, "blocks");
    for (int i = 0; i < o.num_blocks; i++)
      o.block_dim[i] = (int)json_num(js, "block_dim");
    o.nhidden = json_ints(js, "hidden", o.hidden, MODEL_MAX_LAYERS);
  }
  fixture_free(fx);
  return o;
}

static void test_sermasknet(void **state) {
  (void)state;
  struct run r = {"sermasknet", masknet_options("sermasknet", MODEL_SERMASKNET),
                  1e-4, NULL, 0};
  assert_true(r.o.emb_layernorm && r.o.net_layernorm);
  run_fixture(&r);
}

static void test_sermasknet_noln(void **state) {
  (void)state;
  struct run r = {"sermasknet_noln",
                  masknet_options("sermasknet_noln", MODEL_SERMASKNET), 1e-5,
                  NULL, 0};
  assert_false(r.o.emb_layernorm || r.o.net_layernorm);
  run_fixture(&r);
}

static void test_paramasknet(void **state) {
  (void)state;
  struct run r = {"paramasknet",
                  masknet_options("paramasknet", MODEL_PARAMASKNET), 1e-5, NULL,
                  0};
  assert_int_equal(r.o.num_blocks, 3);
  run_fixture(&r);
}

/* The fixture's MaskFusion: its hidden widths, one controller layer of
 * ctrl_hidden units, instance norm on. */
static void maskfusion_fixture_options(const struct fixture *fx,
                                       struct model_options *o) {
  const char *js = fixture_text(fx, "meta/config");
  memset(o, 0, sizeof(*o));
  o->kind = MODEL_MASKFUSION;
  o->nhidden = json_ints(js, "hidden", o->hidden, MODEL_MAX_LAYERS);
  o->nctrl = 1;
  o->ctrl_hidden[0] = (int)json_num(js, "ctrl_hidden");
  o->instance_norm = true;
}

static void test_maskfusion(void **state) {
  (void)state;
  struct fixture *fx = open_fx("maskfusion");
  struct run r = {"maskfusion", {0}, 1e-4, "fc.bias", 2e-4};
  maskfusion_fixture_options(fx, &r.o);
  fixture_free(fx);
  run_fixture(&r);
}

/* ---- dropout ---- */

/* A model on the fixture's parameters with options o; Bmax = B. */
struct built {
  struct params *p;
  struct model *m;
};

static struct built build(const struct fixture *fx,
                          const struct model_options *o) {
  const char *js = fixture_text(fx, "meta/config");
  int F = (int)json_num(js, "F"), D = (int)json_num(js, "D");
  struct built b;
  char err[256];
  b.p = params_new();
  b.m = model_new(o, F, D, (int)json_num(js, "B"), b.p, err, sizeof(err));
  if (!b.m)
    fail_msg("%s", err);
  params_alloc(b.p, 7);
  free(copy_params(fx, b.p));
  return b;
}

static void unbuild(struct built *b) {
  model_free(b->m);
  params_free(b->p);
}

/* The loss of the FIRST training forward of a fresh model (dropout step 1,
 * so every call draws the same masks) with parameter id shifted by delta
 * at j, or E shifted at j when id < 0. */
static double fresh_loss(const struct fixture *fx,
                         const struct model_options *o, int id, size_t j,
                         float delta) {
  const char *js = fixture_text(fx, "meta/config");
  int B = (int)json_num(js, "B"),
      C = (int)json_num(js, "F") * (int)json_num(js, "D");
  struct built b = build(fx, o);
  float E[256], logits[64];
  assert_true(B * C <= 256);
  memcpy(E, need(fx, "input/E", (size_t)B * C), sizeof(float) * B * C);
  if (id < 0)
    E[j] += delta;
  else
    params_value(b.p, id)[j] += delta;
  model_forward(b.m, E, NULL, logits, B, true);
  double L = nn_logloss_forward(logits, need(fx, "input/y", B), B);
  unbuild(&b);
  return L;
}

/* Dropout at rate 0.5: evaluation ignores it (bit-identical to rate 0),
 * training drops units (other logits), two training forwards draw other
 * masks, and the backward is the gradient of the dropped network: central
 * differences on fresh models (same step, same masks) over entries of E
 * and of every tensor. */
static void check_dropout(const char *model, struct model_options o) {
  struct fixture *fx = open_fx(model);
  const char *js = fixture_text(fx, "meta/config");
  int B = (int)json_num(js, "B"),
      C = (int)json_num(js, "F") * (int)json_num(js, "D");
  const float *E = need(fx, "input/E", (size_t)B * C);
  const float *y = need(fx, "input/y", B);
  o.dropout_seed = 99;
  struct built plain = build(fx, &o);
  o.dropout = 0.5f;
  struct built b = build(fx, &o);
  float l0[64], l1[64], l2[64], dl[64], dE[256];
  model_forward(plain.m, E, NULL, l0, B, true);
  model_forward(b.m, E, NULL, l1, B, false);
  assert_memory_equal(l0, l1, sizeof(float) * B);
  model_forward(b.m, E, NULL, l1, B, true);
  model_forward(b.m, E, NULL, l2, B, true);
  assert_true(fixture_max_err(l1, l0, B, NULL) > 1e-3);
  assert_true(fixture_max_err(l2, l1, B, NULL) > 1e-3);
  unbuild(&b);
  unbuild(&plain);

  b = build(fx, &o); // fresh: its first training forward is step 1
  model_forward(b.m, E, NULL, l1, B, true);
  memset(dl, 0, sizeof(dl));
  nn_logloss_backward(l1, y, dl, B, 1.0f);
  memset(dE, 0, sizeof(dE));
  params_zero_grad(b.p);
  model_backward(b.m, dl, dE, NULL, B);
  const float eps = 1e-3f;
  int checked = 0;
  for (int id = -1; id < b.p->count; id++) {
    size_t n = id < 0 ? (size_t)B * C : params_view(b.p, id)->n;
    const float *an = id < 0 ? dE : params_grad(b.p, id);
    double scale = 0;
    for (size_t j = 0; j < n; j++)
      scale = fmax(scale, fabs(an[j]));
    for (size_t j = 0; j < n; j += n / 4 + 1) {
      double fd =
          (fresh_loss(fx, &o, id, j, eps) - fresh_loss(fx, &o, id, j, -eps)) /
          (2.0 * eps);
      if (!(fabs(fd - an[j]) <= 2e-2 * scale + 2e-4))
        fail_msg("%s dropout: %s[%zu] backward %.6g, finite difference %.6g",
                 model, id < 0 ? "E" : params_view(b.p, id)->name, j,
                 (double)an[j], fd);
      checked++;
    }
  }
  assert_true(checked > 20);
  unbuild(&b);
  fixture_free(fx);
}

static void test_dropout(void **state) {
  (void)state;
  check_dropout("sermasknet", masknet_options("sermasknet", MODEL_SERMASKNET));
  check_dropout("paramasknet",
                masknet_options("paramasknet", MODEL_PARAMASKNET));
  struct fixture *fx = open_fx("maskfusion");
  struct model_options o;
  maskfusion_fixture_options(fx, &o);
  fixture_free(fx);
  check_dropout("maskfusion", o);
}

/* model_new must refuse o with a message containing want, registering
 * nothing. */
static void refuse(const struct model_options *o, const char *want) {
  char err[256] = "";
  struct params *p = params_new();
  struct model *m = model_new(o, 3, 2, 4, p, err, sizeof(err));
  if (m)
    fail_msg("%s: built, expected '%s'", model_kind_name(o->kind), want);
  if (!strstr(err, want))
    fail_msg("%s: '%s' lacks '%s'", model_kind_name(o->kind), err, want);
  assert_int_equal(p->count, 0);
  params_free(p);
}

/* Options that cannot build a model are refused with a reason. */
static void test_bad_options(void **state) {
  (void)state;
  struct model_options o;
  for (int k = MODEL_SERMASKNET; k <= MODEL_PARAMASKNET; k++) {
    model_options_default(&o, (enum model_kind)k);
    o.num_blocks = 2;
    o.block_dim[0] = o.block_dim[1] = 4;
    o.num_blocks = 0;
    refuse(&o, "num_blocks 0");
    o.num_blocks = MODEL_MAX_LAYERS + 1;
    refuse(&o, "num_blocks 17");
    o.num_blocks = 2;
    o.reduction_ratio = 0;
    refuse(&o, "reduction_ratio 0");
    o.reduction_ratio = 0.1f; // int(0.1 * 6) = 0
    refuse(&o, "aggregation width int(0.1 * 6) is 0");
    o.reduction_ratio = 1;
    o.block_dim[1] = 0;
    refuse(&o, "block 1 has width 0");
  }
  model_options_default(&o, MODEL_MASKFUSION);
  o.nhidden = 0;
  refuse(&o, "at least one hidden layer");
}

static bool ends_with(const char *s, const char *tail) {
  size_t n = strlen(s), t = strlen(tail);
  return n >= t && strcmp(s + n - t, tail) == 0;
}

/* The training init of MODELS.md: weights Xavier-normal, biases 0, every
 * LayerNorm / instance-norm gamma 1; each model's default options build. */
static void test_training_init(void **state) {
  (void)state;
  for (int k = MODEL_SERMASKNET; k <= MODEL_MASKFUSION; k++) {
    struct model_options o;
    model_options_default(&o, (enum model_kind)k);
    char err[256];
    struct params *p = params_new();
    struct model *m = model_new(&o, 6, 8, 4, p, err, sizeof(err));
    if (!m)
      fail_msg("%s: %s", model_kind_name(o.kind), err);
    assert_true(model_flops_per_example(m) > 1000);
    params_alloc(p, 2024);
    double s1 = 0, s2 = 0;
    size_t n = 0;
    for (int id = 0; id < p->count; id++) {
      const struct params_view *v = params_view(p, id);
      const float *x = params_value(p, id);
      float want = -1;
      if (ends_with(v->name, ".bias"))
        want = 0;
      else if (ends_with(v->name, "ln.weight") ||
               ends_with(v->name, "inorm.weight"))
        want = 1;
      if (want >= 0) {
        for (size_t i = 0; i < v->n; i++)
          if (x[i] != want)
            fail_msg("%s[%zu] = %g, starts at %g", v->name, i, (double)x[i],
                     (double)want);
        continue;
      }
      double std = sqrt(2.0 / (v->rows + v->cols));
      for (size_t i = 0; i < v->n; i++) {
        double z = x[i] / std;
        s1 += z;
        s2 += z * z;
      }
      n += v->n;
    }
    assert_true(n > 5000);
    double mean = s1 / n, sd = sqrt(s2 / n - mean * mean);
    if (!(fabs(mean) < 0.05 && fabs(sd - 1) < 0.05))
      fail_msg("%s: weights / xavier std have mean %.4f, std %.4f over %zu",
               model_kind_name(o.kind), mean, sd, n);
    model_free(m);
    params_free(p);
  }
}

/* ---- MaskFusion's options: controller widths, instance norm ----
 * model.controller_units and model.instance_norm shape the model: its
 * tensors (ctrl.t.0 .. ctrl.t.K, inorm.* only with instance norm), and a
 * backward that matches central differences of L = sum_b r_b z_b over every
 * tensor and E (float, h = 1e-3: max |fd - grad| < 1e-2 max |grad| + 1e-4),
 * on the init shifted by noise so no bias is 0. */

static float lcg(uint64_t *st) {
  *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((*st >> 40) * (1.0 / (1 << 23))) - 1.0f;
}

static double weighted(struct model *m, const float *E, const float *r, int B) {
  float z[8];
  model_forward(m, E, NULL, z, B, true);
  double L = 0;
  for (int b = 0; b < B; b++)
    L += (double)r[b] * z[b];
  return L;
}

static void fd_tensor(const char *what, struct model *m, float *x,
                      const float *g, size_t n, const float *E,
                      const float *r, int B) {
  const float h = 1e-3f;
  double maxg = 0, maxd = 0;
  for (size_t i = 0; i < n; i++) {
    float x0 = x[i];
    x[i] = x0 + h;
    double lp = weighted(m, E, r, B);
    x[i] = x0 - h;
    double lm = weighted(m, E, r, B);
    x[i] = x0;
    maxg = fmax(maxg, fabs(g[i]));
    maxd = fmax(maxd, fabs((lp - lm) / (2 * h) - g[i]));
  }
  if (!(maxd <= 1e-2 * maxg + 1e-4))
    fail_msg("%s: finite differences differ by %.3g (max |grad| %.3g)", what,
             maxd, maxg);
  if (!(maxg > 0))
    fail_msg("%s: no gradient at all", what);
}

static void check_maskfusion_variant(int nctrl, const int *ctrl, bool inorm) {
  enum { F = 3, D = 4, C = F * D, B = 4 };
  struct model_options o;
  model_options_default(&o, MODEL_MASKFUSION);
  o.nhidden = 2;
  o.hidden[0] = 5;
  o.hidden[1] = 3;
  o.nctrl = nctrl;
  for (int i = 0; i < nctrl; i++)
    o.ctrl_hidden[i] = ctrl[i];
  o.instance_norm = inorm;
  char err[256], nm[64];
  struct params *p = params_new();
  struct model *m = model_new(&o, F, D, B, p, err, sizeof(err));
  if (!m)
    fail_msg("%s", err);
  params_alloc(p, 5);
  // shapes: ctrl.t.i (ctrl[i], in) for i < K, ctrl.t.K (F, last)
  for (int t = 0; t < 2; t++) {
    int in = C;
    for (int i = 0; i <= nctrl; i++) {
      snprintf(nm, sizeof(nm), "ctrl.%d.%d.weight", t, i);
      int id = params_find(p, nm);
      if (id < 0)
        fail_msg("no %s", nm);
      int rows = i < nctrl ? ctrl[i] : F;
      assert_int_equal(params_view(p, id)->rows, rows);
      assert_int_equal(params_view(p, id)->cols, in);
      in = rows;
    }
    snprintf(nm, sizeof(nm), "ctrl.%d.%d.weight", t, nctrl + 1);
    assert_int_equal(params_find(p, nm), -1);
  }
  assert_int_equal(params_find(p, "inorm.weight") >= 0, inorm);
  uint64_t st = 17;
  for (size_t i = 0; i < p->len; i++)
    p->values[i] += 0.3f * lcg(&st);
  float E[B * C], dE[B * C] = {0}, r[B], z[B];
  for (int i = 0; i < B * C; i++)
    E[i] = lcg(&st);
  for (int b = 0; b < B; b++)
    r[b] = lcg(&st);
  params_zero_grad(p);
  model_forward(m, E, NULL, z, B, true);
  model_backward(m, r, dE, NULL, B);
  for (int id = 0; id < p->count; id++) {
    char what[96];
    snprintf(what, sizeof(what), "maskfusion K=%d in=%d %s", nctrl, inorm,
             params_view(p, id)->name);
    fd_tensor(what, m, params_value(p, id), params_grad(p, id),
              params_view(p, id)->n, E, r, B);
  }
  fd_tensor("maskfusion dE", m, E, dE, (size_t)B * C, E, r, B);
  model_free(m);
  params_free(p);
}

static void test_maskfusion_options(void **state) {
  (void)state;
  static const int two[] = {6, 5};
  check_maskfusion_variant(0, NULL, true); // a linear controller
  check_maskfusion_variant(2, two, false); // two hidden layers, no norm
  check_maskfusion_variant(1, two, true);  // the fixture's layout
  // the width reaches the model: default options = the config's [64]
  struct model_options o;
  model_options_default(&o, MODEL_MASKFUSION);
  assert_int_equal(o.nctrl, 1);
  assert_int_equal(o.ctrl_hidden[0], 64);
  assert_true(o.instance_norm);
  o.ctrl_hidden[0] = 0;
  refuse(&o, "controller layer 0 has width 0");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sermasknet),
      cmocka_unit_test(test_sermasknet_noln),
      cmocka_unit_test(test_paramasknet),
      cmocka_unit_test(test_maskfusion),
      cmocka_unit_test(test_maskfusion_options),
      cmocka_unit_test(test_dropout),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_training_init),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
