/* config: defaults, every kind of error with its exact message, cross-key
 * checks, --set overrides, dump -> reload round trips, the key reference in
 * configs/README.md and the example configs.
 *
 * `test_config --schema-markdown` prints the key reference that belongs
 * between the markers in configs/README.md. */
#include "common/config.h"

#include <glob.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static struct config *load(const char *text, char *err, size_t errlen) {
  return config_load_string(text, strlen(text), "demo.yaml", err, errlen);
}

/* The smallest config that passes validation. */
#define MIN_DATA "data:\n  train: [t.tsv]\n"

static void test_defaults(void **state) {
  (void)state;
  struct config *c = config_new();
  assert_int_equal(c->data.format, CONFIG_FORMAT_CRITEO);
  assert_int_equal(c->data.train.n, 0);
  assert_string_equal(c->data.csv_delimiter, ",");
  assert_int_equal(c->model.name, CONFIG_MODEL_DNN);
  assert_int_equal(c->model.hidden_units.n, 3);
  assert_int_equal(c->model.hidden_units.v[0], 400);
  assert_int_equal(c->model.hidden_units.v[2], 400);
  assert_true(c->model.net_layernorm);
  assert_false(c->model.use_bn);
  assert_int_equal(c->embedding.dim, 16);
  assert_true(c->embedding.init_std == 1e-4);
  assert_false(c->embedding.amtl);
  assert_int_equal(c->optimizer.dense, CONFIG_DENSE_ADAM);
  assert_true(c->optimizer.lr == 1e-3);
  assert_true(c->optimizer.eps == 1e-8);
  assert_int_equal(c->optimizer.sparse, CONFIG_SPARSE_ADAM);
  assert_int_equal(c->train.batch_size, 4096);
  assert_int_equal(c->train.mode, CONFIG_MODE_SYNC);
  assert_true(c->train.lr_decay_factor == 0.1);
  assert_string_equal(c->train.run_dir, "runs/default");
  assert_int_equal(c->cluster.pservers, 0);
  assert_int_equal(c->cluster.workers, 1);
  assert_string_equal(c->cluster.host, "127.0.0.1");
  assert_int_equal(c->pserver.wal, CONFIG_WAL_ASYNC);
  assert_string_equal(c->pserver.db_dir, "");
  assert_int_equal(c->log.level, LOGGER_INFO);
  assert_int_equal(c->warm_start.tables.n, 0);
  assert_string_equal(c->warm_start.dense, "");
  assert_false(c->security.curve);
  /* defaults alone lack training data */
  char err[512];
  assert_int_equal(config_validate(c, err, sizeof(err)), -1);
  assert_string_equal(err, "data.train: no training data (expected at least "
                           "one path or glob, like [data/train.tsv])");
  config_free(c);
  config_free(NULL);

  /* an empty file, or one with only comments, is all defaults */
  c = config_new();
  assert_int_equal(
      config_read_string(c, "# nothing\n", 10, "x", err, sizeof(err)), 0);
  struct config *d = config_new();
  assert_true(config_equal(c, d));
  config_free(c);
  config_free(d);
}

static void test_reads_every_type(void **state) {
  (void)state;
  char err[512] = "";
  struct config *c =
      load("# comment\n"
           "data:\n"
           "  format: LibFM\n" /* enum names are case-insensitive */
           "  train: [a.tsv, \"b c.tsv\"]\n"
           "  valid:\n"
           "    - v1.tsv\n"
           "    - 'v2.tsv'\n"
           "  test:\n" /* empty = the empty list */
           "model:\n"
           "  name: sermasknet\n"
           "  hidden_units: [64, 32]\n"
           "  dropout: 0.25\n"
           "  use_bn: yes\n"
           "  net_layernorm: false\n"
           "embedding:\n"
           "  amtl: true\n"
           "  init_std: 1e-3\n"
           "train:\n"
           "  batch_size: 512\n"
           "  mode: ssp\n"
           "  staleness: 4\n"
           "  run_dir: runs/x\n"
           "  seed: 9007199254740993\n" /* 2^53 + 1: kept exactly */
           "log:\n"                     /* a section with no keys */
           "warm_start:\n"
           "  dense: ''\n"
           "  tables: []\n",
           err, sizeof(err));
  if (!c)
    fail_msg("%s", err);
  assert_int_equal(c->data.format, CONFIG_FORMAT_LIBFM);
  assert_int_equal(c->data.train.n, 2);
  assert_string_equal(c->data.train.v[1], "b c.tsv");
  assert_int_equal(c->data.valid.n, 2);
  assert_string_equal(c->data.valid.v[1], "v2.tsv");
  assert_int_equal(c->data.test.n, 0);
  assert_int_equal(c->model.name, CONFIG_MODEL_SERMASKNET);
  assert_int_equal(c->model.hidden_units.n, 2);
  assert_int_equal(c->model.hidden_units.v[1], 32);
  assert_true(c->model.dropout == 0.25);
  assert_true(c->model.use_bn);
  assert_false(c->model.net_layernorm);
  assert_true(c->embedding.amtl);
  assert_true(c->embedding.init_std == 1e-3);
  assert_int_equal(c->train.batch_size, 512);
  assert_int_equal(c->train.mode, CONFIG_MODE_SSP);
  assert_int_equal(c->train.staleness, 4);
  assert_string_equal(c->train.run_dir, "runs/x");
  assert_true(c->train.seed == INT64_C(9007199254740993));
  assert_string_equal(config_enum_name("train", "mode", c->train.mode), "ssp");
  /* untouched keys keep their defaults */
  assert_int_equal(c->train.epochs, 1);
  config_free(c);
}

/* Each error kind, with the exact message. */
static void test_error_messages(void **state) {
  (void)state;
  static const struct {
    const char *yaml, *msg;
  } cases[] = {
      {"train:\n  batch_size: -3\n",
       "demo.yaml:2: train.batch_size: -3 is out of range (expected an "
       "integer in 1..1048576)"},
      {"train:\n  batch_size: abc\n",
       "demo.yaml:2: train.batch_size: \"abc\" is not an integer (expected an "
       "integer in 1..1048576)"},
      {"train:\n  batch_size: 1.5\n",
       "demo.yaml:2: train.batch_size: \"1.5\" is not an integer (expected an "
       "integer in 1..1048576)"},
      {"train:\n  epochs:\n",
       "demo.yaml:2: train.epochs: an empty value is not an integer (expected "
       "an integer in 1..100000)"},
      {"data:\n  split_seed: 99999999999999999999\n",
       "demo.yaml:2: data.split_seed: 99999999999999999999 is out of range "
       "(expected an integer >= 0)"},
      {"model:\n  name: dnn\n  nmae: sermasknet\n",
       "demo.yaml:3: model.nmae: unknown key, did you mean \"name\"? (expected "
       "one of: name, hidden_units, activation, dropout, net_layernorm, "
       "emb_layernorm, use_bn, num_blocks, block_dim, block_dims, "
       "reduction_ratio, cross_layers, dcnv2_structure, low_rank, "
       "num_experts, bridge, temperature, cross_residual, instance_norm, "
       "controller_units)"},
      {"model:\n  lr: 0.1\n",
       "demo.yaml:2: model.lr: unknown key, did you mean \"optimizer.lr\"? "
       "(expected one of: name, hidden_units, activation, dropout, "
       "net_layernorm, emb_layernorm, use_bn, num_blocks, block_dim, "
       "block_dims, reduction_ratio, cross_layers, dcnv2_structure, "
       "low_rank, num_experts, bridge, temperature, cross_residual, "
       "instance_norm, controller_units)"},
      {"security:\n  tls: true\n",
       "demo.yaml:2: security.tls: unknown key (expected one of: curve, "
       "keys_dir)"},
      {"\ntrian:\n  epochs: 1\n",
       "demo.yaml:2: trian: unknown section, did you mean \"train\"? (expected "
       "one of: data, model, embedding, optimizer, train, cluster, pserver, "
       "log, warm_start, security)"},
      {"batch_size: 64\n",
       "demo.yaml:1: batch_size: unknown section; batch_size is a key of "
       "section train, indented under \"train:\" (expected one of: data, "
       "model, embedding, optimizer, train, cluster, pserver, log, "
       "warm_start, security)"},
      {"train:\n  mode: asynch\n",
       "demo.yaml:2: train.mode: \"asynch\" is not a known value, did you "
       "mean \"async\"? (expected one of: sync, async, ssp)"},
      {"model:\n  name: masknet\n",
       "demo.yaml:2: model.name: \"masknet\" is not a known value (expected "
       "one of: lr, fm, dnn, deepfm, dcn, dcnv2, edcn, sermasknet, "
       "paramasknet, maskfusion)"},
      {"train:\n  epochs: 1\n  seed: 2\n  epochs: 2\n",
       "demo.yaml:4: train.epochs: duplicate key, first at line 2 (expected "
       "each key once)"},
      {"train:\n  epochs: 1\nlog:\n  jsonl: true\ntrain:\n  seed: 2\n",
       "demo.yaml:5: train: duplicate section, first at line 1 (expected each "
       "section once)"},
      {"train:\n  batch_size: [1, 2]\n",
       "demo.yaml:2: train.batch_size: a list where a single value belongs "
       "(expected an integer in 1..1048576)"},
      {"train:\n  run_dir: {a: 1}\n",
       "demo.yaml:2: train.run_dir: a mapping where a single value belongs "
       "(expected a string)"},
      {"data:\n  train: a.tsv\n",
       "demo.yaml:2: data.train: a single value where a list belongs "
       "(expected a list of strings, like [a, b])"},
      {"data:\n  train:\n    - a.tsv\n    - [b.tsv]\n",
       "demo.yaml:4: data.train: a list inside the list (expected a list of "
       "strings, like [a, b])"},
      {"model:\n  hidden_units:\n    - 64\n    - 0\n",
       "demo.yaml:4: model.hidden_units: 0 is out of range (expected a list "
       "of integers in 1..65536, like [64, 32])"},
      {"model:\n  hidden_units: [64, x]\n",
       "demo.yaml:2: model.hidden_units: \"x\" is not an integer (expected a "
       "list of integers in 1..65536, like [64, 32])"},
      {"log:\n  jsonl: maybe\n",
       "demo.yaml:2: log.jsonl: \"maybe\" is not a boolean (expected true or "
       "false)"},
      {"model:\n  dropout: 1\n",
       "demo.yaml:2: model.dropout: 1 is out of range (expected a number in "
       "[0, 1))"},
      {"optimizer:\n  lr: 0\n",
       "demo.yaml:2: optimizer.lr: 0 is out of range (expected a number in "
       "(0, 10])"},
      {"optimizer:\n  lr: fast\n",
       "demo.yaml:2: optimizer.lr: \"fast\" is not a number (expected a "
       "number in (0, 10])"},
      {"optimizer:\n  lr: nan\n",
       "demo.yaml:2: optimizer.lr: \"nan\" is not a number (expected a number "
       "in (0, 10])"},
      {"optimizer:\n  clip_norm: 1e999\n",
       "demo.yaml:2: optimizer.clip_norm: 1e999 is out of range (expected a "
       "number in [0, 1e+09])"},
      {"train:\n  run_dir: \"a\\0b\"\n",
       "demo.yaml:2: train.run_dir: \"a?b\" contains a NUL byte (expected a "
       "string)"},
      {"train: 5\n",
       "demo.yaml:1: train: a single value where a mapping of keys belongs "
       "(expected indented key: value lines)"},
      {"- a\n- b\n",
       "demo.yaml:1: the file is not a mapping of sections (expected section: "
       "lines with indented key: value lines)"},
      {"train:\n  epochs: 1\n---\ntrain:\n  epochs: 2\n",
       "demo.yaml:4: a second YAML document (expected one document per "
       "config)"},
      {"train:\n  batch_size: 1\n   epochs: 2\n",
       "demo.yaml:3: YAML syntax error: mapping values are not allowed in "
       "this context (expected section: lines with indented key: value "
       "lines)"},
      {"data:\n  train: ['[[', \"]]\", [[[[[[[[[[[[[[[[[x]]]]]]]]]]]]]]]]]]\n",
       "demo.yaml:2: lists or mappings nested too deep (expected at most 16 "
       "levels)"},
      {"train:\n  run_dir: \"runs\n",
       "demo.yaml:3: YAML syntax error while scanning a quoted scalar: found "
       "unexpected end of stream (expected section: lines with indented key: "
       "value lines)"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    char err[1024] = "";
    struct config *c = config_new();
    int rc = config_read_string(c, cases[i].yaml, strlen(cases[i].yaml),
                                "demo.yaml", err, sizeof(err));
    config_free(c);
    if (rc != -1 || strcmp(err, cases[i].msg))
      fail_msg("case %zu: rc %d\n got:  %s\n want: %s", i, rc, err,
               cases[i].msg);
  }
}

/* Cross-key checks run after loading and point at the line that set the
 * offending key (or the related key, when the offending one is a default). */
static void test_cross_checks(void **state) {
  (void)state;
  static const struct {
    const char *yaml, *msg;
  } cases[] = {
      {MIN_DATA "train:\n  mode: ssp\n",
       "demo.yaml:4: train.staleness: 0 in ssp mode (expected train.staleness "
       ">= 1 when train.mode is ssp)"},
      {MIN_DATA "train:\n  mode: ssp\n  staleness: 0\n",
       "demo.yaml:5: train.staleness: 0 in ssp mode (expected train.staleness "
       ">= 1 when train.mode is ssp)"},
      {MIN_DATA "cluster:\n  workers: 2\n",
       "demo.yaml:4: cluster.workers: 2 workers in embedded mode "
       "(cluster.pservers 0) (expected cluster.workers 1, or cluster.pservers "
       ">= 1)"},
      {MIN_DATA "cluster:\n  pservers: 8\n  base_port: 65530\n",
       "demo.yaml:5: cluster.base_port: 65530 with 8 pservers runs past port "
       "65535 (expected base_port + pservers - 1 <= 65535)"},
      {MIN_DATA "cluster:\n  launcher: ssh\n",
       "demo.yaml:4: cluster.hosts: empty while cluster.launcher is ssh "
       "(expected the machines to start processes on)"},
      {MIN_DATA "pserver:\n  memory_mb: 100\n",
       "demo.yaml:4: pserver.memory_mb: 100 is less than the 448 MiB of "
       "caches and write buffer (expected memory_mb >= cache_mb + "
       "block_cache_mb + write_buffer_mb)"},
      {MIN_DATA "  valid: [v.tsv]\n  split_valid: 0.1\n",
       "demo.yaml:4: data.split_valid: 0.1 while data.valid is also given "
       "(expected data.valid or data.split_valid, not both)"},
      {MIN_DATA "  split_valid: 0.5\n  split_test: 0.5\n",
       "demo.yaml:4: data.split_test: split_valid + split_test = 1 leaves no "
       "training lines (expected split_valid + split_test below 1)"},
      {MIN_DATA "  csv_delimiter: '::'\n",
       "demo.yaml:3: data.csv_delimiter: \"::\" is not one byte (expected one "
       "byte, like \",\" or \"\\t\")"},
      {MIN_DATA "  format: csv\n  csv_label: ''\n",
       "demo.yaml:4: data.csv_label: empty while data.format is csv (expected "
       "the name of the label column)"},
      {MIN_DATA "  format: csv\n  csv_numeric: [a, b]\n  csv_value: [b]\n",
       "demo.yaml:5: data.csv_value: 'b' is also in data.csv_numeric "
       "(expected each column in one role)"},
      {MIN_DATA "  format: csv\n  csv_numeric: [a, a]\n",
       "demo.yaml:4: data.csv_numeric: 'a' is also in data.csv_numeric "
       "(expected each column in one role)"},
      {MIN_DATA "  format: csv\n  csv_group: label\n",
       "demo.yaml:4: data.csv_group: 'label' is also in data.csv_label "
       "(expected each column in one role)"},
      {MIN_DATA "  format: csv\n  csv_columns: [y, a, y]\n",
       "demo.yaml:4: data.csv_columns: 'y' appears twice (expected distinct "
       "column names)"},
      {MIN_DATA "  format: csv\n  csv_columns: [y, a, b]\n",
       "demo.yaml:4: data.csv_label: no column 'label' (data.csv_columns: y, "
       "a, b) (expected names among data.csv_columns)"},
      {MIN_DATA "  format: csv\n  csv_columns: [y, a, b]\n  csv_label: y\n"
                "  csv_ignore: [c]\n",
       "demo.yaml:6: data.csv_ignore: no column 'c' (data.csv_columns: y, a, "
       "b) (expected names among data.csv_columns)"},
      {MIN_DATA "  csv_delimiter: '\"'\n",
       "demo.yaml:3: data.csv_delimiter: \"\"\" cannot separate columns "
       "(expected a byte other than '\"', CR and LF)"},
      {MIN_DATA "model:\n  name: deepfm\n  hidden_units: []\n",
       "demo.yaml:5: model.hidden_units: empty, but model deepfm has an MLP "
       "(expected at least one layer width, like [400, 400])"},
      {MIN_DATA "model:\n  name: edcn\n  cross_layers: 0\n",
       "demo.yaml:5: model.cross_layers: 0 for model edcn (expected at least "
       "1 cross layer)"},
      {MIN_DATA "model:\n  name: edcn\n  use_bn: true\ncluster:\n  "
                "pservers: 2\n  workers: 2\n",
       "demo.yaml:5: model.use_bn: with 2 workers the dense parameters live "
       "on the pservers, which do not share BatchNorm's running statistics "
       "yet (evaluation would use their initial mean 0, variance 1) "
       "(expected use_bn false, or one worker (cluster.workers 1))"},
      {MIN_DATA "model:\n  num_experts: 4\n",
       "demo.yaml:4: model.num_experts: 4 experts with a full-rank cross "
       "matrix (low_rank 0) (expected model.low_rank >= 1 for a mixture of "
       "experts, or num_experts 1)"},
      {MIN_DATA "embedding:\n  dim: 1\n  amtl: true\n",
       "demo.yaml:4: embedding.dim: 1 leaves AMTL no prefix to choose "
       "(expected embedding.dim >= 2 with amtl on)"},
      {MIN_DATA "train:\n  run_dir: ''\n",
       "demo.yaml:4: train.run_dir: empty (expected a directory for logs, "
       "checkpoints and the config)"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    char err[1024] = "";
    struct config *c = load(cases[i].yaml, err, sizeof(err));
    config_free(c);
    if (c || strcmp(err, cases[i].msg))
      fail_msg("case %zu:\n got:  %s\n want: %s", i, err, cases[i].msg);
  }
  /* a full csv schema is valid */
  char cerr[512];
  struct config *cc = load(MIN_DATA "  format: csv\n  csv_columns: [y, u, a, "
                                    "n, v, i]\n  csv_label: y\n  csv_group: "
                                    "u\n  csv_numeric: [n]\n  csv_value: "
                                    "[v]\n  csv_ignore: [i]\n",
                           cerr, sizeof(cerr));
  if (!cc)
    fail_msg("%s", cerr);
  config_free(cc);
  /* the minimal config itself is valid; dcnv2 crossnet_only needs no MLP */
  char err[512];
  struct config *c = load(MIN_DATA "model:\n  name: dcnv2\n  dcnv2_structure: "
                                   "crossnet_only\n  hidden_units: []\n",
                          err, sizeof(err));
  if (!c)
    fail_msg("%s", err);
  config_free(c);
}

static void expect_set_error(struct config *c, const char *assign,
                             const char *want) {
  char err[1024] = "";
  struct config *before = config_copy(c);
  int rc = config_set(c, assign, err, sizeof(err));
  if (rc != -1 || strcmp(err, want))
    fail_msg("--set %s: rc %d\n got:  %s\n want: %s", assign, rc, err, want);
  assert_true(config_equal(c, before)); /* a failed --set changes nothing */
  config_free(before);
}

static void test_overrides(void **state) {
  (void)state;
  char err[1024];
  struct config *c = config_new();
  const char *ok[] = {
      "train.batch_size=64",
      "train.batch_size= 128 ",
      "optimizer.lr=5e-4",
      "model.name=SerMaskNet",
      "embedding.amtl=true",
      "model.hidden_units=[32, 16]",
      "data.train=[\"a b.tsv\", c.tsv]",
      "data.valid=",
      "data.csv_delimiter=;",
      "train.run_dir=runs/*x # not a comment",
      "warm_start.dense=",
      "log.level=debug",
  };
  for (size_t i = 0; i < sizeof(ok) / sizeof(*ok); i++)
    if (config_set(c, ok[i], err, sizeof(err)))
      fail_msg("--set %s: %s", ok[i], err);
  assert_int_equal(c->train.batch_size, 128);
  assert_true(c->optimizer.lr == 5e-4);
  assert_int_equal(c->model.name, CONFIG_MODEL_SERMASKNET);
  assert_true(c->embedding.amtl);
  assert_int_equal(c->model.hidden_units.n, 2);
  assert_int_equal(c->model.hidden_units.v[0], 32);
  assert_int_equal(c->data.train.n, 2);
  assert_string_equal(c->data.train.v[0], "a b.tsv");
  assert_int_equal(c->data.valid.n, 0);
  assert_string_equal(c->data.csv_delimiter, ";");
  assert_string_equal(c->train.run_dir, "runs/*x # not a comment");
  assert_int_equal(c->log.level, LOGGER_DEBUG);
  assert_int_equal(config_validate(c, err, sizeof(err)), 0);

  expect_set_error(c, "train.batch_size=abc",
                   "--set train.batch_size=abc: expected an integer in "
                   "1..1048576");
  expect_set_error(c, "train.batch_size=0",
                   "--set train.batch_size=0: 0 is out of range (expected an "
                   "integer in 1..1048576)");
  expect_set_error(c, "train.batch_size",
                   "--set train.batch_size: no \"=\" (expected "
                   "section.key=value)");
  expect_set_error(c, "batch_size=3",
                   "--set batch_size=3: no section before the key (expected "
                   "section.key=value)");
  expect_set_error(c, "train.batchsize=3",
                   "--set train.batchsize=3: unknown key, did you mean "
                   "\"batch_size\"? (expected one of: batch_size, epochs, "
                   "max_steps, mode, staleness, dense_sync_every, "
                   "eval_every_steps, patience, lr_decay_factor, seed, "
                   "run_dir, threads, checkpoint_every_steps, "
                   "keep_checkpoints, prefetch)");
  expect_set_error(c, "trains.seed=3",
                   "--set trains.seed=3: unknown section, did you mean "
                   "\"train\"? (expected one of: data, model, embedding, "
                   "optimizer, train, cluster, pserver, log, warm_start, "
                   "security)");
  expect_set_error(c, "train.mode=bsp",
                   "--set train.mode=bsp: \"bsp\" is not a known value, did "
                   "you mean \"ssp\"? (expected one of: sync, async, ssp)");
  expect_set_error(c, "data.train=a.tsv",
                   "--set data.train=a.tsv: expected a list of strings, like "
                   "[a, b]");
  expect_set_error(c, "model.hidden_units=[64, -1]",
                   "--set model.hidden_units=[64, -1]: -1 is out of range "
                   "(expected a list of integers in 1..65536, like [64, 32])");
  expect_set_error(c, "model.hidden_units=[64",
                   "--set model.hidden_units=[64: YAML syntax error while "
                   "parsing a flow sequence: did not find expected ',' or "
                   "']' "
                   "(expected a YAML flow list like [a, b])");
  expect_set_error(c, "log.jsonl=1",
                   "--set log.jsonl=1: expected true or false");

  /* cross-key errors name the --set that caused them */
  assert_int_equal(config_set(c, "train.mode=ssp", err, sizeof(err)), 0);
  assert_int_equal(config_validate(c, err, sizeof(err)), -1);
  assert_string_equal(err, "--set train.mode=ssp: train.staleness: 0 in ssp "
                           "mode (expected train.staleness >= 1 when "
                           "train.mode is ssp)");
  /* ... and --set can repair a file: overrides come after the file */
  assert_int_equal(config_set(c, "train.staleness=2", err, sizeof(err)), 0);
  assert_int_equal(config_validate(c, err, sizeof(err)), 0);
  config_free(c);
}

/* Dump -> reload gives an equal config, and the dump of the reload is the
 * same text. Strings that YAML would otherwise read as other types, and
 * doubles that need 17 digits, survive. */
static void test_dump_round_trip(void **state) {
  (void)state;
  char err[1024];
  struct config *c = config_new();
  const char *sets[] = {
      ("data.train=[\"null\", \"\", \"yes\", \"a\\\"b\\\\c\", \"tab\\there\", "
       "\"caf\xc3\xa9\", \"#x\", \"- y\"]"),
      "train.run_dir=  spaced out  ",
      "optimizer.lr=0.1",
      "optimizer.beta2=0.33333333333333331",
      "embedding.init_std=1e-300",
      "model.hidden_units=[]",
      "model.name=edcn",
      "model.bridge=concat",
      "train.seed=9223372036854775807",
      "security.curve=on",
      "data.csv_delimiter=\t",
      "warm_start.tables=[old/a, old/b]",
  };
  for (size_t i = 0; i < sizeof(sets) / sizeof(*sets); i++)
    if (config_set(c, sets[i], err, sizeof(err)))
      fail_msg("--set %s: %s", sets[i], err);
  assert_string_equal(c->data.train.v[3], "a\"b\\c");
  assert_string_equal(c->train.run_dir, "  spaced out  ");
  assert_true(c->optimizer.beta2 == 1.0 / 3.0);

  char *text = config_dump_string(c);
  struct config *r = config_new();
  if (config_read_string(r, text, strlen(text), "dump", err, sizeof(err)))
    fail_msg("%s\n%s", err, text);
  assert_true(config_equal(c, r));
  char *text2 = config_dump_string(r);
  assert_string_equal(text, text2);
  assert_non_null(strstr(text, "\n  lr: 0.1\n"));
  assert_non_null(strstr(text, "\n  bridge: concat\n"));

  /* config_equal notices a change; a copy is deep */
  struct config *cp = config_copy(r);
  assert_true(config_equal(cp, c));
  cp->data.train.v[0][0] = 'N';
  assert_false(config_equal(cp, c));
  assert_string_equal(r->data.train.v[0], "null");
  config_free(cp);

  /* the defaults round-trip too */
  struct config *d = config_new(), *d2 = config_new();
  char *dt = config_dump_string(d);
  assert_int_equal(config_set(d2, "train.epochs=7", err, sizeof(err)), 0);
  assert_false(config_equal(d, d2));
  assert_int_equal(
      config_read_string(d2, dt, strlen(dt), "d", err, sizeof(err)), 0);
  assert_true(config_equal(d, d2));
  free(dt);
  config_free(d);
  config_free(d2);

  free(text);
  free(text2);
  config_free(r);
  config_free(c);
}

static void test_schema(void **state) {
  (void)state;
  size_t n;
  const struct config_key *s = config_schema(&n);
  assert_true(n > 80);
  for (size_t i = 0; i < n; i++) {
    assert_non_null(s[i].doc);
    assert_true(strlen(s[i].doc) > 10);
    assert_null(strchr(s[i].doc, '|')); /* it goes into a Markdown table */
    assert_ptr_equal(config_key_find(s[i].section, s[i].name), &s[i]);
    for (size_t j = 0; j < i; j++) /* sections are contiguous */
      if (!strcmp(s[j].section, s[i].section))
        assert_string_equal(s[i - 1].section, s[i].section);
  }
  assert_null(config_key_find("train", "nope"));
  assert_null(config_key_find("nope", "seed"));
  const struct config_key *k = config_key_find("model", "dropout");
  char r[64];
  assert_string_equal(config_key_range(k, r, sizeof(r)), "[0, 1)");
  assert_string_equal(config_type_name(k->type), "number");
  k = config_key_find("train", "seed");
  assert_string_equal(config_key_range(k, r, sizeof(r)), ">= 0");
  assert_string_equal(config_enum_name("model", "name", CONFIG_MODEL_DCNV2),
                      "dcnv2");
  assert_string_equal(config_enum_name("model", "name", 99), "?");
  assert_string_equal(config_enum_name("train", "seed", 0), "?");
  /* C enums and schema names agree at the ends */
  assert_string_equal(
      config_enum_name("model", "name", CONFIG_MODEL_MASKFUSION), "maskfusion");
  assert_string_equal(config_enum_name("log", "level", LOGGER_ERROR), "error");
  assert_string_equal(config_enum_name("pserver", "wal", CONFIG_WAL_OFF),
                      "off");
  assert_string_equal(
      config_enum_name("optimizer", "sparse", CONFIG_SPARSE_FTRL), "ftrl");
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    fail_msg("cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = 0;
  fclose(f);
  return buf;
}

static const char *source_dir(void) {
  const char *d = getenv("MASKPS_SOURCE_DIR");
  if (!d)
    fail_msg("MASKPS_SOURCE_DIR is not set (run through ctest)");
  return d;
}

#define BEGIN_MARK                                                             \
  "<!-- keys:begin (generated: test_config --schema-markdown) -->\n"
#define END_MARK "<!-- keys:end -->"

/* configs/README.md documents every key, and its reference block is exactly
 * what the schema generates (same defaults, ranges and docs). */
static void test_readme_documents_every_key(void **state) {
  (void)state;
  char path[4096];
  snprintf(path, sizeof(path), "%s/configs/README.md", source_dir());
  char *md = slurp(path);
  size_t n;
  const struct config_key *s = config_schema(&n);
  for (size_t i = 0; i < n; i++) {
    char head[64], row[128];
    snprintf(head, sizeof(head), "\n### %s\n", s[i].section);
    snprintf(row, sizeof(row), "\n| `%s` | %s |", s[i].name,
             config_type_name(s[i].type));
    const char *sec = strstr(md, head);
    if (!sec)
      fail_msg("configs/README.md has no \"### %s\" heading", s[i].section);
    const char *next = strstr(sec + 1, "\n### ");
    const char *at = strstr(sec, row);
    if (!at || (next && at > next))
      fail_msg("configs/README.md does not document %s.%s", s[i].section,
               s[i].name);
  }
  const char *b = strstr(md, BEGIN_MARK), *e = strstr(md, END_MARK);
  assert_non_null(b);
  assert_non_null(e);
  b += strlen(BEGIN_MARK);
  char *gen = NULL;
  size_t glen = 0;
  FILE *f = open_memstream(&gen, &glen);
  assert_int_equal(config_schema_markdown(f), 0);
  fclose(f);
  if ((size_t)(e - b) != glen || memcmp(b, gen, glen))
    fail_msg("the key reference in configs/README.md is stale; regenerate "
             "it with: build/tests/common/test_config --schema-markdown");
  free(gen);
  free(md);
}

/* Every example config loads, and the demo is what the brief says. */
static void test_example_configs_load(void **state) {
  (void)state;
  char pattern[4096];
  snprintf(pattern, sizeof(pattern), "%s/configs/*.yaml", source_dir());
  glob_t g;
  assert_int_equal(glob(pattern, 0, NULL, &g), 0);
  assert_true(g.gl_pathc >= 3);
  int saw_demo = 0;
  for (size_t i = 0; i < g.gl_pathc; i++) {
    char err[1024];
    struct config *c = config_load_file(g.gl_pathv[i], err, sizeof(err));
    if (!c)
      fail_msg("%s", err);
    if (strstr(g.gl_pathv[i], "/demo.yaml")) {
      saw_demo = 1;
      assert_int_equal(c->model.name, CONFIG_MODEL_SERMASKNET);
      assert_true(c->embedding.amtl);
      assert_int_equal(c->data.format, CONFIG_FORMAT_CRITEO);
      assert_int_equal(c->data.train.n, 1);
      assert_string_equal(c->data.train.v[0], "runs/demo/data/train.tsv");
      assert_string_equal(c->data.valid.v[0], "runs/demo/data/valid.tsv");
      assert_string_equal(c->data.test.v[0], "runs/demo/data/test.tsv");
    }
    /* what a run directory records reads back to the same config */
    char *text = config_dump_string(c);
    struct config *r =
        config_load_string(text, strlen(text), "dump", err, sizeof(err));
    if (!r)
      fail_msg("%s: dump does not reload: %s", g.gl_pathv[i], err);
    assert_true(config_equal(c, r));
    free(text);
    config_free(r);
    config_free(c);
  }
  assert_true(saw_demo);
  globfree(&g);

  char err[512];
  assert_null(config_load_file("/nonexistent/x.yaml", err, sizeof(err)));
  assert_string_equal(err, "cannot open config /nonexistent/x.yaml: No such "
                           "file or directory");
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* Files layer: a later file overrides only the keys it names; messages
 * name the file as given. */
static void test_files_layer(void **state) {
  (void)state;
  char dir[] = "/tmp/maskps-config-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char base[64], over[64], bad[64], err[512];
  snprintf(base, sizeof(base), "%s/base.yaml", dir);
  snprintf(over, sizeof(over), "%s/over.yaml", dir);
  snprintf(bad, sizeof(bad), "%s/bad.yaml", dir);
  write_file(base, MIN_DATA "train:\n  epochs: 3\n  batch_size: 256\n");
  write_file(over, "train:\n  epochs: 5\n");
  write_file(bad, "# header\n\ntrain:\n  epochs: 0\n");
  struct config *c = config_new();
  assert_int_equal(config_read_file(c, base, err, sizeof(err)), 0);
  assert_int_equal(config_read_file(c, over, err, sizeof(err)), 0);
  assert_int_equal(config_validate(c, err, sizeof(err)), 0);
  assert_int_equal(c->train.epochs, 5);
  assert_int_equal(c->train.batch_size, 256);
  assert_string_equal(c->data.train.v[0], "t.tsv");
  config_free(c);
  assert_null(config_load_file(bad, err, sizeof(err)));
  char want[256];
  snprintf(want, sizeof(want),
           "%s:4: train.epochs: 0 is out of range (expected an integer in "
           "1..100000)",
           bad);
  assert_string_equal(err, want);
  remove(base);
  remove(over);
  remove(bad);
  rmdir(dir);
}

/* A message starts with "m.yaml:LINE: " or, for a cross-key check on
 * defaults, with a real "section.key: ". */
static int located(const char *err) {
  int line = 0, off = 0;
  if (sscanf(err, "m.yaml:%d: %n", &line, &off) == 1 && off > 0)
    return line >= 1 && err[off] != 0;
  char sec[32], key[64];
  if (sscanf(err, "%31[a-z_].%63[a-z_0-9]: ", sec, key) == 2)
    return config_key_find(sec, key) != NULL;
  return 0;
}

/* Random byte edits of a valid config never crash (ASan watches) and are
 * either accepted or rejected with a located message. Fixed seed. */
static void test_mutations_fail_cleanly(void **state) {
  (void)state;
  const char *base = MIN_DATA "model:\n  name: sermasknet\n"
                              "  hidden_units: [64, 32]\n"
                              "train:\n  mode: ssp\n  staleness: 2\n"
                              "  run_dir: \"runs/x\"\n";
  size_t n = strlen(base);
  char buf[512];
  uint64_t x = 12345;
  int rejected = 0;
  const char alphabet[] = ":-[]{}\"'#&*!|>%@`,\n \t\\0a9.~";
  for (int iter = 0; iter < 3000; iter++) {
    memcpy(buf, base, n);
    size_t len = n;
    int edits = 1 + iter % 3;
    for (int e = 0; e < edits; e++) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      size_t pos = (size_t)(x >> 33) % len;
      char ch = alphabet[(x >> 20) % (sizeof(alphabet) - 1)];
      if ((x >> 10) % 5 == 0)
        len = pos + 1; /* truncate */
      buf[pos] = (x >> 12) % 7 == 0 ? (char)(x >> 40) : ch;
    }
    char err[1024] = "";
    struct config *c = config_load_string(buf, len, "m.yaml", err, sizeof(err));
    if (c) {
      config_free(c);
      continue;
    }
    rejected++;
    if (!located(err))
      fail_msg("unlocated message for mutation %d: %s", iter, err);
  }
  assert_true(rejected > 1000);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--schema-markdown"))
    return config_schema_markdown(stdout) ? 1 : 0;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_reads_every_type),
      cmocka_unit_test(test_error_messages),
      cmocka_unit_test(test_cross_checks),
      cmocka_unit_test(test_overrides),
      cmocka_unit_test(test_dump_round_trip),
      cmocka_unit_test(test_schema),
      cmocka_unit_test(test_readme_documents_every_key),
      cmocka_unit_test(test_example_configs_load),
      cmocka_unit_test(test_files_layer),
      cmocka_unit_test(test_mutations_fail_cleanly),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
