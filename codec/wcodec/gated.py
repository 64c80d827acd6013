"""Band-gated inference (the IMC seed's idea, on wcodec band records): run every Linear and Conv2d on
band 1 of its weights and add the band-2 / band-3 weight contributions only for the samples whose
uncertainty gate fires, in one forward pass.

    prefixes = band_prefixes("model.wcodec", names)       # {name: [W_1, W_2, W_3]} (prefix k)
    gm = GatedModel(model, prefixes)                      # wraps model's Linear / Conv2d in place
    calibrate(gm, calib_batches, rate=0.1)                # thresholds for ~10 % expansion
    logits = gm(x)                                        # one pass; gm.stats has what it spent

Why it is one pass: a layer is linear in its weights, so with W_k = W_1 + D_2 + … + D_k,
layer(x; W_k) = layer(x; W_1) + layer(x; D_2) + …; the gated layer computes the band-1 output for
the whole batch, then adds layer(x_s; D_j) for the selected samples s only.

Gates (per sample, decided inside each layer from what the pass has computed so far):
- hidden layers: *activation strength*, the RMS of the layer's input. The error band 1 adds to a
  layer's output is ΔW·x, whose size grows with |x|, so the samples with the strongest inputs are
  the ones band 1 hurts most in absolute terms. The layer adds band 2 when the strength exceeds its
  threshold t2, and band 3 when it exceeds t3 ≥ t2.
- the output layer (the last Linear): classification uncertainty of its band-1 logits, the entropy
  of the softmax or 1 − max-prob; above T2 it adds band 2 of the classifier, above T3 band 3.
`calibrate` picks every threshold as a quantile of the band-1 model's scores on calibration inputs,
so that each layer expands about `rate` of the samples (band 3: `rate × band3_share`).

Compute: `stats` counts multiply-accumulates (MACs). The band-1 pass costs as many MACs as the
plain model; each expansion adds that layer's MACs for that sample once per extra band. On dense
float kernels band 1 is not cheaper than the merged weights, so the gated pass only saves compute
where band-1 arithmetic is cheaper (low-bit integer kernels); `stats` reports the refinement MACs
as a fraction of the plain model's so that this is explicit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def band_prefixes(path, names=None, bands=(1, 2, 3)) -> dict:
    """{tensor name: [prefix_k for k in bands]} of the band records in a wcodec file (prefix k
    beyond a record's band count is its full decode)."""
    from .api import safe_open
    out = {}
    with safe_open(path, "pt") as f:
        for name in (names if names is not None else f.keys()):
            if f.info(name).kind_name != "bands":
                continue
            out[name] = [f.get_tensor(name, bands=k) for k in bands]
    return out


class _Gated(nn.Module):
    """One Linear / Conv2d with band-1 weights and per-sample band-2/3 additions."""

    def __init__(self, module: nn.Module, prefixes: list, name: str, output: bool = False):
        super().__init__()
        self.name = name
        self.module = module
        self.output = output
        w = [p.to(module.weight.dtype) for p in prefixes]
        self.register_buffer("w1", w[0])
        # D_j = W_j − W_(j−1): exact in the weights' float type is not needed, only that
        # W_1 + D_2 + … reproduces W_k to within float rounding (checked in the tests)
        self.deltas = nn.ParameterList([nn.Parameter(b - a, requires_grad=False)
                                        for a, b in zip(w, w[1:])])
        self.t = [math.inf] * len(self.deltas)          # thresholds t2, t3 (inf: never)
        self.metric = "entropy"
        self.force = None                               # None, or a number of bands for all
        self.record = None                              # calibration: list of score tensors
        self.selector = None                            # test hook: score -> fire mask per band
        self.macs_per_sample = 0
        self.stats = None

    def _op(self, x, w, bias):
        m = self.module
        if isinstance(m, nn.Linear):
            return F.linear(x, w, bias)
        return F.conv2d(x, w, bias, m.stride, m.padding, m.dilation, m.groups)

    def _score(self, x, y1):
        if self.output:
            p = torch.softmax(y1.float(), dim=-1)
            if self.metric == "entropy":
                return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
            return 1.0 - p.max(-1).values
        return x.flatten(1).float().pow(2).mean(1).sqrt()

    def forward(self, x):
        m = self.module
        if hasattr(m, "static_padding"):                # EfficientNet's "same" padding
            x = m.static_padding(x)
        y = self._op(x, self.w1, m.bias)
        n = x.shape[0]
        if not self.macs_per_sample:
            # MACs of one sample: output elements × (input channels / groups) × kernel size
            self.macs_per_sample = y[0].numel() * self.w1[0].numel()
        score = self._score(x, y)
        if self.record is not None:
            self.record.append(score.detach())
        for j, d in enumerate(self.deltas):
            if self.force is not None:
                fire = torch.full((n,), self.force >= j + 2, dtype=torch.bool, device=x.device)
            elif self.selector is not None:
                fire = self.selector(self, j, score)
            else:
                fire = score > self.t[j]
            idx = fire.nonzero().flatten()
            if self.stats is not None:
                self.stats.add(self, j, int(idx.numel()), n)
            if idx.numel():
                y = y.index_add(0, idx, self._op(x.index_select(0, idx), d, None))
        return y


class GateStats:
    """MACs spent in a pass, by band."""

    def __init__(self):
        self.base = 0
        self.extra = {}           # band (2, 3) -> MACs added
        self.fired = {}           # band -> (samples fired, samples seen) summed over layers

    def add(self, layer: _Gated, j: int, fired: int, n: int) -> None:
        if j == 0:
            self.base += layer.macs_per_sample * n
        band = j + 2
        self.extra[band] = self.extra.get(band, 0) + layer.macs_per_sample * fired
        f, s = self.fired.get(band, (0, 0))
        self.fired[band] = (f + fired, s + n)

    def summary(self) -> dict:
        base = max(self.base, 1)
        return {"refine_macs_fraction": {b: v / base for b, v in self.extra.items()},
                "compute_vs_plain": 1.0 + sum(self.extra.values()) / base,
                "mac_weighted_expansion": self.extra.get(2, 0) / base,
                "layer_fire_rate": {b: f / max(s, 1) for b, (f, s) in self.fired.items()}}


class GatedModel(nn.Module):
    """Wraps `model`'s Linear and Conv2d modules whose weight has prefixes (by parameter name,
    e.g. "_fc.weight") in place; the last Linear gets the output gate."""

    def __init__(self, model: nn.Module, prefixes: dict, metric: str = "entropy"):
        super().__init__()
        self.model = model
        self.layers: list[_Gated] = []
        targets = [(name, mod) for name, mod in model.named_modules()
                   if isinstance(mod, (nn.Linear, nn.Conv2d)) and f"{name}.weight" in prefixes]
        last_linear = max((i for i, (_, m) in enumerate(targets) if isinstance(m, nn.Linear)),
                          default=None)
        for i, (name, mod) in enumerate(targets):
            g = _Gated(mod, prefixes[f"{name}.weight"], name, output=(i == last_linear))
            g.metric = metric
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, g)
            self.layers.append(g)
        self.stats = None

    def forward(self, x, *, bands: int | None = None, stats: bool = True):
        """One pass; `bands=k` forces k bands everywhere (1: band 1 only)."""
        st = GateStats() if stats else None
        for g in self.layers:
            g.force, g.stats = bands, st
        try:
            return self.model(x)
        finally:
            for g in self.layers:
                g.force, g.stats = None, None
            self.stats = st.summary() if st else None

    def set_random_gates(self, rate: float, band3_share: float = 0.5, seed: int = 0):
        """Control: every layer fires for a random `rate` of samples (band 3 for rate ×
        band3_share), ignoring the scores — what the gates must beat."""
        gen = torch.Generator().manual_seed(seed)

        def sel(layer, j, score):
            r = rate if j == 0 else rate * band3_share
            return torch.rand(score.shape[0], generator=gen) < r
        for g in self.layers:
            g.selector = sel

    def clear_random_gates(self):
        for g in self.layers:
            g.selector = None


@torch.no_grad()
def calibrate(gm: GatedModel, batches, rate: float, *, band3_share: float = 0.5,
              output_rate: float | None = None) -> dict:
    """Pick every threshold so that each layer expands about `rate` of the calibration samples
    (band 3: rate × band3_share); the output gate gets `output_rate` (default `rate`). Scores
    are those of the band-1 pass. Returns {layer: [t2, t3]}."""
    for g in gm.layers:
        g.record = []
    try:
        for x in batches:
            gm(x, bands=1, stats=False)
        out = {}
        for g in gm.layers:
            s = torch.cat(g.record)
            r = output_rate if (g.output and output_rate is not None) else rate
            g.t = [math.inf if rj <= 0 else -math.inf if rj >= 1
                   else float(torch.quantile(s, 1.0 - rj))
                   for rj in [r, r * band3_share][:len(g.deltas)]]
            out[g.name] = list(g.t)
        return out
    finally:
        for g in gm.layers:
            g.record = None


__all__ = ["band_prefixes", "GatedModel", "calibrate", "GateStats"]
