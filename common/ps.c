/* ps: the dispatching wrappers and the dense sharding rule (see ps.h). */
#include "common/ps.h"

#include "common/check.h"

#include <stdlib.h>

long ps_pull(struct ps *ps, uint32_t table, uint64_t step, size_t n,
             const uint64_t *keys, const struct ps_rows *out, char *err,
             size_t errlen) {
  return ps->ops->pull(ps->ctx, table, step, n, keys, out, err, errlen);
}

int ps_pull_start(struct ps *ps, uint32_t table, uint64_t step, size_t n,
                  const uint64_t *keys, const struct ps_rows *out, char *err,
                  size_t errlen) {
  return ps->ops->pull_start(ps->ctx, table, step, n, keys, out, err, errlen);
}

long ps_pull_finish(struct ps *ps, int handle, char *err, size_t errlen) {
  return ps->ops->pull_finish(ps->ctx, handle, err, errlen);
}

void ps_pull_abandon(struct ps *ps, int handle) {
  ps->ops->pull_abandon(ps->ctx, handle);
}

int ps_push(struct ps *ps, const struct ps_grads *g, char *err, size_t errlen) {
  return ps->ops->push(ps->ctx, g, err, errlen);
}

int ps_pull_dense(struct ps *ps, uint64_t step, size_t off, size_t len,
                  float *out, char *err, size_t errlen) {
  return ps->ops->pull_dense(ps->ctx, step, off, len, out, err, errlen);
}

int ps_push_dense(struct ps *ps, uint64_t step, size_t off, size_t len,
                  const float *grads, char *err, size_t errlen) {
  return ps->ops->push_dense(ps->ctx, step, off, len, grads, err, errlen);
}

int ps_set_dense(struct ps *ps, size_t off, size_t len, const float *values,
                 char *err, size_t errlen) {
  return ps->ops->set_dense(ps->ctx, off, len, values, err, errlen);
}

int ps_set_lr_scale(struct ps *ps, float scale, char *err, size_t errlen) {
  return ps->ops->set_lr_scale(ps->ctx, scale, err, errlen);
}

int ps_barrier(struct ps *ps, uint64_t step, char *err, size_t errlen) {
  return ps->ops->barrier(ps->ctx, step, err, errlen);
}

int ps_checkpoint(struct ps *ps, uint64_t step, const char *dir, char *err,
                  size_t errlen) {
  return ps->ops->checkpoint(ps->ctx, step, dir, err, errlen);
}

void ps_free(struct ps *ps) {
  if (!ps)
    return;
  ps->ops->free(ps->ctx);
  free(ps);
}

const char *ps_name(const struct ps *ps) {
  return ps->ops->name;
}

void ps_dense_block(uint64_t total, uint32_t nshards, uint32_t shard,
                    uint64_t *off, uint64_t *len) {
  CHECK(nshards >= 1 && shard < nshards, "shard %u of %u", shard, nshards);
  uint64_t base = total / nshards, extra = total % nshards;
  *off = shard * base + (shard < extra ? shard : extra);
  *len = base + (shard < extra ? 1 : 0);
}
