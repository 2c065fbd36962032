/*
 * fuzz_lines: libFuzzer target for the data-line parsers (worker/data.h):
 * Criteo TSV, libFM with values, and CSV (the header compiled into a schema,
 * then data lines against it). Click logs come from outside: a line must
 * never crash the worker, whatever its bytes.
 *
 * The first input byte picks the parser; the rest is the text.
 *   0: data_parse_criteo on the text as one line;
 *   1: data_parse_libfm on it (any field count, values taken);
 *   2: CSV: the text's first line is the header, compiled with the first
 *      column as the label, the second (if any) as a value column, the third
 *      as a numeric column and the fourth as the group; every further line
 *      is a data line against that schema, delimiter ',' or '\t' by the
 *      selector's high bit.
 * Properties checked: a rejection always says why (a non-empty reason); an
 * accepted line has the field count its format promises, a label of 0 or 1
 * and, where values are taken, finite values.
 */
#include "worker/data.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXF 256

static void die(const char *what, const char *detail) {
  fprintf(stderr, "fuzz_lines: %s: %s\n", what, detail);
  abort();
}

/* After a parser returned rc for ex: the properties above. */
static void check(int rc, const struct data_example *ex, uint32_t nfields,
                  const char *why) {
  if (rc != 0) {
    if (!why[0])
      die("rejected without a reason", "(empty)");
    return;
  }
  if (nfields && ex->nkeys != nfields)
    die("accepted line with the wrong field count", "");
  if (ex->label != 0.0f && ex->label != 1.0f)
    die("accepted line with a label other than 0/1", "");
  if (ex->vals)
    for (uint32_t f = 0; f < ex->nkeys; f++)
      if (!isfinite(ex->vals[f]))
        die("accepted a non-finite value", "");
}

static void fuzz_csv(char *text, size_t len, char delim) {
  char *nl = memchr(text, '\n', len);
  size_t hlen = nl ? (size_t)(nl - text) : len;
  const char *col[MAXF];
  size_t clen[MAXF], ncols;
  char why[256] = "";
  if (data_csv_split(text, hlen, delim, col, clen, MAXF, &ncols, why,
                     sizeof(why))) {
    if (!why[0])
      die("header split rejected without a reason", "(empty)");
    return;
  }
  if (ncols > MAXF)
    return;
  /* NUL-terminated copies of the names (the split points into text) */
  char *names[MAXF];
  for (size_t c = 0; c < ncols; c++) {
    names[c] = malloc(clen[c] + 1);
    memcpy(names[c], col[c], clen[c]);
    names[c][clen[c]] = 0;
  }
  const char *value[1] = {ncols > 1 ? names[1] : ""};
  const char *numeric[1] = {ncols > 2 ? names[2] : ""};
  struct data_csv_spec spec = {
      .delim = delim,
      .label = ncols > 0 ? names[0] : "",
      .group = ncols > 3 ? names[3] : NULL,
      .value = value,
      .nvalue = ncols > 1,
      .numeric = numeric,
      .nnumeric = ncols > 2,
  };
  struct data_csv_schema *s = data_csv_schema_new(
      &spec, (const char *const *)names, ncols, why, sizeof(why));
  if (!s && !why[0])
    die("schema rejected without a reason", "(empty)");
  for (size_t c = 0; c < ncols; c++)
    free(names[c]);
  if (!s)
    return;
  uint64_t keys[MAXF];
  float vals[MAXF];
  char *p = nl ? nl + 1 : text + len, *end = text + len;
  while (p < end) {
    char *e = memchr(p, '\n', (size_t)(end - p));
    size_t n = e ? (size_t)(e - p) : (size_t)(end - p);
    struct data_example ex = {.keys = keys, .vals = vals};
    why[0] = 0;
    int rc = data_parse_csv(s, p, n, &ex, why, sizeof(why));
    check(rc, &ex, s->nfields, why);
    p += n + 1;
  }
  data_csv_schema_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t sel = data[0];
  size_t len = size - 1;
  /* an exact-size copy, so ASan sees any read past the line's end */
  char *text = malloc(len ? len : 1);
  memcpy(text, data + 1, len);
  uint64_t keys[MAXF];
  float vals[MAXF];
  struct data_example ex = {.keys = keys, .vals = vals};
  char why[256] = "";
  int rc;
  switch (sel % 3) {
  case 0:
    ex.vals = NULL;
    rc = data_parse_criteo(text, len, &ex, why, sizeof(why));
    check(rc, &ex, DATA_CRITEO_FIELDS, why);
    break;
  case 1:
    rc = data_parse_libfm(text, len, 0, MAXF, &ex, why, sizeof(why));
    check(rc, &ex, 0, why);
    break;
  default:
    fuzz_csv(text, len, sel & 0x80 ? '\t' : ',');
    break;
  }
  free(text);
  return 0;
}
