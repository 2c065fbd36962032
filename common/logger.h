/*
 * logger: what a process tells people and dashboards.
 *
 * Two streams per process:
 *   - human lines on stderr, tagged with role and rank:
 *       12:01:02.345 pserver-1 warn: cache over budget by 3 MiB
 *   - JSON Lines records in a file (DESIGN.md "Logs and dashboards"), one
 *     object per event, always with ts (Unix seconds, ms precision), role,
 *     rank, step and event, then the numbers:
 *       {"ts":1764000000.123,"role":"worker","rank":0,"step":120,
 *        "event":"train","loss":0.4631,"samples_per_s":51234}
 *     Non-finite numbers are written as null (JSON has no NaN). Every record
 *     is flushed whole, so a reader never sees half a line from a live run.
 *
 * Safe to call from several threads of one process (one mutex per logger).
 * Not a global: pass the logger; a NULL logger writes human lines untagged
 * and drops records.
 */
#ifndef MASKPS_LOGGER_H
#define MASKPS_LOGGER_H

#include <stdint.h>
#include <stdio.h>

enum logger_level { LOGGER_DEBUG, LOGGER_INFO, LOGGER_WARN, LOGGER_ERROR };

struct logger;

/* jsonl_path NULL: no records. The file is appended to (a restarted process
 * continues its log). Returns NULL with err set if the file cannot be opened.
 * Caller owns the result; free with logger_free(). */
struct logger *logger_new(const char *role, int rank, const char *jsonl_path,
                          enum logger_level level, char *err, size_t errlen);
void logger_free(struct logger *lg);

/* Lines below the level are dropped. */
void logger_set_level(struct logger *lg, enum logger_level level);
/* Where human lines go (default stderr); borrowed, not closed. */
void logger_set_stream(struct logger *lg, FILE *f);

/* A human line. */
void logger_msg(struct logger *lg, enum logger_level level, const char *fmt,
                ...) __attribute__((format(printf, 3, 4)));
#define logger_debug(lg, ...) logger_msg(lg, LOGGER_DEBUG, __VA_ARGS__)
#define logger_info(lg, ...) logger_msg(lg, LOGGER_INFO, __VA_ARGS__)
#define logger_warn(lg, ...) logger_msg(lg, LOGGER_WARN, __VA_ARGS__)
#define logger_error(lg, ...) logger_msg(lg, LOGGER_ERROR, __VA_ARGS__)

/* A JSONL record of numbers: the varargs are (const char *name, double value)
 * pairs ended by a NULL name:
 *   logger_record(lg, step, "train", "loss", loss, "auc", auc, NULL);
 * Names must be plain identifiers (CHECKed). Returns 0, or -1 if the write
 * failed (disk full): the failure is reported once on stderr, and training
 * goes on without its dashboard rather than dying. */
int logger_record(struct logger *lg, uint64_t step, const char *event, ...);

/* A JSONL record whose extra fields are given as ready JSON text
 * ("\"hist\":[1,2,3]"), for arrays and strings; borrowed. */
int logger_record_json(struct logger *lg, uint64_t step, const char *event,
                       const char *fields);

/* Parses "debug".."error"; returns -1 for anything else. */
int logger_level_parse(const char *s, enum logger_level *out);

/* Writes s as a JSON string literal (quotes and escapes) to f. */
void logger_json_string(FILE *f, const char *s);

#endif
