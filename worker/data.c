#include "worker/data.h"

#include "common/keys.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Strips a trailing "\n" or "\r\n". */
static size_t chomp(const char *line, size_t len) {
  if (len && line[len - 1] == '\n')
    len--;
  if (len && line[len - 1] == '\r')
    len--;
  return len;
}

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
  len = chomp(line, len);
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

int data_parse_libfm(const char *line, size_t len, uint32_t nfields,
                     uint32_t maxkeys, struct data_example *ex, char *why,
                     size_t whylen) {
  len = chomp(line, len);
  size_t i = 0;
  while (i < len && line[i] != ' ' && line[i] != '\t')
    i++;
  const char *lab = line;
  size_t lablen = i;
  if ((lablen == 1 && (lab[0] == '0' || lab[0] == '1')) ||
      (lablen == 2 && lab[0] == '+' && lab[1] == '1'))
    ex->label = lab[lablen - 1] == '1' ? 1.0f : 0.0f;
  else if (lablen == 2 && lab[0] == '-' && lab[1] == '1')
    ex->label = 0.0f;
  else {
    snprintf(why, whylen, "label '%.*s' is not 0/1 or -1/+1",
             (int)(lablen < 16 ? lablen : 16), lab);
    return -1;
  }
  ex->group = 0;
  uint32_t k = 0;
  while (i < len) {
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
      i++;
    if (i == len)
      break;
    size_t start = i, colon = 0;
    while (i < len && line[i] != ' ' && line[i] != '\t') {
      if (line[i] == ':' && !colon)
        colon = i;
      i++;
    }
    const char *tok = line + start;
    int toklen = (int)(i - start < 32 ? i - start : 32);
    if (!colon || colon == start) {
      snprintf(why, whylen, "feature %u: '%.*s' is not idx:value", k + 1,
               toklen, tok);
      return -1;
    }
    const char *val = line + colon + 1;
    size_t vallen = i - colon - 1;
    /* "1", "1.0", "1.00"... are the value one; anything else is refused. */
    int is_one = vallen >= 1 && val[0] == '1';
    for (size_t j = 1; is_one && j < vallen; j++)
      is_one = (j == 1 && val[j] == '.') || (j > 1 && val[j] == '0');
    if (!is_one) {
      snprintf(why, whylen,
               "feature %u: value '%.*s' is not 1 (only binary features are "
               "supported)", k + 1, (int)(vallen < 16 ? vallen : 16), val);
      return -1;
    }
    if (k == maxkeys) {
      snprintf(why, whylen, "more than %u features", maxkeys);
      return -1;
    }
    ex->keys[k] = keys_feature_id(k, tok, colon - start);
    k++;
  }
  if (nfields && k != nfields) {
    snprintf(why, whylen, "%u features (expected %u, as on the first line)", k,
             nfields);
    return -1;
  }
  if (k == 0) {
    snprintf(why, whylen, "no features");
    return -1;
  }
  ex->nkeys = k;
  return 0;
}
