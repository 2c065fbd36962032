/* summary: see summary.h. */
#include "launcher/summary.h"

#include "common/logger.h"
#include "worker/train.h"

void summary_print(const struct train_result *res, FILE *out) {
  fprintf(out, "trained %llu steps (%d epochs, %.0f samples/s)%s\n",
          (unsigned long long)res->steps, res->epochs, res->samples_per_s,
          res->interrupted     ? ", interrupted"
          : res->stopped_early ? ", stopped early"
                               : "");
  double total = res->read_s + res->pull_s + res->compute_s + res->push_s;
  if (total > 0)
    fprintf(out, "time: read %.0f%%, pull %.0f%%, model %.0f%%, push %.0f%%\n",
            100 * res->read_s / total, 100 * res->pull_s / total,
            100 * res->compute_s / total, 100 * res->push_s / total);
  if (res->best_epoch == 0)
    fprintf(out, "no evaluation chose a best state (%s): no test metrics\n",
            res->interrupted ? "interrupted before one finished"
                             : "the validation AUC was never a number");
  else if (res->has_valid)
    fprintf(out, "best validation: epoch %d, AUC %.4f, logloss %.4f\n",
            res->best_epoch, res->valid.auc, res->valid.logloss);
  if (res->best_epoch > 0 && res->has_test)
    fprintf(out, "test AUC %.4f  logloss %.4f\n", res->test.auc,
            res->test.logloss);
  else if (!res->has_test)
    fprintf(out,
            "no test data (data.test or data.split_test): no test metrics\n");
}

void summary_storage(uint64_t rows, uint64_t value_bytes, double mean_p,
                     long long dim, struct logger *lg, uint64_t step,
                     FILE *out) {
  if (rows == 0)
    return;
  double per_key = (double)value_bytes / (double)rows;
  /* a full row: 32-byte header + D values + the optimizer's D slots each */
  double full = per_key;
  if (mean_p > 0)
    full = 32 + (per_key - 32) * (double)dim / mean_p;
  fprintf(out,
          "embeddings: %llu rows, %.1f bytes/key (mean prefix %.2f of %lld; "
          "fixed D: %.1f bytes/key, saving %.1f%%)\n",
          (unsigned long long)rows, per_key, mean_p, dim, full,
          full > 0 ? 100 * (1 - per_key / full) : 0.0);
  logger_record(lg, step, "storage", "rows", (double)rows, "bytes_per_key",
                per_key, "fixed_bytes_per_key", full, "mean_prefix", mean_p,
                NULL);
}
