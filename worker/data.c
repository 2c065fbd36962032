#include "worker/data.h"

#include "common/keys.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses a whole column as a decimal integer; -1 if it is not one. */
static int parse_int(const char *s, size_t len, long long *out) {
  char buf[32];
  if (len == 0 || len >= sizeof(buf))
    return -1;
  memcpy(buf, s, len);
  buf[len] = 0;
  char *end;
  errno = 0;
  long long v = strtoll(buf, &end, 10);
  if (errno || *end || buf[0] == ' ' || buf[0] == '+')
    return -1;
  *out = v;
  return 0;
}

int data_parse_criteo(const char *line, size_t len, struct data_example *ex,
                      char *why, size_t whylen) {
  if (len && line[len - 1] == '\n')
    len--;
  if (len && line[len - 1] == '\r')
    len--;
  size_t ncol = 1;
  for (size_t i = 0; i < len; i++)
    ncol += line[i] == '\t';
  if (ncol != 1 + DATA_CRITEO_FIELDS) {
    snprintf(why, whylen, "%zu columns (expected 40: label, I1..I13, C1..C26)",
             ncol);
    return -1;
  }
  const char *col[1 + DATA_CRITEO_FIELDS];
  size_t clen[1 + DATA_CRITEO_FIELDS];
  for (size_t c = 0, i = 0, start = 0; i <= len; i++)
    if (i == len || line[i] == '\t') {
      col[c] = line + start;
      clen[c++] = i - start;
      start = i + 1;
    }
  if (clen[0] != 1 || (col[0][0] != '0' && col[0][0] != '1')) {
    snprintf(why, whylen, "column 1 (label): '%.*s' is not 0 or 1",
             (int)(clen[0] < 16 ? clen[0] : 16), col[0]);
    return -1;
  }
  ex->label = (float)(col[0][0] - '0');
  ex->group = 0;
  ex->nkeys = DATA_CRITEO_FIELDS;
  for (uint32_t f = 0; f < DATA_CRITEO_NUMERIC; f++) {
    long long v = 0;
    const char *s = col[1 + f];
    if (clen[1 + f] && parse_int(s, clen[1 + f], &v) < 0) {
      snprintf(why, whylen, "column %u (I%u): '%.*s' is not an integer", f + 2,
               f + 1, (int)(clen[1 + f] < 24 ? clen[1 + f] : 24), s);
      return -1;
    }
    char tok[24];
    int n = snprintf(tok, sizeof(tok), "%lld",
                     (long long)keys_criteo_bucket((double)v));
    ex->keys[f] = keys_feature_id(f, tok, (size_t)n);
  }
  for (uint32_t c = 0; c < DATA_CRITEO_CATEGORICAL; c++) {
    uint32_t f = DATA_CRITEO_NUMERIC + c;
    ex->keys[f] = clen[1 + f] ? keys_feature_id(f, col[1 + f], clen[1 + f])
                              : keys_missing_id(f);
  }
  return 0;
}
