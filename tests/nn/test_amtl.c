/* amtl: the AMTL layer (worker/nn/amtl.h) in front of the DNN, against the
 * amtl_dnn PyTorch fixture, and DESIGN.md's properties on their own:
 *
 *   - fixture: logits, loss, the mixed logits h, the soft t, the mask m and
 *     the argmax k (exactly), every gradient (twin nets, DNN, E) at the
 *     README's tolerance 1e-4; the frequency features rebuilt from the
 *     counts match input/freq and input/alpha;
 *   - the forward is the HARD prefix: Ê beyond p is exactly 0, within it
 *     exactly E, and E truncated to its prefixes gives bit-identical Ê,
 *     prefixes and logits;
 *   - the gradient reaches BOTH twins through the soft path when
 *     0 < alpha < 1, only h-AML when alpha = 1, only l-AML when alpha = 0;
 *   - dE is exactly 0 beyond every prefix and exactly dÊ within it.
 *   - without PyTorch: the straight-through twin gradients are the
 *     central-difference gradient of the soft surrogate sum t_i c_i;
 *   - options from a config, and options that do not fit.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/config.h"
#include "tests/nn/fixture.h"
#include "worker/nn/amtl.h"
#include "worker/nn/model.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

enum { B = 8, F = 5, D = 8, S = 4, H = 8, C = F * D };
static const double TOL = 1e-4; /* README: amtl_dnn */

static struct fixture *open_fx(void) {
  char err[256];
  struct fixture *fx = fixture_open_named("amtl_dnn", err, sizeof(err));
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

static void expect(const struct fixture *fx, const char *name, const float *got,
                   size_t n, double tol) {
  size_t worst = 0;
  const float *want = need(fx, name, n);
  double e = fixture_max_err(got, want, n, &worst);
  if (!(e <= tol))
    fail_msg("amtl_dnn: %s differs from PyTorch by %.3g > %.1g (worst [%zu]: "
             "%.8g vs %.8g)",
             name, e, tol, worst, got[worst], want[worst]);
}

/* The layer and the DNN of the fixture, sharing one params set with the
 * fixture's values copied in by name (all of them, and nothing else). */
struct net {
  struct params *p;
  struct amtl *a;
  struct model *dnn;
  float Ehat[B * C], dEhat[B * C], dE[B * C], logits[B], dlogits[B];
  uint16_t prefix[B * F];
};

static void net_build(struct net *n, const struct fixture *fx) {
  memset(n, 0, sizeof(*n));
  const char *js = fixture_text(fx, "meta/config");
  assert_non_null(strstr(js, "\"tau\": 0.5"));
  assert_non_null(strstr(js, "\"twin_hidden\": 8"));
  assert_non_null(strstr(js, "\"hidden\": [16, 8]"));
  char err[256];
  n->p = params_new();
  struct amtl_options ao = {.F = F,
                            .D = D,
                            .S = amtl_num_features(0),
                            .nhidden = 1,
                            .hidden = {H},
                            .temperature = 0.5f};
  assert_int_equal(ao.S, S);
  n->a = amtl_new(&ao, B, n->p, err, sizeof(err));
  if (!n->a)
    fail_msg("amtl_new: %s", err);
  struct model_options mo;
  model_options_default(&mo, MODEL_DNN);
  mo.nhidden = 2;
  mo.hidden[0] = 16;
  mo.hidden[1] = 8;
  mo.dropout = 0;
  n->dnn = model_new(&mo, F, D, B, n->p, err, sizeof(err));
  if (!n->dnn)
    fail_msg("model_new: %s", err);
  params_alloc(n->p, 3);
  char *names = strdup(fixture_text(fx, "meta/param_names"));
  int count = 0;
  char *save = NULL;
  for (char *nm = strtok_r(names, "\n", &save); nm;
       nm = strtok_r(NULL, "\n", &save)) {
    int id = params_find(n->p, nm);
    if (id < 0)
      fail_msg("no tensor %s in the layer + DNN", nm);
    char key[300];
    snprintf(key, sizeof(key), "param/%s", nm);
    const struct params_view *v = params_view(n->p, id);
    memcpy(params_value(n->p, id), need(fx, key, v->n), v->n * sizeof(float));
    count++;
  }
  free(names);
  assert_int_equal(count, n->p->count); // nothing extra registered
}

static void net_free(struct net *n) {
  amtl_free(n->a);
  model_free(n->dnn);
  params_free(n->p);
}

static void net_forward(struct net *n, const float *E, const float *freq,
                        const float *alpha) {
  amtl_forward(n->a, E, freq, alpha, n->Ehat, n->prefix, B);
  model_forward(n->dnn, n->Ehat, NULL, n->logits, B, true);
}

/* Backward of the fixture's logloss; dE and every gradient from zero. */
static void net_backward(struct net *n, const float *y) {
  memset(n->dlogits, 0, sizeof(n->dlogits));
  nn_logloss_backward(n->logits, y, n->dlogits, B, 1.0f);
  params_zero_grad(n->p);
  memset(n->dEhat, 0, sizeof(n->dEhat));
  memset(n->dE, 0, sizeof(n->dE));
  model_backward(n->dnn, n->dlogits, n->dEhat, NULL, B);
  amtl_backward(n->a, n->dEhat, n->dE, B);
}

static void test_amtl_dnn_vs_torch(void **state) {
  (void)state;
  struct fixture *fx = open_fx();
  struct net n;
  net_build(&n, fx);
  const float *E = need(fx, "input/E", B * C), *y = need(fx, "input/y", B);
  net_forward(&n, E, need(fx, "input/freq", B * F * S),
              need(fx, "input/alpha", B * F));
  expect(fx, "aux/amtl.h", n.a->h, B * C, TOL);
  expect(fx, "aux/amtl.t", n.a->t, B * C, TOL);
  expect(fx, "aux/amtl.mask", n.a->m, B * C, TOL);
  struct fixture_shape sh;
  const int32_t *k = fixture_get_i32(fx, "aux/amtl.k", &sh);
  assert_non_null(k);
  assert_int_equal(sh.numel, B * F);
  for (int r = 0; r < B * F; r++) {
    assert_int_equal(n.a->k[r], k[r]);
    assert_int_equal(n.prefix[r], k[r] + 1);
  }
  expect(fx, "output/logits", n.logits, B, TOL);
  float loss = (float)nn_logloss_forward(n.logits, y, B);
  expect(fx, "output/loss", &loss, 1, TOL);

  net_backward(&n, y);
  expect(fx, "grad/input/E", n.dE, B * C, TOL);
  for (int i = 0; i < n.p->count; i++) {
    const struct params_view *v = params_view(n.p, i);
    char key[300];
    snprintf(key, sizeof(key), "grad/%s", v->name);
    expect(fx, key, params_grad(n.p, i), v->n, TOL);
  }
  net_free(&n);
  fixture_free(fx);
}

/* The fixture's features came from integer counts and clicks
 * (make_fixtures.py); recover them and rebuild the features. */
static void test_freq_features_as_fixture(void **state) {
  (void)state;
  struct fixture *fx = open_fx();
  const float *want = need(fx, "input/freq", B * F * S);
  uint32_t count[B * F], clicks[B * F];
  for (int r = 0; r < B * F; r++) {
    double c = nearbyint(expm1((double)want[r * S + 0]));
    count[r] = (uint32_t)c;
    clicks[r] = (uint32_t)nearbyint(want[r * S + 2] * c);
  }
  float freq[B * F * S], alpha[B * F];
  amtl_freq_features(count, clicks, B, F, 0, freq, alpha);
  assert_true(fixture_max_err(freq, want, B * F * S, NULL) < 1e-6);
  assert_true(fixture_max_err(alpha, need(fx, "input/alpha", B * F), B * F,
                              NULL) < 1e-6);
  fixture_free(fx);
}

/* Hand values: zero counts, the normalisation, the log2 buckets. */
static void test_freq_features_by_hand(void **state) {
  (void)state;
  enum { NB = 4, SS = AMTL_BASE_FEATURES + NB };
  assert_int_equal(amtl_num_features(NB), SS);
  // 4 rows, 2 fields: field 0 counts 0, 1, 3, 1000; field 1 all 0.
  const uint32_t count[8] = {0, 0, 1, 0, 3, 0, 1000, 0};
  const uint32_t clicks[8] = {0, 0, 1, 0, 1, 0, 250, 0};
  float freq[8 * SS], alpha[8];
  amtl_freq_features(count, clicks, 4, 2, NB, freq, alpha);
  const float mx = log1pf(1000.0f);
  const float want0[4][SS] = {
      {0, 0, 0, 0, 1, 0, 0, 0},                             // count 0
      {log1pf(1), log1pf(1) / mx, 1, 0, 0, 1, 0, 0},        // bucket 1
      {log1pf(3), log1pf(3) / mx, 1.0f / 3, 0, 0, 0, 1, 0}, // bucket 2
      {log1pf(1000), 1, 0.25f, 1, 0, 0, 0, 1},              // 1 + 9 -> 3
  };
  for (int b = 0; b < 4; b++) {
    for (int s = 0; s < SS; s++)
      assert_float_equal(freq[(b * 2 + 0) * SS + s], want0[b][s], 1e-6);
    assert_float_equal(alpha[b * 2 + 0], want0[b][1], 0);
    // field 1: never seen, so every feature is 0 but the bucket-0 flag
    for (int s = 0; s < SS; s++)
      assert_true(freq[(b * 2 + 1) * SS + s] == (s == AMTL_BASE_FEATURES));
    assert_true(alpha[b * 2 + 1] == 0);
  }
}

/* The forward keeps exactly the prefix, and only the prefix matters. */
static void test_hard_prefix(void **state) {
  (void)state;
  struct fixture *fx = open_fx();
  struct net n;
  net_build(&n, fx);
  const float *E = need(fx, "input/E", B * C);
  const float *freq = need(fx, "input/freq", B * F * S);
  const float *alpha = need(fx, "input/alpha", B * F);
  net_forward(&n, E, freq, alpha);
  int seen[D + 1] = {0};
  float Et[B * C]; // E truncated to each value's prefix
  for (int r = 0; r < B * F; r++) {
    int p = n.prefix[r];
    assert_true(p >= 1 && p <= D);
    seen[p] = 1;
    for (int j = 0; j < D; j++) {
      float e = E[r * D + j], eh = n.Ehat[r * D + j];
      if (j < p)
        assert_true(eh == e && n.a->m[r * D + j] == 1.0f);
      else
        assert_true(eh == 0.0f && n.a->m[r * D + j] == 0.0f);
      Et[r * D + j] = j < p ? e : 0.0f;
    }
  }
  int distinct = 0;
  for (int p = 1; p <= D; p++)
    distinct += seen[p];
  assert_true(distinct >= 5); // the fixture uses 7 of the 8 lengths

  float Ehat1[B * C], logits1[B];
  uint16_t prefix1[B * F];
  memcpy(Ehat1, n.Ehat, sizeof(Ehat1));
  memcpy(logits1, n.logits, sizeof(logits1));
  memcpy(prefix1, n.prefix, sizeof(prefix1));
  net_forward(&n, Et, freq, alpha);
  assert_memory_equal(n.prefix, prefix1, sizeof(prefix1));
  assert_memory_equal(n.Ehat, Ehat1, sizeof(Ehat1));
  assert_memory_equal(n.logits, logits1, sizeof(logits1));
  // ... and the DNN alone on the truncated E gives the same logits.
  float logits2[B];
  model_forward(n.dnn, Et, NULL, logits2, B, true);
  assert_memory_equal(logits2, logits1, sizeof(logits1));
  net_free(&n);
  fixture_free(fx);
}

/* Nonzero gradient entries in the four tensors named <prefix>*. */
static size_t nonzero_grads(const struct params *p, const char *prefix) {
  size_t nz = 0, tensors = 0;
  for (int i = 0; i < p->count; i++) {
    const struct params_view *v = params_view(p, i);
    if (strncmp(v->name, prefix, strlen(prefix)) != 0)
      continue;
    tensors++;
    const float *g = params_grad(p, i);
    size_t here = 0;
    for (size_t j = 0; j < v->n; j++)
      here += g[j] != 0.0f;
    nz += here;
  }
  assert_int_equal(tensors, 4); // 0.weight, 0.bias, 1.weight, 1.bias
  return nz;
}

/* Every tensor of the twin has some nonzero gradient. */
static void assert_all_tensors_reached(const struct params *p,
                                       const char *prefix) {
  for (int i = 0; i < p->count; i++) {
    const struct params_view *v = params_view(p, i);
    if (strncmp(v->name, prefix, strlen(prefix)) != 0)
      continue;
    const float *g = params_grad(p, i);
    size_t nz = 0;
    for (size_t j = 0; j < v->n; j++)
      nz += g[j] != 0.0f && isfinite(g[j]);
    if (nz == 0)
      fail_msg("%s got no gradient", v->name);
  }
}

static void test_gradients_reach_twins(void **state) {
  (void)state;
  struct fixture *fx = open_fx();
  struct net n;
  net_build(&n, fx);
  const float *E = need(fx, "input/E", B * C), *y = need(fx, "input/y", B);
  const float *freq = need(fx, "input/freq", B * F * S);
  float alpha[B * F];

  for (int r = 0; r < B * F; r++) // 0 < alpha < 1 (varied)
    alpha[r] = 0.1f + 0.8f * (float)r / (B * F);
  net_forward(&n, E, freq, alpha);
  net_backward(&n, y);
  assert_all_tensors_reached(n.p, "amtl.h.");
  assert_all_tensors_reached(n.p, "amtl.l.");

  for (int r = 0; r < B * F; r++) // alpha = 1: the frequent twin only
    alpha[r] = 1.0f;
  net_forward(&n, E, freq, alpha);
  net_backward(&n, y);
  assert_all_tensors_reached(n.p, "amtl.h.");
  assert_int_equal(nonzero_grads(n.p, "amtl.l."), 0);

  for (int r = 0; r < B * F; r++) // alpha = 0: the rare twin only
    alpha[r] = 0.0f;
  net_forward(&n, E, freq, alpha);
  net_backward(&n, y);
  assert_all_tensors_reached(n.p, "amtl.l.");
  assert_int_equal(nonzero_grads(n.p, "amtl.h."), 0);
  net_free(&n);
  fixture_free(fx);
}

/* dE = m * dÊ: exactly 0 beyond the prefix, exactly dÊ within. Also with
 * an upstream gradient that is nonzero everywhere, and accumulating. */
static void test_no_gradient_beyond_prefix(void **state) {
  (void)state;
  struct fixture *fx = open_fx();
  struct net n;
  net_build(&n, fx);
  const float *E = need(fx, "input/E", B * C), *y = need(fx, "input/y", B);
  net_forward(&n, E, need(fx, "input/freq", B * F * S),
              need(fx, "input/alpha", B * F));
  net_backward(&n, y);
  size_t inside_nz = 0;
  for (int r = 0; r < B * F; r++)
    for (int j = 0; j < D; j++) {
      float g = n.dE[r * D + j];
      if (j >= n.prefix[r])
        assert_true(g == 0.0f);
      else {
        assert_true(g == n.dEhat[r * D + j]);
        inside_nz += g != 0.0f;
      }
    }
  assert_true(inside_nz > 0);

  float up[B * C], dE[B * C];
  for (int i = 0; i < B * C; i++) {
    up[i] = 1.0f + 0.01f * (float)i;
    dE[i] = 2.0f; // backward accumulates onto this
  }
  amtl_backward(n.a, up, dE, B);
  for (int r = 0; r < B * F; r++)
    for (int j = 0; j < D; j++)
      assert_true(dE[r * D + j] ==
                  (j < n.prefix[r] ? 2.0f + up[r * D + j] : 2.0f));
  net_free(&n);
  fixture_free(fx);
}

static void test_bad_options(void **state) {
  (void)state;
  char err[256];
  struct amtl_options ok = {
      .F = 2, .D = 4, .S = 4, .nhidden = 1, .hidden = {3}, .temperature = 1};
  struct params *p = params_new();
  struct amtl *a = amtl_new(&ok, 4, p, err, sizeof(err));
  assert_non_null(a);
  assert_int_equal(p->count, 8);
  amtl_free(a);
  params_free(p);
  struct {
    struct amtl_options o;
    const char *want;
  } bad[] = {
      {{.F = 0, .D = 4, .S = 4, .nhidden = 1, .hidden = {3}, .temperature = 1},
       "F 0"},
      {{.F = 2, .D = 4, .S = 0, .nhidden = 1, .hidden = {3}, .temperature = 1},
       "S 0"},
      {{.F = 2, .D = 4, .S = 4, .nhidden = 0, .temperature = 1},
       "0 hidden layers"},
      {{.F = 2, .D = 4, .S = 4, .nhidden = 1, .hidden = {0}, .temperature = 1},
       "has width 0"},
      {{.F = 2, .D = 4, .S = 4, .nhidden = 1, .hidden = {3}, .temperature = 0},
       "temperature 0"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    p = params_new();
    err[0] = 0;
    assert_null(amtl_new(&bad[i].o, 4, p, err, sizeof(err)));
    if (!strstr(err, bad[i].want))
      fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i].want);
    assert_int_equal(p->count, 0);
    params_free(p);
  }
}

/* The straight-through backward, checked without PyTorch: for a fixed
 * upstream g = dÊ, the twin-net gradients amtl_backward gives are the
 * gradient of the soft surrogate L_s = sum_{b,f,i} t_i c_i with
 * c_i = sum_{j <= i} e_j g_j (what t^ M sees), by central differences on
 * a spread of entries of every twin tensor. */
static double surrogate(const struct amtl *a, const float *E, const float *g) {
  double L = 0;
  for (int r = 0; r < B * F; r++) {
    double c = 0;
    for (int i = 0; i < D; i++) {
      c += (double)E[r * D + i] * g[r * D + i];
      L += a->t[r * D + i] * c;
    }
  }
  return L;
}

static void test_ste_is_soft_gradient(void **state) {
  (void)state;
  struct fixture *fx = open_fx();
  struct net n;
  net_build(&n, fx);
  const float *E = need(fx, "input/E", B * C);
  const float *freq = need(fx, "input/freq", B * F * S);
  float alpha[B * F], g[B * C];
  for (int r = 0; r < B * F; r++)
    alpha[r] = 0.25f + 0.5f * (float)(r % 7) / 6;
  for (int i = 0; i < B * C; i++)
    g[i] = (float)sin(0.7 * i) / 8;
  amtl_forward(n.a, E, freq, alpha, n.Ehat, n.prefix, B);
  params_zero_grad(n.p);
  amtl_backward(n.a, g, NULL, B);
  int checked = 0;
  for (int id = 0; id < n.p->count; id++) {
    const struct params_view *v = params_view(n.p, id);
    if (strncmp(v->name, "amtl.", 5) != 0)
      continue;
    float *w = params_value(n.p, id);
    const float *an = params_grad(n.p, id);
    double scale = 0; // the tensor's largest gradient
    for (size_t j = 0; j < v->n; j++)
      scale = fmax(scale, fabs(an[j]));
    assert_true(scale > 0);
    for (size_t j = 0; j < v->n; j += v->n / 5 + 1) {
      const float eps = 1e-2f, w0 = w[j];
      w[j] = w0 + eps;
      amtl_forward(n.a, E, freq, alpha, n.Ehat, n.prefix, B);
      double up = surrogate(n.a, E, g);
      w[j] = w0 - eps;
      amtl_forward(n.a, E, freq, alpha, n.Ehat, n.prefix, B);
      double down = surrogate(n.a, E, g);
      w[j] = w0;
      double fd = (up - down) / (2.0 * eps);
      if (!(fabs(fd - an[j]) <= 2e-2 * scale + 1e-6))
        fail_msg("%s[%zu]: straight-through %.6g, soft surrogate %.6g", v->name,
                 j, (double)an[j], fd);
      checked++;
    }
  }
  assert_true(checked >= 40);
  net_free(&n);
  fixture_free(fx);
}

/* The options a config's embedding section gives, and that they build. */
static void test_options_from_config(void **state) {
  (void)state;
  char err[512];
  struct config *cfg = config_new();
  struct amtl_options o;
  assert_int_equal(amtl_options_from_config(&o, cfg, 7, err, sizeof(err)), 0);
  assert_int_equal(o.F, 7);
  assert_int_equal(o.D, (int)cfg->embedding.dim);
  assert_int_equal(o.S, 4 + (int)cfg->embedding.amtl_count_buckets);
  assert_int_equal(o.nhidden, (int)cfg->embedding.amtl_hidden_units.n);
  static const char *const sets[] = {
      "embedding.dim=12", "embedding.amtl_hidden_units=[8,4]",
      "embedding.amtl_temperature=0.25", "embedding.amtl_count_buckets=5"};
  for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
    if (config_set(cfg, sets[i], err, sizeof(err)) != 0)
      fail_msg("%s: %s", sets[i], err);
  assert_int_equal(amtl_options_from_config(&o, cfg, 3, err, sizeof(err)), 0);
  assert_int_equal(o.D, 12);
  assert_int_equal(o.S, 9);
  assert_int_equal(o.nhidden, 2);
  assert_int_equal(o.hidden[0], 8);
  assert_int_equal(o.hidden[1], 4);
  assert_true(o.temperature == 0.25f);
  struct params *p = params_new();
  struct amtl *a = amtl_new(&o, 2, p, err, sizeof(err));
  assert_non_null(a);
  // 3 linear layers per twin, the last one (F, D, 4)
  int id = params_find(p, "amtl.l.2.weight");
  assert_true(id >= 0);
  assert_int_equal(params_view(p, id)->count, 3);
  assert_int_equal(params_view(p, id)->rows, 12);
  assert_int_equal(params_view(p, id)->cols, 4);
  assert_int_equal(p->count, 12);
  amtl_free(a);
  params_free(p);
  assert_int_equal(amtl_options_from_config(&o, cfg, 0, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "0 fields"));
  config_free(cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_amtl_dnn_vs_torch),
      cmocka_unit_test(test_freq_features_as_fixture),
      cmocka_unit_test(test_freq_features_by_hand),
      cmocka_unit_test(test_hard_prefix),
      cmocka_unit_test(test_gradients_reach_twins),
      cmocka_unit_test(test_no_gradient_beyond_prefix),
      cmocka_unit_test(test_ste_is_soft_gradient),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_options_from_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
