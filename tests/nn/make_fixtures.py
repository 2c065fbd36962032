#!/usr/bin/python3
"""Writes the PyTorch reference fixtures the C models are checked against.

    /usr/bin/python3 tests/nn/make_fixtures.py [OUT_DIR]
    /usr/bin/python3 tests/nn/make_fixtures.py --check

OUT_DIR defaults to tests/nn/fixtures next to this script. --check writes
nothing and exits 1 if any committed file differs from what this script and
this PyTorch produce (or a file is missing or extra). Needs Debian's
python3-torch (1.13) and python3-numpy; CI never runs this: the files it
writes are committed, and the C tests only read them (tests/nn/fixture.h).
tests/nn/README.md is the contract: the file format, the naming of every
tensor, and the exact definition of every model below.

Every model is written here as a plain function of named tensors (no
nn.Module), so that each parameter name in a file is exactly the name used in
the formula. Each fixture is computed twice, in float32 (what is stored) and in
float64 from the same float32 values, and the scaled difference between the
two is stored in the file (meta/f32_vs_f64) and printed, so the C tests can
choose an honest tolerance.

Training-mode semantics throughout: batch statistics in BatchNorm and Dice,
dropout rate 0 (so no dropout mask exists), the hard one-hot forward and soft
backward of AMTL's straight-through estimator. No model has an evaluation mode
here.
"""

import json
import math
import os
import struct
import sys
import zlib

import torch
import torch.nn.functional as Fn

MAGIC = b"MPSFIXT\x00"
VERSION = 1
DT_F32, DT_I32, DT_U8 = 1, 2, 3

B = 8      # batch rows
F = 5      # fields
LABELS = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]

# Pre-activations of ReLU/PReLU closer to 0 than this, or AMTL argmax gaps
# smaller than this, make float32 and float64 disagree on a branch; such a
# draw is rejected and the next seed tried (deterministically).
KINK_MARGIN = 1e-3


# --------------------------------------------------------------------------
# File format (README.md "Format")
# --------------------------------------------------------------------------

def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def encode(tensors):
    """tensors: list of (name, dtype, shape tuple, bytes)."""
    out = bytearray(MAGIC)
    out += struct.pack("<II", VERSION, len(tensors))
    seen = set()
    for name, dtype, shape, data in tensors:
        nb = name.encode("ascii")
        assert 0 < len(nb) <= 255 and name not in seen, name
        seen.add(name)
        out += struct.pack("<H", len(nb)) + nb
        out += struct.pack("<BB", dtype, len(shape))
        for d in shape:
            out += struct.pack("<I", d)
        out += data
    out += struct.pack("<Q", fnv1a64(bytes(out)))
    return bytes(out)


def f32_entry(name, t):
    a = t.detach().to(torch.float32).contiguous().cpu().numpy()
    return (name, DT_F32, tuple(a.shape), a.astype("<f4").tobytes())


def i32_entry(name, t):
    a = t.detach().to(torch.int32).contiguous().cpu().numpy()
    return (name, DT_I32, tuple(a.shape), a.astype("<i4").tobytes())


def text_entry(name, s):
    b = s.encode("utf-8")
    return (name, DT_U8, (len(b),), b)


# --------------------------------------------------------------------------
# Deterministic values
# --------------------------------------------------------------------------

class Draw:
    """Seeded float32 values; every model has its own stream, so adding or
    changing one model never changes another model's file."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, shape, std=1.0, mean=0.0):
        return (torch.randn(shape, generator=self.g, dtype=torch.float64)
                * std + mean).to(torch.float32)

    def uniform(self, shape, lo, hi):
        return (torch.rand(shape, generator=self.g, dtype=torch.float64)
                * (hi - lo) + lo).to(torch.float32)

    def linear(self, P, name, out_dim, in_dim, bias=True):
        # Not the training init (Xavier, zero bias): random biases and unit
        # gain so that every term of every formula is exercised.
        P[name + ".weight"] = self.normal((out_dim, in_dim),
                                          1.0 / math.sqrt(in_dim))
        if bias:
            P[name + ".bias"] = self.normal((out_dim,), 0.1)

    def layernorm(self, P, name, shape):
        P[name + ".weight"] = self.normal(shape, 0.1, 1.0)
        P[name + ".bias"] = self.normal(shape, 0.1)


# --------------------------------------------------------------------------
# Building blocks (training mode). ctx collects branch margins.
# --------------------------------------------------------------------------

class Ctx:
    def __init__(self):
        self.margin = float("inf")   # smallest |pre-activation| at a kink
        self.aux = {}                # intermediate values worth storing

    def kink(self, x):
        if x.numel():
            self.margin = min(self.margin, x.detach().abs().min().item())


def relu(ctx, x):
    ctx.kink(x)
    return torch.relu(x)


def linear(P, name, x):
    return Fn.linear(x, P[name + ".weight"], P.get(name + ".bias"))


def mlp(ctx, P, prefix, x, n_hidden, out_layer):
    """n_hidden Linear+ReLU layers named prefix.0 .. prefix.{n-1}, then, if
    out_layer, a plain Linear prefix.{n} (FuxiCTR's MLP_Block)."""
    for i in range(n_hidden):
        x = relu(ctx, linear(P, "%s.%d" % (prefix, i), x))
        ctx.aux["%s.%d.out" % (prefix, i)] = x
    if out_layer:
        x = linear(P, "%s.%d" % (prefix, n_hidden), x)
    return x


def fm_term(E):
    """1/2 sum_k [(sum_f e_fk)^2 - sum_f e_fk^2], E (B,F,D) -> (B)."""
    s = E.sum(dim=1)
    return 0.5 * (s * s - (E * E).sum(dim=1)).sum(dim=1)


def field_layernorm(P, name, E, eps=1e-5):
    """A separate LayerNorm per field (FuxiCTR MaskNet's emb_norm): field f's
    D entries normalised with their own mean and biased variance, affine
    weight/bias row f of (F,D) parameters."""
    mu = E.mean(dim=2, keepdim=True)
    var = ((E - mu) ** 2).mean(dim=2, keepdim=True)
    xhat = (E - mu) / torch.sqrt(var + eps)
    return xhat * P[name + ".weight"] + P[name + ".bias"]


def instance_norm(P, name, E, eps=1e-5):
    """torch.nn.InstanceNorm1d(F, affine=True) on (B,F,D): statistics over
    each field's own D entries per instance, one scalar weight/bias per
    field (F)."""
    mu = E.mean(dim=2, keepdim=True)
    var = ((E - mu) ** 2).mean(dim=2, keepdim=True)
    xhat = (E - mu) / torch.sqrt(var + eps)
    return xhat * P[name + ".weight"].view(1, -1, 1) + \
        P[name + ".bias"].view(1, -1, 1)


# --------------------------------------------------------------------------
# Models: forward(ctx, P, I, cfg) -> logits (B)
# --------------------------------------------------------------------------

def lr_logit(P, I):
    return P["lr.bias"] + I["w"].sum(dim=1)


def fwd_lr(ctx, P, I, cfg):
    return lr_logit(P, I)


def fwd_fm(ctx, P, I, cfg):
    ctx.aux["fm"] = fm_term(I["E"])
    return lr_logit(P, I) + ctx.aux["fm"]


def fwd_dnn(ctx, P, I, cfg):
    x = I["E"].flatten(1)
    return mlp(ctx, P, "mlp", x, len(cfg["hidden"]), True).squeeze(1)


def fwd_deepfm(ctx, P, I, cfg):
    return lr_logit(P, I) + fm_term(I["E"]) + fwd_dnn(ctx, P, I, cfg)


def fwd_dcn(ctx, P, I, cfg):
    x0 = I["E"].flatten(1)
    x = x0
    for l in range(cfg["cross_layers"]):
        s = x @ P["cross.%d.weight" % l]                 # (B)
        x = x0 * s.unsqueeze(1) + P["cross.%d.bias" % l] + x
    ctx.aux["cross.out"] = x
    h = mlp(ctx, P, "mlp", x0, len(cfg["hidden"]), False)
    return linear(P, "fc", torch.cat([x, h], dim=1)).squeeze(1)


def crossnet_v2(ctx, P, x0, cfg):
    x = x0
    for l in range(cfg["cross_layers"]):
        if cfg["mixture"]:
            K = cfg["experts"]
            g = torch.softmax(Fn.linear(x, P["gate.weight"]), dim=1)  # (B,K)
            ctx.aux.setdefault("gate", []).append(g)
            mix = 0
            for k in range(K):
                v = torch.tanh(Fn.linear(x, P["cross.%d.V" % l][k]))
                v = torch.tanh(Fn.linear(v, P["cross.%d.C" % l][k]))
                u = Fn.linear(v, P["cross.%d.U" % l][k])
                mix = mix + g[:, k:k + 1] * (x0 * (u + P["cross.%d.bias" % l]))
            x = mix + x
        else:
            x = x0 * linear(P, "cross.%d" % l, x) + x
    return x


def fwd_dcnv2(ctx, P, I, cfg):
    x0 = I["E"].flatten(1)
    c = crossnet_v2(ctx, P, x0, cfg)
    ctx.aux["cross.out"] = c
    st = cfg["structure"]
    n = len(cfg["hidden"])
    if st == "crossnet_only":
        z = c
    elif st == "stacked":
        z = mlp(ctx, P, "mlp", c, n, False)
    elif st == "parallel":
        z = torch.cat([c, mlp(ctx, P, "mlp", x0, n, False)], dim=1)
    else:
        raise ValueError(st)
    return linear(P, "fc", z).squeeze(1)


def regulate(P, l, x, tau, D):
    """EDCN regulation module l: field-wise gates softmax(g / tau) over the
    F fields, each repeated over the field's D entries."""
    gc = torch.softmax(P["reg.%d.g_cross" % l] / tau, dim=0)
    gh = torch.softmax(P["reg.%d.g_deep" % l] / tau, dim=0)
    return (x * gc.repeat_interleave(D), x * gh.repeat_interleave(D))


def fwd_edcn(ctx, P, I, cfg):
    D = cfg["D"]
    x = I["E"].flatten(1)
    c, h = regulate(P, 0, x, cfg["tau"], D)
    c0 = c
    L = cfg["layers"]
    for l in range(L):
        s = c @ P["cross.%d.weight" % l]
        # MODELS.md keeps the cross residual; FuxiCTR's EDCN drops it.
        c = (c if cfg.get("cross_residual", True) else 0) + \
            c0 * s.unsqueeze(1) + P["cross.%d.bias" % l]
        h = relu(ctx, linear(P, "deep.%d" % l, h))
        if cfg["bridge"] == "hadamard":
            f = c * h
        elif cfg["bridge"] == "add":
            f = c + h
        elif cfg["bridge"] == "concat":
            f = relu(ctx, linear(P, "bridge.%d" % l, torch.cat([c, h], 1)))
        else:
            raise ValueError(cfg["bridge"])
        ctx.aux.update({"layer.%d.cross" % l: c, "layer.%d.deep" % l: h,
                        "layer.%d.bridge" % l: f})
        if l + 1 < L:
            c, h = regulate(P, l + 1, f, cfg["tau"], D)
    return linear(P, "fc", torch.cat([c, h, f], dim=1)).squeeze(1)


def mask_block(ctx, P, name, v_emb, v_in, net_ln):
    m = linear(P, name + ".mask.1",
               relu(ctx, linear(P, name + ".mask.0", v_emb)))
    ctx.aux[name + ".mask"] = m
    z = Fn.linear(m * v_in, P[name + ".hidden.weight"])
    if net_ln:
        z = Fn.layer_norm(z, (z.shape[1],), P[name + ".ln.weight"],
                          P[name + ".ln.bias"], eps=1e-5)
    out = relu(ctx, z)
    ctx.aux[name + ".out"] = out
    return out


def masknet_inputs(P, I, cfg):
    E = I["E"]
    v_emb = E.flatten(1)
    v_hid = field_layernorm(P, "emb_ln", E).flatten(1) if cfg["emb_ln"] \
        else v_emb
    return v_emb, v_hid


def fwd_sermasknet(ctx, P, I, cfg):
    v_emb, v = masknet_inputs(P, I, cfg)
    if cfg["emb_ln"]:
        ctx.aux["emb_ln.out"] = v
    for i in range(len(cfg["hidden"])):
        v = mask_block(ctx, P, "block.%d" % i, v_emb, v, cfg["net_ln"])
    return linear(P, "fc", v).squeeze(1)


def fwd_paramasknet(ctx, P, I, cfg):
    v_emb, v_hid = masknet_inputs(P, I, cfg)
    if cfg["emb_ln"]:
        ctx.aux["emb_ln.out"] = v_hid
    outs = [mask_block(ctx, P, "block.%d" % i, v_emb, v_hid, cfg["net_ln"])
            for i in range(cfg["blocks"])]
    return mlp(ctx, P, "mlp", torch.cat(outs, 1), len(cfg["hidden"]),
               True).squeeze(1)


def fwd_maskfusion(ctx, P, I, cfg):
    E = I["E"]
    v_emb = E.flatten(1)
    L = len(cfg["hidden"])
    # Mask controllers: alpha_t (B,F), normalised over t per field.
    alpha = torch.stack([mlp(ctx, P, "ctrl.%d" % t, v_emb, 1, True)
                         for t in range(L)], dim=0)         # (L,B,F)
    m = torch.softmax(alpha, dim=0)
    ctx.aux["mask"] = m
    e_in = instance_norm(P, "inorm", E)                     # (B,F,D)
    ctx.aux["inorm.out"] = e_in
    h = v_emb
    for t in range(L):
        ht = relu(ctx, linear(P, "mlp.%d" % t, h))
        h = torch.cat([(m[t].unsqueeze(2) * e_in).flatten(1), ht], dim=1)
    return linear(P, "fc", h).squeeze(1)


def twin(ctx, P, net, s):
    """One AML net for all fields at once: s (B,F,S) -> (B,F,D). Weights are
    stacked over fields: P[net.0.weight] (F,H,S), net.0.bias (F,H),
    net.1.weight (F,D,H), net.1.bias (F,D)."""
    z = torch.einsum("bfs,fhs->bfh", s, P[net + ".0.weight"]) + \
        P[net + ".0.bias"]
    z = relu(ctx, z)
    return torch.einsum("bfh,fdh->bfd", z, P[net + ".1.weight"]) + \
        P[net + ".1.bias"]


def amtl(ctx, P, I, cfg):
    """DESIGN.md "AMTL": returns the masked embeddings (B,F,D)."""
    E, s, a = I["E"], I["freq"], I["alpha"].unsqueeze(2)
    D = cfg["D"]
    h = a * twin(ctx, P, "amtl.h", s) + (1 - a) * twin(ctx, P, "amtl.l", s)
    z = h / cfg["tau"]
    top2 = torch.topk(z.detach(), 2, dim=2).values
    ctx.margin = min(ctx.margin, (top2[..., 0] - top2[..., 1]).min().item())
    t = torch.softmax(z, dim=2)
    k = t.detach().argmax(dim=2)                            # (B,F)
    hard = Fn.one_hot(k, D).to(t.dtype)
    that = t + (hard - t).detach()          # forward: hard; backward: soft
    M = torch.tril(torch.ones(D, D, dtype=t.dtype))         # M[i][j]=1 if j<=i
    m = that @ M                                            # (B,F,D)
    ctx.aux.update({"amtl.h": h, "amtl.t": t, "amtl.k": k, "amtl.mask": m})
    return E * m


def fwd_amtl_dnn(ctx, P, I, cfg):
    x = amtl(ctx, P, I, cfg).flatten(1)
    return mlp(ctx, P, "mlp", x, len(cfg["hidden"]), True).squeeze(1)


# --------------------------------------------------------------------------
# Model specs: parameters and inputs for one seed
# --------------------------------------------------------------------------

def std_inputs(r, D, with_w):
    I = {"E": r.normal((B, F, D)), "y": torch.tensor(LABELS)}
    if with_w:
        I["w"] = r.normal((B, F), 0.5)
    return I


def mlp_params(r, P, prefix, in_dim, hidden, out_dim):
    dims = [in_dim] + list(hidden)
    for i in range(len(hidden)):
        r.linear(P, "%s.%d" % (prefix, i), dims[i + 1], dims[i])
    if out_dim:
        r.linear(P, "%s.%d" % (prefix, len(hidden)), out_dim, dims[-1])


def spec_lr(r, cfg):
    P = {"lr.bias": r.normal((1,), 0.1)}
    I = {"w": r.normal((B, F), 0.5), "y": torch.tensor(LABELS)}
    return P, I


def spec_fm(r, cfg):
    P = {"lr.bias": r.normal((1,), 0.1)}
    return P, std_inputs(r, cfg["D"], True)


def spec_dnn(r, cfg):
    P = {}
    mlp_params(r, P, "mlp", F * cfg["D"], cfg["hidden"], 1)
    return P, std_inputs(r, cfg["D"], False)


def spec_deepfm(r, cfg):
    P = {"lr.bias": r.normal((1,), 0.1)}
    mlp_params(r, P, "mlp", F * cfg["D"], cfg["hidden"], 1)
    return P, std_inputs(r, cfg["D"], True)


def spec_dcn(r, cfg):
    C = F * cfg["D"]
    P = {}
    for l in range(cfg["cross_layers"]):
        P["cross.%d.weight" % l] = r.normal((C,), 1.0 / math.sqrt(C))
        P["cross.%d.bias" % l] = r.normal((C,), 0.1)
    mlp_params(r, P, "mlp", C, cfg["hidden"], 0)
    r.linear(P, "fc", 1, C + cfg["hidden"][-1])
    return P, std_inputs(r, cfg["D"], False)


def spec_dcnv2(r, cfg):
    C = F * cfg["D"]
    P = {}
    for l in range(cfg["cross_layers"]):
        if cfg["mixture"]:
            K, R = cfg["experts"], cfg["rank"]
            P["cross.%d.V" % l] = r.normal((K, R, C), 1.0 / math.sqrt(C))
            P["cross.%d.C" % l] = r.normal((K, R, R), 1.0 / math.sqrt(R))
            P["cross.%d.U" % l] = r.normal((K, C, R), 1.0 / math.sqrt(R))
            P["cross.%d.bias" % l] = r.normal((C,), 0.1)
        else:
            r.linear(P, "cross.%d" % l, C, C)
    if cfg["mixture"]:
        P["gate.weight"] = r.normal((cfg["experts"], C), 1.0 / math.sqrt(C))
    st = cfg["structure"]
    if st == "crossnet_only":
        fc_in = C
    else:
        mlp_params(r, P, "mlp", C, cfg["hidden"], 0)
        fc_in = cfg["hidden"][-1] + (C if st == "parallel" else 0)
    r.linear(P, "fc", 1, fc_in)
    return P, std_inputs(r, cfg["D"], False)


def spec_edcn(r, cfg):
    C = F * cfg["D"]
    P = {}
    for l in range(cfg["layers"]):
        # gamma trains from 1 (uniform gates); random here so that the
        # softmax's gradient is exercised away from its symmetric point.
        P["reg.%d.g_cross" % l] = r.normal((F,), 0.3, 1.0)
        P["reg.%d.g_deep" % l] = r.normal((F,), 0.3, 1.0)
        P["cross.%d.weight" % l] = r.normal((C,), 1.0 / math.sqrt(C))
        P["cross.%d.bias" % l] = r.normal((C,), 0.1)
        r.linear(P, "deep.%d" % l, C, C)
        if cfg["bridge"] == "concat":
            r.linear(P, "bridge.%d" % l, C, 2 * C)
    r.linear(P, "fc", 1, 3 * C)
    return P, std_inputs(r, cfg["D"], False)


def masknet_common(r, cfg):
    P = {}
    if cfg["emb_ln"]:
        r.layernorm(P, "emb_ln", (F, cfg["D"]))
    return P


def block_params(r, P, name, emb_dim, in_dim, out_dim, ratio, net_ln):
    agg = int(in_dim * ratio)
    r.linear(P, name + ".mask.0", agg, emb_dim)
    r.linear(P, name + ".mask.1", in_dim, agg)
    r.linear(P, name + ".hidden", out_dim, in_dim, bias=False)
    if net_ln:
        r.layernorm(P, name + ".ln", (out_dim,))


def spec_sermasknet(r, cfg):
    C = F * cfg["D"]
    P = masknet_common(r, cfg)
    dims = [C] + cfg["hidden"]
    for i in range(len(cfg["hidden"])):
        block_params(r, P, "block.%d" % i, C, dims[i], dims[i + 1],
                     cfg["ratio"], cfg["net_ln"])
    r.linear(P, "fc", 1, dims[-1])
    return P, std_inputs(r, cfg["D"], False)


def spec_paramasknet(r, cfg):
    C = F * cfg["D"]
    P = masknet_common(r, cfg)
    for i in range(cfg["blocks"]):
        block_params(r, P, "block.%d" % i, C, C, cfg["block_dim"],
                     cfg["ratio"], cfg["net_ln"])
    mlp_params(r, P, "mlp", cfg["blocks"] * cfg["block_dim"], cfg["hidden"], 1)
    return P, std_inputs(r, cfg["D"], False)


def spec_maskfusion(r, cfg):
    C = F * cfg["D"]
    P = {}
    L = len(cfg["hidden"])
    for t in range(L):
        mlp_params(r, P, "ctrl.%d" % t, C, [cfg["ctrl_hidden"]], F)
    P["inorm.weight"] = r.normal((F,), 0.1, 1.0)
    P["inorm.bias"] = r.normal((F,), 0.1)
    prev = C
    for t in range(L):
        r.linear(P, "mlp.%d" % t, cfg["hidden"][t], prev)
        prev = C + cfg["hidden"][t]
    r.linear(P, "fc", 1, prev)
    return P, std_inputs(r, cfg["D"], False)


def spec_amtl_dnn(r, cfg):
    D, S, H = cfg["D"], cfg["S"], cfg["twin_hidden"]
    P = {}
    for net in ("amtl.h", "amtl.l"):
        P[net + ".0.weight"] = r.normal((F, H, S), 1.0 / math.sqrt(S))
        P[net + ".0.bias"] = r.normal((F, H), 0.1)
        P[net + ".1.weight"] = r.normal((F, D, H), 2.0 / math.sqrt(H))
        P[net + ".1.bias"] = r.normal((F, D), 0.3)
    mlp_params(r, P, "mlp", F * D, cfg["hidden"], 1)
    I = std_inputs(r, D, False)
    # Frequency features of each value, as the pserver's stats give them:
    # log(1+count), the count normalised within its field (log scale, 0..1),
    # the click rate and a "seen often" flag. alpha is the normalised count.
    count = torch.exp(r.uniform((B, F), 0.0, math.log(1e5))).floor()
    clicks = torch.floor(count * r.uniform((B, F), 0.0, 0.3))
    lc = torch.log1p(count)
    norm = lc / lc.max(dim=0, keepdim=True).values
    I["freq"] = torch.stack([lc, norm, clicks / count,
                             (count >= 100).to(torch.float32)], dim=2)
    I["alpha"] = norm.clone()
    return P, I


# --------------------------------------------------------------------------
# Single-op fixtures: loss = sum over outputs of (output * dy)
# --------------------------------------------------------------------------

OP_N = 6   # features per row


def op_layernorm(ctx, P, I, cfg):
    return {"y": Fn.layer_norm(I["x"], (OP_N,), P["weight"], P["bias"],
                               eps=cfg["eps"])}


def op_batchnorm(ctx, P, I, cfg):
    rm, rv = I["running_mean"].clone(), I["running_var"].clone()
    y = Fn.batch_norm(I["x"], rm, rv, P["weight"], P["bias"], training=True,
                      momentum=cfg["momentum"], eps=cfg["eps"])
    return {"y": y, "running_mean": rm, "running_var": rv}


def op_dice(ctx, P, I, cfg):
    rm, rv = I["running_mean"].clone(), I["running_var"].clone()
    x = I["x"]
    p = torch.sigmoid(Fn.batch_norm(x, rm, rv, None, None, training=True,
                                    momentum=cfg["momentum"], eps=cfg["eps"]))
    return {"y": p * x + (1 - p) * P["alpha"] * x, "running_mean": rm,
            "running_var": rv}


def op_prelu(ctx, P, I, cfg):
    ctx.kink(I["x"])
    return {"y": Fn.prelu(I["x"], P["alpha"])}


def op_softmax(ctx, P, I, cfg):
    return {"y": torch.softmax(I["x"] / cfg["tau"], dim=1)}


def spec_op(r, cfg):
    I = {"x": r.normal((B, OP_N), 1.5, 0.3), "dy": r.normal((B, OP_N))}
    P = {}
    kind = cfg["op"]
    if kind in ("layernorm", "batchnorm"):
        r.layernorm(P, "", (OP_N,))
        P = {"weight": P[".weight"], "bias": P[".bias"]}
    if kind in ("batchnorm", "dice"):
        I["running_mean"] = r.normal((OP_N,), 0.2)
        I["running_var"] = r.uniform((OP_N,), 0.5, 1.5)
    if kind == "dice":
        P["alpha"] = r.normal((OP_N,), 0.3)
    if kind == "prelu":
        P["alpha"] = r.uniform((OP_N,), 0.05, 0.5)
    return P, I


OP_FWD = {"layernorm": op_layernorm, "batchnorm": op_batchnorm,
          "dice": op_dice, "prelu": op_prelu, "softmax": op_softmax}


# --------------------------------------------------------------------------
# The catalogue: file name -> (spec, forward, config)
# --------------------------------------------------------------------------

H2 = [16, 8]
FIXTURES = [
    ("lr", spec_lr, fwd_lr, {"D": 1}),
    ("fm", spec_fm, fwd_fm, {"D": 4}),
    ("dnn", spec_dnn, fwd_dnn, {"D": 4, "hidden": H2}),
    ("deepfm", spec_deepfm, fwd_deepfm, {"D": 4, "hidden": H2}),
    ("dcn", spec_dcn, fwd_dcn, {"D": 4, "hidden": H2, "cross_layers": 2}),
    ("dcnv2_crossnet", spec_dcnv2, fwd_dcnv2,
     {"D": 4, "hidden": [], "cross_layers": 2, "mixture": False,
      "structure": "crossnet_only"}),
    ("dcnv2_stacked", spec_dcnv2, fwd_dcnv2,
     {"D": 4, "hidden": H2, "cross_layers": 2, "mixture": False,
      "structure": "stacked"}),
    ("dcnv2_parallel", spec_dcnv2, fwd_dcnv2,
     {"D": 4, "hidden": H2, "cross_layers": 2, "mixture": False,
      "structure": "parallel"}),
    ("dcnv2_mix_parallel", spec_dcnv2, fwd_dcnv2,
     {"D": 4, "hidden": H2, "cross_layers": 2, "mixture": True,
      "experts": 3, "rank": 3, "structure": "parallel"}),
    ("dcnv2_mix_stacked", spec_dcnv2, fwd_dcnv2,
     {"D": 4, "hidden": H2, "cross_layers": 2, "mixture": True,
      "experts": 2, "rank": 4, "structure": "stacked"}),
    ("edcn_hadamard", spec_edcn, fwd_edcn,
     {"D": 4, "layers": 2, "bridge": "hadamard", "tau": 0.5}),
    ("edcn_add", spec_edcn, fwd_edcn,
     {"D": 4, "layers": 2, "bridge": "add", "tau": 0.5}),
    ("edcn_concat", spec_edcn, fwd_edcn,
     {"D": 4, "layers": 2, "bridge": "concat", "tau": 0.5}),
    ("edcn_hadamard_nores", spec_edcn, fwd_edcn,
     {"D": 4, "layers": 2, "bridge": "hadamard", "tau": 0.5,
      "cross_residual": False}),
    ("sermasknet", spec_sermasknet, fwd_sermasknet,
     {"D": 4, "hidden": H2, "ratio": 2.0, "emb_ln": True, "net_ln": True}),
    ("sermasknet_noln", spec_sermasknet, fwd_sermasknet,
     {"D": 4, "hidden": H2, "ratio": 1.0, "emb_ln": False, "net_ln": False}),
    ("paramasknet", spec_paramasknet, fwd_paramasknet,
     {"D": 4, "blocks": 3, "block_dim": 8, "hidden": [16], "ratio": 1.5,
      "emb_ln": True, "net_ln": True}),
    ("maskfusion", spec_maskfusion, fwd_maskfusion,
     {"D": 4, "hidden": H2, "ctrl_hidden": 8}),
    ("amtl_dnn", spec_amtl_dnn, fwd_amtl_dnn,
     {"D": 8, "S": 4, "twin_hidden": 8, "tau": 0.5, "hidden": H2}),
    ("op_layernorm", spec_op, None, {"op": "layernorm", "eps": 1e-5}),
    ("op_batchnorm", spec_op, None,
     {"op": "batchnorm", "eps": 1e-5, "momentum": 0.1}),
    ("op_dice", spec_op, None, {"op": "dice", "eps": 1e-9, "momentum": 0.01}),
    ("op_prelu", spec_op, None, {"op": "prelu"}),
    ("op_softmax", spec_op, None, {"op": "softmax", "tau": 0.5}),
]


# --------------------------------------------------------------------------
# Running one fixture in one precision
# --------------------------------------------------------------------------

NO_GRAD_INPUTS = {"y", "dy", "freq", "alpha", "running_mean", "running_var"}


def run(fwd, cfg, P0, I0, dtype):
    """Forward + backward in dtype. Returns (values, margin, aux): values maps
    stored names to tensors (outputs and gradients)."""
    ctx = Ctx()
    P = {n: t.to(dtype).clone().requires_grad_(True) for n, t in P0.items()}
    I = {n: t.to(dtype).clone().requires_grad_(n not in NO_GRAD_INPUTS)
         for n, t in I0.items()}
    vals = {}
    if fwd is None:
        outs = OP_FWD[cfg["op"]](ctx, P, I, cfg)
        loss = (outs["y"] * I["dy"]).sum()
        for n, t in outs.items():
            vals["output/" + n] = t.detach()
    else:
        logits = fwd(ctx, P, I, cfg)
        assert logits.shape == (B,), logits.shape
        loss = Fn.binary_cross_entropy_with_logits(logits, I["y"],
                                                   reduction="mean")
        vals["output/logits"] = logits.detach()
        vals["output/loss"] = loss.detach().reshape(())
    loss.backward()
    for n, t in I.items():
        if t.requires_grad:
            vals["grad/input/" + n] = t.grad.detach()
    for n, t in P.items():
        vals["grad/" + n] = t.grad.detach()
    return vals, ctx.margin, ctx.aux


def scaled_err(a, b):
    """max |a - b| / max |b| over the tensor (absolute when b is all zero):
    the metric of fixture_max_err() in fixture.c."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    if a.numel() == 0:
        return 0.0
    scale = b.abs().max().item()
    d = (a - b).abs().max().item()
    return d / scale if scale > 0 else d


def make(name, spec, fwd, cfg):
    base = zlib.crc32(name.encode())
    for attempt in range(200):
        seed = base + attempt
        P0, I0 = spec(Draw(seed), cfg)
        v64, margin, aux64 = run(fwd, cfg, P0, I0, torch.float64)
        if margin >= KINK_MARGIN:
            break
    else:
        raise RuntimeError("%s: no seed keeps kinks away from 0" % name)
    v32, _, aux32 = run(fwd, cfg, P0, I0, torch.float32)
    if "amtl.k" in aux32:
        assert torch.equal(aux32["amtl.k"], aux64["amtl.k"]), name
    errs = {n: scaled_err(v32[n], v64[n]) for n in v32}
    for n in aux32:
        if aux32[n] is not None and n != "amtl.k":
            a32 = aux32[n] if not isinstance(aux32[n], list) else \
                torch.stack(aux32[n])
            a64 = aux64[n] if not isinstance(aux64[n], list) else \
                torch.stack(aux64[n])
            errs["aux/" + n] = scaled_err(a32, a64)
    worst = max(errs.values())

    meta = dict(cfg)
    # kink_margin: the smallest |pre-activation| at a ReLU/PReLU kink or
    # AMTL argmax gap in this draw (null: the model has none).
    meta.update({"model": name, "B": B, "F": F, "seed": seed,
                 "kink_margin": margin if math.isfinite(margin) else None})
    entries = [text_entry("meta/config", json.dumps(meta, sort_keys=True)),
               text_entry("meta/param_names", "\n".join(P0.keys())),
               text_entry("meta/f32_vs_f64",
                          json.dumps(errs, sort_keys=True)),
               f32_entry("meta/f32_vs_f64_max", torch.tensor(worst))]
    for n, t in I0.items():
        entries.append(f32_entry("input/" + n, t))
    for n, t in P0.items():
        entries.append(f32_entry("param/" + n, t))
    for n in sorted(k for k in v32 if k.startswith("output/")):
        entries.append(f32_entry(n, v32[n]))
    for n in v32:
        if n.startswith("grad/"):
            entries.append(f32_entry(n, v32[n]))
    for n, t in aux32.items():
        if isinstance(t, list):
            t = torch.stack(t)
        if n == "amtl.k":
            entries.append(i32_entry("aux/" + n, t))
        else:
            entries.append(f32_entry("aux/" + n, t))
    return encode(entries), worst, seed


def main():
    torch.set_num_threads(1)  # one reduction order, run to run
    here = os.path.dirname(os.path.abspath(__file__))
    check = sys.argv[1:] == ["--check"]
    out_dir = sys.argv[1] if len(sys.argv) > 1 and not check else \
        os.path.join(here, "fixtures")
    if not check:
        os.makedirs(out_dir, exist_ok=True)
    total, bad = 0, []
    for name, spec, fwd, cfg in FIXTURES:
        data, worst, seed = make(name, spec, fwd, cfg)
        path = os.path.join(out_dir, name + ".bin")
        if check:
            try:
                with open(path, "rb") as f:
                    same = f.read() == data
            except FileNotFoundError:
                same = False
            if not same:
                bad.append(name + ".bin differs or is missing")
        else:
            with open(path, "wb") as f:
                f.write(data)
        total += len(data)
        print("%-20s %7d bytes  seed %10d  f32 vs f64 %.2e" %
              (name, len(data), seed, worst))
    print("total %d bytes in %d files" % (total, len(FIXTURES)))
    if check:
        known = {n + ".bin" for n, _, _, _ in FIXTURES}
        bad += ["%s is not made by this script" % f
                for f in sorted(os.listdir(out_dir))
                if f.endswith(".bin") and f not in known]
        for b in bad:
            print("check: " + b)
        print("check: %s" % ("FAILED" if bad else "committed fixtures are "
                             "reproduced byte for byte"))
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
