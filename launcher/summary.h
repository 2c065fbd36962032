/*
 * summary: the lines `maskps train` prints at the end of a run, shared by
 * embedded mode (launcher/main_maskps.c) and the rank-0 worker of a local
 * cluster (launcher/main_worker.c), so both modes print the same summary.
 * Not a library of the tree: compiled into those two programs only.
 */
#ifndef MASKPS_SUMMARY_H
#define MASKPS_SUMMARY_H

#include <stdint.h>
#include <stdio.h>

struct logger;
struct train_result;

/* Steps, samples/s, time split, best validation, test metrics (or why
 * there are none) to out. */
void summary_print(const struct train_result *res, FILE *out);

/* The AMTL storage line of table 0: rows, bytes per key against a fixed-D
 * table, saving; and a "storage" record at `step` on lg (may be NULL).
 * value_bytes are the stored value bytes of all rows, mean_p their mean
 * prefix length, dim the configured D. Prints nothing when rows == 0. */
void summary_storage(uint64_t rows, uint64_t value_bytes, double mean_p,
                     long long dim, struct logger *lg, uint64_t step,
                     FILE *out);

#endif
