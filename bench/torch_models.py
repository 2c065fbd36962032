#!/usr/bin/python3
"""PyTorch's training-step throughput on the models bench_models measures.

    /usr/bin/python3 bench/torch_models.py compare BENCH_MODELS
        [-m dnn,...] [-b 4096,2048] [-t 1,2] [-s SECONDS] [-r REPS] [-a 1]
        [-o OUTDIR]
    /usr/bin/python3 bench/torch_models.py table C_TSV TORCH_TSV

compare: starts BENCH_MODELS -i (maskps) and one PyTorch process per thread
setting (SETTINGS below; each its own process because OpenBLAS reads
OPENBLAS_NUM_THREADS once, when torch is imported, and OpenMP reads
OMP_WAIT_POLICY once, at start), keeps them all alive with their models
built, and for every (model, batch, threads) alternates REPS times: one
round of maskps (its steps, then its sgemm replay), one round of each
PyTorch setting with that many threads. Rounds of a case are thus seconds
apart and share the machine's load. Writes OUTDIR/maskps.tsv, torch.tsv
(one line per round) and load.txt (the load average at each case).

table: reads those files, takes per-case medians over rounds, and prints
the Markdown table of bench/run_models.sh: maskps samples/s, the best
PyTorch setting and its samples/s, their ratio, and maskps's fraction of
the sgemm replay of its own products; then every PyTorch setting.

The models are tests/nn/make_fixtures.py's own definitions (the ones the C
models are checked against to 1e-5), imported, at the configurations of
bench_models.c's opening block. One step is the same as there: forward,
BCE-with-logits loss (mean), backward with the embeddings' gradient, and
torch.optim.Adam (foreach) over every parameter. The fixtures' kink
bookkeeping (a .min().item() per ReLU, for choosing seeds) and their store
of intermediates are disabled here: they are not part of the model.
"""

import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
F, D = 39, 16
MODELS = ["dnn", "dcnv2", "edcn", "sermasknet", "paramasknet"]

# name -> (total threads, env, torch.set_num_threads). OpenMP's default
# wait policy spins between parallel regions, which on 2 shared cores steals
# the core OpenBLAS needs; torch at 1 thread with BLAS at 2 keeps OpenMP out
# of the way entirely.
# default2 (OMP's default active wait) runs only with -a: on this machine
# it is 2-5x slower than the others and takes minutes per model.
SETTINGS = {
    "t1": (1, {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "OMP_WAIT_POLICY": "PASSIVE"}, 1),
    "default2": (2, {}, 2),
    "t2b2-passive": (2, {"OPENBLAS_NUM_THREADS": "2",
                         "OMP_WAIT_POLICY": "PASSIVE"}, 2),
    "t1b2-passive": (2, {"OPENBLAS_NUM_THREADS": "2",
                         "OMP_WAIT_POLICY": "PASSIVE"}, 1),
    "t2b1-passive": (2, {"OPENBLAS_NUM_THREADS": "1",
                         "OMP_WAIT_POLICY": "PASSIVE"}, 2),
}


def model_cfg(name):
    """(spec, forward, cfg) of make_fixtures for the benchmark shapes."""
    import make_fixtures as mf
    h3 = [400, 400, 400]
    return {
        "dnn": (mf.spec_dnn, mf.fwd_dnn, {"D": D, "hidden": h3}),
        "dcnv2": (mf.spec_dcnv2, mf.fwd_dcnv2,
                  {"D": D, "hidden": h3, "cross_layers": 3, "mixture": False,
                   "structure": "parallel"}),
        "edcn": (mf.spec_edcn, mf.fwd_edcn,
                 {"D": D, "layers": 3, "bridge": "hadamard", "tau": 1.0,
                  "cross_residual": True}),
        "sermasknet": (mf.spec_sermasknet, mf.fwd_sermasknet,
                       {"D": D, "hidden": [512, 512, 512], "ratio": 1.0,
                        "emb_ln": True, "net_ln": True}),
        "paramasknet": (mf.spec_paramasknet, mf.fwd_paramasknet,
                        {"D": D, "blocks": 3, "block_dim": 64, "hidden": h3,
                         "ratio": 1.0, "emb_ln": True, "net_ln": True}),
    }[name]


def serve(setting, threads):
    """In a subprocess whose environment is already set: answer requests
    "model batch seconds" on stdin with one timing line each, keeping every
    model built (warmed up by 3 steps when first built)."""
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "nn"))
    import torch
    import torch.nn.functional as Fn
    import make_fixtures as mf

    torch.set_num_threads(threads)

    class NoAux(dict):
        def __setitem__(self, k, v):
            pass

        def update(self, *a, **k):
            pass

        def setdefault(self, k, d=None):
            return []

    class BenchCtx(mf.Ctx):
        def __init__(self):
            super().__init__()
            self.aux = NoAux()

        def kink(self, x):
            pass

    def build(name, B):
        mf.B, mf.F = B, F   # the fixture specs draw inputs of (mf.B, mf.F)
        spec, fwd, cfg = model_cfg(name)
        P0, I0 = spec(mf.Draw(7), cfg)
        P = {n: t.clone().requires_grad_(True) for n, t in P0.items()}
        E = (I0["E"] * 0.05).requires_grad_(True)
        y = (torch.rand(B, generator=torch.Generator().manual_seed(9))
             < 0.25).to(torch.float32)
        I = {"E": E, "y": y}
        try:
            opt = torch.optim.Adam(P.values(), lr=1e-4, foreach=True)
        except TypeError:
            opt = torch.optim.Adam(P.values(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            E.grad = None
            logits = fwd(BenchCtx(), P, I, cfg)
            loss = Fn.binary_cross_entropy_with_logits(logits, y)
            loss.backward()
            opt.step()
        for _ in range(3):
            step()
        return step

    built = {}
    for line in sys.stdin:
        name, B, secs = line.split()
        B, secs = int(B), float(secs)
        if (name, B) not in built:
            built[(name, B)] = build(name, B)
        step = built[(name, B)]
        n, t0 = 0, time.perf_counter()
        while True:
            step()
            n += 1
            t = time.perf_counter()
            if t - t0 >= secs:
                break
        print("%s\t%d\t%d\t%s\t%.0f" % (name, B, SETTINGS[setting][0],
                                        setting, B * n / (t - t0)),
              flush=True)


def parse_list(s, conv=str):
    return [conv(x) for x in s.split(",") if x]


def compare(argv):
    opts = {"-m": ",".join(MODELS), "-b": "4096,2048", "-t": "1,2",
            "-s": "0.3", "-r": "5", "-a": "0", "-o": ""}
    if len(argv) < 1 or len(argv) % 2 != 1 or \
            any(a not in opts for a in argv[1::2]):
        sys.exit("usage: torch_models.py compare BENCH_MODELS [-m models] "
                 "[-b batches] [-t threads] [-s seconds] [-r reps] "
                 "[-a 1: add default2] [-o outdir]")
    binary = argv[0]
    opts.update(dict(zip(argv[1::2], argv[2::2])))
    models, batches = parse_list(opts["-m"]), parse_list(opts["-b"], int)
    threads = parse_list(opts["-t"], int)
    secs, reps = float(opts["-s"]), int(opts["-r"])
    out = opts["-o"] or "."
    settings = [s for s, v in SETTINGS.items() if v[0] in threads and
                (s != "default2" or opts["-a"] == "1")]
    workers = {}
    have_torch = subprocess.run([sys.executable, "-c", "import torch"],
                                stderr=subprocess.DEVNULL).returncode == 0
    if not have_torch:
        print("torch_models: no torch under %s: maskps only" %
              sys.executable, file=sys.stderr)
        settings = []
    for s in settings:
        total, env, tt = SETTINGS[s]
        e = dict(os.environ)
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                  "OMP_WAIT_POLICY"):
            e.pop(k, None)
        if s == "default2":
            e["OMP_NUM_THREADS"] = "2"  # what torch picks on 2 free cores
        e.update(env)
        workers[s] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", s, str(tt)],
            env=e, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    cproc = subprocess.Popen([binary, "-i"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)

    def ask(p, req):
        p.stdin.write(req + "\n")
        p.stdin.flush()
        line = p.stdout.readline()
        if not line:
            sys.exit("torch_models: a benchmark process died on '%s'" % req)
        return line

    cf = open(os.path.join(out, "maskps.tsv"), "w")
    tf = open(os.path.join(out, "torch.tsv"), "w")
    lf = open(os.path.join(out, "load.txt"), "w")
    # Every case's rounds alternate maskps and each PyTorch setting, seconds
    # apart, so the load of the shared machine falls on all of them alike.
    for B in batches:
        for m in models:
            for t in threads:
                lf.write("%s batch %d threads %d: load %.2f %.2f %.2f\n" %
                         ((m, B, t) + os.getloadavg()))
                lf.flush()
                for _ in range(reps):
                    line = ask(cproc, "%s %d %d %g" % (m, B, t, secs))
                    cf.write(line)
                    sys.stderr.write(line)
                    for s in settings:
                        if SETTINGS[s][0] != t:
                            continue
                        line = ask(workers[s], "%s %d %g" % (m, B, secs))
                        tf.write(line)
                        sys.stderr.write(line)
                cf.flush()
                tf.flush()
    for p in list(workers.values()) + [cproc]:
        p.stdin.close()
        p.wait()
    for f in (cf, tf, lf):
        f.close()


def read_tsv(path):
    with open(path) as f:
        return [l.rstrip("\n").split("\t") for l in f
                if l.strip() and not l.startswith("#")]


def table(c_path, t_path):
    c, t = {}, {}
    for r in read_tsv(c_path):
        k = (r[0], int(r[1]), int(r[2]))
        c.setdefault(k, []).append((float(r[3]), float(r[6]), float(r[7]),
                                    float(r[5])))
    for r in read_tsv(t_path):
        k = (r[0], int(r[1]), int(r[2]))
        t.setdefault(k, {}).setdefault(r[3], []).append(float(r[4]))
    order = {m: i for i, m in enumerate(MODELS)}
    print("| model | batch | threads | maskps samples/s | PyTorch best "
          "samples/s (setting) | maskps / PyTorch (paired) | maskps sgemm "
          "roofline | PyTorch sgemm roofline | sgemm GFLOP/s on its shapes "
          "| rounds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in sorted(c, key=lambda k: (-k[1], order.get(k[0], 99), k[2])):
        rows = c[k]
        sps = statistics.median(r[0] for r in rows)
        roof = statistics.median(r[2] for r in rows)
        gf = statistics.median(r[1] for r in rows)
        best, bname = None, "-"  # the best setting by its median
        for s, v in t.get(k, {}).items():
            m = statistics.median(v)
            if best is None or m > best:
                best, bname = m, s
        ratio, tb, troof = "-", "-", "-"
        if best:
            # PyTorch's GEMM flops per second over the replay of the same
            # products in maskps's round just before it.
            troof = "%.0f%%" % (100 * statistics.median(
                b * a[3] / 1e3 / a[1] for a, b in zip(rows, t[k][bname])))
            # Round i of maskps ran right before round i of each setting:
            # the median of those paired ratios cancels the slow drift of
            # the machine's load better than a ratio of medians.
            pairs = [a[0] / b for a, b in zip(rows, t[k][bname])]
            ratio = "%.2fx (%.2f-%.2f)" % (statistics.median(pairs),
                                           min(pairs), max(pairs))
            tb = "%.0f (%s)" % (best, bname)
        print("| %s | %d | %d | %.0f | %s | %s | %.0f%% | %s | %.1f | %d |" %
              (k[0], k[1], k[2], sps, tb, ratio, 100 * roof, troof, gf,
               len(rows)))
    print()
    print("PyTorch, every setting tried (median samples/s over reps):")
    print()
    print("| model | batch | threads | " + " | ".join(
        s for s in SETTINGS) + " |")
    print("|---|---:|---:|" + "---:|" * len(SETTINGS))
    for k in sorted(t, key=lambda k: (-k[1], order.get(k[0], 99), k[2])):
        cells = ["%.0f" % statistics.median(t[k][s]) if s in t[k] else ""
                 for s in SETTINGS]
        print("| %s | %d | %d | %s |" % (k[0], k[1], k[2], " | ".join(cells)))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "compare":
        compare(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
