"""Step control for lossy checkpoint archives (encoder-only; nothing here changes how a file
decodes). A lossy predicted checkpoint quantizes each float tensor's residual against the decoded
predecessor with the step

    step_t = rel × RMS(tensor t)                 (matrices, rank ≥ 2)
    step_t = rel × vector_factor × RMS(tensor t) (vectors: biases, LayerNorm)

and one relative step `rel` per checkpoint. `rel` is either fixed, or the largest value (found by
bisection on a log scale) at which the checkpoint still meets a quality target:

- `score` + `target`: a callback scoring the decoded tensors (for example the cosine of a
  model's outputs on calibration inputs to those of the true checkpoint), `score >= target`;
- `snr` (dB): a weight-space proxy that needs no model: the energy of the weights over the energy
  of the coding error, 10·log10(Σ x² / Σ (x − decoded)²) over the lossy tensors (the model SNR of
  docs/lossy.md). It tracks the coding error as it develops along a chain at a fixed step.

With `keep_step` (default) a checkpoint keeps its predecessor's step while that still meets the
target, and a new search (after a keyframe, or when the target is missed) aims at target +
`margin`: with dither rounding a weight that stops moving costs nothing at an unchanged step,
while every change of step re-quantizes all weights once.

Per-tensor multipliers (`factors`, e.g. sensitivity_factors from a model's sensitivities) scale
each tensor's step; the search still chooses the one relative step.

The first interval of a fine-tuning run moves the model most and needs a finer step than later
ones, so a fixed step either misses the target there or wastes bits everywhere else.

Rounding (module docstring of records/predicted.py, Predicted.encode): "dither" (default) rounds
a residual r to ⌊r/step + u⌋ with one offset u per weight, uniform in [0, 1) and the same at
every checkpoint coded with the same step (seeded by the tensor name and step; a checkpoint at
its predecessor's relative step reuses the predecessor's exact steps): each weight keeps its own
rounding threshold, the error is unbiased across weights, and a weight that stops moving stops
costing bits. A new step draws new offsets. "nearest"
rounds to nearest: its error is the part of each update below half a step, pointing back toward
the previous checkpoint in every weight at once, which the model's output feels far more.
"stochastic" draws fresh offsets at every checkpoint (seeded by the parent's SHA-256 too):
unbiased as well, but each checkpoint then re-codes the previous one's rounding noise.
Errors never accumulate along the chain: each residual is taken against the decoded predecessor,
so every checkpoint's error is its own quantization error: below one step (half a step when
rounding to nearest), whatever the length of the chain.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import InputError
from .records.predicted import (FLOAT_DTYPES, combine, dither_offsets, make_params, predict,
                                quantize_levels, to_float64)

ROUNDINGS = ("dither", "nearest", "stochastic")


@dataclass
class LossyControl:
    """How a lossy predicted checkpoint picks its relative step (module docstring)."""

    step: float | None = None            # fixed relative step (no search)
    rounding: str = "dither"
    vector_factor: float = 1 / 12        # vectors' step relative to the matrices' (× own RMS)
    score: Callable[[dict], float] | None = None   # decoded {name: (dtype, shape, bytes)} -> q
    target: float | None = None          # with `score`: the checkpoint needs score >= target
    snr: float | None = None             # dB; the weight-space proxy target
    min_step: float = 1e-3               # search range of the relative step
    max_step: float = 0.1
    iterations: int = 9
    keep_step: bool = True               # reuse the predecessor's step while it meets the target
    margin: float = 0.0                  # a new search aims at target + margin (headroom)
    factors: dict | None = None          # per-tensor step multipliers (sensitivity_factors)

    def __post_init__(self):
        if self.rounding not in ROUNDINGS:
            raise InputError(f"rounding must be one of {ROUNDINGS}, not {self.rounding!r}")
        searched = (self.score is not None) or (self.snr is not None)
        if (self.score is None) != (self.target is None):
            raise InputError("a score callback needs a target and a target needs a score")
        if searched == (self.step is not None):
            raise InputError("give either a fixed relative step or a target (score + target, "
                             "or snr), not both and not neither")
        if self.step is not None and not 0 < self.step < 1:
            raise InputError("the relative step must be in (0, 1)")
        if not 0 < self.vector_factor <= 1:
            raise InputError("vector_factor must be in (0, 1]")
        if not 0 < self.min_step < self.max_step < 1 or self.iterations < 1:
            raise InputError("need 0 < min_step < max_step < 1 and iterations >= 1")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise InputError("margin must be finite and >= 0")
        if self.factors is not None and not all(
                isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                for v in self.factors.values()):
            raise InputError("step factors must be finite and > 0")

    @property
    def searched(self) -> bool:
        return self.step is None


def lossy_eligible(dtype, shape) -> bool:
    return dtype.name in FLOAT_DTYPES and len(shape) >= 1 and int(np.prod(shape)) > 0


def base_scale(elements: np.ndarray, dtype, shape, vector_factor: float) -> float:
    """RMS of the finite values (× vector_factor for rank-1 tensors)."""
    x = to_float64(elements, dtype)
    x = x[np.isfinite(x)]
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return rms * (vector_factor if len(shape) < 2 else 1.0)


def abs_step(scale: float, rel: float) -> float:
    return float(np.float32(max(rel * scale, 1e-30)))


def seed_for(rounding: str, parent_sha: bytes | None, name: str, step: float) -> int:
    """The offsets' seed. dither: the tensor name and its step (binary32 bits), so the offsets
    are the same at every checkpoint coded with the same step and independent of them after a
    change of step (reusing them at another step would correlate the new rounding with the old
    error); stochastic: the parent's SHA-256 too (fresh offsets at every checkpoint)."""
    salt = (parent_sha or b"") if rounding == "stochastic" else b""
    h = hashlib.sha256(salt + np.float32(step).tobytes() + name.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little")


def sensitivity_factors(sensitivity: dict, tensors: dict, power: float = 0.5) -> dict:
    """Per-tensor step multipliers from per-weight sensitivities w_t (the expected squared change
    of the output per unit squared weight error, e.g. ratecontrol.sensitivity on calibration
    inputs): (w_t·RMS_t² / mean over the matrices)^(−power) for matrices, 1 for vectors. With an
    unbiased rounding the errors of different tensors add up incoherently, so the output error is
    Σ w_t·n_t·MSE_t; at high rate the fewest bits for a given output error take absolute steps
    ∝ w_t^(−1/2), i.e. power 0.5 relative to each tensor's RMS. `tensors`: name -> (dtype, shape,
    elements)."""
    prod = {}
    for n, (dt, shape, el) in tensors.items():
        if n in sensitivity and len(shape) >= 2 and dt.name in FLOAT_DTYPES:
            rms = base_scale(el, dt, shape, 1.0)
            if rms > 0 and sensitivity[n] > 0:
                prod[n] = float(sensitivity[n]) * rms * rms
    if not prod:
        return {}
    mean = float(np.mean(list(prod.values())))
    return {n: float((v / mean) ** (-power)) for n, v in prod.items()}


def parent_steps(reader) -> dict:
    """name -> step of every quantized predicted record of a file (its index only)."""
    from .records.predicted import KIND_ID, RES_QUANT, PredParams
    out = {}
    for n in reader.keys():
        info = reader.info(n)
        if info.record_kind == KIND_ID:
            pp = PredParams.unpack(info.params, n)
            if pp.residual == RES_QUANT:
                out[n] = float(np.float32(pp.step))
    return out


class StepSearch:
    """Quantizes the lossy tensors of one checkpoint at a relative step, exactly as the final
    encode will (same predictor, step, rounding and seed), and measures the result."""

    def __init__(self, control: LossyControl, tensors: dict, refs: dict, predictors: dict,
                 parent_sha: bytes | None, options, reference_of, previous_rel=None,
                 previous_steps=None):
        self.c = control
        self.tensors, self.refs, self.predictors = tensors, refs, predictors
        self.options, self.reference_of, self.parent_sha = options, reference_of, parent_sha
        f = control.factors or {}
        self.scales = {n: base_scale(el, dt, shape, control.vector_factor) * f.get(n, 1.0)
                       for n, (dt, shape, el) in tensors.items() if n in refs}
        self.trace: list[tuple[float, float]] = []
        self._cache: dict = {}
        # the predecessor's relative step and its tensors' exact steps: a checkpoint coded at the
        # same relative step reuses them (the RMS of a tensor drifts a little between checkpoints;
        # a step that drifted would be a new step, with new dither offsets)
        self.previous_rel = previous_rel
        self.previous_steps = previous_steps or {}

    def step(self, name: str, rel: float) -> float | None:
        """Tensor `name`'s step at relative step `rel`; None: coded lossless."""
        if rel == self.previous_rel and name in self.previous_steps:
            return self.previous_steps[name]
        scale = self.scales.get(name, 0.0)
        return abs_step(scale, rel) if scale > 0 else None

    def kwargs(self, name: str, rel: float) -> dict | None:
        """Predicted.encode options of tensor `name` at relative step `rel`; None: lossless."""
        step = self.step(name, rel)
        if step is None:
            return None
        return dict(self.predictors[name], residual="quantized", step=step,
                    rounding="nearest" if self.c.rounding == "nearest" else "dither",
                    seed=seed_for(self.c.rounding, self.parent_sha, name, step))

    def _prepared(self, name: str):
        """(x, prediction bits, prediction as binary64) of a lossy tensor; they do not depend on
        the step, so the search computes them once."""
        if name not in self._cache:
            dt, shape, el = self.tensors[name]
            pp = make_params(dt, shape, self.reference_of(name), residual="quantized", step=1.0,
                             **self.predictors[name])
            p = predict(self.refs[name], dt, shape, pp)
            self._cache[name] = (to_float64(el, dt), p, to_float64(p, dt))
        return self._cache[name]

    def decoded(self, rel: float) -> dict:
        """The decoded tensors at relative step `rel`, bit for bit what Predicted.encode with
        kwargs(name, rel) produces (same levels by quantize_levels, same combine)."""
        out = {}
        for n, (dt, shape, el) in self.tensors.items():
            kw = self.kwargs(n, rel) if n in self.refs else None
            if kw is None:
                out[n] = (dt, tuple(shape), el.view(np.uint8))
                continue
            x, p, xp = self._prepared(n)
            off = None if kw["rounding"] == "nearest" else dither_offsets(kw["seed"], x.size)
            q = quantize_levels(x, xp, kw["step"], off)
            pp = make_params(dt, shape, self.reference_of(n), residual="quantized",
                             step=kw["step"], **self.predictors[n])
            out[n] = (dt, tuple(shape), combine(p, ((q << 1) ^ (q >> 63)).view(np.uint64), dt, pp).view(np.uint8))
        return out

    def quality(self, rel: float) -> float:
        dec = self.decoded(rel)
        if self.c.score is not None:
            q = float(self.c.score(dec))
        else:
            q = weight_snr_db(self.tensors, self.refs, dec)
        self.trace.append((rel, q))
        return q

    def target(self) -> float:
        return self.c.target if self.c.score is not None else self.c.snr

    def run(self, previous: float | None = None) -> float:
        """The relative step of this checkpoint. With keep_step and the predecessor's step
        `previous` (same rounding): that step while it still meets the target, because a
        weight that has stopped moving then costs no bits (dither) — a new step re-quantizes
        every weight once. Otherwise the largest step (within the search range, to about 1 %,
        and not above `previous`) that meets target + margin; min_step when none does (then the
        checkpoint is coded as finely as allowed)."""
        t = self.target()
        hi_step = self.c.max_step
        if previous is not None and self.c.keep_step:
            if self.quality(previous) >= t:
                return previous
            hi_step = min(previous, hi_step)
        t = t + self.c.margin
        if hi_step <= self.c.min_step:
            return self.c.min_step
        if not self.trace or self.trace[-1][0] != hi_step:
            if self.quality(hi_step) >= t:
                return hi_step
        lo, hi = math.log(self.c.min_step), math.log(hi_step)
        for _ in range(self.c.iterations):
            mid = (lo + hi) / 2
            if self.quality(math.exp(mid)) >= t:
                lo = mid
            else:
                hi = mid
        return math.exp(lo)


def weight_snr_db(tensors: dict, refs: dict, decoded: dict) -> float:
    """10·log10(Σ x² / Σ (x − decoded)²) over the float tensors that have a reference."""
    sig = err = 0.0
    for n, (dt, shape, el) in tensors.items():
        if n not in refs or dt.name not in FLOAT_DTYPES:
            continue
        x = to_float64(el, dt)
        y = to_float64(decoded[n][2].view(dt.uint), dt)
        ok = np.isfinite(x) & np.isfinite(y)
        sig += float(np.sum(x[ok] ** 2))
        err += float(np.sum((x[ok] - y[ok]) ** 2))
    if err == 0:
        return math.inf
    if sig == 0:
        return -math.inf
    return 10 * math.log10(sig / err)


__all__ = ["LossyControl", "StepSearch", "weight_snr_db", "seed_for", "base_scale", "abs_step",
           "lossy_eligible", "parent_steps", "sensitivity_factors"]
