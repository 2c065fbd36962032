/*
 * cluster: `maskps train` with cluster.pservers = S > 0 on this machine
 * (cluster.launcher local): starts S maskps-pserver and W maskps-worker
 * processes, watches them, stops them. What it is not: a restarter
 * (a dead process ends the run; recovery comes later), nor ssh/slurm.
 *
 * The programs are found next to the running maskps (/proc/self/exe), in
 * the build tree's pserver/ and launcher/ directories beside it, or in
 * $MASKPS_BIN_DIR when set. Every child gets `--config CONFIG_PATH` (the
 * run directory's config.yaml, every key as run) and its rank; pservers
 * also `--dense-floats` (the model's parameter count) and `--tables`
 * (train_tables()). Each child's stderr goes to run_dir/logs/<role>-<rank>.log
 * (its JSONL records to <role>-<rank>.jsonl); rank 0 worker's stdout is
 * ours (it prints the run's summary, as embedded mode does) and, when we
 * show progress, file descriptor 3 is our stderr (its progress line).
 * Children run in their own process groups, so a terminal's Ctrl-C reaches
 * only the launcher, which then stops them in order; they also get
 * SIGTERM if the launcher itself dies (PR_SET_PDEATHSIG).
 *
 * Lifecycle: pservers first, then workers (a worker's first requests wait
 * in ZeroMQ's queue until its pserver binds). When every worker exited 0
 * (in sync and ssp modes: when worker 0 did, which decides the run and may
 * stop early; the others, blocked at a barrier it will not reach, are
 * stopped) the pservers get SIGTERM (each flushes its store and exits 0). If
 * any process exits non-zero, is killed by a signal, or a pserver exits while
 * workers still run, the others get SIGTERM, then SIGKILL after
 * CLUSTER_FAIL_GRACE_S (survivors may be blocked on the dead one), and
 * the run fails naming the process and showing the
 * last lines of its log.
 */
#ifndef MASKPS_CLUSTER_H
#define MASKPS_CLUSTER_H

#include <signal.h>
#include <stddef.h>

struct config;

#define CLUSTER_GRACE_S 10     /* seconds between SIGTERM and SIGKILL */
#define CLUSTER_FAIL_GRACE_S 2 /* the same after a process failed */
#define CLUSTER_TAIL_LINES 10  /* log lines shown of a failed process */

/* Finds the executable `name` (e.g. "maskps-pserver"): in $MASKPS_BIN_DIR
 * when set, else next to the running program, else in the build tree's
 * sibling directory `sub` ("pserver"). Returns 0 with the path in out[len],
 * or -1 when it is not there or not executable. */
int cluster_find_program(const char *name, const char *sub, char *out,
                         size_t len);

/* Runs the local cluster for cfg (validated, cluster.pservers >= 1, the
 * run directory's logs/ and config.yaml at config_path already written).
 * *stop set (a signal handler) stops every process cleanly. Returns the
 * exit status for maskps: 0 done, 1 a process failed (message on stderr),
 * 2 a setting the local cluster does not support, 130 stopped. */
int cluster_run(const struct config *cfg, const char *config_path,
                volatile sig_atomic_t *stop);

#endif
