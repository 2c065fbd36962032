/*
 * config: one run's settings, read from a YAML file and `--set` overrides.
 *
 * A config file has FuxiCTR-like sections (data, model, embedding, optimizer,
 * train, cluster, pserver, log, warm_start, security), each a mapping of
 * key: value. Every key is described by one row of a schema table in
 * config.c: its section, name, type, the offset of its field in struct
 * config, its default (as YAML text), its valid range or values, and a
 * one-line doc. That single table drives parsing, defaults, validation,
 * overrides, the YAML dump and the key reference in configs/README.md, so a
 * key cannot be parsed but undocumented, or documented with a stale default.
 *
 * The struct field of a key has the key's name: `train.batch_size` in the
 * file is cfg->train.batch_size in C. Integers are int64_t, numbers double,
 * enums the C enums below (value = position in the schema's list of names),
 * strings are owned NUL-terminated char * and never NULL ("" means unset),
 * lists are struct config_strings / struct config_ints.
 *
 * Errors are outside faults (STYLE.md rule 4): every function that reads
 * text returns -1/NULL and writes one message a person can act on:
 *
 *   demo.yaml:7: train.batch_size: -3 is out of range
 *       (expected an integer in 1..1048576)
 *   demo.yaml:3: model.nmae: unknown key, did you mean "name"?
 *       (expected one of: name, ...)
 *   --set train.batch_size=abc: expected an integer in 1..1048576
 *
 * (each on one line, without a newline at the end; 1024 bytes of err hold
 * any of them unless the input itself is huge, and a message that does not
 * fit is truncated, never overflowed).
 *
 * Line numbers are 1-based. Relative paths in a config are kept as written:
 * they are resolved against the working directory of the process that uses
 * them (the launcher runs from the repository root).
 *
 * What this module is not: it does not open data files, create run
 * directories or check that paths exist; the modules that use a path do.
 * It includes yaml.h (libyaml); no other file of maskps does.
 */
#ifndef MASKPS_CONFIG_H
#define MASKPS_CONFIG_H

#include "common/logger.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- enums (value = index of the name in the schema) ------------------- */

enum config_format {
  CONFIG_FORMAT_CRITEO,
  CONFIG_FORMAT_LIBFM,
  CONFIG_FORMAT_CSV
};

enum config_model_name {
  CONFIG_MODEL_LR,
  CONFIG_MODEL_FM,
  CONFIG_MODEL_DNN,
  CONFIG_MODEL_DEEPFM,
  CONFIG_MODEL_DCN,
  CONFIG_MODEL_DCNV2,
  CONFIG_MODEL_EDCN,
  CONFIG_MODEL_SERMASKNET,
  CONFIG_MODEL_PARAMASKNET,
  CONFIG_MODEL_MASKFUSION,
};

enum config_activation {
  CONFIG_ACT_RELU,
  CONFIG_ACT_TANH,
  CONFIG_ACT_SIGMOID,
  CONFIG_ACT_LEAKY_RELU,
};

enum config_dcnv2_structure {
  CONFIG_DCNV2_CROSSNET_ONLY,
  CONFIG_DCNV2_STACKED,
  CONFIG_DCNV2_PARALLEL,
};

enum config_bridge {
  CONFIG_BRIDGE_HADAMARD,
  CONFIG_BRIDGE_ADD,
  CONFIG_BRIDGE_CONCAT
};

enum config_dense_opt { CONFIG_DENSE_ADAM, CONFIG_DENSE_SGD };

/* Not the same numbering as enum row_opt (row.h has a NONE at 0). */
enum config_sparse_opt {
  CONFIG_SPARSE_SGD,
  CONFIG_SPARSE_ADAGRAD,
  CONFIG_SPARSE_ADAM,
  CONFIG_SPARSE_FTRL,
};

enum config_mode { CONFIG_MODE_SYNC, CONFIG_MODE_ASYNC, CONFIG_MODE_SSP };

enum config_launcher {
  CONFIG_LAUNCHER_LOCAL,
  CONFIG_LAUNCHER_SSH,
  CONFIG_LAUNCHER_SLURM
};

enum config_cache_policy { CONFIG_CACHE_CLOCK, CONFIG_CACHE_LRU };

enum config_wal { CONFIG_WAL_SYNC, CONFIG_WAL_ASYNC, CONFIG_WAL_OFF };

enum config_progress {
  CONFIG_PROGRESS_AUTO,
  CONFIG_PROGRESS_ON,
  CONFIG_PROGRESS_OFF
};

/* ---- lists -------------------------------------------------------------- */

struct config_strings {
  char **v; /* [n] owned strings */
  size_t n;
};

struct config_ints {
  int64_t *v; /* [n] */
  size_t n;
};

/* ---- the sections ------------------------------------------------------- */
/* Meaning, default and range of every field: configs/README.md, or the doc
 * strings of config_schema(). Units are in the names (_mb, _ms, _s, _steps). */

struct config_data {
  enum config_format format;
  struct config_strings train, valid, test; /* paths or globs */
  double split_valid, split_test;           /* fractions of train held out */
  int64_t split_seed;
  double bad_line_fraction;
  int64_t report_bad_lines;
  int64_t max_lines; /* 0 = all */
  int64_t shuffle_buffer;
  char *csv_delimiter; /* exactly one byte */
  char *csv_label;
  struct config_strings csv_numeric; /* bucketised (Criteo rule) */
  struct config_strings csv_value;   /* fed as a value times one row */
  char *csv_group;                   /* gAUC group-id column; "" = none */
  struct config_strings csv_ignore;  /* columns skipped */
  struct config_strings csv_columns; /* names; empty = header row */
};

struct config_model {
  enum config_model_name name;
  struct config_ints hidden_units;
  enum config_activation activation;
  double dropout; /* [0, 1) */
  bool net_layernorm, emb_layernorm, use_bn;
  int64_t num_blocks, block_dim;
  struct config_ints block_dims; /* empty = block_dim for every block */
  double reduction_ratio;
  int64_t cross_layers;
  enum config_dcnv2_structure dcnv2_structure;
  int64_t low_rank; /* 0 = full rank */
  int64_t num_experts;
  enum config_bridge bridge;
  double temperature;
  bool cross_residual; /* edcn */
  bool instance_norm;
  struct config_ints controller_units;
};

struct config_embedding {
  int64_t dim; /* D, floats per full row */
  double init_std;
  int64_t min_count;
  int64_t ttl_steps; /* 0 = never expire */
  double l2;
  bool amtl;
  int64_t amtl_warmup_steps;
  double amtl_temperature;
  struct config_ints amtl_hidden_units;
  int64_t amtl_count_buckets;
};

struct config_optimizer {
  enum config_dense_opt dense;
  double lr, beta1, beta2, eps, clip_norm, dense_l2;
  enum config_sparse_opt sparse;
  double sparse_lr, adagrad_init_acc;
  double ftrl_alpha, ftrl_beta, ftrl_l1, ftrl_l2;
  bool lazy_l2;
  double adaptive_reg_lambda;
};

struct config_train {
  int64_t batch_size; /* examples per step per worker */
  int64_t epochs;
  int64_t max_steps; /* 0 = no limit */
  enum config_mode mode;
  int64_t staleness; /* steps, ssp only */
  int64_t dense_sync_every;
  int64_t eval_every_steps; /* 0 = once per epoch */
  int64_t patience;
  double lr_decay_factor;
  int64_t seed;
  char *run_dir;
  int64_t threads; /* 0 = one per core */
  int64_t checkpoint_every_steps;
  int64_t keep_checkpoints;
  bool prefetch; /* async/ssp: batch t+1's pulls overlap batch t */
};

struct config_cluster {
  int64_t pservers; /* 0 = embedded mode */
  int64_t workers;
  enum config_launcher launcher;
  struct config_strings hosts;
  char *host;
  int64_t base_port;
  int64_t request_timeout_ms;
  int64_t max_restarts;
};

struct config_pserver {
  int64_t memory_mb, cache_mb, block_cache_mb, write_buffer_mb;
  enum config_cache_policy cache_policy;
  char *db_dir; /* "" = <run_dir>/db */
  enum config_wal wal;
  int64_t threads; /* 0 = one per core */
};

struct config_log {
  enum logger_level level;
  enum config_progress progress;
  double interval_s;
  bool jsonl;
};

struct config_warm_start {
  struct config_strings tables; /* old table directories */
  char *dense;                  /* "" = none */
  bool read_through;
};

struct config_security {
  bool curve;
  char *keys_dir; /* "" = <run_dir>/keys */
};

struct config_origin; /* private: where each key was set, for messages */

/* A struct config owns its strings, lists and origin: copy it with
 * config_copy(), never by assignment. */
struct config {
  struct config_data data;
  struct config_model model;
  struct config_embedding embedding;
  struct config_optimizer optimizer;
  struct config_train train;
  struct config_cluster cluster;
  struct config_pserver pserver;
  struct config_log log;
  struct config_warm_start warm_start;
  struct config_security security;
  struct config_origin *origin; /* owned; not part of the settings */
};

/* ---- the schema --------------------------------------------------------- */

enum config_type {
  CONFIG_BOOL,
  CONFIG_INT,
  CONFIG_DOUBLE,
  CONFIG_STRING,
  CONFIG_ENUM,
  CONFIG_STRINGS, /* list of strings */
  CONFIG_INTS,    /* list of integers */
};

enum {
  CONFIG_MIN_OPEN = 1u << 0, /* doubles: min itself is not allowed */
  CONFIG_MAX_OPEN = 1u << 1, /* doubles: max itself is not allowed */
  CONFIG_NO_MAX = 1u << 2,   /* no upper bound (max is ignored) */
};

/* One key. Ranges apply to ints, doubles and the elements of int lists. */
struct config_key {
  const char *section, *name;
  enum config_type type;
  size_t offset;             /* of the field in struct config */
  const char *def;           /* default as YAML text: "4096", "[400, 400]" */
  int64_t imin, imax;        /* CONFIG_INT, CONFIG_INTS */
  double dmin, dmax;         /* CONFIG_DOUBLE */
  unsigned flags;            /* CONFIG_MIN_OPEN ... */
  const char *const *values; /* CONFIG_ENUM: names, NULL-terminated */
  const char *doc;           /* one line */
};

/* The schema in order (sections in file order, keys in section order).
 * Sets *n to the number of keys. Static storage; never NULL. */
const struct config_key *config_schema(size_t *n);

/* The key `section.name`, or NULL if there is none. */
const struct config_key *config_key_find(const char *section, const char *name);

/* "bool", "int", "number", "string", "enum", "list of strings",
 * "list of ints". */
const char *config_type_name(enum config_type t);

/* The valid values of a key as text: "1..1048576", "[0, 1)", ">= 0",
 * "sync, async, ssp"; "" when any value of the type goes. Writes at most
 * len bytes (NUL included) and returns buf. */
char *config_key_range(const struct config_key *k, char *buf, size_t len);

/* Name of an enum value of a key, e.g. config_enum_name("train", "mode",
 * cfg->train.mode) == "ssp"; "?" for an unknown key or value. Static. */
const char *config_enum_name(const char *section, const char *name, int value);

/* Writes the key reference as Markdown: one "### section" heading and one
 * table (key, type, default, range, meaning) per section. This is the text
 * between the markers in configs/README.md. Returns 0, or -1 on a write
 * error. */
int config_schema_markdown(FILE *f);

/* ---- lifecycle and reading ---------------------------------------------- */

/* A config holding every default. Defaults alone do not pass
 * config_validate() (data.train is empty). Caller owns the result; free
 * with config_free(). Never NULL. */
struct config *config_new(void);
void config_free(struct config *cfg);

/* A deep copy (settings and origins). Caller owns it; never NULL. */
struct config *config_copy(const struct config *cfg);

/* Reads YAML text into cfg: keys present overwrite cfg's values, others keep
 * theirs, so several files can be layered. `name` labels messages (a file
 * name; NULL = "<string>"). Does not run the cross-key checks. Returns 0, or
 * -1 with err set; cfg may then be partly updated and should be dropped. */
int config_read_string(struct config *cfg, const char *text, size_t len,
                       const char *name, char *err, size_t errlen);

/* config_read_string on a file's content (at most 1 MiB); messages name
 * the path as given. */
int config_read_file(struct config *cfg, const char *path, char *err,
                     size_t errlen);

/* Applies one override "section.key=value" (the launcher's --set). Scalar
 * values are taken as written after the '=' (no YAML quoting rules, so
 * "--set data.csv_delimiter=;" and globs work); list values are YAML flow
 * lists: "model.hidden_units=[400,400]", "data.valid=[]". Same checks as a
 * file. Returns 0, or -1 with err set and cfg unchanged. */
int config_set(struct config *cfg, const char *assignment, char *err,
               size_t errlen);

/* The cross-key checks (e.g. ssp mode needs train.staleness >= 1). Messages
 * point at the line (or --set) where the offending key was set. Returns 0,
 * or -1 with err set. */
int config_validate(const struct config *cfg, char *err, size_t errlen);

/* config_new + config_read_file + config_validate. NULL with err set on any
 * error. Caller owns the result; free with config_free(). */
struct config *config_load_file(const char *path, char *err, size_t errlen);

/* config_new + config_read_string + config_validate (tests, fuzzing). */
struct config *config_load_string(const char *text, size_t len,
                                  const char *name, char *err, size_t errlen);

/* ---- output ------------------------------------------------------------- */

/* Writes every key (defaults included) as YAML that config_read_* reads
 * back to an equal config; for the run directory's record of what ran.
 * Returns 0, or -1 if a write failed. */
int config_dump(const struct config *cfg, FILE *f);

/* config_dump into a new string. Caller owns it; free with free(). */
char *config_dump_string(const struct config *cfg);

/* 1 if every setting of a and b is equal (origins are ignored), else 0. */
int config_equal(const struct config *a, const struct config *b);

#endif
