/*
 * store on a full disk: pushes into a store on a 3 MiB tmpfs until the disk
 * is full. The push that meets the full disk must fail with a message that
 * says so; the process keeps serving pulls; and once space is back, the
 * reopened store holds every acknowledged push exactly (SGD's closed form)
 * and the failed batch either wholly or not at all (one WriteBatch).
 *
 * Needs to mount a tmpfs: the test makes a private mount namespace
 * (unshare), so the mount vanishes with the process even if it crashes.
 * Without the privilege (not root), it is skipped, saying why.
 */
#include "pserver/store.h"
#include "store_testlib.h"

#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>

#include <cmocka.h>

enum { D = 16, BATCH = 512, MAX_BATCHES = 4000 };

static uint64_t key_of(int batch, int i) {
  return (uint64_t)batch * 1000003u + (uint64_t)i * 7919u + 1;
}

/* A private mount namespace with a small tmpfs at dir; 0, or -1 (skip). */
static int mount_small_disk(const char *dir, const char *size) {
  if (unshare(CLONE_NEWNS) != 0) {
    fprintf(stderr, "test_store_full: unshare: %s\n", strerror(errno));
    return -1;
  }
  if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
      mount("tmpfs", dir, "tmpfs", 0, size) != 0) {
    fprintf(stderr, "test_store_full: mount: %s\n", strerror(errno));
    return -1;
  }
  return 0;
}

static void test_full_disk_fails_cleanly_and_keeps_acknowledged_pushes(
    void **state) {
  (void)state;
  char top[64];
  temp_dir(top);
  if (mount_small_disk(top, "size=3m") != 0) {
    rm_tree(top);
    skip();
  }
  char dir[128];
  snprintf(dir, sizeof(dir), "%s/db", top);
  struct store_table t = make_table(0, D, ROW_OPT_SGD);
  struct store *s = open_with(dir, &t, 1, STORE_WAL_SYNC, 8, 0);
  assert_non_null(s);

  static uint64_t keys[BATCH];
  static float grads[BATCH * D];
  for (int i = 0; i < BATCH * D; i++)
    grads[i] = 1.0f;
  char err[512] = "";
  int acked = 0;
  for (; acked < MAX_BATCHES; acked++) {
    for (int i = 0; i < BATCH; i++)
      keys[i] = key_of(acked, i);
    if (store_push(s, 0, BATCH, keys, NULL, grads, NULL, NULL, NULL,
                   (uint64_t)acked + 1, err, sizeof(err)) != 0)
      break;
  }
  assert_true(acked < MAX_BATCHES); /* 3 MiB must fill up */
  assert_true(acked > 0);
  fprintf(stderr, "test_store_full: %d batches acknowledged, then: %s\n",
          acked, err);
  assert_non_null(strcasestr(err, "space"));

  /* Still serving: an acknowledged key reads back init - lr. */
  float init[D];
  struct pulled r;
  keys[0] = key_of(0, 0);
  assert_true(pull_all(s, 0, D, 1, keys, &r) == D);
  assert_int_equal(store_init_values(s, 0, keys[0], init, D), 0);
  for (int j = 0; j < D; j++)
    assert_float_equal(r.values[j], init[j] - t.opt.lr, 1e-6);
  pulled_free(&r);
  (void)store_close(s, err, sizeof(err)); /* may fail: the disk is full */

  /* Space back; the table must be intact. */
  assert_int_equal(mount("tmpfs", top, "tmpfs", MS_REMOUNT, "size=256m"), 0);
  s = open_with(dir, &t, 1, STORE_WAL_SYNC, 8, 0);
  assert_non_null(s);
  for (int b = 0; b <= acked; b++) {
    for (int i = 0; i < BATCH; i++)
      keys[i] = key_of(b, i);
    assert_true(pull_all(s, 0, D, BATCH, keys, &r) == (long)BATCH * D);
    int applied = 0;
    for (int i = 0; i < BATCH; i++) {
      assert_int_equal(store_init_values(s, 0, keys[i], init, D), 0);
      int moved = r.values[r.off[i]] != init[0];
      applied += moved;
      for (int j = 0; j < D; j++)
        assert_float_equal(r.values[r.off[i] + j],
                           init[j] - (moved ? t.opt.lr : 0.0f), 1e-6);
    }
    if (b < acked)
      assert_int_equal(applied, BATCH); /* acknowledged: all of it */
    else
      assert_true(applied == 0 || applied == BATCH); /* failed: atomic */
    pulled_free(&r);
  }
  assert_int_equal(store_close(s, err, sizeof(err)), 0);
  umount(top);
  rm_tree(top);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(
          test_full_disk_fails_cleanly_and_keeps_acknowledged_pushes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
