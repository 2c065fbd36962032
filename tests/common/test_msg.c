/* msg: round trips of every message, and a corpus of hostile inputs that must
 * each be refused with a message (ASan/UBSan watch for overreads). Also
 * writes the fuzz seeds when MASKPS_WRITE_SEEDS names a directory. */
#include "common/msg.h"

#include "common/check.h"
#include "common/row.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- deterministic content ---------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* Storage for one random message's arrays. */
struct content {
  uint64_t keys[300];
  uint16_t glen[300], plen[300];
  uint32_t count[300], clicks[300];
  float vals[300 * 70];
  char text[MSG_MAX_PATH + 1];
};

/* A random valid message of (op, reply) with n keys. */
static void random_msg(struct msg *m, struct content *c, unsigned op,
                       bool reply, uint32_t n) {
  msg_init(m);
  m->op = (uint8_t)op;
  m->reply = reply;
  m->id = next();
  m->from = (uint32_t)next();
  m->table = (uint32_t)next() % 100;
  m->step = next() >> (next() % 64);
  uint32_t sum = 0;
  for (uint32_t i = 0; i < n; i++) {
    c->keys[i] = next();
    c->glen[i] = (uint16_t)(next() % 65);
    c->plen[i] = (uint16_t)(next() % 65);
    c->count[i] = (uint32_t)next();
    c->clicks[i] = (uint32_t)next();
  }
  const uint16_t *lens = op == MSG_PUSH ? c->glen : c->plen;
  for (uint32_t i = 0; i < n; i++)
    sum += lens[i];
  for (uint32_t i = 0; i < sum; i++)
    c->vals[i] = (float)(int64_t)(next() % 20001 - 10000) / 128.0f;
  switch (op) {
  case MSG_PULL:
  case MSG_PUSH:
    m->n = n;
    m->keys = c->keys;
    m->glen = c->glen;
    m->plen = c->plen;
    m->count = c->count;
    m->clicks = c->clicks;
    m->nvals = sum;
    m->vals = c->vals;
    break;
  case MSG_PULL_DENSE:
  case MSG_PUSH_DENSE:
    m->off = next() % 1000000;
    m->nvals = (uint32_t)(next() % 5000);
    m->vals = c->vals;
    break;
  case MSG_CHECKPOINT:
    snprintf(c->text, sizeof(c->text), "/tmp/ckpt/step-%llu",
             (unsigned long long)m->step);
    m->text = c->text;
    m->text_len = (uint32_t)strlen(c->text);
    break;
  case MSG_STATS:
    snprintf(c->text, sizeof(c->text), "{\"rows\":%u,\"hit\":0.5}", n);
    m->text = c->text;
    m->text_len = (uint32_t)strlen(c->text);
    break;
  case MSG_ERROR:
    m->code = MSG_E_RANGE;
    m->text = "dense chunk [10, 20) is outside [0, 5)";
    m->text_len = (uint32_t)strlen(m->text);
    break;
  }
}

/* Every (op, reply) pair that is a message. */
static const struct {
  unsigned op;
  bool reply;
} kinds[] = {
    {MSG_PULL, 0},       {MSG_PULL, 1},       {MSG_PUSH, 0},
    {MSG_PUSH, 1},       {MSG_PULL_DENSE, 0}, {MSG_PULL_DENSE, 1},
    {MSG_PUSH_DENSE, 0}, {MSG_PUSH_DENSE, 1}, {MSG_BARRIER, 0},
    {MSG_BARRIER, 1},    {MSG_CHECKPOINT, 0}, {MSG_CHECKPOINT, 1},
    {MSG_STATS, 0},      {MSG_STATS, 1},      {MSG_SHUTDOWN, 0},
    {MSG_SHUTDOWN, 1},   {MSG_ERROR, 1},
};

/* Frames copied into one block at byte offset `shift` (1 makes every raw
 * frame misaligned), so decoding borrows from memory the test controls. */
struct copy {
  struct msg_frame f[MSG_MAX_FRAMES + 2];
  size_t n;
  uint8_t *blk;
};

static void copy_frames(struct copy *c, const struct msg_frame *f, size_t n,
                        size_t shift) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += f[i].len + 16;
  c->blk = malloc(total + 16);
  uint8_t *p = c->blk;
  for (size_t i = 0; i < n; i++) {
    p = (uint8_t *)(((uintptr_t)p + 15) & ~(uintptr_t)15) + shift;
    if (f[i].len)
      memcpy(p, f[i].data, f[i].len);
    c->f[i].data = p;
    c->f[i].len = f[i].len;
    p += f[i].len;
  }
  c->n = n;
}

static void expect_fail(const struct msg_frame *f, size_t n, const char *want) {
  struct msg m = {0};
  char err[256] = "unchanged";
  /* A heap copy of each frame with nothing after it: ASan flags any byte
   * read past a frame's end. */
  struct msg_frame h[16];
  assert_true(n <= 16);
  for (size_t i = 0; i < n; i++) {
    void *p = malloc(f[i].len ? f[i].len : 1);
    if (f[i].len)
      memcpy(p, f[i].data, f[i].len);
    h[i].data = p;
    h[i].len = f[i].len;
  }
  int rc = msg_decode(h, n, &m, err, sizeof(err));
  for (size_t i = 0; i < n; i++)
    free((void *)h[i].data);
  msg_deinit(&m);
  if (rc != -1)
    fail_msg("decode accepted a message that should fail with '%s'", want);
  assert_true(strlen(err) > 5);
  assert_string_not_equal(err, "unchanged");
  if (want && !strstr(err, want))
    fail_msg("error '%s' does not mention '%s'", err, want);
}

/* ---- round trips ------------------------------------------------------- */

static void check_round_trip(const struct msg *m, size_t shift) {
  struct msg_enc e;
  msg_enc_init(&e);
  msg_encode(m, &e);
  struct copy c;
  copy_frames(&c, e.frames, e.nframes, shift);
  struct msg d = {0};
  char err[256] = "";
  int rc = msg_decode(c.f, c.n, &d, err, sizeof(err));
  if (rc)
    fail_msg("%s %s did not decode: %s", msg_op_name(m->op),
             m->reply ? "reply" : "request", err);
  assert_true(msg_equal(m, &d));
  assert_true(msg_equal(&d, m));
  /* Field by field, not only through msg_equal. */
  assert_int_equal(d.op, m->op);
  assert_int_equal(d.reply, m->reply);
  assert_int_equal(d.id, m->id);
  assert_int_equal(d.from, m->from);
  if (m->op == MSG_PULL || m->op == MSG_PUSH) {
    assert_int_equal(d.table, m->table);
    assert_int_equal(d.n, m->n);
    assert_int_equal(d.step, m->step);
    if (m->op == MSG_PULL && !m->reply) {
      assert_memory_equal(d.keys, m->keys, 8 * (size_t)m->n);
      assert_null(d.vals);
    }
    if (m->op == MSG_PULL && m->reply) {
      assert_int_equal(d.nvals, m->nvals);
      assert_memory_equal(d.plen, m->plen, 2 * (size_t)m->n);
      assert_memory_equal(d.count, m->count, 4 * (size_t)m->n);
      assert_memory_equal(d.clicks, m->clicks, 4 * (size_t)m->n);
      if (m->nvals)
        assert_memory_equal(d.vals, m->vals, 4 * (size_t)m->nvals);
      assert_null(d.keys);
      assert_null(d.glen);
    }
    if (m->op == MSG_PUSH && !m->reply) {
      assert_int_equal(d.nvals, m->nvals);
      assert_memory_equal(d.keys, m->keys, 8 * (size_t)m->n);
      assert_memory_equal(d.glen, m->glen, 2 * (size_t)m->n);
      assert_memory_equal(d.plen, m->plen, 2 * (size_t)m->n);
      assert_memory_equal(d.count, m->count, 4 * (size_t)m->n);
      assert_memory_equal(d.clicks, m->clicks, 4 * (size_t)m->n);
      if (m->nvals)
        assert_memory_equal(d.vals, m->vals, 4 * (size_t)m->nvals);
    }
    /* Arrays are aligned for their type whatever the frames were. */
    assert_int_equal((uintptr_t)d.keys % 8, 0);
    assert_int_equal((uintptr_t)d.plen % 2, 0);
    assert_int_equal((uintptr_t)d.count % 4, 0);
    assert_int_equal((uintptr_t)d.vals % 4, 0);
    /* Aligned frames are borrowed, misaligned ones copied. */
    if (d.keys)
      assert_int_equal(d.keys == c.f[1].data, shift == 0);
  } else if (m->op == MSG_PULL_DENSE || m->op == MSG_PUSH_DENSE) {
    assert_int_equal(d.table, m->table);
    assert_int_equal(d.off, m->off);
    assert_int_equal(d.nvals, m->nvals);
    assert_int_equal(d.step, m->step);
    bool has_vals = (m->op == MSG_PULL_DENSE) == m->reply;
    if (has_vals && m->nvals)
      assert_memory_equal(d.vals, m->vals, 4 * (size_t)m->nvals);
    else
      assert_null(d.vals);
  } else if (m->op == MSG_BARRIER) {
    assert_int_equal(d.step, m->step);
  } else if (m->op == MSG_CHECKPOINT || (m->op == MSG_STATS && m->reply) ||
             m->op == MSG_ERROR) {
    assert_int_equal(d.text_len, m->text_len);
    if (m->text_len)
      assert_memory_equal(d.text, m->text, m->text_len);
    assert_int_equal(d.text[d.text_len], 0); /* a NUL-terminated copy */
    if (m->op == MSG_CHECKPOINT)
      assert_int_equal(d.step, m->step);
    if (m->op == MSG_ERROR)
      assert_int_equal(d.code, m->code);
  }
  msg_deinit(&d);
  free(c.blk);
  msg_enc_deinit(&e);
}

static void test_round_trip_every_op(void **state) {
  (void)state;
  static struct content c;
  const uint32_t ns[] = {0, 1, 7, 300};
  for (size_t k = 0; k < ARRAY_LEN(kinds); k++)
    for (size_t j = 0; j < sizeof(ns) / sizeof(*ns); j++)
      for (size_t shift = 0; shift < 2; shift++) {
        struct msg m;
        random_msg(&m, &c, kinds[k].op, kinds[k].reply, ns[j]);
        check_round_trip(&m, shift);
      }
}

/* The extremes: the longest prefix, the biggest ids, the longest path. */
static void test_round_trip_limits(void **state) {
  (void)state;
  static struct content c;
  static float big[2 * ROW_MAX_DIM];
  struct msg m;
  random_msg(&m, &c, MSG_PULL, true, 2);
  c.plen[0] = ROW_MAX_DIM;
  c.plen[1] = ROW_MAX_DIM;
  m.nvals = 2 * ROW_MAX_DIM;
  m.vals = big;
  m.id = UINT64_MAX;
  m.step = UINT64_MAX;
  m.from = UINT32_MAX;
  m.table = UINT32_MAX;
  for (int i = 0; i < 2 * ROW_MAX_DIM; i++)
    big[i] = (float)i;
  check_round_trip(&m, 0);
  check_round_trip(&m, 1);

  random_msg(&m, &c, MSG_CHECKPOINT, false, 0);
  memset(c.text, 'd', MSG_MAX_PATH);
  c.text[MSG_MAX_PATH] = 0;
  m.text_len = MSG_MAX_PATH;
  check_round_trip(&m, 0);

  random_msg(&m, &c, MSG_PULL_DENSE, false, 0);
  m.off = UINT64_MAX - 5;
  m.nvals = 5;
  check_round_trip(&m, 0);
}

static void test_equal_notices_differences(void **state) {
  (void)state;
  static struct content c, c2;
  struct msg a, b;
  rng = 42;
  random_msg(&a, &c, MSG_PUSH, false, 9);
  rng = 42;
  random_msg(&b, &c2, MSG_PUSH, false, 9);
  assert_true(msg_equal(&a, &b));
  c2.vals[a.nvals - 1] += 1.0f;
  assert_false(msg_equal(&a, &b));
  c2.vals[a.nvals - 1] = c.vals[a.nvals - 1];
  c2.count[8]++;
  assert_false(msg_equal(&a, &b));
  c2.count[8]--;
  b.step++;
  assert_false(msg_equal(&a, &b));
  b.step--;
  b.reply = true;
  assert_false(msg_equal(&a, &b));
}

static void test_reply_and_error_builders(void **state) {
  (void)state;
  static struct content c;
  struct msg req, rep;
  random_msg(&req, &c, MSG_PULL, false, 3);
  msg_reply_to(&rep, &req, 7);
  assert_int_equal(rep.op, MSG_PULL);
  assert_true(rep.reply);
  assert_int_equal(rep.id, req.id);
  assert_int_equal(rep.table, req.table);
  assert_int_equal(rep.from, 7);
  msg_error_to(&rep, &req, 2, MSG_E_UNKNOWN_TABLE, "no table 12");
  assert_int_equal(rep.op, MSG_ERROR);
  assert_int_equal(rep.id, req.id);
  assert_int_equal(rep.code, MSG_E_UNKNOWN_TABLE);
  check_round_trip(&rep, 0);
  msg_error_to(&rep, NULL, 2, MSG_E_MALFORMED, NULL);
  assert_int_equal(rep.id, 0);
  assert_int_equal(rep.text_len, 0);
  check_round_trip(&rep, 0);
  static char longtext[3000];
  memset(longtext, 'x', sizeof(longtext) - 1);
  msg_error_to(&rep, &req, 2, MSG_E_STORE, longtext);
  assert_int_equal(rep.text_len, MSG_MAX_ERRTEXT);
  check_round_trip(&rep, 0);
}

static void test_names(void **state) {
  (void)state;
  assert_string_equal(msg_op_name(MSG_PULL), "PULL");
  assert_string_equal(msg_op_name(MSG_PUSH_DENSE), "PUSH_DENSE");
  assert_string_equal(msg_op_name(MSG_ERROR), "ERROR");
  assert_string_equal(msg_op_name(0), "?");
  assert_string_equal(msg_op_name(MSG_OP_COUNT_), "?");
  for (unsigned op = 1; op < MSG_OP_COUNT_; op++)
    assert_string_not_equal(msg_op_name(op), "?");
  assert_string_equal(msg_err_name(MSG_E_MALFORMED), "malformed");
  assert_string_equal(msg_err_name(999), "?");
}

/* ---- hostile inputs ---------------------------------------------------- */

/* Hand-written msgpack (the tests must not include msgpack.h, and a hostile
 * header is easier to state byte by byte anyway). */
struct hb {
  uint8_t b[8192];
  size_t n;
};
static void hb_byte(struct hb *h, uint8_t v) {
  h->b[h->n++] = v;
}
static void hb_be(struct hb *h, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; i--)
    hb_byte(h, (uint8_t)(v >> 8 * i));
}
static void hb_str(struct hb *h, const char *s) {
  size_t n = strlen(s);
  if (n < 32) {
    hb_byte(h, (uint8_t)(0xa0 | n));
  } else {
    hb_byte(h, 0xda);
    hb_be(h, n, 2);
  }
  memcpy(h->b + h->n, s, n);
  h->n += n;
}
static void hb_uint(struct hb *h, uint64_t v) {
  hb_byte(h, 0xcf);
  hb_be(h, v, 8);
}

/* A PULL request header with the given entries overridden: fields listed in
 * `skip` are left out, and `raw` (key, value bytes) pairs are added. */
struct entry {
  const char *key;
  const uint8_t *val;
  size_t len;
};

static size_t pull_header(uint8_t *out, uint64_t n, const char *skip,
                          const struct entry *extra, size_t nextra) {
  static const char *const names[] = {"v",  "op", "id", "from",
                                      "re", "t",  "n",  "step"};
  const uint64_t vals[] = {MSG_VERSION, MSG_PULL, 77, 3, 0, 5, n, 9};
  struct hb h = {.n = 0};
  size_t cnt = 0;
  for (size_t i = 0; i < 8; i++)
    if (!skip || strcmp(skip, names[i]))
      cnt++;
  hb_byte(&h, (uint8_t)(0x80 | (cnt + nextra)));
  for (size_t i = 0; i < 8; i++) {
    if (skip && !strcmp(skip, names[i]))
      continue;
    hb_str(&h, names[i]);
    if (i == 4)
      hb_byte(&h, 0xc2); /* false */
    else
      hb_uint(&h, vals[i]);
  }
  for (size_t i = 0; i < nextra; i++) {
    hb_str(&h, extra[i].key);
    memcpy(h.b + h.n, extra[i].val, extra[i].len);
    h.n += extra[i].len;
  }
  memcpy(out, h.b, h.n);
  return h.n;
}

static const uint64_t some_keys[4] = {1, 2, 3, 0xffffffffffffffffull};

static void test_handmade_header_is_valid(void **state) {
  (void)state;
  /* The builder itself must produce an accepted message, or every "fails"
   * below would prove nothing. */
  uint8_t hdr[512];
  struct msg_frame f[2] = {{hdr, pull_header(hdr, 4, NULL, NULL, 0)},
                           {some_keys, sizeof(some_keys)}};
  struct msg m = {0};
  char err[256];
  assert_int_equal(msg_decode(f, 2, &m, err, sizeof(err)), 0);
  assert_int_equal(m.op, MSG_PULL);
  assert_int_equal(m.id, 77);
  assert_int_equal(m.n, 4);
  assert_int_equal(m.keys[3], some_keys[3]);
  msg_deinit(&m);
}

static void test_wrong_types_for_every_field(void **state) {
  (void)state;
  static const uint8_t nil[] = {0xc0}, t[] = {0xc3}, neg[] = {0xff},
                       flt[] = {0xca, 0x3f, 0x80, 0, 0}, str[] = {0xa1, '1'},
                       bin[] = {0xc4, 1, 1}, arr[] = {0x91, 1}, map[] = {0x80},
                       ext[] = {0xd4, 1, 1},
                       dbl[] = {0xcb, 0, 0, 0, 0, 0, 0, 0, 0};
  static const struct {
    const uint8_t *b;
    size_t n;
  } bad_uint[] = {{nil, 1}, {t, 1},   {neg, 1}, {flt, 5}, {str, 2},
                  {bin, 3}, {arr, 2}, {map, 1}, {ext, 3}, {dbl, 9}};
  static const char *const fields[] = {"v", "op", "id",  "from",
                                       "t", "n",  "step"};
  uint8_t hdr[512];
  for (size_t i = 0; i < ARRAY_LEN(fields); i++)
    for (size_t j = 0; j < ARRAY_LEN(bad_uint); j++) {
      struct entry e = {fields[i], bad_uint[j].b, bad_uint[j].n};
      struct msg_frame f[2] = {{hdr, pull_header(hdr, 4, fields[i], &e, 1)},
                               {some_keys, sizeof(some_keys)}};
      expect_fail(f, 2, NULL);
    }
  /* "re" must be a bool, not 0 or 1. */
  static const uint8_t zero[] = {0x00};
  struct entry e = {"re", zero, 1};
  struct msg_frame f[2] = {{hdr, pull_header(hdr, 4, "re", &e, 1)},
                           {some_keys, sizeof(some_keys)}};
  expect_fail(f, 2, "'re' is a unsigned int, not a bool");
  /* Text fields must be str, not bin. */
  struct msg_frame g[1];
  struct hb h = {.n = 0};
  hb_byte(&h, 0x87);
  hb_str(&h, "v");
  hb_uint(&h, MSG_VERSION);
  hb_str(&h, "op");
  hb_uint(&h, MSG_CHECKPOINT);
  hb_str(&h, "id");
  hb_uint(&h, 1);
  hb_str(&h, "from");
  hb_uint(&h, 1);
  hb_str(&h, "re");
  hb_byte(&h, 0xc2);
  hb_str(&h, "step");
  hb_uint(&h, 1);
  hb_str(&h, "dir");
  size_t at = h.n;
  hb_byte(&h, 0xc4);
  hb_byte(&h, 3);
  memcpy(h.b + h.n, "abc", 3);
  h.n += 3;
  g[0].data = h.b;
  g[0].len = h.n;
  expect_fail(g, 1, "'dir' is a bin, not a str");
  h.b[at] = 0xd9; /* str8 "abc": now valid */
  struct msg m = {0};
  char err[256];
  assert_int_equal(msg_decode(g, 1, &m, err, sizeof(err)), 0);
  assert_string_equal(m.text, "abc");
  msg_deinit(&m);
  /* A NUL inside the path. */
  h.b[at + 3] = 0;
  expect_fail(g, 1, "NUL byte");
}

static void test_header_level_faults(void **state) {
  (void)state;
  uint8_t hdr[2048];
  struct msg_frame f[2] = {{hdr, 0}, {some_keys, sizeof(some_keys)}};
  static const uint8_t two[] = {0x02}, op42[] = {42}, op0[] = {0},
                       bigop[] = {0xcc, 200}, one[] = {0x01};

  struct entry e = {"v", two, 1};
  f[0].len = pull_header(hdr, 4, "v", &e, 1);
  expect_fail(f, 2, "protocol version 2, this build speaks version 1");
  /* What a server needs to answer: the code to reply with, and the id. */
  struct msg m = {0};
  char err[256];
  assert_int_equal(msg_decode(f, 2, &m, err, sizeof(err)), -1);
  assert_int_equal(m.code, MSG_E_VERSION);
  assert_int_equal(m.id, 77);
  msg_deinit(&m);
  f[0].len = pull_header(hdr, 5, NULL, NULL, 0);
  assert_int_equal(msg_decode(f, 2, &m, err, sizeof(err)), -1);
  assert_int_equal(m.code, MSG_E_MALFORMED);
  assert_int_equal(m.id, 77);
  assert_int_equal(m.op, MSG_PULL);
  assert_int_equal(m.from, 3);
  assert_null(m.keys);
  msg_deinit(&m);
  f[0].len = pull_header(hdr, 4, "v", NULL, 0);
  expect_fail(f, 2, "no protocol version");
  e = (struct entry){"op", op42, 1};
  f[0].len = pull_header(hdr, 4, "op", &e, 1);
  expect_fail(f, 2, "unknown op 42");
  e = (struct entry){"op", op0, 1};
  f[0].len = pull_header(hdr, 4, "op", &e, 1);
  expect_fail(f, 2, "unknown op 0");
  e = (struct entry){"op", bigop, 2};
  f[0].len = pull_header(hdr, 4, "op", &e, 1);
  expect_fail(f, 2, "unknown op 200");
  e = (struct entry){"xyz", one, 1};
  f[0].len = pull_header(hdr, 4, NULL, &e, 1);
  expect_fail(f, 2, "unknown header key 'xyz'");
  e = (struct entry){"n", one, 1};
  f[0].len = pull_header(hdr, 4, NULL, &e, 1);
  expect_fail(f, 2, "duplicate header key 'n'");
  e = (struct entry){"off", one, 1};
  f[0].len = pull_header(hdr, 4, NULL, &e, 1);
  expect_fail(f, 2, "PULL request: header key 'off' does not belong");
  f[0].len = pull_header(hdr, 4, "step", NULL, 0);
  expect_fail(f, 2, "PULL request: missing header key 'step'");
  f[0].len = pull_header(hdr, 4, "id", NULL, 0);
  expect_fail(f, 2, "lacks the key 'id'");
  f[0].len = pull_header(hdr, 4, "re", NULL, 0);
  expect_fail(f, 2, "lacks the key 're'");

  /* Oversized counts. */
  f[0].len = pull_header(hdr, (uint64_t)MSG_MAX_KEYS + 1, NULL, NULL, 0);
  expect_fail(f, 2, "'n' = 1048577 exceeds its limit 1048576");
  f[0].len = pull_header(hdr, UINT64_MAX, NULL, NULL, 0);
  expect_fail(f, 2, "exceeds its limit");
  /* Counts that claim more (or less) than the frame holds. */
  f[0].len = pull_header(hdr, 5, NULL, NULL, 0);
  expect_fail(f, 2, "frame 1 (keys) has 32 bytes, expected 40");
  f[0].len = pull_header(hdr, 3, NULL, NULL, 0);
  expect_fail(f, 2, "expected 24");
  f[0].len = pull_header(hdr, 4, NULL, NULL, 0);
  f[1].len = 31; /* not a whole number of keys */
  expect_fail(f, 2, "has 31 bytes");
  f[1].len = 0; /* an empty frame where keys belong */
  expect_fail(f, 2, "has 0 bytes, expected 32");
  f[1].len = sizeof(some_keys);
  /* Missing and extra frames. */
  expect_fail(f, 1, "PULL request: 1 frames, expected 2 (header, keys)");
  struct msg_frame three[3] = {f[0], f[1], {some_keys, 8}};
  expect_fail(three, 3, "3 frames, expected 2");
  struct msg_frame empty3[3] = {f[0], f[1], {NULL, 0}};
  expect_fail(empty3, 3, "3 frames, expected 2");
  expect_fail(f, 0, "no frames");
  struct msg_frame e0[2] = {{NULL, 0}, f[1]};
  expect_fail(e0, 2, "empty header frame");

  /* Trailing bytes after the map, and not a map at all. */
  size_t n = pull_header(hdr, 4, NULL, NULL, 0);
  hdr[n] = 0x01;
  f[0].len = n + 1;
  expect_fail(f, 2, "1 trailing bytes after the header map");
  static const uint8_t arr_hdr[] = {0x91, 0x01};
  struct msg_frame fa[1] = {{arr_hdr, sizeof(arr_hdr)}};
  expect_fail(fa, 1, "not a msgpack map");
  static const uint8_t c1[] = {0x81, 0xc1, 0x01};
  fa[0] = (struct msg_frame){c1, sizeof(c1)};
  expect_fail(fa, 1, "0xc1");
}

/* Lengths that claim far more than the bytes there: the allocation bombs. */
static void test_huge_claimed_lengths(void **state) {
  (void)state;
  static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v'};
  static const uint8_t map16[] = {0xde, 0x00, 0x21};
  static const uint8_t arr32_val[] = {0x81, 0xa1, 'v',  0xdd,
                                      0xff, 0xff, 0xff, 0xff};
  static const uint8_t map32_val[] = {0x81, 0xa1, 'n',  0xdf,
                                      0xff, 0xff, 0xff, 0xff};
  static const uint8_t str32_val[] = {0x81, 0xa3, 'd',  'i',  'r', 0xdb,
                                      0xff, 0xff, 0xff, 0xff, 'a', 'b'};
  static const uint8_t str32_key[] = {0x81, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'};
  static const uint8_t bin32_val[] = {0x81, 0xa1, 'v',  0xc6,
                                      0xff, 0xff, 0xff, 0xf0};
  static const uint8_t ext32_val[] = {0x81, 0xa1, 'v',  0xc9, 0xff,
                                      0xff, 0xff, 0xff, 0x01};
  struct msg_frame f[1];
#define TRY(arr, want)                                                         \
  f[0] = (struct msg_frame){arr, sizeof(arr)};                                 \
  expect_fail(f, 1, want)
  TRY(map32, "claims 4294967295 entries");
  TRY(map16, "claims 33 entries");
  TRY(arr32_val, "nested array, map or ext");
  TRY(map32_val, "nested array, map or ext");
  TRY(str32_val, "claims 4294967295 bytes, 2 left");
  TRY(str32_key, "claims 2147483647 bytes");
  TRY(bin32_val, "claims 4294967280 bytes");
  TRY(ext32_val, "nested array, map or ext");
#undef TRY
  /* A long dir string: present in full, but over MSG_MAX_PATH. */
  struct hb h = {.n = 0};
  hb_byte(&h, 0x87);
  const char *k[] = {"v", "op", "id", "from", "step"};
  const uint64_t v[] = {MSG_VERSION, MSG_CHECKPOINT, 1, 1, 1};
  for (int i = 0; i < 5; i++) {
    hb_str(&h, k[i]);
    hb_uint(&h, v[i]);
  }
  hb_str(&h, "re");
  hb_byte(&h, 0xc2);
  hb_str(&h, "dir");
  hb_byte(&h, 0xda);
  hb_be(&h, MSG_MAX_PATH + 1, 2);
  memset(h.b + h.n, 'p', MSG_MAX_PATH + 1);
  h.n += MSG_MAX_PATH + 1;
  f[0] = (struct msg_frame){h.b, h.n};
  expect_fail(f, 1, "'dir' holds 1025 bytes (at most 1024)");
}

/* Frame contents the header's counts cannot vouch for. */
static void test_bad_lengths_in_frames(void **state) {
  (void)state;
  static struct content c;
  struct msg m;
  struct msg_enc e;
  msg_enc_init(&e);
  random_msg(&m, &c, MSG_PULL, true, 5);
  msg_encode(&m, &e);
  /* A prefix length over ROW_MAX_DIM. */
  uint16_t plen[5];
  memcpy(plen, c.plen, sizeof(plen));
  plen[2] = ROW_MAX_DIM + 1;
  struct msg_frame f[5];
  memcpy(f, e.frames, sizeof(f));
  f[1].data = plen;
  expect_fail(f, 5, "plen[2] = 4097 exceeds ROW_MAX_DIM 4096");
  /* Lengths that do not add up to nf. */
  memcpy(plen, c.plen, sizeof(plen));
  plen[0]++;
  expect_fail(f, 5, "plen sums to");
  /* PUSH: glen drives the ragged sum; plen is only range-checked. */
  random_msg(&m, &c, MSG_PUSH, false, 5);
  msg_encode(&m, &e);
  struct msg_frame g[7];
  memcpy(g, e.frames, sizeof(g));
  uint16_t glen[5];
  memcpy(glen, c.glen, sizeof(glen));
  glen[4] = 0xffff;
  g[2].data = glen;
  expect_fail(g, 7, "glen[4] = 65535");
  memcpy(plen, c.plen, sizeof(plen));
  plen[1] = 5000;
  g[2].data = c.glen;
  g[3].data = plen;
  expect_fail(g, 7, "plen[1] = 5000");
  /* vals one float short. */
  memcpy(g, e.frames, sizeof(g));
  g[6].len -= 4;
  expect_fail(g, 7, "frame 6 (vals)");
  /* ERROR as a request. */
  struct msg er;
  msg_error_to(&er, NULL, 0, MSG_E_INTERNAL, "x");
  msg_encode(&er, &e);
  uint8_t hdr[256];
  memcpy(hdr, e.frames[0].data, e.frames[0].len);
  uint8_t *t = memmem(hdr, e.frames[0].len, "\xa2re\xc3", 4);
  assert_non_null(t);
  t[3] = 0xc2;
  struct msg_frame h1[1] = {{hdr, e.frames[0].len}};
  expect_fail(h1, 1, "ERROR is only valid as a reply");
  /* Dense chunk whose end overflows u64. */
  random_msg(&m, &c, MSG_PULL_DENSE, false, 0);
  m.off = UINT64_MAX - 5;
  m.nvals = 5;
  msg_encode(&m, &e);
  memcpy(hdr, e.frames[0].data, e.frames[0].len);
  t = memmem(hdr, e.frames[0].len, "\xa2nf\x05", 4);
  assert_non_null(t);
  t[3] = 6;
  h1[0] = (struct msg_frame){hdr, e.frames[0].len};
  expect_fail(h1, 1, "overflows");
  msg_enc_deinit(&e);
}

/* Every truncation of every valid header fails; every single-byte change of
 * one either fails with a message or decodes into a message that survives a
 * second round trip. Run over every kind of message. */
static void test_truncations_and_flips(void **state) {
  (void)state;
  static struct content c;
  static const uint8_t masks[] = {0x01, 0x80, 0xff, 0x10};
  struct msg_enc e, e2;
  msg_enc_init(&e);
  msg_enc_init(&e2);
  size_t accepted = 0, rejected = 0;
  for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
    struct msg m;
    random_msg(&m, &c, kinds[k].op, kinds[k].reply, 3);
    msg_encode(&m, &e);
    size_t hl = e.frames[0].len;
    uint8_t *hdr = malloc(hl);
    memcpy(hdr, e.frames[0].data, hl);
    struct msg_frame f[MSG_MAX_FRAMES];
    memcpy(f, e.frames, sizeof(f));
    for (size_t cut = 0; cut < hl; cut++) {
      f[0] = (struct msg_frame){hdr, cut};
      expect_fail(f, e.nframes, NULL);
    }
    for (size_t i = 0; i < hl; i++)
      for (size_t b = 0; b < sizeof(masks); b++) {
        uint8_t *h = malloc(hl);
        memcpy(h, hdr, hl);
        h[i] ^= masks[b];
        f[0] = (struct msg_frame){h, hl};
        struct msg d = {0};
        char err[256] = "";
        if (msg_decode(f, e.nframes, &d, err, sizeof(err)) == 0) {
          accepted++;
          msg_encode(&d, &e2);
          struct msg d2 = {0};
          assert_int_equal(
              msg_decode(e2.frames, e2.nframes, &d2, err, sizeof(err)), 0);
          assert_true(msg_equal(&d, &d2));
          msg_deinit(&d2);
        } else {
          rejected++;
          assert_true(strlen(err) > 5);
        }
        msg_deinit(&d);
        free(h);
      }
    free(hdr);
  }
  /* Flips of ids and steps decode fine; flips of keys and types do not:
   * both outcomes must have happened, or the loop tested nothing. */
  assert_true(accepted > 50);
  assert_true(rejected > 500);
  msg_enc_deinit(&e);
  msg_enc_deinit(&e2);
}

/* With MASKPS_WRITE_SEEDS=<dir>, main writes one seed file per kind of
 * message into dir instead of testing, in the fuzz target's input format: a
 * byte with the frame count, a u32 length per frame, then the frames' bytes.
 * Returns the exit code. */
static int write_fuzz_seeds(const char *dir) {
  static struct content c;
  struct msg_enc e;
  msg_enc_init(&e);
  for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
    struct msg m;
    random_msg(&m, &c, kinds[k].op, kinds[k].reply, 2);
    if (m.op == MSG_PULL_DENSE || m.op == MSG_PUSH_DENSE)
      m.nvals = 3;
    msg_encode(&m, &e);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s-%s", dir, msg_op_name(m.op),
             m.reply ? "reply" : "request");
    FILE *fp = fopen(path, "wb");
    if (!fp) {
      perror(path);
      return 1;
    }
    fputc((int)e.nframes, fp);
    for (size_t i = 0; i < e.nframes; i++) {
      uint32_t len = (uint32_t)e.frames[i].len;
      fwrite(&len, 4, 1, fp);
    }
    for (size_t i = 0; i < e.nframes; i++)
      if (e.frames[i].len)
        fwrite(e.frames[i].data, 1, e.frames[i].len, fp);
    if (fclose(fp) != 0) {
      perror(path);
      return 1;
    }
  }
  msg_enc_deinit(&e);
  return 0;
}

/* The committed fuzz seeds are valid messages of every kind (if the format
 * changes, regenerate them: MASKPS_WRITE_SEEDS=fuzz/corpus/fuzz_msg). */
static void test_committed_seeds_decode(void **state) {
  (void)state;
  const char *root = getenv("MASKPS_SOURCE_DIR");
  if (!root)
    skip();
  for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/fuzz/corpus/fuzz_msg/%s-%s", root,
             msg_op_name(kinds[k].op), kinds[k].reply ? "reply" : "request");
    FILE *fp = fopen(path, "rb");
    if (!fp)
      fail_msg("missing seed %s", path);
    static uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf), fp);
    fclose(fp);
    assert_true(n >= 1 && buf[0] >= 1 && buf[0] <= MSG_MAX_FRAMES);
    size_t nf = buf[0], pos = 1 + 4 * nf;
    struct msg_frame f[MSG_MAX_FRAMES];
    for (size_t i = 0; i < nf; i++) {
      uint32_t len;
      memcpy(&len, buf + 1 + 4 * i, 4);
      assert_true(pos + len <= n);
      f[i].data = buf + pos;
      f[i].len = len;
      pos += len;
    }
    assert_int_equal(pos, n);
    struct msg m = {0};
    char err[256];
    if (msg_decode(f, nf, &m, err, sizeof(err)))
      fail_msg("%s: %s", path, err);
    assert_int_equal(m.op, kinds[k].op);
    assert_int_equal(m.reply, kinds[k].reply);
    msg_deinit(&m);
  }
}

int main(void) {
  const char *seeds = getenv("MASKPS_WRITE_SEEDS");
  if (seeds)
    return write_fuzz_seeds(seeds);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_every_op),
      cmocka_unit_test(test_round_trip_limits),
      cmocka_unit_test(test_equal_notices_differences),
      cmocka_unit_test(test_reply_and_error_builders),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_handmade_header_is_valid),
      cmocka_unit_test(test_wrong_types_for_every_field),
      cmocka_unit_test(test_header_level_faults),
      cmocka_unit_test(test_huge_claimed_lengths),
      cmocka_unit_test(test_bad_lengths_in_frames),
      cmocka_unit_test(test_truncations_and_flips),
      cmocka_unit_test(test_committed_seeds_decode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
