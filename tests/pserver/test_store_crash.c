/* store: what survives a kill -9 under each WAL policy. A child process
 * pushes, then SIGKILLs itself without closing the store; the parent
 * reopens the directory and looks.
 *
 * The child is this executable run again (fork + exec with "--child"), not
 * a bare fork: RocksDB's background thread pools, started by an earlier
 * test in the parent, do not exist in a forked child, and its first flush
 * would wait for them forever. */
#include "pserver/store.h"

#include "store_testlib.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>

#include <cmocka.h>

enum { N = 64, D = 8, STEPS = 10 };

static char root[64];
static struct store_table table;
static uint64_t keys[N];
static float grads[N * D];

static int setup(void **state) {
  (void)state;
  temp_dir(root);
  table = make_table(1, D, ROW_OPT_SGD);
  for (int i = 0; i < N; i++)
    keys[i] = 0x51ed270b27f1a5d3ull * (uint64_t)(i + 7);
  for (int i = 0; i < N * D; i++)
    grads[i] = 0.5f - 0.01f * (float)(i % 97);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  rm_tree(root);
  return 0;
}

/* Forks a child that pushes STEPS steps under `wal` (and store_flush after
 * them if `flush`), then dies by SIGKILL without closing. */
static void child(const char *dir, enum store_wal wal, int flush) {
  struct store *s = open_with(dir, &table, 1, wal, 64, 0);
  if (!s)
    _exit(2);
  char err[256];
  for (int step = 1; step <= STEPS; step++)
    if (store_push(s, 1, N, keys, NULL, grads, NULL, NULL, NULL, (uint64_t)step,
                   err, sizeof(err)) < 0)
      _exit(3);
  if (flush && store_flush(s, err, sizeof(err)) < 0)
    _exit(4);
  raise(SIGKILL);
  _exit(5);
}

static void crash_child(const char *dir, enum store_wal wal, int flush) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    char w[8], f[8];
    snprintf(w, sizeof(w), "%d", (int)wal);
    snprintf(f, sizeof(f), "%d", flush);
    char *argv[] = {"test_store_crash", "--child", (char *)dir, w, f, NULL};
    execv("/proc/self/exe", argv);
    _exit(6);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGKILL);
}

/* 1 if every key holds the SGD result of STEPS pushes, 0 if every key is
 * still unseen; fails the test on anything in between. */
static int trained(const char *dir) {
  struct store *s = open_with(dir, &table, 1, STORE_WAL_SYNC, 64, 0);
  assert_non_null(s);
  struct pulled p;
  assert_int_equal(pull_all(s, 1, D, N, keys, &p), N * D);
  int done = p.count[0] == STEPS;
  for (int i = 0; i < N; i++) {
    float init[D];
    store_init_values(s, 1, keys[i], init, D);
    assert_int_equal(p.count[i], done ? STEPS : 0);
    for (int j = 0; j < D; j++)
      assert_float_equal(
          p.values[p.off[i] + j],
          done ? init[j] - STEPS * 0.01 * grads[i * D + j] : init[j], 1e-5);
  }
  pulled_free(&p);
  char err[256];
  assert_int_equal(store_close(s, err, sizeof(err)), 0);
  return done;
}

static void test_sync_survives_kill(void **state) {
  (void)state;
  char dir[128];
  snprintf(dir, sizeof(dir), "%s/sync", root);
  crash_child(dir, STORE_WAL_SYNC, 0);
  assert_int_equal(trained(dir), 1);
}

static void test_async_survives_process_kill(void **state) {
  (void)state;
  /* The WAL is in the page cache, which a process kill does not lose (a
   * power cut could). */
  char dir[128];
  snprintf(dir, sizeof(dir), "%s/async", root);
  crash_child(dir, STORE_WAL_ASYNC, 0);
  assert_int_equal(trained(dir), 1);
}

static void test_wal_off_loses_unflushed_pushes(void **state) {
  (void)state;
  char dir[128];
  /* Without a flush the rows were only in the row cache: all lost. */
  snprintf(dir, sizeof(dir), "%s/off", root);
  crash_child(dir, STORE_WAL_OFF, 0);
  assert_int_equal(trained(dir), 0);
  /* store_flush makes them durable even without a WAL. */
  snprintf(dir, sizeof(dir), "%s/off-flushed", root);
  crash_child(dir, STORE_WAL_OFF, 1);
  assert_int_equal(trained(dir), 1);
}

int main(int argc, char **argv) {
  /* A hang (a child stuck in RocksDB) fails the test instead of blocking
   * CTest; the alarm survives exec, so it covers the child too. */
  alarm(120);
  if (argc == 5 && strcmp(argv[1], "--child") == 0) {
    setup(NULL);
    rm_tree(root); /* the child's own temp dir is not needed */
    child(argv[2], (enum store_wal)atoi(argv[3]), atoi(argv[4]));
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sync_survives_kill),
      cmocka_unit_test(test_async_survives_process_kill),
      cmocka_unit_test(test_wal_off_loses_unflushed_pushes),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
