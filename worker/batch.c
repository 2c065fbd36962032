/* batch: de-duplication, ragged <-> dense rows, gradient packing. */
#include "worker/batch.h"

#include "common/check.h"
#include "common/keys.h"
#include "worker/nn/ops.h"

#include <stdlib.h>
#include <string.h>

struct batch *batch_new(int Bmax, int F, int ntables, const uint32_t *ids,
                        const int *dims) {
  CHECK(Bmax >= 1 && F >= 1, "Bmax %d F %d", Bmax, F);
  CHECK(ntables >= 1 && ntables <= BATCH_MAX_TABLES, "ntables %d", ntables);
  struct batch *b = xcalloc(1, sizeof(*b));
  b->Bmax = Bmax;
  b->F = F;
  size_t K = (size_t)Bmax * (size_t)F; /* the most distinct keys */
  b->labels = xcalloc((size_t)Bmax, sizeof(float));
  b->groups = xcalloc((size_t)Bmax, sizeof(uint64_t));
  b->xvals = xcalloc(K, sizeof(float));
  b->idx = xcalloc(K, sizeof(int32_t));
  b->keys = xcalloc(K, sizeof(uint64_t));
  b->occ = xcalloc(K, sizeof(uint32_t));
  b->occ_clicks = xcalloc(K, sizeof(uint32_t));
  size_t nslots = 16;
  while (nslots < 2 * K)
    nslots *= 2;
  b->slots = xcalloc(nslots, sizeof(uint32_t));
  b->key_slot = xcalloc(K, sizeof(uint32_t));
  b->mask = nslots - 1;
  b->ntables = ntables;
  for (int i = 0; i < ntables; i++) {
    CHECK(dims[i] >= 1 && dims[i] <= 4096, "table %u dim %d", ids[i], dims[i]);
    struct batch_table *t = &b->t[i];
    t->id = ids[i];
    t->D = dims[i];
    size_t KD = K * (size_t)dims[i];
    t->plen = xcalloc(K, sizeof(uint16_t));
    t->count = xcalloc(K, sizeof(uint32_t));
    t->clicks = xcalloc(K, sizeof(uint32_t));
    t->vals = xcalloc(KD, sizeof(float));
    t->rows = xcalloc(KD, sizeof(float));
    t->prefix = xcalloc(K, sizeof(uint16_t));
    t->newp = xcalloc(K, sizeof(uint16_t));
    t->drows = xcalloc(KD, sizeof(float));
    t->grads = xcalloc(KD, sizeof(float));
  }
  return b;
}

void batch_free(struct batch *b) {
  if (!b)
    return;
  for (int i = 0; i < b->ntables; i++) {
    struct batch_table *t = &b->t[i];
    free(t->plen);
    free(t->count);
    free(t->clicks);
    free(t->vals);
    free(t->rows);
    free(t->prefix);
    free(t->newp);
    free(t->drows);
    free(t->grads);
  }
  free(b->labels);
  free(b->groups);
  free(b->xvals);
  free(b->idx);
  free(b->keys);
  free(b->occ);
  free(b->occ_clicks);
  free(b->slots);
  free(b->key_slot);
  free(b);
}

void batch_clear(struct batch *b) {
  for (size_t u = 0; u < b->U; u++)
    b->slots[b->key_slot[u]] = 0;
  b->B = 0;
  b->U = 0;
  b->has_vals = 0;
}

/* The key index of k, inserting it (first-seen order) if new. */
static uint32_t intern(struct batch *b, uint64_t k) {
  size_t s = (size_t)keys_mix64(k) & b->mask;
  for (;;) {
    uint32_t v = b->slots[s];
    if (v == 0) {
      uint32_t u = (uint32_t)b->U++;
      b->slots[s] = u + 1;
      b->key_slot[u] = (uint32_t)s;
      b->keys[u] = k;
      b->occ[u] = 0;
      b->occ_clicks[u] = 0;
      return u;
    }
    if (b->keys[v - 1] == k)
      return v - 1;
    s = (s + 1) & b->mask;
  }
}

void batch_add(struct batch *b, const struct data_example *ex) {
  CHECK(b->B < b->Bmax, "batch full (%d)", b->Bmax);
  CHECK(ex->nkeys <= (uint32_t)b->F, "%u keys, %d fields", ex->nkeys, b->F);
  int r = b->B++;
  b->labels[r] = ex->label;
  b->groups[r] = ex->group;
  int32_t *idx = b->idx + (size_t)r * (size_t)b->F;
  for (uint32_t f = 0; f < ex->nkeys; f++) {
    uint32_t u = intern(b, ex->keys[f]);
    idx[f] = (int32_t)u;
    b->occ[u]++;
    b->occ_clicks[u] += ex->label == 1.0f;
  }
  for (int f = (int)ex->nkeys; f < b->F; f++)
    idx[f] = -1;
  /* values: only once a valued example came; then rows before it get 1s */
  size_t F = (size_t)b->F;
  if (ex->valued && !b->has_vals) {
    for (size_t i = 0; i < (size_t)r * F; i++)
      b->xvals[i] = 1;
    b->has_vals = 1;
  }
  if (b->has_vals) {
    float *x = b->xvals + (size_t)r * F;
    for (size_t f = 0; f < F; f++)
      x[f] = ex->valued && f < ex->nkeys ? ex->vals[f] : 1;
  }
}

void batch_pull_out(struct batch *b, int t, struct ps_rows *out) {
  CHECK(t >= 0 && t < b->ntables, "table %d", t);
  struct batch_table *bt = &b->t[t];
  out->plen = bt->plen;
  out->count = bt->count;
  out->clicks = bt->clicks;
  out->vals = bt->vals;
  out->vals_cap = (size_t)b->Bmax * (size_t)b->F * (size_t)bt->D;
}

void batch_expand(struct batch *b, int t) {
  CHECK(t >= 0 && t < b->ntables, "table %d", t);
  struct batch_table *bt = &b->t[t];
  size_t D = (size_t)bt->D, off = 0;
  for (size_t u = 0; u < b->U; u++) {
    size_t p = bt->plen[u];
    CHECK(p <= D, "key %zu pulled %zu floats, D %zu", u, p, D);
    float *row = bt->rows + u * D;
    if (p)
      memcpy(row, bt->vals + off, p * sizeof(float));
    memset(row + p, 0, (D - p) * sizeof(float));
    off += p;
    bt->prefix[u] = (uint16_t)p;
    bt->newp[u] = 0;
  }
  bt->has_newp = 0;
}

void batch_gather(struct batch *b, int t, float *out) {
  CHECK(t >= 0 && t < b->ntables, "table %d", t);
  struct batch_table *bt = &b->t[t];
  nn_embed_gather(bt->rows, bt->prefix, b->idx, b->has_vals ? b->xvals : NULL,
                  out, b->B, b->F, bt->D, (int)b->U);
}

double batch_scatter(struct batch *b, int t, const float *dout) {
  CHECK(t >= 0 && t < b->ntables, "table %d", t);
  struct batch_table *bt = &b->t[t];
  size_t D = (size_t)bt->D, n = 0;
  memset(bt->drows, 0, b->U * D * sizeof(float));
  nn_embed_scatter(dout, bt->prefix, b->idx, b->has_vals ? b->xvals : NULL,
                   bt->drows, b->B, b->F, bt->D, (int)b->U);
  double sq = 0;
  for (size_t u = 0; u < b->U; u++) {
    size_t p = bt->prefix[u];
    CHECK(p <= D, "key %zu prefix %zu, D %zu", u, p, D);
    const float *g = bt->drows + u * D;
    for (size_t j = 0; j < p; j++) {
      bt->grads[n++] = g[j];
      sq += (double)g[j] * g[j];
    }
  }
  bt->ngrads = n;
  return sq;
}

void batch_scale_grads(struct batch *b, int t, float s) {
  CHECK(t >= 0 && t < b->ntables, "table %d", t);
  struct batch_table *bt = &b->t[t];
  for (size_t i = 0; i < bt->ngrads; i++)
    bt->grads[i] *= s;
}

void batch_push_in(const struct batch *b, int t, uint64_t step,
                   struct ps_grads *g) {
  CHECK(t >= 0 && t < b->ntables, "table %d", t);
  const struct batch_table *bt = &b->t[t];
  memset(g, 0, sizeof(*g));
  g->table = bt->id;
  g->step = step;
  g->n = b->U;
  g->keys = b->keys;
  g->glen = bt->prefix;
  g->grads = bt->grads;
  g->plen = bt->has_newp ? bt->newp : NULL;
  g->count = b->occ;
  g->clicks = b->occ_clicks;
}
