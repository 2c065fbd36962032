/* Dense warm start; see warm_dense.h. */
#include "worker/warm_dense.h"

#include <stdio.h>
#include <string.h>

/* s as the body of a JSON string (quotes and backslashes escaped, control
 * characters dropped) in out. */
static void json_body(const char *s, char *out, size_t cap) {
  size_t n = 0;
  for (; *s && n + 3 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      out[n++] = '\\', out[n++] = (char)c;
    else if (c >= 0x20)
      out[n++] = (char)c;
  }
  out[n] = 0;
}

int warm_dense_load(struct params *p, const struct config *cfg,
                    struct logger *lg, char *err, size_t errlen) {
  const char *path = cfg->warm_start.dense;
  if (!path || !*path)
    return 0;
  char report[1024], e[512];
  int n = params_load(p, path, false, report, sizeof(report), e, sizeof(e));
  if (n < 0) {
    snprintf(err, errlen, "warm_start.dense: %s", e);
    return -1;
  }
  logger_info(lg, "warm start, dense parameters from %s: %s", path, report);
  char body[1100], fields[1300];
  json_body(report, body, sizeof(body));
  snprintf(fields, sizeof(fields), "\"loaded\":%d,\"report\":\"%s\"", n, body);
  logger_record_json(lg, 0, "warm_start", fields);
  return n;
}
