#include "tests/nn/fixture.h"

#include "common/check.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char magic[8] = {'M', 'P', 'S', 'F', 'I', 'X', 'T', '\0'};

enum {
  HEADER_LEN = 16, /* magic, version, count */
  FOOTER_LEN = 8,  /* checksum */
  MIN_RECORD = 5,  /* name_len, a 1-byte name, dtype, ndim */
};

/* Larger files are refused before reading: the committed ones are KBs. */
#define MAX_FILE_BYTES ((size_t)1 << 30)

struct fixture {
  size_t n;                       /* tensors */
  struct fixture_tensor *tensors; /* [n], file order */
};

static uint16_t get16(const uint8_t *b) {
  return (uint16_t)(b[0] | b[1] << 8);
}
static uint32_t get32(const uint8_t *b) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | b[i];
  return v;
}
static uint64_t get64(const uint8_t *b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | b[i];
  return v;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

static size_t dtype_size(unsigned dtype) {
  switch (dtype) {
  case FIXTURE_F32:
  case FIXTURE_I32:
    return 4;
  case FIXTURE_U8:
    return 1;
  default:
    return 0;
  }
}

void fixture_free(struct fixture *fx) {
  if (!fx)
    return;
  for (size_t i = 0; i < fx->n; i++) {
    free((char *)fx->tensors[i].name);
    free(fx->tensors[i].data);
  }
  free(fx->tensors);
  free(fx);
}

/* Parses one record at b[*off] (the record area ends at end). Fills t and
 * advances *off; returns -1 with err set on any malformation. idx is the
 * record's position, for messages. */
static int parse_record(const uint8_t *b, size_t end, size_t *off, size_t idx,
                        struct fixture_tensor *t, char *err, size_t errlen) {
  size_t o = *off;
  if (end - o < 2) {
    snprintf(err, errlen, "tensor %zu: truncated before its name length", idx);
    return -1;
  }
  size_t nlen = get16(b + o);
  o += 2;
  if (nlen == 0 || nlen > FIXTURE_MAX_NAME) {
    snprintf(err, errlen, "tensor %zu: name length %zu is not in 1..%d", idx,
             nlen, FIXTURE_MAX_NAME);
    return -1;
  }
  if (end - o < nlen + 2) {
    snprintf(err, errlen, "tensor %zu: truncated in its name", idx);
    return -1;
  }
  for (size_t i = 0; i < nlen; i++)
    if (b[o + i] < 0x21 || b[o + i] > 0x7e) {
      snprintf(err, errlen,
               "tensor %zu: name byte %zu is 0x%02x, not printable ASCII", idx,
               i, b[o + i]);
      return -1;
    }
  char name[FIXTURE_MAX_NAME + 1];
  memcpy(name, b + o, nlen);
  name[nlen] = '\0';
  o += nlen;
  unsigned dtype = b[o], ndim = b[o + 1];
  o += 2;
  size_t esize = dtype_size(dtype);
  if (!esize) {
    snprintf(err, errlen, "tensor '%s': unknown dtype %u", name, dtype);
    return -1;
  }
  if (ndim > FIXTURE_MAX_DIMS) {
    snprintf(err, errlen, "tensor '%s': %u dims exceed %d", name, ndim,
             FIXTURE_MAX_DIMS);
    return -1;
  }
  if (end - o < (size_t)4 * ndim) {
    snprintf(err, errlen, "tensor '%s': truncated in its dims", name);
    return -1;
  }
  struct fixture_shape shape = {.ndim = (int)ndim, .numel = 1};
  /* The data must fit in what is left, so bounding numel by the remaining
   * bytes at every step also rules out overflow. */
  size_t room = (end - o - (size_t)4 * ndim) / esize;
  for (unsigned i = 0; i < ndim; i++) {
    shape.dims[i] = get32(b + o + (size_t)4 * i);
    if (shape.dims[i] && shape.numel > room / shape.dims[i]) {
      snprintf(err, errlen,
               "tensor '%s': dims say more data than the %zu bytes left "
               "(truncated file?)",
               name, end - o - (size_t)4 * ndim);
      return -1;
    }
    shape.numel *= shape.dims[i];
  }
  o += (size_t)4 * ndim;
  size_t nbytes = shape.numel * esize;
  if (end - o < nbytes) { /* only for ndim 0: numel 1 */
    snprintf(err, errlen, "tensor '%s': truncated in its data", name);
    return -1;
  }
  /* +1: room for the NUL after text, and never a 0-byte request. */
  uint8_t *data = xmalloc(nbytes + 1);
  if (dtype == FIXTURE_U8) {
    memcpy(data, b + o, nbytes);
  } else {
    for (size_t i = 0; i < shape.numel; i++) {
      uint32_t v = get32(b + o + 4 * i);
      memcpy(data + 4 * i, &v, 4);
    }
  }
  data[nbytes] = 0;
  t->name = xstrdup(name);
  t->dtype = (enum fixture_dtype)dtype;
  t->shape = shape;
  t->data = data;
  *off = o + nbytes;
  return 0;
}

struct fixture *fixture_parse(const void *buf, size_t len, char *err,
                              size_t errlen) {
  const uint8_t *b = buf;
  if (len < HEADER_LEN + FOOTER_LEN) {
    snprintf(err, errlen, "%zu bytes is shorter than an empty fixture (%d)",
             len, HEADER_LEN + FOOTER_LEN);
    return NULL;
  }
  if (memcmp(b, magic, sizeof(magic)) != 0) {
    snprintf(err, errlen, "not a maskps fixture (bad magic)");
    return NULL;
  }
  uint32_t version = get32(b + 8);
  if (version != FIXTURE_VERSION) {
    snprintf(err, errlen,
             "fixture format version %u is not the one this build reads (%d); "
             "regenerate with tests/nn/make_fixtures.py",
             version, FIXTURE_VERSION);
    return NULL;
  }
  uint32_t count = get32(b + 12);
  size_t end = len - FOOTER_LEN;
  if (count > (end - HEADER_LEN) / MIN_RECORD) {
    snprintf(err, errlen, "%u tensors cannot fit in %zu bytes (truncated?)",
             count, len);
    return NULL;
  }
  struct fixture *fx = xcalloc(1, sizeof(*fx));
  fx->tensors = xcalloc(count ? count : 1, sizeof(*fx->tensors));
  size_t off = HEADER_LEN;
  for (size_t i = 0; i < count; i++) {
    if (parse_record(b, end, &off, i, &fx->tensors[i], err, errlen) < 0)
      goto fail;
    fx->n = i + 1;
    for (size_t j = 0; j < i; j++)
      if (strcmp(fx->tensors[j].name, fx->tensors[i].name) == 0) {
        snprintf(err, errlen, "tensor name '%s' appears twice",
                 fx->tensors[i].name);
        goto fail;
      }
  }
  if (off != end) {
    snprintf(err, errlen, "%zu bytes after the last of %u tensors", end - off,
             count);
    goto fail;
  }
  uint64_t want = get64(b + end), got = fnv1a64(b, end);
  if (want != got) {
    snprintf(err, errlen,
             "checksum mismatch (stored %016llx, computed %016llx): the file "
             "is corrupt",
             (unsigned long long)want, (unsigned long long)got);
    goto fail;
  }
  return fx;
fail:
  fixture_free(fx);
  return NULL;
}

struct fixture *fixture_open(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 16, len = 0;
  uint8_t *buf = xmalloc(cap);
  for (;;) {
    if (len == cap) {
      if (cap >= MAX_FILE_BYTES) {
        snprintf(err, errlen, "%s: larger than %zu bytes, not a fixture", path,
                 MAX_FILE_BYTES);
        free(buf);
        fclose(f);
        return NULL;
      }
      cap *= 2;
      buf = xrealloc(buf, cap);
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0)
      break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    snprintf(err, errlen, "%s: read error", path);
    free(buf);
    return NULL;
  }
  char msg[256];
  struct fixture *fx = fixture_parse(buf, len, msg, sizeof(msg));
  free(buf);
  if (!fx)
    snprintf(err, errlen, "%s: %s", path, msg);
  return fx;
}

struct fixture *fixture_open_named(const char *model, char *err,
                                   size_t errlen) {
  const char *root = getenv("MASKPS_SOURCE_DIR");
  if (!root || !*root) {
    snprintf(err, errlen,
             "MASKPS_SOURCE_DIR is not set: run the test through ctest, or "
             "set it to the repository root");
    return NULL;
  }
  char path[4096];
  int n =
      snprintf(path, sizeof(path), "%s/tests/nn/fixtures/%s.bin", root, model);
  if (n < 0 || (size_t)n >= sizeof(path)) {
    snprintf(err, errlen, "fixture path for '%s' is too long", model);
    return NULL;
  }
  return fixture_open(path, err, errlen);
}

size_t fixture_count(const struct fixture *fx) {
  return fx->n;
}

const struct fixture_tensor *fixture_at(const struct fixture *fx, size_t i) {
  return i < fx->n ? &fx->tensors[i] : NULL;
}

const struct fixture_tensor *fixture_find(const struct fixture *fx,
                                          const char *name) {
  for (size_t i = 0; i < fx->n; i++)
    if (strcmp(fx->tensors[i].name, name) == 0)
      return &fx->tensors[i];
  return NULL;
}

static void *get_typed(const struct fixture *fx, const char *name,
                       enum fixture_dtype dtype, struct fixture_shape *shape) {
  const struct fixture_tensor *t = fixture_find(fx, name);
  if (!t || t->dtype != dtype)
    return NULL;
  if (shape)
    *shape = t->shape;
  return t->data;
}

float *fixture_get(const struct fixture *fx, const char *name,
                   struct fixture_shape *shape) {
  return get_typed(fx, name, FIXTURE_F32, shape);
}

const int32_t *fixture_get_i32(const struct fixture *fx, const char *name,
                               struct fixture_shape *shape) {
  return get_typed(fx, name, FIXTURE_I32, shape);
}

const char *fixture_text(const struct fixture *fx, const char *name) {
  return get_typed(fx, name, FIXTURE_U8, NULL);
}

double fixture_max_err(const float *got, const float *want, size_t n,
                       size_t *worst) {
  double scale = 0, d = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++)
    scale = fmax(scale, fabs((double)want[i]));
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)got[i] - (double)want[i]);
    if (isnan(e))
      e = INFINITY;
    if (e > d) {
      d = e;
      at = i;
    }
  }
  if (worst)
    *worst = at;
  return scale > 0 ? d / scale : d;
}
