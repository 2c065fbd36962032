/*
 * eta: the time left in a training run, for the progress line.
 *
 * The estimate is elapsed × (1 − f) / f, where f is the fraction of the run
 * done: it assumes the rate so far holds and every epoch costs the same.
 *
 * f comes from steps once the steps per epoch are known (from epoch 2 on):
 * step / (epochs × steps per epoch). In epoch 1 they are not, and f comes
 * from the input instead: the share of the epoch's input the reader has
 * consumed, in bytes of the files or, with data.max_lines, in lines of the
 * budget (whichever ends the epoch first, i.e. the larger share), over the
 * whole run (epochs × one epoch's input). The reader runs ahead of training
 * by the prefetched batch and the shuffle buffer, so that share is scaled
 * by examples trained / examples read. With train.max_steps, step /
 * max_steps counts too: the run ends at whichever limit comes first.
 *
 * Pure arithmetic: no clock, no reader; the trainer fills the struct.
 */
#ifndef MASKPS_ETA_H
#define MASKPS_ETA_H

#include <stdint.h>

struct eta_progress {
  double elapsed_s;          /* training seconds so far, evaluations not */
  int epoch, epochs;         /* the current epoch (from 1), train.epochs */
  uint64_t step;             /* steps done in the run */
  uint64_t max_steps;        /* train.max_steps; 0 = none */
  uint64_t steps_per_epoch;  /* 0 while unknown (epoch 1) */
  uint64_t bytes_done;       /* this epoch: bytes of the files read */
  uint64_t bytes_total;      /* the files' sizes; 0 = unknown */
  uint64_t lines_done;       /* this epoch: lines read (all shares) */
  uint64_t max_lines;        /* data.max_lines; 0 = none */
  uint64_t examples_read;    /* this epoch: taken from the reader */
  uint64_t examples_trained; /* this epoch: trained on (<= read) */
};

/* The fraction of the run done, in [0, 1]; 0 when nothing tells yet. */
double eta_fraction(const struct eta_progress *p);

/* Seconds left, or -1 when there is nothing to estimate from yet (no
 * step, no input consumed, or no time elapsed). */
double eta_seconds(const struct eta_progress *p);

#endif
