"""Encoder-side choices for `predicted` records (none of this is normative): fitting AdamW's
decoupled weight decay as an iterated scalar affine predictor, measuring the coded size of a record
exactly, and choosing predicted or intra (`plain`) coding per tensor by that size."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .. import dtypes as D
from .base import EncodedRecord
from .plain import Plain
from .predicted import FLOAT_DTYPES, Predicted, scalar_affine, to_float64


def stream_coded_size(plan, pool=None) -> int:
    """Bytes the writer will store for one stream: chain-coded chunks, or raw where that is
    smaller (as Writer._write_stream decides)."""
    n, ce = plan.elements.size, plan.chunk_elements
    raw = n * plan.dtype.itemsize
    jobs = [plan.elements[c * ce:(c + 1) * ce] for c in range(-(-n // ce))]

    def one(chunk):
        return len(plan.chain.encode_chunk(chunk, plan.dtype))
    sizes = list(pool.map(one, jobs)) if pool is not None else [one(j) for j in jobs]
    return min(sum(sizes), raw)


def record_size(rec: EncodedRecord, pool=None) -> int:
    return len(rec.params) + sum(stream_coded_size(s, pool) for s in rec.streams)


@dataclass
class Choice:
    kind: type
    options: dict = field(default_factory=dict)
    size: int = 0
    intra_size: int = 0
    label: str = "plain"
    record: EncodedRecord | None = None


def fit_decay(x: np.ndarray, ref: np.ndarray, dtype: D.DType, *, max_repeat: int = 256,
              sample: int = 4096, seed: int = 0):
    """(a, repeat) such that `repeat` roundings of a × ref reproduce x exactly for as many
    elements as possible: AdamW's decoupled weight decay applied once per step between two
    checkpoints. None when no candidate reproduces at least 5 % of a sample."""
    if dtype.name not in FLOAT_DTYPES or x.size == 0:
        return None
    xf, rf = to_float64(x, dtype), to_float64(ref, dtype)
    ok = np.isfinite(xf) & np.isfinite(rf) & (rf != 0) & (xf != 0)
    idx = np.flatnonzero(ok)
    if idx.size < 64:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.choice(idx, min(sample, idx.size), replace=False)
    ratio = xf[idx] / rf[idx]
    r = float(np.median(ratio))
    if not 0.5 < r < 1.0:
        return None
    # near 1 a binary32 factor is 1 − k·2^-24: k·n ≈ (1 − r)·2^24
    m = (1.0 - r) * 2.0 ** 24
    near = np.abs(ratio - r) <= max(1e-7, 4 * abs(1 - r) / 64)
    cand_idx = idx[near] if near.sum() >= 32 else idx
    xs, rs = x[cand_idx], ref[cand_idx]
    best, best_hits = None, 0
    tried = set()
    for n in range(1, max_repeat + 1):
        k0 = m / n
        if k0 < 0.5:
            break
        for k in {int(np.floor(k0)), int(np.ceil(k0))}:
            if k < 1 or (n, k) in tried:
                continue
            tried.add((n, k))
            a = float(np.float32(1.0 - k * 2.0 ** -24))
            hits = int((scalar_affine(rs, dtype, a, 0.0, n) == xs).sum())
            if hits > best_hits:
                best, best_hits = (a, n), hits
    if best is None or best_hits < 0.05 * xs.size:
        return None
    return best


def choose(name: str, dtype: D.DType, shape, elements: np.ndarray, ref: np.ndarray | None,
           reference, options, *, decay=None, lossy_step: float | None = None,
           extra: list[dict] | None = None, quantized: dict | None = None,
           pool=None) -> Choice:
    """Intra (`plain`) or predicted, whichever stores fewer bytes, measured by coding both.
    Candidates: identity and (when `decay` is given) the weight-decay predictor, each with the
    sub residual in exponent order (floats) or natural order; or, with `lossy_step`, a quantized
    residual (then chosen whenever it is smaller than intra, which it is by far). `quantized`:
    the Predicted.encode options of the one lossy candidate (predictor, step, rounding, seed),
    exactly as a step search measured it; then the only other candidate is intra."""
    own = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=2)
    try:
        intra = Plain.encode(dtype, shape, elements, options)
        intra_size = record_size(intra, pool)
        best = Choice(Plain, {}, intra_size, intra_size, "plain")
        if ref is None:
            return best
        cands = []
        is_float = dtype.name in FLOAT_DTYPES
        if quantized is not None:
            lossy_step, decay, extra = None, None, None
            cands.append(dict(quantized))
        res = "quantized" if (lossy_step and is_float) else "sub"
        step = lossy_step if res == "quantized" else None
        if quantized is None:
            cands.append(dict(predictor="identity", residual=res, step=step))
        if decay is not None and is_float:
            cands.append(dict(predictor="scalar", a=decay[0], repeat=decay[1], residual=res,
                              step=step))
        cands += extra or []
        for c in cands:
            enc = Predicted.encode(dtype, shape, elements, options, reference=reference,
                                   ref=ref, **c)
            size = record_size(enc, pool)
            if size < best.size:
                label = c.get("predictor", "identity") + (
                    "+decay" if c.get("predictor") == "scalar" else "")
                best = Choice(Predicted, dict(reference=reference, ref=ref, **c), size,
                              intra_size, f"predicted({label}, {c['residual']})", enc)
        return best
    finally:
        if own:
            pool.shutdown()
