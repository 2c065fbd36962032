/*
 * maskps-gen: writes a synthetic Criteo-format click log (common/gen.h).
 * Exit status: 0 done, 1 an I/O failure (the message says which file),
 * 2 a usage error.
 */
#include "common/check.h"
#include "common/gen.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: maskps-gen --rows N [--seed S] [--vocab-scale X] [--start-row K]\n"
    "                  [--out FILE|-] [--report]\n"
    "                  [--split NAME=F,NAME=F,... --out-dir DIR]\n"
    "Try 'maskps-gen --help' for more.\n";

static const char HELP[] =
    "maskps-gen: writes a synthetic click log in the Criteo TSV format.\n"
    "\n"
    "Each line is one ad impression, 40 tab-separated columns:\n"
    "  label     1 (clicked) or 0\n"
    "  I1..I13   integer counts or empty: log-normal, some fields often\n"
    "            empty (I12 in 77%% of rows), I2 sometimes -1..-3\n"
    "  C1..C26   8 lowercase hex digits or empty: categorical tokens drawn\n"
    "            from Zipf distributions over vocabularies of 3 to 20M\n"
    "            values (C3 is the largest), some fields often empty\n"
    "Labels come from a hidden model of the printed fields: per-token\n"
    "weights, pairwise interactions between field pairs (low-rank factors)\n"
    "and terms of the numeric fields, with a CTR of about %.1f%%. The AUC of\n"
    "its true probabilities on the written rows (the best AUC any model can\n"
    "reach on them) is printed by --report.\n"
    "\n"
    "Row i depends only on (seed, vocab-scale, i): two runs with one seed are\n"
    "byte-identical, and parts made with --start-row concatenate to the same\n"
    "file as one run, so parts can be generated in parallel.\n"
    "\n"
    "Options:\n"
    "  --rows N          rows to write (required, > 0)\n"
    "  --seed S          seed of the data and of the hidden model (default 1)\n"
    "  --vocab-scale X   multiply every C-field's vocabulary by X, in\n"
    "                    (0, 1000] (default 1; 0.001 keeps a demo's tables\n"
    "                    small; fields never drop below 3 values)\n"
    "  --start-row K     first row index to write (default 0)\n"
    "  --out FILE|-      where to write (default -, standard output)\n"
    "  --split SPEC      write each row to one of several files instead,\n"
    "                    chosen by a hash of (seed, row): SPEC is\n"
    "                    NAME=FRACTION,... e.g. train=0.8,valid=0.1,test=0.1;\n"
    "                    fractions must sum to 1; at most %d parts\n"
    "  --out-dir DIR     with --split: write DIR/NAME.tsv (DIR and its "
    "parents\n"
    "                    are created)\n"
    "  --report          at the end, print to stderr: rows, CTR, "
    "Bayes-optimal\n"
    "                    AUC, bytes, seconds and rows/s (and the same per\n"
    "                    split file) as key=value pairs\n"
    "  --help            this text\n"
    "A progress line is shown on stderr when it is a terminal.\n"
    "\n"
    "Examples:\n"
    "  maskps-gen --rows 5 --seed 7\n"
    "  maskps-gen --rows 1000000 --vocab-scale 0.01 --out day0.tsv --report\n"
    "  maskps-gen --rows 2000000 --split train=0.8,valid=0.1,test=0.1 \\\n"
    "             --out-dir data/synth --report\n"
    "  # two halves in parallel, same bytes as one run of 2M rows:\n"
    "  maskps-gen --rows 1000000 --out a.tsv & \\\n"
    "  maskps-gen --rows 1000000 --start-row 1000000 --out b.tsv; wait\n";

#define EXIT_USAGE 2

/* Prints "maskps-gen: <message>" and the usage, exits with EXIT_USAGE. */
static _Noreturn void usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static _Noreturn void usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "maskps-gen: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n%s", USAGE);
  exit(EXIT_USAGE);
}

/* A decimal integer >= min without sign, spaces or trailing characters. */
static uint64_t parse_u64(const char *opt, const char *s, uint64_t min) {
  const char *what = min ? "a positive integer" : "a non-negative integer";
  if (!*s || *s < '0' || *s > '9') /* strtoull would accept " -1" */
    usage_error("%s: '%s' is not %s", opt, s, what);
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end || errno || v < min)
    usage_error("%s: '%s' is not %s%s", opt, s, what,
                errno == ERANGE ? " (too large)" : "");
  return v;
}

struct split {
  unsigned n;
  char name[GEN_MAX_SPLITS][64];
  double frac[GEN_MAX_SPLITS];
};

static void parse_split(const char *spec, struct split *sp) {
  const char *p = spec;
  double sum = 0;
  sp->n = 0;
  while (*p) {
    if (sp->n == GEN_MAX_SPLITS)
      usage_error("--split: more than %d parts in '%s'", GEN_MAX_SPLITS, spec);
    size_t nl = strcspn(p, "=,");
    if (p[nl] != '=' || nl == 0 || nl >= sizeof(sp->name[0]))
      usage_error("--split: expected NAME=FRACTION at '%s' (in '%s')", p, spec);
    for (size_t i = 0; i < nl; i++)
      if (!(p[i] == '_' || p[i] == '-' || (p[i] >= '0' && p[i] <= '9') ||
            (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z')))
        usage_error("--split: name at '%s' may only use letters, digits, "
                    "'_' and '-' (in '%s')",
                    p, spec);
    memcpy(sp->name[sp->n], p, nl);
    sp->name[sp->n][nl] = 0;
    for (unsigned k = 0; k < sp->n; k++)
      if (!strcmp(sp->name[k], sp->name[sp->n]))
        usage_error("--split: name '%s' appears twice in '%s'", sp->name[sp->n],
                    spec);
    p += nl + 1;
    char *end;
    errno = 0;
    double f = strtod(p, &end);
    if (end == p || (*end && *end != ',') || errno || !(f > 0 && f <= 1))
      usage_error("--split: fraction at '%s' is not a number in (0, 1] "
                  "(in '%s')",
                  p, spec);
    sp->frac[sp->n++] = f;
    sum += f;
    p = *end ? end + 1 : end;
  }
  if (sp->n == 0)
    usage_error("--split: '%s' names no part", spec);
  if (fabs(sum - 1) > 1e-6)
    usage_error("--split: fractions sum to %g, not 1 (in '%s')", sum, spec);
}

/* mkdir -p: creates dir and its missing parents. Returns 0, or -1 with the
 * directory that failed and why in err. */
static int mkdir_p(const char *dir, char *err, size_t errlen) {
  char path[4096];
  size_t n = strlen(dir);
  if (n >= sizeof(path)) {
    snprintf(err, errlen, "--out-dir: path longer than %zu bytes",
             sizeof(path) - 1);
    return -1;
  }
  memcpy(path, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (path[i] != '/' && path[i] != 0)
      continue;
    char c = path[i];
    path[i] = 0;
    struct stat sb;
    if (mkdir(path, 0777) != 0 &&
        !(errno == EEXIST && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))) {
      snprintf(err, errlen, "cannot create directory '%s': %s", path,
               errno == EEXIST ? "a file of that name exists"
                               : strerror(errno));
      return -1;
    }
    path[i] = c;
  }
  return 0;
}

struct progress {
  uint64_t total;
  double t0, last;
  int shown;
};

static void show_progress(void *ctx, uint64_t done) {
  struct progress *pr = ctx;
  double now = clock_sec();
  /* Only for runs long enough to wonder about, and at most 4 times a second */
  if (now - pr->t0 < 1 || now - pr->last < 0.25)
    return;
  pr->last = now;
  pr->shown = 1;
  fprintf(stderr, "\rmaskps-gen: %llu / %llu rows (%.0f%%), %.2fM rows/s   ",
          (unsigned long long)done, (unsigned long long)pr->total,
          100.0 * (double)done / (double)pr->total,
          (double)done / (now - pr->t0) / 1e6);
}

static void report(const char *what, const struct gen_stats *st, double sec) {
  fprintf(stderr,
          "maskps-gen: report %s rows=%llu ctr=%.6f bayes_auc=%.6f "
          "bytes=%llu",
          what, (unsigned long long)st->rows, gen_stats_ctr(st),
          gen_stats_auc(st), (unsigned long long)st->bytes);
  if (sec >= 0)
    fprintf(stderr, " seconds=%.3f rows_per_s=%.0f", sec,
            sec > 0 ? (double)st->rows / sec : 0);
  fputc('\n', stderr);
}

int main(int argc, char **argv) {
  uint64_t rows = 0, seed = 1, start = 0;
  double scale = 1;
  const char *out = "-", *out_dir = NULL, *split_spec = NULL;
  int want_report = 0, have_rows = 0, have_out = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      printf(HELP, 100 * GEN_TARGET_CTR, GEN_MAX_SPLITS);
      return 0;
    }
    if (!strcmp(a, "--report")) {
      want_report = 1;
      continue;
    }
    static const char *const with_value[] = {
        "--rows", "--seed",  "--vocab-scale", "--start-row",
        "--out",  "--split", "--out-dir"};
    const char *opt = NULL;
    char optbuf[32];
    for (size_t k = 0; k < ARRAY_LEN(with_value) && !opt; k++) {
      size_t n = strlen(with_value[k]);
      if (!strcmp(a, with_value[k])) {
        opt = with_value[k];
        if (i + 1 == argc)
          usage_error("%s needs a value", opt);
        v = argv[++i];
      } else if (!strncmp(a, with_value[k], n) && a[n] == '=') {
        opt = with_value[k];
        v = a + n + 1;
      }
    }
    if (!opt)
      usage_error("unknown option '%s'", a);
    snprintf(optbuf, sizeof(optbuf), "%s", opt);
    if (!strcmp(opt, "--rows")) {
      rows = parse_u64(optbuf, v, 1);
      have_rows = 1;
    } else if (!strcmp(opt, "--seed")) {
      seed = parse_u64(optbuf, v, 0);
    } else if (!strcmp(opt, "--start-row")) {
      start = parse_u64(optbuf, v, 0);
    } else if (!strcmp(opt, "--vocab-scale")) {
      char *end;
      errno = 0;
      scale = strtod(v, &end);
      if (!*v || *end || errno || !(scale > 0 && scale <= 1000))
        usage_error("--vocab-scale: '%s' is not a number in (0, 1000]", v);
    } else if (!strcmp(opt, "--out")) {
      if (!*v)
        usage_error("--out: empty file name (use - for standard output)");
      out = v;
      have_out = 1;
    } else if (!strcmp(opt, "--split")) {
      split_spec = v;
    } else if (!strcmp(opt, "--out-dir")) {
      if (!*v)
        usage_error("--out-dir: empty directory name");
      out_dir = v;
    }
  }
  if (!have_rows)
    usage_error("--rows is required (how many rows to write)");
  if (start > UINT64_MAX - rows)
    usage_error("--start-row + --rows is past 2^64");
  if (split_spec && !out_dir)
    usage_error("--split needs --out-dir (where the NAME.tsv files go)");
  if (out_dir && !split_spec)
    usage_error("--out-dir is only used with --split (use --out FILE)");
  if (split_spec && have_out)
    usage_error("--out and --split exclude each other (--split writes "
                "DIR/NAME.tsv)");

  struct split sp = {.n = 1, .name = {"-"}, .frac = {1}};
  if (split_spec)
    parse_split(split_spec, &sp);

  char err[512];
  struct gen_out outs[GEN_MAX_SPLITS];
  char paths[GEN_MAX_SPLITS][4096];
  int rc = 0;
  memset(outs, 0, sizeof(outs));
  if (split_spec) {
    if (mkdir_p(out_dir, err, sizeof(err)) != 0) {
      fprintf(stderr, "maskps-gen: %s\n", err);
      return 1;
    }
  }
  unsigned opened = 0;
  for (unsigned k = 0; k < sp.n; k++) {
    outs[k].frac = sp.frac[k];
    outs[k].stats = gen_stats_new();
    if (!split_spec && !strcmp(out, "-")) {
      outs[k].f = stdout;
      outs[k].name = "standard output";
    } else {
      if (split_spec)
        snprintf(paths[k], sizeof(paths[k]), "%s/%s.tsv", out_dir, sp.name[k]);
      else
        snprintf(paths[k], sizeof(paths[k]), "%s", out);
      outs[k].name = paths[k];
      outs[k].f = fopen(paths[k], "w");
      if (!outs[k].f) {
        fprintf(stderr, "maskps-gen: cannot open '%s' for writing: %s\n",
                paths[k], strerror(errno));
        rc = 1;
        break;
      }
    }
    opened++;
  }
  /* After the files: a bad path fails at once, not after the tables. */
  struct gen *g = NULL;
  if (rc == 0 && !(g = gen_new(seed, scale, err, sizeof(err)))) {
    fprintf(stderr, "maskps-gen: %s\n", err);
    rc = EXIT_USAGE;
  }

  double t0 = clock_sec(), sec = 0;
  struct progress pr = {.total = rows, .t0 = t0, .last = t0};
  /* a progress line on a terminal, unless the rows go to that terminal too */
  int show =
      isatty(STDERR_FILENO) && !(outs[0].f == stdout && isatty(STDOUT_FILENO));
  if (rc == 0) {
    if (gen_write(g, start, rows, outs, sp.n, show ? show_progress : NULL, &pr,
                  err, sizeof(err)) != 0) {
      if (pr.shown)
        fputc('\n', stderr);
      fprintf(stderr, "maskps-gen: %s\n", err);
      rc = 1;
    }
  }
  /* Closing is where a full disk or a quota often shows up first. */
  for (unsigned k = 0; k < opened; k++) {
    errno = 0;
    if (fclose(outs[k].f) != 0 && rc == 0) {
      fprintf(stderr, "maskps-gen: %s: write failed on close: %s\n",
              outs[k].name, errno ? strerror(errno) : "stream error");
      rc = 1;
    }
  }
  sec = clock_sec() - t0;
  if (pr.shown && rc == 0)
    fprintf(stderr, "\n");

  if (rc == 0 && want_report) {
    struct gen_stats *all = gen_stats_new();
    for (unsigned k = 0; k < sp.n; k++)
      gen_stats_merge(all, outs[k].stats);
    fprintf(stderr,
            "maskps-gen: rows %llu..%llu, seed %llu, vocab-scale %g, "
            "bias %.4f\n",
            (unsigned long long)start, (unsigned long long)(start + rows - 1),
            (unsigned long long)seed, scale, gen_bias(g));
    report("all", all, sec);
    if (split_spec)
      for (unsigned k = 0; k < sp.n; k++) {
        char what[128];
        snprintf(what, sizeof(what), "split=%s", sp.name[k]);
        report(what, outs[k].stats, -1);
      }
    gen_stats_free(all);
  }
  for (unsigned k = 0; k < sp.n; k++)
    gen_stats_free(outs[k].stats);
  gen_free(g);
  return rc;
}
