#include "worker/reader.h"

#include "common/check.h"
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
  char **files;       /* expanded, sorted per glob, owned */
  size_t nfiles;
  size_t cur;         /* index of the open file */
  FILE *f;            /* the open file, NULL between files */
  uint64_t line_in_file; /* 1-based line number of the last line read */
  _Atomic uint64_t lines; /* lines read, all shares (atomic: reader_lines
                           * may run on another thread) */
  uint64_t mine;      /* lines of this worker's share */
  uint64_t bad;       /* bad lines of this worker's share */
  uint32_t nfields;
  uint64_t bytes_total;        /* the files' sizes at reader_open */
  _Atomic uint64_t bytes_done; /* bytes read this pass, all shares */
  char *buf;          /* getline buffer */
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

static int has_glob_chars(const char *s) { return strpbrk(s, "*?[") != NULL; }

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
  if (o->format == READER_LIBFM) {
    /* Learn the field count from the first good line of the first file. */
    uint64_t keys[MAX_FIELDS];
    struct data_example ex = {.keys = keys};
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
  free(r);
}

uint32_t reader_nfields(const struct reader *r) { return r->nfields; }
const char *reader_error(const struct reader *r) { return r->err; }
uint64_t reader_lines(const struct reader *r) { return r->lines; }
uint64_t reader_bad_lines(const struct reader *r) { return r->bad; }
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
        snprintf(r->err, sizeof(r->err), "%s: read error: %s",
                 r->files[r->cur], strerror(errno));
        return -1;
      }
      fclose(r->f);
      r->f = NULL;
      r->cur++;
      continue;
    }
    r->line_in_file++;
    uint64_t idx = bump(&r->lines, 1);
    bump(&r->bytes_done, (uint64_t)n);
    if (idx % r->o.nranks != r->o.rank)
      continue;
    r->mine++;
    char why[256];
    int rc = r->o.format == READER_CRITEO
                 ? data_parse_criteo(r->buf, (size_t)n, ex, why, sizeof(why))
                 : data_parse_libfm(r->buf, (size_t)n, r->nfields, r->nfields,
                                    ex, why, sizeof(why));
    if (rc == 0)
      return 1;
    if (r->bad++ < r->o.report_first)
      logger_warn(r->o.log, "%s:%llu: %s (line skipped)", r->files[r->cur],
                  (unsigned long long)r->line_in_file, why);
    if (r->mine >= 100 && too_many_bad(r))
      return -1;
  }
}
