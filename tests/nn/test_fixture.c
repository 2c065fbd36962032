/* fixture: the reader on hand-made and corrupt buffers, and the committed
 * PyTorch fixtures checked for the contract of tests/nn/README.md (names,
 * shapes, consistency of loss with logits, and closed forms where a model
 * is simple enough to compute here: LR, FM, DNN forward, AMTL's mask). */
#include "tests/nn/fixture.h"

#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *const models[] = {
    "lr",
    "fm",
    "dnn",
    "deepfm",
    "dcn",
    "dcnv2_crossnet",
    "dcnv2_stacked",
    "dcnv2_parallel",
    "dcnv2_mix_parallel",
    "dcnv2_mix_stacked",
    "edcn_hadamard",
    "edcn_add",
    "edcn_concat",
    "edcn_hadamard_nores",
    "sermasknet",
    "sermasknet_noln",
    "paramasknet",
    "maskfusion",
    "amtl_dnn",
};
static const char *const ops[] = {"op_layernorm", "op_batchnorm", "op_dice",
                                  "op_prelu", "op_softmax"};

enum { BATCH = 8 };

/* ---- a writer for hand-made fixtures (an independent copy of the spec) */

struct wbuf {
  uint8_t b[8192];
  size_t n;
};

static void put(struct wbuf *w, const void *p, size_t n) {
  assert_true(w->n + n <= sizeof(w->b));
  memcpy(w->b + w->n, p, n);
  w->n += n;
}
static void put32(struct wbuf *w, uint32_t v) {
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                  (uint8_t)(v >> 24)};
  put(w, b, 4);
}
static void begin(struct wbuf *w, uint32_t version, uint32_t count) {
  w->n = 0;
  put(w, "MPSFIXT", 8); /* with its NUL */
  put32(w, version);
  put32(w, count);
}
static void rec(struct wbuf *w, const char *name, uint8_t dtype, uint8_t ndim,
                const uint32_t *dims, const void *data, size_t nbytes) {
  size_t n = strlen(name);
  uint8_t h[2] = {(uint8_t)n, (uint8_t)(n >> 8)};
  put(w, h, 2);
  put(w, name, n);
  uint8_t t[2] = {dtype, ndim};
  put(w, t, 2);
  for (int i = 0; i < ndim; i++)
    put32(w, dims[i]);
  put(w, data, nbytes);
}
static void finish(struct wbuf *w) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < w->n; i++) {
    h ^= w->b[i];
    h *= 0x100000001b3ull;
  }
  uint8_t b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)(h >> 8 * i);
  put(w, b, 8);
}

static void test_hand_made_round_trip(void **state) {
  (void)state;
  struct wbuf w;
  const float m[6] = {1.5f, -2.0f, 0.0f, 3.25f, -0.125f, 1e-7f};
  const int32_t k[2] = {7, -3};
  const float s = 0.75f;
  begin(&w, 1, 4);
  rec(&w, "param/mlp.0.weight", 1, 2, (uint32_t[]){2, 3}, m, sizeof(m));
  rec(&w, "aux/k", 2, 1, (uint32_t[]){2}, k, sizeof(k));
  rec(&w, "meta/config", 3, 1, (uint32_t[]){7}, "{\"a\":1}", 7);
  rec(&w, "output/loss", 1, 0, NULL, &s, 4);
  finish(&w);

  char err[256] = "";
  struct fixture *fx = fixture_parse(w.b, w.n, err, sizeof(err));
  if (!fx)
    fail_msg("%s", err);
  assert_int_equal(fixture_count(fx), 4);
  assert_string_equal(fixture_at(fx, 0)->name, "param/mlp.0.weight");
  assert_string_equal(fixture_at(fx, 3)->name, "output/loss");
  assert_null(fixture_at(fx, 4));

  struct fixture_shape sh;
  const float *got = fixture_get(fx, "param/mlp.0.weight", &sh);
  assert_non_null(got);
  assert_int_equal(sh.ndim, 2);
  assert_int_equal(sh.dims[0], 2);
  assert_int_equal(sh.dims[1], 3);
  assert_int_equal(sh.numel, 6);
  assert_memory_equal(got, m, sizeof(m));

  const float *loss = fixture_get(fx, "output/loss", &sh);
  assert_non_null(loss);
  assert_int_equal(sh.ndim, 0);
  assert_int_equal(sh.numel, 1);
  assert_true(*loss == 0.75f);

  const int32_t *ki = fixture_get_i32(fx, "aux/k", &sh);
  assert_non_null(ki);
  assert_int_equal(ki[0], 7);
  assert_int_equal(ki[1], -3);
  /* Typed getters refuse the other types. */
  assert_null(fixture_get(fx, "aux/k", NULL));
  assert_null(fixture_get_i32(fx, "output/loss", NULL));
  assert_null(fixture_get(fx, "meta/config", NULL));
  assert_null(fixture_get(fx, "param/mlp.0", NULL));
  assert_string_equal(fixture_text(fx, "meta/config"), "{\"a\":1}");
  assert_null(fixture_text(fx, "output/loss"));
  fixture_free(fx);
  fixture_free(NULL);

  /* An empty fixture is valid. */
  begin(&w, 1, 0);
  finish(&w);
  fx = fixture_parse(w.b, w.n, err, sizeof(err));
  assert_non_null(fx);
  assert_int_equal(fixture_count(fx), 0);
  fixture_free(fx);
}

static void expect_parse_err(const struct wbuf *w, const char *want) {
  char err[256] = "";
  struct fixture *fx = fixture_parse(w->b, w->n, err, sizeof(err));
  if (fx) {
    fixture_free(fx);
    fail_msg("parsed a buffer that should fail with '%s'", want);
  }
  if (!strstr(err, want))
    fail_msg("error '%s' does not mention '%s'", err, want);
}

static void test_rejects_malformed(void **state) {
  (void)state;
  struct wbuf w;
  const float v[4] = {1, 2, 3, 4};
  char longname[300];
  memset(longname, 'a', sizeof(longname) - 1);
  longname[299] = '\0';

  w.n = 0;
  put(&w, "MPSFIXT", 8);
  expect_parse_err(&w, "shorter than an empty fixture");

  begin(&w, 1, 0);
  finish(&w);
  w.b[0] = 'X';
  expect_parse_err(&w, "bad magic");

  begin(&w, 2, 0);
  finish(&w);
  expect_parse_err(&w, "version 2 is not the one this build reads (1)");

  begin(&w, 1, 1); /* a record count with no records */
  finish(&w);
  expect_parse_err(&w, "cannot fit");

  begin(&w, 1, 0xffffffffu);
  rec(&w, "x", 1, 1, (uint32_t[]){4}, v, sizeof(v));
  finish(&w);
  expect_parse_err(&w, "4294967295 tensors cannot fit");

  begin(&w, 1, 1);
  rec(&w, "", 1, 1, (uint32_t[]){4}, v, sizeof(v));
  finish(&w);
  expect_parse_err(&w, "name length 0 is not in 1..255");

  begin(&w, 1, 1);
  rec(&w, longname, 1, 1, (uint32_t[]){4}, v, sizeof(v));
  finish(&w);
  expect_parse_err(&w, "name length 299");

  begin(&w, 1, 1);
  rec(&w, "bad name", 1, 1, (uint32_t[]){4}, v, sizeof(v));
  finish(&w);
  expect_parse_err(&w, "name byte 3 is 0x20");

  begin(&w, 1, 1);
  rec(&w, "x", 9, 1, (uint32_t[]){4}, v, sizeof(v));
  finish(&w);
  expect_parse_err(&w, "tensor 'x': unknown dtype 9");

  begin(&w, 1, 1);
  rec(&w, "x", 1, 9, (uint32_t[]){1, 1, 1, 1, 1, 1, 1, 1, 4}, v, sizeof(v));
  finish(&w);
  expect_parse_err(&w, "9 dims exceed 8");

  /* Dims whose product overflows size_t, or just exceeds the file. */
  begin(&w, 1, 1);
  rec(&w, "x", 1, 4,
      (uint32_t[]){0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, v,
      sizeof(v));
  finish(&w);
  expect_parse_err(&w, "dims say more data than");

  begin(&w, 1, 1);
  rec(&w, "x", 1, 1, (uint32_t[]){5}, v, sizeof(v));
  finish(&w);
  expect_parse_err(&w, "dims say more data than");

  begin(&w, 1, 2);
  rec(&w, "x", 1, 1, (uint32_t[]){2}, v, 8);
  rec(&w, "x", 1, 1, (uint32_t[]){2}, v, 8);
  finish(&w);
  expect_parse_err(&w, "tensor name 'x' appears twice");

  begin(&w, 1, 1);
  rec(&w, "x", 1, 1, (uint32_t[]){3}, v, sizeof(v)); /* 4 spare bytes */
  finish(&w);
  expect_parse_err(&w, "4 bytes after the last of 1 tensors");

  begin(&w, 1, 1);
  rec(&w, "x", 1, 1, (uint32_t[]){4}, v, sizeof(v));
  finish(&w);
  w.b[w.n - 12] ^= 1; /* a data bit: only the checksum can tell */
  expect_parse_err(&w, "checksum mismatch");
}

/* Reads a whole committed fixture into memory. Caller frees. */
static uint8_t *slurp(const char *model, size_t *len) {
  const char *root = getenv("MASKPS_SOURCE_DIR");
  assert_non_null(root);
  char path[4096];
  snprintf(path, sizeof(path), "%s/tests/nn/fixtures/%s.bin", root, model);
  FILE *f = fopen(path, "rb");
  if (!f)
    fail_msg("cannot open %s", path);
  static uint8_t tmp[1 << 20];
  *len = fread(tmp, 1, sizeof(tmp), f);
  fclose(f);
  assert_true(*len > 24 && *len < sizeof(tmp));
  uint8_t *b = malloc(*len);
  assert_non_null(b);
  memcpy(b, tmp, *len);
  return b;
}

/* Every prefix of a real file and every single-byte corruption must be
 * refused with a message (and, under ASan, without an invalid read). */
static void test_truncated_and_corrupt_files(void **state) {
  (void)state;
  const char *names[] = {"lr", "op_prelu", "dnn"};
  for (size_t m = 0; m < sizeof(names) / sizeof(*names); m++) {
    size_t len;
    uint8_t *b = slurp(names[m], &len);
    char err[256];
    struct fixture *fx = fixture_parse(b, len, err, sizeof(err));
    if (!fx)
      fail_msg("%s: %s", names[m], err);
    fixture_free(fx);
    /* Each prefix is copied to its own allocation so ASan sees the end. */
    size_t step = len > 2000 ? 7 : 1;
    for (size_t n = 0; n < len; n += step) {
      uint8_t *p = malloc(n ? n : 1);
      memcpy(p, b, n);
      err[0] = '\0';
      fx = fixture_parse(p, n, err, sizeof(err));
      if (fx)
        fail_msg("%s: the %zu-byte prefix of %zu parsed", names[m], n, len);
      assert_true(err[0] != '\0');
      free(p);
    }
    for (size_t i = 0; i < len; i += step) {
      b[i] ^= 0x5a;
      err[0] = '\0';
      fx = fixture_parse(b, len, err, sizeof(err));
      if (fx)
        fail_msg("%s: byte %zu flipped and the file still parsed", names[m], i);
      assert_true(err[0] != '\0');
      b[i] ^= 0x5a;
    }
    free(b);
  }
}

/* Garbage records behind a valid header and a valid checksum: what a
 * buggy writer could produce. The parser must never crash. */
static void test_garbage_with_valid_checksum(void **state) {
  (void)state;
  uint64_t s = 0x9e3779b97f4a7c15ull;
  int parsed = 0;
  for (int it = 0; it < 20000; it++) {
    struct wbuf w;
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    begin(&w, 1, (uint32_t)(s % 4));
    size_t n = (size_t)(s >> 8) % 96;
    for (size_t i = 0; i < n; i++) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      /* Small values most of the time, so records are often plausible. */
      uint8_t byte = (uint8_t)(s >> 32);
      w.b[w.n++] = (s & 3) ? byte % 6 : byte;
    }
    finish(&w);
    char err[256];
    struct fixture *fx = fixture_parse(w.b, w.n, err, sizeof(err));
    parsed += fx != NULL;
    fixture_free(fx);
  }
  /* Not an assertion about the parser; printed to show the run did
   * exercise both outcomes. */
  print_message("%d of 20000 garbage buffers parsed\n", parsed);
  assert_true(parsed < 20000);
}

static void test_open_errors(void **state) {
  (void)state;
  char err[512] = "";
  assert_null(fixture_open("/nonexistent/dir/x.bin", err, sizeof(err)));
  assert_non_null(strstr(err, "/nonexistent/dir/x.bin: cannot open"));
  assert_null(fixture_open_named("no_such_model", err, sizeof(err)));
  assert_non_null(strstr(err, "tests/nn/fixtures/no_such_model.bin"));

  char *saved = strdup(getenv("MASKPS_SOURCE_DIR"));
  unsetenv("MASKPS_SOURCE_DIR");
  assert_null(fixture_open_named("lr", err, sizeof(err)));
  assert_non_null(strstr(err, "MASKPS_SOURCE_DIR is not set"));
  setenv("MASKPS_SOURCE_DIR", saved, 1);
  free(saved);

  /* A file that is not a fixture at all: this source file. */
  char path[4096];
  snprintf(path, sizeof(path), "%s/tests/nn/test_fixture.c",
           getenv("MASKPS_SOURCE_DIR"));
  assert_null(fixture_open(path, err, sizeof(err)));
  assert_non_null(strstr(err, "bad magic"));
}

static void test_max_err(void **state) {
  (void)state;
  const float want[4] = {1, -4, 2, 0};
  const float got[4] = {1, -4.5f, 2.25f, 0};
  size_t at = 99;
  assert_true(fabs(fixture_max_err(got, want, 4, &at) - 0.125) < 1e-12);
  assert_int_equal(at, 1);
  assert_true(fixture_max_err(want, want, 4, NULL) == 0);
  const float z[2] = {0, 0}, g2[2] = {0, -3e-6f};
  assert_true(fabs(fixture_max_err(g2, z, 2, &at) - 3e-6) < 1e-12);
  assert_int_equal(at, 1);
  const float nan2[2] = {0, NAN};
  assert_true(isinf(fixture_max_err(nan2, want, 2, &at)));
  assert_int_equal(at, 1);
  assert_true(fixture_max_err(NULL, NULL, 0, NULL) == 0);
}

/* ---- the committed fixtures */

static struct fixture *open_model(const char *model) {
  char err[512];
  struct fixture *fx = fixture_open_named(model, err, sizeof(err));
  if (!fx)
    fail_msg("%s", err);
  return fx;
}

static double bce_mean(const float *z, const float *y, int n) {
  double s = 0;
  for (int i = 0; i < n; i++)
    s += fmax(z[i], 0) - (double)z[i] * y[i] + log1p(exp(-fabs(z[i])));
  return s / n;
}

static void check_same_shape(const struct fixture_shape *a,
                             const struct fixture_shape *b, const char *what) {
  if (a->ndim != b->ndim || a->numel != b->numel)
    fail_msg("%s: shapes differ", what);
  for (int i = 0; i < a->ndim; i++)
    if (a->dims[i] != b->dims[i])
      fail_msg("%s: dim %d differs", what, i);
}

/* What every file promises, whatever the model. */
static void check_common(const char *model, int is_op) {
  struct fixture *fx = open_model(model);
  char want[128];
  snprintf(want, sizeof(want), "\"model\": \"%s\"", model);
  const char *cfg = fixture_text(fx, "meta/config");
  assert_non_null(cfg);
  if (!strstr(cfg, want))
    fail_msg("%s: meta/config lacks %s: %s", model, want, cfg);
  assert_non_null(fixture_text(fx, "meta/f32_vs_f64"));

  /* The float32 reference agrees with float64 far below the 1e-4 every C
   * test may use. */
  struct fixture_shape sh;
  const float *e = fixture_get(fx, "meta/f32_vs_f64_max", &sh);
  assert_non_null(e);
  assert_int_equal(sh.ndim, 0);
  assert_true(*e >= 0 && *e < 5e-5);

  /* meta/param_names lists exactly the param/ tensors, in file order, and
   * each has a gradient of its shape. */
  const char *names = fixture_text(fx, "meta/param_names");
  assert_non_null(names);
  size_t nparam = 0;
  for (size_t i = 0; i < fixture_count(fx); i++) {
    const struct fixture_tensor *t = fixture_at(fx, i);
    if (t->dtype == FIXTURE_F32)
      for (size_t j = 0; j < t->shape.numel; j++)
        if (!isfinite(((const float *)t->data)[j]))
          fail_msg("%s: %s[%zu] is not finite", model, t->name, j);
    if (strncmp(t->name, "param/", 6) != 0)
      continue;
    const char *p = t->name + 6;
    size_t n = strlen(p);
    if (strncmp(names, p, n) != 0 || (names[n] != '\n' && names[n] != '\0'))
      fail_msg("%s: param %zu is %s, meta/param_names says %.40s", model,
               nparam, p, names);
    names += n + (names[n] == '\n');
    nparam++;
    char g[300];
    snprintf(g, sizeof(g), "grad/%s", p);
    const struct fixture_tensor *gt = fixture_find(fx, g);
    if (!gt)
      fail_msg("%s: no %s", model, g);
    check_same_shape(&gt->shape, &t->shape, g);
  }
  assert_int_equal(*names, '\0');

  if (is_op) {
    const struct fixture_tensor *x = fixture_find(fx, "input/x");
    assert_non_null(x);
    check_same_shape(&fixture_find(fx, "output/y")->shape, &x->shape, "y");
    check_same_shape(&fixture_find(fx, "grad/input/x")->shape, &x->shape,
                     "grad/input/x");
  } else {
    assert_true(nparam > 0);
    const float *y = fixture_get(fx, "input/y", &sh);
    assert_non_null(y);
    assert_int_equal(sh.numel, BATCH);
    const float *z = fixture_get(fx, "output/logits", &sh);
    assert_non_null(z);
    assert_int_equal(sh.ndim, 1);
    assert_int_equal(sh.dims[0], BATCH);
    const float *loss = fixture_get(fx, "output/loss", &sh);
    assert_non_null(loss);
    assert_int_equal(sh.ndim, 0);
    /* The stored loss is the mean logloss of the stored logits. */
    double want_loss = bce_mean(z, y, BATCH);
    if (fabs(*loss - want_loss) > 1e-6 * fmax(1, want_loss))
      fail_msg("%s: loss %.9g, logits give %.9g", model, *loss, want_loss);
    /* Every input with a gradient has it in its own shape. */
    const char *ins[] = {"E", "w"};
    for (int i = 0; i < 2; i++) {
      char a[64], b[64];
      snprintf(a, sizeof(a), "input/%s", ins[i]);
      snprintf(b, sizeof(b), "grad/input/%s", ins[i]);
      const struct fixture_tensor *t = fixture_find(fx, a);
      if (t)
        check_same_shape(&fixture_find(fx, b)->shape, &t->shape, b);
    }
    assert_non_null(
        fixture_find(fx, strcmp(model, "lr") ? "input/E" : "input/w"));
  }
  fixture_free(fx);
}

static int listed(const char *file) {
  char name[256];
  for (size_t i = 0; i < sizeof(models) / sizeof(*models); i++) {
    snprintf(name, sizeof(name), "%s.bin", models[i]);
    if (strcmp(name, file) == 0)
      return 1;
  }
  for (size_t i = 0; i < sizeof(ops) / sizeof(*ops); i++) {
    snprintf(name, sizeof(name), "%s.bin", ops[i]);
    if (strcmp(name, file) == 0)
      return 1;
  }
  return 0;
}

static void test_committed_files(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(models) / sizeof(*models); i++)
    check_common(models[i], 0);
  for (size_t i = 0; i < sizeof(ops) / sizeof(*ops); i++)
    check_common(ops[i], 1);
  /* Every file in fixtures/ is one of the above: a new fixture gets these
   * checks too, by being added to the lists. */
  char dir[4096];
  snprintf(dir, sizeof(dir), "%s/tests/nn/fixtures",
           getenv("MASKPS_SOURCE_DIR"));
  DIR *d = opendir(dir);
  assert_non_null(d);
  size_t n = 0;
  for (struct dirent *e; (e = readdir(d));) {
    size_t len = strlen(e->d_name);
    if (len < 4 || strcmp(e->d_name + len - 4, ".bin") != 0)
      continue;
    if (!listed(e->d_name))
      fail_msg("fixtures/%s is not in test_fixture.c's lists", e->d_name);
    n++;
  }
  closedir(d);
  assert_int_equal(n, sizeof(models) / sizeof(*models) +
                          sizeof(ops) / sizeof(*ops));
}

/* The DNN file's full table of contents: pins the naming convention. */
static void test_dnn_names_and_shapes(void **state) {
  (void)state;
  static const struct {
    const char *name;
    int ndim;
    uint32_t d0, d1, d2;
  } want[] = {
      {"input/E", 3, 8, 5, 4},
      {"input/y", 1, 8, 0, 0},
      {"param/mlp.0.weight", 2, 16, 20, 0},
      {"param/mlp.0.bias", 1, 16, 0, 0},
      {"param/mlp.1.weight", 2, 8, 16, 0},
      {"param/mlp.1.bias", 1, 8, 0, 0},
      {"param/mlp.2.weight", 2, 1, 8, 0},
      {"param/mlp.2.bias", 1, 1, 0, 0},
      {"output/logits", 1, 8, 0, 0},
      {"output/loss", 0, 0, 0, 0},
      {"grad/input/E", 3, 8, 5, 4},
      {"grad/mlp.0.weight", 2, 16, 20, 0},
      {"grad/mlp.0.bias", 1, 16, 0, 0},
      {"grad/mlp.1.weight", 2, 8, 16, 0},
      {"grad/mlp.1.bias", 1, 8, 0, 0},
      {"grad/mlp.2.weight", 2, 1, 8, 0},
      {"grad/mlp.2.bias", 1, 1, 0, 0},
      {"aux/mlp.0.out", 2, 8, 16, 0},
      {"aux/mlp.1.out", 2, 8, 8, 0},
  };
  struct fixture *fx = open_model("dnn");
  size_t nmeta = 0;
  for (size_t i = 0; i < fixture_count(fx); i++)
    nmeta += strncmp(fixture_at(fx, i)->name, "meta/", 5) == 0;
  assert_int_equal(fixture_count(fx) - nmeta, sizeof(want) / sizeof(*want));
  for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++) {
    const struct fixture_tensor *t = fixture_at(fx, nmeta + i);
    assert_string_equal(t->name, want[i].name);
    assert_int_equal(t->dtype, FIXTURE_F32);
    assert_int_equal(t->shape.ndim, want[i].ndim);
    uint32_t d[3] = {want[i].d0, want[i].d1, want[i].d2};
    for (int j = 0; j < want[i].ndim; j++)
      assert_int_equal(t->shape.dims[j], d[j]);
  }
  fixture_free(fx);
}

static double sigmoid(double z) {
  return 1 / (1 + exp(-z));
}

/* LR: logit = b + sum_f w_f; every gradient in closed form. */
static void test_lr_closed_form(void **state) {
  (void)state;
  struct fixture *fx = open_model("lr");
  struct fixture_shape sh;
  const float *w = fixture_get(fx, "input/w", &sh);
  assert_int_equal(sh.ndim, 2);
  int F = (int)sh.dims[1];
  const float *y = fixture_get(fx, "input/y", NULL);
  const float *b = fixture_get(fx, "param/lr.bias", NULL);
  const float *z = fixture_get(fx, "output/logits", NULL);
  const float *gb = fixture_get(fx, "grad/lr.bias", NULL);
  const float *gw = fixture_get(fx, "grad/input/w", NULL);
  float zc[BATCH], gwc[BATCH * 8];
  double gbc = 0;
  assert_true(F <= 8);
  for (int i = 0; i < BATCH; i++) {
    double s = b[0];
    for (int f = 0; f < F; f++)
      s += w[i * F + f];
    zc[i] = (float)s;
    double dz = (sigmoid(s) - y[i]) / BATCH;
    gbc += dz;
    for (int f = 0; f < F; f++)
      gwc[i * F + f] = (float)dz;
  }
  assert_true(fixture_max_err(zc, z, BATCH, NULL) < 1e-6);
  assert_true(fabs(gbc - gb[0]) < 1e-6 * fmax(fabs(gbc), 1e-3));
  assert_true(fixture_max_err(gwc, gw, (size_t)BATCH * F, NULL) < 1e-5);
  fixture_free(fx);
}

/* FM: logit = b + sum w + 1/2 sum_k [(sum_f e)^2 - sum_f e^2];
 * dL/de_fk = dz * (sum_f' e_f'k - e_fk). */
static void test_fm_closed_form(void **state) {
  (void)state;
  struct fixture *fx = open_model("fm");
  struct fixture_shape sh;
  const float *E = fixture_get(fx, "input/E", &sh);
  int F = (int)sh.dims[1], D = (int)sh.dims[2];
  const float *w = fixture_get(fx, "input/w", NULL);
  const float *y = fixture_get(fx, "input/y", NULL);
  const float *b = fixture_get(fx, "param/lr.bias", NULL);
  const float *z = fixture_get(fx, "output/logits", NULL);
  const float *gE = fixture_get(fx, "grad/input/E", NULL);
  float zc[BATCH], gEc[BATCH * 5 * 4];
  assert_true(F * D <= 20);
  for (int i = 0; i < BATCH; i++) {
    double s = b[0], fm = 0, sum[4] = {0};
    for (int f = 0; f < F; f++) {
      s += w[i * F + f];
      for (int k = 0; k < D; k++) {
        double e = E[(i * F + f) * D + k];
        sum[k] += e;
        fm -= e * e;
      }
    }
    for (int k = 0; k < D; k++)
      fm += sum[k] * sum[k];
    zc[i] = (float)(s + 0.5 * fm);
    double dz = (sigmoid(zc[i]) - y[i]) / BATCH;
    for (int f = 0; f < F; f++)
      for (int k = 0; k < D; k++)
        gEc[(i * F + f) * D + k] =
            (float)(dz * (sum[k] - E[(i * F + f) * D + k]));
  }
  assert_true(fixture_max_err(zc, z, BATCH, NULL) < 1e-5);
  assert_true(fixture_max_err(gEc, gE, (size_t)BATCH * F * D, NULL) < 1e-5);
  fixture_free(fx);
}

/* y (n_out) = W (n_out, n_in) x + b, the torch layout the README promises. */
static void dense(const float *W, const float *b, const double *x, double *y,
                  int n_in, int n_out, int relu) {
  for (int o = 0; o < n_out; o++) {
    double s = b[o];
    for (int i = 0; i < n_in; i++)
      s += (double)W[o * n_in + i] * x[i];
    y[o] = relu && s < 0 ? 0 : s;
  }
}

static void test_dnn_forward_by_hand(void **state) {
  (void)state;
  struct fixture *fx = open_model("dnn");
  const float *E = fixture_get(fx, "input/E", NULL);
  const float *z = fixture_get(fx, "output/logits", NULL);
  const float *W0 = fixture_get(fx, "param/mlp.0.weight", NULL);
  const float *b0 = fixture_get(fx, "param/mlp.0.bias", NULL);
  const float *W1 = fixture_get(fx, "param/mlp.1.weight", NULL);
  const float *b1 = fixture_get(fx, "param/mlp.1.bias", NULL);
  const float *W2 = fixture_get(fx, "param/mlp.2.weight", NULL);
  const float *b2 = fixture_get(fx, "param/mlp.2.bias", NULL);
  float zc[BATCH];
  for (int i = 0; i < BATCH; i++) {
    double x[20], h0[16], h1[8], out;
    for (int j = 0; j < 20; j++)
      x[j] = E[i * 20 + j];
    dense(W0, b0, x, h0, 20, 16, 1);
    dense(W1, b1, h0, h1, 16, 8, 1);
    dense(W2, b2, h1, &out, 8, 1, 0);
    zc[i] = (float)out;
  }
  double e = fixture_max_err(zc, z, BATCH, NULL);
  if (e > 1e-5)
    fail_msg("dnn logits by hand differ by %g", e);
  fixture_free(fx);
}

/* AMTL: t = softmax(h / tau), k = argmax t, mask = 1 on dims 0..k, and the
 * embeddings get no gradient beyond the prefix (DESIGN.md "AMTL"). */
static void test_amtl_mask(void **state) {
  (void)state;
  struct fixture *fx = open_model("amtl_dnn");
  assert_non_null(strstr(fixture_text(fx, "meta/config"), "\"tau\": 0.5"));
  const double tau = 0.5;
  struct fixture_shape sh;
  const float *h = fixture_get(fx, "aux/amtl.h", &sh);
  assert_non_null(h);
  assert_int_equal(sh.ndim, 3);
  int F = (int)sh.dims[1], D = (int)sh.dims[2];
  const float *t = fixture_get(fx, "aux/amtl.t", NULL);
  const float *m = fixture_get(fx, "aux/amtl.mask", NULL);
  const int32_t *k = fixture_get_i32(fx, "aux/amtl.k", &sh);
  const float *gE = fixture_get(fx, "grad/input/E", NULL);
  assert_non_null(k);
  assert_int_equal(sh.numel, (size_t)BATCH * F);
  int distinct[64] = {0};
  for (int r = 0; r < BATCH * F; r++) {
    assert_true(k[r] >= 0 && k[r] < D);
    const float *hr = h + (size_t)r * D;
    double mx = hr[0], sum = 0;
    int arg = 0;
    for (int j = 1; j < D; j++)
      if (hr[j] > mx)
        mx = hr[j], arg = j;
    for (int j = 0; j < D; j++)
      sum += exp((hr[j] - mx) / tau);
    for (int j = 0; j < D; j++) {
      double tj = exp((hr[j] - mx) / tau) / sum;
      assert_true(fabs(tj - t[(size_t)r * D + j]) < 1e-6);
      assert_true(m[(size_t)r * D + j] == (j <= k[r] ? 1.0f : 0.0f));
      if (j > k[r])
        assert_true(gE[(size_t)r * D + j] == 0.0f);
    }
    assert_int_equal(k[r], arg);
    assert_true(k[r] >= 0 && k[r] < D && D <= 64);
    distinct[k[r]] = 1;
  }
  /* The fixture exercises more than one prefix length. */
  int nd = 0;
  for (int j = 0; j < D; j++)
    nd += distinct[j];
  assert_true(nd >= 5);
  fixture_free(fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hand_made_round_trip),
      cmocka_unit_test(test_rejects_malformed),
      cmocka_unit_test(test_truncated_and_corrupt_files),
      cmocka_unit_test(test_garbage_with_valid_checksum),
      cmocka_unit_test(test_open_errors),
      cmocka_unit_test(test_max_err),
      cmocka_unit_test(test_committed_files),
      cmocka_unit_test(test_dnn_names_and_shapes),
      cmocka_unit_test(test_lr_closed_form),
      cmocka_unit_test(test_fm_closed_form),
      cmocka_unit_test(test_dnn_forward_by_hand),
      cmocka_unit_test(test_amtl_mask),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
