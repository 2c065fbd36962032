/*
 * shuffle: a local shuffle of a stream of examples (data.shuffle_buffer).
 *
 * A buffer of N examples: the first N are held; from then on each new one
 * takes the place of a held example chosen uniformly at random, which is
 * handed out; at the end of the stream the held ones come out in random
 * order. Every example comes out exactly once, at most N positions earlier
 * than it went in, and is held while N new ones arrive on average (more
 * than N·ln(1/p) with probability about p). So this mixes neighbouring
 * lines (a day's traffic, one user's burst), not the whole file: for a full
 * shuffle, shuffle the files themselves. With N = 1 the order is the input
 * order.
 *
 * The buffer owns copies of what it holds: the scalars of struct
 * data_example and the first nkeys entries of each per-field array (keys,
 * and any array data_example grows: one line in shuffle.c). The order is a
 * function of the seed alone (shuffle_seed: train.seed, the epoch and the
 * worker's rank), so a run is reproducible and each epoch differs.
 *
 * Memory: shuffle_bytes(N, F), about N × (12·F + 52) bytes for F fields
 * (keys and values; Criteo, 39 fields: 520 MB per million examples).
 *
 * Not thread-safe: one thread uses a buffer at a time.
 */
#ifndef MASKPS_SHUFFLE_H
#define MASKPS_SHUFFLE_H

#include "worker/data.h"

#include <stddef.h>
#include <stdint.h>

struct shuffle;

/* A buffer of capacity examples (>= 1) of at most nfields fields (>= 1),
 * empty, seeded with 0 until shuffle_reset. Aborts (xmalloc) if the memory
 * is not there: check shuffle_check first. Caller owns the result; free
 * with shuffle_free(). */
struct shuffle *shuffle_new(size_t capacity, uint32_t nfields);
void shuffle_free(struct shuffle *s);

/* Empties the buffer (anything held is dropped) and restarts its random
 * stream from seed: call at the start of every pass. */
void shuffle_reset(struct shuffle *s, uint64_t seed);

/* Takes a copy of in (in->nkeys <= nfields). When the buffer was full,
 * first writes a uniformly chosen held example to out and returns 1;
 * otherwise returns 0 and out is untouched. Examples come out as they went
 * in: the scalars, and each array's first nkeys entries copied into out's
 * own array (room for nfields entries); an array that went in NULL comes
 * out NULL (out's pointer is overwritten). in and out may be the same
 * example. */
int shuffle_add(struct shuffle *s, const struct data_example *in,
                struct data_example *out);

/* At the end of the stream: writes a uniformly chosen held example to out
 * as shuffle_add does (removing it) and returns 1, or 0 when the buffer is
 * empty. */
int shuffle_drain(struct shuffle *s, struct data_example *out);

/* Examples held now. */
size_t shuffle_held(const struct shuffle *s);

/* The seed of one pass: a hash of the run's seed (train.seed), the epoch
 * (from 1) and the worker's rank, so epochs and workers differ. Why
 * train.seed and not data.split_seed: the split must stay put when runs
 * vary the seed (mean of 3 seeds), while the order of the training
 * examples is part of the run's randomness, like the initial weights. */
uint64_t shuffle_seed(uint64_t train_seed, uint64_t epoch, uint32_t rank);

/* Bytes a buffer of capacity examples of nfields fields allocates. */
uint64_t shuffle_bytes(uint64_t capacity, uint32_t nfields);

/* 0 if a buffer of capacity examples of nfields fields fits in
 * limit_bytes; otherwise -1 with the sizes in err. */
int shuffle_check(uint64_t capacity, uint32_t nfields, uint64_t limit_bytes,
                  char *err, size_t errlen);

/* The limit train_new uses: half of this machine's physical memory (a
 * worker also holds batches, the model and, embedded, the store's cache),
 * or UINT64_MAX when the system does not say. */
uint64_t shuffle_memory_limit(void);

#endif
