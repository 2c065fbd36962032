/*
 * row: the on-disk format of one embedding row (DESIGN.md "A row").
 *
 * One RocksDB value holds everything about one feature value, so value and
 * optimizer state are always written together, atomically. Layout, all
 * little-endian, 32-byte header then floats:
 *
 *   off size field
 *     0  u8  version     ROW_VERSION; 0 is never valid
 *     1  u8  flags       ROW_F_* bits
 *     2  u8  opt         enum row_opt: which optimizer state follows
 *     3  u8  reserved    0
 *     4  u16 p           stored prefix length, 0..ROW_MAX_DIM
 *                        (0 = a pending key below min_count: stats only)
 *     6  u16 reserved    0
 *     8  u32 count       occurrences seen (saturates at UINT32_MAX)
 *    12  u32 clicks      positive labels seen (saturates)
 *    16  u64 last_step   global step of the last update (lazy L2, TTL)
 *    24  u32 opt_step    this row's optimizer step count (Adam bias terms)
 *    28  u32 reserved    0
 *    32  f32 values[p]             the active prefix of the embedding
 *        f32 state[slots(opt)*p]   slot-major: slot 0's p floats, then slot 1's
 *
 * Size: 32 + 4*p*(1 + slots(opt)) bytes, so an AMTL row costs bytes
 * proportional to its prefix length p. Slots: none/sgd 0, adagrad 1
 * (accumulator), adam 2 (m, v), ftrl 2 (z, n).
 *
 * Versioning: a reader accepts versions 1..ROW_VERSION and refuses a newer
 * one with a message naming both, so an old binary never misreads a new table.
 */
#ifndef MASKPS_ROW_H
#define MASKPS_ROW_H

#include <stddef.h>
#include <stdint.h>

#define ROW_VERSION 1
#define ROW_HEADER_LEN 32
#define ROW_MAX_DIM 4096

enum row_opt {
  ROW_OPT_NONE = 0,
  ROW_OPT_SGD = 1,
  ROW_OPT_ADAGRAD = 2,
  ROW_OPT_ADAM = 3,
  ROW_OPT_FTRL = 4,
  ROW_OPT_COUNT_
};

enum {
  ROW_F_PENDING = 1u << 0, /* not yet admitted (p == 0): reads as zeros */
};

/* A decoded row. values/state point at caller-owned float arrays of at least
 * p and row_slots(opt)*p entries; row_decode fills them, row_encode reads
 * them. */
struct row {
  uint8_t version;    /* as read; row_encode always writes ROW_VERSION */
  uint8_t flags;      /* ROW_F_* */
  uint8_t opt;        /* enum row_opt */
  uint16_t p;         /* stored prefix length (floats) */
  uint32_t count;     /* occurrences */
  uint32_t clicks;    /* positive labels */
  uint64_t last_step; /* global step of the last update */
  uint32_t opt_step;  /* per-row optimizer steps */
  float *values;      /* [p] */
  float *state;       /* [slots * p], slot-major */
};

/* Optimizer state floats per embedding entry; 0 for an unknown opt. */
unsigned row_slots(enum row_opt opt);
/* "none", "sgd", ...; "?" for an unknown value. */
const char *row_opt_name(enum row_opt opt);

/* Bytes a row with prefix p and optimizer opt takes. */
size_t row_size(unsigned p, enum row_opt opt);

/* Writes the row into buf (cap bytes). Returns the bytes written, or 0 if
 * cap is too small. CHECKs p <= ROW_MAX_DIM and a known opt (our own bug). */
size_t row_encode(const struct row *r, void *buf, size_t cap);

/* Validates a stored value and fills r's scalar fields (values/state are
 * left untouched). Returns 0, or -1 with a message in err: unknown or newer
 * version, unknown optimizer, p out of range, length that does not match
 * p and opt, nonzero reserved bytes. Trusts no byte of buf. */
int row_peek(const void *buf, size_t len, struct row *r, char *err,
             size_t errlen);

/* row_peek, then copies the floats into r->values and r->state (which must
 * hold p and slots*p floats; state may be NULL to skip it). */
int row_decode(const void *buf, size_t len, struct row *r, char *err,
               size_t errlen);

/* Float offsets inside an encoded row, for in-place readers. */
static inline const void *row_values_ptr(const void *buf) {
  return (const char *)buf + ROW_HEADER_LEN;
}

#endif
