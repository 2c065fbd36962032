#include "worker/eta.h"

static double ratio(uint64_t a, uint64_t b) {
  return b ? (double)a / (double)b : 0;
}

static double max2(double a, double b) {
  return a > b ? a : b;
}

/* The share of the current epoch done, from its input (epoch 1). */
static double epoch_fraction(const struct eta_progress *p) {
  double read = ratio(p->bytes_done, p->bytes_total);
  if (p->max_lines)
    read = max2(read, ratio(p->lines_done, p->max_lines));
  if (read > 1) /* a file grew while we read it */
    read = 1;
  if (p->examples_read == 0)
    return 0;
  double trained = ratio(p->examples_trained, p->examples_read);
  return read * (trained < 1 ? trained : 1);
}

double eta_fraction(const struct eta_progress *p) {
  double f = 0;
  if (p->epochs <= 0)
    return 0;
  if (p->steps_per_epoch)
    f = ratio(p->step, p->steps_per_epoch * (uint64_t)p->epochs);
  else
    f = ((double)(p->epoch - 1) + epoch_fraction(p)) / (double)p->epochs;
  if (p->max_steps)
    f = max2(f, ratio(p->step, p->max_steps));
  return f < 1 ? f : 1;
}

double eta_seconds(const struct eta_progress *p) {
  double f = eta_fraction(p);
  if (!(f > 0) || !(p->elapsed_s > 0))
    return -1;
  return p->elapsed_s * (1 - f) / f;
}
