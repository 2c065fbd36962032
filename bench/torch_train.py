#!/usr/bin/python3
"""PyTorch reference trainer: trains the same model as `maskps train CONFIG`
with the same settings on the same rows, so that their test AUCs can be
compared (issue 5, bench/run_accuracy.sh).

    /usr/bin/python3 bench/torch_train.py CONFIG [--set key=value ...]
        [--json] [--threads N] [--keep-sparse-lr]

Needs Debian's python3-torch (CI never runs this). Run it from the
repository root, like maskps, so that the configs' relative data paths
resolve. Prints the test AUC and logloss at the best validation epoch; with
--json, one JSON object with every result instead.

What is the same as maskps (worker/train.c, pserver/store.c,
pserver/sparse_opt.c), by construction:
- Rows: data.split_valid / split_test of one training file are chosen per
  line by the same hash, u = (splitmix64(line ^ splitmix64(split_seed ^
  0x5eed)) >> 11) * 2^-53, line counted from 0 over every line read
  (malformed ones included); u < split_test is test, u < split_test +
  split_valid is valid, the rest trains. Training reads the file in order
  (maskps has no shuffling yet), batches of train.batch_size, the last one
  partial.
- Features: Criteo: I-fields missing -> 0, x > 2 -> floor(ln(x)^2), else
  int(x), the bucket a token of its field; an empty C-field is the field's
  missing token. libFM: the k-th feature on a line is field k, its token the
  index before ':'. Each (field, token) gets its own row (maskps hashes the
  pair to 64 bits; collisions are negligible here).
- Admission (embedding.min_count): a row's count grows by its occurrences
  in every training batch (at the push, after the forward); a key is read
  as zeros until its count reaches min_count, then gets a fresh N(0,
  init_std) row and fresh optimizer state, without that batch's gradient.
  With min_count 1 every key has its initial row from the start, also when
  first seen in validation or test (maskps: the deterministic init of an
  unseen key).
- Embedding optimizer: the pserver's per-row Adam (optimizer.sparse_lr,
  beta1/beta2/eps): each updated row counts its own steps for the bias
  corrections; rows not in a batch do not move (lazy, like SparseAdam);
  embedding.l2 is a decoupled decay w *= (1 - sparse_lr * l2)^k applied
  when the row is next updated, k = steps since its last update (maskps's
  lazy_l2). On a plateau the embedding lr is decayed with the dense one
  (maskps's ps_set_lr_scale, MODELS.md and FuxiCTR, whose embeddings share
  the optimizer); --keep-sparse-lr keeps optimizer.sparse_lr instead (what
  maskps did before ps_set_lr_scale, and the 2026-11-24 first sweep).
- Dense: torch Adam(lr, betas, eps, weight_decay=dense_l2), global gradient
  norm clipped to clip_norm over dense AND embedding gradients (per unique
  row, summed over the batch) together, scale clip / (norm + 1e-6).
  Initialisation: every weight Xavier-normal with fan_in = columns,
  fan_out = rows (a DCN/EDCN cross vector is a (1, C) weight), biases 0,
  LayerNorm gains 1, EDCN gate gammas 1.
- Loss: mean logloss on logits. Evaluation once per epoch on validation:
  on a new best AUC the test metrics are taken (= restoring the best state
  and testing it); otherwise patience counts up, and the dense and
  embedding lrs are multiplied by lr_decay_factor unless patience ran out
  (then stop).
- Model: the functional definitions of tests/nn/make_fixtures.py (the ones
  the C models are tested against), evaluated on (B, F, D) embeddings.

What differs: random draws (init values, batch order is the same), float
summation order, and dropout (model.dropout must be 0 here: the fixtures
have no dropout; the comparison runs use 0 on both sides).
"""

import argparse
import json
import math
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "nn"))
import make_fixtures as mf  # noqa: E402

M64 = (1 << 64) - 1


# --------------------------------------------------------------------------
# Config: the few keys this trainer reads, YAML subset as in configs/
# --------------------------------------------------------------------------

DEFAULTS = {
    "data.format": "criteo", "data.train": [], "data.valid": [],
    "data.test": [], "data.split_valid": 0.0, "data.split_test": 0.0,
    "data.split_seed": 2024, "data.max_lines": 0,
    "model.name": "dnn", "model.hidden_units": [400, 400, 400],
    "model.activation": "relu", "model.dropout": 0.0,
    "model.net_layernorm": True, "model.emb_layernorm": True,
    "model.use_bn": False, "model.num_blocks": 3, "model.block_dim": 64,
    "model.reduction_ratio": 1.0, "model.cross_layers": 3,
    "model.dcnv2_structure": "parallel", "model.low_rank": 0,
    "model.num_experts": 1, "model.bridge": "hadamard",
    "model.temperature": 1.0, "model.cross_residual": True,
    "embedding.dim": 16, "embedding.init_std": 1e-4,
    "embedding.min_count": 1, "embedding.l2": 0.0, "embedding.amtl": False,
    "optimizer.dense": "adam", "optimizer.lr": 1e-3, "optimizer.beta1": 0.9,
    "optimizer.beta2": 0.999, "optimizer.eps": 1e-8,
    "optimizer.clip_norm": 10.0, "optimizer.dense_l2": 0.0,
    "optimizer.sparse": "adam", "optimizer.sparse_lr": 1e-3,
    "optimizer.lazy_l2": True, "optimizer.adaptive_reg_lambda": 0.0,
    "train.batch_size": 4096, "train.epochs": 1, "train.max_steps": 0,
    "train.eval_every_steps": 0, "train.patience": 2,
    "train.lr_decay_factor": 0.1, "train.seed": 2024,
}


def scalar(s):
    s = s.strip()
    if s.startswith("[") and s.endswith("]"):
        inner = s[1:-1].strip()
        return [scalar(x) for x in inner.split(",")] if inner else []
    low = s.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def read_config(path, sets):
    cfg = dict(DEFAULTS)
    section = None
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            if not line.startswith(" "):
                section = line.strip().rstrip(":")
                continue
            k, _, v = line.strip().partition(":")
            cfg["%s.%s" % (section, k.strip())] = scalar(v) if v.strip() \
                else ""
    for s in sets:
        k, _, v = s.partition("=")
        cfg[k.strip()] = scalar(v)
    return cfg


# --------------------------------------------------------------------------
# Data: the same rows, split and features as maskps
# --------------------------------------------------------------------------

def mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def split_part(line, key, pvalid, ptest):
    u = (mix64(line ^ key) >> 11) * 2.0 ** -53
    if u < ptest:
        return 2
    if u < ptest + pvalid:
        return 1
    return 0


def criteo_bucket(v):
    if v > 2:
        return int(math.floor(math.log(v) ** 2))
    return int(v)


def parse_criteo(line):
    cols = line.rstrip("\n").rstrip("\r").split("\t")
    if len(cols) != 40 or cols[0] not in ("0", "1"):
        return None
    toks = []
    for f in range(13):
        s = cols[1 + f]
        try:
            v = int(s) if s else 0
        except ValueError:
            return None
        toks.append((f, str(criteo_bucket(v))))
    for c in range(26):
        f = 13 + c
        s = cols[1 + f]
        toks.append((f, s if s else None))
    return float(cols[0]), toks


def parse_libfm(line):
    parts = line.split()
    if not parts:
        return None
    lab = parts[0]
    if lab in ("1", "+1"):
        y = 1.0
    elif lab in ("0", "-1"):
        y = 0.0
    else:
        return None
    toks = []
    for k, p in enumerate(parts[1:]):
        idx, sep, val = p.partition(":")
        if not sep or not idx or float(val) != 1.0:
            return None
        toks.append((k, idx))
    return (y, toks) if toks else None


def load(cfg):
    """Returns (F, ids per part [tensor (n,F)], labels per part, nrows)."""
    files = [("train", 0)]
    if cfg["data.valid"] or cfg["data.test"]:
        # separate files (as maskps's data.valid / data.test): no split
        if float(cfg["data.split_valid"]) or float(cfg["data.split_test"]):
            sys.exit("torch_train: data.valid/test together with "
                     "split_valid/split_test is not supported")
        files += [("valid", 1), ("test", 2)]
    parse = parse_criteo if cfg["data.format"] == "criteo" else parse_libfm
    key = mix64((int(cfg["data.split_seed"]) ^ 0x5EED) & M64)
    pv, pt = float(cfg["data.split_valid"]), float(cfg["data.split_test"])
    vocab = {}
    rows = [[], [], []]
    labels = [[], [], []]
    nf = None
    line_no = 0
    max_lines = int(cfg["data.max_lines"])
    for name, fixed in files:
        line_no = 0   # each source counts its own lines (data.max_lines)
        paths = cfg["data." + name]
        for path in sorted(paths if isinstance(paths, list) else [paths]):
            with open(path) as f:
                for line in f:
                    i = line_no
                    line_no += 1
                    if max_lines and i >= max_lines:
                        break
                    ex = parse(line)
                    if ex is None or (nf is not None and len(ex[1]) != nf):
                        continue
                    if nf is None:
                        nf = len(ex[1])
                    part = fixed
                    if fixed == 0 and (pv > 0 or pt > 0):
                        part = split_part(i, key, pv, pt)
                    ids = [vocab.setdefault(t, len(vocab)) for t in ex[1]]
                    rows[part].append(ids)
                    labels[part].append(ex[0])
    out_ids = [torch.tensor(r, dtype=torch.long).reshape(-1, nf)
               for r in rows]
    out_y = [torch.tensor(l, dtype=torch.float32) for l in labels]
    return nf, out_ids, out_y, len(vocab)


# --------------------------------------------------------------------------
# Models: make_fixtures.py's definitions with maskps's training init
# --------------------------------------------------------------------------

def model_cfg(cfg, D):
    name = cfg["model.name"]
    hidden = list(cfg["model.hidden_units"])
    if name == "dnn":
        return mf.spec_dnn, mf.fwd_dnn, {"D": D, "hidden": hidden}
    if name == "dcnv2":
        if int(cfg["model.low_rank"]) or int(cfg["model.num_experts"]) > 1:
            sys.exit("torch_train: dcnv2 low-rank mixture not wired up")
        return mf.spec_dcnv2, mf.fwd_dcnv2, {
            "D": D, "hidden": hidden, "mixture": False,
            "cross_layers": int(cfg["model.cross_layers"]),
            "structure": cfg["model.dcnv2_structure"].lower()}
    if name == "edcn":
        return mf.spec_edcn, mf.fwd_edcn, {
            "D": D, "layers": int(cfg["model.cross_layers"]),
            "tau": float(cfg["model.temperature"]),
            "bridge": cfg["model.bridge"].lower(),
            "cross_residual": bool(cfg["model.cross_residual"])}
    if name in ("sermasknet", "paramasknet"):
        nb, bd = int(cfg["model.num_blocks"]), int(cfg["model.block_dim"])
        c = {"D": D, "emb_ln": bool(cfg["model.emb_layernorm"]),
             "net_ln": bool(cfg["model.net_layernorm"]),
             "ratio": float(cfg["model.reduction_ratio"])}
        if name == "sermasknet":
            c["hidden"] = [bd] * nb
            return mf.spec_sermasknet, mf.fwd_sermasknet, c
        c.update({"blocks": nb, "block_dim": bd, "hidden": hidden})
        return mf.spec_paramasknet, mf.fwd_paramasknet, c
    sys.exit("torch_train: model %s is not wired up" % name)


def xavier_std(rows, cols):
    return math.sqrt(2.0 / (rows + cols))


def init_params(P, gen):
    """maskps's training init (worker/nn/params.h, model_*.c) by name."""
    out = {}
    for name, t in P.items():
        shape = t.shape
        if name.endswith(".bias"):
            v = torch.zeros(shape)
        elif name.startswith("reg.") or name.endswith("ln.weight") or \
                name == "inorm.weight":
            v = torch.ones(shape)   # EDCN gammas, LayerNorm gains
        elif len(shape) == 1:       # a cross vector: a (1, C) weight
            v = torch.randn(shape, generator=gen) * xavier_std(1, shape[0])
        elif len(shape) == 2:       # (O, I)
            v = torch.randn(shape, generator=gen) * xavier_std(*shape)
        else:                       # stacked (K, O, I)
            v = torch.randn(shape, generator=gen) * xavier_std(*shape[1:])
        out[name] = v.float().requires_grad_(True)
    return out


class NoKink(mf.Ctx):
    def kink(self, x):  # the fixtures' branch-margin bookkeeping: not needed
        pass


# --------------------------------------------------------------------------
# The embedding table with maskps's admission and per-row Adam
# --------------------------------------------------------------------------

class Table:
    def __init__(self, n, D, cfg, gen):
        self.D = D
        self.std = float(cfg["embedding.init_std"])
        self.min_count = int(cfg["embedding.min_count"])
        self.lr = float(cfg["optimizer.sparse_lr"])
        self.b1 = float(cfg["optimizer.beta1"])
        self.b2 = float(cfg["optimizer.beta2"])
        self.eps = float(cfg["optimizer.eps"])
        self.wd = float(cfg["embedding.l2"])
        self.lazy = bool(cfg["optimizer.lazy_l2"])
        if cfg["optimizer.sparse"] != "adam":
            sys.exit("torch_train: only optimizer.sparse adam")
        if float(cfg["optimizer.adaptive_reg_lambda"]) != 0:
            sys.exit("torch_train: adaptive_reg_lambda not supported")
        self.gen = gen
        self.W = torch.randn((n, D), generator=gen, dtype=torch.float64) \
            .float() * self.std
        self.m = torch.zeros((n, D), dtype=torch.float64)
        self.v = torch.zeros((n, D), dtype=torch.float64)
        self.t = torch.zeros(n, dtype=torch.long)        # per-row Adam steps
        self.last = torch.zeros(n, dtype=torch.long)     # last push step
        self.count = torch.zeros(n, dtype=torch.long)
        self.admitted = torch.full((n,), self.min_count <= 1,
                                   dtype=torch.bool)

    def lookup(self, ids):
        """(B, F) ids -> (B, F, D) values; unadmitted keys read zeros."""
        E = self.W[ids]
        if self.min_count > 1:
            E = E * self.admitted[ids].unsqueeze(-1).to(E.dtype)
        return E

    def push(self, uniq, occ, g, step):
        """uniq (U) rows, occ (U) occurrences, g (U, D) summed gradients."""
        before = self.admitted[uniq].clone()
        self.count[uniq] += occ
        # rows pending before this push: maybe admitted now, no update
        newly = (~before) & (self.count[uniq] >= self.min_count)
        if newly.any():
            r = uniq[newly]
            self.W[r] = (torch.randn((len(r), self.D), generator=self.gen,
                                     dtype=torch.float64) * self.std).float()
            self.m[r] = 0
            self.v[r] = 0
            self.t[r] = 0
            self.admitted[r] = True
        pend = ~before
        self.last[uniq[pend]] = step
        r = uniq[before]
        if len(r) == 0:
            return
        gr = g[before].double()
        w = self.W[r].double()
        if self.wd > 0:
            k = torch.ones(len(r), dtype=torch.float64)
            if self.lazy:
                k = torch.where(self.t[r] > 0,
                                (step - self.last[r]).clamp(min=0).double(),
                                k)
            w = w * (1.0 - self.lr * self.wd) ** k.unsqueeze(1)
        self.t[r] += 1
        tt = self.t[r].double().unsqueeze(1)
        m = self.b1 * self.m[r] + (1 - self.b1) * gr
        v = self.b2 * self.v[r] + (1 - self.b2) * gr * gr
        self.m[r] = m.float().double()   # the store keeps float state
        self.v[r] = v.float().double()
        bc1 = 1 - self.b1 ** tt
        bc2 = 1 - self.b2 ** tt
        w = w - self.lr * (m / bc1) / ((v / bc2).sqrt() + self.eps)
        self.W[r] = w.float()
        self.last[r] = step


# --------------------------------------------------------------------------
# Metrics, as worker/metrics.c (exact AUC with tie-averaged ranks)
# --------------------------------------------------------------------------

def auc(scores, y):
    s = scores.double()
    order = torch.argsort(s)
    ss = s[order]
    ranks = torch.empty_like(ss)
    n = len(ss)
    i = 0
    sv = ss.tolist()
    rk = [0.0] * n
    while i < n:
        j = i
        while j + 1 < n and sv[j + 1] == sv[i]:
            j += 1
        r = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            rk[k] = r
        i = j + 1
    ranks = torch.tensor(rk, dtype=torch.float64)
    yy = y[order].double()
    npos = yy.sum().item()
    nneg = n - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    return ((ranks * yy).sum().item() - npos * (npos + 1) / 2) / (npos * nneg)


def logloss(z, y):
    z = z.double()
    y = y.double()
    return (z.clamp(min=0) - z * y + torch.log1p(torch.exp(-z.abs()))) \
        .mean().item()


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep-sparse-lr", action="store_true",
                    help="decay only the dense lr on a plateau (maskps "
                    "before ps_set_lr_scale)")
    a = ap.parse_args()
    cfg = read_config(a.config, a.sets)
    torch.set_num_threads(a.threads)
    if float(cfg["model.dropout"]) != 0:
        sys.exit("torch_train: model.dropout must be 0 (the fixture models "
                 "have no dropout); use --set model.dropout=0")
    if cfg["model.use_bn"] or cfg["model.activation"] != "relu":
        sys.exit("torch_train: use_bn and non-relu activations are not "
                 "wired up")
    if cfg["embedding.amtl"]:
        sys.exit("torch_train: AMTL has no reference here")
    if cfg["optimizer.dense"] != "adam":
        sys.exit("torch_train: only optimizer.dense adam")
    if int(cfg["train.eval_every_steps"]):
        sys.exit("torch_train: only per-epoch evaluation")
    t0 = time.time()
    seed = int(cfg["train.seed"])
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    F, ids, ys, nrows = load(cfg)
    D = int(cfg["embedding.dim"])
    spec, fwd, mcfg = model_cfg(cfg, D)
    mf.F, mf.B = F, 2          # the fixture specs read these globals
    P0, _ = spec(mf.Draw(0), mcfg)
    P = init_params(P0, gen)
    table = Table(nrows, D, cfg, gen)
    dense_lr = float(cfg["optimizer.lr"])
    opt = torch.optim.Adam(list(P.values()), lr=dense_lr,
                           betas=(float(cfg["optimizer.beta1"]),
                                  float(cfg["optimizer.beta2"])),
                           eps=float(cfg["optimizer.eps"]),
                           weight_decay=float(cfg["optimizer.dense_l2"]))
    clip = float(cfg["optimizer.clip_norm"])
    Bsz = int(cfg["train.batch_size"])
    max_steps = int(cfg["train.max_steps"])
    ctx = NoKink()

    def forward(E):
        return fwd(ctx, P, {"E": E}, mcfg)

    def evaluate(part):
        with torch.no_grad():
            zs = []
            for i in range(0, len(ids[part]), Bsz):
                zs.append(forward(table.lookup(ids[part][i:i + Bsz])))
            z = torch.cat(zs)
        return auc(z, ys[part]), logloss(z, ys[part])

    Xtr, Ytr = ids[0], ys[0]
    step = 0
    best_auc, bad = -math.inf, 0
    res = {"best_epoch": 0, "valid_auc": None, "test_auc": None,
           "test_logloss": None, "epochs": 0, "stopped_early": False,
           "rows": [len(x) for x in ids], "fields": F, "keys": nrows,
           "dense_params": sum(p.numel() for p in P.values()), "curve": []}
    stop = False
    for epoch in range(1, int(cfg["train.epochs"]) + 1):
        res["epochs"] = epoch
        tot, n = 0.0, 0
        for i in range(0, len(Xtr), Bsz):
            if max_steps and step >= max_steps:
                stop = True
                break
            step += 1
            x, y = Xtr[i:i + Bsz], Ytr[i:i + Bsz]
            uniq, inv, occ = torch.unique(x, return_inverse=True,
                                          return_counts=True)
            E = table.lookup(x).detach().requires_grad_(True)
            z = forward(E)
            loss = Fn_bce(z, y)
            opt.zero_grad(set_to_none=False)
            loss.backward()
            gE = torch.zeros((len(uniq), D), dtype=torch.float32)
            gE.index_add_(0, inv.reshape(-1), E.grad.reshape(-1, D))
            sq = sum((p.grad.double() ** 2).sum().item() for p in P.values())
            sq += (gE.double() ** 2).sum().item()
            norm = math.sqrt(sq)
            if not math.isfinite(norm) or not math.isfinite(loss.item()):
                sys.exit("torch_train: diverged at step %d" % step)
            if clip > 0 and norm > clip:
                s = clip / (norm + 1e-6)
                for p in P.values():
                    p.grad.mul_(s)
                gE.mul_(s)
            table.push(uniq, occ, gE, step)
            opt.step()
            tot += loss.item() * len(y)
            n += len(y)
        if n == 0:
            break
        va, vl = evaluate(1)
        better = math.isfinite(va) and va > best_auc
        res["curve"].append({"epoch": epoch, "train_loss": tot / n,
                             "valid_auc": va, "valid_logloss": vl,
                             "lr": opt.param_groups[0]["lr"],
                             "sparse_lr": table.lr})
        if not a.json:
            print("epoch %d: train loss %.4f valid AUC %.4f logloss %.4f%s"
                  % (epoch, tot / n, va, vl, " (best)" if better else ""),
                  file=sys.stderr)
        if better:
            best_auc, bad = va, 0
            ta, tl = evaluate(2)
            res.update(best_epoch=epoch, valid_auc=va, valid_logloss=vl,
                       test_auc=ta, test_logloss=tl, step=step)
        else:
            bad += 1
            if bad >= int(cfg["train.patience"]):
                res["stopped_early"] = True
                break
            f = float(cfg["train.lr_decay_factor"])
            for g in opt.param_groups:
                g["lr"] *= f
            if not a.keep_sparse_lr:
                table.lr *= f
        if stop:
            break
    res["seconds"] = time.time() - t0
    if a.json:
        print(json.dumps(res))
    else:
        print("best validation: epoch %d, AUC %.4f" % (res["best_epoch"],
                                                      res["valid_auc"]))
        print("test AUC %.4f  logloss %.4f" % (res["test_auc"],
                                              res["test_logloss"]))


def Fn_bce(z, y):
    return torch.nn.functional.binary_cross_entropy_with_logits(z, y)


if __name__ == "__main__":
    main()
