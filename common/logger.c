#include "common/logger.h"

#include "common/check.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

struct logger {
  char role[32];         /* "worker", "pserver", "maskps", ... */
  int rank;              /* process rank within its role */
  enum logger_level level;
  FILE *human;           /* borrowed; stderr by default */
  FILE *jsonl;           /* owned; NULL when records are off */
  int write_failed;      /* a record write failed and was reported */
  pthread_mutex_t mu;    /* one line or record at a time */
};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

struct logger *logger_new(const char *role, int rank, const char *jsonl_path,
                          enum logger_level level, char *err, size_t errlen) {
  struct logger *lg = xcalloc(1, sizeof(*lg));
  snprintf(lg->role, sizeof(lg->role), "%s", role);
  lg->rank = rank;
  lg->level = level;
  lg->human = stderr;
  pthread_mutex_init(&lg->mu, NULL);
  if (jsonl_path) {
    lg->jsonl = fopen(jsonl_path, "a");
    if (!lg->jsonl) {
      snprintf(err, errlen, "cannot open log file %s: %s", jsonl_path,
               strerror(errno));
      logger_free(lg);
      return NULL;
    }
  }
  return lg;
}

void logger_free(struct logger *lg) {
  if (!lg)
    return;
  if (lg->jsonl)
    fclose(lg->jsonl);
  pthread_mutex_destroy(&lg->mu);
  free(lg);
}

void logger_set_level(struct logger *lg, enum logger_level level) {
  lg->level = level;
}

void logger_set_stream(struct logger *lg, FILE *f) { lg->human = f; }

static double now_unix(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

void logger_msg(struct logger *lg, enum logger_level level, const char *fmt,
                ...) {
  if (lg && level < lg->level)
    return;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  localtime_r(&tv.tv_sec, &tm);
  char line[2048];
  int n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03d ", tm.tm_hour,
                   tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
  if (lg)
    n += snprintf(line + n, sizeof(line) - (size_t)n, "%s-%d ", lg->role,
                  lg->rank);
  n += snprintf(line + n, sizeof(line) - (size_t)n, "%s: ", level_names[level]);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
  va_end(ap);
  FILE *f = lg ? lg->human : stderr;
  if (lg)
    pthread_mutex_lock(&lg->mu);
  fprintf(f, "%s\n", line);
  fflush(f);
  if (lg)
    pthread_mutex_unlock(&lg->mu);
}

static int is_ident(const char *s) {
  if (!*s)
    return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '_')
      return 0;
  return 1;
}

static void put_number(FILE *f, double v) {
  if (!isfinite(v))
    fputs("null", f);
  else if (v == floor(v) && fabs(v) < 9e15)
    fprintf(f, "%.0f", v);
  else
    fprintf(f, "%.9g", v);
}

void logger_json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c == '\n')
      fputs("\\n", f);
    else if (c == '\t')
      fputs("\\t", f);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

/* Writes the fixed head of a record; caller holds the mutex. */
static void record_head(struct logger *lg, uint64_t step, const char *event) {
  fprintf(lg->jsonl, "{\"ts\":%.3f,\"role\":", now_unix());
  logger_json_string(lg->jsonl, lg->role);
  fprintf(lg->jsonl, ",\"rank\":%d,\"step\":%llu,\"event\":", lg->rank,
          (unsigned long long)step);
  logger_json_string(lg->jsonl, event);
}

static int record_tail(struct logger *lg) {
  fputs("}\n", lg->jsonl);
  int bad = fflush(lg->jsonl) != 0 || ferror(lg->jsonl);
  if (bad && !lg->write_failed) {
    lg->write_failed = 1;
    fprintf(lg->human, "%s-%d error: writing the metrics log failed (%s); "
            "training continues without it\n", lg->role, lg->rank,
            strerror(errno));
  }
  clearerr(lg->jsonl);
  return bad ? -1 : 0;
}

int logger_record(struct logger *lg, uint64_t step, const char *event, ...) {
  if (!lg || !lg->jsonl)
    return 0;
  pthread_mutex_lock(&lg->mu);
  record_head(lg, step, event);
  va_list ap;
  va_start(ap, event);
  for (const char *name; (name = va_arg(ap, const char *));) {
    double v = va_arg(ap, double);
    CHECK(is_ident(name), "metric name '%s'", name);
    fprintf(lg->jsonl, ",\"%s\":", name);
    put_number(lg->jsonl, v);
  }
  va_end(ap);
  int rc = record_tail(lg);
  pthread_mutex_unlock(&lg->mu);
  return rc;
}

int logger_record_json(struct logger *lg, uint64_t step, const char *event,
                       const char *fields) {
  if (!lg || !lg->jsonl)
    return 0;
  pthread_mutex_lock(&lg->mu);
  record_head(lg, step, event);
  if (fields && *fields)
    fprintf(lg->jsonl, ",%s", fields);
  int rc = record_tail(lg);
  pthread_mutex_unlock(&lg->mu);
  return rc;
}

int logger_level_parse(const char *s, enum logger_level *out) {
  for (int i = 0; i < (int)ARRAY_LEN(level_names); i++)
    if (!strcmp(s, level_names[i])) {
      *out = (enum logger_level)i;
      return 0;
    }
  return -1;
}
