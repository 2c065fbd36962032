/* cluster: see cluster.h. */
#include "launcher/cluster.h"

#include "common/check.h"
#include "common/config.h"
#include "worker/train.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 20 /* how often the watch loop looks at children and *stop */

struct child {
  const char *role; /* "pserver", "worker" */
  int rank;
  pid_t pid;  /* 0 = not running (never started, or reaped) */
  int status; /* waitpid status once reaped */
  char log[4096];
};

struct cluster {
  struct child *c;
  size_t n;
};

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int cluster_find_program(const char *name, const char *sub, char *out,
                         size_t len) {
  const char *env = getenv("MASKPS_BIN_DIR");
  if (env && *env) {
    snprintf(out, len, "%s/%s", env, name);
    return access(out, X_OK) == 0 ? 0 : -1;
  }
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0)
    return -1;
  self[n] = 0;
  char *slash = strrchr(self, '/');
  if (!slash)
    return -1;
  *slash = 0;
  snprintf(out, len, "%s/%s", self, name);
  if (access(out, X_OK) == 0)
    return 0;
  snprintf(out, len, "%s/../%s/%s", self, sub, name);
  return access(out, X_OK) == 0 ? 0 : -1;
}

/* fork + exec of argv with stderr (and stdout unless keep_stdout) into the
 * child's log; progress: our stderr as the child's fd 3. 0 or -1 (errno). */
static int spawn(struct child *c, char *const *argv, bool keep_stdout,
                 bool progress) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid > 0) {
    c->pid = pid;
    return 0;
  }
  /* child: only async-signal-safe calls until exec */
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  int lf = open(c->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (lf < 0)
    _exit(127);
  if (lf <= 3)
    lf = fcntl(lf, F_DUPFD, 10);
  if (progress)
    dup2(STDERR_FILENO, 3);
  dup2(lf, STDERR_FILENO);
  if (!keep_stdout)
    dup2(lf, STDOUT_FILENO);
  close(lf);
  int nul = open("/dev/null", O_RDONLY);
  if (nul >= 0) {
    dup2(nul, STDIN_FILENO);
    if (nul > 3)
      close(nul);
  }
  execv(argv[0], argv);
  static const char msg[] = "maskps: cannot execute the program\n";
  ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
  (void)w;
  _exit(127);
}

/* "pserver 1 (pid 123)" */
static const char *child_name(const struct child *c, char *buf, size_t len) {
  snprintf(buf, len, "%s %d (pid %d)", c->role, c->rank, (int)c->pid);
  return buf;
}

static void describe_status(int st, char *buf, size_t len) {
  if (WIFEXITED(st))
    snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(st),
             strsignal(WTERMSIG(st)));
  else
    snprintf(buf, len, "stopped (status 0x%x)", st);
}

/* The last CLUSTER_TAIL_LINES lines of a log to stderr. */
static void print_tail(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "  (no log at %s: %s)\n", path, strerror(errno));
    return;
  }
  char *lines[CLUSTER_TAIL_LINES] = {0};
  size_t n = 0;
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    free(lines[n % CLUSTER_TAIL_LINES]);
    lines[n % CLUSTER_TAIL_LINES] = xstrdup(line);
    n++;
  }
  free(line);
  fclose(f);
  size_t first = n > CLUSTER_TAIL_LINES ? n - CLUSTER_TAIL_LINES : 0;
  fprintf(stderr, "last lines of %s:\n", path);
  if (n == 0)
    fprintf(stderr, "  (empty)\n");
  for (size_t i = first; i < n; i++) {
    const char *l = lines[i % CLUSTER_TAIL_LINES];
    fprintf(stderr, "  %s%s", l, l[strlen(l) - 1] == '\n' ? "" : "\n");
  }
  for (size_t i = 0; i < CLUSTER_TAIL_LINES; i++)
    free(lines[i]);
}

static struct child *find_pid(struct cluster *cl, pid_t pid) {
  for (size_t i = 0; i < cl->n; i++)
    if (cl->c[i].pid == pid)
      return &cl->c[i];
  return NULL;
}

/* Reaps whatever exited (no wait). Returns the child reaped, or NULL. */
static struct child *reap_one(struct cluster *cl) {
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0)
      return NULL;
    struct child *c = find_pid(cl, pid);
    if (!c)
      continue; /* not ours (cannot happen: we start no one else) */
    c->status = st;
    c->pid = -c->pid; /* reaped: keep the pid for messages, negated */
    return c;
  }
}

static bool running(const struct child *c) {
  return c->pid > 0;
}

/* SIGTERM to every running child with role (NULL = all), then waits up to
 * CLUSTER_GRACE_S for them, then SIGKILL. Reaped children keep their
 * status. Returns the first child of that role that exited non-zero or
 * by a signal other than the SIGTERM we sent (NULL if none). */
static struct child *stop_role(struct cluster *cl, const char *role,
                               int grace_s) {
  for (size_t i = 0; i < cl->n; i++)
    if (running(&cl->c[i]) && (!role || !strcmp(cl->c[i].role, role)))
      kill(cl->c[i].pid, SIGTERM);
  struct child *bad = NULL;
  for (int waited = 0;; waited += POLL_MS) {
    bool any = false;
    for (size_t i = 0; i < cl->n; i++)
      if (running(&cl->c[i]) && (!role || !strcmp(cl->c[i].role, role)))
        any = true;
    if (!any)
      break;
    if (waited >= grace_s * 1000) {
      for (size_t i = 0; i < cl->n; i++)
        if (running(&cl->c[i]) && (!role || !strcmp(cl->c[i].role, role))) {
          char nm[128];
          fprintf(stderr, "maskps: %s did not stop within %d s: SIGKILL\n",
                  child_name(&cl->c[i], nm, sizeof(nm)), grace_s);
          kill(cl->c[i].pid, SIGKILL);
          int st;
          if (waitpid(cl->c[i].pid, &st, 0) > 0) {
            cl->c[i].status = st;
            cl->c[i].pid = -cl->c[i].pid;
          }
        }
      break;
    }
    struct child *c;
    while ((c = reap_one(cl)) != NULL) {
      int st = c->status;
      bool clean =
          (WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 130)) ||
          (WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
      if (!clean && !bad)
        bad = c;
    }
    sleep_ms(POLL_MS);
  }
  return bad;
}

static void report_failure(const struct child *c) {
  char nm[128], what[128];
  struct child tmp = *c;
  tmp.pid = -tmp.pid;
  describe_status(c->status, what, sizeof(what));
  fprintf(stderr, "maskps: %s %s; stopping the run\n",
          child_name(&tmp, nm, sizeof(nm)), what);
  print_tail(c->log);
}

int cluster_run(const struct config *cfg, const char *config_path,
                volatile sig_atomic_t *stop) {
  const int S = (int)cfg->cluster.pservers, W = (int)cfg->cluster.workers;
  if (cfg->cluster.launcher != CONFIG_LAUNCHER_LOCAL) {
    fprintf(
        stderr,
        "maskps: cluster.launcher %s is not supported yet; use "
        "local (every process on this machine)\n",
        config_enum_name("cluster", "launcher", (int)cfg->cluster.launcher));
    return 2;
  }
  if (cfg->security.curve) {
    fprintf(stderr, "maskps: security.curve is not supported by the local "
                    "cluster yet (no key generation); set it to false\n");
    return 2;
  }
  char pserver_bin[PATH_MAX + 64], worker_bin[PATH_MAX + 64];
  if (cluster_find_program("maskps-pserver", "pserver", pserver_bin,
                           sizeof(pserver_bin)) ||
      cluster_find_program("maskps-worker", "launcher", worker_bin,
                           sizeof(worker_bin))) {
    fprintf(stderr,
            "maskps: cannot find maskps-pserver and maskps-worker next to "
            "this program (or in $MASKPS_BIN_DIR)\n");
    return 1;
  }
  /* What the pservers must hold: the model's tables and dense length. */
  char err[1024] = "";
  struct train_opts to = {.cfg = cfg};
  struct trainer *tr = train_new(&to, err, sizeof(err));
  if (!tr) {
    fprintf(stderr, "maskps: %s\n", err);
    return 2;
  }
  uint32_t ids[TRAIN_MAX_TABLES];
  int dims[TRAIN_MAX_TABLES];
  int nt = train_tables(tr, ids, dims);
  char tables[256] = "", dense[32];
  for (int i = 0; i < nt; i++)
    snprintf(tables + strlen(tables), sizeof(tables) - strlen(tables),
             "%s%u:%d", i ? "," : "", ids[i], dims[i]);
  /* one worker keeps the dense vector itself (launcher/main_worker.c) */
  snprintf(dense, sizeof(dense), "%llu",
           W > 1 ? (unsigned long long)train_dense_total(tr) : 0ULL);
  train_free(tr);

  struct cluster cl = {xcalloc((size_t)(S + W), sizeof(struct child)),
                       (size_t)(S + W)};
  const char *run = cfg->train.run_dir;
  bool tty = isatty(STDERR_FILENO);
  bool progress = cfg->log.progress == CONFIG_PROGRESS_ON ||
                  (cfg->log.progress == CONFIG_PROGRESS_AUTO && tty);
  fprintf(stderr,
          "maskps: local cluster: %d pserver(s) from port %lld, %d "
          "worker(s), mode %s; logs in %s/logs/\n",
          S, (long long)cfg->cluster.base_port, W,
          config_enum_name("train", "mode", (int)cfg->train.mode), run);
  int status = 0;
  struct child *failed = NULL;
  for (int i = 0; i < S + W && !failed; i++) {
    struct child *c = &cl.c[i];
    bool ps = i < S;
    c->role = ps ? "pserver" : "worker";
    c->rank = ps ? i : i - S;
    snprintf(c->log, sizeof(c->log), "%s/logs/%s-%d.log", run, c->role,
             c->rank);
    char rank[16];
    snprintf(rank, sizeof(rank), "%d", c->rank);
    char *argv[12];
    int a = 0;
    argv[a++] = ps ? pserver_bin : worker_bin;
    argv[a++] = "--config";
    argv[a++] = (char *)config_path;
    argv[a++] = "--rank";
    argv[a++] = rank;
    if (ps) {
      argv[a++] = "--dense-floats";
      argv[a++] = dense;
      argv[a++] = "--tables";
      argv[a++] = tables;
    } else if (c->rank == 0 && progress) {
      argv[a++] = "--progress-fd";
      argv[a++] = "3";
    }
    argv[a] = NULL;
    if (spawn(c, argv, !ps && c->rank == 0, !ps && c->rank == 0 && progress)) {
      fprintf(stderr, "maskps: cannot start %s %d: %s\n", c->role, c->rank,
              strerror(errno));
      status = 1;
      break;
    }
  }

  /* Watch: until every worker exited 0, a process failed, or *stop. */
  int workers_left = W;
  while (status == 0 && workers_left > 0) {
    if (*stop) {
      fprintf(stderr, "maskps: interrupted: stopping the workers, then the "
                      "pservers\n");
      /* an interrupted run may end anyhow: what matters is that every
       * process is gone, workers first (they finish their step against
       * live pservers), then the pservers (they flush) */
      stop_role(&cl, "worker", CLUSTER_GRACE_S);
      stop_role(&cl, "pserver", CLUSTER_GRACE_S);
      status = 130;
      break;
    }
    struct child *c = reap_one(&cl);
    if (!c) {
      sleep_ms(POLL_MS);
      continue;
    }
    bool worker = !strcmp(c->role, "worker");
    if (worker && WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0) {
      workers_left--;
      if (c->rank == 0 && workers_left > 0 &&
          cfg->train.mode != CONFIG_MODE_ASYNC) {
        /* Rank 0 decides the run (it evaluates and stops early); in sync
         * and ssp modes the others would wait at a barrier it will never
         * reach, until their request timeout. */
        fprintf(stderr,
                "maskps: worker 0 finished the run; stopping the %d other "
                "worker(s)\n",
                workers_left);
        stop_role(&cl, "worker", CLUSTER_FAIL_GRACE_S);
        workers_left = 0;
      }
      continue;
    }
    failed = c;
    status = 1;
  }
  if (status == 1) {
    if (failed)
      report_failure(failed);
    /* a peer is gone: the survivors may be blocked on it, nothing of the
     * run is worth waiting for */
    stop_role(&cl, NULL, CLUSTER_FAIL_GRACE_S);
  } else if (status == 0) {
    /* every worker done: the pservers flush their stores and exit */
    struct child *bad = stop_role(&cl, "pserver", CLUSTER_GRACE_S);
    if (bad) {
      report_failure(bad);
      status = 1;
    }
  }
  free(cl.c);
  return status;
}
