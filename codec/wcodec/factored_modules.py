"""Run factored layers without rebuilding the dense weight (record kind 5 at run time).

    layer = LowRankLinear.from_factorization(fz, bias)   # y = (x Vᵀ) Uᵀ + b
    layer = TTLinear.from_factorization(fz, bias)        # contracts the input with the cores
    replace_linear(model, "encoder.layer.0.output.dense", layer)

These are for inference speed and memory, not for bit-exact decoding: they use torch matmul /
einsum (any summation order), so their outputs match the dense layer up to rounding. The
normative reconstruction is spec/records/factors.md §4 (wcodec.records.factors.reconstruct).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .records.factors import LOW_RANK, TENSOR_TRAIN, Factorization


class LowRankLinear(torch.nn.Module):
    """y = x Vᵀ Uᵀ + b with U [out, r], V [r, in]: r·(in + out) multiply-adds per row instead of
    in·out."""

    def __init__(self, u: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.u = torch.nn.Parameter(u, requires_grad=False)
        self.v = torch.nn.Parameter(v, requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        self.in_features, self.out_features = v.shape[1], u.shape[0]

    @classmethod
    def from_factorization(cls, fz: Factorization, bias=None, dtype=torch.float32):
        if fz.factorization != LOW_RANK:
            raise ValueError("LowRankLinear takes a low-rank factorization")
        u, v = (torch.as_tensor(np.asarray(a), dtype=dtype) for a in fz.arrays)
        return cls(u, v, bias)

    def forward(self, x):
        return torch.nn.functional.linear(torch.nn.functional.linear(x, self.v), self.u,
                                          self.bias)


class TTLinear(torch.nn.Module):
    """A Linear whose weight [∏m_k, ∏n_k] is a tensor train of cores G_k [r_{k−1}, m_k, n_k, r_k]
    (the MPO reshaping of spec/records/factors.md §2). The input is contracted with one core at a
    time; the dense weight is never formed."""

    def __init__(self, cores: list[torch.Tensor], bias: torch.Tensor | None = None):
        super().__init__()
        self.cores = torch.nn.ParameterList(torch.nn.Parameter(c, requires_grad=False)
                                            for c in cores)
        self.ms = [int(c.shape[1]) for c in cores]
        self.ns = [int(c.shape[2]) for c in cores]
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        self.in_features = int(np.prod(self.ns))
        self.out_features = int(np.prod(self.ms))

    @classmethod
    def from_factorization(cls, fz: Factorization, bias=None, dtype=torch.float32):
        if fz.factorization != TENSOR_TRAIN:
            raise ValueError("TTLinear takes a tensor-train factorization")
        return cls([torch.as_tensor(np.asarray(a), dtype=dtype) for a in fz.arrays], bias)

    def forward(self, x):
        lead = x.shape[:-1]
        b = int(np.prod(lead)) if lead else 1
        t = x.reshape(b, 1, self.ns[0], -1)           # [P, r_0 = 1, n_1, n_2 ⋯ n_d]
        for k, g in enumerate(self.cores):
            t = torch.einsum("prjs,rijt->pits", t, g)  # [P, m_k, r_k, S]
            p, m, r, s = t.shape
            nxt = self.ns[k + 1] if k + 1 < len(self.ns) else 1
            t = t.reshape(p * m, r, nxt, s // nxt)
        y = t.reshape(b, self.out_features)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


def replace_linear(model: torch.nn.Module, name: str, layer: torch.nn.Module) -> None:
    """Put `layer` in place of the submodule called `name` (dotted path)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, layer)


def _param_bytes(m: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in m.parameters())


def _time(fn, x, repeat=20) -> float:
    with torch.no_grad():
        fn(x)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(repeat):
                fn(x)
            best = min(best, (time.perf_counter() - t) / repeat)
    return best


def bench_layers(shapes=((384, 1536), (1536, 384), (1024, 1024)), batch: int = 64,
                 ranks=(16, 64), tt_rank: int = 16, seed: int = 0) -> list[dict]:
    """Parameter memory and CPU time of LowRankLinear / TTLinear against the dense nn.Linear,
    measured side by side on the same inputs (random weights: speed and memory do not depend on
    the values). Ratios are dense / factored."""
    from .factor_encoder import decompose, factor_rows
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    rows = []
    for out_f, in_f in shapes:
        w = rng.standard_normal((out_f, in_f))
        dense = torch.nn.Linear(in_f, out_f, bias=False)
        with torch.no_grad():
            dense.weight.copy_(torch.as_tensor(w))
        x = torch.randn(batch, in_f)
        td = _time(dense, x)
        cands = []
        for r in ranks:
            fz = decompose(w.reshape(-1), w.shape, rank=r, codec="float32")
            cands.append((f"low-rank r={r}", LowRankLinear.from_factorization(fz), fz))
        fz = decompose(w.reshape(-1), w.shape, method="tt", rank=tt_rank, codec="float32",
                       modes=(factor_rows(out_f, 3), factor_rows(in_f, 3)))
        cands.append((f"TT 3 cores, bond {tt_rank}", TTLinear.from_factorization(fz), fz))
        for what, m, f in cands:
            ref = x @ dense_of(f).T                       # the weight the record decodes to
            with torch.no_grad():
                err = float((m(x) - ref).norm() / ref.norm())
            tf = _time(m, x)
            rows.append(dict(layer=f"{out_f}x{in_f}", batch=batch, what=what,
                             dense_bytes=_param_bytes(dense), factored_bytes=_param_bytes(m),
                             memory_ratio=_param_bytes(dense) / _param_bytes(m),
                             dense_ms=td * 1e3, factored_ms=tf * 1e3, speedup=td / tf,
                             check_rel_err=err))
    return rows


def dense_of(fz: Factorization) -> torch.Tensor:
    """The dense weight of a factorization by the normative reconstruction (for checks only)."""
    from .records.factors import reconstruct
    rows = int(np.prod([m[0] for m in fz.modes]))
    r = reconstruct(fz.factorization, fz.modes, [np.asarray(a, np.float64) for a in fz.arrays])
    return torch.as_tensor(r.reshape(rows, -1), dtype=torch.float32)


__all__ = ["LowRankLinear", "TTLinear", "replace_linear", "bench_layers", "dense_of"]
