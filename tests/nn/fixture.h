/*
 * fixture: reads the PyTorch reference fixtures (tests/nn/fixtures/<model>.bin)
 * that the C ops and models are checked against (STYLE.md rule 7).
 *
 * A fixture file is a list of named tensors written once by
 * tests/nn/make_fixtures.py and committed; tests/nn/README.md is the
 * contract (file layout, tensor names per model, model definitions,
 * tolerances). Layout, all little-endian:
 *
 *   magic    8 bytes  "MPSFIXT\0"
 *   version  u32      FIXTURE_VERSION
 *   count    u32      number of tensors
 *   count times:
 *     name_len u16    1..FIXTURE_MAX_NAME
 *     name     bytes  printable ASCII, no NUL, unique in the file
 *     dtype    u8     enum fixture_dtype
 *     ndim     u8     0..FIXTURE_MAX_DIMS (0 = a scalar)
 *     dims     u32 x ndim
 *     data     numel x element size, row-major
 *   checksum u64      FNV-1a 64 of every byte before it
 *
 * The reader trusts no byte: a wrong magic, another version, a truncated or
 * corrupt file, an absurd length or a duplicate name gives NULL and a
 * message, never a crash or a huge allocation.
 *
 * This is test support, not part of maskps: it lives in tests/nn as the
 * static library maskps_fixture.
 */
#ifndef MASKPS_TESTS_FIXTURE_H
#define MASKPS_TESTS_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#define FIXTURE_VERSION 1
#define FIXTURE_MAX_DIMS 8
#define FIXTURE_MAX_NAME 255

enum fixture_dtype {
  FIXTURE_F32 = 1, /* float32: inputs, parameters, outputs, gradients */
  FIXTURE_I32 = 2, /* int32: indices (AMTL's argmax) */
  FIXTURE_U8 = 3,  /* bytes: UTF-8 text (meta/config JSON, name lists) */
};

struct fixture_shape {
  int ndim;                        /* 0 for a scalar */
  uint32_t dims[FIXTURE_MAX_DIMS]; /* dims[0..ndim) */
  size_t numel;                    /* product of dims; 1 for a scalar */
};

struct fixture_tensor {
  const char *name;           /* NUL-terminated */
  enum fixture_dtype dtype;   /* element type of data */
  struct fixture_shape shape; /* as stored */
  void *data;                 /* numel elements, aligned for the dtype;
                                 U8 data has an extra NUL after numel bytes */
};

struct fixture;

/* Parses a fixture held in memory (borrowed; copied, so buf may be freed
 * afterwards). Returns NULL with a message in err on any malformation.
 * Caller owns the result; free with fixture_free(). */
struct fixture *fixture_parse(const void *buf, size_t len, char *err,
                              size_t errlen);

/* Reads and parses the file at path. Returns NULL with err naming the path
 * and the fault. Caller owns the result; free with fixture_free(). */
struct fixture *fixture_open(const char *path, char *err, size_t errlen);

/* fixture_open on $MASKPS_SOURCE_DIR/tests/nn/fixtures/<model>.bin, the
 * place CTest points tests at. NULL with err when the variable is unset. */
struct fixture *fixture_open_named(const char *model, char *err, size_t errlen);

/* Frees fx and every tensor it holds; NULL is fine. */
void fixture_free(struct fixture *fx);

/* Number of tensors, and the i-th in file order (NULL past the end). */
size_t fixture_count(const struct fixture *fx);
const struct fixture_tensor *fixture_at(const struct fixture *fx, size_t i);

/* The tensor with this exact name, or NULL. Borrowed from fx. */
const struct fixture_tensor *fixture_find(const struct fixture *fx,
                                          const char *name);

/* The float32 tensor's values, or NULL if there is no such name or it is
 * not float32. shape (may be NULL) receives its shape. The array belongs to
 * fx and lives until fixture_free; it is each tensor's own copy, so a test
 * may modify it (e.g. perturb a parameter for a finite difference). */
float *fixture_get(const struct fixture *fx, const char *name,
                   struct fixture_shape *shape);

/* The same for int32 tensors. */
const int32_t *fixture_get_i32(const struct fixture *fx, const char *name,
                               struct fixture_shape *shape);

/* A U8 tensor as a NUL-terminated string (text such as meta/config), or
 * NULL. Borrowed from fx. */
const char *fixture_text(const struct fixture *fx, const char *name);

/* The comparison metric every fixture tolerance is stated in:
 * max_i |got_i - want_i| / max_i |want_i| (the plain max absolute
 * difference when want is all zero, 0 when n is 0); NaN anywhere in got
 * gives +inf. worst (may be NULL) receives the index of the largest
 * difference. */
double fixture_max_err(const float *got, const float *want, size_t n,
                       size_t *worst);

#endif
