#include "worker/reader.h"

#include "common/check.h"
#include "common/config.h"
#include "common/logger.h"

#include <errno.h>
#include <glob.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_FIELDS 1024

struct reader {
  struct reader_options o;
  char **files; /* expanded, sorted per glob, owned */
  size_t nfiles;
  size_t cur;             /* index of the open file */
  FILE *f;                /* the open file, NULL between files */
  uint64_t line_in_file;  /* 1-based line number of the last line read */
  _Atomic uint64_t lines; /* lines read, all shares (atomic: reader_lines
                           * may run on another thread) */
  uint64_t mine;          /* lines of this worker's share */
  uint64_t bad;           /* bad lines of this worker's share */
  uint32_t nfields;
  uint64_t bytes_total;        /* the files' sizes at reader_open */
  _Atomic uint64_t bytes_done; /* bytes read this pass, all shares */
  struct data_csv_schema *csv; /* READER_CSV, owned */
  bool header; /* CSV: the first line of every file is a header */
  char *buf;   /* getline buffer */
  size_t cap;
  char err[512];
};

static void add_file(struct reader *r, const char *path) {
  struct stat st;
  if (stat(path, &st) == 0 && st.st_size > 0)
    r->bytes_total += (uint64_t)st.st_size;
  r->files = xrealloc(r->files, (r->nfiles + 1) * sizeof(*r->files));
  r->files[r->nfiles++] = xstrdup(path);
}

static int has_glob_chars(const char *s) {
  return strpbrk(s, "*?[") != NULL;
}

void reader_options_from_config(struct reader_options *o,
                                struct data_csv_spec *csv,
                                const struct config *cfg) {
  const struct config_data *d = &cfg->data;
  o->format = d->format == CONFIG_FORMAT_LIBFM ? READER_LIBFM
              : d->format == CONFIG_FORMAT_CSV ? READER_CSV
                                               : READER_CRITEO;
  *csv = (struct data_csv_spec){
      .delim = d->csv_delimiter[0],
      .label = d->csv_label,
      .group = d->csv_group,
      .numeric = (const char *const *)d->csv_numeric.v,
      .nnumeric = d->csv_numeric.n,
      .value = (const char *const *)d->csv_value.v,
      .nvalue = d->csv_value.n,
      .ignore = (const char *const *)d->csv_ignore.v,
      .nignore = d->csv_ignore.n,
      .columns = (const char *const *)d->csv_columns.v,
      .ncolumns = d->csv_columns.n,
  };
  o->csv = o->format == READER_CSV ? csv : NULL;
}

/* Reads and splits the header of file i (the first line, a UTF-8 BOM
 * dropped) into col/clen; the names point into r->buf. 0, or -1 with
 * err set ("x.csv: empty, expected a header row"). */
static int read_header(struct reader *r, size_t i, const char **col,
                       size_t *clen, size_t *ncols, char *err, size_t errlen) {
  const char *path = r->files[i];
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  errno = 0;
  ssize_t n = getline(&r->buf, &r->cap, f);
  int e = errno, bad = ferror(f);
  fclose(f);
  if (n < 0) {
    snprintf(err, errlen, "%s: %s", path,
             bad ? strerror(e) : "empty, expected a header row");
    return -1;
  }
  char *line = r->buf;
  if (n >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) {
    line += 3;
    n -= 3;
  }
  char why[256];
  if (data_csv_split(line, (size_t)n, r->o.csv->delim, col, clen,
                     DATA_CSV_MAX_COLUMNS, ncols, why, sizeof(why))) {
    snprintf(err, errlen, "%s:1: header: %s", path, why);
    return -1;
  }
  if (*ncols > DATA_CSV_MAX_COLUMNS) {
    snprintf(err, errlen, "%s:1: header: %zu columns (at most %d)", path,
             *ncols, DATA_CSV_MAX_COLUMNS);
    return -1;
  }
  return 0;
}

/* 1 with the first difference in why when the header col/clen (ncols)
 * is not names (n); 0 when they are the same. */
static int header_differs(const char *const *col, const size_t *clen,
                          size_t ncols, const char *const *names, size_t n,
                          char *why, size_t whylen) {
  if (ncols != n) {
    snprintf(why, whylen, "%zu columns, expected %zu", ncols, n);
    return 1;
  }
  for (size_t c = 0; c < n; c++)
    if (clen[c] != strlen(names[c]) || memcmp(col[c], names[c], clen[c])) {
      snprintf(why, whylen, "column %zu is '%.*s', expected '%.40s'", c + 1,
               (int)(clen[c] < 40 ? clen[c] : 40), col[c], names[c]);
      return 1;
    }
  return 0;
}

/* Compiles the CSV schema from the spec's columns or the first file's
 * header, and checks every other file's header against it. */
static int open_csv(struct reader *r, char *err, size_t errlen) {
  const struct data_csv_spec *spec = r->o.csv;
  CHECK(spec, "READER_CSV without a csv spec");
  char why[512];
  if (spec->ncolumns) {
    r->csv = data_csv_schema_new(spec, spec->columns, spec->ncolumns, why,
                                 sizeof(why));
    if (!r->csv) {
      snprintf(err, errlen, "data.csv_columns: %s", why);
      return -1;
    }
    return 0;
  }
  r->header = true;
  const char *col[DATA_CSV_MAX_COLUMNS];
  size_t clen[DATA_CSV_MAX_COLUMNS], ncols;
  if (read_header(r, 0, col, clen, &ncols, err, errlen))
    return -1;
  if (r->o.csv_expect && header_differs(col, clen, ncols, r->o.csv_expect,
                                        r->o.ncsv_expect, why, sizeof(why))) {
    snprintf(err, errlen, "%s:1: header differs from the training data's: %s",
             r->files[0], why);
    return -1;
  }
  char **names = xcalloc(ncols, sizeof(char *));
  for (size_t c = 0; c < ncols; c++) {
    names[c] = xmalloc(clen[c] + 1);
    memcpy(names[c], col[c], clen[c]);
    names[c][clen[c]] = 0;
  }
  r->csv = data_csv_schema_new(spec, (const char *const *)names, ncols, why,
                               sizeof(why));
  for (size_t c = 0; c < ncols; c++)
    free(names[c]);
  free(names);
  if (!r->csv) {
    snprintf(err, errlen, "%s:1: %s", r->files[0], why);
    return -1;
  }
  for (size_t i = 1; i < r->nfiles; i++) {
    if (read_header(r, i, col, clen, &ncols, err, errlen))
      return -1;
    if (header_differs(col, clen, ncols, (const char *const *)r->csv->names,
                       r->csv->ncols, why, sizeof(why))) {
      snprintf(err, errlen, "%s:1: header differs from %s's: %s", r->files[i],
               r->files[0], why);
      return -1;
    }
  }
  return 0;
}

struct reader *reader_open(const struct reader_options *o, char *err,
                           size_t errlen) {
  CHECK(o->nranks >= 1 && o->rank < o->nranks, "rank %u of %u", o->rank,
        o->nranks);
  if (o->npaths == 0) {
    snprintf(err, errlen, "no data files given");
    return NULL;
  }
  struct reader *r = xcalloc(1, sizeof(*r));
  r->o = *o;
  for (size_t i = 0; i < o->npaths; i++) {
    const char *p = o->paths[i];
    if (!has_glob_chars(p)) {
      struct stat st;
      if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: %s", p,
                 stat(p, &st) != 0 ? strerror(errno) : "not a regular file");
        reader_free(r);
        return NULL;
      }
      add_file(r, p);
      continue;
    }
    glob_t g;
    int rc = glob(p, GLOB_ERR, NULL, &g);
    if (rc != 0) {
      snprintf(err, errlen, "%s: %s", p,
               rc == GLOB_NOMATCH ? "matches no file" : "cannot list");
      globfree(&g);
      reader_free(r);
      return NULL;
    }
    for (size_t k = 0; k < g.gl_pathc; k++)
      add_file(r, g.gl_pathv[k]);
    globfree(&g);
  }
  r->nfields = o->format == READER_CRITEO ? DATA_CRITEO_FIELDS : 0;
  if (o->format == READER_CSV) {
    if (open_csv(r, err, errlen)) {
      reader_free(r);
      return NULL;
    }
    r->nfields = r->csv->nfields;
  }
  if (o->format == READER_LIBFM) {
    /* Learn the field count from the first good line of the first file. */
    uint64_t keys[MAX_FIELDS];
    float vals[MAX_FIELDS];
    struct data_example ex = {.keys = keys, .vals = vals};
    FILE *f = fopen(r->files[0], "r");
    char why[256];
    ssize_t n;
    while (f && (n = getline(&r->buf, &r->cap, f)) >= 0)
      if (data_parse_libfm(r->buf, (size_t)n, 0, MAX_FIELDS, &ex, why,
                           sizeof(why)) == 0) {
        r->nfields = ex.nkeys;
        break;
      }
    if (f)
      fclose(f);
  }
  /* Borrowed for reader_open alone (the caller may free them now): no later
   * call may reach them. */
  r->o.paths = NULL;
  r->o.npaths = 0;
  r->o.csv = NULL;
  r->o.csv_expect = NULL;
  r->o.ncsv_expect = 0;
  return r;
}

void reader_free(struct reader *r) {
  if (!r)
    return;
  if (r->f)
    fclose(r->f);
  for (size_t i = 0; i < r->nfiles; i++)
    free(r->files[i]);
  free(r->files);
  free(r->buf);
  data_csv_schema_free(r->csv);
  free(r);
}

uint32_t reader_nfields(const struct reader *r) {
  return r->nfields;
}
const char *reader_error(const struct reader *r) {
  return r->err;
}
const struct data_csv_schema *reader_csv_schema(const struct reader *r) {
  return r->csv;
}

int reader_save_columns(const struct reader *r, const char *path, char *err,
                        size_t errlen) {
  if (!r || !r->csv || !r->header)
    return 0;
  FILE *f = fopen(path, "w");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  for (uint32_t c = 0; c < r->csv->ncols; c++)
    fprintf(f, "%s\n", r->csv->names[c]);
  if (ferror(f) | fclose(f)) {
    snprintf(err, errlen, "%s: write failed", path);
    return -1;
  }
  return 0;
}

int reader_load_columns(const char *path, char ***names, size_t *n, char *err,
                        size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    if (errno == ENOENT)
      return 0;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  *names = NULL;
  *n = 0;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, f)) >= 0) {
    if (len && line[len - 1] == '\n')
      line[--len] = 0;
    *names = xrealloc(*names, (*n + 1) * sizeof(char *));
    (*names)[(*n)++] = xstrdup(line);
  }
  free(line);
  int bad = ferror(f);
  fclose(f);
  if (bad || *n == 0) {
    snprintf(err, errlen, "%s: %s", path, bad ? "read error" : "empty");
    for (size_t i = 0; i < *n; i++)
      free((*names)[i]);
    free(*names);
    *names = NULL;
    *n = 0;
    return -1;
  }
  return 1;
}
uint64_t reader_lines(const struct reader *r) {
  return r->lines;
}
uint64_t reader_bad_lines(const struct reader *r) {
  return r->bad;
}
uint64_t reader_bytes_total(const struct reader *r) {
  return r->bytes_total;
}
uint64_t reader_bytes_done(const struct reader *r) {
  return r->bytes_done;
}

void reader_rewind(struct reader *r) {
  if (r->f)
    fclose(r->f);
  r->f = NULL;
  r->cur = 0;
  r->lines = r->mine = r->bad = 0;
  r->bytes_done = 0;
}

/* Adds to one of the counters other threads may read: one writer (the
 * thread in reader_next), so a relaxed load and store suffice and cost
 * plain moves, where ++ on an _Atomic is a locked add per line. Returns
 * the old value. */
static uint64_t bump(_Atomic uint64_t *c, uint64_t by) {
  uint64_t v = atomic_load_explicit(c, memory_order_relaxed);
  atomic_store_explicit(c, v + by, memory_order_relaxed);
  return v;
}

static int too_many_bad(struct reader *r) {
  if (r->bad == 0 || (double)r->bad <= r->o.bad_line_fraction * (double)r->mine)
    return 0;
  snprintf(r->err, sizeof(r->err),
           "%llu of %llu lines were malformed (more than data.bad_line_fraction"
           " = %g); is data.format right for %s?",
           (unsigned long long)r->bad, (unsigned long long)r->mine,
           r->o.bad_line_fraction, r->files[r->cur < r->nfiles ? r->cur : 0]);
  return 1;
}

int reader_next(struct reader *r, struct data_example *ex) {
  for (;;) {
    if (!r->f) {
      if (r->cur == r->nfiles)
        return too_many_bad(r) ? -1 : 0;
      r->f = fopen(r->files[r->cur], "r");
      if (!r->f) {
        snprintf(r->err, sizeof(r->err), "%s: %s", r->files[r->cur],
                 strerror(errno));
        return -1;
      }
      r->line_in_file = 0;
    }
    errno = 0;
    ssize_t n = getline(&r->buf, &r->cap, r->f);
    if (n < 0) {
      if (ferror(r->f)) {
        snprintf(r->err, sizeof(r->err), "%s: read error: %s", r->files[r->cur],
                 strerror(errno));
        return -1;
      }
      fclose(r->f);
      r->f = NULL;
      r->cur++;
      continue;
    }
    r->line_in_file++;
    bump(&r->bytes_done, (uint64_t)n); /* headers are bytes of the pass */
    if (r->header && r->line_in_file == 1)
      continue; /* checked by reader_open */
    if (r->csv && r->line_in_file == 1 && n >= 3 &&
        !memcmp(r->buf, "\xEF\xBB\xBF", 3)) {
      n -= 3; /* a UTF-8 byte order mark, not data */
      memmove(r->buf, r->buf + 3, (size_t)n + 1);
    }
    uint64_t idx = bump(&r->lines, 1);
    if (idx % r->o.nranks != r->o.rank)
      continue;
    r->mine++;
    char why[256];
    int rc;
    if (r->o.format == READER_CRITEO)
      rc = data_parse_criteo(r->buf, (size_t)n, ex, why, sizeof(why));
    else if (r->o.format == READER_LIBFM)
      rc = data_parse_libfm(r->buf, (size_t)n, r->nfields, r->nfields, ex, why,
                            sizeof(why));
    else
      rc = data_parse_csv(r->csv, r->buf, (size_t)n, ex, why, sizeof(why));
    if (rc == 0)
      return 1;
    if (r->bad++ < r->o.report_first)
      logger_warn(r->o.log, "%s:%llu: %s (line skipped)", r->files[r->cur],
                  (unsigned long long)r->line_in_file, why);
    if (r->mine >= 100 && too_many_bad(r))
      return -1;
  }
}
