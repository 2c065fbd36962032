/* The offline table tools; see table.h and docs/table-format.md. */
#include "pserver/table.h"

#include "common/check.h"
#include "common/keys.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- small helpers ---------------------------------------------------- */

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

/* Removes a tree we created (a .tmp-<pid> directory); ignores a missing one. */
static void rm_tree(const char *dir) {
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A copy of path without trailing slashes ("/" stays "/"). */
static char *clean_path(const char *path) {
  char *p = xstrdup(path);
  size_t n = strlen(p);
  while (n > 1 && p[n - 1] == '/')
    p[--n] = 0;
  return p;
}

static void fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

/* The parent directory of path ("." if none), malloc'ed. */
static char *parent_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return xstrdup(".");
  if (slash == path)
    return xstrdup("/");
  char *p = xmalloc((size_t)(slash - path) + 1);
  memcpy(p, path, (size_t)(slash - path));
  p[slash - path] = 0;
  return p;
}

/* ---- manifest: a tiny JSON reader ------------------------------------ */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
  int type;
  double num;       /* J_NUM, J_BOOL */
  uint64_t u;       /* J_NUM: exact value of a non-negative integer literal */
  int is_uint;      /* 1: u is exact */
  char *str;        /* J_STR */
  size_t n;         /* J_ARR / J_OBJ entries */
  struct jv *items; /* [n] */
  char **keys;      /* J_OBJ: [n] */
};

struct jp {
  const char *s, *p;
  char *err;
  size_t errlen;
  const char *file;
};

static void jv_free(struct jv *v) {
  for (size_t i = 0; i < v->n; i++) {
    jv_free(&v->items[i]);
    if (v->keys)
      free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->str);
}

static int jerr(struct jp *j, const char *what) {
  int line = 1;
  for (const char *q = j->s; q < j->p; q++)
    line += *q == '\n';
  return errorf(j->err, j->errlen, "%s:%d: malformed manifest: %s", j->file,
                line, what);
}

static void jws(struct jp *j) {
  while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
    j->p++;
}

static int jstring(struct jp *j, char **out) {
  if (*j->p != '"')
    return jerr(j, "expected a string");
  j->p++;
  const char *b = j->p;
  while (*j->p && *j->p != '"') {
    if (*j->p == '\\' || (unsigned char)*j->p < 0x20)
      return jerr(j, "escapes and control characters are not supported");
    j->p++;
  }
  if (*j->p != '"')
    return jerr(j, "unterminated string");
  *out = xmalloc((size_t)(j->p - b) + 1);
  memcpy(*out, b, (size_t)(j->p - b));
  (*out)[j->p - b] = 0;
  j->p++;
  return 0;
}

static int jvalue(struct jp *j, struct jv *v, int depth) {
  memset(v, 0, sizeof(*v));
  if (depth > 8)
    return jerr(j, "nested too deep");
  jws(j);
  char c = *j->p;
  if (c == '"') {
    v->type = J_STR;
    return jstring(j, &v->str);
  }
  if (c == '{' || c == '[') {
    v->type = c == '{' ? J_OBJ : J_ARR;
    char close = c == '{' ? '}' : ']';
    j->p++;
    jws(j);
    if (*j->p == close) {
      j->p++;
      return 0;
    }
    for (;;) {
      if (v->n > 4096)
        return jerr(j, "too many entries");
      v->items = xrealloc(v->items, (v->n + 1) * sizeof(*v->items));
      if (v->type == J_OBJ) {
        v->keys = xrealloc(v->keys, (v->n + 1) * sizeof(*v->keys));
        v->keys[v->n] = NULL;
        memset(&v->items[v->n], 0, sizeof(*v->items));
        v->n++;
        jws(j);
        if (jstring(j, &v->keys[v->n - 1]) < 0)
          return -1;
        jws(j);
        if (*j->p != ':')
          return jerr(j, "expected ':'");
        j->p++;
        if (jvalue(j, &v->items[v->n - 1], depth + 1) < 0)
          return -1;
      } else {
        memset(&v->items[v->n], 0, sizeof(*v->items));
        v->n++;
        if (jvalue(j, &v->items[v->n - 1], depth + 1) < 0)
          return -1;
      }
      jws(j);
      if (*j->p == ',') {
        j->p++;
        continue;
      }
      if (*j->p == close) {
        j->p++;
        return 0;
      }
      return jerr(j, "expected ',' or a closing bracket");
    }
  }
  if (!strncmp(j->p, "true", 4) || !strncmp(j->p, "false", 5)) {
    v->type = J_BOOL;
    v->num = *j->p == 't';
    j->p += *j->p == 't' ? 4 : 5;
    return 0;
  }
  if (!strncmp(j->p, "null", 4)) {
    v->type = J_NULL;
    j->p += 4;
    return 0;
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    char *end;
    v->type = J_NUM;
    errno = 0;
    v->num = strtod(j->p, &end);
    if (end == j->p)
      return jerr(j, "bad number");
    if (c != '-' && !memchr(j->p, '.', (size_t)(end - j->p)) &&
        !memchr(j->p, 'e', (size_t)(end - j->p)) &&
        !memchr(j->p, 'E', (size_t)(end - j->p))) {
      errno = 0;
      v->u = strtoull(j->p, NULL, 10);
      v->is_uint = errno == 0;
    }
    j->p = end;
    return 0;
  }
  return jerr(j, "unexpected character");
}

static const struct jv *jget(const struct jv *o, const char *key) {
  for (size_t i = 0; o->type == J_OBJ && i < o->n; i++)
    if (!strcmp(o->keys[i], key))
      return &o->items[i];
  return NULL;
}

/* An unsigned integer field <= max; -1 with a message otherwise. */
static int juint(const struct jv *o, const char *key, uint64_t max,
                 uint64_t *out, const char *file, char *err, size_t errlen) {
  const struct jv *v = jget(o, key);
  if (!v)
    return errorf(err, errlen, "%s: missing \"%s\"", file, key);
  if (v->type != J_NUM || !v->is_uint || v->u > max)
    return errorf(err, errlen, "%s: \"%s\" must be an integer in 0..%" PRIu64,
                  file, key, max);
  *out = v->u;
  return 0;
}

static int cmp_table(const void *a, const void *b) {
  const struct store_table *x = a, *y = b;
  return x->id < y->id ? -1 : x->id > y->id;
}

static int opt_of_name(const char *name) {
  for (int k = 0; k < ROW_OPT_COUNT_; k++)
    if (!strcmp(name, row_opt_name((enum row_opt)k)))
      return k;
  return -1;
}

int table_manifest_write(const char *dir, const struct table_layout *l,
                         char *err, size_t errlen) {
  char path[4096], tmp[4200];
  snprintf(path, sizeof(path), "%s/%s", dir, TABLE_MANIFEST);
  snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid());
  FILE *f = fopen(tmp, "w");
  if (!f)
    return errorf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
  fprintf(f,
          "{\"format\": \"maskps-table\", \"version\": %d, \"row_version\": "
          "%d,\n \"shards\": %" PRIu32 ", \"rank\": %" PRIu32
          ",\n \"tables\": [",
          TABLE_MANIFEST_VERSION, ROW_VERSION, l->shards, l->rank);
  for (size_t i = 0; i < l->ntables; i++) {
    const struct store_table *t = &l->tables[i];
    fprintf(f,
            "%s\n  {\"id\": %" PRIu32 ", \"dim\": %u, \"opt\": \"%s\", "
            "\"amtl\": %d, \"seed\": %" PRIu64 ", \"init_std\": %.9g, "
            "\"min_count\": %" PRIu32 ", \"ttl_steps\": %" PRIu64
            ", \"amtl_warmup_steps\": %" PRIu64 "}",
            i ? "," : "", t->id, t->dim, row_opt_name(t->opt.kind),
            t->amtl ? 1 : 0, t->seed, (double)t->init_std, t->min_count,
            t->ttl_steps, t->amtl_warmup_steps);
  }
  fprintf(f, "\n ]}\n");
  int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
  bad |= fclose(f) != 0;
  if (bad || rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    return errorf(err, errlen, "%s: cannot write: %s", path, strerror(e));
  }
  fsync_dir(dir);
  return 0;
}

void table_layout_free(struct table_layout *l) {
  if (!l)
    return;
  free(l->tables);
  l->tables = NULL;
  l->ntables = 0;
}

static int layout_from_json(const struct jv *root, struct table_layout *l,
                            const char *file, char *err, size_t errlen) {
  if (root->type != J_OBJ)
    return errorf(err, errlen, "%s: not a JSON object", file);
  const struct jv *fmt = jget(root, "format");
  if (!fmt || fmt->type != J_STR || strcmp(fmt->str, "maskps-table"))
    return errorf(err, errlen, "%s: \"format\" is not \"maskps-table\"", file);
  uint64_t ver, rv, shards, rank;
  if (juint(root, "version", UINT32_MAX, &ver, file, err, errlen) < 0 ||
      juint(root, "row_version", 255, &rv, file, err, errlen) < 0 ||
      juint(root, "shards", 1u << 20, &shards, file, err, errlen) < 0 ||
      juint(root, "rank", 1u << 20, &rank, file, err, errlen) < 0)
    return -1;
  if (ver != TABLE_MANIFEST_VERSION)
    return errorf(err, errlen,
                  "%s: manifest version %" PRIu64 ", this maskps-table reads "
                  "version %d%s",
                  file, ver, TABLE_MANIFEST_VERSION,
                  ver > TABLE_MANIFEST_VERSION ? " (use a newer maskps-table)"
                                               : "");
  if (rv < 1 || rv > ROW_VERSION)
    return errorf(err, errlen,
                  "%s: rows of format version %" PRIu64
                  ", this build reads 1..%d",
                  file, rv, ROW_VERSION);
  if (shards < 1 || rank >= shards)
    return errorf(err, errlen,
                  "%s: rank %" PRIu64 " of %" PRIu64 " shards is impossible",
                  file, rank, shards);
  const struct jv *tabs = jget(root, "tables");
  if (!tabs || tabs->type != J_ARR || tabs->n == 0 ||
      tabs->n > STORE_MAX_TABLES)
    return errorf(err, errlen, "%s: \"tables\" must be a list of 1..%d tables",
                  file, STORE_MAX_TABLES);
  l->shards = (uint32_t)shards;
  l->rank = (uint32_t)rank;
  l->ntables = tabs->n;
  l->tables = xcalloc(tabs->n, sizeof(*l->tables));
  for (size_t i = 0; i < tabs->n; i++) {
    const struct jv *o = &tabs->items[i];
    struct store_table *t = &l->tables[i];
    uint64_t id, dim, amtl, seed, minc = 1, ttl = 0, warm = 0;
    if (o->type != J_OBJ)
      return errorf(err, errlen, "%s: table %zu is not an object", file, i);
    if (juint(o, "id", UINT32_MAX, &id, file, err, errlen) < 0 ||
        juint(o, "dim", ROW_MAX_DIM, &dim, file, err, errlen) < 0 ||
        juint(o, "amtl", 1, &amtl, file, err, errlen) < 0 ||
        juint(o, "seed", UINT64_MAX, &seed, file, err, errlen) < 0)
      return -1;
    if (jget(o, "min_count") &&
        juint(o, "min_count", UINT32_MAX, &minc, file, err, errlen) < 0)
      return -1;
    if (jget(o, "ttl_steps") &&
        juint(o, "ttl_steps", UINT64_MAX, &ttl, file, err, errlen) < 0)
      return -1;
    if (jget(o, "amtl_warmup_steps") &&
        juint(o, "amtl_warmup_steps", UINT64_MAX, &warm, file, err, errlen) < 0)
      return -1;
    const struct jv *opt = jget(o, "opt"), *std = jget(o, "init_std");
    int kind = opt && opt->type == J_STR ? opt_of_name(opt->str) : -1;
    if (kind < 0)
      return errorf(err, errlen,
                    "%s: table %" PRIu64 ": \"opt\" must be one of none, sgd, "
                    "adagrad, adam, ftrl",
                    file, id);
    if (!std || std->type != J_NUM || !(std->num >= 0) || std->num > 1e6)
      return errorf(err, errlen,
                    "%s: table %" PRIu64 ": \"init_std\" must be a number >= 0",
                    file, id);
    if (dim < 1)
      return errorf(err, errlen, "%s: table %" PRIu64 ": dim must be >= 1",
                    file, id);
    t->id = (uint32_t)id;
    t->dim = (unsigned)dim;
    sparse_opt_defaults(&t->opt, (enum row_opt)kind);
    t->amtl = (int)amtl;
    t->amtl_warmup_steps = warm;
    t->min_count = (uint32_t)minc;
    t->ttl_steps = ttl;
    t->init_std = (float)std->num;
    t->seed = seed;
    for (size_t k = 0; k < i; k++)
      if (l->tables[k].id == t->id)
        return errorf(err, errlen, "%s: table %" PRIu32 " listed twice", file,
                      t->id);
  }
  qsort(l->tables, l->ntables, sizeof(*l->tables), cmp_table);
  return 0;
}

int table_manifest_read(const char *dir, struct table_layout *l, char *err,
                        size_t errlen) {
  memset(l, 0, sizeof(*l));
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return errorf(err, errlen, "%s: %s", dir,
                  stat(dir, &st) != 0 ? "no such directory"
                                      : "not a directory");
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", dir, TABLE_MANIFEST);
  FILE *f = fopen(path, "r");
  if (!f)
    return errorf(err, errlen,
                  "%s: no %s (%s): not a store written by maskps-table, or a "
                  "store that has no manifest yet; write one with "
                  "`maskps-table manifest`",
                  dir, TABLE_MANIFEST, strerror(errno));
  char *buf = xmalloc(1 << 20);
  size_t n = fread(buf, 1, (1 << 20) - 1, f);
  int big = !feof(f);
  fclose(f);
  if (big) {
    free(buf);
    return errorf(err, errlen, "%s: larger than 1 MiB", path);
  }
  buf[n] = 0;
  if (memchr(buf, 0, n)) {
    free(buf);
    return errorf(err, errlen, "%s: not a text file", path);
  }
  struct jp j = {buf, buf, err, errlen, path};
  struct jv root;
  int rc = jvalue(&j, &root, 0);
  if (rc == 0) {
    jws(&j);
    if (*j.p)
      rc = jerr(&j, "trailing characters");
  }
  if (rc == 0)
    rc = layout_from_json(&root, l, path, err, errlen);
  jv_free(&root);
  free(buf);
  if (rc < 0)
    table_layout_free(l);
  return rc;
}

/* ---- a set of stores -------------------------------------------------- */

struct set {
  size_t n;                 /* shards */
  char **dirs;              /* [n] by rank */
  struct table_layout *lay; /* [n] by rank */
  struct store **st;        /* [n] open stores (or NULL) */
};

static void set_close(struct set *s) {
  for (size_t i = 0; i < s->n; i++) {
    if (s->st && s->st[i]) {
      char e[256];
      store_close(s->st[i], e, sizeof(e));
    }
    if (s->lay)
      table_layout_free(&s->lay[i]);
    if (s->dirs)
      free(s->dirs[i]);
  }
  free(s->st);
  free(s->lay);
  free(s->dirs);
  memset(s, 0, sizeof(*s));
}

static int same_table(const struct store_table *a,
                      const struct store_table *b) {
  return a->id == b->id && a->dim == b->dim && a->opt.kind == b->opt.kind &&
         a->amtl == b->amtl && a->seed == b->seed && a->init_std == b->init_std;
}

static size_t mem_of(const struct table_io *io) {
  return io && io->memory_mb >= 4 ? io->memory_mb : 64;
}

/* Opens one store of layout l; the tool never wants expiry or admission
 * to act, so ttl is off in the options (the manifest keeps the real one). */
static struct store *open_store(const char *dir, const struct table_layout *l,
                                int create, size_t mb, char *err,
                                size_t errlen) {
  struct store_table *t = xmalloc(l->ntables * sizeof(*t));
  memcpy(t, l->tables, l->ntables * sizeof(*t));
  for (size_t i = 0; i < l->ntables; i++)
    t[i].ttl_steps = 0;
  struct store_options o;
  store_options_defaults(&o);
  o.tables = t;
  o.ntables = l->ntables;
  o.memory_mb = mb;
  o.wal = STORE_WAL_OFF;
  o.create_if_missing = create;
  /* Every store the tool did not create is only read: RocksDB's read-only
   * mode, so not even its bookkeeping files change. */
  o.read_only = !create;
  struct store *s = store_open(dir, &o, err, errlen);
  free(t);
  return s;
}

/* Reads the manifests of dirs[0..n), checks that they form one set, orders
 * them by rank, and opens the stores if open_them. */
static int set_open(const char *const *dirs, size_t n, int open_them, size_t mb,
                    struct set *s, char *err, size_t errlen) {
  memset(s, 0, sizeof(*s));
  if (n == 0)
    return errorf(err, errlen, "no store directories given");
  s->n = n;
  s->dirs = xcalloc(n, sizeof(*s->dirs));
  s->lay = xcalloc(n, sizeof(*s->lay));
  s->st = xcalloc(n, sizeof(*s->st));
  for (size_t i = 0; i < n; i++) {
    struct table_layout l;
    if (table_manifest_read(dirs[i], &l, err, errlen) < 0)
      goto bad;
    if (l.shards != n) {
      errorf(err, errlen,
             "%s: shard %" PRIu32 " of a %" PRIu32
             "-shard set, but %zu directories were given; give all %" PRIu32
             " shards of the set",
             dirs[i], l.rank, l.shards, n, l.shards);
      table_layout_free(&l);
      goto bad;
    }
    if (s->dirs[l.rank]) {
      errorf(err, errlen, "%s and %s are both shard %" PRIu32 " of %" PRIu32,
             s->dirs[l.rank], dirs[i], l.rank, l.shards);
      table_layout_free(&l);
      goto bad;
    }
    s->dirs[l.rank] = clean_path(dirs[i]);
    s->lay[l.rank] = l;
  }
  for (size_t r = 1; r < n; r++) {
    const struct table_layout *a = &s->lay[0], *b = &s->lay[r];
    int same = a->ntables == b->ntables;
    for (size_t k = 0; same && k < a->ntables; k++)
      same = same_table(&a->tables[k], &b->tables[k]);
    if (!same) {
      errorf(err, errlen,
             "%s and %s: their manifests list different tables (id, dim, "
             "opt, amtl, seed or init_std); they are not shards of one set",
             s->dirs[0], s->dirs[r]);
      goto bad;
    }
  }
  for (size_t r = 0; open_them && r < n; r++) {
    s->st[r] = open_store(s->dirs[r], &s->lay[r], 0, mb, err, errlen);
    if (!s->st[r])
      goto bad;
  }
  return 0;
bad:
  set_close(s);
  return -1;
}

/* ---- hashes ----------------------------------------------------------- */

static inline uint64_t hstep(uint64_t h, uint64_t v) {
  return keys_mix64(h ^ v) + 0x632be59bd9b4e019ull;
}

static uint64_t hash_floats(uint64_t h, const float *f, size_t n) {
  size_t j = 0;
  for (; j + 1 < n; j += 2) {
    uint32_t a, b;
    memcpy(&a, &f[j], 4);
    memcpy(&b, &f[j + 1], 4);
    h = hstep(h, (uint64_t)a | (uint64_t)b << 32);
  }
  if (j < n) {
    uint32_t a;
    memcpy(&a, &f[j], 4);
    h = hstep(h, a);
  }
  return h;
}

uint64_t table_row_hash_values(uint32_t table, uint64_t fid,
                               const struct row *r) {
  uint64_t h = hstep(0x6d61736b70732d76ull, table);
  h = hstep(h, fid);
  h = hstep(h, r->p);
  return hash_floats(h, r->values, r->p);
}

uint64_t table_row_hash_full(uint32_t table, uint64_t fid,
                             const struct row *r) {
  uint64_t h = table_row_hash_values(table, fid, r);
  h = hstep(h, (uint64_t)r->count | (uint64_t)r->clicks << 32);
  h = hstep(h, r->last_step);
  h = hstep(h, (uint64_t)r->opt_step | (uint64_t)r->opt << 32 |
                   (uint64_t)r->flags << 40);
  return hash_floats(h, r->state, (size_t)row_slots(r->opt) * r->p);
}

static void sum_add(struct table_sum *s, uint64_t fid, const struct row *r) {
  s->rows++;
  s->pending += r->p == 0;
  s->values_sum += table_row_hash_values(s->table, fid, r);
  s->full_sum += table_row_hash_full(s->table, fid, r);
}

static void print_sums(FILE *out, const char *label, const struct table_sum *s,
                       size_t n) {
  if (!out)
    return;
  for (size_t i = 0; i < n; i++)
    fprintf(out,
            "%s table %" PRIu32 ": rows %" PRIu64 " pending %" PRIu64
            " values %016" PRIx64 " full %016" PRIx64 "\n",
            label, s[i].table, s[i].rows, s[i].pending, s[i].values_sum,
            s[i].full_sum);
  fflush(out);
}

/* ---- progress --------------------------------------------------------- */

struct progress {
  int on;
  const char *what;
  double t0, last;
  uint64_t rows;
};

static void progress_tick(struct progress *p) {
  p->rows++;
  if (!p->on || (p->rows & 0xffff))
    return;
  double t = clock_sec();
  if (t - p->last < 0.5)
    return;
  p->last = t;
  fprintf(stderr, "\r%s: %" PRIu64 " rows, %.0f rows/s   ", p->what, p->rows,
          (double)p->rows / (t - p->t0 + 1e-9));
}

static void progress_end(struct progress *p) {
  if (p->on && p->last > 0)
    fprintf(stderr, "\r%s: %" PRIu64 " rows, done%20s\n", p->what, p->rows, "");
}

/* ---- verify ----------------------------------------------------------- */

static int verify_set(struct set *s, const struct table_io *io,
                      const char *label, struct table_sum **sums, size_t *nsums,
                      char *err, size_t errlen) {
  const struct table_layout *l = &s->lay[0];
  struct table_sum *sm = xcalloc(l->ntables, sizeof(*sm));
  struct progress pr = {io && io->progress, "verify", clock_sec(), 0, 0};
  for (size_t k = 0; k < l->ntables; k++) {
    sm[k].table = l->tables[k].id;
    for (size_t r = 0; r < s->n; r++) {
      struct store_iter *it =
          store_iter_new(s->st[r], sm[k].table, err, errlen);
      if (!it)
        goto bad;
      uint64_t fid;
      struct row row;
      int rc;
      while ((rc = store_iter_next(it, &fid, &row, err, errlen)) == 1) {
        sum_add(&sm[k], fid, &row);
        sm[k].misplaced += keys_shard(fid, (uint32_t)s->n) != r;
        progress_tick(&pr);
      }
      store_iter_free(it);
      if (rc < 0)
        goto bad;
    }
  }
  progress_end(&pr);
  print_sums(io ? io->out : NULL, label, sm, l->ntables);
  for (size_t k = 0; k < l->ntables; k++)
    if (sm[k].misplaced) {
      errorf(err, errlen,
             "table %" PRIu32 ": %" PRIu64
             " rows are stored in a shard that keys_shard(fid, %zu) does not "
             "give them (a wrong rank in a manifest, or rows written by "
             "another layout)",
             sm[k].table, sm[k].misplaced, s->n);
      goto bad;
    }
  *sums = sm;
  *nsums = l->ntables;
  return 0;
bad:
  free(sm);
  return -1;
}

int table_verify(const char *const *dirs, size_t n, const struct table_io *io,
                 struct table_sum **sums, size_t *nsums, char *err,
                 size_t errlen) {
  struct set s;
  *sums = NULL;
  *nsums = 0;
  if (set_open(dirs, n, 1, mem_of(io), &s, err, errlen) < 0)
    return -1;
  int rc = verify_set(&s, io, "verify", sums, nsums, err, errlen);
  set_close(&s);
  return rc;
}

/* ---- inspect ---------------------------------------------------------- */

int table_inspect(const char *const *dirs, size_t n, const struct table_io *io,
                  char *err, size_t errlen) {
  FILE *out = io && io->out ? io->out : stdout;
  if (n == 0)
    return errorf(err, errlen, "no store directories given");
  /* Read every manifest first: a wrong path fails before any store opens. */
  struct table_layout *lay = xcalloc(n, sizeof(*lay));
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = table_manifest_read(dirs[i], &lay[i], err, errlen);
  struct store_table_stats *tot = NULL;
  if (rc == 0)
    tot = xcalloc(lay[0].ntables, sizeof(*tot));
  uint64_t *hist = xmalloc(sizeof(uint64_t) * (ROW_MAX_DIM + 1));
  for (size_t i = 0; i < n && rc == 0; i++) {
    const struct table_layout *l = &lay[i];
    struct store *s = open_store(dirs[i], l, 0, mem_of(io), err, errlen);
    if (!s) {
      rc = -1;
      break;
    }
    struct store_stats ss;
    if (store_stats(s, &ss, err, errlen) < 0)
      rc = -1;
    if (rc == 0)
      fprintf(out,
              "%s: manifest v%d, row format v%d, shard %" PRIu32 " of %" PRIu32
              ", %zu tables, %" PRIu64 " bytes of SST files\n",
              dirs[i], TABLE_MANIFEST_VERSION, ROW_VERSION, l->rank, l->shards,
              l->ntables, ss.sst_bytes);
    for (size_t k = 0; k < l->ntables && rc == 0; k++) {
      const struct store_table *t = &l->tables[k];
      struct store_table_stats st;
      if (store_table_scan(s, t->id, &st, hist, err, errlen) < 0) {
        rc = -1;
        break;
      }
      fprintf(out,
              "  table %" PRIu32 ": D %u, opt %s, amtl %d, rows %" PRIu64
              ", pending %" PRIu64 ", row bytes %" PRIu64
              " (%.1f per row), mean prefix %.2f\n    prefix histogram:",
              t->id, t->dim, row_opt_name(t->opt.kind), t->amtl, st.rows,
              st.pending, st.value_bytes,
              st.rows ? (double)st.value_bytes / (double)st.rows : 0.0,
              st.mean_p);
      for (unsigned p = 0; p <= t->dim; p++)
        if (hist[p])
          fprintf(out, " %u:%" PRIu64, p, hist[p]);
      fprintf(out, "\n");
      for (size_t j = 0; j < lay[0].ntables; j++)
        if (lay[0].tables[j].id == t->id) {
          double admitted = (double)(st.rows - st.pending);
          double before =
              tot[j].mean_p * (double)(tot[j].rows - tot[j].pending);
          tot[j].rows += st.rows;
          tot[j].pending += st.pending;
          tot[j].value_bytes += st.value_bytes;
          double all = (double)(tot[j].rows - tot[j].pending);
          tot[j].mean_p = all > 0 ? (before + st.mean_p * admitted) / all : 0;
        }
    }
    char e2[256];
    if (store_close(s, e2, sizeof(e2)) < 0 && rc == 0)
      rc = errorf(err, errlen, "%s", e2);
  }
  if (rc == 0 && n > 1) {
    fprintf(out, "total over %zu directories:\n", n);
    for (size_t j = 0; j < lay[0].ntables; j++)
      fprintf(out,
              "  table %" PRIu32 ": rows %" PRIu64 ", pending %" PRIu64
              ", row bytes %" PRIu64 ", mean prefix %.2f\n",
              lay[0].tables[j].id, tot[j].rows, tot[j].pending,
              tot[j].value_bytes, tot[j].mean_p);
  }
  fflush(out);
  for (size_t i = 0; i < n; i++)
    table_layout_free(&lay[i]);
  free(lay);
  free(tot);
  free(hist);
  return rc;
}

/* ---- destinations ----------------------------------------------------- */

/* Removes "<dest>.tmp-<pid>" directories left by dead runs. */
static void clean_stale(const char *dest) {
  char *par = parent_of(dest);
  const char *slash = strrchr(dest, '/');
  const char *base = slash ? slash + 1 : dest;
  size_t bl = strlen(base);
  DIR *d = opendir(par);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      const char *nm = e->d_name;
      if (strncmp(nm, base, bl) || strncmp(nm + bl, ".tmp-", 5))
        continue;
      const char *num = nm + bl + 5;
      char *end;
      long pid = strtol(num, &end, 10);
      if (!*num || *end || pid <= 0 || pid == (long)getpid())
        continue;
      if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
        continue; /* alive, or not ours to judge */
      char path[4096];
      snprintf(path, sizeof(path), "%s/%s", par, nm);
      rm_tree(path);
    }
    closedir(d);
  }
  free(par);
}

/* A destination that may be written: absent (with an existing parent) or
 * an empty directory. */
static int dest_ok(const char *dest, char *err, size_t errlen) {
  struct stat st;
  if (stat(dest, &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      return errorf(err, errlen,
                    "%s: exists and is not a directory; give a new path", dest);
    DIR *d = opendir(dest);
    if (!d)
      return errorf(err, errlen, "%s: cannot read: %s", dest, strerror(errno));
    struct dirent *e;
    int used = 0;
    while ((e = readdir(d)))
      used |= strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    if (used)
      return errorf(err, errlen,
                    "%s: already holds data; maskps-table never writes into "
                    "an existing table: give a new (or empty) directory",
                    dest);
    return 0;
  }
  if (errno != ENOENT)
    return errorf(err, errlen, "%s: cannot check: %s", dest, strerror(errno));
  char *par = parent_of(dest);
  int ok = stat(par, &st) == 0 && S_ISDIR(st.st_mode);
  if (!ok)
    errorf(err, errlen, "%s: parent directory %s does not exist", dest, par);
  free(par);
  return ok ? 0 : -1;
}

/* Checks n destinations (distinct, writable) and names their temporaries. */
static int dests_prepare(const char *const *to, size_t n, char ***clean,
                         char ***tmp, char *err, size_t errlen) {
  *clean = xcalloc(n, sizeof(char *));
  *tmp = xcalloc(n, sizeof(char *));
  for (size_t i = 0; i < n; i++) {
    (*clean)[i] = clean_path(to[i]);
    (*tmp)[i] = xmalloc(strlen((*clean)[i]) + 32);
    sprintf((*tmp)[i], "%s.tmp-%d", (*clean)[i], (int)getpid());
  }
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < i; k++)
      if (!strcmp((*clean)[i], (*clean)[k]))
        return errorf(err, errlen, "%s: given twice as a destination",
                      (*clean)[i]);
    if (dest_ok((*clean)[i], err, errlen) < 0)
      return -1;
  }
  for (size_t i = 0; i < n; i++)
    clean_stale((*clean)[i]);
  return 0;
}

static void dests_free(char **clean, char **tmp, size_t n, int remove_tmp) {
  for (size_t i = 0; clean && i < n; i++) {
    if (remove_tmp && tmp && tmp[i])
      rm_tree(tmp[i]);
    free(clean[i]);
    if (tmp)
      free(tmp[i]);
  }
  free(clean);
  free(tmp);
}

/* Renames every temporary into place. An empty destination directory is
 * replaced (rename(2) allows that for directories). */
static int dests_commit(char **clean, char **tmp, size_t n, char *err,
                        size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    if (rename(tmp[i], clean[i]) != 0)
      return errorf(err, errlen, "rename %s -> %s: %s", tmp[i], clean[i],
                    strerror(errno));
    char *par = parent_of(clean[i]);
    fsync_dir(par);
    free(par);
  }
  return 0;
}

/* ---- row transformation ---------------------------------------------- */

void table_migrate_defaults(struct table_migrate_opts *o) {
  memset(o, 0, sizeof(*o));
  o->amtl = TABLE_KEEP;
  o->opt = TABLE_KEEP;
  o->prefix = TABLE_PREFIX_KEEP;
}

static int check_opts(const struct table_migrate_opts *o, char *err,
                      size_t errlen) {
  if (o->dim > ROW_MAX_DIM)
    return errorf(err, errlen, "dim %u: at most %d", o->dim, ROW_MAX_DIM);
  if (o->amtl != TABLE_KEEP && o->amtl != 0 && o->amtl != 1)
    return errorf(err, errlen, "amtl must be 0 or 1");
  if (o->opt != TABLE_KEEP && (o->opt < 0 || o->opt >= ROW_OPT_COUNT_))
    return errorf(err, errlen, "unknown optimizer %d", o->opt);
  if (o->prefix != TABLE_PREFIX_KEEP && o->prefix != TABLE_PREFIX_FREQ)
    return errorf(err, errlen, "unknown prefix rule %d", (int)o->prefix);
  if (o->prefix == TABLE_PREFIX_FREQ && o->amtl != 1)
    return errorf(err, errlen,
                  "the prefix-from-frequency rule makes AMTL rows: it needs "
                  "amtl = 1 (--amtl 1)");
  if (o->min_prefix > 0 && o->dim > 0 && o->min_prefix > o->dim)
    return errorf(err, errlen, "min prefix %u is larger than dim %u",
                  o->min_prefix, o->dim);
  return 0;
}

/* How migrate and import both begin: a zeroed report (rep is not NULL)
 * and options that are valid on their own. */
static int job_start(struct table_migrate_report *rep,
                     const struct table_migrate_opts *o, char *err,
                     size_t errlen) {
  memset(rep, 0, sizeof(*rep));
  return check_opts(o, err, errlen);
}

/* The destination's table for a source table. */
static struct store_table dest_table(const struct store_table *s,
                                     const struct table_migrate_opts *o);

/* Options that only the tables can refuse (before anything is opened). */
static int check_tables(const struct store_table *t, size_t n,
                        const struct table_migrate_opts *o, char *err,
                        size_t errlen) {
  for (size_t k = 0; k < n; k++) {
    struct store_table d = dest_table(&t[k], o);
    if (o->min_prefix > d.dim)
      return errorf(err, errlen,
                    "table %" PRIu32 ": min prefix %u > dim %u of the "
                    "destination",
                    d.id, o->min_prefix, d.dim);
  }
  return 0;
}

static struct store_table dest_table(const struct store_table *s,
                                     const struct table_migrate_opts *o) {
  struct store_table t = *s;
  if (o->dim)
    t.dim = o->dim;
  if (o->amtl != TABLE_KEEP)
    t.amtl = o->amtl;
  if (o->opt != TABLE_KEEP && o->opt != (int)s->opt.kind)
    sparse_opt_defaults(&t.opt, (enum row_opt)o->opt);
  return t;
}

static unsigned freq_prefix(uint32_t count, unsigned d,
                            const struct table_migrate_opts *o) {
  double full = o->full_count ? (double)o->full_count : 1024.0;
  unsigned lo = o->min_prefix ? o->min_prefix : 1;
  double x = ceil((double)d * log1p((double)count) / log1p(full));
  unsigned p = x >= (double)d ? d : (unsigned)x;
  if (p < lo)
    p = lo;
  return p > d ? d : p;
}

/* Work buffers of one job: floats for values, state and the init. */
struct xform {
  float *values, *state, *init;
  uint8_t *enc;
};

static void xform_init(struct xform *x) {
  x->values = xmalloc(sizeof(float) * ROW_MAX_DIM);
  x->state = xmalloc(sizeof(float) * 2 * ROW_MAX_DIM);
  x->init = xmalloc(sizeof(float) * ROW_MAX_DIM);
  x->enc = xmalloc(row_size(ROW_MAX_DIM, ROW_OPT_ADAM));
}

static void xform_free(struct xform *x) {
  free(x->values);
  free(x->state);
  free(x->init);
  free(x->enc);
}

/* in (a row of table st, with state if has_state) -> out (a row of dt).
 * dst is a destination store holding dt (for the deterministic init). */
static void transform(const struct store_table *st,
                      const struct store_table *dt,
                      const struct table_migrate_opts *o, struct store *dst,
                      uint64_t fid, const struct row *in, int has_state,
                      struct xform *x, struct row *out,
                      struct table_migrate_report *rep) {
  (void)st;
  *out = *in;
  out->version = ROW_VERSION;
  out->opt = (uint8_t)dt->opt.kind;
  out->values = x->values;
  out->state = x->state;
  int keep_state = has_state && !o->drop_state && in->opt == dt->opt.kind;
  if (!keep_state)
    out->opt_step = 0;
  if (in->p == 0) {
    out->p = 0;
    return;
  }
  unsigned p;
  if (!dt->amtl)
    p = dt->dim;
  else if (o->prefix == TABLE_PREFIX_FREQ)
    p = freq_prefix(in->count, dt->dim, o);
  else
    p = in->p < dt->dim ? in->p : dt->dim;
  unsigned keep = in->p < p ? in->p : p;
  out->p = (uint16_t)p;
  memcpy(out->values, in->values, sizeof(float) * keep);
  if (p > keep) {
    CHECK(store_init_values(dst, dt->id, fid, x->init, p) == 0, "table %u",
          dt->id);
    memcpy(out->values + keep, x->init + keep, sizeof(float) * (p - keep));
    rep->padded++;
  }
  if (p < in->p)
    rep->truncated++;
  unsigned slots = row_slots(dt->opt.kind);
  if (slots) {
    sparse_opt_init_state(&dt->opt, out->state, p, 0, p);
    if (keep_state)
      for (unsigned s = 0; s < slots; s++)
        memcpy(out->state + (size_t)s * p, in->state + (size_t)s * in->p,
               sizeof(float) * keep);
  }
}

static int filtered(const struct row *r, const struct table_migrate_opts *o) {
  return (o->min_count > 1 && r->count < o->min_count) ||
         (o->min_last_step && r->last_step < o->min_last_step);
}

/* ---- sources: a store set or export files ---------------------------- */

struct efile {
  const char *path;
  FILE *f;
  struct store_table t; /* schema from the header */
  unsigned slots;       /* state slots in the records (0 = none) */
  size_t reclen;
  uint64_t nrec;       /* records in the file (from its size) */
  uint64_t rows, hash; /* read so far; FNV-1a of the records */
  uint8_t *rec;
  float *values, *state;
};

#define FNV_OFF 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv(uint64_t h, const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * FNV_PRIME;
  return h;
}

static void le32(uint8_t *b, uint32_t v) {
  for (int i = 0; i < 4; i++)
    b[i] = (uint8_t)(v >> 8 * i);
}
static void le64(uint8_t *b, uint64_t v) {
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)(v >> 8 * i);
}
static uint32_t rd32(const uint8_t *b) {
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
         (uint32_t)b[3] << 24;
}
static uint64_t rd64(const uint8_t *b) {
  return (uint64_t)rd32(b) | (uint64_t)rd32(b + 4) << 32;
}

static size_t rec_len(unsigned dim, unsigned slots) {
  return 32 + (size_t)4 * dim * (1 + slots);
}

static void header_encode(const struct store_table *t, unsigned slots,
                          uint8_t h[TABLE_EXPORT_HEADER_LEN]) {
  memset(h, 0, TABLE_EXPORT_HEADER_LEN);
  memcpy(h, TABLE_EXPORT_MAGIC, 8);
  le32(h + 8, TABLE_EXPORT_VERSION);
  le32(h + 12, TABLE_EXPORT_HEADER_LEN);
  le32(h + 16, (uint32_t)rec_len(t->dim, slots));
  le32(h + 20, t->id);
  le32(h + 24, t->dim);
  h[28] = (uint8_t)t->opt.kind;
  h[29] = (uint8_t)(t->amtl ? 1 : 0);
  h[30] = (uint8_t)slots;
  h[31] = ROW_VERSION;
  le64(h + 32, t->seed);
  uint32_t sb;
  memcpy(&sb, &t->init_std, 4);
  le32(h + 40, sb);
  le32(h + 44, t->min_count);
  le64(h + 48, t->ttl_steps);
  le64(h + 56, t->amtl_warmup_steps);
}

/* Encodes one row as an export record (values and state padded to D). */
static void rec_encode(uint8_t *b, size_t len, unsigned dim, unsigned slots,
                       uint64_t fid, const struct row *r) {
  memset(b, 0, len);
  le64(b, fid);
  le32(b + 8, r->count);
  le32(b + 12, r->clicks);
  le64(b + 16, r->last_step);
  le32(b + 24, r->opt_step);
  b[28] = (uint8_t)r->p;
  b[29] = (uint8_t)(r->p >> 8);
  b[30] = r->flags;
  memcpy(b + 32, r->values, sizeof(float) * r->p);
  for (unsigned s = 0; s < slots; s++)
    memcpy(b + 32 + (size_t)4 * dim * (1 + s), r->state + (size_t)s * r->p,
           sizeof(float) * r->p);
}

static void efile_close(struct efile *e) {
  if (e->f)
    fclose(e->f);
  free(e->rec);
  free(e->values);
  free(e->state);
  memset(e, 0, sizeof(*e));
}

static int efile_open(const char *path, struct efile *e, char *err,
                      size_t errlen) {
  memset(e, 0, sizeof(*e));
  e->path = path;
  e->f = fopen(path, "rb");
  if (!e->f)
    return errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
  uint8_t h[TABLE_EXPORT_HEADER_LEN];
  if (fread(h, 1, sizeof(h), e->f) != sizeof(h) ||
      memcmp(h, TABLE_EXPORT_MAGIC, 8)) {
    efile_close(e);
    return errorf(err, errlen,
                  "%s: not a maskps-table export (magic %s missing)", path,
                  TABLE_EXPORT_MAGIC);
  }
  uint32_t ver = rd32(h + 8), hl = rd32(h + 12), rl = rd32(h + 16);
  if (ver != TABLE_EXPORT_VERSION) {
    efile_close(e);
    return errorf(err, errlen,
                  "%s: export format version %" PRIu32
                  ", this maskps-table reads version %d%s",
                  path, ver, TABLE_EXPORT_VERSION,
                  ver > TABLE_EXPORT_VERSION ? " (use a newer maskps-table)"
                                             : "");
  }
  struct store_table *t = &e->t;
  t->id = rd32(h + 20);
  t->dim = rd32(h + 24);
  unsigned opt = h[28], amtl = h[29], slots = h[30], rv = h[31];
  t->seed = rd64(h + 32);
  uint32_t sb = rd32(h + 40);
  memcpy(&t->init_std, &sb, 4);
  t->min_count = rd32(h + 44);
  t->ttl_steps = rd64(h + 48);
  t->amtl_warmup_steps = rd64(h + 56);
  const char *bad = NULL;
  if (hl != TABLE_EXPORT_HEADER_LEN)
    bad = "header length";
  else if (t->dim < 1 || t->dim > ROW_MAX_DIM)
    bad = "dim";
  else if (opt >= ROW_OPT_COUNT_)
    bad = "optimizer";
  else if (amtl > 1)
    bad = "amtl flag";
  else if (slots != 0 && slots != row_slots((enum row_opt)opt))
    bad = "state slots";
  else if (rv < 1 || rv > ROW_VERSION)
    bad = "row version";
  else if (rl != rec_len(t->dim, slots))
    bad = "record length";
  else if (!(t->init_std >= 0 && isfinite(t->init_std)))
    bad = "init_std";
  if (bad) {
    efile_close(e);
    return errorf(err, errlen, "%s: bad header field: %s", path, bad);
  }
  struct stat st;
  uint64_t body = 0;
  if (fstat(fileno(e->f), &st) == 0 &&
      (uint64_t)st.st_size >=
          TABLE_EXPORT_HEADER_LEN + TABLE_EXPORT_TRAILER_LEN)
    body = (uint64_t)st.st_size - TABLE_EXPORT_HEADER_LEN -
           TABLE_EXPORT_TRAILER_LEN;
  if ((uint64_t)st.st_size <
          TABLE_EXPORT_HEADER_LEN + TABLE_EXPORT_TRAILER_LEN ||
      body % rl) {
    efile_close(e);
    return errorf(err, errlen,
                  "%s: %lld bytes is not a header, whole %" PRIu32
                  "-byte records and a trailer: truncated or corrupt (an "
                  "interrupted export?)",
                  path, (long long)st.st_size, rl);
  }
  e->nrec = body / rl;
  sparse_opt_defaults(&t->opt, (enum row_opt)opt);
  t->amtl = (int)amtl;
  e->slots = slots;
  e->reclen = rl;
  e->hash = FNV_OFF;
  e->rec =
      xmalloc(rl > TABLE_EXPORT_TRAILER_LEN ? rl : TABLE_EXPORT_TRAILER_LEN);
  e->values = xmalloc(sizeof(float) * t->dim);
  e->state = xcalloc((size_t)2 * t->dim + 1, sizeof(float));
  setvbuf(e->f, NULL, _IOFBF, 1 << 20);
  return 0;
}

/* The next record: 1 and the row, 0 at a valid trailer, -1 on a short,
 * corrupt or mismatched file. */
static int efile_next(struct efile *e, uint64_t *fid, struct row *r, char *err,
                      size_t errlen) {
  if (e->rows == e->nrec) {
    uint8_t *t = e->rec;
    if (fread(t, 1, TABLE_EXPORT_TRAILER_LEN, e->f) !=
            TABLE_EXPORT_TRAILER_LEN ||
        memcmp(t, TABLE_EXPORT_END, 8))
      return errorf(err, errlen, "%s: trailer missing after %" PRIu64 " rows",
                    e->path, e->rows);
    uint64_t rows = rd64(t + 8), sum = rd64(t + 16);
    if (rows != e->rows || sum != e->hash)
      return errorf(err, errlen,
                    "%s: trailer says %" PRIu64 " rows, checksum %016" PRIx64
                    "; the file holds %" PRIu64 " rows, checksum %016" PRIx64
                    ": the file is corrupt",
                    e->path, rows, sum, e->rows, e->hash);
    return 0;
  }
  if (fread(e->rec, 1, e->reclen, e->f) != e->reclen)
    return errorf(err, errlen, "%s: read error after %" PRIu64 " rows", e->path,
                  e->rows);

  const uint8_t *b = e->rec;
  *fid = rd64(b);
  r->version = ROW_VERSION;
  r->count = rd32(b + 8);
  r->clicks = rd32(b + 12);
  r->last_step = rd64(b + 16);
  r->opt_step = rd32(b + 24);
  r->p = (uint16_t)(b[28] | b[29] << 8);
  r->flags = b[30];
  r->opt = (uint8_t)e->t.opt.kind;
  if (r->p > e->t.dim || b[31] || (r->flags & ~ROW_F_PENDING) ||
      (r->p == 0) != ((r->flags & ROW_F_PENDING) != 0))
    return errorf(err, errlen,
                  "%s: row %" PRIu64 " (key 0x%016" PRIx64
                  "): bad prefix length or flags",
                  e->path, e->rows, *fid);
  r->values = e->values;
  r->state = e->state;
  memcpy(r->values, b + 32, sizeof(float) * r->p);
  for (unsigned s = 0; s < e->slots; s++)
    memcpy(r->state + (size_t)s * r->p, b + 32 + (size_t)4 * e->t.dim * (1 + s),
           sizeof(float) * r->p);
  e->hash = fnv(e->hash, b, e->reclen);
  e->rows++;
  return 1;
}

/* ---- the copy into a new store set ----------------------------------- */

/* Rows of one table over every shard of a set in ascending key order: a
 * merge of the per-shard iterators (each in key order). Every destination
 * store then receives its rows in key order, which makes the memtable
 * inserts cheap and the flushed files non-overlapping. */
struct merge {
  size_t n;
  struct store_iter **it;
  int *live;        /* [n] 1: head[i] holds a row */
  uint64_t *fid;    /* [n] head keys */
  struct row *head; /* [n] head rows (buffers owned by it[i]) */
  long last;        /* shard returned last (advance it first), or -1 */
};

static void merge_close(struct merge *m) {
  for (size_t i = 0; m->it && i < m->n; i++)
    store_iter_free(m->it[i]);
  free(m->it);
  free(m->live);
  free(m->fid);
  free(m->head);
  memset(m, 0, sizeof(*m));
}

static int merge_advance(struct merge *m, size_t i, char *err, size_t errlen) {
  int rc = store_iter_next(m->it[i], &m->fid[i], &m->head[i], err, errlen);
  m->live[i] = rc == 1;
  return rc < 0 ? -1 : 0;
}

/* Opens a merge of table's rows over the set, from feature id lo on. */
static int merge_open(struct merge *m, struct set *s, uint32_t table,
                      uint64_t lo, char *err, size_t errlen) {
  m->n = s->n;
  m->it = xcalloc(s->n, sizeof(*m->it));
  m->live = xcalloc(s->n, sizeof(*m->live));
  m->fid = xcalloc(s->n, sizeof(*m->fid));
  m->head = xcalloc(s->n, sizeof(*m->head));
  m->last = -1;
  for (size_t i = 0; i < s->n; i++) {
    m->it[i] = store_iter_new(s->st[i], table, err, errlen);
    if (m->it[i] && lo)
      store_iter_seek(m->it[i], lo);
    if (!m->it[i] || merge_advance(m, i, err, errlen) < 0) {
      merge_close(m);
      return -1;
    }
  }
  return 0;
}

/* As store_iter_next; the row stays valid until the next call. */
static int merge_next(struct merge *m, uint64_t *fid, struct row *r, char *err,
                      size_t errlen) {
  if (m->last >= 0 && merge_advance(m, (size_t)m->last, err, errlen) < 0)
    return -1;
  long best = -1;
  for (size_t i = 0; i < m->n; i++)
    if (m->live[i] && (best < 0 || m->fid[i] < m->fid[best]))
      best = (long)i;
  m->last = best;
  if (best < 0)
    return 0;
  *fid = m->fid[best];
  *r = m->head[best];
  return 1;
}

struct src {
  size_t ntables;
  struct store_table *tables; /* [ntables] source schemas */
  struct set *set;            /* a store set, or */
  const char *const *files;   /* one export file per table */
};

static uint64_t kill_after(void) {
  const char *v = getenv("MASKPS_TABLE_KILL_AFTER");
  return v && *v ? strtoull(v, NULL, 10) : 0;
}

/* One thread's share of a copy: the rows with feature ids in [lo, hi] of
 * every table, written through its own bulk loaders (one per destination;
 * their files never overlap another share's, since store_bulk starts a
 * file per table). */
struct part {
  const struct src *src;
  const struct table_layout *dl;
  struct store **dst;
  size_t nto;
  const struct table_migrate_opts *o;
  uint64_t lo, hi;
  struct store_bulk **bulk; /* [nto] */
  int bulk_on;              /* 0 after rows came out of key order */
  struct table_sum *want;   /* [ntables] sums of what was written */
  struct table_migrate_report rep;
  struct xform x;
  struct progress *pr; /* NULL: another share shows progress */
  unsigned weight;     /* rows a tick stands for (shares) */
  pthread_mutex_t *mu; /* guards iterator creation / release */
  _Atomic uint64_t *written, kill_n;
  char err[1024];
  int rc;
};

static void *copy_part(void *arg) {
  struct part *p = arg;
  const struct src *src = p->src;
  const struct table_migrate_opts *o = p->o;
  char *err = p->err;
  const size_t errlen = sizeof(p->err);
  for (size_t k = 0; k < src->ntables && p->rc == 0; k++) {
    const struct store_table *st = &src->tables[k], *dt = &p->dl->tables[k];
    p->want[k].table = dt->id;
    struct merge mg;
    struct efile ef;
    int has_state = 1;
    if (src->set) {
      pthread_mutex_lock(p->mu);
      int mrc = merge_open(&mg, src->set, st->id, p->lo, err, errlen);
      pthread_mutex_unlock(p->mu);
      if (mrc < 0) {
        p->rc = -1;
        break;
      }
    } else {
      if (efile_open(src->files[k], &ef, err, errlen) < 0) {
        p->rc = -1;
        break;
      }
      has_state = ef.slots > 0;
    }
    /* A copy that changes nothing in the rows writes the stored bytes. */
    const int same = src->set && st->dim == dt->dim &&
                     st->opt.kind == dt->opt.kind && st->amtl == dt->amtl &&
                     !o->drop_state &&
                     (!dt->amtl || o->prefix == TABLE_PREFIX_KEEP);
    uint64_t fid = 0;
    struct row in, out;
    int got;
    for (;;) {
      got = src->set ? merge_next(&mg, &fid, &in, err, errlen)
                     : efile_next(&ef, &fid, &in, err, errlen);
      if (got != 1 || fid > p->hi || fid < p->lo) {
        got = got < 0 ? -1 : 0;
        break;
      }
      p->rep.rows_in++;
      if (p->pr)
        for (unsigned w = 0; w < p->weight; w++)
          progress_tick(p->pr);
      if (filtered(&in, o)) {
        p->rep.filtered++;
        continue;
      }
      uint32_t shard = keys_shard(fid, (uint32_t)p->nto);
      const void *enc;
      size_t len;
      if (same && in.version == ROW_VERSION) {
        store_iter_raw(mg.it[mg.last], &enc, &len);
        out = in;
      } else {
        transform(st, dt, o, p->dst[shard], fid, &in, has_state, &p->x, &out,
                  &p->rep);
        len = row_encode(&out, p->x.enc, row_size(ROW_MAX_DIM, ROW_OPT_ADAM));
        CHECK(len > 0, "row of p %u", out.p);
        enc = p->x.enc;
      }
      /* Bulk loading (SST files ingested at the end) while the rows come
       * in key order, as a merge of stores always delivers them; an
       * import file out of key order (one share only) ingests what was
       * loaded so far and writes the rest one Put each (later rows win,
       * as with Puts). */
      int b = p->bulk_on ? store_bulk_put(p->bulk[shard], dt->id, fid, enc, len,
                                          err, errlen)
                         : 1;
      if (b == 1 && p->bulk_on) {
        CHECK(!p->mu, "merged rows out of key order");
        p->bulk_on = 0;
        for (size_t i = 0; i < p->nto && b == 1; i++)
          if (store_bulk_finish(p->bulk[i], err, errlen) < 0)
            b = -1;
      }
      if (b == 1)
        b = store_debug_put_raw(p->dst[shard], dt->id, fid, enc, len, err,
                                errlen);
      if (b < 0) {
        got = -1;
        break;
      }
      if (o->no_verify) { /* counts only: the hashes are a tenth of a copy */
        p->want[k].rows++;
        p->want[k].pending += out.p == 0;
      } else {
        sum_add(&p->want[k], fid, &out);
      }
      p->rep.rows_out++;
      if (p->kill_n && atomic_fetch_add(p->written, 1) + 1 == p->kill_n)
        raise(SIGKILL);
    }
    if (src->set) {
      pthread_mutex_lock(p->mu);
      merge_close(&mg);
      pthread_mutex_unlock(p->mu);
    } else {
      efile_close(&ef);
    }
    if (got < 0)
      p->rc = -1;
  }
  return NULL;
}

/* Threads of a migration: the machine's 2 cores (a share reads, transforms
 * and writes SST files; RocksDB's own threads are idle meanwhile). */
#define COPY_PARTS 2

/* Streams every row of src through transform into nto fresh stores at
 * tmp[0..nto), writes their manifests, and verifies them against the sums
 * of what was written. A store set is copied by COPY_PARTS threads, each
 * over a range of feature ids; an import file by one. */
static int copy_into(const struct src *src, char **tmp, size_t nto,
                     const struct table_migrate_opts *o,
                     const struct table_io *io, const char *what,
                     struct table_migrate_report *rep, char *err,
                     size_t errlen) {
  struct table_layout dl = {(uint32_t)nto, 0, src->ntables,
                            xmalloc(src->ntables * sizeof(struct store_table))};
  for (size_t k = 0; k < src->ntables; k++) {
    dl.tables[k] = dest_table(&src->tables[k], o);
    if (o->min_prefix > dl.tables[k].dim) {
      errorf(err, errlen, "table %" PRIu32 ": min prefix %u > dim %u",
             dl.tables[k].id, o->min_prefix, dl.tables[k].dim);
      table_layout_free(&dl);
      return -1;
    }
  }
  const size_t nparts = src->set ? COPY_PARTS : 1;
  struct store **dst = xcalloc(nto, sizeof(*dst));
  struct part *parts = xcalloc(nparts, sizeof(*parts));
  struct table_sum *want = xcalloc(src->ntables, sizeof(*want));
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  _Atomic uint64_t written = 0;
  int rc = 0;
  size_t mb = mem_of(io);
  for (size_t i = 0; i < nto && rc == 0; i++) {
    if (mkdir(tmp[i], 0755) != 0) {
      rc =
          errorf(err, errlen, "%s: cannot create: %s", tmp[i], strerror(errno));
      break;
    }
    dl.rank = (uint32_t)i;
    dst[i] = open_store(tmp[i], &dl, 1, mb, err, errlen);
    if (!dst[i])
      rc = -1;
  }
  struct progress pr = {io && io->progress, what, clock_sec(), 0, 0};
  for (size_t t = 0; t < nparts; t++) {
    struct part *p = &parts[t];
    p->src = src;
    p->dl = &dl;
    p->dst = dst;
    p->nto = nto;
    p->o = o;
    /* equal shares of the feature-id space (ids are hashes) */
    p->lo = t == 0 ? 0 : (UINT64_MAX / nparts) * t + 1;
    p->hi = t + 1 == nparts ? UINT64_MAX : (UINT64_MAX / nparts) * (t + 1);
    p->bulk = xcalloc(nto, sizeof(*p->bulk));
    p->bulk_on = 1;
    p->want = xcalloc(src->ntables, sizeof(*p->want));
    xform_init(&p->x);
    p->pr = t == 0 ? &pr : NULL;
    p->weight = (unsigned)nparts;
    p->mu = nparts > 1 ? &mu : NULL;
    p->written = &written;
    p->kill_n = kill_after();
    for (size_t i = 0; i < nto && rc == 0; i++)
      if (!(p->bulk[i] = store_bulk_new(dst[i], err, errlen)))
        rc = -1;
  }
  double t0 = clock_sec();
  if (rc == 0) {
    pthread_t th[COPY_PARTS];
    size_t started = 0;
    for (size_t t = 1; t < nparts; t++) {
      if (pthread_create(&th[t], NULL, copy_part, &parts[t]) != 0)
        break;
      started = t;
    }
    copy_part(&parts[0]);
    for (size_t t = started + 1; t < nparts; t++) /* not started: run here */
      copy_part(&parts[t]);
    for (size_t t = 1; t <= started; t++)
      pthread_join(th[t], NULL);
  }
  int bulk_on = 1;
  for (size_t t = 0; t < nparts; t++) {
    struct part *p = &parts[t];
    if (rc == 0 && p->rc < 0)
      rc = errorf(err, errlen, "%s", p->err);
    bulk_on &= p->bulk_on;
    rep->rows_in += p->rep.rows_in;
    rep->rows_out += p->rep.rows_out;
    rep->filtered += p->rep.filtered;
    rep->truncated += p->rep.truncated;
    rep->padded += p->rep.padded;
    for (size_t k = 0; k < src->ntables; k++) {
      want[k].table = dl.tables[k].id;
      want[k].rows += p->want[k].rows;
      want[k].pending += p->want[k].pending;
      want[k].values_sum += p->want[k].values_sum;
      want[k].full_sum += p->want[k].full_sum;
    }
  }
  for (size_t t = 0; t < nparts; t++)
    for (size_t i = 0; i < nto && rc == 0 && bulk_on; i++)
      rc = store_bulk_finish(parts[t].bulk[i], err, errlen);
  for (size_t t = 0; t < nparts; t++) {
    for (size_t i = 0; i < nto; i++)
      store_bulk_free(parts[t].bulk[i]);
    free(parts[t].bulk);
    free(parts[t].want);
    xform_free(&parts[t].x);
  }
  free(parts);
  for (size_t i = 0; i < nto; i++) {
    char e2[512];
    if (dst[i] && store_close(dst[i], e2, sizeof(e2)) < 0 && rc == 0)
      rc = errorf(err, errlen, "%s", e2);
  }
  rep->seconds = clock_sec() - t0;
  progress_end(&pr);
  for (size_t i = 0; i < nto && rc == 0; i++) {
    dl.rank = (uint32_t)i;
    rc = table_manifest_write(tmp[i], &dl, err, errlen);
  }
  if (rc == 0) {
    if (o->no_verify) {
      for (size_t k = 0; io && io->out && k < src->ntables; k++)
        fprintf(io->out,
                "copied table %" PRIu32 ": rows %" PRIu64 " pending %" PRIu64
                " (no checksums: --no-verify)\n",
                want[k].table, want[k].rows, want[k].pending);
    } else {
      print_sums(io ? io->out : NULL, "expected", want, src->ntables);
    }
    if (!o->no_verify) {
      struct set vs;
      struct table_sum *got = NULL;
      size_t ng = 0;
      rc = set_open((const char *const *)tmp, nto, 1, mb, &vs, err, errlen);
      if (rc == 0) {
        rc = verify_set(&vs, io, "written", &got, &ng, err, errlen);
        set_close(&vs);
      }
      for (size_t k = 0; rc == 0 && k < ng; k++)
        if (got[k].table != want[k].table || got[k].rows != want[k].rows ||
            got[k].full_sum != want[k].full_sum)
          rc = errorf(err, errlen,
                      "table %" PRIu32 ": the written rows do not verify "
                      "(%" PRIu64 " rows, sum %016" PRIx64 "; expected %" PRIu64
                      ", %016" PRIx64 "); nothing was renamed into place",
                      want[k].table, got[k].rows, got[k].full_sum, want[k].rows,
                      want[k].full_sum);
      free(got);
    }
  }
  free(want);
  free(dst);
  table_layout_free(&dl);
  return rc;
}

int table_migrate(const char *const *from, size_t nfrom, const char *const *to,
                  size_t nto, const struct table_migrate_opts *o,
                  const struct table_io *io, struct table_migrate_report *rep,
                  char *err, size_t errlen) {
  struct table_migrate_report dummy;
  if (!rep)
    rep = &dummy;
  if (job_start(rep, o, err, errlen) < 0)
    return -1;
  if (nto == 0)
    return errorf(err, errlen, "no destination directories given (--to)");
  struct set s;
  if (set_open(from, nfrom, 0, mem_of(io), &s, err, errlen) < 0)
    return -1;
  if (check_tables(s.lay[0].tables, s.lay[0].ntables, o, err, errlen) < 0) {
    set_close(&s);
    return -1;
  }
  char **clean = NULL, **tmp = NULL;
  int rc = dests_prepare(to, nto, &clean, &tmp, err, errlen);
  /* Only now open the sources: a refused job opens (and so touches)
   * nothing. */
  for (size_t r = 0; r < s.n && rc == 0; r++) {
    s.st[r] = open_store(s.dirs[r], &s.lay[r], 0, mem_of(io), err, errlen);
    if (!s.st[r])
      rc = -1;
  }
  if (rc == 0) {
    struct table_sum *sums = NULL;
    size_t ns = 0;
    if (!o->no_verify)
      rc = verify_set(&s, io, "source", &sums, &ns, err, errlen);
    free(sums);
  }
  int made = 0;
  if (rc == 0) {
    struct src src = {s.lay[0].ntables, s.lay[0].tables, &s, NULL};
    made = 1;
    rc = copy_into(&src, tmp, nto, o, io, "migrate", rep, err, errlen);
  }
  set_close(&s);
  if (rc == 0)
    rc = dests_commit(clean, tmp, nto, err, errlen);
  dests_free(clean, tmp, nto, made && rc < 0);
  return rc;
}

int table_import(const char *const *files, size_t nfiles, const char *const *to,
                 size_t nto, const struct table_migrate_opts *o,
                 const struct table_io *io, struct table_migrate_report *rep,
                 char *err, size_t errlen) {
  struct table_migrate_report dummy;
  if (!rep)
    rep = &dummy;
  if (job_start(rep, o, err, errlen) < 0)
    return -1;
  if (nfiles == 0 || nfiles > STORE_MAX_TABLES)
    return errorf(err, errlen, "give 1..%d export files", STORE_MAX_TABLES);
  if (nto == 0)
    return errorf(err, errlen, "no destination directories given (--to)");
  /* Headers first: a wrong file fails before anything is created. */
  struct store_table *tabs = xcalloc(nfiles, sizeof(*tabs));
  const char **sorted = xcalloc(nfiles, sizeof(*sorted));
  int rc = 0;
  for (size_t i = 0; i < nfiles && rc == 0; i++) {
    struct efile e;
    rc = efile_open(files[i], &e, err, errlen);
    if (rc == 0) {
      tabs[i] = e.t;
      efile_close(&e);
    }
  }
  /* Sort files by table id (the store's order), refuse duplicates. */
  for (size_t i = 0; i < nfiles; i++)
    sorted[i] = files[i];
  for (size_t i = 1; rc == 0 && i < nfiles; i++)
    for (size_t k = i; k > 0 && tabs[k].id < tabs[k - 1].id; k--) {
      struct store_table t = tabs[k];
      tabs[k] = tabs[k - 1];
      tabs[k - 1] = t;
      const char *f = sorted[k];
      sorted[k] = sorted[k - 1];
      sorted[k - 1] = f;
    }
  for (size_t i = 1; rc == 0 && i < nfiles; i++)
    if (tabs[i].id == tabs[i - 1].id)
      rc = errorf(err, errlen, "%s and %s both hold table %" PRIu32,
                  sorted[i - 1], sorted[i], tabs[i].id);
  if (rc == 0)
    rc = check_tables(tabs, nfiles, o, err, errlen);
  char **clean = NULL, **tmp = NULL;
  int made = 0;
  if (rc == 0)
    rc = dests_prepare(to, nto, &clean, &tmp, err, errlen);
  if (rc == 0) {
    struct src src = {nfiles, tabs, NULL, sorted};
    made = 1;
    rc = copy_into(&src, tmp, nto, o, io, "import", rep, err, errlen);
  }
  if (rc == 0)
    rc = dests_commit(clean, tmp, nto, err, errlen);
  dests_free(clean, tmp, nto, made && rc < 0);
  free(tabs);
  free(sorted);
  return rc;
}

/* ---- export ----------------------------------------------------------- */

int table_export(const char *const *from, size_t nfrom, const char *outdir,
                 int with_state, const struct table_io *io, char *err,
                 size_t errlen) {
  struct set s;
  if (set_open(from, nfrom, 0, mem_of(io), &s, err, errlen) < 0)
    return -1;
  char **clean = NULL, **tmp = NULL;
  int rc = dests_prepare(&outdir, 1, &clean, &tmp, err, errlen);
  for (size_t r = 0; r < s.n && rc == 0; r++) {
    s.st[r] = open_store(s.dirs[r], &s.lay[r], 0, mem_of(io), err, errlen);
    if (!s.st[r])
      rc = -1;
  }
  int made = 0;
  if (rc == 0) {
    made = 1;
    if (mkdir(tmp[0], 0755) != 0)
      rc =
          errorf(err, errlen, "%s: cannot create: %s", tmp[0], strerror(errno));
  }
  const struct table_layout *l = &s.lay[0];
  uint64_t kill_n = kill_after(), written = 0;
  struct progress pr = {io && io->progress, "export", clock_sec(), 0, 0};
  for (size_t k = 0; rc == 0 && k < l->ntables; k++) {
    const struct store_table *t = &l->tables[k];
    unsigned slots = with_state ? row_slots(t->opt.kind) : 0;
    size_t rl = rec_len(t->dim, slots);
    char path[4200];
    snprintf(path, sizeof(path), "%s/table-%" PRIu32 ".mpt", tmp[0], t->id);
    FILE *f = fopen(path, "wb");
    if (!f) {
      rc = errorf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
      break;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    uint8_t h[TABLE_EXPORT_HEADER_LEN];
    header_encode(t, slots, h);
    fwrite(h, 1, sizeof(h), f);
    uint8_t *rec = xmalloc(rl);
    uint64_t rows = 0, hash = FNV_OFF;
    for (size_t r = 0; r < s.n && rc == 0; r++) {
      struct store_iter *it = store_iter_new(s.st[r], t->id, err, errlen);
      if (!it) {
        rc = -1;
        break;
      }
      uint64_t fid;
      struct row row;
      int got;
      while ((got = store_iter_next(it, &fid, &row, err, errlen)) == 1) {
        rec_encode(rec, rl, t->dim, slots, fid, &row);
        hash = fnv(hash, rec, rl);
        rows++;
        progress_tick(&pr);
        if (fwrite(rec, 1, rl, f) != rl) {
          got = errorf(err, errlen, "%s: write: %s", path, strerror(errno));
          break;
        }
        if (kill_n && ++written == kill_n)
          raise(SIGKILL);
      }
      store_iter_free(it);
      if (got < 0)
        rc = -1;
    }
    uint8_t tr[TABLE_EXPORT_TRAILER_LEN];
    memcpy(tr, TABLE_EXPORT_END, 8);
    le64(tr + 8, rows);
    le64(tr + 16, hash);
    fwrite(tr, 1, sizeof(tr), f);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad && rc == 0)
      rc = errorf(err, errlen, "%s: write: %s", path, strerror(errno));
    free(rec);
    if (io && io->out && rc == 0)
      fprintf(io->out,
              "export table %" PRIu32 ": %" PRIu64
              " rows, %s, fnv1a %016" PRIx64 "\n",
              t->id, rows, slots ? "with optimizer state" : "values only",
              hash);
  }
  progress_end(&pr);
  set_close(&s);
  if (rc == 0) {
    fsync_dir(tmp[0]);
    rc = dests_commit(clean, tmp, 1, err, errlen);
  }
  dests_free(clean, tmp, 1, made && rc < 0);
  return rc;
}
