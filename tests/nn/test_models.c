/* models: LR, FM, DNN, DeepFM, DCN, DCNv2 (full rank and the low-rank
 * mixture, three structures) and EDCN (three bridges, with and without the
 * cross residual) against the committed PyTorch fixtures
 * (tests/nn/fixtures/<name>.bin, contract in tests/nn/README.md).
 *
 * For each fixture: the model is built from meta/config, its parameter set
 * must hold exactly the fixture's param/<p> (same names, same element
 * counts, nothing extra), the values are copied in by name, one forward on
 * input/E (and input/w) gives output/logits and output/loss, and one
 * backward from nn_logloss_backward gives every grad/<p>, grad/input/E and
 * grad/input/w. Each tensor is compared with fixture_max_err against the
 * README's tolerance table (1e-5; 1e-4 for edcn_hadamard and edcn_add,
 * whose float32-vs-float64 error is 1.5e-6). A wrong formula, a swapped
 * concatenation or a missing gradient term moves a tensor by >= 1e-3.
 *
 * Each fixture runs twice: in a model built for exactly B = 8 rows, and in
 * one built for Bmax = 64 that first trains on a random batch of 64 rows
 * (so every buffer is dirty and a batch smaller than Bmax must not read
 * stale rows or offsets sized for Bmax).
 *
 * Also: the training init (biases 0, Xavier-normal weights with the
 * std of their shape, EDCN gate logits 1), options that do not fit a model
 * (NULL, a message, nothing registered), model_kind_parse / name, and
 * model_options_from_config. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/check.h"
#include "common/config.h"
#include "tests/nn/fixture.h"
#include "worker/nn/model.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

/* ---- a few fields of meta/config (flat JSON written by make_fixtures.py) */

/* The text right after "key": in json, or NULL. */
static const char *json_at(const char *json, const char *key) {
  char pat[64];
  snprintf(pat, sizeof(pat), "\"%s\":", key);
  const char *p = strstr(json, pat);
  if (!p)
    return NULL;
  p += strlen(pat);
  while (*p == ' ')
    p++;
  return p;
}

static double json_num(const char *json, const char *key, double dflt) {
  const char *p = json_at(json, key);
  return p ? strtod(p, NULL) : dflt;
}

static bool json_bool(const char *json, const char *key, bool dflt) {
  const char *p = json_at(json, key);
  return p ? strncmp(p, "true", 4) == 0 : dflt;
}

/* A string value copied into buf ("" if absent). */
static void json_str(const char *json, const char *key, char *buf, size_t len) {
  const char *p = json_at(json, key);
  buf[0] = 0;
  if (!p || *p != '"')
    return;
  p++;
  size_t i = 0;
  while (*p && *p != '"' && i + 1 < len)
    buf[i++] = *p++;
  buf[i] = 0;
}

/* A list of integers; returns their number (0 if absent or empty). */
static int json_ints(const char *json, const char *key, int *out, int max) {
  const char *p = json_at(json, key);
  if (!p || *p != '[')
    return 0;
  p++;
  int n = 0;
  while (*p && *p != ']') {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p) {
      p++;
      continue;
    }
    assert_true(n < max);
    out[n++] = (int)v;
    p = end;
  }
  return n;
}

/* ---- model from a fixture -------------------------------------------- */

struct case_ {
  const char *file; /* fixture name */
  double tol;       /* README's suggested tolerance */
};

static const struct case_ cases[] = {
    {"lr", 1e-5},
    {"fm", 1e-5},
    {"dnn", 1e-5},
    {"deepfm", 1e-5},
    {"dcn", 1e-5},
    {"dcnv2_crossnet", 1e-5},
    {"dcnv2_stacked", 1e-5},
    {"dcnv2_parallel", 1e-5},
    {"dcnv2_mix_parallel", 1e-5},
    {"dcnv2_mix_stacked", 1e-5},
    {"edcn_hadamard", 1e-4},
    {"edcn_add", 1e-4},
    {"edcn_concat", 1e-5},
    {"edcn_hadamard_nores", 1e-5},
};

/* Options for the fixture's model; B, F, D out of the same JSON. */
static void options_from_fixture(const char *json, struct model_options *o,
                                 int *B, int *F, int *D) {
  char model[64], s[64];
  json_str(json, "model", model, sizeof(model));
  *B = (int)json_num(json, "B", 0);
  *F = (int)json_num(json, "F", 0);
  *D = (int)json_num(json, "D", 0);
  assert_true(*B > 0 && *F > 0 && *D > 0);
  int kind;
  if (strncmp(model, "dcnv2", 5) == 0)
    kind = MODEL_DCNV2;
  else if (strncmp(model, "edcn", 4) == 0)
    kind = MODEL_EDCN;
  else
    kind = model_kind_parse(model);
  if (kind < 0)
    fail_msg("fixture model %s has no kind", model);
  model_options_default(o, (enum model_kind)kind);
  o->nhidden = json_ints(json, "hidden", o->hidden, MODEL_MAX_LAYERS);
  o->dropout = 0; // README: dropout rate 0 in every fixture
  if (kind == MODEL_DCN || kind == MODEL_DCNV2)
    o->cross_layers = (int)json_num(json, "cross_layers", 0);
  if (kind == MODEL_DCNV2) {
    json_str(json, "structure", s, sizeof(s));
    o->dcnv2_structure = strcmp(s, "crossnet_only") == 0 ? MODEL_CROSSNET_ONLY
                         : strcmp(s, "stacked") == 0     ? MODEL_STACKED
                                                         : MODEL_PARALLEL;
    assert_true(strcmp(s, "crossnet_only") == 0 || strcmp(s, "stacked") == 0 ||
                strcmp(s, "parallel") == 0);
    if (json_bool(json, "mixture", false)) {
      o->low_rank = (int)json_num(json, "rank", 0);
      o->num_experts = (int)json_num(json, "experts", 0);
    } else {
      o->low_rank = 0;
      o->num_experts = 1;
    }
  }
  if (kind == MODEL_EDCN) {
    o->cross_layers = (int)json_num(json, "layers", 0);
    o->temperature = (float)json_num(json, "tau", 0);
    o->cross_residual = json_bool(json, "cross_residual", true);
    json_str(json, "bridge", s, sizeof(s));
    o->bridge = strcmp(s, "add") == 0      ? MODEL_BRIDGE_ADD
                : strcmp(s, "concat") == 0 ? MODEL_BRIDGE_CONCAT
                                           : MODEL_BRIDGE_HADAMARD;
    assert_true(strcmp(s, "add") == 0 || strcmp(s, "concat") == 0 ||
                strcmp(s, "hadamard") == 0);
  }
}

static const float *need(struct fixture *fx, const char *name, size_t n) {
  struct fixture_shape sh;
  const float *p = fixture_get(fx, name, &sh);
  if (!p)
    fail_msg("fixture has no float tensor %s", name);
  if (sh.numel != n)
    fail_msg("%s has %zu elements, expected %zu", name, sh.numel, n);
  return p;
}

/* The worst error of the current case and its tensor, for the log. */
static double case_worst;
static char case_worst_name[80];

static void expect(const char *file, const char *what, const float *got,
                   const float *want, size_t n, double tol) {
  size_t worst = 0;
  double e = fixture_max_err(got, want, n, &worst);
  if (e > case_worst) {
    case_worst = e;
    snprintf(case_worst_name, sizeof(case_worst_name), "%s", what);
  }
  if (!(e <= tol))
    fail_msg("%s: %s differs from PyTorch by %.3g > %.0e (worst [%zu]: "
             "%.8g vs %.8g)",
             file, what, e, tol, worst, (double)got[worst],
             (double)want[worst]);
}

/* Every fixture param/<p> has a view <p> of the same size and vice versa;
 * copies the values. Returns the number of parameters. */
static int copy_params(const char *file, struct fixture *fx, struct params *p) {
  int nfx = 0;
  for (size_t i = 0; i < fixture_count(fx); i++) {
    const struct fixture_tensor *t = fixture_at(fx, i);
    if (strncmp(t->name, "param/", 6) != 0)
      continue;
    nfx++;
    int id = params_find(p, t->name + 6);
    if (id < 0)
      fail_msg("%s: fixture parameter %s is not in the model", file,
               t->name + 6);
    const struct params_view *v = params_view(p, id);
    if (v->n != t->shape.numel)
      fail_msg("%s: %s has %zu elements in the model, %zu in the fixture", file,
               v->name, v->n, t->shape.numel);
    memcpy(params_value(p, id), t->data, v->n * sizeof(float));
  }
  for (int id = 0; id < p->count; id++) {
    char name[80];
    snprintf(name, sizeof(name), "param/%s", params_view(p, id)->name);
    if (!fixture_find(fx, name))
      fail_msg("%s: model parameter %s is not in the fixture", file,
               params_view(p, id)->name);
  }
  assert_int_equal(nfx, p->count);
  return nfx;
}

/* Uniform in [-1, 1) from a fixed LCG (no libc rand state). */
static float lcg(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((*s >> 40) * (1.0 / (1 << 23))) - 1.0f;
}

static void run_case(const struct case_ *c, int Bmax) {
  char err[512];
  struct fixture *fx = fixture_open_named(c->file, err, sizeof(err));
  if (!fx)
    fail_msg("%s", err);
  const char *json = fixture_text(fx, "meta/config");
  assert_non_null(json);
  struct model_options o;
  int B, F, D;
  options_from_fixture(json, &o, &B, &F, &D);
  if (Bmax < B)
    Bmax = B;
  int C = F * D;

  struct params *p = params_new();
  struct model *m = model_new(&o, F, D, Bmax, p, err, sizeof(err));
  if (!m)
    fail_msg("%s: model_new: %s", c->file, err);
  params_alloc(p, 7);
  copy_params(c->file, fx, p);
  bool lrw = model_uses_lr_weights(m);
  assert_int_equal(lrw, fixture_find(fx, "input/w") != NULL);

  float *logits = calloc((size_t)Bmax, sizeof(float));
  float *dlogits = calloc((size_t)Bmax, sizeof(float));
  float *dE = calloc((size_t)Bmax * C, sizeof(float));
  float *dw = calloc((size_t)Bmax * F, sizeof(float));

  if (Bmax > B) {
    // a full random batch first: dirties every activation and cache
    float *E = malloc((size_t)Bmax * C * sizeof(float));
    float *w = malloc((size_t)Bmax * F * sizeof(float));
    float *y = malloc((size_t)Bmax * sizeof(float));
    uint64_t st = 42;
    for (int i = 0; i < Bmax * C; i++)
      E[i] = 3 * lcg(&st);
    for (int i = 0; i < Bmax * F; i++)
      w[i] = lcg(&st);
    for (int i = 0; i < Bmax; i++)
      y[i] = lcg(&st) > 0;
    model_forward(m, E, lrw ? w : NULL, logits, Bmax, true);
    nn_logloss_backward(logits, y, dlogits, Bmax, 1.0f);
    model_backward(m, dlogits, dE, dw, Bmax);
    free(E);
    free(w);
    free(y);
    memset(dlogits, 0, (size_t)Bmax * sizeof(float));
    memset(dE, 0xff, (size_t)Bmax * C * sizeof(float)); // NaN
  }
  params_zero_grad(p);
  case_worst = 0;
  case_worst_name[0] = 0;
  memset(dE, 0, (size_t)B * C * sizeof(float));
  memset(dw, 0, (size_t)B * F * sizeof(float));

  const float *E =
      fixture_find(fx, "input/E") ? need(fx, "input/E", B * C) : NULL;
  const float *w = lrw ? need(fx, "input/w", (size_t)B * F) : NULL;
  const float *y = need(fx, "input/y", B);
  model_forward(m, E, w, logits, B, true);
  expect(c->file, "output/logits", logits, need(fx, "output/logits", B), B,
         c->tol);
  float loss = (float)nn_logloss_forward(logits, y, B);
  expect(c->file, "output/loss", &loss, need(fx, "output/loss", 1), 1, c->tol);

  nn_logloss_backward(logits, y, dlogits, B, 1.0f);
  model_backward(m, dlogits, E ? dE : NULL, lrw ? dw : NULL, B);
  for (int id = 0; id < p->count; id++) {
    const struct params_view *v = params_view(p, id);
    char name[80];
    snprintf(name, sizeof(name), "grad/%s", v->name);
    expect(c->file, name, params_grad(p, id), need(fx, name, v->n), v->n,
           c->tol);
  }
  if (fixture_find(fx, "grad/input/E"))
    expect(c->file, "grad/input/E", dE, need(fx, "grad/input/E", B * C),
           (size_t)B * C, c->tol);
  if (lrw)
    expect(c->file, "grad/input/w", dw, need(fx, "grad/input/w", B * F),
           (size_t)B * F, c->tol);
  // rows past B are none of the model's business
  if (Bmax > B)
    for (size_t i = (size_t)B * C; i < (size_t)Bmax * C; i++)
      assert_true(isnan(dE[i]));
  assert_true(model_flops_per_example(m) > 0);
  print_message("%-20s Bmax %2d: %2d params, worst error %.2g (%s)\n", c->file,
                Bmax, p->count, case_worst, case_worst_name);

  free(logits);
  free(dlogits);
  free(dE);
  free(dw);
  model_free(m);
  params_free(p);
  fixture_free(fx);
}

static void test_fixtures_exact_batch(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(cases); i++)
    run_case(&cases[i], 0);
}

static void test_fixtures_in_bigger_model(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(cases); i++)
    run_case(&cases[i], 64);
}

/* ---- training init (MODELS.md: Xavier-normal weights, zero biases) ---- */

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Builds o for F = 8, D = 8 and checks every initial value: biases 0, EDCN
 * gate logits 1, every other tensor Xavier-normal: pooled over the model,
 * value / sqrt(2 / (fan_in + fan_out)) has mean ~0 and std ~1. */
static void check_init(const struct model_options *o) {
  char err[256];
  struct params *p = params_new();
  struct model *m = model_new(o, 8, 8, 4, p, err, sizeof(err));
  if (!m)
    fail_msg("%s: %s", model_kind_name(o->kind), err);
  params_alloc(p, 2024);
  double s1 = 0, s2 = 0;
  size_t n = 0;
  for (int id = 0; id < p->count; id++) {
    const struct params_view *v = params_view(p, id);
    const float *x = params_value(p, id);
    if (ends_with(v->name, ".bias")) {
      for (size_t i = 0; i < v->n; i++)
        if (x[i] != 0)
          fail_msg("%s[%zu] = %g, a bias starts at 0", v->name, i,
                   (double)x[i]);
    } else if (strncmp(v->name, "reg.", 4) == 0) {
      for (size_t i = 0; i < v->n; i++)
        if (x[i] != 1)
          fail_msg("%s[%zu] = %g, a gate logit starts at 1", v->name, i,
                   (double)x[i]);
    } else {
      double std = sqrt(2.0 / (v->rows + v->cols));
      for (size_t i = 0; i < v->n; i++) {
        double z = x[i] / std;
        s1 += z;
        s2 += z * z;
      }
      n += v->n;
    }
  }
  assert_true(n > 5000); // enough for the 5% bounds below (~6 sigma)
  double mean = s1 / n, sd = sqrt(s2 / n - mean * mean);
  if (!(fabs(mean) < 0.05 && fabs(sd - 1) < 0.05))
    fail_msg("%s: weights / xavier std have mean %.4f, std %.4f over %zu",
             model_kind_name(o->kind), mean, sd, n);
  model_free(m);
  params_free(p);
}

static void test_training_init(void **state) {
  (void)state;
  struct model_options o;
  static const int hidden[] = {256, 32}; // non-square: Xavier != 1/fan_in
  for (int k = MODEL_LR; k <= MODEL_EDCN; k++) {
    model_options_default(&o, (enum model_kind)k);
    o.nhidden = 2;
    memcpy(o.hidden, hidden, sizeof(hidden));
    o.cross_layers = 2;
    if (k == MODEL_LR || k == MODEL_FM) {
      // only lr.bias: it starts at 0
      char err[256];
      struct params *p = params_new();
      struct model *m = model_new(&o, 8, 8, 4, p, err, sizeof(err));
      assert_non_null(m);
      params_alloc(p, 1);
      assert_int_equal(p->count, 1);
      assert_true(params_value(p, 0)[0] == 0);
      model_free(m);
      params_free(p);
      continue;
    }
    check_init(&o);
    if (k == MODEL_DCNV2) {
      o.low_rank = 16;
      o.num_experts = 3;
      check_init(&o);
    }
    if (k == MODEL_EDCN) {
      o.bridge = MODEL_BRIDGE_CONCAT;
      check_init(&o);
    }
  }
}

/* ---- options that do not fit --------------------------------------- */

/* model_new must refuse o with a message containing want, registering
 * nothing. */
static void refuse(const struct model_options *o, int F, int D, int Bmax,
                   const char *want) {
  char err[256] = "";
  struct params *p = params_new();
  struct model *m = model_new(o, F, D, Bmax, p, err, sizeof(err));
  if (m)
    fail_msg("model %s accepted options that should fail with '%s'",
             model_kind_name(o->kind), want);
  if (!strstr(err, want))
    fail_msg("message '%s' does not mention '%s'", err, want);
  assert_int_equal(p->count, 0);
  params_free(p);
}

static void test_bad_options(void **state) {
  (void)state;
  struct model_options o;
  model_options_default(&o, MODEL_DNN);
  o.kind = MODEL_KIND_COUNT_;
  refuse(&o, 4, 4, 8, "unknown kind");
  o.kind = (enum model_kind) - 1;
  refuse(&o, 4, 4, 8, "unknown kind");

  for (int k = MODEL_LR; k <= MODEL_EDCN; k++) {
    model_options_default(&o, (enum model_kind)k);
    refuse(&o, 0, 4, 8, "F >= 1");
    refuse(&o, 4, 0, 8, "D >= 1");
    refuse(&o, 4, 4, 0, "Bmax >= 1");
    o.dropout = 1;
    refuse(&o, 4, 4, 8, "dropout");
    model_options_default(&o, (enum model_kind)k);
    o.hidden[1] = 0;
    refuse(&o, 4, 4, 8, "hidden layer 1 has width 0");
    o.nhidden = MODEL_MAX_LAYERS + 1;
    refuse(&o, 4, 4, 8, "hidden layers");
  }
  static const enum model_kind mlps[] = {MODEL_DNN, MODEL_DEEPFM, MODEL_DCN};
  for (size_t i = 0; i < ARRAY_LEN(mlps); i++) {
    model_options_default(&o, mlps[i]);
    o.nhidden = 0;
    refuse(&o, 4, 4, 8, "hidden_units is empty");
  }
  model_options_default(&o, MODEL_DCNV2);
  o.nhidden = 0;
  o.dcnv2_structure = MODEL_STACKED;
  refuse(&o, 4, 4, 8, "hidden_units is empty");
  o.dcnv2_structure = MODEL_PARALLEL;
  refuse(&o, 4, 4, 8, "hidden_units is empty");
  o.dcnv2_structure = MODEL_CROSSNET_ONLY; // no MLP: fine
  {
    char err[256];
    struct params *p = params_new();
    struct model *m = model_new(&o, 4, 4, 8, p, err, sizeof(err));
    assert_non_null(m);
    assert_int_equal(params_find(p, "mlp.0.weight"), -1);
    model_free(m);
    params_free(p);
  }
  o.dcnv2_structure = (enum model_dcnv2_structure)9;
  refuse(&o, 4, 4, 8, "unknown structure");
  model_options_default(&o, MODEL_DCNV2);
  o.num_experts = 3;
  refuse(&o, 4, 4, 8, "low_rank");
  o.low_rank = -2;
  refuse(&o, 4, 4, 8, "negative");
  o.low_rank = 4;
  o.num_experts = 0;
  refuse(&o, 4, 4, 8, "num_experts 0");
  for (int k = MODEL_DCN; k <= MODEL_EDCN; k++) {
    model_options_default(&o, (enum model_kind)k);
    o.cross_layers = 0;
    refuse(&o, 4, 4, 8, "cross_layers 0");
    o.cross_layers = MODEL_MAX_LAYERS + 1;
    refuse(&o, 4, 4, 8, "cross_layers");
  }
  model_options_default(&o, MODEL_EDCN);
  o.temperature = 0;
  refuse(&o, 4, 4, 8, "temperature");
  model_options_default(&o, MODEL_EDCN);
  o.bridge = (enum model_bridge)7;
  refuse(&o, 4, 4, 8, "unknown bridge");
}

static void test_kind_names(void **state) {
  (void)state;
  for (int k = 0; k < MODEL_KIND_COUNT_; k++)
    assert_int_equal(model_kind_parse(model_kind_name((enum model_kind)k)), k);
  assert_string_equal(model_kind_name(MODEL_DCNV2), "dcnv2");
  assert_string_equal(model_kind_name(MODEL_MASKFUSION), "maskfusion");
  assert_string_equal(model_kind_name(MODEL_KIND_COUNT_), "?");
  assert_int_equal(model_kind_parse("nope"), -1);
  assert_int_equal(model_kind_parse("DNN"), -1);
  assert_int_equal(model_kind_parse(""), -1);
  assert_int_equal(model_kind_parse(NULL), -1);
}

/* ---- from a config ----------------------------------------------------- */

static void set(struct config *cfg, const char *kv) {
  char err[512];
  if (config_set(cfg, kv, err, sizeof(err)) != 0)
    fail_msg("config_set %s: %s", kv, err);
}

static void test_options_from_config(void **state) {
  (void)state;
  char err[512];
  struct config *cfg = config_new();
  struct model_options o;
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), 0);
  struct model_options d;
  model_options_default(&d, MODEL_DNN);
  assert_int_equal(o.kind, MODEL_DNN); // the config's default model
  assert_int_equal(o.nhidden, d.nhidden);
  assert_int_equal(o.hidden[0], d.hidden[0]);
  assert_int_equal(o.cross_layers, d.cross_layers);
  assert_int_equal(o.num_blocks, d.num_blocks);
  assert_true(o.temperature == d.temperature);

  set(cfg, "model.name=dcnv2");
  set(cfg, "model.hidden_units=[32,16]");
  set(cfg, "model.cross_layers=2");
  set(cfg, "model.low_rank=4");
  set(cfg, "model.num_experts=2");
  set(cfg, "model.dcnv2_structure=stacked");
  set(cfg, "model.dropout=0.25");
  set(cfg, "train.seed=5");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), 0);
  assert_int_equal(o.kind, MODEL_DCNV2);
  assert_int_equal(o.nhidden, 2);
  assert_int_equal(o.hidden[0], 32);
  assert_int_equal(o.hidden[1], 16);
  assert_int_equal(o.cross_layers, 2);
  assert_int_equal(o.low_rank, 4);
  assert_int_equal(o.num_experts, 2);
  assert_int_equal(o.dcnv2_structure, MODEL_STACKED);
  assert_true(o.dropout == 0.25f);
  assert_int_equal(o.dropout_seed, 5);
  struct params *p = params_new();
  struct model *m = model_new(&o, 3, 4, 16, p, err, sizeof(err));
  assert_non_null(m);
  assert_true(params_find(p, "cross.1.U") >= 0);
  assert_true(params_find(p, "gate.weight") >= 0);
  model_free(m);
  params_free(p);

  set(cfg, "model.name=edcn");
  set(cfg, "model.bridge=concat");
  set(cfg, "model.temperature=0.5");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), 0);
  assert_int_equal(o.kind, MODEL_EDCN);
  assert_int_equal(o.bridge, MODEL_BRIDGE_CONCAT);
  assert_true(o.temperature == 0.5f);
  assert_true(o.cross_residual); // MODELS.md's cross layer
  assert_false(o.use_bn);
  set(cfg, "model.cross_residual=false");
  set(cfg, "model.use_bn=true");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), 0);
  assert_false(o.cross_residual);
  assert_true(o.use_bn);
  p = params_new();
  m = model_new(&o, 3, 4, 16, p, err, sizeof(err));
  assert_non_null(m);
  assert_true(params_find(p, "reg.1.bn_deep.weight") >= 0);
  assert_true(params_find(p, "reg.0.bn_cross.running_var") >= 0);
  model_free(m);
  params_free(p);
  set(cfg, "model.name=dnn"); // the MLP's hidden layers
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), 0);
  assert_true(o.use_bn);
  set(cfg, "model.name=sermasknet"); // no BatchNorm in the MaskNets
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "model.use_bn"));
  assert_non_null(strstr(err, "sermasknet"));
  set(cfg, "model.use_bn=false");

  // MaskNet widths: block_dims per block, else block_dim for all
  set(cfg, "model.name=paramasknet");
  set(cfg, "model.num_blocks=3");
  set(cfg, "model.block_dim=7");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(o.block_dim[i], 7);
  set(cfg, "model.block_dims=[5,6,9]");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), 0);
  assert_int_equal(o.block_dim[0], 5);
  assert_int_equal(o.block_dim[1], 6);
  assert_int_equal(o.block_dim[2], 9);
  p = params_new();
  m = model_new(&o, 3, 4, 16, p, err, sizeof(err));
  assert_non_null(m);
  assert_int_equal(params_view(p, params_find(p, "block.2.hidden.weight"))->rows,
                   9);
  model_free(m);
  params_free(p);
  set(cfg, "model.block_dims=[5,6]");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "model.block_dims"));
  set(cfg, "model.block_dims=[]");
  // MaskFusion: controller_units and instance_norm reach the options
  set(cfg, "model.name=maskfusion");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), 0);
  assert_int_equal(o.nctrl, 1); // the config's default [64]
  assert_int_equal(o.ctrl_hidden[0], 64);
  assert_true(o.instance_norm);
  set(cfg, "model.controller_units=[6,5]");
  set(cfg, "model.instance_norm=false");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), 0);
  assert_int_equal(o.nctrl, 2);
  assert_int_equal(o.ctrl_hidden[0], 6);
  assert_int_equal(o.ctrl_hidden[1], 5);
  assert_false(o.instance_norm);
  set(cfg, "model.controller_units=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "model.controller_units"));
  set(cfg, "model.controller_units=[64]");
  set(cfg, "model.instance_norm=true");
  set(cfg, "model.name=edcn");

  set(cfg, "model.activation=tanh");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "model.activation"));
  set(cfg, "model.activation=relu");
  set(cfg, "model.hidden_units=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "model.hidden_units"));
  set(cfg, "model.hidden_units=[8]");
  set(cfg, "model.cross_layers=17");
  assert_int_equal(model_options_from_config(&o, cfg, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "model.cross_layers"));
  config_free(cfg);
}

/* ---- dropout --------------------------------------------------------- */

/* A DNN with dropout: evaluation equals the same weights without dropout;
 * a training forward and its backward follow the mask of
 * nn_dropout_keep(dropout_seed + layer, step 1, row*H + unit), computed
 * here by hand for one hidden layer of H units:
 *   z_b = sum_j w1_j relu(a_bj) keep_bj / (1 - p) + b1
 *   dLoss/d b0_j = sum_b dz_b w1_j [a_bj > 0] keep_bj / (1 - p). */
static void test_dropout(void **state) {
  (void)state;
  enum { F = 4, D = 4, C = F * D, B = 16, H = 32 };
  const float rate = 0.5f;
  char err[256];
  struct model_options o;
  model_options_default(&o, MODEL_DNN);
  o.nhidden = 1;
  o.hidden[0] = H;
  o.dropout_seed = 77;
  struct params *p0 = params_new(), *p1 = params_new();
  struct model *m0 = model_new(&o, F, D, B, p0, err, sizeof(err));
  o.dropout = rate;
  struct model *m1 = model_new(&o, F, D, B, p1, err, sizeof(err));
  assert_non_null(m0);
  assert_non_null(m1);
  params_alloc(p0, 3);
  params_alloc(p1, 3); // same names, same seed: same values
  float E[B * C], z0[B], z1[B], z2[B], dz[B], a[B * H];
  uint64_t st = 9;
  for (int i = 0; i < B * C; i++)
    E[i] = 2 * lcg(&st);
  model_forward(m0, E, NULL, z0, B, true);
  model_forward(m1, E, NULL, z1, B, false); // evaluation: no dropout
  for (int b = 0; b < B; b++)
    assert_true(z0[b] == z1[b]);

  model_forward(m1, E, NULL, z2, B, true); // the first training step
  const float *W0 = params_value(p1, params_find(p1, "mlp.0.weight"));
  const float *b0 = params_value(p1, params_find(p1, "mlp.0.bias"));
  const float *w1 = params_value(p1, params_find(p1, "mlp.1.weight"));
  const float *b1 = params_value(p1, params_find(p1, "mlp.1.bias"));
  nn_linear_forward(E, W0, b0, a, B, C, H);
  for (int b = 0; b < B; b++)
    dz[b] = 0.1f * (b + 1);
  params_zero_grad(p1);
  model_backward(m1, dz, NULL, NULL, B);
  const float *db0 = params_grad(p1, params_find(p1, "mlp.0.bias"));
  int kept = 0;
  double want_db[H] = {0};
  for (int b = 0; b < B; b++) {
    double z = b1[0];
    for (int j = 0; j < H; j++) {
      bool keep = nn_dropout_keep(77, 1, (size_t)b * H + j, rate);
      kept += keep;
      double s = keep ? 1.0 / (1 - rate) : 0.0;
      if (a[b * H + j] > 0) {
        z += w1[j] * a[b * H + j] * s;
        want_db[j] += dz[b] * w1[j] * s;
      }
    }
    assert_true(fabs(z - z2[b]) < 1e-5 * (1 + fabs(z)));
  }
  assert_true(kept > B * H / 4 && kept < 3 * B * H / 4); // a real mask
  for (int j = 0; j < H; j++)
    assert_true(fabs(want_db[j] - db0[j]) < 1e-5);
  model_free(m0);
  model_free(m1);
  params_free(p0);
  params_free(p1);
}

/* ---- finite differences, independent of PyTorch ---------------------
 * For every kind (and the EDCN variants, whose cross layer without the
 * residual is a static op of model_edcn.c), backward against central
 * differences of L = sum_b r_b z_b, in float with h = 1e-3: per tensor
 * max |fd - grad| < 1e-2 max |grad| + 1e-4 (float rounding of L over 2h
 * is ~5e-5; a wrong term is O(1)). */

/* The absolute part of the tolerance; the BatchNorm variants raise it (see
 * test_finite_differences). */
static double fd_atol = 1e-4;

static double fd_loss(struct model *m, const float *E, const float *w,
                      const float *r, float *z, int B) {
  model_forward(m, E, w, z, B, true);
  double L = 0;
  for (int b = 0; b < B; b++)
    L += (double)r[b] * z[b];
  return L;
}

/* Compares grad (n) with central differences over x (n), perturbed in
 * place and restored. */
static void fd_check(const char *what, struct model *m, float *x,
                     const float *grad, size_t n, const float *E,
                     const float *w, const float *r, float *z, int B) {
  const float h = 1e-3f;
  double maxg = 0, maxd = 0;
  size_t worst = 0;
  for (size_t i = 0; i < n; i++) {
    float x0 = x[i];
    x[i] = x0 + h;
    double lp = fd_loss(m, E, w, r, z, B);
    x[i] = x0 - h;
    double lm = fd_loss(m, E, w, r, z, B);
    x[i] = x0;
    double fd = (lp - lm) / (2 * h), d = fabs(fd - grad[i]);
    if (fabs(grad[i]) > maxg)
      maxg = fabs(grad[i]);
    if (d > maxd) {
      maxd = d;
      worst = i;
    }
  }
  if (!(maxd <= 1e-2 * maxg + fd_atol))
    fail_msg("%s: finite differences differ by %.3g (max |grad| %.3g), "
             "worst [%zu] grad %.6g",
             what, maxd, maxg, worst, (double)grad[worst]);
}

static void gradcheck(const struct model_options *o, const char *label) {
  enum { F = 3, D = 2, C = F * D, B = 4 };
  char err[256];
  struct params *p = params_new();
  struct model *m = model_new(o, F, D, B, p, err, sizeof(err));
  if (!m)
    fail_msg("%s: %s", label, err);
  params_alloc(p, 11);
  uint64_t st = 1234;
  for (size_t i = 0; i < p->len; i++) // not the init: biases 0, gates 1
    p->values[i] += 0.3f * lcg(&st);
  float E[B * C], w[B * F], r[B], z[B], dE[B * C] = {0}, dw[B * F] = {0};
  for (int i = 0; i < B * C; i++)
    E[i] = lcg(&st);
  for (int i = 0; i < B * F; i++)
    w[i] = lcg(&st);
  for (int b = 0; b < B; b++)
    r[b] = lcg(&st);
  bool lrw = model_uses_lr_weights(m);
  const float *wp = lrw ? w : NULL;
  params_zero_grad(p);
  fd_loss(m, E, wp, r, z, B);
  model_backward(m, r, dE, lrw ? dw : NULL, B);
  for (int id = 0; id < p->count; id++) {
    char what[96];
    snprintf(what, sizeof(what), "%s %s", label, params_view(p, id)->name);
    fd_check(what, m, params_value(p, id), params_grad(p, id),
             params_view(p, id)->n, E, wp, r, z, B);
  }
  char what[96];
  snprintf(what, sizeof(what), "%s dE", label);
  if (o->kind != MODEL_LR)
    fd_check(what, m, E, dE, B * C, E, wp, r, z, B);
  if (lrw) {
    snprintf(what, sizeof(what), "%s dw", label);
    fd_check(what, m, w, dw, B * F, E, wp, r, z, B);
  }
  model_free(m);
  params_free(p);
}

static void test_finite_differences(void **state) {
  (void)state;
  struct model_options o;
  for (int k = MODEL_LR; k <= MODEL_EDCN; k++) {
    model_options_default(&o, (enum model_kind)k);
    o.nhidden = 2;
    o.hidden[0] = 5;
    o.hidden[1] = 4;
    o.cross_layers = 2;
    o.temperature = 0.7f;
    gradcheck(&o, model_kind_name((enum model_kind)k));
    if (k == MODEL_DNN || k == MODEL_DEEPFM || k == MODEL_DCN ||
        k == MODEL_DCNV2) { // BatchNorm in the MLP's hidden layers
      char label[64];
      snprintf(label, sizeof(label), "%s bn",
               model_kind_name((enum model_kind)k));
      o.use_bn = true;
      gradcheck(&o, label);
      o.use_bn = false;
    }
    if (k == MODEL_DCNV2) {
      o.dcnv2_structure = MODEL_STACKED;
      o.low_rank = 2;
      o.num_experts = 3;
      gradcheck(&o, "dcnv2 mixture stacked");
    }
    if (k == MODEL_EDCN) {
      static const char *bridges[] = {"edcn hadamard nores", "edcn add nores",
                                      "edcn concat nores"};
      o.cross_residual = false;
      for (int br = 0; br < 3; br++) {
        o.bridge = (enum model_bridge)br;
        gradcheck(&o, bridges[br]);
      }
      // BatchNorm on the regulation outputs: the backward through the
      // batch statistics (B = 4 rows) of all 2L norms. A norm right after
      // a gate makes the loss nearly invariant to the gate's scale (only
      // eps breaks it), so the gates' true gradients are ~1e-4 and the
      // float differences of the renormalised forward are noisier than
      // that: absolute tolerance 3e-4 here (a wrong BN term is >= 1e-2).
      fd_atol = 3e-4;
      o.use_bn = true;
      o.bridge = MODEL_BRIDGE_HADAMARD;
      gradcheck(&o, "edcn hadamard nores bn");
      o.cross_residual = true;
      o.bridge = MODEL_BRIDGE_CONCAT;
      gradcheck(&o, "edcn concat bn");
      fd_atol = 1e-4;
    }
  }
}

/* ---- BatchNorm in an MLP (use_bn) ---------------------------------
 * A DNN with use_bn: each hidden layer has mlp.i.bn.{weight, bias} and the
 * running statistics as state; a training forward folds the batch's mean
 * into running_mean with momentum 0.1 (0.1 * mean of the layer's linear
 * output, from 0); evaluation normalises with the running statistics (so
 * it differs from training); a one-row training batch runs and backs
 * through them. */
static void test_mlp_batchnorm(void **state) {
  (void)state;
  enum { F = 3, D = 4, C = F * D, B = 8, H = 6 };
  struct model_options o;
  model_options_default(&o, MODEL_DNN);
  o.nhidden = 1;
  o.hidden[0] = H;
  o.use_bn = true;
  char err[256];
  struct params *p = params_new();
  struct model *m = model_new(&o, F, D, B, p, err, sizeof(err));
  assert_non_null(m);
  params_alloc(p, 3);
  int rm = params_find(p, "mlp.0.bn.running_mean");
  assert_true(rm >= 0 && params_view(p, rm)->state);
  assert_true(params_find(p, "mlp.0.bn.weight") >= 0);
  assert_int_equal(params_find(p, "mlp.1.bn.weight"), -1); // not the logit
  float E[B * C], a[B * H], zt[B], ze[B], dE[B * C];
  uint64_t st = 5;
  for (int i = 0; i < B * C; i++)
    E[i] = lcg(&st);
  nn_linear_forward(E, params_value(p, params_find(p, "mlp.0.weight")),
                    params_value(p, params_find(p, "mlp.0.bias")), a, B, C, H);
  model_forward(m, E, NULL, zt, B, true);
  for (int h = 0; h < H; h++) {
    double mean = 0;
    for (int b = 0; b < B; b++)
      mean += a[b * H + h] / B;
    assert_true(fabs(params_value(p, rm)[h] - 0.1 * mean) < 1e-6);
  }
  model_forward(m, E, NULL, ze, B, false);
  assert_true(fixture_max_err(ze, zt, B, NULL) > 1e-3);
  float z1, d1 = 1;
  model_forward(m, E, NULL, &z1, 1, true);
  // running statistics, as evaluation (up to the GEMM's rounding at B = 1)
  assert_true(fabs(z1 - ze[0]) < 1e-5);
  params_zero_grad(p);
  memset(dE, 0, sizeof(dE));
  model_backward(m, &d1, dE, NULL, 1);
  double g = 0;
  for (int i = 0; i < C; i++)
    g = fmax(g, fabs(dE[i]));
  assert_true(g > 0 && isfinite(g));
  model_free(m);
  params_free(p);
}

/* ---- EDCN from its training init ------------------------------------
 * With embeddings of the embedding.init_std every run uses (N(0, 1e-4)),
 * EDCN's Hadamard bridges square the activations' scale layer by layer
 * (model_edcn.c): without BatchNorm the logit ignores its input and only
 * biases get a gradient; with use_bn every trained tensor and dE must. */

/* N(0, 1) from two lcg draws (Box-Muller). */
static float gauss(uint64_t *s) {
  double u1 = (lcg(s) + 1.0) * 0.5 + 1e-12, u2 = (lcg(s) + 1.0) * 0.5;
  return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

static double max_abs(const float *x, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs(x[i]) > m)
      m = fabs(x[i]);
  return m;
}

/* Without use_bn the logit spread over a batch, max |dE| and deep.0's
 * gradient are all < 1e-20. With it, BN rescales each regulation output by
 * 1/sqrt(var + eps) (~300x here, eps dominating the tiny variance), so no
 * scale collapses: spread > 1e-9, max |dE| > 1e-6 and every trained tensor
 * has a gradient > 1e-12 (measured: spread 3e-8, dE 7e-5, the smallest
 * tensor 2e-10, cross.l.weight; BN biases up to 0.6). */
static void test_edcn_init_gradients(void **state) {
  (void)state;
  enum { F = 20, D = 8, C = F * D, B = 32 };
  static float E[B * C], dE[B * C];
  float z[B], dz[B];
  uint64_t st = 42;
  for (int i = 0; i < B * C; i++)
    E[i] = 1e-4f * gauss(&st);
  for (int b = 0; b < B; b++)
    dz[b] = (b % 3 == 0) ? -0.75f : 0.25f; // sigmoid(0) - label
  for (int bn = 0; bn < 2; bn++) {
    struct model_options o;
    model_options_default(&o, MODEL_EDCN); // 3 layers, hadamard, residual
    o.use_bn = bn;
    char err[256];
    struct params *p = params_new();
    struct model *m = model_new(&o, F, D, B, p, err, sizeof(err));
    if (!m)
      fail_msg("%s", err);
    params_alloc(p, 2024);
    model_forward(m, E, NULL, z, B, true);
    params_zero_grad(p);
    memset(dE, 0, sizeof(dE));
    model_backward(m, dz, dE, NULL, B);
    double zspread = 0;
    for (int b = 1; b < B; b++)
      zspread = fmax(zspread, fabs(z[b] - z[0]));
    double gE = max_abs(dE, (size_t)B * C);
    if (!bn) {
      // the failure this guards against, as the numbers show it: a logit
      // that is the same for every row, no gradient below the top biases
      assert_true(zspread < 1e-20);
      assert_true(gE < 1e-20);
      assert_true(max_abs(params_grad(p, params_find(p, "deep.0.weight")),
                          (size_t)C * C) < 1e-20);
    } else {
      if (!(zspread > 1e-9 && gE > 1e-6))
        fail_msg("bn: logit spread %g, max |dE| %g", zspread, gE);
      for (int id = 0; id < p->count; id++) {
        const struct params_view *v = params_view(p, id);
        if (v->state)
          continue;
        double g = max_abs(params_grad(p, id), v->n);
        if (!(g > 1e-12))
          fail_msg("bn: max |grad %s| = %g at init", v->name, g);
      }
      // a one-row training batch has no batch statistics: it is normalised
      // with the running ones, as evaluation is, and still has a backward
      float z1, z1e, dz1 = 0.5f;
      model_forward(m, E, NULL, &z1, 1, true);
      model_forward(m, E, NULL, &z1e, 1, false);
      model_forward(m, E, NULL, &z1, 1, true);
      assert_true(z1 == z1e);
      params_zero_grad(p);
      memset(dE, 0, sizeof(dE));
      model_backward(m, &dz1, dE, NULL, 1);
      assert_true(isfinite(max_abs(p->grads, p->len)));
      assert_true(max_abs(dE, C) > 0);
    }
    model_free(m);
    params_free(p);
  }
}

/* A short training from the init: F = 4 fields of V = 4 tokens, the label
 * the parity of the first two tokens (not linearly separable), embeddings
 * N(0, 1e-4) trained with Adam beside the dense parameters, B = 64 rows
 * (the last batch of each epoch 40, so B < Bmax), 200 steps. With use_bn
 * the mean loss of the last 20 steps must fall below 0.2 (from ln 2); without
 * it the model stays near ln 2 (it can learn the base rate only). */
static double edcn_train(bool bn) {
  enum { F = 4, V = 4, D = 4, C = F * D, B = 64, N = 296, STEPS = 200 };
  struct model_options o;
  model_options_default(&o, MODEL_EDCN);
  o.use_bn = bn;
  char err[256];
  struct params *p = params_new(), *emb = params_new();
  struct model *m = model_new(&o, F, D, B, p, err, sizeof(err));
  if (!m)
    fail_msg("%s", err);
  int eid = params_add(emb, "emb", 1, F * V, D, PARAMS_NORMAL, 1e-4f);
  params_alloc(p, 7);
  params_alloc(emb, 8);
  static int tok[N][F];
  static float y[N], E[B * C], dE[B * C];
  float z[B], dz[B];
  uint64_t st = 99;
  for (int r = 0; r < N; r++) {
    for (int f = 0; f < F; f++)
      tok[r][f] = (int)((lcg(&st) + 1.0f) * 0.5f * V) % V;
    y[r] = (float)((tok[r][0] + tok[r][1]) % 2);
  }
  struct params_adam a = params_adam_default(0.01f);
  double tail = 0;
  int r0 = 0;
  for (int t = 0; t < STEPS; t++) {
    int nb = N - r0 < B ? N - r0 : B;
    const float *tab = params_value(emb, eid);
    for (int b = 0; b < nb; b++)
      for (int f = 0; f < F; f++)
        memcpy(E + ((size_t)b * F + f) * D,
               tab + ((size_t)f * V + tok[r0 + b][f]) * D, D * sizeof(float));
    model_forward(m, E, NULL, z, nb, true);
    double loss = nn_logloss_forward(z, y + r0, nb);
    memset(dz, 0, sizeof(dz));
    nn_logloss_backward(z, y + r0, dz, nb, 1.0f);
    params_zero_grad(p);
    params_zero_grad(emb);
    memset(dE, 0, sizeof(dE));
    model_backward(m, dz, dE, NULL, nb);
    float *gt = params_grad(emb, eid);
    for (int b = 0; b < nb; b++)
      for (int f = 0; f < F; f++)
        for (int d = 0; d < D; d++)
          gt[((size_t)f * V + tok[r0 + b][f]) * D + d] +=
              dE[((size_t)b * F + f) * D + d];
    params_adam_step(p, &a);
    params_adam_step(emb, &a);
    if (t >= STEPS - 20)
      tail += loss / 20;
    r0 = r0 + nb == N ? 0 : r0 + nb;
  }
  model_free(m);
  params_free(p);
  params_free(emb);
  return tail;
}

static void test_edcn_trains(void **state) {
  (void)state;
  double with = edcn_train(true), without = edcn_train(false);
  if (!(with < 0.2 && without > 0.6))
    fail_msg("final loss with use_bn %.4f (want < 0.2), without %.4f "
             "(want > 0.6, the collapse)",
             with, without);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fixtures_exact_batch),
      cmocka_unit_test(test_fixtures_in_bigger_model),
      cmocka_unit_test(test_training_init),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_kind_names),
      cmocka_unit_test(test_options_from_config),
      cmocka_unit_test(test_dropout),
      cmocka_unit_test(test_finite_differences),
      cmocka_unit_test(test_mlp_batchnorm),
      cmocka_unit_test(test_edcn_init_gradients),
      cmocka_unit_test(test_edcn_trains),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
