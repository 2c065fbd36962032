/*
 * reader: a worker's stream of examples from click-log files.
 *
 * Takes paths and globs (expanded and sorted, so every worker sees the same
 * order), reads them line by line without loading a file, and hands out the
 * share of lines that belongs to this worker: line i (counting from 0 across
 * all files, bad lines included) goes to worker i mod nranks. The share is
 * therefore deterministic and does not depend on timing.
 *
 * A malformed line is skipped and counted; the first `report_first` are
 * reported as "file:line: what is wrong". When more than bad_line_fraction of
 * the lines read so far are bad (checked once at least 100 lines were read,
 * and at the end), reader_next fails with a message saying so: a file in the
 * wrong format aborts the run instead of training on what survived.
 *
 * CSV (READER_CSV, worker/data.h): unless the spec names the columns, the
 * first line of EVERY file is its header: reader_open reads the first
 * file's to compile the schema and checks that every other file's header
 * is the same, so a glob over files of different layouts fails at once
 * ("b.csv:1: header differs from a.csv's: column 2 is 'x', expected 'y'"),
 * not hours into the run. Header lines are not data lines: they are not
 * counted in reader_lines() nor shared among workers, but line numbers in
 * reports are those of the file.
 */
#ifndef MASKPS_READER_H
#define MASKPS_READER_H

#include "worker/data.h"

#include <stddef.h>
#include <stdint.h>

struct config;
struct logger;

enum reader_format { READER_CRITEO, READER_LIBFM, READER_CSV };

struct reader_options {
  enum reader_format format;
  const struct data_csv_spec *csv; /* READER_CSV: the columns' roles;
                                      borrowed, read by reader_open only */
  const char *const *csv_expect;   /* READER_CSV with header rows: the header
                                      every file must have (the training
                                      data's, for valid/test and predict);
                                      NULL = the first file's. Borrowed,
                                      read by reader_open only */
  size_t ncsv_expect;
  const char *const *paths; /* files or globs; borrowed */
  size_t npaths;
  uint32_t rank, nranks;    /* this worker's share of lines */
  double bad_line_fraction; /* abort above this share of bad lines */
  uint32_t report_first;    /* bad lines reported individually */
  struct logger *log;       /* borrowed; NULL = stderr */
};

struct reader;

/* Expands the globs and opens nothing yet. NULL with err set when a path or
 * glob matches no readable file ("train.tsv: no such file"), or nothing was
 * given. Caller owns the result; free with reader_free(). */
struct reader *reader_open(const struct reader_options *o, char *err,
                           size_t errlen);
void reader_free(struct reader *r);

/* Fills o's format and csv spec (into *csv, which then borrows cfg's
 * strings) from the config's data section; the paths, share, bad-line
 * settings and log are left to the caller. */
void reader_options_from_config(struct reader_options *o,
                                struct data_csv_spec *csv,
                                const struct config *cfg);

/* Fields per example: 39 for Criteo; for libFM, the count on the first good
 * line (reader_open reads ahead to learn it; 0 if there is none); for CSV,
 * the schema's feature columns. */
uint32_t reader_nfields(const struct reader *r);

/* Next example of this worker's share into ex (ex->keys must hold
 * reader_nfields() ids, and ex->vals as many floats or be NULL: NULL means
 * binary features only, so a libFM value other than 1 is a bad line and a
 * CSV with value columns is a CHECK). Returns 1, 0 at the end of the data, or
 * -1 on a fatal error (I/O, too many bad lines) with reader_error() set. */
int reader_next(struct reader *r, struct data_example *ex);

/* Starts again from the first line (the next epoch). Counters restart. */
void reader_rewind(struct reader *r);

/* The compiled CSV schema (its names are the columns), or NULL unless
 * READER_CSV. Borrowed from r. */
const struct data_csv_schema *reader_csv_schema(const struct reader *r);

/* Writes r's CSV column names to path, one per line, so that a trained
 * model's data layout can be checked later (maskps predict). Does nothing
 * and returns 0 when r is NULL, not CSV, or named its columns from the
 * config (data.csv_columns: the config has them). -1 with err set on an
 * I/O error. */
int reader_save_columns(const struct reader *r, const char *path, char *err,
                        size_t errlen);

/* Reads what reader_save_columns wrote: 1 with *names (caller frees each
 * and the array) and *n set, 0 when path does not exist, -1 with err set
 * on any other failure. */
int reader_load_columns(const char *path, char ***names, size_t *n, char *err,
                        size_t errlen);

const char *reader_error(const struct reader *r);
uint64_t reader_lines(const struct reader *r);     /* lines of all shares */
uint64_t reader_bad_lines(const struct reader *r); /* bad lines of ours */

/* Progress of the pass, for the time left in epoch 1: the files' total size
 * in bytes when reader_open ran, and the bytes of them read since the last
 * rewind (all shares, bad lines included). reader_bytes_done and
 * reader_lines may be called from another thread while reader_next runs
 * (atomic counters), reader_bytes_total always. */
uint64_t reader_bytes_total(const struct reader *r);
uint64_t reader_bytes_done(const struct reader *r);

#endif
