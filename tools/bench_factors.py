#!/usr/bin/env python3
"""Rate–distortion of factor records (record kind 5) against plain quantization, at equal stored
bytes, on real weights (docs/factors.md), and the runtime of factored layers.

    python tools/bench_factors.py minilm        [--points 3.0,4.0,5.0] [--rank 16]
    python tools/bench_factors.py efficientnet  [--points 4.0,5.0,6.0] [--images 256]
    python tools/bench_factors.py runtime
    python tools/bench_factors.py auto minilm|efficientnet [--steps 0.28,0.07]

`auto` runs the encoder's automatic mode (factor_encoder.choose) on every weight matrix of the
model and counts how often it picks plain quantization or a factor record (see run_auto).

For every 2-D (MiniLM: every Linear of the encoder) or conv/linear (EfficientNet: every weight of
rank >= 2 with >= 4096 elements) weight, three codings are compared over the same set of tensors;
all other tensors are kept as they are in every coding:

- quantization only: record kind 2, uniform quantizer, one scale per output channel; the step is
  set for the target bits/weight (measured on the coded bytes);
- factor only: low-rank U·V (truncated SVD) with 8-bit per-row quantized factors, one global rank
  fraction chosen by bisection so that the coded bytes equal the quantized coding's;
- quantized base + low-rank: a factor record of rank --rank whose residual is quantized the same
  way (channel scales), the residual step chosen by bisection for equal coded bytes.

Sizes are the bytes of params and of every stream through the real codec chain (planes → lanes,
raw where smaller). Metrics: MiniLM sentence-embedding cosine against the original (50 sentences,
tools/evalmodels/minilm.py); EfficientNet-lite0 top-1 agreement with the original model on
deterministic synthetic images plus crops of the two photos shipped with scikit-learn (no dataset
can be downloaded here, so this is agreement with the fp32 model, not ImageNet accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from wcodec import dtypes as D  # noqa: E402
from wcodec import factor_encoder as FE  # noqa: E402
from wcodec.records.factors import Factorization, Factors, LOW_RANK  # noqa: E402
from wcodec.records.quantized import Quantized  # noqa: E402
from wcodec.writer import EncodeOptions  # noqa: E402

F32 = D.BY_NAME["float32"]
OPT = EncodeOptions()


def _decoded(rec, shape):
    return rec.decoded.view(np.float32).reshape(shape).copy()


class Weights:
    """The compared tensors as 2-D float32 matrices, with cached SVDs."""

    def __init__(self, tensors: dict):
        self.t = {n: np.ascontiguousarray(a, np.float32) for n, a in tensors.items()}
        self.n = sum(a.size for a in self.t.values())
        self._svd = {}

    def bits(self, name):
        a = self.t[name]
        return a.reshape(-1).view(np.uint32)

    def mat(self, name):
        a = self.t[name]
        return a.reshape(a.shape[0], -1).astype(np.float64)

    def svd(self, name):
        if name not in self._svd:
            self._svd[name] = np.linalg.svd(self.mat(name), full_matrices=False)
        return self._svd[name]


def quantized(w: Weights, rel_step: float):
    size, out = 0, {}
    for n, a in w.t.items():
        rec = Quantized.encode(F32, a.shape, w.bits(n), OPT, rel_step=rel_step,
                               quantizer="uniform", scale_mode="channel")
        size += FE.coded_size(rec)
        out[n] = _decoded(rec, a.shape)
    return size, out


def lowrank_fz(w: Weights, name: str, r: int) -> Factorization:
    u, s, vt = w.svd(name)
    rows, cols = w.mat(name).shape
    r = max(1, min(r, rows, cols))
    rs = np.sqrt(s[:r])
    return Factorization(LOW_RANK, [(rows, cols, r)], [u[:, :r] * rs, rs[:, None] * vt[:r]],
                         [FE.parse_codec("q8"), FE.parse_codec("q8")])


def factor_only(w: Weights, frac: float):
    size, out = 0, {}
    for n, a in w.t.items():
        rows, cols = w.mat(n).shape
        r = max(1, int(round(frac * min(rows, cols))))
        rec = Factors.encode(F32, a.shape, w.bits(n), OPT, factorization=lowrank_fz(w, n, r))
        size += FE.coded_size(rec)
        out[n] = _decoded(rec, a.shape)
    return size, out


def base_plus_lowrank(w: Weights, rank: int, rel_step: float):
    size, out = 0, {}
    for n, a in w.t.items():
        rec = Factors.encode(F32, a.shape, w.bits(n), OPT, factorization=lowrank_fz(w, n, rank),
                             residual="quantized", residual_rel_step=rel_step,
                             residual_scales="channel", residual_quantizer="uniform")
        size += FE.coded_size(rec)
        out[n] = _decoded(rec, a.shape)
    return size, out


def bisect(fn, target, lo, hi, *, increasing: bool, iters: int = 7):
    """The argument of fn (size, decoded) whose size is closest to `target` from below."""
    best = None
    for _ in range(iters):
        mid = np.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi)
        size, dec = fn(mid)
        if size <= target:
            if best is None or size > best[1]:
                best = (mid, size, dec)
            lo, hi = (mid, hi) if increasing else (lo, mid)
        else:
            lo, hi = (lo, mid) if increasing else (mid, hi)
    if best is None:
        size, dec = fn(lo if increasing else hi)
        best = (lo if increasing else hi, size, dec)
    return best


def rel_step_for_bits(w: Weights, bits: float):
    """Bisection on the quantizer's relative step for a target bits/weight (coded bytes)."""
    target = bits * w.n / 8
    return bisect(lambda s: quantized(w, s), target, 0.01, 4.0, increasing=False)


def study(w: Weights, metric, points, rank: int) -> list[dict]:
    rows = []
    for bits in points:
        t0 = time.time()
        qs, qsize, qdec = rel_step_for_bits(w, bits)
        fo_frac, fo_size, fo_dec = bisect(lambda f: factor_only(w, f), qsize, 0.002, 1.0,
                                          increasing=True)
        bl_step, bl_size, bl_dec = bisect(lambda s: base_plus_lowrank(w, rank, s), qsize, 0.01,
                                          4.0, increasing=False)
        row = dict(bits_target=bits, seconds=None)
        for key, size, dec, extra in (("quantized", qsize, qdec, dict(rel_step=qs)),
                                      ("factor_only", fo_size, fo_dec, dict(rank_fraction=fo_frac)),
                                      ("base_plus_lowrank", bl_size, bl_dec,
                                       dict(rank=rank, rel_step=bl_step))):
            err = sum(float(np.sum((dec[n].astype(np.float64) - w.t[n]) ** 2)) for n in w.t)
            sig = sum(float(np.sum(w.t[n].astype(np.float64) ** 2)) for n in w.t)
            row[key] = dict(bytes=size, bits_per_weight=8 * size / w.n,
                            snr_db=10 * np.log10(sig / err), **metric(dec), **extra)
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


# -- models ------------------------------------------------------------------------------------------
def run_minilm(args):
    from evalmodels import minilm
    state = minilm.load_state()
    names = [n for n, t in state.items() if t.dim() == 2 and t.is_floating_point()
             and n.startswith("encoder.")]
    w = Weights({n: state[n].numpy() for n in names})
    import torch

    def metric(dec):
        st = dict(state)
        for n, a in dec.items():
            st[n] = torch.from_numpy(a)
        c = minilm.embedding_cosine(state, st)
        return dict(cos_mean=c["mean"], cos_min=c["min"])
    return dict(model="all-MiniLM-L6-v2", tensors=len(names), weights=w.n,
                rows=study(w, metric, args.points, args.rank))


def run_efficientnet(args):
    import torch
    from bench_gated import find_photos, load_model, photo_crops, synthetic, to_batches
    torch.set_num_threads(2)
    model = load_model()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = [n for n, t in state.items() if t.dim() >= 2 and t.numel() >= 4096
             and t.is_floating_point()]
    w = Weights({n: state[n].numpy() for n in names})
    rng = np.random.default_rng(1234)
    photos = find_photos(None)
    n_photo = args.images // 2 if photos else 0
    imgs = np.concatenate([photo_crops(photos, n_photo, 224, rng),
                           synthetic(args.images - n_photo, 224, rng)])
    batches = to_batches(imgs, 32)

    def predict():
        with torch.no_grad():
            return torch.cat([model(x).argmax(-1) for x in batches]).numpy()
    ref = predict()

    def metric(dec):
        sd = dict(state)
        for n, a in dec.items():
            sd[n] = torch.from_numpy(a)
        model.load_state_dict(sd)
        p = predict()
        model.load_state_dict(state)
        return dict(top1_agreement=float(np.mean(p == ref)),
                    agreement_photo=float(np.mean((p == ref)[:n_photo])) if n_photo else None)
    return dict(model="EfficientNet-lite0", tensors=len(names), weights=w.n,
                images=args.images, photo_crops=n_photo,
                rows=study(w, metric, args.points, args.rank))


def run_runtime(args):
    from wcodec.factored_modules import bench_layers
    return dict(rows=bench_layers())


# -- automatic mode on every tensor ---------------------------------------------------------------
def auto_tensors(model: str) -> dict:
    """MiniLM: every 2-D float tensor of the checkpoint (embeddings, the 36 encoder Linears, the
    pooler). EfficientNet-lite0: every float weight of rank >= 2 with >= 4096 elements (conv
    kernels [out, in, kh, kw] are coded as their [out, in·kh·kw] matrix view, Q.matrix_shape, as
    the encoder does; depthwise kernels become [C, 9])."""
    if model == "minilm":
        from evalmodels import minilm
        st = minilm.load_state()
        return {n: t.numpy() for n, t in st.items() if t.dim() == 2 and t.is_floating_point()}
    from bench_gated import load_model
    st = load_model().state_dict()
    return {n: t.detach().numpy() for n, t in st.items()
            if t.dim() >= 2 and t.numel() >= 4096 and t.is_floating_point()}


def run_auto(args):
    """choose() on every tensor at each relative step (uniform quantizer, one scale per output
    channel; the factor candidates are low-rank r in --ranks with q8 factors and a residual
    quantized with the same relative step and channel scales)."""
    t0 = time.time()
    tensors = auto_tensors(args.target)
    out = dict(model=args.target, tensors=len(tensors),
               weights=int(sum(a.size for a in tensors.values())), points=[])
    for step in args.steps:
        t1 = time.time()
        pt = dict(rel_step=step, quantized=0, factors=0, bytes_chosen=0, bytes_quantized=0,
                  picked=[], best_ratio=None)
        for n, a in tensors.items():
            a = np.ascontiguousarray(a, np.float32)
            b = FE.choose(F32, a.shape, a.reshape(-1).view(np.uint32), OPT, step=step,
                          scale_mode="channel", ranks=args.ranks)
            q = b["candidates"][0]
            pt["bytes_chosen"] += b["size"]
            pt["bytes_quantized"] += q["size"]
            for c in b["candidates"][1:]:        # the factor candidate closest in size
                ratio = c["size"] / q["size"]
                if pt["best_ratio"] is None or ratio < pt["best_ratio"][0]:
                    pt["best_ratio"] = (ratio, c["mse"] / q["mse"] if q["mse"] else None,
                                        n, c["what"])
            if args.verbose:
                print(f"{step} {n} {a.shape} {b['kind'].__name__} {time.time() - t1:.0f} s",
                      file=sys.stderr, flush=True)
            if b["kind"] is Quantized:
                pt["quantized"] += 1
            else:
                pt["factors"] += 1
                f = next(c for c in b["candidates"][1:] if c["size"] == b["size"]
                         and c["mse"] == b["mse"])
                pt["picked"].append(dict(name=n, shape=list(a.shape), what=f["what"],
                                         factor_bytes=f["size"], factor_mse=f["mse"],
                                         quant_bytes=q["size"], quant_mse=q["mse"]))
        pt["bits_per_weight_quantized"] = 8 * pt["bytes_quantized"] / out["weights"]
        pt["bits_per_weight_chosen"] = 8 * pt["bytes_chosen"] / out["weights"]
        pt["seconds"] = round(time.time() - t1, 1)
        print(json.dumps({k: v for k, v in pt.items() if k != "picked"}), file=sys.stderr)
        out["points"].append(pt)
        out["seconds"] = round(time.time() - t0, 1)
        if args.json:                        # after every point: a long run keeps what it has
            args.json.write_text(json.dumps(out, indent=1))
    out["seconds"] = round(time.time() - t0, 1)
    return out


def auto_table(res) -> str:
    lines = [f"{res['model']}: {res['tensors']} tensors, {res['weights']:,} weights, "
             f"{res['seconds']} s", "",
             "| rel_step | bits/w (all quantized) | bits/w (chosen) | chose quantization | "
             "chose factors | closest factor candidate: size / quantized size, mse / quantized "
             "mse (tensor) |", "|---|---|---|---|---|---|"]
    for p in res["points"]:
        r = p["best_ratio"]
        close = "–" if r is None else (f"{r[0]:.3f}, {r[1]:.3f} ({r[2]}, {r[3]})")
        lines.append(f"| {p['rel_step']} | {p['bits_per_weight_quantized']:.3f} | "
                     f"{p['bits_per_weight_chosen']:.3f} | {p['quantized']} | {p['factors']} | "
                     f"{close} |")
    picked = [(p["rel_step"], c) for p in res["points"] for c in p["picked"]]
    if picked:
        lines += ["", "| rel_step | tensor | shape | factor record | factor bytes | factor mse | "
                  "quantized bytes | quantized mse |", "|---|---|---|---|---|---|---|---|"]
        for s, c in picked:
            lines.append(f"| {s} | {c['name']} | {c['shape']} | {c['what']} | "
                         f"{c['factor_bytes']:,} | {c['factor_mse']:.4g} | "
                         f"{c['quant_bytes']:,} | {c['quant_mse']:.4g} |")
    return "\n".join(lines)


def table(res) -> str:
    keys = [k for k in ("cos_mean", "cos_min", "top1_agreement") if k in res["rows"][0]["quantized"]]
    out = ["| target bits/w | coding | bits/weight | SNR dB | " + " | ".join(keys) + " | setting |",
           "|---|---|---|---|" + "---|" * len(keys) + "---|"]
    for r in res["rows"]:
        for key in ("quantized", "factor_only", "base_plus_lowrank"):
            c = r[key]
            setting = {"quantized": f"rel_step {c.get('rel_step', 0):.3f}",
                       "factor_only": f"rank {100 * c.get('rank_fraction', 0):.1f} % of full",
                       "base_plus_lowrank": f"rank {c.get('rank')}, rel_step "
                                            f"{c.get('rel_step', 0):.3f}"}[key]
            out.append(f"| {r['bits_target']} | {key} | {c['bits_per_weight']:.3f} | "
                       f"{c['snr_db']:.2f} | " + " | ".join(f"{c[k]:.5f}" for k in keys)
                       + f" | {setting} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=["minilm", "efficientnet", "runtime", "auto"])
    ap.add_argument("target", nargs="?", choices=["minilm", "efficientnet"],
                    help="model for `auto`")
    ap.add_argument("--steps", default="0.28,0.07",
                    help="auto: relative quantizer steps (~4 and ~6 bits/weight)")
    ap.add_argument("--ranks", default="4,8,16,32", help="auto: low-rank candidates")
    ap.add_argument("-v", "--verbose", action="store_true", help="auto: one line per tensor")
    ap.add_argument("--points", default=None, help="target bits/weight, comma separated")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.model == "auto":
        if args.target is None:
            ap.error("auto needs a model: minilm or efficientnet")
        args.steps = [float(v) for v in args.steps.split(",") if v]
        args.ranks = tuple(int(v) for v in args.ranks.split(",") if v)
        res = run_auto(args)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        print(auto_table(res))
        return 0
    default = {"minilm": "3.0,4.0,5.0", "efficientnet": "4.0,5.0,6.0", "runtime": ""}
    args.points = [float(v) for v in (args.points or default[args.model]).split(",") if v]
    res = {"minilm": run_minilm, "efficientnet": run_efficientnet,
           "runtime": run_runtime}[args.model](args)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    if args.model != "runtime":
        print(table(res))
    else:
        print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
