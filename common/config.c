/* config: the schema table and everything it drives (see config.h). */
#include "common/config.h"

#include "common/check.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

/* ---- enum names (index = C enum value) ---------------------------------- */

static const char *const format_names[] = {"criteo", "libfm", "csv", NULL};
static const char *const model_names[] = {
    "lr",   "fm",         "dnn",         "deepfm",     "dcn", "dcnv2",
    "edcn", "sermasknet", "paramasknet", "maskfusion", NULL};
static const char *const activation_names[] = {"relu", "tanh", "sigmoid",
                                               "leaky_relu", NULL};
static const char *const structure_names[] = {"crossnet_only", "stacked",
                                              "parallel", NULL};
static const char *const bridge_names[] = {"hadamard", "add", "concat", NULL};
static const char *const dense_opt_names[] = {"adam", "sgd", NULL};
static const char *const sparse_opt_names[] = {"sgd", "adagrad", "adam", "ftrl",
                                               NULL};
static const char *const mode_names[] = {"sync", "async", "ssp", NULL};
static const char *const launcher_names[] = {"local", "ssh", "slurm", NULL};
static const char *const cache_names[] = {"clock", "lru", NULL};
static const char *const wal_names[] = {"sync", "async", "off", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          NULL};
static const char *const progress_names[] = {"auto", "on", "off", NULL};

/* ---- the schema -----------------------------------------------------------
 */

/* Offset of a field, with a compile-time check of its C type: a negative
 * array size stops the build if a row's type and its field disagree. */
#define FIELD(sec, key, ok)                                                    \
  (offsetof(struct config, sec.key) + 0 * sizeof(char[(ok) ? 1 : -1]))
#define M(sec, key) (((struct config *)0)->sec.key)
#define IS(sec, key, T) _Generic(M(sec, key), T : 1, default : 0)

#define KEY(sec, key, t, ok, dflt)                                             \
  .section = #sec, .name = #key, .type = t, .offset = FIELD(sec, key, ok),     \
  .def = dflt
#define K_BOOL(sec, key, dflt, text)                                           \
  { KEY(sec, key, CONFIG_BOOL, IS(sec, key, bool), dflt), .doc = text }
#define K_INT(sec, key, dflt, lo, hi, text)                                    \
  {                                                                            \
    KEY(sec, key, CONFIG_INT, IS(sec, key, int64_t), dflt),                    \
        .imin = lo, .imax = hi, .doc = text                                    \
  }
#define K_INTU(sec, key, dflt, lo, text) /* no upper bound */                  \
  {                                                                            \
    KEY(sec, key, CONFIG_INT, IS(sec, key, int64_t), dflt),                    \
        .imin = lo, .imax = INT64_MAX, .flags = CONFIG_NO_MAX, .doc = text     \
  }
#define K_DBL(sec, key, dflt, lo, hi, fl, text)                                \
  {                                                                            \
    KEY(sec, key, CONFIG_DOUBLE, IS(sec, key, double), dflt),                  \
        .dmin = lo, .dmax = hi, .flags = fl, .doc = text                       \
  }
#define K_STR(sec, key, dflt, text)                                            \
  { KEY(sec, key, CONFIG_STRING, IS(sec, key, char *), dflt), .doc = text }
#define K_ENUM(sec, key, dflt, names, text)                                    \
  {                                                                            \
    KEY(sec, key, CONFIG_ENUM, sizeof(M(sec, key)) == sizeof(int), dflt),      \
        .values = names, .doc = text                                           \
  }
#define K_STRS(sec, key, dflt, text)                                           \
  {                                                                            \
    KEY(sec, key, CONFIG_STRINGS, IS(sec, key, struct config_strings), dflt),  \
        .doc = text                                                            \
  }
#define K_INTS(sec, key, dflt, lo, hi, text)                                   \
  {                                                                            \
    KEY(sec, key, CONFIG_INTS, IS(sec, key, struct config_ints), dflt),        \
        .imin = lo, .imax = hi, .doc = text                                    \
  }

#define OPEN_MIN CONFIG_MIN_OPEN
#define OPEN_MAX CONFIG_MAX_OPEN
#define MB_MAX (INT64_C(1) << 24) /* 16 TiB in MiB */

static const char *const section_names[] = {
    "data",    "model",   "embedding", "optimizer",  "train",
    "cluster", "pserver", "log",       "warm_start", "security"};
#define NSECTIONS ARRAY_LEN(section_names)

static const struct config_key schema[] = {
    /* data */
    K_ENUM(data, format, "criteo", format_names,
           "line format: criteo (label, 13 numeric, 26 categorical, tab "
           "separated), libfm (label idx:val ...), csv (columns with roles, "
           "see csv_*)"),
    K_STRS(data, train, "[]",
           "training files or globs, read in sorted order; required"),
    K_STRS(data, valid, "[]",
           "validation files or globs; empty = hold out data.split_valid of "
           "train"),
    K_STRS(data, test, "[]",
           "test files or globs; empty = hold out data.split_test of train"),
    K_DBL(data, split_valid, "0", 0, 1, OPEN_MAX,
          "fraction of training lines held out for validation when "
          "data.valid is empty (chosen by a hash of line number and "
          "split_seed)"),
    K_DBL(data, split_test, "0", 0, 1, OPEN_MAX,
          "fraction of training lines held out for test when data.test is "
          "empty"),
    K_INTU(data, split_seed, "2024", 0,
           "seed of the held-out line choice; fixes the split across runs"),
    K_DBL(data, bad_line_fraction, "0.001", 0, 1, 0,
          "abort when more than this fraction of the lines read are "
          "malformed"),
    K_INT(data, report_bad_lines, "10", 0, 1000000,
          "malformed lines reported one by one (file:line) before going "
          "quiet"),
    K_INTU(data, max_lines, "0", 0,
           "read at most this many lines per epoch, all files together (0 = "
           "all); for smoke tests"),
    K_INT(data, shuffle_buffer, "0", 0, 16777216,
          "training examples held for a local shuffle (0 = file order): "
          "each new one swaps with a random held one; the order is seeded "
          "by train.seed, the epoch and the rank, so runs repeat and epochs "
          "differ; valid, test and predict keep file order. Memory per "
          "worker about N x (12 x fields + 52) bytes (Criteo: 520 MB per "
          "million); refused above half of the machine's memory"),
    K_STR(data, csv_delimiter, ",", "csv: the column separator, one byte"),
    K_STR(data, csv_label, "label", "csv: name of the 0/1 label column"),
    K_STRS(data, csv_numeric, "[]",
           "csv: integer columns bucketised (Criteo rule: x > 2 -> "
           "floor(ln(x)^2)), each bucket a row; empty = the field's missing "
           "row; a fraction is a malformed line (use csv_value). Columns named "
           "in no csv_* key are categorical (text hashed; "
           "empty = missing)"),
    K_STRS(data, csv_value, "[]",
           "csv: numeric columns fed as a value: the field has one row, "
           "multiplied by the number (NaN/Inf are errors; empty = the "
           "field's missing row)"),
    K_STR(data, csv_group, "",
          "csv: group-id column for gAUC (e.g. a user id; not a feature); "
          "empty = none"),
    K_STRS(data, csv_ignore, "[]", "csv: columns skipped"),
    K_STRS(data, csv_columns, "[]",
           "csv: the column names when the files have no header row; empty "
           "= the first line of every file is the header (all files must "
           "have the same one). Quotes: RFC 4180, no line break inside"),

    /* model */
    K_ENUM(model, name, "dnn", model_names, "the dense network (MODELS.md)"),
    K_INTS(model, hidden_units, "[400, 400, 400]", 1, 65536,
           "MLP widths: dnn, deepfm, dcn and dcnv2 deep part, paramasknet "
           "head, maskfusion main MLP"),
    K_ENUM(model, activation, "relu", activation_names,
           "hidden-layer activation"),
    K_DBL(model, dropout, "0", 0, 1, OPEN_MAX,
          "dropout rate after each hidden layer (training only)"),
    K_BOOL(model, net_layernorm, "true",
           "masknets: layer norm inside each MaskBlock"),
    K_BOOL(model, emb_layernorm, "true",
           "masknets: per-field layer norm of the embeddings before the first "
           "mask"),
    K_BOOL(model, use_bn, "false",
           "batch norm (FuxiCTR's batch_norm): after each MLP hidden layer "
           "(dnn, deepfm, dcn, dcnv2) and on edcn's regulation outputs, "
           "which edcn needs to learn from embeddings of init_std 1e-4 (its "
           "bridges vanish: AUC 0.5); the masknets refuse it"),
    K_INT(model, num_blocks, "3", 1, 64,
          "masknets: MaskBlocks (serial depth or parallel count)"),
    K_INT(model, block_dim, "64", 1, 65536,
          "masknets: output width of a "
          "MaskBlock"),
    K_INTS(model, block_dims, "[]", 1, 65536,
           "masknets: output width of each MaskBlock in order, num_blocks "
           "entries; empty = every block is block_dim wide"),
    K_DBL(model, reduction_ratio, "1", 0, 64, OPEN_MIN,
          "masknets: mask aggregation width = reduction_ratio x block width"),
    K_INT(model, cross_layers, "3", 0, 64,
          "dcn, dcnv2, edcn: number of cross layers"),
    K_ENUM(model, dcnv2_structure, "parallel", structure_names,
           "dcnv2: cross net alone, stacked before the MLP, or beside it"),
    K_INT(model, low_rank, "0", 0, 4096,
          "dcnv2: rank of each cross matrix (0 = full rank)"),
    K_INT(model, num_experts, "1", 1, 64,
          "dcnv2: low-rank experts mixed per cross layer (needs low_rank)"),
    K_ENUM(model, bridge, "hadamard", bridge_names,
           "edcn: how the bridge merges cross and deep outputs"),
    K_DBL(model, temperature, "1", 0, 100, OPEN_MIN,
          "edcn: temperature of the regulation softmax over fields"),
    K_BOOL(model, cross_residual, "true",
           "edcn: the cross layer keeps its input, c_l + x_0 (c_l . w) + b "
           "(MODELS.md); false drops c_l (FuxiCTR's EDCN)"),
    K_BOOL(model, instance_norm, "true",
           "maskfusion: instance norm of each field embedding before fusion"),
    K_INTS(model, controller_units, "[64]", 1, 65536,
           "maskfusion: hidden widths of each mask controller MLP"),

    /* embedding */
    K_INT(embedding, dim, "16", 1, 4096,
          "D: floats per embedding row (the full length under AMTL)"),
    K_DBL(embedding, init_std, "0.0001", 0, 1, 0,
          "std of the normal initial values, drawn from hash(seed, key)"),
    K_INT(embedding, min_count, "1", 1, 1000000000,
          "admit a key after this many occurrences; before, it reads as "
          "zeros"),
    K_INTU(embedding, ttl_steps, "0", 0,
           "expire rows unseen for this many steps (0 = never)"),
    K_DBL(embedding, l2, "0", 0, 10, 0,
          "L2 penalty on embedding rows (see optimizer.lazy_l2)"),
    K_BOOL(embedding, amtl, "false",
           "AMTL: learn a prefix length per key and store only that prefix"),
    K_INTU(embedding, amtl_warmup_steps, "1000", 0,
           "AMTL: steps before stored prefixes may shrink"),
    K_DBL(embedding, amtl_temperature, "1", 0, 100, OPEN_MIN,
          "AMTL: softmax temperature of the prefix choice"),
    K_INTS(embedding, amtl_hidden_units, "[32]", 1, 4096,
           "AMTL: hidden widths of the twin networks"),
    K_INT(embedding, amtl_count_buckets, "16", 1, 64,
          "AMTL: log2 count buckets one-hot encoded for the twin networks"),

    /* optimizer */
    K_ENUM(optimizer, dense, "adam", dense_opt_names,
           "optimizer of the dense parameters"),
    K_DBL(optimizer, lr, "0.001", 0, 10, OPEN_MIN, "dense learning rate"),
    K_DBL(optimizer, beta1, "0.9", 0, 1, OPEN_MAX,
          "Adam first-moment decay (dense and sparse)"),
    K_DBL(optimizer, beta2, "0.999", 0, 1, OPEN_MAX,
          "Adam second-moment decay (dense and sparse)"),
    K_DBL(optimizer, eps, "1e-08", 0, 1, OPEN_MIN,
          "Adam and Adagrad denominator epsilon"),
    K_DBL(optimizer, clip_norm, "10", 0, 1e9, 0,
          "clip the global dense gradient norm to this (0 = off)"),
    K_DBL(optimizer, dense_l2, "0", 0, 10, 0, "L2 penalty on dense weights"),
    K_ENUM(optimizer, sparse, "adam", sparse_opt_names,
           "optimizer the pservers apply to embedding rows"),
    K_DBL(optimizer, sparse_lr, "0.001", 0, 10, OPEN_MIN,
          "learning rate of embedding rows"),
    K_DBL(optimizer, adagrad_init_acc, "0", 0, 1000, 0,
          "adagrad: initial accumulator value"),
    K_DBL(optimizer, ftrl_alpha, "0.05", 0, 10, OPEN_MIN,
          "ftrl: per-coordinate learning rate alpha"),
    K_DBL(optimizer, ftrl_beta, "1", 0, 10, 0, "ftrl: learning rate beta"),
    K_DBL(optimizer, ftrl_l1, "0", 0, 100, 0, "ftrl: L1 strength"),
    K_DBL(optimizer, ftrl_l2, "0", 0, 100, 0, "ftrl: L2 strength"),
    K_BOOL(optimizer, lazy_l2, "true",
           "apply embedding.l2 to a row when it is next touched, caught up "
           "over the steps since its last update"),
    K_DBL(optimizer, adaptive_reg_lambda, "0", 0, 1000, 0,
          "mini-batch aware regularisation lambda, scaled by 1/count per "
          "row (0 = off)"),

    /* train */
    K_INT(train, batch_size, "4096", 1, 1048576,
          "examples per step per worker"),
    K_INT(train, epochs, "1", 1, 100000, "passes over the training data"),
    K_INTU(train, max_steps, "0", 0,
           "stop after this many steps (0 = no "
           "limit)"),
    K_ENUM(train, mode, "sync", mode_names,
           "sync (BSP, deterministic), async, or ssp (bounded staleness)"),
    K_INT(train, staleness, "0", 0, 1000000,
          "ssp: steps a worker may run ahead of the slowest"),
    K_INT(train, dense_sync_every, "1", 1, 1000000,
          "async/ssp: pull dense parameters every this many steps"),
    K_INTU(train, eval_every_steps, "0", 0,
           "evaluate on validation every this many steps (0 = once per "
           "epoch)"),
    K_INT(train, patience, "2", 0, 1000,
          "stop after this many evaluations without AUC improvement"),
    K_DBL(train, lr_decay_factor, "0.1", 0, 1, OPEN_MIN,
          "multiply learning rates by this when validation AUC stalls"),
    K_INTU(train, seed, "2024", 0,
           "seed of initial values, dropout and shuffling"),
    K_STR(train, run_dir, "runs/default",
          "directory for logs, checkpoints and the effective config"),
    K_INT(train, threads, "0", 0, 64,
          "compute threads per worker (0 = one per CPU this process may "
          "use): OpenBLAS's, and the dense model splits each batch "
          "(training and evaluation) over this many threads, at least 128 "
          "rows each (not with model.use_bn or model.dropout, whose rows "
          "are coupled); results then differ from one thread's in float "
          "rounding, so fix it for bit-for-bit repeatable runs"),
    K_INTU(train, checkpoint_every_steps, "0", 0,
           "checkpoint every this many steps (0 = at the end of each epoch)"),
    K_INT(train, keep_checkpoints, "2", 1, 1000,
          "checkpoints kept; older ones are deleted"),
    K_BOOL(train, prefetch, "true",
           "async/ssp: pull batch t+1's rows while batch t computes (one "
           "step more staleness in async; in ssp none across a barrier, so "
           "the staleness bound holds); sync mode never does. Embedded "
           "async/ssp runs read the same staler rows, with nothing to "
           "overlap, so that they stay the reference of a cluster run"),

    /* cluster */
    K_INT(cluster, pservers, "0", 0, 4096,
          "parameter servers (0 = embedded mode: one process, no sockets)"),
    K_INT(cluster, workers, "1", 1, 4096, "worker processes"),
    K_ENUM(cluster, launcher, "local", launcher_names,
           "how processes are started: on this machine, over ssh, or by "
           "slurm"),
    K_STRS(cluster, hosts, "[]",
           "ssh: machines to start processes on, used round robin"),
    K_STR(cluster, host, "127.0.0.1",
          "local: address pservers bind and workers connect to"),
    K_INT(cluster, base_port, "27000", 1024, 65535,
          "pserver i listens on base_port + i"),
    K_INT(cluster, request_timeout_ms, "30000", 1, 3600000,
          "a request unanswered this long is retried"),
    K_INT(cluster, max_restarts, "3", 0, 1000,
          "the launcher restarts a dead process at most this often"),

    /* pserver */
    K_INT(pserver, memory_mb, "1024", 16, MB_MAX,
          "memory budget of one pserver; must hold the caches below"),
    K_INT(pserver, cache_mb, "256", 0, MB_MAX,
          "hot-row cache above RocksDB (0 = off)"),
    K_INT(pserver, block_cache_mb, "128", 0, MB_MAX, "RocksDB block cache"),
    K_INT(pserver, write_buffer_mb, "64", 1, MB_MAX, "RocksDB memtable size"),
    K_ENUM(pserver, cache_policy, "clock", cache_names,
           "hot-row cache eviction policy"),
    K_STR(pserver, db_dir, "",
          "RocksDB directory; shard i uses db_dir/shard-i (\"\" = "
          "run_dir/db)"),
    K_ENUM(pserver, wal, "async", wal_names,
           "RocksDB write-ahead log: sync (lose nothing), async (lose the "
           "last writes on a machine crash), off (lose since the last "
           "flush)"),
    K_INT(pserver, threads, "0", 0, 256,
          "request threads per pserver (0 = one per core)"),

    /* log */
    K_ENUM(log, level, "info", level_names, "lowest level of human lines"),
    K_ENUM(log, progress, "auto", progress_names,
           "progress line on the terminal (auto = when stderr is a tty)"),
    K_DBL(log, interval_s, "10", 0, 86400, OPEN_MIN,
          "seconds between progress lines and metric records"),
    K_BOOL(log, jsonl, "true", "write run_dir/logs/<role>-<rank>.jsonl"),

    /* warm_start */
    K_STRS(warm_start, tables, "[]",
           "old table directories to seed embedding rows from"),
    K_STR(warm_start, dense, "",
          "checkpoint to seed dense parameters from, matched by name (\"\" "
          "= none)"),
    K_BOOL(warm_start, read_through, "true",
           "read a missing row from the old tables on first use (false = "
           "import them before training)"),

    /* security */
    K_BOOL(security, curve, "false",
           "encrypt and authenticate every link with ZeroMQ CURVE"),
    K_STR(security, keys_dir, "",
          "where the launcher writes CURVE keys (\"\" = run_dir/keys)"),
};
#define NKEYS ARRAY_LEN(schema)

struct config_origin {
  char *label[NKEYS]; /* file name or "--set a.b=c"; NULL = default */
  int line[NKEYS];    /* 1-based; 0 for --set */
};

const struct config_key *config_schema(size_t *n) {
  *n = NKEYS;
  return schema;
}

static int key_index(const char *section, const char *name) {
  for (size_t i = 0; i < NKEYS; i++)
    if (!strcmp(schema[i].section, section) && !strcmp(schema[i].name, name))
      return (int)i;
  return -1;
}

const struct config_key *config_key_find(const char *section,
                                         const char *name) {
  int i = key_index(section, name);
  return i < 0 ? NULL : &schema[i];
}

const char *config_type_name(enum config_type t) {
  static const char *const names[] = {"bool",        "int",  "number",
                                      "string",      "enum", "list of strings",
                                      "list of ints"};
  return (unsigned)t < ARRAY_LEN(names) ? names[t] : "?";
}

static size_t nvalues(const struct config_key *k) {
  size_t n = 0;
  while (k->values && k->values[n])
    n++;
  return n;
}

const char *config_enum_name(const char *section, const char *name, int value) {
  const struct config_key *k = config_key_find(section, name);
  if (!k || k->type != CONFIG_ENUM || value < 0 || (size_t)value >= nvalues(k))
    return "?";
  return k->values[value];
}

/* ---- small text helpers ----------------------------------------------------
 */

/* Appends to buf[len] at *pos, truncating silently. */
static void append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t len, size_t *pos, const char *fmt, ...) {
  if (*pos >= len)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
  va_end(ap);
  if (n > 0)
    *pos = *pos + (size_t)n < len ? *pos + (size_t)n : len;
}

/* The shortest "%.Ng" text that reads back as the same double ("10", not
 * "1e+01"; "0.1", not "0.10000000000000001"). */
static void fmt_double(double v, char *buf, size_t len) {
  char best[40] = "", t[40];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(t, sizeof(t), "%.*g", prec, v);
    if (strtod(t, NULL) == v && (!best[0] || strlen(t) < strlen(best)))
      memcpy(best, t, sizeof(t));
  }
  snprintf(buf, len, "%s", best);
}

char *config_key_range(const struct config_key *k, char *buf, size_t len) {
  size_t pos = 0;
  char a[32], b[32];
  buf[0] = 0;
  switch (k->type) {
  case CONFIG_INT:
  case CONFIG_INTS:
    if (k->flags & CONFIG_NO_MAX)
      append(buf, len, &pos, ">= %lld", (long long)k->imin);
    else
      append(buf, len, &pos, "%lld..%lld", (long long)k->imin,
             (long long)k->imax);
    break;
  case CONFIG_DOUBLE:
    fmt_double(k->dmin, a, sizeof(a));
    fmt_double(k->dmax, b, sizeof(b));
    if (k->flags & CONFIG_NO_MAX)
      append(buf, len, &pos, "%s %s",
             k->flags & CONFIG_MIN_OPEN ? ">" : ">=", a);
    else
      append(buf, len, &pos, "%c%s, %s%c",
             k->flags & CONFIG_MIN_OPEN ? '(' : '[', a, b,
             k->flags & CONFIG_MAX_OPEN ? ')' : ']');
    break;
  case CONFIG_ENUM:
    for (size_t i = 0; k->values[i]; i++)
      append(buf, len, &pos, "%s%s", i ? ", " : "", k->values[i]);
    break;
  case CONFIG_BOOL:
    append(buf, len, &pos, "true, false");
    break;
  case CONFIG_STRING:
  case CONFIG_STRINGS:
    break;
  }
  return buf;
}

/* What a valid value looks like, for "(expected ...)". */
static void expected_text(const struct config_key *k, char *buf, size_t len) {
  char r[256];
  config_key_range(k, r, sizeof(r));
  switch (k->type) {
  case CONFIG_BOOL:
    snprintf(buf, len, "true or false");
    break;
  case CONFIG_INT:
    snprintf(buf, len, "an integer %s%s", k->flags & CONFIG_NO_MAX ? "" : "in ",
             r);
    break;
  case CONFIG_DOUBLE:
    snprintf(buf, len, "a number %s%s", k->flags & CONFIG_NO_MAX ? "" : "in ",
             r);
    break;
  case CONFIG_STRING:
    snprintf(buf, len, "a string");
    break;
  case CONFIG_ENUM:
    snprintf(buf, len, "one of: %s", r);
    break;
  case CONFIG_STRINGS:
    snprintf(buf, len, "a list of strings, like [a, b]");
    break;
  case CONFIG_INTS:
    snprintf(buf, len, "a list of integers %s%s, like [64, 32]",
             k->flags & CONFIG_NO_MAX ? "" : "in ", r);
    break;
  }
}

/* A value as it appears in a message: quoted, at most 40 bytes, control
 * bytes shown as '?'. */
static void show(const char *s, size_t n, char *buf, size_t len) {
  size_t pos = 0;
  append(buf, len, &pos, "\"");
  for (size_t i = 0; i < n && i < 40; i++)
    append(buf, len, &pos, "%c",
           (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i]);
  append(buf, len, &pos, n > 40 ? "...\"" : "\"");
}

/* Optimal string alignment distance (a transposition costs 1), for
 * "did you mean". Strings longer than 63 bytes get a large distance. */
static int edit_distance(const char *a, const char *b) {
  size_t n = strlen(a), m = strlen(b);
  if (n > 63 || m > 63)
    return 1000;
  int d[64][64];
  for (size_t i = 0; i <= n; i++)
    d[i][0] = (int)i;
  for (size_t j = 0; j <= m; j++)
    d[0][j] = (int)j;
  for (size_t i = 1; i <= n; i++)
    for (size_t j = 1; j <= m; j++) {
      int cost =
          tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
      int v = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < v)
        v = d[i][j - 1] + 1;
      if (d[i - 1][j - 1] + cost < v)
        v = d[i - 1][j - 1] + cost;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  return d[n][m];
}

/* The candidate closest to s if it is a plausible typo, else NULL. */
static const char *closest(const char *s, const char *const *cands,
                           size_t ncands) {
  const char *best = NULL;
  int bestd = 1000;
  for (size_t i = 0; i < ncands; i++) {
    int d = edit_distance(s, cands[i]);
    if (d < bestd) {
      bestd = d;
      best = cands[i];
    }
  }
  int limit = strlen(s) <= 4 ? 1 : 2;
  return bestd <= limit ? best : NULL;
}

/* ---- messages ---------------------------------------------------------------
 */

/* Where the text being read comes from. */
struct src {
  const char *file;   /* file mode: name for messages */
  const char *assign; /* --set mode: the assignment as given */
  char *err;
  size_t errlen;
};

/* Writes "FILE:LINE: sec.key: what (expected ...)" or, for --set,
 * "--set A: what (expected ...)" -- where a type mismatch drops `what`,
 * since the value is already in A. sec/key may be NULL. Returns -1. */
static int fail(const struct src *s, int line, const char *sec, const char *key,
                bool type_err, const char *what, const char *expected) {
  size_t pos = 0;
  if (!s->err || !s->errlen)
    return -1;
  s->err[0] = 0;
  if (s->assign) {
    append(s->err, s->errlen, &pos, "--set %s: ", s->assign);
    if (type_err && expected) {
      append(s->err, s->errlen, &pos, "expected %s", expected);
      return -1;
    }
  } else {
    append(s->err, s->errlen, &pos, "%s:%d: ", s->file, line);
    /* names come from the input: keep a runaway one from hiding the rest */
    if (sec && key)
      append(s->err, s->errlen, &pos, "%.64s.%.64s: ", sec, key);
    else if (sec)
      append(s->err, s->errlen, &pos, "%.64s: ", sec);
  }
  append(s->err, s->errlen, &pos, "%s", what);
  if (expected)
    append(s->err, s->errlen, &pos, " (expected %s)", expected);
  return -1;
}

/* ---- values
 * ------------------------------------------------------------------- */

static void *field(const struct config *cfg, const struct config_key *k) {
  return (char *)cfg + k->offset;
}

static void strings_free(struct config_strings *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

static void ints_free(struct config_ints *l) {
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

/* One parsed scalar, before it is stored. */
union value {
  bool b;
  int64_t i;
  double d;
  int e;
  char *s; /* owned until stored */
};

enum parse_result { PARSE_OK, PARSE_TYPE, PARSE_VALUE };

static bool is_null(const char *t, size_t n) {
  return n == 0 || (n == 1 && t[0] == '~') ||
         (n == 4 && (!memcmp(t, "null", 4) || !memcmp(t, "Null", 4) ||
                     !memcmp(t, "NULL", 4)));
}

static bool word_is(const char *t, size_t n, const char *w) {
  return strlen(w) == n && !strncasecmp(t, w, n);
}

/* Parses a scalar as type t (a key's type, or its element type) with k's
 * range. `plain` is true for unquoted YAML scalars, where empty, ~ and null
 * mean "no value". On failure writes what is wrong into what[wlen]. */
static enum parse_result parse_scalar(const struct config_key *k,
                                      enum config_type t, const char *text,
                                      size_t n, bool plain, union value *out,
                                      char *what, size_t wlen) {
  char shown[64];
  show(text, n, shown, sizeof(shown));
  bool null = plain && is_null(text, n);
  if (null && t != CONFIG_STRING) {
    snprintf(what, wlen, "an empty value is not %s",
             t == CONFIG_BOOL     ? "a boolean"
             : t == CONFIG_INT    ? "an integer"
             : t == CONFIG_DOUBLE ? "a number"
                                  : "a known value");
    return t == CONFIG_ENUM ? PARSE_VALUE : PARSE_TYPE;
  }
  if (memchr(text, 0, n)) {
    snprintf(what, wlen, "%s contains a NUL byte", shown);
    return PARSE_VALUE;
  }
  char buf[64];
  switch (t) {
  case CONFIG_BOOL:
    if (word_is(text, n, "true") || word_is(text, n, "yes") ||
        word_is(text, n, "on")) {
      out->b = true;
      return PARSE_OK;
    }
    if (word_is(text, n, "false") || word_is(text, n, "no") ||
        word_is(text, n, "off")) {
      out->b = false;
      return PARSE_OK;
    }
    snprintf(what, wlen, "%s is not a boolean", shown);
    return PARSE_TYPE;
  case CONFIG_INT:
  case CONFIG_INTS: {
    size_t i = (n > 0 && (text[0] == '-' || text[0] == '+')) ? 1 : 0;
    bool digits = i < n;
    for (; i < n; i++)
      if (!isdigit((unsigned char)text[i]))
        digits = false;
    if (!digits) {
      snprintf(what, wlen, "%s is not an integer", shown);
      return PARSE_TYPE;
    }
    if (n >= sizeof(buf)) {
      snprintf(what, wlen, "%.40s... is out of range", text);
      return PARSE_VALUE;
    }
    memcpy(buf, text, n);
    buf[n] = 0;
    errno = 0;
    long long v = strtoll(buf, NULL, 10);
    if (errno == ERANGE || v < k->imin ||
        (!(k->flags & CONFIG_NO_MAX) && v > k->imax)) {
      snprintf(what, wlen, "%s is out of range", buf);
      return PARSE_VALUE;
    }
    out->i = v;
    return PARSE_OK;
  }
  case CONFIG_DOUBLE: {
    if (n == 0 || n >= sizeof(buf) || isspace((unsigned char)text[0])) {
      snprintf(what, wlen, "%s is not a number", shown);
      return PARSE_TYPE;
    }
    memcpy(buf, text, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    /* strtod also takes "nan", "inf" and hex floats; a config wants none */
    bool word = false;
    for (size_t i = 0; i < n; i++)
      if (isalpha((unsigned char)buf[i]) && buf[i] != 'e' && buf[i] != 'E')
        word = true;
    if (*end || word) {
      snprintf(what, wlen, "%s is not a number", shown);
      return PARSE_TYPE;
    }
    bool above =
        !(k->flags & CONFIG_NO_MAX) &&
        (v > k->dmax || ((k->flags & CONFIG_MAX_OPEN) && v == k->dmax));
    bool below = v < k->dmin || ((k->flags & CONFIG_MIN_OPEN) && v == k->dmin);
    if (!isfinite(v) || above || below) {
      snprintf(what, wlen, "%s is out of range", buf);
      return PARSE_VALUE;
    }
    out->d = v;
    return PARSE_OK;
  }
  case CONFIG_STRING:
  case CONFIG_STRINGS:
    out->s = xmalloc(n + 1);
    memcpy(out->s, text, n);
    out->s[n] = 0;
    if (null)
      out->s[0] = 0;
    return PARSE_OK;
  case CONFIG_ENUM:
    for (size_t i = 0; k->values[i]; i++)
      if (word_is(text, n, k->values[i])) {
        out->e = (int)i;
        return PARSE_OK;
      }
    char word[64];
    snprintf(word, sizeof(word), "%.*s", (int)(n < 63 ? n : 63), text);
    const char *near = closest(word, k->values, nvalues(k));
    if (near)
      snprintf(what, wlen, "%s is not a known value, did you mean \"%s\"?",
               shown, near);
    else
      snprintf(what, wlen, "%s is not a known value", shown);
    return PARSE_VALUE;
  }
  snprintf(what, wlen, "%s is out of range", shown);
  return PARSE_VALUE;
}

/* Stores a parsed scalar into the key's field (taking ownership of
 * strings). */
static void store_scalar(struct config *cfg, const struct config_key *k,
                         union value v) {
  void *p = field(cfg, k);
  switch (k->type) {
  case CONFIG_BOOL:
    *(bool *)p = v.b;
    break;
  case CONFIG_INT:
    *(int64_t *)p = v.i;
    break;
  case CONFIG_DOUBLE:
    *(double *)p = v.d;
    break;
  case CONFIG_ENUM:
    *(int *)p = v.e;
    break;
  case CONFIG_STRING:
    free(*(char **)p);
    *(char **)p = v.s;
    break;
  default:
    CHECK(0, "store_scalar on list key %s.%s", k->section, k->name);
  }
}

static void set_origin(struct config *cfg, int ki, const char *label,
                       int line) {
  free(cfg->origin->label[ki]);
  cfg->origin->label[ki] = label ? xstrdup(label) : NULL;
  cfg->origin->line[ki] = line;
}

static const char *node_kind(const yaml_node_t *n) {
  return n->type == YAML_SEQUENCE_NODE  ? "a list"
         : n->type == YAML_MAPPING_NODE ? "a mapping"
                                        : "a single value";
}

/* Sets key k from a YAML node (a value in a file, or a parsed --set list).
 * cfg is untouched on failure. */
static int set_from_node(struct config *cfg, int ki, yaml_document_t *doc,
                         yaml_node_t *node, const struct src *s) {
  const struct config_key *k = &schema[ki];
  char exp[512], what[256];
  int line = (int)node->start_mark.line + 1;
  expected_text(k, exp, sizeof(exp));
  bool list = k->type == CONFIG_STRINGS || k->type == CONFIG_INTS;

  if (!list) {
    if (node->type != YAML_SCALAR_NODE) {
      snprintf(what, sizeof(what), "%s where a single value belongs",
               node_kind(node));
      return fail(s, line, k->section, k->name, true, what, exp);
    }
    union value v;
    enum parse_result r =
        parse_scalar(k, k->type, (const char *)node->data.scalar.value,
                     node->data.scalar.length,
                     node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE, &v,
                     what, sizeof(what));
    if (r != PARSE_OK)
      return fail(s, line, k->section, k->name, r == PARSE_TYPE, what, exp);
    store_scalar(cfg, k, v);
    return 0;
  }

  size_t n = 0;
  yaml_node_item_t *items = NULL;
  if (node->type == YAML_SEQUENCE_NODE) {
    items = node->data.sequence.items.start;
    n = (size_t)(node->data.sequence.items.top - items);
  } else if (node->type == YAML_SCALAR_NODE &&
             node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
             is_null((const char *)node->data.scalar.value,
                     node->data.scalar.length)) {
    n = 0; /* "key:" with nothing after it: the empty list */
  } else {
    snprintf(what, sizeof(what), "%s where a list belongs", node_kind(node));
    return fail(s, line, k->section, k->name, true, what, exp);
  }
  struct config_strings sl = {NULL, 0};
  struct config_ints il = {NULL, 0};
  if (k->type == CONFIG_STRINGS)
    sl.v = xcalloc(n ? n : 1, sizeof(char *));
  else
    il.v = xcalloc(n ? n : 1, sizeof(int64_t));
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *it = yaml_document_get_node(doc, items[i]);
    CHECK(it, "libyaml sequence item %d has no node", items[i]);
    int iline = (int)it->start_mark.line + 1;
    enum parse_result r;
    union value v;
    if (it->type != YAML_SCALAR_NODE) {
      snprintf(what, sizeof(what), "%s inside the list", node_kind(it));
      r = PARSE_TYPE;
    } else {
      r = parse_scalar(k, k->type, (const char *)it->data.scalar.value,
                       it->data.scalar.length,
                       it->data.scalar.style == YAML_PLAIN_SCALAR_STYLE, &v,
                       what, sizeof(what));
    }
    if (r != PARSE_OK) {
      strings_free(&sl);
      ints_free(&il);
      return fail(s, iline, k->section, k->name, r == PARSE_TYPE, what, exp);
    }
    if (k->type == CONFIG_STRINGS)
      sl.v[sl.n++] = v.s;
    else
      il.v[il.n++] = v.i;
  }
  if (k->type == CONFIG_STRINGS) {
    strings_free(field(cfg, k));
    *(struct config_strings *)field(cfg, k) = sl;
  } else {
    ints_free(field(cfg, k));
    *(struct config_ints *)field(cfg, k) = il;
  }
  return 0;
}

/* ---- reading YAML
 * ------------------------------------------------------------ */

static int syntax_error(const struct src *s, yaml_parser_t *p) {
  char what[512];
  snprintf(what, sizeof(what), "YAML syntax error%s%s: %s",
           p->context ? " " : "", p->context ? p->context : "",
           p->problem ? p->problem : "unreadable input");
  return fail(s, (int)p->problem_mark.line + 1, NULL, NULL, false, what,
              s->assign ? "a YAML flow list like [a, b]"
                        : "section: lines with indented key: value lines");
}

/* libyaml's scanner takes time quadratic in the nesting depth of flow
 * collections ("[[[[...": 100k levels take a minute), and a config needs
 * one level. This rough pre-scan (quotes and comments skipped) refuses deep
 * nesting before libyaml sees it. Returns 0 or -1 with a message. */
#define MAX_FLOW_DEPTH 16
static int check_flow_depth(const char *text, size_t len, const struct src *s) {
  int depth = 0, line = 1;
  char quote = 0, prev = '\n';
  for (size_t i = 0; i < len; prev = text[i], i++) {
    char c = text[i];
    if (c == '\n')
      line++;
    if (quote) {
      if (quote == '"' && c == '\\' && i + 1 < len && text[i + 1] != '\n')
        i++;
      else if (c == quote)
        quote = 0;
      continue;
    }
    bool at_token = strchr(" \t\n[{,:", prev) != NULL;
    if (c == '#' && at_token) {
      while (i + 1 < len && text[i + 1] != '\n')
        i++;
    } else if ((c == '"' || c == '\'') && at_token) {
      quote = c;
    } else if (c == '[' || c == '{') {
      if (++depth > MAX_FLOW_DEPTH) {
        char exp[64];
        snprintf(exp, sizeof(exp), "at most %d levels", MAX_FLOW_DEPTH);
        return fail(s, line, NULL, NULL, false,
                    "lists or mappings nested too deep", exp);
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      depth--;
    }
  }
  return 0;
}

/* Loads the one YAML document of text into doc. Returns 0, or -1 with a
 * message; doc needs yaml_document_delete only on success. */
static int load_document(const char *text, size_t len, yaml_document_t *doc,
                         const struct src *s) {
  if (check_flow_depth(text, len, s))
    return -1;
  yaml_parser_t p;
  CHECK(yaml_parser_initialize(&p), "libyaml parser init failed");
  yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
  if (!yaml_parser_load(&p, doc)) {
    int rc = syntax_error(s, &p);
    yaml_parser_delete(&p);
    return rc;
  }
  yaml_document_t extra;
  if (!yaml_parser_load(&p, &extra)) {
    int rc = syntax_error(s, &p);
    yaml_parser_delete(&p);
    yaml_document_delete(doc);
    return rc;
  }
  yaml_node_t *root2 = yaml_document_get_root_node(&extra);
  int line2 = root2 ? (int)root2->start_mark.line + 1 : 0;
  yaml_document_delete(&extra);
  yaml_parser_delete(&p);
  if (root2) {
    yaml_document_delete(doc);
    return fail(s, line2, NULL, NULL, false, "a second YAML document",
                "one document per config");
  }
  return 0;
}

static void list_names(char *buf, size_t len, const char *section) {
  size_t pos = 0;
  if (!section) {
    for (size_t i = 0; i < NSECTIONS; i++)
      append(buf, len, &pos, "%s%s", i ? ", " : "", section_names[i]);
    return;
  }
  for (size_t i = 0; i < NKEYS; i++)
    if (!strcmp(schema[i].section, section))
      append(buf, len, &pos, "%s%s", pos ? ", " : "", schema[i].name);
}

static int section_index(const char *name) {
  for (size_t i = 0; i < NSECTIONS; i++)
    if (!strcmp(section_names[i], name))
      return (int)i;
  return -1;
}

/* "unknown section" with a suggestion. */
static int unknown_section(const struct src *s, int line, const char *name) {
  char what[256], exp[512];
  const char *near = closest(name, section_names, NSECTIONS);
  const char *owner = NULL; /* a key written at the top level? */
  for (size_t i = 0; i < NKEYS && !owner; i++)
    if (!strcmp(schema[i].name, name))
      owner = schema[i].section;
  if (near)
    snprintf(what, sizeof(what), "unknown section, did you mean \"%s\"?", near);
  else if (owner)
    snprintf(what, sizeof(what),
             "unknown section; %s is a key of section %s, indented under "
             "\"%s:\"",
             name, owner, owner);
  else
    snprintf(what, sizeof(what), "unknown section");
  snprintf(exp, sizeof(exp), "one of: ");
  list_names(exp + strlen(exp), sizeof(exp) - strlen(exp), NULL);
  return fail(s, line, name, NULL, false, what, exp);
}

/* "unknown key" with a suggestion from the same section, or the section
 * that has a key of this name. */
static int unknown_key(const struct src *s, int line, const char *sec,
                       const char *name) {
  const char *cands[NKEYS];
  size_t nc = 0;
  const char *elsewhere = NULL;
  for (size_t i = 0; i < NKEYS; i++) {
    if (!strcmp(schema[i].section, sec))
      cands[nc++] = schema[i].name;
    else if (!elsewhere && !strcmp(schema[i].name, name))
      elsewhere = schema[i].section;
  }
  const char *near = closest(name, cands, nc);
  char what[256], exp[1024];
  if (near)
    snprintf(what, sizeof(what), "unknown key, did you mean \"%s\"?", near);
  else if (elsewhere)
    snprintf(what, sizeof(what), "unknown key, did you mean \"%s.%s\"?",
             elsewhere, name);
  else
    snprintf(what, sizeof(what), "unknown key");
  snprintf(exp, sizeof(exp), "one of: ");
  list_names(exp + strlen(exp), sizeof(exp) - strlen(exp), sec);
  return fail(s, line, sec, name, false, what, exp);
}

static const char *scalar_text(const yaml_node_t *n) {
  return (const char *)n->data.scalar.value;
}

/* A mapping key must be a scalar without NUL; returns its text or NULL
 * after writing a message. */
static const char *key_text(const yaml_node_t *kn, const char *sec,
                            const struct src *s) {
  int line = (int)kn->start_mark.line + 1;
  if (kn->type != YAML_SCALAR_NODE ||
      strlen(scalar_text(kn)) != kn->data.scalar.length) {
    fail(s, line, sec, NULL, false,
         sec ? "a key that is not a plain name"
             : "a section name that is not a plain name",
         sec ? "key: value" : "section: followed by indented key: value lines");
    return NULL;
  }
  return scalar_text(kn);
}

static int read_document(struct config *cfg, yaml_document_t *doc,
                         const struct src *s) {
  yaml_node_t *root = yaml_document_get_root_node(doc);
  if (!root)
    return 0; /* empty file or only comments: nothing to change */
  if (root->type == YAML_SCALAR_NODE &&
      root->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
      is_null(scalar_text(root), root->data.scalar.length))
    return 0;
  if (root->type != YAML_MAPPING_NODE)
    return fail(s, (int)root->start_mark.line + 1, NULL, NULL, false,
                "the file is not a mapping of sections",
                "section: lines with indented key: value lines");
  int sec_line[NSECTIONS] = {0};
  int key_line[NKEYS] = {0};
  for (yaml_node_pair_t *sp = root->data.mapping.pairs.start;
       sp < root->data.mapping.pairs.top; sp++) {
    yaml_node_t *sk = yaml_document_get_node(doc, sp->key);
    yaml_node_t *sv = yaml_document_get_node(doc, sp->value);
    CHECK(sk && sv, "libyaml mapping pair without nodes");
    const char *sec = key_text(sk, NULL, s);
    if (!sec)
      return -1;
    int line = (int)sk->start_mark.line + 1;
    int si = section_index(sec);
    if (si < 0)
      return unknown_section(s, line, sec);
    if (sec_line[si]) {
      char what[96];
      snprintf(what, sizeof(what), "duplicate section, first at line %d",
               sec_line[si]);
      return fail(s, line, sec, NULL, false, what, "each section once");
    }
    sec_line[si] = line;
    if (sv->type == YAML_SCALAR_NODE &&
        sv->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        is_null(scalar_text(sv), sv->data.scalar.length))
      continue; /* "log:" with no keys */
    if (sv->type != YAML_MAPPING_NODE) {
      char what[96];
      snprintf(what, sizeof(what), "%s where a mapping of keys belongs",
               node_kind(sv));
      return fail(s, (int)sv->start_mark.line + 1, sec, NULL, true, what,
                  "indented key: value lines");
    }
    for (yaml_node_pair_t *kp = sv->data.mapping.pairs.start;
         kp < sv->data.mapping.pairs.top; kp++) {
      yaml_node_t *kk = yaml_document_get_node(doc, kp->key);
      yaml_node_t *kv = yaml_document_get_node(doc, kp->value);
      CHECK(kk && kv, "libyaml mapping pair without nodes");
      const char *name = key_text(kk, sec, s);
      if (!name)
        return -1;
      int kline = (int)kk->start_mark.line + 1;
      int ki = key_index(sec, name);
      if (ki < 0)
        return unknown_key(s, kline, sec, name);
      if (key_line[ki]) {
        char what[96];
        snprintf(what, sizeof(what), "duplicate key, first at line %d",
                 key_line[ki]);
        return fail(s, kline, sec, name, false, what, "each key once");
      }
      key_line[ki] = kline;
      if (set_from_node(cfg, ki, doc, kv, s))
        return -1;
      set_origin(cfg, ki, s->file, kline);
    }
  }
  return 0;
}

int config_read_string(struct config *cfg, const char *text, size_t len,
                       const char *name, char *err, size_t errlen) {
  struct src s = {name ? name : "<string>", NULL, err, errlen};
  yaml_document_t doc;
  if (load_document(text, len, &doc, &s))
    return -1;
  int rc = read_document(cfg, &doc, &s);
  yaml_document_delete(&doc);
  return rc;
}

#define MAX_FILE_BYTES (1u << 20) /* a config is a few KiB */

int config_read_file(struct config *cfg, const char *path, char *err,
                     size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot open config %s: %s", path, strerror(errno));
    return -1;
  }
  char *buf = xmalloc(MAX_FILE_BYTES + 1);
  size_t n = fread(buf, 1, MAX_FILE_BYTES + 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || n > MAX_FILE_BYTES) {
    snprintf(err, errlen, "cannot read config %s: %s", path,
             bad ? "read error" : "larger than 1 MiB");
    free(buf);
    return -1;
  }
  int rc = config_read_string(cfg, buf, n, path, err, errlen);
  free(buf);
  return rc;
}

/* Sets key ki from override text: scalars as written, lists as YAML. */
static int set_from_text(struct config *cfg, int ki, const char *text,
                         const struct src *s) {
  const struct config_key *k = &schema[ki];
  char exp[512], what[256];
  expected_text(k, exp, sizeof(exp));
  if (k->type == CONFIG_STRINGS || k->type == CONFIG_INTS) {
    yaml_document_t doc;
    if (load_document(text, strlen(text), &doc, s))
      return -1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc = 0;
    if (!root) { /* "key=" or only a comment: the empty list */
      if (k->type == CONFIG_STRINGS)
        strings_free(field(cfg, k));
      else
        ints_free(field(cfg, k));
    } else {
      rc = set_from_node(cfg, ki, &doc, root, s);
    }
    yaml_document_delete(&doc);
    return rc;
  }
  size_t a = 0, b = strlen(text);
  if (k->type != CONFIG_STRING) { /* "--set train.epochs= 3" is fine */
    while (a < b && isspace((unsigned char)text[a]))
      a++;
    while (b > a && isspace((unsigned char)text[b - 1]))
      b--;
  }
  union value v;
  enum parse_result r =
      parse_scalar(k, k->type, text + a, b - a, false, &v, what, sizeof(what));
  if (r != PARSE_OK)
    return fail(s, 0, k->section, k->name, r == PARSE_TYPE, what, exp);
  store_scalar(cfg, k, v);
  return 0;
}

int config_set(struct config *cfg, const char *assignment, char *err,
               size_t errlen) {
  struct src s = {NULL, assignment, err, errlen};
  const char *eq = strchr(assignment, '=');
  if (!eq)
    return fail(&s, 0, NULL, NULL, false, "no \"=\"", "section.key=value");
  const char *dot = memchr(assignment, '.', (size_t)(eq - assignment));
  if (!dot)
    return fail(&s, 0, NULL, NULL, false, "no section before the key",
                "section.key=value");
  char sec[64], name[64];
  size_t ns = (size_t)(dot - assignment), nk = (size_t)(eq - dot - 1);
  if (ns >= sizeof(sec) || nk >= sizeof(name))
    return fail(&s, 0, NULL, NULL, false, "name too long", "section.key=value");
  memcpy(sec, assignment, ns);
  sec[ns] = 0;
  memcpy(name, dot + 1, nk);
  name[nk] = 0;
  if (section_index(sec) < 0)
    return unknown_section(&s, 0, sec);
  int ki = key_index(sec, name);
  if (ki < 0)
    return unknown_key(&s, 0, sec, name);
  if (set_from_text(cfg, ki, eq + 1, &s))
    return -1;
  char label[512];
  snprintf(label, sizeof(label), "--set %s", assignment);
  set_origin(cfg, ki, label, 0);
  return 0;
}

/* ---- lifecycle
 * ------------------------------------------------------------------- */

static void free_fields(struct config *cfg) {
  for (size_t i = 0; i < NKEYS; i++) {
    void *p = field(cfg, &schema[i]);
    if (schema[i].type == CONFIG_STRING) {
      free(*(char **)p);
      *(char **)p = NULL;
    } else if (schema[i].type == CONFIG_STRINGS) {
      strings_free(p);
    } else if (schema[i].type == CONFIG_INTS) {
      ints_free(p);
    }
  }
}

struct config *config_new(void) {
  struct config *cfg = xcalloc(1, sizeof(*cfg));
  cfg->origin = xcalloc(1, sizeof(*cfg->origin));
  for (size_t i = 0; i < NKEYS; i++) {
    char err[512];
    struct src s = {NULL, schema[i].def, err, sizeof(err)};
    /* a default the schema itself rejects is our bug */
    CHECK(set_from_text(cfg, (int)i, schema[i].def, &s) == 0,
          "default of %s.%s: %s", schema[i].section, schema[i].name, err);
  }
  return cfg;
}

void config_free(struct config *cfg) {
  if (!cfg)
    return;
  free_fields(cfg);
  if (cfg->origin)
    for (size_t i = 0; i < NKEYS; i++)
      free(cfg->origin->label[i]);
  free(cfg->origin);
  free(cfg);
}

struct config *config_copy(const struct config *cfg) {
  struct config *c = xcalloc(1, sizeof(*c));
  memcpy(c, cfg, sizeof(*c)); /* scalars; pointers replaced below */
  c->origin = xcalloc(1, sizeof(*c->origin));
  for (size_t i = 0; i < NKEYS; i++) {
    const struct config_key *k = &schema[i];
    void *dst = field(c, k);
    const void *src = field(cfg, k);
    if (k->type == CONFIG_STRING) {
      *(char **)dst = xstrdup(*(char *const *)src);
    } else if (k->type == CONFIG_STRINGS) {
      const struct config_strings *a = src;
      struct config_strings *b = dst;
      b->v = xcalloc(a->n ? a->n : 1, sizeof(char *));
      for (size_t j = 0; j < a->n; j++)
        b->v[j] = xstrdup(a->v[j]);
    } else if (k->type == CONFIG_INTS) {
      const struct config_ints *a = src;
      struct config_ints *b = dst;
      b->v = xcalloc(a->n ? a->n : 1, sizeof(int64_t));
      if (a->n)
        memcpy(b->v, a->v, a->n * sizeof(int64_t));
    }
    set_origin(c, (int)i, cfg->origin->label[i], cfg->origin->line[i]);
  }
  return c;
}

int config_equal(const struct config *a, const struct config *b) {
  for (size_t i = 0; i < NKEYS; i++) {
    const struct config_key *k = &schema[i];
    const void *p = field(a, k), *q = field(b, k);
    switch (k->type) {
    case CONFIG_BOOL:
      if (*(const bool *)p != *(const bool *)q)
        return 0;
      break;
    case CONFIG_INT:
      if (*(const int64_t *)p != *(const int64_t *)q)
        return 0;
      break;
    case CONFIG_DOUBLE:
      if (*(const double *)p != *(const double *)q)
        return 0;
      break;
    case CONFIG_ENUM:
      if (*(const int *)p != *(const int *)q)
        return 0;
      break;
    case CONFIG_STRING:
      if (strcmp(*(char *const *)p, *(char *const *)q))
        return 0;
      break;
    case CONFIG_STRINGS: {
      const struct config_strings *x = p, *y = q;
      if (x->n != y->n)
        return 0;
      for (size_t j = 0; j < x->n; j++)
        if (strcmp(x->v[j], y->v[j]))
          return 0;
      break;
    }
    case CONFIG_INTS: {
      const struct config_ints *x = p, *y = q;
      if (x->n != y->n || (x->n && memcmp(x->v, y->v, x->n * sizeof(int64_t))))
        return 0;
      break;
    }
    }
  }
  return 1;
}

/* ---- cross-key checks -------------------------------------------------------
 */

/* "where: sec.key: what (expected ...)", where is the file:line or --set
 * that set `blame`, else the one that set `other`, else nothing (both are
 * defaults). */
static int xfail(const struct config *cfg, char *err, size_t errlen,
                 const char *blame, const char *other, const char *expected,
                 const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int xfail(const struct config *cfg, char *err, size_t errlen,
                 const char *blame, const char *other, const char *expected,
                 const char *fmt, ...) {
  char sec[64], name[64];
  const char *dot = strchr(blame, '.');
  CHECK(dot && (size_t)(dot - blame) < sizeof(sec), "bad key %s", blame);
  snprintf(sec, sizeof(sec), "%.*s", (int)(dot - blame), blame);
  snprintf(name, sizeof(name), "%s", dot + 1);
  int ki = key_index(sec, name);
  CHECK(ki >= 0, "no key %s", blame);
  if (!cfg->origin->label[ki] && other) {
    dot = strchr(other, '.');
    CHECK(dot, "bad key %s", other);
    char osec[64];
    snprintf(osec, sizeof(osec), "%.*s", (int)(dot - other), other);
    int oi = key_index(osec, dot + 1);
    CHECK(oi >= 0, "no key %s", other);
    if (cfg->origin->label[oi])
      ki = oi;
  }
  size_t pos = 0;
  err[0] = 0;
  const char *label = cfg->origin->label[ki];
  if (label && cfg->origin->line[ki])
    append(err, errlen, &pos, "%s:%d: ", label, cfg->origin->line[ki]);
  else if (label)
    append(err, errlen, &pos, "%s: ", label);
  append(err, errlen, &pos, "%s: ", blame);
  va_list ap;
  va_start(ap, fmt);
  if (pos < errlen) {
    int n = vsnprintf(err + pos, errlen - pos, fmt, ap);
    if (n > 0)
      pos = pos + (size_t)n < errlen ? pos + (size_t)n : errlen;
  }
  va_end(ap);
  append(err, errlen, &pos, " (expected %s)", expected);
  return -1;
}

/* data.format csv: every column named in one role at most, and (with
 * data.csv_columns) only columns that exist. The header of a file is
 * checked the same way when the reader opens it (worker/data.h). */
static int csv_validate(const struct config *cfg, char *err, size_t errlen) {
  const struct config_data *d = &cfg->data;
  struct {
    const char *key;
    const char *const *v;
    size_t n;
  } roles[] = {
      {"data.csv_label", (const char *const *)&d->csv_label, 1},
      {"data.csv_group", (const char *const *)&d->csv_group,
       d->csv_group[0] ? 1 : 0},
      {"data.csv_numeric", (const char *const *)d->csv_numeric.v,
       d->csv_numeric.n},
      {"data.csv_value", (const char *const *)d->csv_value.v, d->csv_value.n},
      {"data.csv_ignore", (const char *const *)d->csv_ignore.v,
       d->csv_ignore.n},
  };
  const struct config_strings *cols = &d->csv_columns;
  for (size_t i = 0; i < cols->n; i++)
    for (size_t j = 0; j < i; j++)
      if (!strcmp(cols->v[i], cols->v[j]))
        return xfail(cfg, err, errlen, "data.csv_columns", NULL,
                     "distinct column names", "'%s' appears twice", cols->v[i]);
  for (size_t r = 0; r < ARRAY_LEN(roles); r++)
    for (size_t i = 0; i < roles[r].n; i++) {
      const char *name = roles[r].v[i];
      for (size_t q = 0; q <= r; q++)
        for (size_t j = 0; j < (q == r ? i : roles[q].n); j++)
          if (!strcmp(name, roles[q].v[j]))
            return xfail(cfg, err, errlen, roles[r].key, roles[q].key,
                         "each column in one role", "'%s' is also in %s", name,
                         roles[q].key);
      size_t c = 0;
      while (c < cols->n && strcmp(cols->v[c], name))
        c++;
      if (cols->n && c == cols->n) {
        char list[256];
        size_t pos = 0;
        list[0] = 0;
        for (size_t k = 0; k < cols->n && pos < sizeof(list); k++) {
          int n = snprintf(list + pos, sizeof(list) - pos, "%s%s",
                           k ? ", " : "", cols->v[k]);
          if (n > 0)
            pos += (size_t)n;
        }
        return xfail(cfg, err, errlen, roles[r].key, "data.csv_columns",
                     "names among data.csv_columns",
                     "no column '%s' (data.csv_columns: %s)", name, list);
      }
    }
  return 0;
}

int config_validate(const struct config *cfg, char *err, size_t errlen) {
  const struct config_data *d = &cfg->data;
  if (d->train.n == 0)
    return xfail(cfg, err, errlen, "data.train", NULL,
                 "at least one path or glob, like [data/train.tsv]",
                 "no training data");
  if (d->valid.n && d->split_valid > 0)
    return xfail(cfg, err, errlen, "data.split_valid", "data.valid",
                 "data.valid or data.split_valid, not both",
                 "%g while data.valid is also given", d->split_valid);
  if (d->test.n && d->split_test > 0)
    return xfail(cfg, err, errlen, "data.split_test", "data.test",
                 "data.test or data.split_test, not both",
                 "%g while data.test is also given", d->split_test);
  if (d->split_valid + d->split_test >= 1)
    return xfail(cfg, err, errlen, "data.split_test", "data.split_valid",
                 "split_valid + split_test below 1",
                 "split_valid + split_test = %g leaves no training lines",
                 d->split_valid + d->split_test);
  if (strlen(d->csv_delimiter) != 1)
    return xfail(cfg, err, errlen, "data.csv_delimiter", NULL,
                 "one byte, like \",\" or \"\\t\"", "\"%s\" is not one byte",
                 d->csv_delimiter);
  if (strchr("\"\r\n", d->csv_delimiter[0]))
    return xfail(cfg, err, errlen, "data.csv_delimiter", NULL,
                 "a byte other than '\"', CR and LF",
                 "\"%s\" cannot separate columns", d->csv_delimiter);
  if (d->format == CONFIG_FORMAT_CSV && !d->csv_label[0])
    return xfail(cfg, err, errlen, "data.csv_label", "data.format",
                 "the name of the label column",
                 "empty while data.format is csv");
  if (d->format == CONFIG_FORMAT_CSV && csv_validate(cfg, err, errlen))
    return -1;

  const struct config_model *m = &cfg->model;
  const char *mname = model_names[m->name];
  bool needs_mlp =
      m->name == CONFIG_MODEL_DNN || m->name == CONFIG_MODEL_DEEPFM ||
      m->name == CONFIG_MODEL_DCN || m->name == CONFIG_MODEL_PARAMASKNET ||
      m->name == CONFIG_MODEL_MASKFUSION ||
      (m->name == CONFIG_MODEL_DCNV2 &&
       m->dcnv2_structure != CONFIG_DCNV2_CROSSNET_ONLY);
  if (needs_mlp && m->hidden_units.n == 0)
    return xfail(cfg, err, errlen, "model.hidden_units", "model.name",
                 "at least one layer width, like [400, 400]",
                 "empty, but model %s has an MLP", mname);
  bool crosses = m->name == CONFIG_MODEL_DCN || m->name == CONFIG_MODEL_DCNV2 ||
                 m->name == CONFIG_MODEL_EDCN;
  if (crosses && m->cross_layers == 0)
    return xfail(cfg, err, errlen, "model.cross_layers", "model.name",
                 "at least 1 cross layer", "0 for model %s", mname);
  /* One worker keeps the dense parameters (running statistics included)
   * itself; several share them through the pservers, which move only
   * trained tensors. */
  if (m->use_bn && cfg->cluster.pservers > 0 && cfg->cluster.workers > 1)
    return xfail(cfg, err, errlen, "model.use_bn", "cluster.workers",
                 "use_bn false, or one worker (cluster.workers 1)",
                 "with %lld workers the dense parameters live on the "
                 "pservers, which do not share BatchNorm's running "
                 "statistics yet (evaluation would use their initial "
                 "mean 0, variance 1)",
                 (long long)cfg->cluster.workers);
  if (m->num_experts > 1 && m->low_rank == 0)
    return xfail(cfg, err, errlen, "model.num_experts", "model.low_rank",
                 "model.low_rank >= 1 for a mixture of experts, or "
                 "num_experts 1",
                 "%lld experts with a full-rank cross matrix (low_rank 0)",
                 (long long)m->num_experts);
  if (cfg->embedding.amtl && cfg->embedding.dim < 2)
    return xfail(cfg, err, errlen, "embedding.dim", "embedding.amtl",
                 "embedding.dim >= 2 with amtl on",
                 "%lld leaves AMTL no prefix to choose",
                 (long long)cfg->embedding.dim);

  const struct config_train *t = &cfg->train;
  if (t->mode == CONFIG_MODE_SSP && t->staleness < 1)
    return xfail(cfg, err, errlen, "train.staleness", "train.mode",
                 "train.staleness >= 1 when train.mode is ssp",
                 "%lld in ssp mode", (long long)t->staleness);
  if (!t->run_dir[0])
    return xfail(cfg, err, errlen, "train.run_dir", NULL,
                 "a directory for logs, checkpoints and the config", "empty");

  const struct config_cluster *c = &cfg->cluster;
  if (c->pservers == 0 && c->workers > 1)
    return xfail(cfg, err, errlen, "cluster.workers", "cluster.pservers",
                 "cluster.workers 1, or cluster.pservers >= 1",
                 "%lld workers in embedded mode (cluster.pservers 0)",
                 (long long)c->workers);
  if (c->pservers > 0 && c->base_port + c->pservers - 1 > 65535)
    return xfail(cfg, err, errlen, "cluster.base_port", "cluster.pservers",
                 "base_port + pservers - 1 <= 65535",
                 "%lld with %lld pservers runs past port 65535",
                 (long long)c->base_port, (long long)c->pservers);
  if (c->launcher == CONFIG_LAUNCHER_SSH && c->hosts.n == 0)
    return xfail(cfg, err, errlen, "cluster.hosts", "cluster.launcher",
                 "the machines to start processes on",
                 "empty while cluster.launcher is ssh");
  if (!c->host[0])
    return xfail(cfg, err, errlen, "cluster.host", NULL,
                 "an address like 127.0.0.1", "empty");

  const struct config_pserver *p = &cfg->pserver;
  long long need =
      (long long)(p->cache_mb + p->block_cache_mb + p->write_buffer_mb);
  if (p->memory_mb < need)
    return xfail(cfg, err, errlen, "pserver.memory_mb", "pserver.cache_mb",
                 "memory_mb >= cache_mb + block_cache_mb + write_buffer_mb",
                 "%lld is less than the %lld MiB of caches and write buffer",
                 (long long)p->memory_mb, need);
  return 0;
}

struct config *config_load_string(const char *text, size_t len,
                                  const char *name, char *err, size_t errlen) {
  struct config *cfg = config_new();
  if (config_read_string(cfg, text, len, name, err, errlen) ||
      config_validate(cfg, err, errlen)) {
    config_free(cfg);
    return NULL;
  }
  return cfg;
}

struct config *config_load_file(const char *path, char *err, size_t errlen) {
  struct config *cfg = config_new();
  if (config_read_file(cfg, path, err, errlen) ||
      config_validate(cfg, err, errlen)) {
    config_free(cfg);
    return NULL;
  }
  return cfg;
}

/* ---- output
 * --------------------------------------------------------------------- */

/* A YAML double-quoted string: always quoted, so "null", "yes" and "" read
 * back as strings. */
static void put_quoted(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(f, "\\x%02x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

static void put_value(FILE *f, const struct config *cfg,
                      const struct config_key *k) {
  const void *p = field(cfg, k);
  char num[32];
  switch (k->type) {
  case CONFIG_BOOL:
    fputs(*(const bool *)p ? "true" : "false", f);
    break;
  case CONFIG_INT:
    fprintf(f, "%lld", (long long)*(const int64_t *)p);
    break;
  case CONFIG_DOUBLE:
    fmt_double(*(const double *)p, num, sizeof(num));
    fputs(num, f);
    break;
  case CONFIG_ENUM: {
    int e = *(const int *)p;
    CHECK(e >= 0 && (size_t)e < nvalues(k), "%s.%s = %d", k->section, k->name,
          e);
    fputs(k->values[e], f);
    break;
  }
  case CONFIG_STRING:
    put_quoted(f, *(char *const *)p);
    break;
  case CONFIG_STRINGS: {
    const struct config_strings *l = p;
    fputc('[', f);
    for (size_t i = 0; i < l->n; i++) {
      if (i)
        fputs(", ", f);
      put_quoted(f, l->v[i]);
    }
    fputc(']', f);
    break;
  }
  case CONFIG_INTS: {
    const struct config_ints *l = p;
    fputc('[', f);
    for (size_t i = 0; i < l->n; i++)
      fprintf(f, "%s%lld", i ? ", " : "", (long long)l->v[i]);
    fputc(']', f);
    break;
  }
  }
}

int config_dump(const struct config *cfg, FILE *f) {
  fputs("# maskps effective config: every key, defaults included\n", f);
  const char *sec = NULL;
  for (size_t i = 0; i < NKEYS; i++) {
    const struct config_key *k = &schema[i];
    if (!sec || strcmp(sec, k->section)) {
      sec = k->section;
      fprintf(f, "%s:\n", sec);
    }
    fprintf(f, "  %s: ", k->name);
    put_value(f, cfg, k);
    fputc('\n', f);
  }
  return fflush(f) == 0 && !ferror(f) ? 0 : -1;
}

char *config_dump_string(const struct config *cfg) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  CHECK(f, "open_memstream: %s", strerror(errno));
  CHECK(config_dump(cfg, f) == 0, "config_dump to memory failed");
  fclose(f);
  return buf;
}

int config_schema_markdown(FILE *f) {
  const char *sec = NULL;
  for (size_t i = 0; i < NKEYS; i++) {
    const struct config_key *k = &schema[i];
    if (!sec || strcmp(sec, k->section)) {
      sec = k->section;
      fprintf(f, "%s### %s\n\n", i ? "\n" : "", sec);
      fputs("| key | type | default | range | meaning |\n", f);
      fputs("| --- | --- | --- | --- | --- |\n", f);
    }
    char r[512];
    config_key_range(k, r, sizeof(r));
    fprintf(f, "| `%s` | %s | `%s` | %s | %s |\n", k->name,
            config_type_name(k->type), k->def[0] ? k->def : "\"\"",
            r[0] ? r : "any", k->doc);
  }
  return fflush(f) == 0 && !ferror(f) ? 0 : -1;
}
