#include "pserver/sparse_opt.h"

#include "common/check.h"

#include <math.h>
#include <stdio.h>

void sparse_opt_defaults(struct sparse_opt *o, enum row_opt kind) {
  *o = (struct sparse_opt){
      .kind = kind,
      .lr = kind == ROW_OPT_ADAGRAD || kind == ROW_OPT_FTRL ? 0.05f : 0.01f,
      .beta1 = 0.9f,
      .beta2 = 0.999f,
      .eps = kind == ROW_OPT_ADAGRAD ? 1e-10f : 1e-8f,
      .adagrad_init = 0.1f,
      .ftrl_beta = 1.0f,
  };
}

static int bad(char *err, size_t errlen, const char *what, double v,
               const char *want) {
  snprintf(err, errlen, "optimizer: %s = %g, want %s", what, v, want);
  return -1;
}

int sparse_opt_validate(const struct sparse_opt *o, char *err, size_t errlen) {
  if ((unsigned)o->kind >= ROW_OPT_COUNT_) {
    snprintf(err, errlen, "optimizer: unknown kind %d", (int)o->kind);
    return -1;
  }
  if (!(o->lr >= 0 && isfinite(o->lr)))
    return bad(err, errlen, "lr", o->lr, ">= 0 and finite");
  if (!(o->beta1 >= 0 && o->beta1 < 1))
    return bad(err, errlen, "beta1", o->beta1, "in [0, 1)");
  if (!(o->beta2 >= 0 && o->beta2 < 1))
    return bad(err, errlen, "beta2", o->beta2, "in [0, 1)");
  if (!(o->eps >= 0 && isfinite(o->eps)))
    return bad(err, errlen, "eps", o->eps, ">= 0 and finite");
  if (!(o->adagrad_init >= 0 && isfinite(o->adagrad_init)))
    return bad(err, errlen, "adagrad_init", o->adagrad_init, ">= 0");
  if (o->kind == ROW_OPT_ADAGRAD && o->adagrad_init == 0 && o->eps == 0)
    return bad(err, errlen, "eps", 0, "> 0 when adagrad_init is 0");
  if (!(o->ftrl_beta >= 0 && isfinite(o->ftrl_beta)))
    return bad(err, errlen, "ftrl_beta", o->ftrl_beta, ">= 0");
  if (o->kind == ROW_OPT_FTRL && o->lr == 0)
    return bad(err, errlen, "lr (ftrl alpha)", 0, "> 0");
  if (!(o->l1 >= 0 && isfinite(o->l1)))
    return bad(err, errlen, "l1", o->l1, ">= 0");
  if (!(o->l2 >= 0 && isfinite(o->l2)))
    return bad(err, errlen, "l2", o->l2, ">= 0");
  if (!(o->weight_decay >= 0 && o->lr * o->weight_decay < 1))
    return bad(err, errlen, "weight_decay", o->weight_decay,
               ">= 0 with lr * weight_decay < 1");
  if (o->kind == ROW_OPT_FTRL && o->weight_decay > 0)
    return bad(err, errlen, "weight_decay", o->weight_decay,
               "0 with ftrl (use its l1/l2)");
  if (!(o->freq_l2 >= 0 && isfinite(o->freq_l2)))
    return bad(err, errlen, "freq_l2", o->freq_l2, ">= 0");
  return 0;
}

void sparse_opt_init_state(const struct sparse_opt *o, float *state, unsigned p,
                           unsigned from, unsigned to) {
  unsigned slots = row_slots(o->kind);
  for (unsigned s = 0; s < slots; s++)
    for (unsigned j = from; j < to; j++)
      state[s * p + j] =
          o->kind == ROW_OPT_ADAGRAD && s == 0 ? o->adagrad_init : 0.0f;
}

/* The multiplicative decay of step 2 for this update (1.0 if none). */
static double decay_factor(const struct sparse_opt *o, const struct row *r,
                           uint64_t step) {
  if (o->weight_decay <= 0 || o->kind == ROW_OPT_FTRL)
    return 1.0;
  uint64_t k = 1;
  if (o->lazy_decay && r->opt_step > 0)
    k = step > r->last_step ? step - r->last_step : 0;
  return pow(1.0 - (double)o->lr * o->weight_decay, (double)k);
}

void sparse_opt_apply(const struct sparse_opt *o, struct row *r, const float *g,
                      uint64_t step) {
  CHECK(r->opt == o->kind, "row opt %u, table opt %u", r->opt, o->kind);
  const unsigned p = r->p;
  float *w = r->values, *s0 = r->state, *s1 = r->state + p;
  const double decay = decay_factor(o, r, step);
  const double freq = o->freq_l2 > 0 && r->count > 0
                          ? (double)o->freq_l2 / (double)r->count
                          : 0.0;
  const double lr = o->lr;
  if (r->opt_step < UINT32_MAX)
    r->opt_step++;
  /* Adam's bias corrections, once per row (double: 1 - 0.999^s loses most
   * of its digits in float for small s). */
  const double bc1 = 1.0 - pow(o->beta1, (double)r->opt_step);
  const double bc2 = 1.0 - pow(o->beta2, (double)r->opt_step);
  for (unsigned j = 0; j < p; j++) {
    double wj = w[j];
    const double gj = g[j] + freq * wj;
    wj *= decay;
    switch (o->kind) {
    case ROW_OPT_NONE:
      wj = w[j];
      break;
    case ROW_OPT_SGD:
      wj -= lr * gj;
      break;
    case ROW_OPT_ADAGRAD: {
      const double a = (double)s0[j] + gj * gj;
      s0[j] = (float)a;
      wj -= lr * gj / (sqrt(a) + o->eps);
      break;
    }
    case ROW_OPT_ADAM: {
      const double m = o->beta1 * (double)s0[j] + (1.0 - o->beta1) * gj;
      const double v = o->beta2 * (double)s1[j] + (1.0 - o->beta2) * gj * gj;
      s0[j] = (float)m;
      s1[j] = (float)v;
      wj -= lr * (m / bc1) / (sqrt(v / bc2) + o->eps);
      break;
    }
    case ROW_OPT_FTRL: {
      const double n = s1[j], n2 = n + gj * gj;
      const double sigma = (sqrt(n2) - sqrt(n)) / lr;
      const double z = (double)s0[j] + gj - sigma * wj;
      s0[j] = (float)z;
      s1[j] = (float)n2;
      if (fabs(z) <= o->l1)
        wj = 0.0;
      else
        wj = -(z - copysign(o->l1, z)) /
             ((o->ftrl_beta + sqrt(n2)) / lr + o->l2);
      break;
    }
    default:
      CHECK(0, "opt %u", o->kind);
    }
    w[j] = (float)wj;
  }
  if (step > r->last_step)
    r->last_step = step;
}

void sparse_opt_adam_dense(const struct sparse_opt *o, float *w, float *m,
                           float *v, uint32_t *t, const float *g, size_t n) {
  const double decay =
      o->weight_decay > 0 ? 1.0 - (double)o->lr * o->weight_decay : 1.0;
  /* Entries of one push nearly always share a step count: recompute the
   * bias corrections only when it changes. */
  uint32_t last_t = 0;
  double bc1 = 0, bc2 = 0;
  for (size_t i = 0; i < n; i++) {
    if (t[i] < UINT32_MAX)
      t[i]++;
    if (t[i] != last_t) {
      last_t = t[i];
      bc1 = 1.0 - pow(o->beta1, (double)last_t);
      bc2 = 1.0 - pow(o->beta2, (double)last_t);
    }
    const double gi = g[i];
    const double mi = o->beta1 * (double)m[i] + (1.0 - o->beta1) * gi;
    const double vi = o->beta2 * (double)v[i] + (1.0 - o->beta2) * gi * gi;
    m[i] = (float)mi;
    v[i] = (float)vi;
    w[i] = (float)((double)w[i] * decay -
                   o->lr * (mi / bc1) / (sqrt(vi / bc2) + o->eps));
  }
}
