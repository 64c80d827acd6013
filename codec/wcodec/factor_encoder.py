"""The factor encoder: from a weight matrix to a `Factorization` for record kind 5 (spec/records/
factors.md). Encoder only; nothing here affects how a file decodes.

- low-rank: truncated SVD, U·√S and √S·Vᵀ (balanced factors);
- Tucker: truncated HOSVD over stated modes (default: the tensor's shape);
- tensor-train / MPO: TT-SVD (Oseledets 2011) over the matrix view reshaped as
  [m_1·n_1, …, m_d·n_d]; each step truncates at δ = ε/√(d−1)·‖A‖_F, so ‖A − TT‖_F ≤ ε‖A‖_F.

Ranks come from (exactly one of) a rank, an error budget `eps` (relative Frobenius error), an
`energy` fraction (Σσ² kept, SVD) or a parameter target `params` (factor elements). With
`act_scale` (per-input-column activation RMS from calibration inputs) the low-rank SVD is taken of
A·diag(d) and the right factor divided by d afterwards (activation-aware SVD: errors on inputs that
are large at run time cost more).
"""

from __future__ import annotations

import numpy as np

from . import quant as Q
from .errors import InputError
from .records.factors import (ENC_FLOAT, ENC_QUANTIZED, LOW_RANK, TENSOR_TRAIN, TUCKER,
                              FactorCodec, Factorization, factor_shapes)

METHODS = {"low_rank": LOW_RANK, "tucker": TUCKER, "tensor_train": TENSOR_TRAIN,
           "tt": TENSOR_TRAIN, "svd": LOW_RANK}


def parse_codec(spec) -> FactorCodec:
    """'float32', 'float16', 'bfloat16', 'float64', or 'q<bits>' (uniform levels, one scale per
    row of the factor's matrix view), 'q<bits>:tensor', 'q<bits>:group:G', 'dq<bits>...'
    (dependent quantizer)."""
    if isinstance(spec, FactorCodec):
        return spec
    if spec in ("float64", "float32", "float16", "bfloat16"):
        return FactorCodec(ENC_FLOAT, spec)
    s = str(spec)
    qz = Q.QUANTIZER_UNIFORM
    if s.startswith("dq"):
        qz, s = Q.QUANTIZER_DEPENDENT, s[1:]
    if s.startswith("q"):
        bits, _, lay = s[1:].partition(":")
        try:
            b = int(bits)
        except ValueError:
            raise InputError(f"factor codec {spec!r}: q<bits>") from None
        if not 2 <= b <= 16:
            raise InputError("quantized factors take 2..16 bits")
        return FactorCodec(ENC_QUANTIZED, "", qz, Q.ScaleLayout.parse(lay or "channel"), 0.0, b)
    raise InputError(f"factor codec must be a float dtype or q<bits>, not {spec!r}")


def factor_rows(n: int, d: int) -> list[int]:
    """n as d factors, as equal as the prime factorisation allows (largest primes first into the
    smallest bin); 1s where n has too few prime factors."""
    primes, m, p = [], n, 2
    while p * p <= m:
        while m % p == 0:
            primes.append(p)
            m //= p
        p += 1
    if m > 1:
        primes.append(m)
    bins = [1] * d
    for q in sorted(primes, reverse=True):
        bins[int(np.argmin(bins))] *= q
    return sorted(bins, reverse=True)


def _rank_from(s: np.ndarray, *, rank=None, eps=None, energy=None, delta=None,
               cap=None) -> int:
    """Truncation rank of singular values s (descending)."""
    tot = float(np.sum(s * s))
    n = s.size
    if rank is not None:
        r = int(rank)
    elif delta is not None:          # smallest r with sqrt(sum_{i>=r} s_i^2) <= delta
        tail = np.sqrt(np.maximum(np.cumsum((s * s)[::-1])[::-1], 0.0))
        ok = np.nonzero(tail <= delta)[0]
        r = int(ok[0]) if ok.size else n
    elif eps is not None:
        return _rank_from(s, delta=float(eps) * np.sqrt(tot), cap=cap)
    elif energy is not None:
        c = np.cumsum(s * s)
        r = int(np.searchsorted(c, float(energy) * tot * (1 - 1e-12)) + 1)
    else:
        raise InputError("give one of rank=, eps=, energy=, params=")
    r = max(1, min(r, n))
    return min(r, cap) if cap else r


def _svd(a: np.ndarray):
    return np.linalg.svd(a, full_matrices=False)


def low_rank(x2: np.ndarray, *, act_scale=None, **how) -> list[np.ndarray]:
    rows, cols = x2.shape
    d = None
    a = x2
    if act_scale is not None:
        d = np.asarray(act_scale, np.float64).reshape(-1)
        if d.size != cols:
            raise InputError(f"act_scale has {d.size} entries for {cols} input columns")
        d = np.maximum(d, max(float(d.max()) * 1e-3, 1e-12)) if d.size else d
        a = x2 * d[None, :]
    u, s, vt = _svd(a)
    if "params" in how:
        how = dict(rank=max(1, int(how.pop("params")) // (rows + cols)), **how)
    r = _rank_from(s, **how)
    r = min(r, rows, cols)
    rs = np.sqrt(s[:r])
    left = u[:, :r] * rs[None, :]
    right = rs[:, None] * vt[:r, :]
    if d is not None:
        right = right / d[None, :]
    return [left, right]


def hosvd(x: np.ndarray, modes: list[int], *, rank=None, eps=None, energy=None):
    t = x.reshape(modes)
    d = len(modes)
    norm = float(np.sqrt(np.sum(t * t)))
    us, ranks = [], []
    for k in range(d):
        unf = np.moveaxis(t, k, 0).reshape(modes[k], -1)
        u, s, _ = _svd(unf)
        rk = rank[k] if isinstance(rank, (list, tuple)) else rank
        r = _rank_from(s, rank=rk, delta=None if eps is None else eps * norm / np.sqrt(d),
                       energy=energy) if (rk is not None or eps is not None or
                                          energy is not None) else s.size
        r = min(r, modes[k])
        us.append(u[:, :r])
        ranks.append(r)
    core = t
    for k in range(d):
        core = np.moveaxis(np.tensordot(us[k].T, np.moveaxis(core, k, 0), axes=1), 0, k)
    return [(modes[k], 0, ranks[k]) for k in range(d)], [core] + us


def tt_svd(x2: np.ndarray, ms: list[int], ns: list[int], *, eps=None, rank=None):
    """TT-SVD of the MPO reshaping: cores [r_{k-1}, m_k, n_k, r_k]."""
    d = len(ms)
    t = x2.reshape([*ms, *ns])
    perm = [v for k in range(d) for v in (k, d + k)]
    t = t.transpose(perm).reshape([ms[k] * ns[k] for k in range(d)])
    norm = float(np.sqrt(np.sum(t * t)))
    delta = None if eps is None else float(eps) / np.sqrt(max(d - 1, 1)) * norm
    cores, modes = [], []
    left = 1
    c = t.reshape(-1)
    for k in range(d - 1):
        p = ms[k] * ns[k]
        c = c.reshape(left * p, -1)
        u, s, vt = _svd(c)
        rk = rank[k] if isinstance(rank, (list, tuple)) else rank
        r = _rank_from(s, rank=rk, delta=delta) if (rk is not None or delta is not None) \
            else s.size
        r = min(r, s.size)
        cores.append(u[:, :r].reshape(left, ms[k], ns[k], r))
        modes.append((ms[k], ns[k], r))
        c = s[:r, None] * vt[:r, :]
        left = r
    cores.append(c.reshape(left, ms[-1], ns[-1], 1))
    modes.append((ms[-1], ns[-1], 1))
    return modes, cores


def param_count(fz: int, modes) -> int:
    return int(sum(int(np.prod(s)) for s in factor_shapes(fz, modes)))


def decompose(x: np.ndarray, shape, *, method: str = "low_rank", rank=None, eps=None,
              energy=None, params=None, modes=None, cores: int = 3, codec="float32",
              act_scale=None) -> Factorization:
    """A `Factorization` of the tensor with binary64 values `x` (any shape; its matrix view, or
    `modes` for Tucker). `codec`: one factor codec for every factor, or a list."""
    fz = METHODS.get(method)
    if fz is None:
        raise InputError(f"method must be one of {sorted(METHODS)}, not {method!r}")
    if sum(v is not None for v in (rank, eps, energy, params)) != 1:
        raise InputError("give exactly one of rank=, eps=, energy=, params=")
    x = np.asarray(x, np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise InputError("factorization needs finite values")
    rows, cols = Q.matrix_shape(shape)
    x2 = x.reshape(rows, cols)
    if params is not None and fz != LOW_RANK:
        return _by_params(x, shape, fz, int(params), modes, cores, codec)
    if fz == LOW_RANK:
        how = dict(rank=rank) if rank is not None else dict(eps=eps) if eps is not None else \
            dict(energy=energy) if energy is not None else dict(params=params)
        arrays = low_rank(x2, act_scale=act_scale, **how)
        m = [(rows, cols, arrays[0].shape[1])]
    elif fz == TUCKER:
        md = list(modes) if modes is not None else \
            ([int(v) for v in shape] if len(shape) >= 2 else [rows, cols])
        if int(np.prod(md)) != x.size:
            raise InputError(f"Tucker modes {md} do not multiply to {x.size}")
        m, arrays = hosvd(x, md, rank=rank, eps=eps, energy=energy)
    else:
        if energy is not None:
            raise InputError("tensor-train ranks come from rank= or eps= (or params=)")
        ms, ns = (modes if modes is not None else
                  (factor_rows(rows, cores), factor_rows(cols, cores)))
        m, arrays = tt_svd(x2, list(ms), list(ns), eps=eps, rank=rank)
    codecs = codec if isinstance(codec, (list, tuple)) else [codec] * len(arrays)
    return Factorization(fz, m, arrays, [parse_codec(c) for c in codecs])


def _by_params(x, shape, fz, target, modes, cores, codec) -> Factorization:
    """Bisection on the error budget for the smallest error within `target` factor elements."""
    lo, hi = 0.0, 1.0
    best = decompose(x, shape, method={TUCKER: "tucker", TENSOR_TRAIN: "tt"}[fz], eps=1.0,
                     modes=modes, cores=cores, codec=codec)
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        f = decompose(x, shape, method={TUCKER: "tucker", TENSOR_TRAIN: "tt"}[fz], eps=mid,
                      modes=modes, cores=cores, codec=codec)
        if param_count(fz, f.modes) <= target:
            best, hi = f, mid
        else:
            lo = mid
    return best




# -- automatic mode: a factorization only where it beats quantization at equal size -------------
def coded_size(rec, options=None) -> int:
    """Bytes a record occupies: params plus every stream's chunk payloads through its real codec
    chain (stored raw where the chain does not shrink it, as the writer does)."""
    total = len(rec.params)
    for plan in rec.streams:
        n, ce = plan.elements.size, plan.chunk_elements
        coded = sum(len(plan.chain.encode_chunk(plan.elements[c * ce:(c + 1) * ce], plan.dtype))
                    for c in range(-(-n // ce)))
        total += min(coded, n * plan.dtype.itemsize)
    return total


def _mse(rec, x, dtype):
    return rec.error["mean_squared_error"] if rec.error else 0.0


def choose(dtype, shape, elements, options, *, step: float, quantizer: str = "uniform",
           scale_mode: str = "tensor", ranks=(4, 8, 16, 32), factor_codec="q8",
           act_scale=None, methods=("low_rank",)) -> dict:
    """Pick the record for one float tensor at a given quantization step: plain quantization
    (record kind 2) or a factor record whose residual is quantized with the same step, quantizer
    and scale layout (a quantized base plus a low-rank part). Both are encoded for real; a factor
    record is chosen only when its coded size is smaller AND its squared error is no larger, so
    it never loses to quantization at equal size. Returns {kind, options, size, mse, candidates}."""
    from .records.factors import Factors
    from .records.quantized import Quantized
    x = Q.to_float64(elements, dtype)
    q_kw = dict(step=step, quantizer=quantizer, scale_mode=scale_mode) if scale_mode == "tensor" \
        else dict(rel_step=step, quantizer=quantizer, scale_mode=scale_mode)
    q = Quantized.encode(dtype, shape, elements, options, **q_kw)
    best = dict(kind=Quantized, options=q_kw, size=coded_size(q, options),
                mse=_mse(q, x, dtype))
    cands = [dict(what="quantized", size=best["size"], mse=best["mse"])]
    rows, cols = Q.matrix_shape(shape)
    res_kw = dict(residual="quantized", residual_quantizer=quantizer,
                  residual_scales="tensor" if scale_mode == "tensor" else "channel",
                  **({"residual_step": step} if scale_mode == "tensor"
                     else {"residual_rel_step": step}))
    for method in methods:
        for r in ranks:
            if r >= min(rows, cols):
                continue
            kw = dict(method=method, rank=r, codec=factor_codec, act_scale=act_scale, **res_kw)
            if method != "low_rank":
                kw.pop("act_scale")
            try:
                rec = Factors.encode(dtype, shape, elements, options, **kw)
            except Exception:            # a candidate that cannot be built is simply not chosen
                continue
            size, mse = coded_size(rec, options), _mse(rec, x, dtype)
            cands.append(dict(what=f"{method} r={r} + quantized residual", size=size, mse=mse))
            if size < best["size"] and mse <= best["mse"]:
                best = dict(kind=Factors, options=kw, size=size, mse=mse)
    best["candidates"] = cands
    return best


__all__ = ["decompose", "parse_codec", "factor_rows", "low_rank", "hosvd", "tt_svd",
           "param_count", "coded_size", "choose"]
