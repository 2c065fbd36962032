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
 * backward with dE = NULL the same parameter gradients.
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
#include "worker/nn/model_impl.h"
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
  const struct model_impl *impl;
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
  void *m = r->impl->init(&r->o, F, D, Bmax, p, err, sizeof(err));
  if (!m)
    fail_msg("%s: %s", r->model, err);
  params_alloc(p, 7);
  char *names = copy_params(fx, p);

  const float *E = need(fx, "input/E", (size_t)B * C);
  const float *y = need(fx, "input/y", B);
  float logits[64], dlogits[64];
  float *dE = calloc((size_t)B * C, sizeof(float));
  r->impl->forward(m, E, NULL, logits, B, true);
  expect(fx, r->model, "output/logits", logits, B, r->tol);
  float loss = (float)nn_logloss_forward(logits, y, B);
  expect(fx, r->model, "output/loss", &loss, 1, r->tol);
  memset(dlogits, 0, sizeof(dlogits));
  nn_logloss_backward(logits, y, dlogits, B, 1.0f);
  params_zero_grad(p);
  r->impl->backward(m, dlogits, dE, NULL, B);
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
  r->impl->backward(m, dlogits, dE2, NULL, B);
  assert_memory_equal(g1, p->grads, p->len * sizeof(float));
  assert_memory_equal(dE, dE2, (size_t)B * C * sizeof(float));
  params_zero_grad(p);
  r->impl->backward(m, dlogits, NULL, NULL, B);
  assert_memory_equal(g1, p->grads, p->len * sizeof(float));

  // A smaller batch after a larger one: the first rows' logits are the
  // same (rows are independent: no batch statistics in these models).
  float logits2[64];
  r->impl->forward(m, E, NULL, logits2, B / 2, true);
  assert_memory_equal(logits, logits2, (size_t)(B / 2) * sizeof(float));

  free(g1);
  free(dE2);
  free(dE);
  free(names);
  r->impl->free(m);
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
  struct run r = {"sermasknet",
                  &model_impl_sermasknet,
                  masknet_options("sermasknet", MODEL_SERMASKNET),
                  1e-4,
                  NULL,
                  0};
  assert_true(r.o.emb_layernorm && r.o.net_layernorm);
  run_fixture(&r);
}

static void test_sermasknet_noln(void **state) {
  (void)state;
  struct run r = {"sermasknet_noln",
                  &model_impl_sermasknet,
                  masknet_options("sermasknet_noln", MODEL_SERMASKNET),
                  1e-5,
                  NULL,
                  0};
  assert_false(r.o.emb_layernorm || r.o.net_layernorm);
  run_fixture(&r);
}

static void test_paramasknet(void **state) {
  (void)state;
  struct run r = {"paramasknet",
                  &model_impl_paramasknet,
                  masknet_options("paramasknet", MODEL_PARAMASKNET),
                  1e-5,
                  NULL,
                  0};
  assert_int_equal(r.o.num_blocks, 3);
  run_fixture(&r);
}

static void test_maskfusion(void **state) {
  (void)state;
  struct fixture *fx = open_fx("maskfusion");
  struct run r = {"maskfusion", &model_impl_maskfusion, {0}, 1e-4, "fc.bias",
                  2e-4};
  r.o.kind = MODEL_MASKFUSION;
  r.o.nhidden = json_ints(fixture_text(fx, "meta/config"), "hidden", r.o.hidden,
                          MODEL_MAX_LAYERS);
  fixture_free(fx);
  run_fixture(&r);
}

/* Options that cannot build a model are refused with a reason. */
static void test_bad_options(void **state) {
  (void)state;
  struct model_options o;
  memset(&o, 0, sizeof(o));
  o.num_blocks = 2;
  o.block_dim[0] = 4;
  o.block_dim[1] = 4;
  o.reduction_ratio = 1;
  char err[256];
  struct params *p = params_new();
  void *m = model_impl_sermasknet.init(&o, 3, 2, 4, p, err, sizeof(err));
  assert_non_null(m); // the baseline builds
  model_impl_sermasknet.free(m);
  params_free(p);

  struct model_options b = o;
  b.num_blocks = 0;
  p = params_new();
  assert_null(model_impl_sermasknet.init(&b, 3, 2, 4, p, err, sizeof(err)));
  assert_non_null(strstr(err, "num_blocks 0"));
  params_free(p);

  b = o;
  b.reduction_ratio = 0;
  p = params_new();
  assert_null(model_impl_paramasknet.init(&b, 3, 2, 4, p, err, sizeof(err)));
  assert_non_null(strstr(err, "reduction_ratio"));
  params_free(p);

  b = o;
  b.reduction_ratio = 0.1f; // int(0.1 * 4) = 0 for block 1
  p = params_new();
  assert_null(model_impl_sermasknet.init(&b, 3, 2, 4, p, err, sizeof(err)));
  assert_non_null(strstr(err, "aggregation width"));
  params_free(p);

  b = o;
  b.block_dim[1] = 0;
  p = params_new();
  assert_null(model_impl_sermasknet.init(&b, 3, 2, 4, p, err, sizeof(err)));
  assert_non_null(strstr(err, "block 1 has width 0"));
  params_free(p);

  b = o;
  b.nhidden = 0;
  p = params_new();
  assert_null(model_impl_maskfusion.init(&b, 3, 2, 4, p, err, sizeof(err)));
  assert_non_null(strstr(err, "at least one hidden layer"));
  params_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sermasknet),
      cmocka_unit_test(test_sermasknet_noln),
      cmocka_unit_test(test_paramasknet),
      cmocka_unit_test(test_maskfusion),
      cmocka_unit_test(test_bad_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
