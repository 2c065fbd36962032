/*
 * data: turning click-log lines into examples (label + one feature id per
 * field, and optionally a value per field). Three formats: Criteo TSV,
 * libFM, and CSV/TSV with a schema from the config; the file readers
 * (worker/reader.h) build on the same example struct.
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
 * Values: a field's embedding row enters the model multiplied by the
 * field's value (1 for a categorical feature). Criteo lines are all 1;
 * libFM values and CSV "value" columns may be any finite number.
 *
 * CSV (data_parse_csv against a compiled schema, data_csv_schema_new):
 * the columns are named by a header row (or by data.csv_columns); each has
 * one role:
 *   label        "0" or "1", nothing else;
 *   group        the gAUC group id: any non-empty text, hashed (not a
 *                feature; empty is an error);
 *   numeric      a decimal number, bucketised by the Criteo rule and hashed
 *                as the token "<bucket>", like Criteo's I-fields; empty =
 *                the field's missing id (unlike Criteo, where missing
 *                counts as 0 for compatibility with FuxiCTR);
 *   value        a decimal number x: the field has ONE row (the token
 *                "#value") and the model sees x times it; empty = the
 *                field's missing id with value 1;
 *   ignore       skipped;
 *   categorical  every other column: its text hashed as the token; empty =
 *                the field's missing id.
 * Feature columns become fields 0..F-1 in column order. Numbers are
 * decimal (strtod syntax without hex, inf or nan, no surrounding spaces);
 * a number that is not finite is an error.
 * Quoting (RFC 4180, one physical line per record): a field that starts
 * with a double quote is quoted; inside it the delimiter is text and ""
 * is one quote; the closing quote must end the field. A quote inside an
 * unquoted field, text after a closing quote, and an unterminated quote
 * (a line break inside quotes is not supported) are errors, never guessed
 * at. A UTF-8 byte order mark before a header is dropped.
 *
 * Nothing is coerced silently: a line with the wrong column count, a label
 * other than 0/1, or an I-field that is not an integer is rejected with the
 * reason (the caller adds file:line).
 */
#ifndef MASKPS_DATA_H
#define MASKPS_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DATA_CRITEO_NUMERIC 13
#define DATA_CRITEO_CATEGORICAL 26
#define DATA_CRITEO_FIELDS 39
#define DATA_CSV_MAX_COLUMNS 1024

struct data_example {
  float label;    /* 0 or 1 */
  uint64_t group; /* group id for gAUC; 0 when the format has none */
  uint32_t nkeys; /* number of fields filled */
  uint64_t *keys; /* [nkeys] feature ids, field order; caller-owned */
  float *vals;    /* [nkeys] value per field, caller-owned buffer, or NULL:
                     the caller takes binary features only */
  bool valued;    /* set by the parsers: vals holds the line's values (some
                     differ from 1); false = every value is 1 and vals may
                     hold anything */
};

/* Parses one Criteo line (len bytes, without or with a trailing '\n' or
 * "\r\n"). ex->keys must hold DATA_CRITEO_FIELDS ids. Returns 0, or -1 with
 * the reason in why ("column 5 (I4): 'x1' is not an integer"). */
int data_parse_criteo(const char *line, size_t len, struct data_example *ex,
                      char *why, size_t whylen);

/* Parses one libFM/libSVM line: "label idx:val idx:val ...". Label is 0/1 or
 * -1/+1 (mapped to 0/1). The k-th feature on the line is field k, and its
 * id is keys_feature_id(k, "<idx>"). With ex->vals NULL only binary
 * features are accepted: a value other than 1 is an error, not silently
 * dropped. With ex->vals (room for maxkeys floats) any finite decimal value
 * is taken (NaN, Inf and non-numbers are errors). ex->keys must hold
 * maxkeys ids; a line with a different number of features than `nfields`
 * is rejected (pass 0 to accept any count up to maxkeys). */
int data_parse_libfm(const char *line, size_t len, uint32_t nfields,
                     uint32_t maxkeys, struct data_example *ex, char *why,
                     size_t whylen);

/* ---- CSV --------------------------------------------------------------- */

enum data_csv_role {
  DATA_CSV_CATEGORICAL, /* text hashed as the token */
  DATA_CSV_NUMERIC,     /* Criteo bucket of the number as the token */
  DATA_CSV_VALUE,       /* one row, scaled by the number */
  DATA_CSV_LABEL,
  DATA_CSV_GROUP,
  DATA_CSV_IGNORE
};

/* The roles as the config names them (data.csv_*). Borrowed; read by
 * data_csv_schema_new only. */
struct data_csv_spec {
  char delim;                 /* column separator; not '"', '\n', '\r' */
  const char *label;          /* label column, required */
  const char *group;          /* group-id column; NULL or "" = none */
  const char *const *numeric; /* [nnumeric] bucketised columns */
  size_t nnumeric;
  const char *const *value; /* [nvalue] columns fed as a value */
  size_t nvalue;
  const char *const *ignore; /* [nignore] columns skipped */
  size_t nignore;
  const char *const *columns; /* [ncolumns] names when the files have no
                                 header row; 0 = the first line of every
                                 file is the header */
  size_t ncolumns;
};

struct data_csv_schema {
  char delim;
  uint32_t ncols;           /* columns per line */
  char **names;             /* [ncols] owned */
  enum data_csv_role *role; /* [ncols] */
  uint32_t *field;          /* [ncols] field of a feature column, else
                               UINT32_MAX */
  uint32_t nfields;         /* feature columns: fields 0..nfields-1 */
  uint32_t nvalues;         /* of them, value columns */
};

/* Compiles the roles of spec against the column names (the header row or
 * spec->columns). NULL with the reason in why when a name of the spec is
 * not a column ("data.csv_numeric: no column 'x', 'y' (columns: label, a,
 * b)"), a column is named twice in the header or given two roles, there
 * is no label, or no column is left as a feature. Caller owns the result;
 * free with data_csv_schema_free(). */
struct data_csv_schema *data_csv_schema_new(const struct data_csv_spec *spec,
                                            const char *const *names,
                                            size_t nnames, char *why,
                                            size_t whylen);
void data_csv_schema_free(struct data_csv_schema *s);

/* Splits one CSV line (without or with "\n" / "\r\n") into columns,
 * undoing RFC 4180 quotes IN PLACE (the line's bytes are rewritten).
 * col/clen receive up to maxcols columns (pointers into line), *ncols the
 * number of columns on the line (may exceed maxcols). Returns 0, or -1 with
 * the reason in why ("column 3: text after the closing quote"). */
int data_csv_split(char *line, size_t len, char delim, const char **col,
                   size_t *clen, size_t maxcols, size_t *ncols, char *why,
                   size_t whylen);

/* Parses one data line against s (rewriting quoted fields in place, see
 * data_csv_split). ex->keys must hold s->nfields ids, and ex->vals as many
 * floats when s->nvalues > 0 (CHECKed). Returns 0, or -1 with the reason
 * in why ("column 4 (price): 'abc' is not a number"). */
int data_parse_csv(const struct data_csv_schema *s, char *line, size_t len,
                   struct data_example *ex, char *why, size_t whylen);

#endif
