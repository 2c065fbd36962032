/*
 * maskps-table: inspect, export, import, migrate and verify stopped shard
 * stores (pserver/table.h; the export format in docs/table-format.md).
 * Exit status: 0 done, 1 the job failed (the message says where; nothing
 * was written at the destination), 2 a usage error.
 */
#include "common/check.h"
#include "pserver/table.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: maskps-table inspect DIR...\n"
    "       maskps-table verify DIR...\n"
    "       maskps-table export --from DIR... --to OUTDIR [--no-state]\n"
    "       maskps-table import --from FILE... --to DIR... [CHANGES]\n"
    "       maskps-table migrate --from DIR... --to DIR... [CHANGES]\n"
    "       maskps-table manifest --shards S --table SPEC... DIR...\n"
    "Try 'maskps-table --help' for more.\n";

static const char HELP[] =
    "maskps-table: offline tools for maskps embedding tables (the RocksDB\n"
    "stores of stopped pservers). A set of S stores is named by its S\n"
    "directories in any order; each holds a maskps-table.json manifest\n"
    "(shards, rank, tables) that says which shard it is.\n"
    "\n"
    "  inspect DIR...   tables, rows, bytes, prefix-length histogram, "
    "optimizer,\n"
    "                   format versions and shard layout of each store\n"
    "  verify DIR...    per table: rows and two order-independent checksums\n"
    "                   (values: table, key, p, values; full: also stats and\n"
    "                   optimizer state); fails on misplaced or corrupt rows\n"
    "  export           one file per table, OUTDIR/table-<id>.mpt (format in\n"
    "                   docs/table-format.md; NumPy reads it in a few lines)\n"
    "  import           export files into a new set of len(--to) shards\n"
    "  migrate          a store set into a new set of len(--to) shards: a row\n"
    "                   goes to shard jump_hash(key, len(--to)); prints the\n"
    "                   source, expected and written checksums\n"
    "  manifest         writes the manifest of stores made by maskps-pserver\n"
    "                   (rank = position on the command line); the store is\n"
    "                   opened to check the schema\n"
    "\n"
    "CHANGES (migrate and import):\n"
    "  --dim N            new D for every table: truncate, or pad from the\n"
    "                     deterministic init (the values a fresh row gets)\n"
    "  --amtl 0|1         fixed-D rows (p = D) or AMTL prefixes\n"
    "  --prefix keep|freq with --amtl 1: keep each row's prefix (capped at D)\n"
    "                     or p = clamp(ceil(D ln(1+count) / ln(1+F)), M, D)\n"
    "  --full-count F     F of the rule above (default 1024)\n"
    "  --min-prefix M     M of the rule above (default 1)\n"
    "  --opt NAME         optimizer of the destination (none, sgd, adagrad,\n"
    "                     adam, ftrl); a change starts fresh state\n"
    "  --drop-state       fresh optimizer state (and step count)\n"
    "  --min-count N      drop rows seen fewer than N times\n"
    "  --min-last-step N  drop rows last updated before step N\n"
    "  --no-verify        skip the checksums (faster)\n"
    "Other options: --memory-mb N (per open store, default 64), --no-state\n"
    "(export values and stats only), --quiet (no progress line).\n"
    "\n"
    "Table SPEC for `manifest`: id=1,dim=16,opt=adagrad,seed=N,init_std=X\n"
    "[,amtl=1][,min_count=N][,ttl_steps=N][,amtl_warmup_steps=N], the\n"
    "values the pserver's config gave the table.\n"
    "\n"
    "Destinations must not exist or be empty directories. Everything is\n"
    "written into <dest>.tmp-<pid> and renamed into place at the end, so a\n"
    "killed job leaves no partial table; re-run it (stale temporaries of\n"
    "dead runs are removed).\n";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "maskps-table: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n%s", USAGE);
  return 2;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
  char *end;
  errno = 0;
  if (!s || !*s || *s == '-')
    return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > max)
    return -1;
  *out = v;
  return 0;
}

static int opt_kind(const char *name) {
  for (int k = 0; k < ROW_OPT_COUNT_; k++)
    if (!strcmp(name, row_opt_name((enum row_opt)k)))
      return k;
  return -1;
}

/* id=1,dim=16,... -> t; -1 on a bad spec (message printed). */
static int parse_spec(const char *spec, struct store_table *t) {
  memset(t, 0, sizeof(*t));
  int have_id = 0, have_dim = 0, have_opt = 0, have_seed = 0, have_std = 0;
  sparse_opt_defaults(&t->opt, ROW_OPT_NONE);
  t->min_count = 1;
  char *copy = xstrdup(spec), *save = NULL;
  int rc = 0;
  for (char *kv = strtok_r(copy, ",", &save); kv && rc == 0;
       kv = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(kv, '=');
    uint64_t v = 0;
    if (!eq) {
      rc = -1;
      break;
    }
    *eq++ = 0;
    if (!strcmp(kv, "id") && parse_u64(eq, UINT32_MAX, &v) == 0)
      t->id = (uint32_t)v, have_id = 1;
    else if (!strcmp(kv, "dim") && parse_u64(eq, ROW_MAX_DIM, &v) == 0 && v)
      t->dim = (unsigned)v, have_dim = 1;
    else if (!strcmp(kv, "opt") && opt_kind(eq) >= 0)
      sparse_opt_defaults(&t->opt, (enum row_opt)opt_kind(eq)), have_opt = 1;
    else if (!strcmp(kv, "amtl") && parse_u64(eq, 1, &v) == 0)
      t->amtl = (int)v;
    else if (!strcmp(kv, "seed") && parse_u64(eq, UINT64_MAX, &v) == 0)
      t->seed = v, have_seed = 1;
    else if (!strcmp(kv, "init_std")) {
      char *end;
      double x = strtod(eq, &end);
      if (*end || !(x >= 0 && x < 1e6))
        rc = -1;
      t->init_std = (float)x, have_std = 1;
    } else if (!strcmp(kv, "min_count") && parse_u64(eq, UINT32_MAX, &v) == 0)
      t->min_count = (uint32_t)v;
    else if (!strcmp(kv, "ttl_steps") && parse_u64(eq, UINT64_MAX, &v) == 0)
      t->ttl_steps = v;
    else if (!strcmp(kv, "amtl_warmup_steps") &&
             parse_u64(eq, UINT64_MAX, &v) == 0)
      t->amtl_warmup_steps = v;
    else
      rc = -1;
  }
  free(copy);
  if (rc == 0 && !(have_id && have_dim && have_opt && have_seed && have_std))
    rc = -1;
  if (rc < 0)
    fprintf(stderr,
            "maskps-table: bad table spec '%s': want "
            "id=N,dim=N,opt=NAME,seed=N,init_std=X[,amtl=0|1][,min_count=N]"
            "[,ttl_steps=N][,amtl_warmup_steps=N]\n",
            spec);
  return rc;
}

/* The words after a list option, up to the next "--option". */
static size_t take_list(int argc, char **argv, int *i, const char ***out) {
  size_t n = 0;
  *out = (const char **)&argv[*i + 1];
  while (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2)) {
    (*i)++;
    n++;
  }
  return n;
}

static int cmd_manifest(int argc, char **argv) {
  uint64_t shards = 0;
  struct store_table *tabs = NULL;
  size_t nt = 0, ndirs = 0;
  const char **dirs = NULL;
  int rc = 0;
  for (int i = 2; i < argc && rc == 0; i++) {
    if (!strcmp(argv[i], "--shards") && i + 1 < argc) {
      if (parse_u64(argv[++i], 1u << 20, &shards) < 0 || !shards)
        rc = usage("--shards wants a count >= 1");
    } else if (!strcmp(argv[i], "--table") && i + 1 < argc) {
      tabs = xrealloc(tabs, (nt + 1) * sizeof(*tabs));
      if (parse_spec(argv[++i], &tabs[nt++]) < 0)
        rc = 2;
    } else if (argv[i][0] == '-') {
      rc = usage("unknown option %s", argv[i]);
    } else {
      dirs = xrealloc(dirs, (ndirs + 1) * sizeof(*dirs));
      dirs[ndirs++] = argv[i];
    }
  }
  if (rc == 0 && (!shards || !nt || !ndirs))
    rc = usage("manifest needs --shards, at least one --table and the "
               "directories");
  if (rc == 0 && ndirs != shards)
    rc = usage("--shards %" PRIu64 " but %zu directories", shards, ndirs);
  for (size_t i = 0; rc == 0 && i < ndirs; i++) {
    char path[4096], err[1024];
    snprintf(path, sizeof(path), "%s/%s", dirs[i], TABLE_MANIFEST);
    if (access(path, F_OK) == 0) {
      fprintf(stderr, "maskps-table: %s exists; not overwritten\n", path);
      rc = 1;
      break;
    }
    struct store_options o;
    store_options_defaults(&o);
    o.tables = tabs;
    o.ntables = nt;
    o.memory_mb = 16;
    o.create_if_missing = 0;
    struct store *s = store_open(dirs[i], &o, err, sizeof(err));
    if (!s || store_close(s, err, sizeof(err)) < 0) {
      fprintf(stderr, "maskps-table: %s\n", err);
      rc = 1;
      break;
    }
    struct table_layout l = {(uint32_t)shards, (uint32_t)i, nt, tabs};
    if (table_manifest_write(dirs[i], &l, err, sizeof(err)) < 0) {
      fprintf(stderr, "maskps-table: %s\n", err);
      rc = 1;
    }
  }
  free(tabs);
  free(dirs);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2)
    return usage("no command");
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    fputs(HELP, stdout);
    fputs(USAGE, stdout);
    return 0;
  }
  if (!strcmp(cmd, "manifest"))
    return cmd_manifest(argc, argv);

  struct table_io io = {64, isatty(2), stdout};
  struct table_migrate_opts mo;
  table_migrate_defaults(&mo);
  const char **from = NULL, **to = NULL, **pos = NULL;
  size_t nfrom = 0, nto = 0, npos = 0;
  int with_state = 1;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    uint64_t x;
    if (!strcmp(a, "--from")) {
      if (nfrom)
        return usage("--from given twice");
      nfrom = take_list(argc, argv, &i, &from);
    } else if (!strcmp(a, "--to")) {
      if (nto)
        return usage("--to given twice");
      nto = take_list(argc, argv, &i, &to);
    } else if (!strcmp(a, "--no-state")) {
      with_state = 0;
    } else if (!strcmp(a, "--drop-state")) {
      mo.drop_state = 1;
    } else if (!strcmp(a, "--no-verify")) {
      mo.no_verify = 1;
    } else if (!strcmp(a, "--quiet")) {
      io.progress = 0;
    } else if (!strcmp(a, "--dim")) {
      if (parse_u64(v, ROW_MAX_DIM, &x) < 0 || !x)
        return usage("--dim wants 1..%d", ROW_MAX_DIM);
      mo.dim = (unsigned)x, i++;
    } else if (!strcmp(a, "--amtl")) {
      if (parse_u64(v, 1, &x) < 0)
        return usage("--amtl wants 0 or 1");
      mo.amtl = (int)x, i++;
    } else if (!strcmp(a, "--prefix")) {
      if (v && !strcmp(v, "keep"))
        mo.prefix = TABLE_PREFIX_KEEP;
      else if (v && !strcmp(v, "freq"))
        mo.prefix = TABLE_PREFIX_FREQ;
      else
        return usage("--prefix wants keep or freq");
      i++;
    } else if (!strcmp(a, "--full-count")) {
      if (parse_u64(v, UINT32_MAX, &x) < 0 || x < 1)
        return usage("--full-count wants a count >= 1");
      mo.full_count = (uint32_t)x, i++;
    } else if (!strcmp(a, "--min-prefix")) {
      if (parse_u64(v, ROW_MAX_DIM, &x) < 0 || !x)
        return usage("--min-prefix wants 1..%d", ROW_MAX_DIM);
      mo.min_prefix = (unsigned)x, i++;
    } else if (!strcmp(a, "--opt")) {
      if (!v || opt_kind(v) < 0)
        return usage("--opt wants none, sgd, adagrad, adam or ftrl");
      mo.opt = opt_kind(v), i++;
    } else if (!strcmp(a, "--min-count")) {
      if (parse_u64(v, UINT32_MAX, &x) < 0)
        return usage("--min-count wants a count");
      mo.min_count = (uint32_t)x, i++;
    } else if (!strcmp(a, "--min-last-step")) {
      if (parse_u64(v, UINT64_MAX, &x) < 0)
        return usage("--min-last-step wants a step");
      mo.min_last_step = x, i++;
    } else if (!strcmp(a, "--memory-mb")) {
      if (parse_u64(v, 1u << 20, &x) < 0 || x < 4)
        return usage("--memory-mb wants >= 4");
      io.memory_mb = (size_t)x, i++;
    } else if (a[0] == '-' && a[1] == '-') {
      return usage("unknown option %s", a);
    } else {
      if (!pos)
        pos = (const char **)&argv[i];
      else if (pos + npos != (const char **)&argv[i])
        return usage("directories must come together");
      npos++;
    }
  }

  char err[2048];
  int rc;
  int changes = mo.dim || mo.amtl != TABLE_KEEP || mo.opt != TABLE_KEEP ||
                mo.drop_state || mo.prefix != TABLE_PREFIX_KEEP ||
                mo.full_count || mo.min_prefix || mo.min_count ||
                mo.min_last_step;
  if (!strcmp(cmd, "inspect") || !strcmp(cmd, "verify")) {
    if (nfrom || nto || changes || !with_state)
      return usage("%s takes directories only", cmd);
    if (!npos)
      return usage("%s: no directories", cmd);
    if (!strcmp(cmd, "inspect")) {
      rc = table_inspect(pos, npos, &io, err, sizeof(err));
    } else {
      struct table_sum *s = NULL;
      size_t ns = 0;
      rc = table_verify(pos, npos, &io, &s, &ns, err, sizeof(err));
      free(s);
    }
  } else if (!strcmp(cmd, "export")) {
    if (npos || nto != 1 || !nfrom || changes)
      return usage("export --from DIR... --to OUTDIR [--no-state]");
    rc = table_export(from, nfrom, to[0], with_state, &io, err, sizeof(err));
  } else if (!strcmp(cmd, "migrate") || !strcmp(cmd, "import")) {
    if (npos || !nfrom || !nto || !with_state)
      return usage("%s --from ... --to DIR... [changes]", cmd);
    struct table_migrate_report rep;
    if (!strcmp(cmd, "migrate"))
      rc =
          table_migrate(from, nfrom, to, nto, &mo, &io, &rep, err, sizeof(err));
    else
      rc = table_import(from, nfrom, to, nto, &mo, &io, &rep, err, sizeof(err));
    if (rc == 0)
      printf("%s: %" PRIu64 " rows read, %" PRIu64 " written, %" PRIu64
             " filtered, %" PRIu64 " truncated, %" PRIu64
             " padded, %.2f s (%.0f rows/s)\n",
             cmd, rep.rows_in, rep.rows_out, rep.filtered, rep.truncated,
             rep.padded, rep.seconds,
             rep.seconds > 0 ? (double)rep.rows_in / rep.seconds : 0.0);
  } else {
    return usage("unknown command '%s'", cmd);
  }
  if (rc < 0) {
    fprintf(stderr, "maskps-table %s: %s\n", cmd, err);
    return 1;
  }
  return 0;
}
