/*
 * data: turning click-log lines into examples (label + one feature id per
 * field). This first part parses Criteo TSV; the other formats (libFM, CSV
 * with a schema) and the file readers build on the same example struct.
 *
 * Criteo TSV: label \t I1..I13 \t C1..C26, 40 columns. Label is 0 or 1;
 * I-fields are integers or empty; C-fields are tokens (8 hex digits in the
 * real logs) or empty. Numeric fields are bucketised by the Criteo rule
 * (keys_criteo_bucket; missing counts as 0, as FuxiCTR/BARS do, so results
 * compare with theirs) and then hashed as the token "<bucket>". An empty
 * C-field maps to the field's missing id. Field f's feature id is
 * keys_feature_id(f, token): fields 0..12 are I1..I13, 13..38 are C1..C26.
 *
 * libFM lines ("label idx:val ...") give one field per position.
 *
 * Nothing is coerced silently: a line with the wrong column count, a label
 * other than 0/1, or an I-field that is not an integer is rejected with the
 * reason (the caller adds file:line).
 */
#ifndef MASKPS_DATA_H
#define MASKPS_DATA_H

#include <stddef.h>
#include <stdint.h>

#define DATA_CRITEO_NUMERIC 13
#define DATA_CRITEO_CATEGORICAL 26
#define DATA_CRITEO_FIELDS 39

struct data_example {
  float label;    /* 0 or 1 */
  uint64_t group; /* group id for gAUC; 0 when the format has none */
  uint32_t nkeys; /* number of fields filled */
  uint64_t *keys; /* [nkeys] feature ids, field order; caller-owned */
};

/* Parses one Criteo line (len bytes, without or with a trailing '\n' or
 * "\r\n"). ex->keys must hold DATA_CRITEO_FIELDS ids. Returns 0, or -1 with
 * the reason in why ("column 5 (I4): 'x1' is not an integer"). */
int data_parse_criteo(const char *line, size_t len, struct data_example *ex,
                      char *why, size_t whylen);

/* Parses one libFM/libSVM line: "label idx:val idx:val ...". Label is 0/1 or
 * -1/+1 (mapped to 0/1). The k-th feature on the line is field k, and its
 * id is keys_feature_id(k, "<idx>"). Only binary features are supported:
 * a value other than 1 is an error, not silently dropped. ex->keys must hold
 * maxkeys ids; a line with a different number of features than `nfields`
 * is rejected (pass 0 to accept any count up to maxkeys). */
int data_parse_libfm(const char *line, size_t len, uint32_t nfields,
                     uint32_t maxkeys, struct data_example *ex, char *why,
                     size_t whylen);

#endif
