#include "worker/shuffle.h"

#include "common/check.h"
#include "common/keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The per-field arrays of struct data_example ([nkeys] entries each) that
 * the buffer copies. An array added to data_example is one line here,
 * EXAMPLE_ARRAY(vals); the scalars are copied by assignment. The pointers
 * are read and written through memcpy as void *, which is why each entry
 * records the member's size (shuffle_new checks it is a plain pointer). */
#define EXAMPLE_ARRAY(m)                                                       \
  {                                                                            \
    offsetof(struct data_example, m), sizeof(*((struct data_example *)0)->m),  \
        sizeof(((struct data_example *)0)->m), #m                              \
  }
static const struct {
  size_t off;   /* of the pointer in struct data_example */
  size_t elem;  /* bytes per entry */
  size_t psize; /* bytes of the pointer itself */
  const char *name;
} example_arrays[] = {
    EXAMPLE_ARRAY(keys),
    EXAMPLE_ARRAY(vals),
};
#define NARRAYS ARRAY_LEN(example_arrays)

/* Slots are physical: slot i's arrays live at store[a] + i * F * elem and
 * never move. slot[] orders them: slot[0..held) are held, slot[cap] is the
 * spare an incoming example is copied into before it is swapped in, so an
 * example can be both the input and the output of shuffle_add. */
struct shuffle {
  size_t cap;              /* N */
  uint32_t F;              /* entries per array */
  size_t held;             /* examples held, <= cap */
  uint64_t state;          /* splitmix64 state */
  uint32_t *slot;          /* [cap + 1] physical slot ids */
  struct data_example *ex; /* [cap + 1] by physical id */
  char *store[NARRAYS];    /* [cap + 1][F] entries of each array */
};

static void *array_get(const struct data_example *ex, size_t a) {
  void *p;
  memcpy(&p, (const char *)ex + example_arrays[a].off, sizeof(p));
  return p;
}

static void array_set(struct data_example *ex, size_t a, void *p) {
  memcpy((char *)ex + example_arrays[a].off, &p, sizeof(p));
}

struct shuffle *shuffle_new(size_t capacity, uint32_t nfields) {
  CHECK(capacity >= 1 && capacity < UINT32_MAX, "capacity %zu", capacity);
  CHECK(nfields >= 1, "nfields %u", nfields);
  struct shuffle *s = xcalloc(1, sizeof(*s));
  s->cap = capacity;
  s->F = nfields;
  s->slot = xmalloc((capacity + 1) * sizeof(*s->slot));
  s->ex = xcalloc(capacity + 1, sizeof(*s->ex));
  for (size_t i = 0; i <= capacity; i++)
    s->slot[i] = (uint32_t)i;
  for (size_t a = 0; a < NARRAYS; a++) {
    CHECK(example_arrays[a].psize == sizeof(void *), "data_example.%s",
          example_arrays[a].name);
    s->store[a] = xmalloc((capacity + 1) * nfields * example_arrays[a].elem);
  }
  return s;
}

void shuffle_free(struct shuffle *s) {
  if (!s)
    return;
  for (size_t a = 0; a < NARRAYS; a++)
    free(s->store[a]);
  free(s->ex);
  free(s->slot);
  free(s);
}

void shuffle_reset(struct shuffle *s, uint64_t seed) {
  s->held = 0;
  s->state = seed;
}

size_t shuffle_held(const struct shuffle *s) {
  return s->held;
}

/* splitmix64 (keys_mix64 is its finaliser plus the step). */
static uint64_t next_u64(struct shuffle *s) {
  s->state += 0x9e3779b97f4a7c15ull;
  return keys_mix64(s->state);
}

/* Uniform in [0, n), n >= 1: rejection of the top partial range, so every
 * value has the same chance (a plain % would favour small ones by up to
 * n / 2^64). */
static size_t uniform(struct shuffle *s, size_t n) {
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do
    x = next_u64(s);
  while (x >= limit);
  return (size_t)(x % n);
}

/* Physical slot id = a copy of src in the buffer's own arrays. An array src
 * leaves NULL stays NULL in the copy. */
static void copy_in(struct shuffle *s, uint32_t id,
                    const struct data_example *src) {
  CHECK(src->nkeys <= s->F, "example of %u fields in a buffer of %u",
        src->nkeys, s->F);
  struct data_example *dst = &s->ex[id];
  *dst = *src;
  for (size_t a = 0; a < NARRAYS; a++) {
    void *p = array_get(src, a);
    if (!p)
      continue;
    size_t elem = example_arrays[a].elem;
    char *mine = s->store[a] + (size_t)id * s->F * elem;
    memcpy(mine, p, src->nkeys * elem);
    array_set(dst, a, mine);
  }
}

/* dst = the example in physical slot id, into dst's own arrays (which must
 * be there for every array the held example has). The example comes out as
 * it went in: an array that was NULL is NULL in dst. */
static void copy_out(struct shuffle *s, struct data_example *dst, uint32_t id) {
  const struct data_example *src = &s->ex[id];
  void *theirs[NARRAYS];
  for (size_t a = 0; a < NARRAYS; a++)
    theirs[a] = array_get(dst, a);
  *dst = *src;
  for (size_t a = 0; a < NARRAYS; a++) {
    void *p = array_get(src, a);
    if (!p)
      continue;
    CHECK(theirs[a], "out.%s is NULL", example_arrays[a].name);
    memcpy(theirs[a], p, src->nkeys * example_arrays[a].elem);
    array_set(dst, a, theirs[a]);
  }
}

int shuffle_add(struct shuffle *s, const struct data_example *in,
                struct data_example *out) {
  uint32_t spare = s->slot[s->cap];
  copy_in(s, spare, in);
  if (s->held < s->cap) {
    s->slot[s->cap] = s->slot[s->held];
    s->slot[s->held++] = spare;
    return 0;
  }
  size_t j = uniform(s, s->cap);
  copy_out(s, out, s->slot[j]);
  s->slot[s->cap] = s->slot[j];
  s->slot[j] = spare;
  return 1;
}

int shuffle_drain(struct shuffle *s, struct data_example *out) {
  if (s->held == 0)
    return 0;
  size_t j = uniform(s, s->held);
  uint32_t id = s->slot[j];
  copy_out(s, out, id);
  /* the last held one fills the hole; the freed slot goes past the end */
  s->slot[j] = s->slot[--s->held];
  s->slot[s->held] = id;
  return 1;
}

uint64_t shuffle_seed(uint64_t train_seed, uint64_t epoch, uint32_t rank) {
  uint64_t h = keys_mix64(train_seed ^ 0x73687566666c65ull); /* "shuffle" */
  h = keys_mix64(h ^ epoch);
  return keys_mix64(h ^ rank);
}

uint64_t shuffle_bytes(uint64_t capacity, uint32_t nfields) {
  uint64_t per = sizeof(struct data_example) + sizeof(uint32_t);
  for (size_t a = 0; a < NARRAYS; a++)
    per += (uint64_t)nfields * example_arrays[a].elem;
  return (capacity + 1) * per + sizeof(struct shuffle);
}

int shuffle_check(uint64_t capacity, uint32_t nfields, uint64_t limit_bytes,
                  char *err, size_t errlen) {
  /* capacity past 2^32 would also overflow the byte count's product for
   * large nfields; the config caps it far below */
  if (capacity >= UINT32_MAX) {
    snprintf(err, errlen, "%llu examples: at most %u",
             (unsigned long long)capacity, UINT32_MAX - 1);
    return -1;
  }
  uint64_t need = shuffle_bytes(capacity, nfields);
  if (need <= limit_bytes)
    return 0;
  snprintf(err, errlen,
           "%llu examples of %u fields need %.2f GiB, over the limit of "
           "%.2f GiB",
           (unsigned long long)capacity, nfields, (double)need / 0x1p30,
           (double)limit_bytes / 0x1p30);
  return -1;
}

uint64_t shuffle_memory_limit(void) {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0)
    return UINT64_MAX;
  return (uint64_t)pages * (uint64_t)page / 2;
}
