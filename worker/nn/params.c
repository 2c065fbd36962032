/* params: the flat dense parameter buffer, its initialisers and the dense
 * optimizers. */
#include "worker/nn/params.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/keys.h"

#define VIEW_ALIGN 16 /* floats: each view starts on a 64-byte boundary */

struct params *params_new(void) {
  return xcalloc(1, sizeof(struct params));
}

void params_free(struct params *p) {
  if (!p)
    return;
  free(p->views);
  if (!p->shared)
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

size_t params_alloc_shared(struct params *p, const struct params *owner) {
  CHECK(!p->values, "params_alloc_shared on an allocated set");
  CHECK(owner->values, "params_alloc_shared: the owner is not allocated");
  CHECK(p->count >= 1, "params_alloc_shared: an empty replica");
  int first = params_find(owner, p->views[0].name);
  CHECK(first >= 0 && first + p->count <= owner->count,
        "replica tensor %s is not in the owner", p->views[0].name);
  size_t base = owner->views[first].off - p->views[0].off;
  for (int i = 0; i < p->count; i++) {
    const struct params_view *a = &p->views[i], *b = &owner->views[first + i];
    CHECK(!strcmp(a->name, b->name) && a->off + base == b->off && a->n == b->n,
          "replica tensor %d (%s) differs from the owner's (%s)", i, a->name,
          b->name);
  }
  CHECK(base + p->len <= owner->len, "replica overruns the owner");
  size_t n = p->len ? p->len : 1;
  p->values = owner->values + base;
  p->shared = true;
  p->grads = xaligned(sizeof(float) * n);
  memset(p->grads, 0, sizeof(float) * n);
  p->adam = NULL;
  return base;
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
  return (struct params_adam){.lr = lr,
                              .beta1 = 0.9f,
                              .beta2 = 0.999f,
                              .eps = 1e-8f,
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
    params_adam_kernel(p->values + v->off, p->grads + v->off, p->adam + v->off,
                       p->adam + p->len + v->off, v->n, p->step, cfg);
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

/* ---- files ---- */

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "params files are written in host order: little-endian only");

static const char FILE_MAGIC[8] = "MPSDENS";
#define FILE_F_ADAM 1u

static uint64_t fnv1a(const uint8_t *b, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

/* A growable byte buffer for building the file in memory. */
struct wbuf {
  uint8_t *b;
  size_t n, cap;
};

static void put(struct wbuf *w, const void *src, size_t n) {
  if (w->n + n > w->cap) {
    w->cap = (w->n + n) * 2;
    w->b = xrealloc(w->b, w->cap);
  }
  memcpy(w->b + w->n, src, n);
  w->n += n;
}

static void put_u16(struct wbuf *w, uint16_t v) {
  put(w, &v, 2);
}
static void put_u32(struct wbuf *w, uint32_t v) {
  put(w, &v, 4);
}
static void put_u64(struct wbuf *w, uint64_t v) {
  put(w, &v, 8);
}

int params_save(const struct params *p, const char *path, bool with_state,
                char *err, size_t errlen) {
  CHECK(p->values, "params_save before params_alloc");
  struct wbuf w = {0};
  put(&w, FILE_MAGIC, 8);
  put_u32(&w, PARAMS_FILE_VERSION);
  put_u32(&w, (uint32_t)p->count);
  put_u32(&w, with_state ? FILE_F_ADAM : 0);
  put_u64(&w, p->step);
  for (int k = 0; k < p->count; k++) {
    const struct params_view *v = &p->views[k];
    put_u16(&w, (uint16_t)strlen(v->name));
    put(&w, v->name, strlen(v->name));
    put_u32(&w, (uint32_t)v->count);
    put_u32(&w, (uint32_t)v->rows);
    put_u32(&w, (uint32_t)v->cols);
    put(&w, p->values + v->off, sizeof(float) * v->n);
    if (with_state) {
      put(&w, p->adam + v->off, sizeof(float) * v->n);
      put(&w, p->adam + p->len + v->off, sizeof(float) * v->n);
    }
  }
  put_u64(&w, fnv1a(w.b, w.n));

  size_t tl = strlen(path) + 5;
  char *tmp = xmalloc(tl);
  snprintf(tmp, tl, "%s.tmp", path);
  int rc = -1;
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
  } else {
    size_t wr = fwrite(w.b, 1, w.n, f);
    int e = errno;
    if (fclose(f) != 0 || wr != w.n) {
      snprintf(err, errlen, "cannot write %s: %s", tmp,
               strerror(wr != w.n ? e : errno));
      remove(tmp);
    } else if (rename(tmp, path) != 0) {
      snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path,
               strerror(errno));
      remove(tmp);
    } else {
      rc = 0;
    }
  }
  free(tmp);
  free(w.b);
  return rc;
}

/* A bounds-checked reader over the file's bytes. */
struct rbuf {
  const uint8_t *b;
  size_t n, at;
  bool bad; /* a read ran past the end */
};

static const void *take(struct rbuf *r, size_t n) {
  if (r->bad || n > r->n - r->at) {
    r->bad = true;
    return NULL;
  }
  const void *p = r->b + r->at;
  r->at += n;
  return p;
}

static uint64_t take_uint(struct rbuf *r, size_t n) {
  const void *p = take(r, n);
  uint64_t v = 0;
  if (p)
    memcpy(&v, p, n); // little-endian host: the low bytes
  return v;
}

/* Appends to the report, keeping it NUL-terminated and truncated. */
static void rep(char *report, size_t replen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void rep(char *report, size_t replen, const char *fmt, ...) {
  if (!report || replen == 0)
    return;
  size_t used = strlen(report);
  if (used + 1 >= replen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(report + used, replen - used, fmt, ap);
  va_end(ap);
}

static int load_bytes(struct params *p, const uint8_t *buf, size_t len,
                      const char *path, bool with_state, char *report,
                      size_t replen, char *err, size_t errlen) {
  if (len < 8 + 4 * 3 + 8 + 8 || memcmp(buf, FILE_MAGIC, 8) != 0) {
    snprintf(err, errlen, "%s is not a maskps params file (%s)", path,
             len < 8 ? "too short" : "wrong magic");
    return -1;
  }
  struct rbuf r = {.b = buf, .n = len - 8, .at = 8}; // checksum excluded
  uint32_t version = (uint32_t)take_uint(&r, 4);
  if (version != PARAMS_FILE_VERSION) {
    snprintf(err, errlen,
             "%s: params file version %u, this build reads version %u", path,
             version, PARAMS_FILE_VERSION);
    return -1;
  }
  uint64_t sum;
  memcpy(&sum, buf + len - 8, 8);
  if (sum != fnv1a(buf, len - 8)) {
    snprintf(err, errlen, "%s: checksum mismatch (truncated or corrupt)", path);
    return -1;
  }
  uint32_t count = (uint32_t)take_uint(&r, 4);
  uint32_t flags = (uint32_t)take_uint(&r, 4);
  uint64_t step = take_uint(&r, 8);
  bool has_adam = flags & FILE_F_ADAM;
  /* Pass 1 validates the whole file, pass 2 copies: a bad file changes
   * nothing in p. */
  char *seen = xcalloc((size_t)p->count + 1, 1); // 1 loaded, 2 shape differs
  int loaded = 0;
  for (int pass = 0; pass < 2; pass++) {
    r.at = 8 + 4 * 3 + 8;
    for (uint32_t i = 0; i < count; i++) {
      uint16_t nl = (uint16_t)take_uint(&r, 2);
      const char *name = take(&r, nl);
      uint32_t c = (uint32_t)take_uint(&r, 4), rw = (uint32_t)take_uint(&r, 4),
               cl = (uint32_t)take_uint(&r, 4);
      // c*rw <= 2^32 checked first, so n < 2^64
      uint64_t n = (uint64_t)c * rw * cl;
      if (r.bad || nl == 0 || nl > PARAMS_NAME_MAX || c == 0 || rw == 0 ||
          cl == 0 || (uint64_t)c * rw > UINT32_MAX || n > (r.n - r.at) / 4) {
        snprintf(err, errlen, "%s: entry %u of %u is malformed or truncated",
                 path, i, count);
        free(seen);
        return -1;
      }
      const float *vals = take(&r, 4 * n);
      const float *m = has_adam ? take(&r, 4 * n) : NULL;
      const float *v = has_adam ? take(&r, 4 * n) : NULL;
      if (r.bad) {
        snprintf(err, errlen, "%s: entry %u of %u is truncated", path, i,
                 count);
        free(seen);
        return -1;
      }
      if (pass == 0)
        continue;
      char nm[PARAMS_NAME_MAX + 1];
      memcpy(nm, name, nl);
      nm[nl] = 0;
      int id = params_find(p, nm);
      if (id < 0) {
        rep(report, replen, "; not in model: %s", nm);
        continue;
      }
      struct params_view *pv = &p->views[id];
      if ((int)c != pv->count || (int)rw != pv->rows || (int)cl != pv->cols) {
        rep(report, replen,
            "; shape differs: %s (file %ux%ux%u, model %dx%dx%d)", nm, c, rw,
            cl, pv->count, pv->rows, pv->cols);
        seen[id] = 2; // in the file, but not loaded
        continue;
      }
      memcpy(p->values + pv->off, vals, 4 * n);
      if (with_state && has_adam) {
        memcpy(p->adam + pv->off, m, 4 * n);
        memcpy(p->adam + p->len + pv->off, v, 4 * n);
      }
      seen[id] = 1;
      loaded++;
    }
    if (r.at != r.n) {
      snprintf(err, errlen, "%s: %zu unexpected bytes after the last entry",
               path, r.n - r.at);
      free(seen);
      return -1;
    }
  }
  for (int k = 0; k < p->count; k++)
    if (!seen[k])
      rep(report, replen, "; not in file: %s", p->views[k].name);
  if (with_state && has_adam)
    p->step = step;
  free(seen);
  return loaded;
}

int params_load(struct params *p, const char *path, bool with_state,
                char *report, size_t replen, char *err, size_t errlen) {
  CHECK(p->values, "params_load before params_alloc");
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return -1;
  }
  uint8_t *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n == cap) {
      cap = cap ? 2 * cap : 1 << 16;
      buf = xrealloc(buf, cap);
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0)
      break;
  }
  int rd = ferror(f);
  fclose(f);
  if (rd) {
    snprintf(err, errlen, "cannot read %s", path);
    free(buf);
    return -1;
  }
  char body[1024] = "";
  int loaded =
      load_bytes(p, buf, n, path, with_state, body, sizeof(body), err, errlen);
  free(buf);
  if (loaded >= 0 && report && replen)
    snprintf(report, replen, "loaded %d of %d%s", loaded, p->count, body);
  return loaded;
}
