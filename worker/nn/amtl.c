/* amtl: the AMTL layer, forward and backward side by side; see amtl.h. */
#include "worker/nn/amtl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/config.h"
#include "worker/nn/ops.h"
#include "worker/nn/params.h"

int amtl_num_features(int count_buckets) {
  CHECK(count_buckets >= 0, "count_buckets %d", count_buckets);
  return AMTL_BASE_FEATURES + count_buckets;
}

void amtl_freq_features(const uint32_t *count, const uint32_t *clicks, int B,
                        int F, int count_buckets, float *freq, float *alpha) {
  int S = amtl_num_features(count_buckets);
  for (int f = 0; f < F; f++) {
    // The field's largest log-count in this batch normalises s_1.
    float mx = 0.0f;
    for (int b = 0; b < B; b++) {
      float lc = log1pf((float)count[b * F + f]);
      if (lc > mx)
        mx = lc;
    }
    for (int b = 0; b < B; b++) {
      uint32_t c = count[b * F + f];
      float *s = freq + ((size_t)b * F + f) * S; // (S)
      float lc = log1pf((float)c);
      s[0] = lc;
      s[1] = mx > 0.0f ? lc / mx : 0.0f;
      s[2] = c ? (float)clicks[b * F + f] / (float)c : 0.0f;
      s[3] = c >= 100 ? 1.0f : 0.0f;
      if (count_buckets > 0) {
        float *oh = s + AMTL_BASE_FEATURES;
        memset(oh, 0, sizeof(float) * count_buckets);
        int j = 0;
        if (c) {
          int lg = 0; // floor(log2(c))
          while (lg < 31 && (c >> (lg + 1)))
            lg++;
          j = 1 + lg;
        }
        oh[j < count_buckets ? j : count_buckets - 1] = 1.0f;
      }
      alpha[b * F + f] = s[1];
    }
  }
}

int amtl_options_from_config(struct amtl_options *o, const struct config *cfg,
                             int F, char *err, size_t errlen) {
  const struct config_embedding *e = &cfg->embedding;
  memset(o, 0, sizeof(*o));
  if (F < 1) {
    snprintf(err, errlen, "amtl: %d fields (expected >= 1)", F);
    return -1;
  }
  if (e->amtl_hidden_units.n < 1 || e->amtl_hidden_units.n > AMTL_MAX_LAYERS) {
    snprintf(err, errlen,
             "embedding.amtl_hidden_units: %zu layers (expected 1..%d)",
             e->amtl_hidden_units.n, AMTL_MAX_LAYERS);
    return -1;
  }
  if (e->dim < 1 || e->dim > 65535 || e->amtl_count_buckets < 0 ||
      e->amtl_count_buckets > 4096) {
    snprintf(err, errlen,
             "embedding: dim %lld / amtl_count_buckets %lld out of range",
             (long long)e->dim, (long long)e->amtl_count_buckets);
    return -1;
  }
  o->F = F;
  o->D = (int)e->dim;
  o->S = amtl_num_features((int)e->amtl_count_buckets);
  o->nhidden = (int)e->amtl_hidden_units.n;
  for (int i = 0; i < o->nhidden; i++) {
    int64_t h = e->amtl_hidden_units.v[i];
    if (h < 1 || h > (1 << 20)) {
      snprintf(err, errlen,
               "embedding.amtl_hidden_units[%d]: %lld is out of range", i,
               (long long)h);
      return -1;
    }
    o->hidden[i] = (int)h;
  }
  o->temperature = (float)e->amtl_temperature;
  return 0;
}

static float *buf(size_t n) {
  return xaligned(n * sizeof(float));
}

void amtl_free(struct amtl *a) {
  if (!a)
    return;
  for (int w = 0; w < 2; w++)
    for (int i = 0; i < a->n; i++) {
      free(a->twin[w].out[i]);
      free(a->twin[w].dout[i]);
      free(a->twin[w].dpre[i]);
    }
  free(a->E);
  free(a->alpha);
  free(a->sf);
  free(a->h);
  free(a->t);
  free(a->onehot);
  free(a->m);
  free(a->k);
  free(a->dm);
  free(a->dthat);
  free(a->dh);
  free(a);
}

struct amtl *amtl_new(const struct amtl_options *o, int Bmax,
                      struct params *params, char *err, size_t errlen) {
  CHECK(params && params->values == NULL,
        "amtl_new needs a params set that is not allocated yet");
  if (o->F < 1 || o->D < 1 || o->D > 65535 || o->S < 1 || Bmax < 1) {
    snprintf(err, errlen,
             "amtl: needs F >= 1, 1 <= D <= 65535, S >= 1 features and "
             "Bmax >= 1 (got F %d, D %d, S %d, Bmax %d)",
             o->F, o->D, o->S, Bmax);
    return NULL;
  }
  if (o->nhidden < 1 || o->nhidden > AMTL_MAX_LAYERS) {
    snprintf(err, errlen,
             "amtl: %d hidden layers in the twin nets (expected 1..%d)",
             o->nhidden, AMTL_MAX_LAYERS);
    return NULL;
  }
  for (int i = 0; i < o->nhidden; i++)
    if (o->hidden[i] < 1) {
      snprintf(err, errlen, "amtl: twin hidden layer %d has width %d", i,
               o->hidden[i]);
      return NULL;
    }
  if (!(o->temperature > 0) || !isfinite(o->temperature)) {
    snprintf(err, errlen, "amtl: temperature %g (expected > 0)",
             (double)o->temperature);
    return NULL;
  }
  struct amtl *a = xcalloc(1, sizeof(*a));
  int F = o->F, D = o->D, S = o->S;
  size_t BF = (size_t)Bmax * F;
  a->p = params;
  a->F = F;
  a->D = D;
  a->S = S;
  a->Bmax = Bmax;
  a->tau = o->temperature;
  a->n = o->nhidden + 1;
  for (int i = 0; i < a->n; i++)
    a->width[i] = i < o->nhidden ? o->hidden[i] : D;
  static const char *const names[2] = {"amtl.h", "amtl.l"};
  for (int w = 0; w < 2; w++) {
    struct amtl_twin *tw = &a->twin[w];
    int I = S;
    for (int i = 0; i < a->n; i++) {
      int O = a->width[i];
      char nm[PARAMS_NAME_MAX + 1];
      snprintf(nm, sizeof(nm), "%s.%d.weight", names[w], i);
      tw->wid[i] = params_add(params, nm, F, O, I, PARAMS_XAVIER_NORMAL, 1.0f);
      snprintf(nm, sizeof(nm), "%s.%d.bias", names[w], i);
      tw->bid[i] = params_add(params, nm, 1, F, O, PARAMS_ZEROS, 0.0f);
      tw->out[i] = buf(BF * O);
      tw->dout[i] = buf(BF * O);
      tw->dpre[i] = buf(BF * O);
      I = O;
    }
  }
  a->E = buf(BF * D);
  a->alpha = buf(BF);
  a->sf = buf(BF * S);
  a->h = buf(BF * D);
  a->t = buf(BF * D);
  a->onehot = buf(BF * D);
  a->m = buf(BF * D);
  a->k = xaligned(BF * sizeof(int32_t));
  a->dm = buf(BF * D);
  a->dthat = buf(BF * D);
  a->dh = buf(BF * D);
  return a;
}

/* Twin net tw on the field-major features a->sf: tw->out[n-1] (F, Bmax, D)
 * holds the D prefix logits of each (f, b). Field f's layers are the
 * slices W + f*O*I, b + f*O of the stacked parameters. */
static void twin_forward(struct amtl *a, struct amtl_twin *tw, int B) {
  const struct params *p = a->p;
  for (int f = 0; f < a->F; f++) {
    const float *x = a->sf + (size_t)f * a->Bmax * a->S; // (B, S)
    int I = a->S;
    for (int i = 0; i < a->n; i++) {
      int O = a->width[i];
      float *y = tw->out[i] + (size_t)f * a->Bmax * O; // (B, O)
      nn_linear_forward(x, params_value(p, tw->wid[i]) + (size_t)f * O * I,
                        params_value(p, tw->bid[i]) + (size_t)f * O, y, B, I,
                        O);
      if (i < a->n - 1)
        nn_relu_forward(y, y, (size_t)B * O);
      x = y;
      I = O;
    }
  }
}

/* From tw->dout[n-1] (F, Bmax, D): the twin's parameter gradients (the
 * features are data: no gradient for them). */
static void twin_backward(struct amtl *a, struct amtl_twin *tw, int B) {
  const struct params *p = a->p;
  for (int f = 0; f < a->F; f++) {
    for (int i = a->n - 1; i >= 0; i--) {
      int O = a->width[i], I = i ? a->width[i - 1] : a->S;
      size_t fo = (size_t)f * a->Bmax * O;
      const float *g = tw->dout[i] + fo; // dLoss/d out, (B, O)
      if (i < a->n - 1) {                // through the ReLU
        memset(tw->dpre[i] + fo, 0, (size_t)B * O * sizeof(float));
        nn_relu_backward(tw->out[i] + fo, g, tw->dpre[i] + fo, (size_t)B * O);
        g = tw->dpre[i] + fo;
      }
      size_t fi = (size_t)f * a->Bmax * I;
      const float *x = i ? tw->out[i - 1] + fi : a->sf + fi;
      float *dx = NULL;
      if (i) {
        dx = tw->dout[i - 1] + fi;
        memset(dx, 0, (size_t)B * I * sizeof(float));
      }
      nn_linear_backward(x, params_value(p, tw->wid[i]) + (size_t)f * O * I, g,
                         dx, params_grad(p, tw->wid[i]) + (size_t)f * O * I,
                         params_grad(p, tw->bid[i]) + (size_t)f * O, B, I, O);
    }
  }
}

void amtl_forward(struct amtl *a, const float *E, const float *freq,
                  const float *alpha, float *Ehat, uint16_t *prefix, int B) {
  CHECK(B >= 1 && B <= a->Bmax, "B %d Bmax %d", B, a->Bmax);
  CHECK(Ehat != E, "amtl_forward: Ehat must not alias E");
  int F = a->F, D = a->D, S = a->S, Bm = a->Bmax;
  size_t N = (size_t)B * F; // (b, f) rows
  memcpy(a->E, E, N * D * sizeof(float));
  memcpy(a->alpha, alpha, N * sizeof(float));
  for (int b = 0; b < B; b++) // (B, F, S) -> (F, Bmax, S)
    for (int f = 0; f < F; f++)
      memcpy(a->sf + ((size_t)f * Bm + b) * S, freq + ((size_t)b * F + f) * S,
             S * sizeof(float));
  twin_forward(a, &a->twin[0], B);
  twin_forward(a, &a->twin[1], B);
  // h = alpha hAML + (1 - alpha) lAML, back to (B, F, D).
  const float *hA = a->twin[0].out[a->n - 1], *lA = a->twin[1].out[a->n - 1];
  for (int b = 0; b < B; b++)
    for (int f = 0; f < F; f++) {
      float al = alpha[b * F + f];
      const float *hr = hA + ((size_t)f * Bm + b) * D;
      const float *lr = lA + ((size_t)f * Bm + b) * D;
      float *y = a->h + ((size_t)b * F + f) * D;
      for (int d = 0; d < D; d++)
        y[d] = al * hr[d] + (1.0f - al) * lr[d];
    }
  nn_softmax_forward(a->h, a->t, (int)N, D, 1, a->tau); // (B, F, D)
  nn_onehot_argmax(a->t, a->onehot, (int)N, D);         // t^'s value
  nn_prefix_mask_forward(a->onehot, a->m, (int)N, D);   // m = t^ M
  // Ê = E * m with m in {0, 1}, written as a select so the dims beyond a
  // prefix are +0 whatever the sign of e (E * 0 would give -0 for e < 0):
  // Ê is then bit for bit what a row stored with only its prefix gives.
  for (size_t i = 0; i < N * D; i++)
    Ehat[i] = a->m[i] != 0.0f ? E[i] : 0.0f;
  for (size_t r = 0; r < N; r++) {
    const float *oh = a->onehot + r * D;
    int k = 0;
    while (oh[k] == 0.0f)
      k++;
    a->k[r] = k;
    if (prefix)
      prefix[r] = (uint16_t)(k + 1);
  }
}

void amtl_backward(struct amtl *a, const float *dEhat, float *dE, int B) {
  CHECK(B >= 1 && B <= a->Bmax, "B %d Bmax %d", B, a->Bmax);
  int F = a->F, D = a->D, Bm = a->Bmax;
  size_t N = (size_t)B * F;
  // Ê = E * m: dE += m dÊ (0 beyond the prefix), dm = E dÊ.
  memset(a->dm, 0, N * D * sizeof(float));
  nn_mul_backward(a->E, a->m, dEhat, dE, a->dm, N * D);
  // m = t^ M: dt^_i = sum_{j <= i} dm_j; straight through: dt = dt^.
  memset(a->dthat, 0, N * D * sizeof(float));
  nn_prefix_mask_backward(a->dm, a->dthat, (int)N, D);
  memset(a->dh, 0, N * D * sizeof(float));
  nn_softmax_backward(a->t, a->dthat, a->dh, (int)N, D, 1, a->tau);
  // h = alpha hAML + (1 - alpha) lAML, into the field-major twin outputs.
  float *dhA = a->twin[0].dout[a->n - 1], *dlA = a->twin[1].dout[a->n - 1];
  for (int b = 0; b < B; b++)
    for (int f = 0; f < F; f++) {
      float al = a->alpha[b * F + f];
      const float *g = a->dh + ((size_t)b * F + f) * D;
      float *gh = dhA + ((size_t)f * Bm + b) * D;
      float *gl = dlA + ((size_t)f * Bm + b) * D;
      for (int d = 0; d < D; d++) {
        gh[d] = al * g[d];
        gl[d] = (1.0f - al) * g[d];
      }
    }
  twin_backward(a, &a->twin[0], B);
  twin_backward(a, &a->twin[1], B);
}

double amtl_flops(const struct amtl *a) {
  double f = 0;
  int I = a->S;
  for (int i = 0; i < a->n; i++) {
    f += (double)I * a->width[i];
    I = a->width[i];
  }
  // Two twins per field, then mix, softmax and mask of D entries each.
  return a->F * (2.0 * f + 4.0 * a->D);
}
