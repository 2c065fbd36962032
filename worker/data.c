#include "worker/data.h"

#include "common/check.h"
#include "common/keys.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* Parses a whole column as a finite decimal number. NULL, or what is wrong
 * ("is not a number", "is not a finite number"). Hex, "inf" and "nan"
 * (strtod would take them) and surrounding spaces are not numbers here. */
static const char *parse_number(const char *s, size_t len, double *out) {
  char buf[64];
  if (len == 0 || len >= sizeof(buf))
    return len ? "is not a number (too long)" : "is empty";
  memcpy(buf, s, len);
  buf[len] = 0;
  for (size_t i = 0; i < len; i++)
    if (!buf[i] || !strchr("0123456789+-.eE", buf[i])) {
      int nonfinite =
          !strcasecmp(buf + (buf[0] == '-' || buf[0] == '+'), "nan") ||
          !strncasecmp(buf + (buf[0] == '-' || buf[0] == '+'), "inf", 3);
      return nonfinite ? "is not a finite number" : "is not a number";
    }
  char *end;
  errno = 0;
  double v = strtod(buf, &end);
  if (*end || end == buf)
    return "is not a number";
  if (errno == ERANGE && fabs(v) > 1)
    return "is not a finite number (out of range)";
  if (!isfinite(v) || fabs(v) > FLT_MAX)
    return "is not a finite number (out of float range)";
  if (v != 0 && fabs(v) < FLT_TRUE_MIN)
    return "is too small for a float (it would read as 0)";
  *out = v;
  return NULL;
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
  ex->valued = false;
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
  bool valued = false;
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
    /* "1", "1.0", "1.00"... are the value one; anything else is refused
     * unless the caller takes values. */
    int is_one = vallen >= 1 && val[0] == '1';
    for (size_t j = 1; is_one && j < vallen; j++)
      is_one = (j == 1 && val[j] == '.') || (j > 1 && val[j] == '0');
    double v = 1;
    if (!is_one && !ex->vals) {
      snprintf(why, whylen,
               "feature %u: value '%.*s' is not 1 (only binary features are "
               "supported)",
               k + 1, (int)(vallen < 16 ? vallen : 16), val);
      return -1;
    }
    if (!is_one) {
      const char *what = parse_number(val, vallen, &v);
      if (what) {
        snprintf(why, whylen, "feature %u: value '%.*s' %s", k + 1,
                 (int)(vallen < 16 ? vallen : 16), val, what);
        return -1;
      }
    }
    if (k == maxkeys) {
      snprintf(why, whylen, "more than %u features", maxkeys);
      return -1;
    }
    ex->keys[k] = keys_feature_id(k, tok, colon - start);
    if (ex->vals)
      ex->vals[k] = (float)v;
    valued |= !is_one && (float)v != 1.0f;
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
  ex->valued = valued;
  return 0;
}

/* ---- CSV ---------------------------------------------------------------- */

/* The token of a value column's one row. */
static const char value_token[] = "#value";
/* The "field" a group id is hashed in: no feature field is this high. */
#define GROUP_FIELD UINT32_MAX

int data_csv_split(char *line, size_t len, char delim, const char **col,
                   size_t *clen, size_t maxcols, size_t *ncols, char *why,
                   size_t whylen) {
  len = chomp(line, len);
  size_t n = 0, i = 0;
  for (;;) {
    size_t start = i, end;
    if (i < len && line[i] == '"') {
      /* quoted: copy the text down over the opening quote, "" -> " */
      size_t w = i;
      i++;
      for (;;) {
        if (i == len) {
          snprintf(why, whylen,
                   "column %zu: unterminated quoted field (a line break "
                   "inside quotes is not supported)",
                   n + 1);
          return -1;
        }
        if (line[i] == '"') {
          if (i + 1 < len && line[i + 1] == '"') {
            line[w++] = '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        line[w++] = line[i++];
      }
      if (i < len && line[i] != delim) {
        snprintf(why, whylen, "column %zu: text after the closing quote",
                 n + 1);
        return -1;
      }
      end = w;
    } else {
      while (i < len && line[i] != delim) {
        if (line[i] == '"') {
          snprintf(why, whylen,
                   "column %zu: a double quote inside an unquoted field "
                   "(quote the whole field, RFC 4180)",
                   n + 1);
          return -1;
        }
        i++;
      }
      end = i;
    }
    if (n < maxcols) {
      col[n] = line + start;
      clen[n] = end - start;
    }
    n++;
    if (i == len)
      break;
    i++; /* the delimiter; a final one leaves an empty last column */
  }
  *ncols = n;
  return 0;
}

static const char *role_key(enum data_csv_role r) {
  switch (r) {
  case DATA_CSV_NUMERIC:
    return "data.csv_numeric";
  case DATA_CSV_VALUE:
    return "data.csv_value";
  case DATA_CSV_LABEL:
    return "data.csv_label";
  case DATA_CSV_GROUP:
    return "data.csv_group";
  case DATA_CSV_IGNORE:
    return "data.csv_ignore";
  case DATA_CSV_CATEGORICAL:
    break;
  }
  return "categorical";
}

/* Appends to why at *pos, never past whylen. */
static void add_why(char *why, size_t whylen, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add_why(char *why, size_t whylen, size_t *pos, const char *fmt,
                    ...) {
  if (*pos >= whylen)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(why + *pos, whylen - *pos, fmt, ap);
  va_end(ap);
  if (n > 0)
    *pos = *pos + (size_t)n < whylen ? *pos + (size_t)n : whylen;
}

/* " (columns: a, b, c)" with the first few names. */
static void add_columns(char *why, size_t whylen, size_t *pos,
                        const char *const *names, size_t n) {
  add_why(why, whylen, pos, " (columns:");
  for (size_t c = 0; c < n && c < 16; c++)
    add_why(why, whylen, pos, "%s '%.40s'", c ? "," : "", names[c]);
  if (n > 16)
    add_why(why, whylen, pos, ", ... %zu in all", n);
  add_why(why, whylen, pos, ")");
}

void data_csv_schema_free(struct data_csv_schema *s) {
  if (!s)
    return;
  for (uint32_t c = 0; c < s->ncols; c++)
    free(s->names[c]);
  free(s->names);
  free(s->role);
  free(s->field);
  free(s);
}

struct data_csv_schema *data_csv_schema_new(const struct data_csv_spec *spec,
                                            const char *const *names,
                                            size_t nnames, char *why,
                                            size_t whylen) {
  CHECK(spec->delim != '"' && spec->delim != '\n' && spec->delim != '\r',
        "delimiter %d", spec->delim);
  size_t pos = 0;
  why[0] = 0;
  if (nnames == 0 || nnames > DATA_CSV_MAX_COLUMNS) {
    snprintf(why, whylen, "%zu columns (1 to %d are supported)", nnames,
             DATA_CSV_MAX_COLUMNS);
    return NULL;
  }
  for (size_t c = 0; c < nnames; c++) {
    if (!names[c][0]) { // e.g. pandas' unnamed index column: refuse, not
      // train on a feature nobody named (and every row's own key)
      snprintf(why, whylen,
               "column %zu has no name (name it in the header, and list it "
               "in data.csv_ignore if it is not a feature)",
               c + 1);
      return NULL;
    }
    for (size_t d = 0; d < c; d++)
      if (!strcmp(names[c], names[d])) {
        snprintf(why, whylen,
                 "column '%.40s' appears twice (columns %zu and "
                 "%zu)",
                 names[c], d + 1, c + 1);
        return NULL;
      }
  }
  struct data_csv_schema *s = xcalloc(1, sizeof(*s));
  s->delim = spec->delim;
  s->ncols = (uint32_t)nnames;
  s->names = xcalloc(nnames, sizeof(char *));
  s->role = xcalloc(nnames, sizeof(*s->role));
  s->field = xcalloc(nnames, sizeof(uint32_t));
  for (size_t c = 0; c < nnames; c++)
    s->names[c] = xstrdup(names[c]);
  const char *label = spec->label ? spec->label : "";
  const char *group = spec->group ? spec->group : "";
  const struct {
    enum data_csv_role role;
    const char *const *v;
    size_t n;
  } lists[] = {
      {DATA_CSV_LABEL, &label, 1},
      {DATA_CSV_GROUP, &group, group[0] ? 1 : 0},
      {DATA_CSV_NUMERIC, spec->numeric, spec->nnumeric},
      {DATA_CSV_VALUE, spec->value, spec->nvalue},
      {DATA_CSV_IGNORE, spec->ignore, spec->nignore},
  };
  if (!label[0]) {
    snprintf(why, whylen, "data.csv_label: no label column named");
    goto fail;
  }
  for (size_t l = 0; l < ARRAY_LEN(lists); l++) {
    size_t unknown = 0;
    for (size_t i = 0; i < lists[l].n; i++) {
      size_t c = 0;
      while (c < nnames && strcmp(names[c], lists[l].v[i]))
        c++;
      if (c == nnames) {
        add_why(why, whylen, &pos, "%s'%.40s'", unknown++ ? ", " : "",
                lists[l].v[i]);
        continue;
      }
      if (s->role[c] != DATA_CSV_CATEGORICAL) {
        snprintf(why, whylen,
                 "column '%.40s' is in %s and in %s: one role "
                 "per column",
                 names[c], role_key(s->role[c]), role_key(lists[l].role));
        goto fail;
      }
      s->role[c] = lists[l].role;
    }
    if (unknown) {
      /* move the list of names behind the key and a verb */
      char names_buf[512];
      snprintf(names_buf, sizeof(names_buf), "%s", why);
      pos = 0;
      add_why(why, whylen, &pos, "%s: no column %s", role_key(lists[l].role),
              names_buf);
      add_columns(why, whylen, &pos, names, nnames);
      goto fail;
    }
  }
  for (uint32_t c = 0; c < s->ncols; c++) {
    enum data_csv_role r = s->role[c];
    s->field[c] = UINT32_MAX;
    if (r == DATA_CSV_CATEGORICAL || r == DATA_CSV_NUMERIC ||
        r == DATA_CSV_VALUE) {
      s->field[c] = s->nfields++;
      s->nvalues += r == DATA_CSV_VALUE;
    }
  }
  if (s->nfields == 0) {
    pos = 0;
    add_why(why, whylen, &pos,
            "no feature column is left (every column is the label, the group "
            "or ignored)");
    add_columns(why, whylen, &pos, names, nnames);
    goto fail;
  }
  return s;
fail:
  data_csv_schema_free(s);
  return NULL;
}

/* why = "column c (name): 'text' <what>" */
static int col_fail(const struct data_csv_schema *s, uint32_t c,
                    const char *text, size_t len, const char *what, char *why,
                    size_t whylen) {
  snprintf(why, whylen, "column %u (%.40s): '%.*s' %s", c + 1, s->names[c],
           (int)(len < 24 ? len : 24), text, what);
  return -1;
}

int data_parse_csv(const struct data_csv_schema *s, char *line, size_t len,
                   struct data_example *ex, char *why, size_t whylen) {
  CHECK(ex->vals || s->nvalues == 0,
        "a CSV schema with %u value columns "
        "needs ex->vals",
        s->nvalues);
  const char *col[DATA_CSV_MAX_COLUMNS];
  size_t clen[DATA_CSV_MAX_COLUMNS], ncols;
  if (data_csv_split(line, len, s->delim, col, clen, DATA_CSV_MAX_COLUMNS,
                     &ncols, why, whylen))
    return -1;
  if (ncols != s->ncols) {
    snprintf(why, whylen, "%zu columns (expected %u, as the header has)", ncols,
             s->ncols);
    return -1;
  }
  bool valued = false;
  ex->group = 0;
  for (uint32_t c = 0; c < s->ncols; c++) {
    const char *t = col[c];
    size_t n = clen[c];
    uint32_t f = s->field[c];
    double v;
    const char *what;
    switch (s->role[c]) {
    case DATA_CSV_LABEL:
      if (n != 1 || (t[0] != '0' && t[0] != '1'))
        return col_fail(s, c, t, n, "is not a label (0 or 1)", why, whylen);
      ex->label = (float)(t[0] - '0');
      break;
    case DATA_CSV_GROUP:
      if (n == 0)
        return col_fail(s, c, t, n, "is not a group id (empty)", why, whylen);
      ex->group = keys_feature_id(GROUP_FIELD, t, n);
      break;
    case DATA_CSV_IGNORE:
      break;
    case DATA_CSV_CATEGORICAL:
      ex->keys[f] = n ? keys_feature_id(f, t, n) : keys_missing_id(f);
      if (ex->vals)
        ex->vals[f] = 1;
      break;
    case DATA_CSV_NUMERIC:
      if (n == 0) {
        ex->keys[f] = keys_missing_id(f);
      } else {
        if ((what = parse_number(t, n, &v)))
          return col_fail(s, c, t, n, what, why, whylen);
        if (v != floor(v) || fabs(v) > 9.0e15)
          return col_fail(s, c, t, n,
                          "is not an integer (data.csv_numeric buckets "
                          "integers by the Criteo rule; list real-valued "
                          "columns in data.csv_value)",
                          why, whylen);
        char tok[24];
        int tl = snprintf(tok, sizeof(tok), "%lld",
                          (long long)keys_criteo_bucket(v));
        ex->keys[f] = keys_feature_id(f, tok, (size_t)tl);
      }
      if (ex->vals)
        ex->vals[f] = 1;
      break;
    case DATA_CSV_VALUE:
      v = 1;
      if (n == 0) {
        ex->keys[f] = keys_missing_id(f);
      } else {
        if ((what = parse_number(t, n, &v)))
          return col_fail(s, c, t, n, what, why, whylen);
        ex->keys[f] = keys_feature_id(f, value_token, sizeof(value_token) - 1);
      }
      ex->vals[f] = (float)v;
      valued |= (float)v != 1.0f;
      break;
    }
  }
  ex->nkeys = s->nfields;
  ex->valued = valued;
  return 0;
}
