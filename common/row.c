#include "common/row.h"

#include "common/check.h"

#include <stdio.h>
#include <string.h>

static const unsigned slots_of[ROW_OPT_COUNT_] = {0, 0, 1, 2, 2};
static const char *const names_of[ROW_OPT_COUNT_] = {"none", "sgd", "adagrad",
                                                     "adam", "ftrl"};

unsigned row_slots(enum row_opt opt) {
  return (unsigned)opt < ROW_OPT_COUNT_ ? slots_of[opt] : 0;
}

const char *row_opt_name(enum row_opt opt) {
  return (unsigned)opt < ROW_OPT_COUNT_ ? names_of[opt] : "?";
}

size_t row_size(unsigned p, enum row_opt opt) {
  return ROW_HEADER_LEN + (size_t)4 * p * (1 + row_slots(opt));
}

/* The format is little-endian; so is every machine maskps targets. Writing
 * through these helpers keeps the intent explicit and the code portable. */
static void put16(uint8_t *b, uint16_t v) {
  b[0] = (uint8_t)v;
  b[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *b, uint32_t v) {
  for (int i = 0; i < 4; i++)
    b[i] = (uint8_t)(v >> 8 * i);
}
static void put64(uint8_t *b, uint64_t v) {
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)(v >> 8 * i);
}
static uint16_t get16(const uint8_t *b) {
  return (uint16_t)(b[0] | b[1] << 8);
}
static uint32_t get32(const uint8_t *b) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | b[i];
  return v;
}
static uint64_t get64(const uint8_t *b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | b[i];
  return v;
}

size_t row_encode(const struct row *r, void *buf, size_t cap) {
  CHECK(r->p <= ROW_MAX_DIM, "p=%u", r->p);
  CHECK(r->opt < ROW_OPT_COUNT_, "opt=%u", r->opt);
  size_t n = row_size(r->p, r->opt);
  if (cap < n)
    return 0;
  uint8_t *b = buf;
  memset(b, 0, ROW_HEADER_LEN);
  b[0] = ROW_VERSION;
  b[1] = r->flags;
  b[2] = r->opt;
  put16(b + 4, r->p);
  put32(b + 8, r->count);
  put32(b + 12, r->clicks);
  put64(b + 16, r->last_step);
  put32(b + 24, r->opt_step);
  size_t nv = (size_t)4 * r->p, ns = nv * row_slots(r->opt);
  if (nv)
    memcpy(b + ROW_HEADER_LEN, r->values, nv);
  if (ns)
    memcpy(b + ROW_HEADER_LEN + nv, r->state, ns);
  return n;
}

int row_peek(const void *buf, size_t len, struct row *r, char *err,
             size_t errlen) {
  const uint8_t *b = buf;
  if (len < ROW_HEADER_LEN) {
    snprintf(err, errlen, "row: %zu bytes is shorter than the %d-byte header",
             len, ROW_HEADER_LEN);
    return -1;
  }
  if (b[0] == 0 || b[0] > ROW_VERSION) {
    snprintf(err, errlen,
             "row: format version %u is not one this build reads (1..%d)%s",
             b[0], ROW_VERSION,
             b[0] > ROW_VERSION ? "; written by a newer maskps?" : "");
    return -1;
  }
  if (b[2] >= ROW_OPT_COUNT_) {
    snprintf(err, errlen, "row: unknown optimizer kind %u", b[2]);
    return -1;
  }
  if (b[3] || get16(b + 6) || get32(b + 28)) {
    snprintf(err, errlen, "row: reserved header bytes are not zero");
    return -1;
  }
  uint16_t p = get16(b + 4);
  if (p > ROW_MAX_DIM) {
    snprintf(err, errlen, "row: prefix length %u exceeds %d", p, ROW_MAX_DIM);
    return -1;
  }
  size_t want = row_size(p, (enum row_opt)b[2]);
  if (len != want) {
    snprintf(err, errlen,
             "row: %zu bytes does not match p=%u opt=%s (expected %zu)", len,
             p, row_opt_name((enum row_opt)b[2]), want);
    return -1;
  }
  if ((p == 0) != ((b[1] & ROW_F_PENDING) != 0)) {
    snprintf(err, errlen, "row: pending flag %s but p=%u",
             (b[1] & ROW_F_PENDING) ? "set" : "clear", p);
    return -1;
  }
  r->version = b[0];
  r->flags = b[1];
  r->opt = b[2];
  r->p = p;
  r->count = get32(b + 8);
  r->clicks = get32(b + 12);
  r->last_step = get64(b + 16);
  r->opt_step = get32(b + 24);
  return 0;
}

int row_decode(const void *buf, size_t len, struct row *r, char *err,
               size_t errlen) {
  if (row_peek(buf, len, r, err, errlen) < 0)
    return -1;
  const uint8_t *b = buf;
  size_t nv = (size_t)4 * r->p, ns = nv * row_slots((enum row_opt)r->opt);
  if (nv)
    memcpy(r->values, b + ROW_HEADER_LEN, nv);
  if (ns && r->state)
    memcpy(r->state, b + ROW_HEADER_LEN + nv, ns);
  return 0;
}
