/* params: the flat dense parameter buffer, its initialisers and the dense
 * optimizers. */
#include "worker/nn/params.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/keys.h"

#define VIEW_ALIGN 16 /* floats: each view starts on a 64-byte boundary */

struct params *params_new(void) { return xcalloc(1, sizeof(struct params)); }

void params_free(struct params *p) {
  if (!p)
    return;
  free(p->views);
  free(p->values);
  free(p->grads);
  free(p->adam);
  free(p);
}

static int add(struct params *p, const char *name, int count, int rows,
               int cols, enum params_init init, float scale, bool state) {
  CHECK(!p->values, "params_add(\"%s\") after params_alloc", name);
  CHECK(name && strlen(name) >= 1 && strlen(name) <= PARAMS_NAME_MAX,
        "bad tensor name");
  CHECK(params_find(p, name) < 0, "tensor \"%s\" registered twice", name);
  CHECK(count >= 1 && rows >= 1 && cols >= 1, "\"%s\": shape (%d,%d,%d)", name,
        count, rows, cols);
  CHECK(init >= PARAMS_ZEROS && init <= PARAMS_XAVIER_UNIFORM,
        "\"%s\": init %d", name, (int)init);
  CHECK(rows > 1 || (init != PARAMS_XAVIER_NORMAL &&
                     init != PARAMS_XAVIER_UNIFORM),
        "\"%s\": Xavier needs a matrix, got a vector", name);
  if (p->count == p->cap) {
    p->cap = p->cap ? 2 * p->cap : 16;
    p->views = xrealloc(p->views, sizeof(*p->views) * p->cap);
  }
  struct params_view *v = &p->views[p->count];
  memset(v, 0, sizeof(*v));
  strcpy(v->name, name);
  v->count = count;
  v->rows = rows;
  v->cols = cols;
  v->n = (size_t)count * rows * cols;
  v->off = p->len;
  v->init = init;
  v->scale = scale;
  v->state = state;
  p->len += (v->n + VIEW_ALIGN - 1) / VIEW_ALIGN * VIEW_ALIGN;
  return p->count++;
}

int params_add(struct params *p, const char *name, int count, int rows,
               int cols, enum params_init init, float scale) {
  return add(p, name, count, rows, cols, init, scale, false);
}

int params_add_state(struct params *p, const char *name, int count, int rows,
                     int cols, enum params_init init, float scale) {
  return add(p, name, count, rows, cols, init, scale, true);
}

/* FNV-1a of the name: the per-tensor random stream. */
static uint64_t name_hash(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
  return h;
}

/* Uniform in (0, 1], 53 bits, from a counter. */
static double u01(uint64_t stream, uint64_t i) {
  return ((double)(keys_mix64(stream + i) >> 11) + 1.0) * 0x1p-53;
}

/* Standard normal by Box-Muller from the counters 2i, 2i+1. */
static double normal(uint64_t stream, uint64_t i) {
  double u1 = u01(stream, 2 * i), u2 = u01(stream, 2 * i + 1);
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static void init_view(const struct params_view *v, float *w, uint64_t seed) {
  uint64_t stream = keys_mix64(seed ^ name_hash(v->name));
  double fan = (double)v->rows + v->cols; // fan_out + fan_in
  for (size_t i = 0; i < v->n; i++) {
    double x = 0.0;
    switch (v->init) {
    case PARAMS_ZEROS:
      x = 0.0;
      break;
    case PARAMS_ONES:
      x = 1.0;
      break;
    case PARAMS_CONST:
      x = v->scale;
      break;
    case PARAMS_NORMAL:
      x = v->scale * normal(stream, i);
      break;
    case PARAMS_XAVIER_NORMAL:
      x = v->scale * sqrt(2.0 / fan) * normal(stream, i);
      break;
    case PARAMS_XAVIER_UNIFORM:
      x = v->scale * sqrt(6.0 / fan) * (2.0 * u01(stream, i) - 1.0);
      break;
    }
    w[i] = (float)x;
  }
}

void params_alloc(struct params *p, uint64_t seed) {
  CHECK(!p->values, "params_alloc called twice");
  size_t n = p->len ? p->len : 1;
  p->values = xaligned(sizeof(float) * n);
  p->grads = xaligned(sizeof(float) * n);
  p->adam = xaligned(sizeof(float) * 2 * n);
  memset(p->values, 0, sizeof(float) * n);
  memset(p->grads, 0, sizeof(float) * n);
  memset(p->adam, 0, sizeof(float) * 2 * n);
  p->step = 0;
  params_init_values(p, seed);
}

void params_init_values(struct params *p, uint64_t seed) {
  CHECK(p->values, "params_init_values before params_alloc");
  for (int i = 0; i < p->count; i++)
    init_view(&p->views[i], p->values + p->views[i].off, seed);
}

int params_find(const struct params *p, const char *name) {
  for (int i = 0; i < p->count; i++)
    if (strcmp(p->views[i].name, name) == 0)
      return i;
  return -1;
}

const struct params_view *params_view(const struct params *p, int id) {
  CHECK(id >= 0 && id < p->count, "id=%d count=%d", id, p->count);
  return &p->views[id];
}

float *params_value(const struct params *p, int id) {
  CHECK(p->values, "params_value before params_alloc");
  return p->values + params_view(p, id)->off;
}

float *params_grad(const struct params *p, int id) {
  CHECK(p->grads, "params_grad before params_alloc");
  return p->grads + params_view(p, id)->off;
}

void params_zero_grad(struct params *p) {
  CHECK(p->grads, "params_zero_grad before params_alloc");
  memset(p->grads, 0, sizeof(float) * p->len);
}

double params_clip_grad_norm(struct params *p, double max_norm) {
  CHECK(p->grads, "params_clip_grad_norm before params_alloc");
  double ss = 0.0;
  for (int k = 0; k < p->count; k++) {
    const struct params_view *v = &p->views[k];
    if (v->state)
      continue;
    const float *g = p->grads + v->off;
    for (size_t i = 0; i < v->n; i++)
      ss += (double)g[i] * g[i];
  }
  double norm = sqrt(ss);
  if (max_norm <= 0.0 || !isfinite(norm))
    return norm;
  double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0)
    for (int k = 0; k < p->count; k++) {
      const struct params_view *v = &p->views[k];
      if (v->state)
        continue;
      float *g = p->grads + v->off;
      for (size_t i = 0; i < v->n; i++)
        g[i] = (float)(g[i] * coef);
    }
  return norm;
}

struct params_adam params_adam_default(float lr) {
  return (struct params_adam){
      .lr = lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
      .weight_decay = 0.0f};
}

void params_adam_kernel(float *w, const float *g, float *m, float *v, size_t n,
                        uint64_t t, const struct params_adam *cfg) {
  CHECK(t >= 1, "Adam step t=%llu, must start at 1", (unsigned long long)t);
  float b1 = cfg->beta1, b2 = cfg->beta2, wd = cfg->weight_decay;
  // bias corrections in double: 1 - b^t loses digits in float for small t
  double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
  float step = (float)(cfg->lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
  for (size_t i = 0; i < n; i++) {
    float gi = g[i] + wd * w[i];
    m[i] = b1 * m[i] + (1.0f - b1) * gi;
    v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
    w[i] -= step * m[i] / (sqrtf(v[i]) * rbc2 + cfg->eps);
  }
}

void params_adam_step(struct params *p, const struct params_adam *cfg) {
  CHECK(p->values, "params_adam_step before params_alloc");
  p->step++;
  for (int k = 0; k < p->count; k++) {
    const struct params_view *v = &p->views[k];
    if (v->state)
      continue;
    params_adam_kernel(p->values + v->off, p->grads + v->off,
                       p->adam + v->off, p->adam + p->len + v->off, v->n,
                       p->step, cfg);
  }
}

void params_sgd_step(struct params *p, float lr) {
  CHECK(p->values, "params_sgd_step before params_alloc");
  for (int k = 0; k < p->count; k++) {
    const struct params_view *v = &p->views[k];
    if (v->state)
      continue;
    float *w = p->values + v->off;
    const float *g = p->grads + v->off;
    for (size_t i = 0; i < v->n; i++)
      w[i] -= lr * g[i];
  }
}
