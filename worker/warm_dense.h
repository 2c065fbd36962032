/*
 * warm_dense: the dense half of a warm start (config warm_start.dense): an
 * old run's dense parameters (best/dense.bin, worker/nn/params.h format)
 * loaded into a new model's parameters by tensor name and shape at the
 * start of training. Tensors that match are loaded; the rest (other shape,
 * not in the file) keep their initialisation. The report of what happened
 * goes to the log (one info line) and the JSONL log (a "warm_start"
 * record with the report string and the loaded count).
 *
 * What it is not: the sparse warm start (pserver/warm.h, in the stores).
 */
#ifndef MASKPS_WARM_DENSE_H
#define MASKPS_WARM_DENSE_H

#include <stddef.h>

#include "common/config.h"
#include "common/logger.h"
#include "worker/nn/params.h"

/* With cfg->warm_start.dense set: loads it into p (values only; the Adam
 * state starts fresh) and logs the report to lg (may be NULL). Returns the
 * number of tensors loaded (0 when no file is configured), or -1 with err
 * ("warm_start.dense: <path>: <reason>") when the file cannot be read or is
 * not a params file: a bad path stops the run at startup. */
int warm_dense_load(struct params *p, const struct config *cfg,
                    struct logger *lg, char *err, size_t errlen);

#endif
