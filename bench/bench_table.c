/* bench_table: how fast maskps-table moves rows.
 *
 *   bench_table [rows] [workdir] [memory_mb]   (default 2000000, /tmp, 64)
 *
 * 1. writes an export file of `rows` rows of one table (D = 16, adagrad,
 *    fixed-D, with state: 160-byte records) directly from this program,
 *    following docs/table-format.md (so the format is exercised by a second
 *    writer);
 * 2. imports it into an S = 2 store set (rows/s of table_import);
 * 3. migrates S = 2 -> S' = 3 unchanged, without the checksums (the copy
 *    alone), then D 16 -> 8 with the source/expected/written checksums;
 * 4. verifies and exports the 3-shard set.
 * Each line: phase, rows, seconds, rows/s. Last line: the peak RSS of the
 * process (the jobs stream: it stays flat as rows grow). Everything is
 * removed at the end. */
#include "common/check.h"
#include "common/keys.h"
#include "pserver/table.h"

#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

enum { D = 16, SLOTS = 1, REC = 32 + 4 * D * (1 + SLOTS) };

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static void put32(uint8_t *b, uint32_t v) {
  for (int i = 0; i < 4; i++)
    b[i] = (uint8_t)(v >> 8 * i);
}
static void put64(uint8_t *b, uint64_t v) {
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)(v >> 8 * i);
}

/* The export file of docs/table-format.md, written from scratch. */
static void write_export(const char *path, uint64_t rows) {
  FILE *f = fopen(path, "wb");
  CHECK(f, "%s", path);
  setvbuf(f, NULL, _IOFBF, 1 << 20);
  uint8_t h[TABLE_EXPORT_HEADER_LEN] = {0};
  memcpy(h, TABLE_EXPORT_MAGIC, 8);
  put32(h + 8, TABLE_EXPORT_VERSION);
  put32(h + 12, TABLE_EXPORT_HEADER_LEN);
  put32(h + 16, REC);
  put32(h + 20, 1); /* table id */
  put32(h + 24, D);
  h[28] = ROW_OPT_ADAGRAD;
  h[29] = 0; /* fixed D */
  h[30] = SLOTS;
  h[31] = ROW_VERSION;
  put64(h + 32, 42); /* seed */
  float std = 0.01f;
  memcpy(h + 40, &std, 4);
  put32(h + 44, 1); /* min_count */
  fwrite(h, 1, sizeof(h), f);
  uint64_t fnv = 0xcbf29ce484222325ull;
  uint8_t r[REC];
  for (uint64_t i = 0; i < rows; i++) {
    memset(r, 0, sizeof(r));
    uint64_t key = keys_mix64(i);
    put64(r, key);
    put32(r + 8, 1 + (uint32_t)(key % 1000)); /* count */
    put64(r + 16, 100);                       /* last_step */
    put32(r + 24, 3);                         /* opt_step */
    r[28] = D;                                /* p */
    for (int j = 0; j < D; j++) {
      float v = (float)((int)((key >> j) & 255) - 128) / 1024.0f, a = 0.5f;
      memcpy(r + 32 + 4 * j, &v, 4);
      memcpy(r + 32 + 4 * D + 4 * j, &a, 4);
    }
    for (int j = 0; j < REC; j++)
      fnv = (fnv ^ r[j]) * 0x100000001b3ull;
    fwrite(r, 1, REC, f);
  }
  uint8_t t[TABLE_EXPORT_TRAILER_LEN];
  memcpy(t, TABLE_EXPORT_END, 8);
  put64(t + 8, rows);
  put64(t + 16, fnv);
  fwrite(t, 1, sizeof(t), f);
  CHECK(fclose(f) == 0, "%s", path);
}

/* CPU seconds of the whole process (RocksDB's threads included). */
static double cpu_sec(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
         1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static double cpu0;

/* One result line: wall rows/s, and CPU seconds since the last line (the
 * machine is shared: CPU time is the figure that other jobs disturb least). */
static void line(const char *what, uint64_t rows, double s) {
  double c = cpu_sec();
  printf("%-32s %8" PRIu64 " rows %7.2f s %9.0f rows/s  cpu %6.2f s\n", what,
         rows, s, (double)rows / s, c - cpu0);
  cpu0 = c;
  fflush(stdout);
}

#define DIE(what, err)                                                         \
  do {                                                                         \
    fprintf(stderr, "bench_table: %s: %s\n", what, err);                       \
    exit(1);                                                                   \
  } while (0)

int main(int argc, char **argv) {
  uint64_t rows = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000000;
  const char *base = argc > 2 ? argv[2] : "/tmp";
  char work[4096];
  snprintf(work, sizeof(work), "%s/bench-table-XXXXXX", base);
  CHECK(mkdtemp(work), "mkdtemp %s", work);
  char file[4200], a[2][4200], b[3][4200], c[3][4200], ex[4200];
  snprintf(file, sizeof(file), "%s/in.mpt", work);
  snprintf(ex, sizeof(ex), "%s/export", work);
  const char *pa[2], *pb[3], *pc[3];
  for (int i = 0; i < 3; i++) {
    snprintf(b[i], sizeof(b[i]), "%s/s3-%d", work, i);
    snprintf(c[i], sizeof(c[i]), "%s/d8-%d", work, i);
    pb[i] = b[i];
    pc[i] = c[i];
    if (i < 2) {
      snprintf(a[i], sizeof(a[i]), "%s/s2-%d", work, i);
      pa[i] = a[i];
    }
  }
  size_t mb = argc > 3 ? (size_t)strtoull(argv[3], NULL, 10) : 64;
  struct table_io io = {mb, 0, NULL};
  struct table_migrate_opts o;
  struct table_migrate_report rep;
  char err[2048];

  cpu0 = cpu_sec();
  double t = clock_sec();
  write_export(file, rows);
  line("write export file (bench)", rows, clock_sec() - t);

  table_migrate_defaults(&o);
  o.no_verify = 1;
  const char *files[1] = {file};
  t = clock_sec();
  if (table_import(files, 1, pa, 2, &o, &io, &rep, err, sizeof(err)) < 0)
    DIE("import", err);
  line("import -> S=2 (no verify)", rep.rows_out, clock_sec() - t);

  t = clock_sec();
  if (table_migrate(pa, 2, pb, 3, &o, &io, &rep, err, sizeof(err)) < 0)
    DIE("migrate", err);
  line("migrate S=2 -> 3, D=16 (copy)", rep.rows_in, rep.seconds);
  printf("  (the whole call, with open/close/flush: %.2f s)\n",
         clock_sec() - t);

  table_migrate_defaults(&o);
  o.dim = 8;
  t = clock_sec();
  if (table_migrate(pb, 3, pc, 3, &o, &io, &rep, err, sizeof(err)) < 0)
    DIE("migrate", err);
  line("migrate D 16 -> 8 (copy)", rep.rows_in, rep.seconds);
  printf("  (the whole call, with the 3 verifies: %.2f s)\n", clock_sec() - t);

  struct table_sum *s = NULL;
  size_t ns;
  t = clock_sec();
  if (table_verify(pb, 3, &io, &s, &ns, err, sizeof(err)) < 0)
    DIE("verify", err);
  line("verify S=3", s[0].rows, clock_sec() - t);
  free(s);

  t = clock_sec();
  if (table_export(pb, 3, ex, 1, &io, err, sizeof(err)) < 0)
    DIE("export", err);
  line("export S=3 with state", rows, clock_sec() - t);

  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("peak RSS %.1f MiB (stores opened with memory_mb = %zu each)\n",
         (double)ru.ru_maxrss / 1024.0, io.memory_mb);
  nftw(work, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}
