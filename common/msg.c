#include "common/msg.h"

#include "common/check.h"
#include "common/row.h"

#include <limits.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Raw frames are the host's arrays sent as they are; every machine maskps
 * targets is little-endian, and a big-endian build must not silently speak a
 * different protocol. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "maskps's wire format is little-endian");

/* ---- the layout table --------------------------------------------------- */

enum hkey {
  K_V,
  K_OP,
  K_ID,
  K_FROM,
  K_RE,
  K_T,
  K_N,
  K_NF,
  K_STEP,
  K_OFF,
  K_DIR,
  K_JSON,
  K_CODE,
  K_MSG,
  K_COUNT_
};
#define B(k) (1u << (k))
#define COMMON_KEYS (B(K_V) | B(K_OP) | B(K_ID) | B(K_FROM) | B(K_RE))

enum vtype { VT_UINT, VT_BOOL, VT_STR };

static const struct {
  const char *name;
  enum vtype type;
  uint64_t max; /* VT_UINT: largest value; VT_STR: longest byte length */
} keyspec[K_COUNT_] = {
    [K_V] = {"v", VT_UINT, UINT64_MAX},
    [K_OP] = {"op", VT_UINT, UINT64_MAX}, /* checked against the enum */
    [K_ID] = {"id", VT_UINT, UINT64_MAX},
    [K_FROM] = {"from", VT_UINT, UINT32_MAX},
    [K_RE] = {"re", VT_BOOL, 1},
    [K_T] = {"t", VT_UINT, UINT32_MAX},
    [K_N] = {"n", VT_UINT, MSG_MAX_KEYS},
    [K_NF] = {"nf", VT_UINT, MSG_MAX_FLOATS},
    [K_STEP] = {"step", VT_UINT, UINT64_MAX},
    [K_OFF] = {"off", VT_UINT, UINT64_MAX},
    [K_DIR] = {"dir", VT_STR, MSG_MAX_PATH},
    [K_JSON] = {"json", VT_STR, MSG_MAX_JSON},
    [K_CODE] = {"code", VT_UINT, UINT32_MAX},
    [K_MSG] = {"msg", VT_STR, MSG_MAX_ERRTEXT},
};

enum fkind { F_KEYS, F_GLEN, F_PLEN, F_COUNT, F_CLICKS, F_VALS, F_COUNT_ };

static const struct {
  const char *name;
  size_t size; /* bytes per element, also the alignment needed */
} fspec[F_COUNT_] = {
    [F_KEYS] = {"keys", 8},     [F_GLEN] = {"glen", 2},
    [F_PLEN] = {"plen", 2},     [F_COUNT] = {"count", 4},
    [F_CLICKS] = {"clicks", 4}, [F_VALS] = {"vals", 4},
};

struct layout {
  bool valid;
  uint32_t keys; /* header keys beyond COMMON_KEYS */
  uint8_t nframes;
  uint8_t frames[MSG_MAX_FRAMES - 1];
};

#define DENSE_KEYS (B(K_T) | B(K_OFF) | B(K_NF) | B(K_STEP))
/* layouts[op][reply]: the table in msg.h, as data. */
static const struct layout layouts[MSG_OP_COUNT_][2] = {
    [MSG_PULL] = {{true, B(K_T) | B(K_N) | B(K_STEP), 1, {F_KEYS}},
                  {true,
                   B(K_T) | B(K_N) | B(K_NF) | B(K_STEP),
                   4,
                   {F_PLEN, F_COUNT, F_CLICKS, F_VALS}}},
    [MSG_PUSH] = {{true,
                   B(K_T) | B(K_N) | B(K_NF) | B(K_STEP),
                   6,
                   {F_KEYS, F_GLEN, F_PLEN, F_COUNT, F_CLICKS, F_VALS}},
                  {true, B(K_T) | B(K_N) | B(K_STEP), 0, {0}}},
    [MSG_PULL_DENSE] = {{true, DENSE_KEYS, 0, {0}},
                        {true, DENSE_KEYS, 1, {F_VALS}}},
    [MSG_PUSH_DENSE] = {{true, DENSE_KEYS, 1, {F_VALS}},
                        {true, DENSE_KEYS, 0, {0}}},
    [MSG_BARRIER] = {{true, B(K_STEP), 0, {0}}, {true, B(K_STEP), 0, {0}}},
    [MSG_CHECKPOINT] = {{true, B(K_STEP) | B(K_DIR), 0, {0}},
                        {true, B(K_STEP) | B(K_DIR), 0, {0}}},
    [MSG_STATS] = {{true, 0, 0, {0}}, {true, B(K_JSON), 0, {0}}},
    [MSG_SHUTDOWN] = {{true, 0, 0, {0}}, {true, 0, 0, {0}}},
    [MSG_ERROR] = {{false, 0, 0, {0}}, {true, B(K_CODE) | B(K_MSG), 0, {0}}},
};

static const char *const op_names[MSG_OP_COUNT_] = {
    [MSG_PULL] = "PULL",
    [MSG_PUSH] = "PUSH",
    [MSG_PULL_DENSE] = "PULL_DENSE",
    [MSG_PUSH_DENSE] = "PUSH_DENSE",
    [MSG_BARRIER] = "BARRIER",
    [MSG_CHECKPOINT] = "CHECKPOINT",
    [MSG_STATS] = "STATS",
    [MSG_SHUTDOWN] = "SHUTDOWN",
    [MSG_ERROR] = "ERROR",
};

static const char *const err_names[MSG_ERR_COUNT_] = {
    [MSG_E_MALFORMED] = "malformed",
    [MSG_E_VERSION] = "version",
    [MSG_E_UNKNOWN_TABLE] = "unknown_table",
    [MSG_E_RANGE] = "range",
    [MSG_E_STORE] = "store",
    [MSG_E_SHUTTING_DOWN] = "shutting_down",
    [MSG_E_UNSUPPORTED] = "unsupported",
    [MSG_E_INTERNAL] = "internal",
};

const char *msg_op_name(unsigned op) {
  return op > 0 && op < MSG_OP_COUNT_ ? op_names[op] : "?";
}

const char *msg_err_name(unsigned code) {
  return code > 0 && code < MSG_ERR_COUNT_ ? err_names[code] : "?";
}

/* Which text key an op's layout carries (K_COUNT_ if none). */
static enum hkey text_key(uint32_t keys) {
  for (int k = K_DIR; k <= K_MSG; k++)
    if (k != K_CODE && (keys & B(k)))
      return (enum hkey)k;
  return K_COUNT_;
}

/* The float lengths a frame of ragged floats follows (NULL if not ragged). */
static const uint16_t *ragged_lens(const struct msg *m,
                                   const struct layout *l) {
  if (m->op == MSG_PUSH && !m->reply)
    return m->glen;
  if (m->op == MSG_PULL && m->reply)
    return m->plen;
  (void)l;
  return NULL;
}

static const void *frame_ptr(const struct msg *m, enum fkind f) {
  switch (f) {
  case F_KEYS:
    return m->keys;
  case F_GLEN:
    return m->glen;
  case F_PLEN:
    return m->plen;
  case F_COUNT:
    return m->count;
  case F_CLICKS:
    return m->clicks;
  case F_VALS:
    return m->vals;
  default:
    CHECK(0, "frame kind %d", (int)f);
  }
  return NULL;
}

static void set_frame_ptr(struct msg *m, enum fkind f, const void *p) {
  switch (f) {
  case F_KEYS:
    m->keys = p;
    break;
  case F_GLEN:
    m->glen = p;
    break;
  case F_PLEN:
    m->plen = p;
    break;
  case F_COUNT:
    m->count = p;
    break;
  case F_CLICKS:
    m->clicks = p;
    break;
  case F_VALS:
    m->vals = p;
    break;
  default:
    CHECK(0, "frame kind %d", (int)f);
  }
}

/* Elements in frame f of message m. */
static size_t frame_elems(const struct msg *m, enum fkind f) {
  return f == F_VALS ? m->nvals : m->n;
}

static uint64_t key_value(const struct msg *m, enum hkey k) {
  switch (k) {
  case K_V:
    return MSG_VERSION;
  case K_OP:
    return m->op;
  case K_ID:
    return m->id;
  case K_FROM:
    return m->from;
  case K_RE:
    return m->reply;
  case K_T:
    return m->table;
  case K_N:
    return m->n;
  case K_NF:
    return m->nvals;
  case K_STEP:
    return m->step;
  case K_OFF:
    return m->off;
  case K_CODE:
    return m->code;
  default:
    return 0;
  }
}

static void set_key_value(struct msg *m, enum hkey k, uint64_t v) {
  /* Ranges were checked against keyspec before this is called. */
  switch (k) {
  case K_ID:
    m->id = v;
    break;
  case K_FROM:
    m->from = (uint32_t)v;
    break;
  case K_RE:
    m->reply = v != 0;
    break;
  case K_T:
    m->table = (uint32_t)v;
    break;
  case K_N:
    m->n = (uint32_t)v;
    break;
  case K_NF:
    m->nvals = (uint32_t)v;
    break;
  case K_STEP:
    m->step = v;
    break;
  case K_OFF:
    m->off = v;
    break;
  case K_CODE:
    m->code = (uint32_t)v;
    break;
  default: /* v and op are handled by the caller */
    break;
  }
}

static const char *kind_name(const struct msg *m) {
  return m->reply ? "reply" : "request";
}

/* ---- small helpers ------------------------------------------------------ */

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(err, errlen, "msg: ");
    if (k >= 0 && (size_t)k < errlen)
      vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* A printable, bounded copy of untrusted bytes for an error message. */
static void printable(char *out, size_t cap, const char *s, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < n && j + 4 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    out[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
  }
  if (n > 0 && j + 4 >= cap && j + 3 < cap) {
    memcpy(out + j, "...", 3);
    j += 3;
  }
  out[j] = 0;
}

static const char *mp_type_name(msgpack_object_type t) {
  switch (t) {
  case MSGPACK_OBJECT_NIL:
    return "nil";
  case MSGPACK_OBJECT_BOOLEAN:
    return "bool";
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    return "unsigned int";
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    return "negative int";
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    return "float";
  case MSGPACK_OBJECT_STR:
    return "str";
  case MSGPACK_OBJECT_BIN:
    return "bin";
  case MSGPACK_OBJECT_ARRAY:
    return "array";
  case MSGPACK_OBJECT_MAP:
    return "map";
  case MSGPACK_OBJECT_EXT:
    return "ext";
  }
  return "?";
}

/* ---- lifecycle and builders -------------------------------------------- */

void msg_init(struct msg *m) {
  memset(m, 0, sizeof(*m));
}

void msg_deinit(struct msg *m) {
  free(m->own_);
  memset(m, 0, sizeof(*m));
}

void msg_reply_to(struct msg *rep, const struct msg *req, uint32_t from) {
  memset(rep, 0, sizeof(*rep));
  rep->op = req->op;
  rep->reply = true;
  rep->id = req->id;
  rep->table = req->table;
  rep->from = from;
}

void msg_error_to(struct msg *rep, const struct msg *req, uint32_t from,
                  enum msg_err code, const char *text) {
  memset(rep, 0, sizeof(*rep));
  rep->op = MSG_ERROR;
  rep->reply = true;
  rep->id = req ? req->id : 0;
  rep->from = from;
  rep->code = (uint32_t)code;
  rep->text = text ? text : "";
  rep->text_len = (uint32_t)strnlen(rep->text, MSG_MAX_ERRTEXT);
}

void msg_enc_init(struct msg_enc *e) {
  memset(e, 0, sizeof(*e));
}

void msg_enc_deinit(struct msg_enc *e) {
  free(e->hdr_);
  memset(e, 0, sizeof(*e));
}

/* ---- encoding ----------------------------------------------------------- */

static int enc_write(void *data, const char *buf, size_t len) {
  struct msg_enc *e = data;
  if (e->hlen_ + len > e->hcap_) {
    size_t cap = e->hcap_ ? e->hcap_ : 256;
    while (cap < e->hlen_ + len)
      cap *= 2;
    e->hdr_ = xrealloc(e->hdr_, cap);
    e->hcap_ = cap;
  }
  memcpy(e->hdr_ + e->hlen_, buf, len);
  e->hlen_ += len;
  return 0;
}

static void pack_cstr(msgpack_packer *pk, const char *s, size_t n) {
  msgpack_pack_str(pk, n);
  if (n)
    msgpack_pack_str_body(pk, s, n);
}

void msg_encode(const struct msg *m, struct msg_enc *e) {
  CHECK(m->op > 0 && m->op < MSG_OP_COUNT_, "op=%u", m->op);
  const struct layout *l = &layouts[m->op][m->reply];
  CHECK(l->valid, "%s %s is not a message", msg_op_name(m->op), kind_name(m));
  CHECK(m->n <= MSG_MAX_KEYS, "n=%u", m->n);
  CHECK(m->nvals <= MSG_MAX_FLOATS, "nvals=%u", m->nvals);
  CHECK(m->off <= UINT64_MAX - m->nvals, "off=%llu",
        (unsigned long long)m->off);
  const uint16_t *lens = ragged_lens(m, l);
  if (lens) {
    uint64_t sum = 0;
    for (uint32_t i = 0; i < m->n; i++) {
      CHECK(lens[i] <= ROW_MAX_DIM, "length[%u]=%u", i, lens[i]);
      sum += lens[i];
    }
    CHECK(sum == m->nvals, "%s %s: lengths sum to %llu, nvals=%u",
          msg_op_name(m->op), kind_name(m), (unsigned long long)sum, m->nvals);
  }
  if (m->op == MSG_PUSH && !m->reply)
    for (uint32_t i = 0; i < m->n; i++)
      CHECK(m->plen[i] <= ROW_MAX_DIM, "plen[%u]=%u", i, m->plen[i]);
  enum hkey tk = text_key(l->keys);
  if (tk != K_COUNT_) {
    CHECK(m->text_len <= keyspec[tk].max, "%s: %u bytes", keyspec[tk].name,
          m->text_len);
    CHECK(m->text || !m->text_len, "%s: NULL text", keyspec[tk].name);
    CHECK(!m->text_len || !memchr(m->text, 0, m->text_len),
          "%s holds a NUL byte", keyspec[tk].name);
  }

  e->hlen_ = 0;
  msgpack_packer pk;
  msgpack_packer_init(&pk, e, enc_write);
  uint32_t keys = COMMON_KEYS | l->keys;
  msgpack_pack_map(&pk, (size_t)__builtin_popcount(keys));
  for (int k = 0; k < K_COUNT_; k++) {
    if (!(keys & B(k)))
      continue;
    pack_cstr(&pk, keyspec[k].name, strlen(keyspec[k].name));
    switch (keyspec[k].type) {
    case VT_UINT:
      msgpack_pack_uint64(&pk, key_value(m, (enum hkey)k));
      break;
    case VT_BOOL:
      if (m->reply)
        msgpack_pack_true(&pk);
      else
        msgpack_pack_false(&pk);
      break;
    case VT_STR:
      pack_cstr(&pk, m->text, m->text_len);
      break;
    }
  }
  CHECK(e->hlen_ <= MSG_MAX_HEADER_BYTES, "header %zu bytes", e->hlen_);
  e->frames[0].data = e->hdr_;
  e->frames[0].len = e->hlen_;
  for (int i = 0; i < l->nframes; i++) {
    enum fkind f = (enum fkind)l->frames[i];
    size_t len = frame_elems(m, f) * fspec[f].size;
    const void *p = frame_ptr(m, f);
    CHECK(p || !len, "%s %s: %s is NULL", msg_op_name(m->op), kind_name(m),
          fspec[f].name);
    e->frames[1 + i].data = p;
    e->frames[1 + i].len = len;
  }
  e->nframes = 1 + (size_t)l->nframes;
}

/* ---- decoding ----------------------------------------------------------- */

/* Most map entries a header may hold; a valid one has at most 9. */
#define HDR_MAX_ENTRIES 32

static uint64_t be_read(const uint8_t *b, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v = v << 8 | b[i];
  return v;
}

/*
 * Walks the header's msgpack bytes before msgpack-c sees them. msgpack-c
 * allocates an array's or map's element storage from the count the input
 * claims, so 5 hostile bytes (an array32 of 2^32-1 elements) would make it
 * ask for ~100 GB. Allowing only a flat map of at most HDR_MAX_ENTRIES
 * scalars, every length checked against the bytes left, bounds what the
 * real parse can allocate, and also catches truncation and trailing bytes
 * with precise messages.
 */
static int prescan(const uint8_t *b, size_t len, char *err, size_t errlen) {
  size_t pos;
  uint64_t count;
  uint8_t c = b[0];
  if (c >= 0x80 && c <= 0x8f) {
    count = c & 0x0f;
    pos = 1;
  } else if (c == 0xde || c == 0xdf) {
    size_t nb = c == 0xde ? 2 : 4;
    if (len < 1 + nb)
      return fail(err, errlen, "header truncated in its map length");
    count = be_read(b + 1, nb);
    pos = 1 + nb;
  } else {
    return fail(err, errlen, "header is not a msgpack map (first byte 0x%02x)",
                c);
  }
  if (count > HDR_MAX_ENTRIES)
    return fail(err, errlen, "header map claims %llu entries (at most %d)",
                (unsigned long long)count, HDR_MAX_ENTRIES);
  for (uint64_t i = 0; i < 2 * count; i++) {
    if (pos >= len)
      return fail(err, errlen,
                  "header truncated: %llu of %llu map entries present",
                  (unsigned long long)(i / 2), (unsigned long long)count);
    c = b[pos++];
    size_t lenbytes = 0;
    uint64_t skip = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
      skip = 0;
    else if (c >= 0xa0 && c <= 0xbf)
      skip = c & 0x1f;
    else
      switch (c) {
      case 0xcc:
      case 0xd0:
        skip = 1;
        break;
      case 0xcd:
      case 0xd1:
        skip = 2;
        break;
      case 0xce:
      case 0xd2:
      case 0xca:
        skip = 4;
        break;
      case 0xcf:
      case 0xd3:
      case 0xcb:
        skip = 8;
        break;
      case 0xc4:
      case 0xd9:
        lenbytes = 1;
        break;
      case 0xc5:
      case 0xda:
        lenbytes = 2;
        break;
      case 0xc6:
      case 0xdb:
        lenbytes = 4;
        break;
      case 0xc1:
        return fail(err, errlen,
                    "header byte %zu is 0xc1, never valid in msgpack", pos - 1);
      default:
        return fail(err, errlen,
                    "header %s %llu is a nested array, map or ext (0x%02x); "
                    "header values are scalars",
                    i % 2 ? "value" : "key", (unsigned long long)(i / 2), c);
      }
    if (lenbytes) {
      if (len - pos < lenbytes)
        return fail(err, errlen, "header truncated in a string length");
      skip = be_read(b + pos, lenbytes);
      pos += lenbytes;
    }
    if (skip > len - pos)
      return fail(err, errlen,
                  "header truncated: an entry claims %llu bytes, %zu left",
                  (unsigned long long)skip, len - pos);
    pos += (size_t)skip;
  }
  if (pos != len)
    return fail(err, errlen, "%zu trailing bytes after the header map",
                len - pos);
  return 0;
}

static int lookup_key(const msgpack_object *k) {
  if (k->type != MSGPACK_OBJECT_STR)
    return -1;
  for (int i = 0; i < K_COUNT_; i++)
    if (strlen(keyspec[i].name) == k->via.str.size &&
        !memcmp(keyspec[i].name, k->via.str.ptr, k->via.str.size))
      return i;
  return -1;
}

/* Reads the header map into m; text_obj gets the text value (if any) and
 * *present the keys seen. */
static int parse_header(const msgpack_object_map *map, struct msg *m,
                        const msgpack_object **text_obj, uint32_t *present,
                        bool *version_err, char *err, size_t errlen) {
  /* The version first: a peer of another version may use keys this build
   * does not know, and "wrong version" is the message that helps. */
  const msgpack_object *ver = NULL;
  for (uint32_t i = 0; i < map->size; i++) {
    int k = lookup_key(&map->ptr[i].key);
    const msgpack_object *vo = &map->ptr[i].val;
    if (k == K_V)
      ver = vo;
    /* The id too, so that even a peer of another version gets an ERROR
     * reply it can match. */
    if (k == K_ID && vo->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
      m->id = vo->via.u64;
  }
  if (!ver)
    return fail(err, errlen, "header has no protocol version 'v'");
  if (ver->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return fail(err, errlen,
                "protocol version 'v' is a %s, not an unsigned int",
                mp_type_name(ver->type));
  if (ver->via.u64 != MSG_VERSION) {
    *version_err = true;
    return fail(err, errlen,
                "protocol version %llu, this build speaks version %d (peer "
                "built from another maskps release?)",
                (unsigned long long)ver->via.u64, MSG_VERSION);
  }

  *present = 0;
  *text_obj = NULL;
  for (uint32_t i = 0; i < map->size; i++) {
    const msgpack_object *ko = &map->ptr[i].key, *vo = &map->ptr[i].val;
    if (ko->type != MSGPACK_OBJECT_STR)
      return fail(err, errlen, "header key %u is a %s, not a str", i,
                  mp_type_name(ko->type));
    int k = lookup_key(ko);
    if (k < 0) {
      char name[40];
      printable(name, sizeof(name), ko->via.str.ptr, ko->via.str.size);
      return fail(err, errlen, "unknown header key '%s'", name);
    }
    if (*present & B(k))
      return fail(err, errlen, "duplicate header key '%s'", keyspec[k].name);
    *present |= B(k);
    switch (keyspec[k].type) {
    case VT_UINT:
      if (vo->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail(err, errlen, "header key '%s' is a %s, not an unsigned int",
                    keyspec[k].name, mp_type_name(vo->type));
      if (vo->via.u64 > keyspec[k].max)
        return fail(err, errlen,
                    "header key '%s' = %llu exceeds its limit %llu",
                    keyspec[k].name, (unsigned long long)vo->via.u64,
                    (unsigned long long)keyspec[k].max);
      if (k == K_OP) {
        if (vo->via.u64 == 0 || vo->via.u64 >= MSG_OP_COUNT_)
          return fail(err, errlen, "unknown op %llu",
                      (unsigned long long)vo->via.u64);
        m->op = (uint8_t)vo->via.u64;
      } else {
        set_key_value(m, (enum hkey)k, vo->via.u64);
      }
      break;
    case VT_BOOL:
      if (vo->type != MSGPACK_OBJECT_BOOLEAN)
        return fail(err, errlen, "header key '%s' is a %s, not a bool",
                    keyspec[k].name, mp_type_name(vo->type));
      m->reply = vo->via.boolean;
      break;
    case VT_STR:
      if (vo->type != MSGPACK_OBJECT_STR)
        return fail(err, errlen, "header key '%s' is a %s, not a str",
                    keyspec[k].name, mp_type_name(vo->type));
      if (vo->via.str.size > keyspec[k].max)
        return fail(err, errlen,
                    "header key '%s' holds %u bytes (at most %llu)",
                    keyspec[k].name, vo->via.str.size,
                    (unsigned long long)keyspec[k].max);
      if (vo->via.str.size && memchr(vo->via.str.ptr, 0, vo->via.str.size))
        return fail(err, errlen, "header key '%s' holds a NUL byte",
                    keyspec[k].name);
      *text_obj = vo;
      break;
    }
  }
  for (int k = 0; k < K_COUNT_; k++)
    if ((COMMON_KEYS & B(k)) && !(*present & B(k)))
      return fail(err, errlen, "header lacks the key '%s'", keyspec[k].name);
  return 0;
}

static int decode(const struct msg_frame *frames, size_t nframes, struct msg *m,
                  bool *version_err, char *err, size_t errlen) {
  if (err && errlen)
    err[0] = 0;
  if (!frames || nframes == 0)
    return fail(err, errlen, "message has no frames");
  for (size_t i = 0; i < nframes; i++)
    CHECK(frames[i].data || !frames[i].len, "frame %zu: NULL data", i);
  const uint8_t *hdr = frames[0].data;
  size_t hlen = frames[0].len;
  if (hlen == 0)
    return fail(err, errlen, "empty header frame");
  if (hlen > MSG_MAX_HEADER_BYTES)
    return fail(err, errlen, "header frame of %zu bytes (at most %u)", hlen,
                (unsigned)MSG_MAX_HEADER_BYTES);
  if (prescan(hdr, hlen, err, errlen) < 0)
    return -1;

  int rc = -1;
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  msgpack_unpack_return ur =
      msgpack_unpack_next(&u, (const char *)hdr, hlen, &off);
  if (ur != MSGPACK_UNPACK_SUCCESS || off != hlen ||
      u.data.type != MSGPACK_OBJECT_MAP) {
    fail(err, errlen, "header does not parse as msgpack (code %d)", (int)ur);
    goto out;
  }
  const msgpack_object *text_obj = NULL;
  uint32_t present = 0;
  if (parse_header(&u.data.via.map, m, &text_obj, &present, version_err, err,
                   errlen) < 0)
    goto out;

  const char *what = msg_op_name(m->op), *kind = kind_name(m);
  const struct layout *l = &layouts[m->op][m->reply];
  if (!l->valid) {
    fail(err, errlen, "%s is only valid as a reply", what);
    goto out;
  }
  uint32_t extra = present & ~(COMMON_KEYS | l->keys);
  uint32_t missing = l->keys & ~present;
  for (int k = 0; k < K_COUNT_; k++) {
    if (missing & B(k)) {
      fail(err, errlen, "%s %s: missing header key '%s'", what, kind,
           keyspec[k].name);
      goto out;
    }
    if (extra & B(k)) {
      fail(err, errlen, "%s %s: header key '%s' does not belong", what, kind,
           keyspec[k].name);
      goto out;
    }
  }
  if (m->off > UINT64_MAX - m->nvals) {
    fail(err, errlen, "%s %s: off %llu + nf %u overflows", what, kind,
         (unsigned long long)m->off, m->nvals);
    goto out;
  }
  if (nframes != 1 + (size_t)l->nframes) {
    char names[80] = "header";
    for (int i = 0; i < l->nframes; i++) {
      size_t used = strlen(names);
      snprintf(names + used, sizeof(names) - used, ", %s",
               fspec[l->frames[i]].name);
    }
    fail(err, errlen, "%s %s: %zu frames, expected %d (%s)", what, kind,
         nframes, 1 + l->nframes, names);
    goto out;
  }
  /* Frame lengths, exactly. */
  for (int i = 0; i < l->nframes; i++) {
    enum fkind f = (enum fkind)l->frames[i];
    size_t elems = frame_elems(m, f);
    size_t want = elems * fspec[f].size; /* <= 2^28: no overflow */
    if (frames[1 + i].len != want) {
      fail(err, errlen,
           "%s %s: frame %d (%s) has %zu bytes, expected %zu (%s=%zu x %zu "
           "bytes)",
           what, kind, 1 + i, fspec[f].name, frames[1 + i].len, want,
           f == F_VALS ? "nf" : "n", elems, fspec[f].size);
      goto out;
    }
  }
  /* Prefix lengths: read with memcpy, the frames may be unaligned. */
  for (int i = 0; i < l->nframes; i++) {
    enum fkind f = (enum fkind)l->frames[i];
    if (f != F_GLEN && f != F_PLEN)
      continue;
    bool ragged = (f == F_GLEN) || (m->op == MSG_PULL && m->reply);
    const uint8_t *p = frames[1 + i].data;
    uint64_t sum = 0;
    for (uint32_t j = 0; j < m->n; j++) {
      uint16_t v;
      memcpy(&v, p + 2 * (size_t)j, 2);
      if (v > ROW_MAX_DIM) {
        fail(err, errlen, "%s %s: %s[%u] = %u exceeds ROW_MAX_DIM %d", what,
             kind, fspec[f].name, j, v, ROW_MAX_DIM);
        goto out;
      }
      sum += v;
    }
    if (ragged && sum != m->nvals) {
      fail(err, errlen, "%s %s: %s sums to %llu floats but nf = %u", what, kind,
           fspec[f].name, (unsigned long long)sum, m->nvals);
      goto out;
    }
  }

  /* Everything checks out: expose the arrays, copying the misaligned ones
   * and the text into one owned block. */
  size_t own = 0;
  for (int i = 0; i < l->nframes; i++) {
    enum fkind f = (enum fkind)l->frames[i];
    const struct msg_frame *fr = &frames[1 + i];
    if (fr->len && (uintptr_t)fr->data % fspec[f].size)
      own += (fr->len + 7) & ~(size_t)7;
  }
  if (text_obj)
    own += text_obj->via.str.size + 1;
  char *blk = own ? xmalloc(own) : NULL;
  m->own_ = blk;
  for (int i = 0; i < l->nframes; i++) {
    enum fkind f = (enum fkind)l->frames[i];
    const struct msg_frame *fr = &frames[1 + i];
    if (fr->len && (uintptr_t)fr->data % fspec[f].size) {
      memcpy(blk, fr->data, fr->len);
      set_frame_ptr(m, f, blk);
      blk += (fr->len + 7) & ~(size_t)7;
    } else {
      set_frame_ptr(m, f, fr->len ? fr->data : NULL);
    }
  }
  if (text_obj) {
    uint32_t n = text_obj->via.str.size;
    if (n)
      memcpy(blk, text_obj->via.str.ptr, n);
    blk[n] = 0;
    m->text = blk;
    m->text_len = n;
  }
  rc = 0;
out:
  msgpack_unpacked_destroy(&u);
  return rc;
}

int msg_decode(const struct msg_frame *frames, size_t nframes, struct msg *m,
               char *err, size_t errlen) {
  msg_deinit(m);
  bool version_err = false;
  if (decode(frames, nframes, m, &version_err, err, errlen) == 0)
    return 0;
  m->code = version_err ? MSG_E_VERSION : MSG_E_MALFORMED;
  return -1;
}

/* ---- comparison --------------------------------------------------------- */

bool msg_equal(const struct msg *a, const struct msg *b) {
  if (a->op != b->op || a->reply != b->reply || a->id != b->id ||
      a->from != b->from)
    return false;
  if (a->op == 0 || a->op >= MSG_OP_COUNT_)
    return true; /* nothing else is defined */
  const struct layout *l = &layouts[a->op][a->reply];
  for (int k = 0; k < K_COUNT_; k++) {
    if (!(l->keys & B(k)))
      continue;
    if (keyspec[k].type == VT_STR) {
      if (a->text_len != b->text_len ||
          (a->text_len && memcmp(a->text, b->text, a->text_len)))
        return false;
    } else if (key_value(a, (enum hkey)k) != key_value(b, (enum hkey)k)) {
      return false;
    }
  }
  for (int i = 0; i < l->nframes; i++) {
    enum fkind f = (enum fkind)l->frames[i];
    size_t len = frame_elems(a, f) * fspec[f].size;
    if (len && memcmp(frame_ptr(a, f), frame_ptr(b, f), len))
      return false;
  }
  return true;
}
