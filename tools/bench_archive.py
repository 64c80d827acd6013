"""Checkpoint archive benchmark (issue 9): a real all-MiniLM-L6-v2 AdamW fine-tuning series,
coded as a wcodec archive (each checkpoint predicted from the one before, keyframe every K), next
to the same checkpoints coded independently by wcodec (lossless, default planes > lanes) and by
ZipNN, and next to the naive XOR of bit patterns with zstd-3 per byte plane, in one run.

    python tools/bench_archive.py --out docs/predicted-bench.md
    python tools/bench_archive.py --checkpoints 4 --lossy 0.01     # quicker

The series is made by tools/finetune_series.py and cached under /tmp/wcodec-series/ (reruns are
fast). Every archive checkpoint is decoded again and compared byte for byte (lossless) or scored by
sentence-embedding cosine against the true checkpoint (lossy: residuals quantized against the
*decoded* predecessor, so the error does not grow along the chain). Sizes are whole files
(header, index, checksums and SHA-256s included); archive.json is reported separately.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CACHE = "/tmp/wcodec-series"


def get_series(steps, every, batch_pairs, max_len, limit=None) -> list[str]:
    folder = os.path.join(CACHE, f"minilm-s{steps}-e{every}-b{batch_pairs}")
    if not os.path.exists(os.path.join(folder, "series.json")):
        from finetune_series import make_series
        make_series(folder, steps=steps, every=every, batch_pairs=batch_pairs, max_len=max_len,
                    threads=1, log=lambda m: print(m, file=sys.stderr, flush=True))
    paths = sorted(glob.glob(os.path.join(folder, "step-*.safetensors")))
    return paths[:limit] if limit else paths


def load(path) -> dict:
    from wcodec.archive import load_weights
    return load_weights(path)[0]


def weights(t: dict) -> int:
    return sum(raw.size // dt.itemsize for dt, _, raw in t.values())


def independent_wcodec(path, work) -> int:
    from wcodec import formats
    from wcodec.writer import EncodeOptions
    out = Path(work) / "ind.wcodec"
    formats.encode_file(Path(path), out, EncodeOptions())
    n = out.stat().st_size
    out.unlink()
    return n


def zipnn_size(t: dict) -> int | None:
    try:
        from zipnn import ZipNN
    except ImportError:
        return None
    raw = b"".join(bytes(r) for _, _, r in t.values())
    z = ZipNN(input_format="byte", bytearray_dtype="float32", threads=2)
    c = z.compress(bytearray(raw))  # fresh copy: ZipNN overwrites its input
    assert bytes(z.decompress(c)) == raw, "ZipNN round trip"
    return len(c)


def xor_planes_size(t: dict, prev: dict, level=3) -> int:
    """The naive delta: XOR with the previous checkpoint's bit patterns, one zstd-3 frame per
    byte plane of each tensor."""
    cctx = zstandard.ZstdCompressor(level=level)
    n = 0
    for name, (dt, _, raw) in t.items():
        x = raw.view(dt.uint) ^ prev[name][2].view(dt.uint)
        planes = x.view(np.uint8).reshape(-1, dt.itemsize)
        for b in range(dt.itemsize):
            n += len(cctx.compress(np.ascontiguousarray(planes[:, b]).tobytes()))
    return n


def sub_entropy_bits(t: dict, prev: dict) -> float:
    """Order-0 entropy per byte plane of the zigzag integer difference of bit patterns (a rough
    bound for a plain delta coder, no context; bits in total)."""
    from wcodec.records.predicted import zigzag
    bits = 0.0
    for name, (dt, _, raw) in t.items():
        z = zigzag(raw.view(dt.uint) - prev[name][2].view(dt.uint), 8 * dt.itemsize)
        planes = z.view(np.uint8).reshape(-1, dt.itemsize)
        for b in range(dt.itemsize):
            c = np.bincount(planes[:, b], minlength=256).astype(np.float64)
            p = c[c > 0] / c.sum()
            bits += float(-(p * np.log2(p)).sum()) * planes.shape[0]
    return bits


def calibration_score(true: dict):
    """Score callback for the step search: mean cosine between the sentence embeddings of the
    decoded weights and those of the true checkpoint, on the 16 calibration sentences of
    tools/bench_lossy.py (NOT the 50 evaluation sentences the tables report)."""
    from bench_lossy import CALIBRATION
    from evalmodels import minilm
    want = minilm.embed(to_torch(true), CALIBRATION)

    def score(decoded: dict) -> float:
        got = minilm.embed(to_torch(decoded), CALIBRATION)
        return float((got * want).sum(-1).mean())
    return score


MARGIN = {"cos": 0.0, "snr": 0.0}   # headroom of a new step search (--margin-cos, --margin-snr)
SENS = {"power": 0.0, "factors": None}   # --sensitivity-power: step factors from the keyframe


def step_factors(true: dict) -> dict | None:
    """Per-tensor step multipliers from MiniLM's sensitivities on the calibration sentences
    (tools/bench_lossy.py minilm_sensitivity), computed once on the first checkpoint given."""
    if not SENS["power"]:
        return None
    if SENS["factors"] is None:
        from bench_lossy import minilm_sensitivity
        from wcodec.archive_lossy import sensitivity_factors
        w = minilm_sensitivity(to_torch(true))
        el = {n: (dt, s, r.view(dt.uint)) for n, (dt, s, r) in true.items()}
        SENS["factors"] = sensitivity_factors(w, el, SENS["power"])
    return SENS["factors"]


def lossy_control(spec: str, true: dict):
    """'step:REL[:ROUNDING]', 'cos:TARGET[:ROUNDING]' (calibration cosine) or
    'snr:DB[:ROUNDING]' (weight SNR) -> LossyControl."""
    from wcodec.archive_lossy import LossyControl
    kind, value, *rest = spec.split(":")
    rnd = rest[0] if rest else "dither"
    if kind == "step":
        return LossyControl(step=float(value), rounding=rnd, factors=step_factors(true))
    if kind == "cos":
        return LossyControl(score=calibration_score(true), target=float(value), rounding=rnd,
                            margin=MARGIN["cos"], factors=step_factors(true))
    if kind == "snr":
        return LossyControl(snr=float(value), rounding=rnd, margin=MARGIN["snr"],
                            factors=step_factors(true))
    raise SystemExit(f"bad lossy spec {spec!r}")


def build_archive(paths, folder, k, lossy=None, log=print):
    from wcodec.archive import Archive
    shutil.rmtree(folder, ignore_errors=True)
    a = Archive(folder, create=True, keyframe_every=k)
    times = []
    for p in paths:
        t = load(p)
        t0 = time.perf_counter()
        e = a.add(t, os.path.basename(p)[:-len(".safetensors")],
                  lossy=lossy_control(lossy, t) if lossy else None)
        times.append(time.perf_counter() - t0)
        log(f"  add {e['name']}: {e['bytes']:,} B, keyframe={e['keyframe']}, "
            f"{e['predicted_tensors']}/{e['tensors']} predicted, decay={e['decay']}, "
            f"rel step {e.get('lossy_rel_step')}, {times[-1]:.1f} s")
    return a, times


def decode_chain(a):
    """Decode every checkpoint in order, sharing one resolver so each level is decoded once."""
    from wcodec.records.predicted import ParentResolver
    res = ParentResolver([a.folder], cache_bytes=512 << 20)
    try:
        for e in a.checkpoints:
            r = res.open(bytes.fromhex(e["sha256"]), e["file"])
            out = {}
            for n in r.keys():
                data = r.read_bytes(n)
                res.cache_put((id(r), n), data)
                out[n] = (r.info(n).dtype, tuple(r.info(n).shape), data)
            yield e, out
    finally:
        res.close()


def to_torch(t: dict) -> dict:
    import torch
    out = {}
    for n, (dt, shape, raw) in t.items():
        tdt = {"float32": torch.float32, "int64": torch.int64}[dt.name]
        out[n] = torch.frombuffer(bytearray(raw), dtype=tdt).reshape(shape)
    return out


def max_error_in_steps(path, true: dict, dec: dict) -> float:
    """The largest |true − decoded| of a checkpoint file in units of each tensor's own step (as
    stored in its records); tensors stored lossless count 0 (and must be exact)."""
    from wcodec.archive_lossy import parent_steps
    from wcodec.reader import Reader
    with Reader(path) as r:
        steps = parent_steps(r)
    err = 0.0
    for n, (dt, shape, raw) in true.items():
        x = raw.view(dt.uint)
        y = dec[n][2].view(dt.uint)
        if n not in steps:
            assert x.tobytes() == y.tobytes(), n
            continue
        xf = raw.view(np.float32).astype(np.float64)
        yf = dec[n][2].view(np.float32).astype(np.float64)
        err = max(err, float(np.abs(xf - yf).max() / steps[n]))
    return err


def lossy_report(spec, paths, work, k, log) -> list[str]:
    """One lossy archive of the series under `spec` (see --lossy), scored per checkpoint by the
    sentence-embedding cosine on the 50 evaluation sentences (mean and min), the calibration
    cosine the step search used, the weight SNR, and the largest error in steps."""
    from evalmodels import minilm
    from wcodec.archive_lossy import weight_snr_db
    log(f"lossy archive {spec}")
    la, times = build_archive(paths, os.path.join(work, "lossy-" + spec.replace(":", "-")), k,
                              lossy=spec, log=log)
    kind, value, *rest = spec.split(":")
    what = {"step": f"fixed relative step {value}",
            "cos": f"step kept while calibration cosine >= {value}, new searches aim at "
                   f"+{MARGIN['cos']:g}",
            "snr": f"step kept while weight SNR >= {value} dB, new searches aim at "
                   f"+{MARGIN['snr']:g} dB"}[kind]
    if SENS["power"]:
        what += f", per-tensor step factors (w·RMS²)^-{SENS['power']:g} from sensitivities"
    lines = ["", f"Lossy residuals, {what}, {rest[0] if rest else 'dither'} rounding, "
                 "quantized against the decoded predecessor (keyframe lossless):", "",
             "| checkpoint | relative step | bytes | bits/weight | cosine mean | cosine min | "
             "calibration cosine | weight SNR dB | max error / step | add s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    bpw, worst_mean, worst_min = [], 1.0, 1.0
    prev = None
    for (e, dec), p, secs in zip(decode_chain(la), paths, times):
        t = load(p)
        cos = minilm.embedding_cosine(to_torch(t), to_torch(dec))
        b = 8 * e["bytes"] / weights(t)
        rel = e.get("lossy_rel_step")
        cal = snr = err = None
        if not e["keyframe"]:
            cal = calibration_score(t)(dec)
            refs = {n: prev[n][2].view(dt.uint) for n, (dt, _, _) in t.items()
                    if dt.name == "float32"}
            el = {n: (dt, s, r.view(dt.uint)) for n, (dt, s, r) in t.items()}
            snr = weight_snr_db(el, refs, dec)
            err = max_error_in_steps(os.path.join(la.folder, e["file"]), t, dec)
            bpw.append(b)
            worst_mean, worst_min = min(worst_mean, cos["mean"]), min(worst_min, cos["min"])
        prev = dec
        f = (lambda v, fmt: "-" if v is None else format(v, fmt))  # noqa: E731
        lines.append(f"| {e['name']} | {f(rel, '.5f')} | {e['bytes']:,} | {b:.3f} | "
                     f"{cos['mean']:.6f} | {cos['min']:.6f} | {f(cal, '.6f')} | {f(snr, '.2f')} | "
                     f"{f(err, '.3f')} | {secs:.1f} |")
        log(f"  {e['name']}: rel {rel}, {b:.3f} bpw, cos {cos['mean']:.6f}/{cos['min']:.6f}, "
            f"cal {cal}, snr {snr}")
    lines += ["", f"- {spec}: {np.mean(bpw):.3f} bit/weight per predicted checkpoint (max "
                  f"{max(bpw):.3f}); sentence-embedding cosine over the predicted checkpoints: "
                  f"lowest mean {worst_mean:.6f}, lowest single sentence {worst_min:.6f} "
                  f"(target: cosine >= 0.9998 at <= 0.5 bit/weight)."]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--batch-pairs", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=32)
    ap.add_argument("--checkpoints", type=int, default=None, help="use only the first N")
    ap.add_argument("--series", default=None, help="use the checkpoints of this folder")
    ap.add_argument("--keyframe-every", type=int, default=16)
    ap.add_argument("--lossy", nargs="*", default=["cos:0.9999"],
                    help="lossy runs: step:REL[:dither|nearest|stochastic] (fixed step relative to "
                         "each tensor's RMS), cos:TARGET[:...] (per-checkpoint step search "
                         "against the calibration-sentence cosine), snr:DB[:...] (search "
                         "against the weights' SNR); empty: no lossy run")
    ap.add_argument("--margin-cos", type=float, default=0.0,
                    help="cos runs: a new step search aims at target + this")
    ap.add_argument("--margin-snr", type=float, default=0.0,
                    help="snr runs: a new step search aims at target + this (dB)")
    ap.add_argument("--sensitivity-power", type=float, default=0.0,
                    help="lossy runs: per-tensor step factors (w·RMS²)^-P from MiniLM's "
                         "sensitivities on the calibration sentences (0: one step for all)")
    ap.add_argument("--no-lossless", action="store_true",
                    help="skip the lossless comparison (lossy runs only)")
    ap.add_argument("--out", default=None, help="write the markdown report here")
    ap.add_argument("--work", default=None)
    a = ap.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    MARGIN.update(cos=a.margin_cos, snr=a.margin_snr)
    SENS.update(power=a.sensitivity_power)
    if a.series:
        paths = sorted(glob.glob(os.path.join(a.series, "step-*.safetensors")))[:a.checkpoints]
    else:
        paths = get_series(a.steps, a.every, a.batch_pairs, a.max_len, a.checkpoints)
    work = a.work or tempfile.mkdtemp(prefix="bench-archive-")
    os.makedirs(work, exist_ok=True)
    log(f"{len(paths)} checkpoints from {os.path.dirname(paths[0])}, work {work}")

    lines, ok = [], True
    if not a.no_lossless:
        rows, prev = [], None
        for p in paths:
            t = load(p)
            row = dict(name=os.path.basename(p)[:-len(".safetensors")],
                       raw=sum(r.nbytes for _, _, r in t.values()), weights=weights(t))
            row["wcodec"] = independent_wcodec(p, work)
            row["zipnn"] = zipnn_size(t)
            row["xor"] = xor_planes_size(t, prev) if prev is not None else None
            row["sub_h0"] = sub_entropy_bits(t, prev) / 8 if prev is not None else None
            rows.append(row)
            log(f"  {row['name']}: wcodec {row['wcodec']:,} zipnn {row['zipnn']:,} xor {row['xor']}")
            prev = t

        arch, times = build_archive(paths, os.path.join(work, "lossless"), a.keyframe_every, log=log)
        ok = True
        for (e, dec), p in zip(decode_chain(arch), paths):
            t = load(p)
            same = all(dec[n][2].tobytes() == t[n][2].tobytes() for n in t) and set(dec) == set(t)
            ok &= same
            for row in rows:
                if row["name"] == e["name"]:
                    row.update(archive=e["bytes"], keyframe=e["keyframe"], exact=same,
                               predicted=e["predicted_tensors"], tensors=e["tensors"],
                               decay=e["decay"])
        for row, s in zip(rows, times):
            row["add_s"] = s
        # the XOR baseline with the archive's keyframes: a keyframe costs its independent wcodec file
        for row in rows:
            if row["keyframe"]:
                row["xor"] = row["wcodec"]
                row["sub_h0"] = row["wcodec"]

        tot = {k: sum(r[k] for r in rows) for k in ("raw", "wcodec", "zipnn", "xor", "archive",
                                                     "sub_h0")}
        manifest = os.path.getsize(os.path.join(arch.folder, "archive.json"))
        pred = [r for r in rows if not r["keyframe"]]
        lines = [
            f"Series: {len(rows)} checkpoints of all-MiniLM-L6-v2 (fp32, {rows[0]['weights']:,} "
            f"weights, {rows[0]['raw']:,} bytes each), AdamW lr 3e-5 wd 0.01, a checkpoint every "
            f"{a.every} steps, {a.batch_pairs} pairs/step, max {a.max_len} tokens "
            f"(tools/finetune_series.py). Keyframe every {a.keyframe_every}.",
            "",
            "| checkpoint | kind | wcodec indep. | ZipNN indep. | XOR + zstd-3 planes | "
            "order-0 H(sub) | archive | archive / wcodec | predicted tensors | bit-exact |",
            "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            kind = "keyframe" if r["keyframe"] else "predicted" + (
                f" (decay a={r['decay'][0]:.9g}, repeat {r['decay'][1]})" if r["decay"] else "")
            lines.append(f"| {r['name']} | {kind} | {r['wcodec']:,} | {r['zipnn']:,} | "
                         f"{r['xor']:,} | {int(r['sub_h0']):,} | {r['archive']:,} | "
                         f"{r['archive'] / r['wcodec']:.3f} | {r['predicted']}/{r['tensors']} | "
                         f"{'yes' if r['exact'] else 'NO'} |")
        lines.append(f"| **total** | | {tot['wcodec']:,} | {tot['zipnn']:,} | {tot['xor']:,} | "
                     f"{int(tot['sub_h0']):,} | {tot['archive']:,} | "
                     f"**{tot['archive'] / tot['wcodec']:.3f}** | | {'yes' if ok else 'NO'} |")
        lines += [
            "",
            f"- Archive / independent wcodec: **{tot['archive'] / tot['wcodec']:.3f}x** "
            f"(target <= 0.42x); archive / ZipNN: {tot['archive'] / tot['zipnn']:.3f}x; "
            f"archive / naive XOR + zstd planes: {tot['archive'] / tot['xor']:.3f}x. "
            f"archive.json adds {manifest:,} bytes.",
            f"- Predicted checkpoints only: archive / wcodec "
            f"{sum(r['archive'] for r in pred) / max(1, sum(r['wcodec'] for r in pred)):.3f}, "
            f"XOR / wcodec {sum(r['xor'] for r in pred) / max(1, sum(r['wcodec'] for r in pred)):.3f}"
            f", order-0 H(sub) / wcodec "
            f"{sum(r['sub_h0'] for r in pred) / max(1, sum(r['wcodec'] for r in pred)):.3f}; "
            f"bits per weight per predicted checkpoint: "
            f"{8 * sum(r['archive'] for r in pred) / max(1, sum(r['weights'] for r in pred)):.3f}.",
            f"- Independent: wcodec {tot['wcodec'] / tot['raw']:.4f} of raw, ZipNN "
            f"{tot['zipnn'] / tot['raw']:.4f} of raw. Archive add time "
            f"{np.mean([r['add_s'] for r in pred]) if pred else 0:.1f} s per predicted checkpoint "
            f"(shared machine).",
        ]

    for spec in a.lossy or []:
        lines += lossy_report(spec, paths, work, a.keyframe_every, log)

    report = "\n".join(lines)
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
