"""Conformance vectors for record kind 3 `bands` (spec/records/bands.md): batch `bands-1.0` of
tools/gen_vectors.py.

Written from the spec, not from wcodec: band 1's levels come from a simple encoder here (round to
nearest; the dependent quantizer's levels by a greedy walk of its state machine), refinement levels
by rounding u·2^c, and the expected bytes of every prefix by exact arithmetic: y = float64(A) ×
(S × 2^−c) is one binary64 multiplication (Python's float(Fraction) is correctly rounded, so
float(Fraction(A)·S·2^−c) is that product), then one rounding to the dtype (quantization.md §4.2).
The remainder band uses the integer formulas of bands.md. Every valid vector's manifest entry lists
the SHA-256 of every prefix k = 1..N (`prefix_sha256`); the last equals the tensor's `sha256`.
"""

from __future__ import annotations

import hashlib
import struct
from fractions import Fraction

import numpy as np

import vectorlib as V
from vectorlib import Block, File, chain, rng_for

# (exponent bits E, mantissa bits M) and the largest finite value of each float dtype
FMT = {"float64": (11, 52), "float32": (8, 23), "float16": (5, 10), "bfloat16": (8, 7),
       "float8_e4m3fn": (4, 3), "float8_e5m2": (5, 2)}
HEAD = struct.Struct("<BBBBB3xIf")
ENTRY = struct.Struct("<B3xddd")
LEVEL_DTYPES = (("uint8", np.uint8, 1 << 8), ("uint16", np.uint16, 1 << 16),
                ("uint32", np.uint32, 1 << 32))


def max_finite(dtype: str) -> Fraction:
    E, M = FMT[dtype]
    bias = (1 << (E - 1)) - 1
    if dtype == "float8_e4m3fn":          # exponent field 15 is finite, mantissa 111 there is NaN
        return Fraction(448)
    return Fraction(2 ** (M + 1) - 1, 2 ** M) * Fraction(2) ** bias


def round_bits(v: Fraction, dtype: str) -> int:
    """The bit pattern of the exact rational v rounded once to `dtype` (nearest, ties to even),
    saturating at the largest finite value; zero keeps the sign of `v` (given as -0.0 via
    `negzero`)."""
    E, M = FMT[dtype]
    bias = (1 << (E - 1)) - 1
    emin = 1 - bias
    sign = 1 if v < 0 else 0
    a = abs(v)
    if a == 0:
        return 0
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    ulp = Fraction(2) ** (max(e, emin) - M)
    q = a / ulp
    n = q.numerator // q.denominator
    r = q - n
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2):
        n += 1
    res = min(n * ulp, max_finite(dtype))
    if res == 0:
        return sign << (E + M)
    if res >= Fraction(2) ** emin:
        e2 = res.numerator.bit_length() - res.denominator.bit_length()
        if Fraction(2) ** e2 > res:
            e2 -= 1
        mant, field_e = res / Fraction(2) ** (e2 - M) - 2 ** M, e2 + bias
    else:
        mant, field_e = res / Fraction(2) ** (emin - M), 0
    assert mant.denominator == 1
    return (sign << (E + M)) | (field_e << M) | int(mant)


def value(bits: int, dtype: str) -> float:
    """The value of a bit pattern (nan / ±inf where the format has them)."""
    E, M = FMT[dtype]
    bias = (1 << (E - 1)) - 1
    sign = -1.0 if bits >> (E + M) & 1 else 1.0
    fe = (bits >> M) & ((1 << E) - 1)
    mant = bits & ((1 << M) - 1)
    if dtype == "float8_e4m3fn":
        if fe == 15 and mant == 7:
            return float("nan")
    elif fe == (1 << E) - 1:
        return sign * float("inf") if mant == 0 else float("nan")
    if fe == 0:
        return sign * mant * 2.0 ** (1 - bias - M)
    return sign * (1 + mant / 2 ** M) * 2.0 ** (fe - bias)


def prefix_pattern(A: int, S: float, c: int, dtype: str, negzero: bool = False) -> int:
    """Bit pattern of float64(A) × (S × 2^−c) rounded to dtype (bands.md step 4)."""
    if not (np.isfinite(S) and S > 0):     # only in invalid vectors (BND-06): no expectation
        return 0
    y = float(Fraction(A) * Fraction(S) / (1 << c))          # one binary64 rounding
    if dtype == "float64":
        return struct.unpack("<Q", struct.pack("<d", y))[0]
    return round_bits(Fraction(y), dtype)


# -- the remainder band (bands.md, "The remainder band") --------------------------------------------
def o_map(p: int, w: int) -> int:
    sigma = p >> (w - 1)
    return p ^ (sigma * ((1 << (w - 1)) - 1))


def remainder(x: int, c: int, width: int, z: int) -> int:
    w = width - z
    mask = (1 << w) - 1
    d = (o_map(x >> z, w) - o_map(c >> z, w)) & mask
    return ((d << 1) & mask) ^ (mask if d >> (w - 1) else 0)


# -- a simple encoder ------------------------------------------------------------------------------
def matrix_view(shape) -> tuple:
    n = V.count(shape)
    return (shape[0], n // shape[0]) if len(shape) >= 2 and shape[0] > 0 else (1, n)


def dep_multiplier(k: int, a: int) -> int:
    return 2 * k - a * ((k > 0) - (k < 0))


def dependent_greedy(u: np.ndarray) -> np.ndarray:
    """Levels of the dependent quantizer (quantization.md §3.2) picked greedily: at each element
    the level whose multiplier is nearest to u in the current state (any level sequence is
    valid; this one keeps |u − m| <= 1)."""
    k = np.zeros(u.shape, np.int64)
    for r in range(u.shape[0]):
        state = 0
        for j in range(u.shape[1]):
            a, b = state >> 1, state & 1
            kc = int(np.rint(u[r, j] / 2))
            best = min({kc - 1, kc, kc + 1, 0, kc + (1 if u[r, j] > 0 else -1)},
                       key=lambda kk: (abs(u[r, j] - dep_multiplier(kk, a)), abs(kk)))
            k[r, j] = best
            state = ((b ^ (best & 1)) << 1) | a
    return k


def multipliers(k: np.ndarray, quantizer: int) -> np.ndarray:
    if quantizer == 0:
        return k.copy()
    m = np.zeros_like(k)
    for r in range(k.shape[0]):
        state = 0
        for j in range(k.shape[1]):
            a, b = state >> 1, state & 1
            m[r, j] = dep_multiplier(int(k[r, j]), a)
            state = ((b ^ (int(k[r, j]) & 1)) << 1) | a
    return m


def zigzag(k: np.ndarray) -> np.ndarray:
    return np.where(k >= 0, 2 * k, -2 * k - 1).astype(np.int64)


def data_bits(dtype: str, n: int, rng, specials: bool, scale: float = 0.05) -> list[int]:
    """n bit patterns: weight-like values (specials first when asked)."""
    x = rng.standard_normal(n) * scale
    out = [round_bits(Fraction(float(v)), dtype) if dtype != "float64"
           else struct.unpack("<Q", struct.pack("<d", float(v)))[0] for v in x]
    if specials:
        sp = V.special_bits(dtype)[:n]
        out[:len(sp)] = sp
    return out


def add_bands(f: File, name: str, dtype: str, shape, *, bands: int, quantizer: int = 1,
              scale_mode: int = 0, group_size: int = 0, refine_bits=None, lossless: bool = True,
              digests: bool = True, z: int | None = None, bits=None, rel_step: float = 0.4,
              specials: bool = False, scales=None, chunk_elements: int | None = None,
              chain_spec: str = "planes+lanes", expect: bool = True, tweak_levels=None,
              tweak_remainders=None, seed=None) -> tuple[dict, dict]:
    """A `bands` record built from the spec. Returns (record dict, info) where info holds the
    levels, the prefixes' bytes and the params pieces, for invalid vectors to change."""
    rng = rng_for("bands", seed or name)
    shape = list(shape)
    n = V.count(shape)
    rows, cols = matrix_view(shape)
    E, M = FMT[dtype]
    width = 8 * V.itemsize(dtype)
    if bits is None:
        bits = data_bits(dtype, n, rng, specials)
    bits = [int(b) for b in bits]
    x = np.array([value(b, dtype) for b in bits], np.float64).reshape(rows, cols)
    finite = np.isfinite(x)
    xf = np.where(finite, x, 0.0)
    nq = bands - (1 if lossless else 0)
    rb = [0] + list(refine_bits if refine_bits is not None else [4] * (nq - 1)) \
        + ([0] if lossless else [])
    assert len(rb) == bands
    # scales: rel_step × RMS of each slice (the dependent quantizer stores half a step), raised so
    # that every |x| / s <= 2^22, binary32
    per_row = -(-cols // group_size) if scale_mode == 2 else 0
    if scales is None:
        unit = 0.5 if quantizer == 1 else 1.0
        if scale_mode == 0:
            groups = [xf.reshape(-1)]
        elif scale_mode == 1:
            groups = [xf[r] for r in range(rows)]
        else:
            groups = [xf[r, g * group_size:(g + 1) * group_size]
                      for r in range(rows) for g in range(per_row)]
        sc = []
        f32max = float(np.finfo(np.float32).max)
        for g in groups:
            top = float(np.max(np.abs(g))) if g.size else 0.0
            rms = top * float(np.sqrt(np.mean((g / top) ** 2))) if top > 0 else 0.0
            s = min(max(rms * rel_step * unit, top / 2 ** 22), f32max)  # binary32 range
            sc.append(s if s > 0 else 1.0)
        scales = np.array(sc, np.float32)
    scales = np.asarray(scales, np.float32).reshape(-1)

    def S(r, c):
        if scale_mode == 0:
            return float(scales[0])
        if scale_mode == 1:
            return float(scales[r])
        return float(scales[r * per_row + c // group_size])
    Sm = np.array([[S(r, c) for c in range(cols)] for r in range(rows)], np.float64) \
        if n else np.zeros((rows, cols))
    u = np.where(finite, x / np.where(Sm > 0, Sm, 1.0), 0.0) if n else np.zeros((rows, cols))
    # only a float64 value beyond binary32's range times 2^22 needs this: band 1 cannot reach it
    # (BND-05), the remainder band restores it
    u = np.clip(u, -(1 << 24), 1 << 24)
    # levels
    k1 = np.clip(np.rint(u) if quantizer == 0 else dependent_greedy(u),
                 -(1 << 23), 1 << 23).astype(np.int64)
    levels = [k1]
    A = [multipliers(k1, quantizer)]
    c = 0
    for j in range(1, nq):
        c += rb[j]
        t = np.ldexp(u, c)
        a = np.rint(t).astype(np.int64)
        lim = 1 << (rb[j] + 1)
        q = np.clip(a - (A[-1] << rb[j]), -lim, lim)
        levels.append(q)
        A.append((A[-1] << rb[j]) + q)
    if tweak_levels is not None:
        tweak_levels(levels)
    # prefixes (only for well-formed levels; invalid vectors skip expectations)
    prefixes = []
    c = 0
    for j in range(nq):
        c += rb[j] if j else 0
        prefixes.append([prefix_pattern(int(A[j][r, cc]), float(Sm[r, cc]), c, dtype)
                         for r in range(rows) for cc in range(cols)])
    rem = None
    zz = 0
    if lossless:
        cbits = prefixes[-1]
        if z is None:
            acc = 0
            for b in bits:
                acc |= b
            zz = min((acc & -acc).bit_length() - 1, width - 1) if acc else width - 1
        else:
            zz = z
        rvals = [remainder(bits[i], cbits[i], width, zz) for i in range(n)]
        key = [(cbits[i] >> M) & ((1 << E) - 1) for i in range(n)]
        order = sorted(range(n), key=lambda i: key[i])          # stable: ties by index
        rem = [rvals[i] for i in order]
        if tweak_remainders is not None:
            tweak_remainders(rem)
        prefixes.append(list(bits))
    ub = f"<u{V.itemsize(dtype)}"
    pbytes = [np.array(p, dtype=np.uint64).astype(ub).tobytes() for p in prefixes]

    @np.errstate(over="ignore", invalid="ignore")
    def stats(p):
        y = np.array([value(b, dtype) for b in p], np.float64).reshape(rows, cols)
        d = np.where(finite, xf - np.where(finite, y, 0.0), 0.0)
        m = max(int(finite.sum()), 1)
        return (float(np.max(np.abs(d))) if n else 0.0, float(np.sum(d * d) / m),
                float(np.sum(xf * xf) / m))
    errors = [stats(p) for p in prefixes]
    # streams
    t = len(f.records)
    parts = []
    for q in levels:
        zg = zigzag(q.reshape(-1))
        top = int(zg.max()) if zg.size else 0
        ld, npt = next((nm, tp) for nm, tp, lim in LEVEL_DTYPES if top < lim)
        parts.append((ld, zg.astype(npt).tobytes(), n))
    if lossless:
        parts.append((f"uint{width}", np.array(rem, np.uint64).astype(ub).tobytes(), n))
    if scale_mode:
        parts.append(("float32", scales.tobytes(), scales.size))
    streams = []
    for sid, (sd, data, cnt) in enumerate(parts):
        ch = chain(chain_spec, sd)
        ce = chunk_elements or max(cnt, 1)
        size = V.itemsize(sd)
        blocks = []
        for ci in range(-(-cnt // ce)):
            part = data[ci * ce * size:min((ci + 1) * ce, cnt) * size]
            blocks.append(f.add_block(Block(V.CHUNK, ch.encode(part, sd, ci), t, sid, ci)))
        streams.append(dict(stream_dtype=V.DTYPES[sd][0], stream_rank=1, stream_shape=[cnt],
                            chunk_elements=ce, codec_count=len(ch.specs()), codecs=ch.specs(),
                            chunk_count=len(blocks), chunk_blocks=blocks))
    flags = (1 if lossless else 0) | (2 if digests else 0)
    head = HEAD.pack(bands, quantizer, scale_mode, flags, zz, group_size,
                     float(scales[0]) if scale_mode == 0 else 0.0)
    entries = []
    for j in range(bands):
        e = ENTRY.pack(rb[j], *errors[j])
        entries.append(e + (hashlib.sha256(pbytes[j]).digest() if digests else b""))
    params = head + b"".join(entries)
    full = pbytes[-1]
    err = dict(zip(("max_abs_error", "mean_squared_error", "signal_power"), errors[-1]))
    nb = name.encode()
    rec = dict(name_length=len(nb), name=nb, dtype=V.DTYPES[dtype][0], record_kind=3,
               record_flags=1 | (0 if lossless else 2), rank=len(shape), shape=shape,
               sha256=hashlib.sha256(full).digest(), error=None if lossless else err,
               params_length=len(params), params=params, stream_count=len(streams),
               streams=streams)
    f.records.append(rec)
    if expect:
        ex = V.Expect(name, dtype, shape, V.sha256(full))
        ex.prefix_sha256 = [V.sha256(p) for p in pbytes]
        f.expect.append(ex)
    return rec, dict(head=head, entries=entries, prefixes=pbytes, levels=levels)


def set_params(rec: dict, params: bytes) -> None:
    rec["params"] = params
    rec["params_length"] = len(params)


# -- the batch -------------------------------------------------------------------------------------
def batch_bands_1_0(s) -> None:
    s.batch = "bands-1.0"
    R = ["BND-01", "BND-02", "BND-03", "BND-04", "BND-05", "BND-06", "QZ-01", "QZ-03", "BND-08",
         "REC-09"]
    feats = ["record:bands"]
    qn = {0: "uniform", 1: "dependent"}
    sn = {0: "tensor", 1: "channel", 2: "group"}
    # -- valid -------------------------------------------------------------------------------------
    plan = [  # dtype, bands, lossless, quantizer, scale_mode, group, refine bits, digests
        ("float32", 2, True, 0, 0, 0, None, True),
        ("float32", 3, True, 1, 1, 0, [5], True),
        ("float32", 8, True, 1, 0, 0, [4, 4, 4, 4, 4, 4], True),
        ("float32", 8, False, 0, 1, 0, [4, 4, 4, 4, 4, 4, 4], True),
        ("float32", 4, False, 1, 2, 5, [3, 6, 2], False),
        ("float16", 2, False, 1, 1, 0, [6], True),
        ("float16", 4, True, 1, 2, 5, [2, 3], True),
        ("float16", 5, True, 0, 1, 0, [1, 1, 2], False),
        ("bfloat16", 2, True, 1, 1, 0, None, True),
        ("bfloat16", 3, False, 0, 0, 0, [2, 2], True),
        ("bfloat16", 6, True, 1, 2, 4, [2, 2, 2, 2], True),
        ("float64", 3, True, 1, 1, 0, [8], True),
        ("float8_e4m3fn", 2, True, 0, 0, 0, None, True),
        ("float8_e5m2", 3, True, 1, 1, 0, [2], True),
    ]
    for dtype, nb, lossless, qz, mode, g, rbits, dig in plan:
        f = File(6)
        add_bands(f, "w", dtype, [6, 12], bands=nb, quantizer=qz, scale_mode=mode,
                  group_size=g, refine_bits=rbits, lossless=lossless, digests=dig,
                  seed=f"{dtype}/{nb}/{lossless}/{qz}/{mode}")
        kind = "lossless" if lossless else "lossy"
        vid = f"v_bands_{dtype}_{nb}_{kind}_{qn[qz]}_{sn[mode]}"
        s.valid(vid, f, R[:8] + (["BND-08"] if dig else []) + ["REC-09"],
                feats + [f"dtype:{dtype}", f"bands:{kind}", f"quantizer:{qn[qz]}",
                         f"scales:{sn[mode]}"] + (["bands:digests"] if dig else []),
                f"A {dtype} [6, 12] band record of {nb} bands, {kind} "
                + ("(the last band is the bit-domain remainder)" if lossless
                   else "(all bands quantized)")
                + f", {qn[qz]} band 1, {sn[mode]} scales"
                + (f" (group_size {g})" if mode == 2 else "")
                + f", refinement bits {rbits or [4]}"
                + (", prefix digests" if dig else ", no prefix digests") + ".")
    # every special bit pattern through the remainder band
    for dtype in ("float32", "float16", "bfloat16", "float64", "float8_e4m3fn", "float8_e5m2"):
        f = File(6)
        add_bands(f, "w", dtype, [4, 10], bands=3, quantizer=1, scale_mode=1, specials=True,
                  seed=f"specials/{dtype}")
        s.valid(f"v_bands_specials_{dtype}", f, R[:8] + ["BND-08", "REC-09"],
                feats + [f"dtype:{dtype}", "bands:lossless", "bands:specials"],
                f"A lossless {dtype} band record whose first elements are -0.0, ±inf, NaNs with "
                "payloads, subnormals and the largest finite value: prefixes show 0 for the "
                "non-finite ones, the remainder band restores every bit pattern.")
    # remainder_shift z = 16: bfloat16 values stored as float32
    f = File(6)
    rng = rng_for("bands", "shift16")
    b16 = data_bits("bfloat16", 60, rng, True)
    add_bands(f, "w", "float32", [5, 12], bands=3, bits=[b << 16 for b in b16], seed="shift16")
    s.valid("v_bands_remainder_shift_16", f, R[:8] + ["BND-08", "BND-09", "REC-09"],
            feats + ["dtype:float32", "bands:lossless", "bands:remainder_shift"],
            "A float32 band record of bfloat16 values (the low 16 bits of every element are "
            "zero): remainder_shift 16, the remainders are 16-bit values in a uint32 stream.")
    # shapes, chunking, codecs
    f = File(6)
    add_bands(f, "vector", "float32", [37], bands=3, quantizer=1, seed="vector")
    add_bands(f, "conv", "float16", [4, 3, 2, 2], bands=4, quantizer=0, scale_mode=2,
              group_size=4, refine_bits=[3, 3], seed="conv")
    add_bands(f, "chunked", "float32", [8, 25], bands=4, quantizer=1, scale_mode=1,
              chunk_elements=64, seed="chunked")
    add_bands(f, "bytes", "bfloat16", [3, 9], bands=2, lossless=False, refine_bits=[5],
              chain_spec="bytes", seed="bytes")
    add_bands(f, "scalar", "float32", [], bands=2, seed="scalar")
    s.valid("v_bands_shapes_chunks", f, R[:8] + ["BND-08", "REC-09"],
            feats + ["shape", "chunking", "codec:bytes"],
            "Band records of rank 1, rank 4 (group scales), rank 0, a [8, 25] record whose "
            "streams have 4 chunks of 64 elements, and a lossy bfloat16 record through the "
            "bytes codec only.")

    # -- invalid: one defect each -----------------------------------------------------------------
    def one(**kw):
        f = File(6)
        kw.setdefault("bands", 3)
        kw.setdefault("scale_mode", 1)
        rec, info = add_bands(f, "w", kw.pop("dtype", "float32"), kw.pop("shape", [4, 6]),
                              seed="invalid", expect=False, **kw)
        return f, rec, info

    def head_with(info, **fields):
        n, qz, mode, flags, z, g, sc = HEAD.unpack(info["head"])
        d = dict(n=n, qz=qz, mode=mode, flags=flags, z=z, g=g, sc=sc)
        d.update(fields)
        return HEAD.pack(d["n"], d["qz"], d["mode"], d["flags"], d["z"], d["g"], d["sc"])

    f, rec, info = one()
    set_params(rec, rec["params"] + b"\0")
    s.invalid("x_BND-01_params_length", f, "MalformedRecord", ["BND-01"], feats,
              "Band params one byte longer than 16 + N × 60.")
    for what, kw in (("band_count_1", dict(n=1)), ("band_count_9", dict(n=9)),
                     ("quantizer_2", dict(qz=2)), ("scale_mode_3", dict(mode=3))):
        f, rec, info = one()
        set_params(rec, head_with(info, **kw) + b"".join(info["entries"]))
        s.invalid(f"x_BND-01_{what}", f, "MalformedRecord", ["BND-01"], feats,
                  f"Band params whose header has {what.replace('_', ' ')}.")
    f, rec, info = one(scale_mode=2, group_size=3)
    set_params(rec, head_with(info, g=0) + b"".join(info["entries"]))
    s.invalid("x_BND-01_group_size_0", f, "MalformedRecord", ["BND-01"], feats,
              "scale_mode 2 (group) with group_size 0.")
    f, rec, info = one(scale_mode=0)
    set_params(rec, head_with(info, g=4) + b"".join(info["entries"]))
    s.invalid("x_BND-01_group_size_with_tensor", f, "MalformedRecord", ["BND-01"], feats,
              "scale_mode 0 (tensor) with group_size 4.")
    for what, val in (("zero", 0.0), ("negative", -0.25), ("inf", float("inf")),
                      ("nan", float("nan"))):
        f, rec, info = one(scale_mode=0)
        set_params(rec, head_with(info, sc=val) + b"".join(info["entries"]))
        s.invalid(f"x_BND-01_tensor_scale_{what}", f, "MalformedRecord", ["BND-01"], feats,
                  f"A per-tensor scale that is {what}.")
    f, rec, info = one(scale_mode=1)
    set_params(rec, head_with(info, sc=0.5) + b"".join(info["entries"]))
    s.invalid("x_BND-01_scale_with_channel", f, "MalformedRecord", ["BND-01"], feats,
              "scale_mode 1 (channel) with a non-zero scale in the params.")

    def entry_bits(info, j, b):
        e = list(info["entries"])
        e[j] = bytes([b]) + e[j][1:]
        return info["head"] + b"".join(e)
    for what, j, b in (("band1_refine_bits", 0, 2), ("remainder_refine_bits", 2, 1),
                       ("refine_bits_0", 1, 0), ("refine_bits_25", 1, 25)):
        f, rec, info = one()
        set_params(rec, entry_bits(info, j, b))
        s.invalid(f"x_BND-01_{what}", f, "MalformedRecord", ["BND-01"], feats,
                  f"refine_bits of band {j + 1} is {b}.")
    f, rec, info = one(bands=4, lossless=False, refine_bits=[14, 12, 3])
    s.invalid("x_BND-01_refine_bits_sum_29", f, "MalformedRecord", ["BND-01"], feats,
              "A lossy record whose refinement bits add up to 29 (> 28).")
    f, rec, info = one(lossless=False)
    set_params(rec, head_with(info, z=2) + b"".join(info["entries"]))
    s.invalid("x_BND-01_shift_without_remainder", f, "MalformedRecord", ["BND-01"], feats,
              "remainder_shift 2 in a record without a remainder band.")
    f, rec, info = one()
    n, qz, mode, flags, z, g, sc = HEAD.unpack(info["head"])
    set_params(rec, head_with(info, flags=flags | 4) + b"".join(info["entries"]))
    s.invalid("x_RSV-01_bands_flag_bit_2", f, "MalformedRecord", ["RSV-01", "BND-01"], feats,
              "Band params flags bit 2 (reserved) is set.")
    f, rec, info = one()
    h = bytearray(info["head"])
    h[6] = 1
    set_params(rec, bytes(h) + b"".join(info["entries"]))
    s.invalid("x_RSV-01_bands_header_reserved", f, "MalformedRecord", ["RSV-01", "BND-01"], feats,
              "A reserved byte of the BandHeader is 1.")
    f, rec, info = one()
    e = list(info["entries"])
    e[1] = e[1][:2] + b"\x01" + e[1][3:]
    set_params(rec, info["head"] + b"".join(e))
    s.invalid("x_RSV-01_bands_entry_reserved", f, "MalformedRecord", ["RSV-01", "BND-01"], feats,
              "A reserved byte of band 2's BandEntry is 1.")
    # BND-02
    f, rec, info = one()
    rec["dtype"] = V.DTYPES["int32"][0]
    s.invalid("x_BND-02_dtype_int32", f, "MalformedRecord", ["BND-02"], feats,
              "A band record of dtype int32.")
    f, rec, info = one()
    set_params(rec, head_with(info, z=32) + b"".join(info["entries"]))
    s.invalid("x_BND-02_shift_32", f, "MalformedRecord", ["BND-02"], feats,
              "A float32 band record with remainder_shift 32 (must be < 32).")
    # BND-03
    f, rec, info = one()
    rec["streams"] = rec["streams"][:-1]
    rec["stream_count"] -= 1
    f.remove_block(len(f.blocks) - 1)
    s.invalid("x_BND-03_missing_scale_stream", f, "MalformedRecord", ["BND-03"], feats,
              "A channel-scaled band record without its scale stream.")
    f, rec, info = one()
    rec["streams"][0]["stream_dtype"] = V.DTYPES["int8"][0]
    s.invalid("x_BND-03_level_dtype_int8", f, "MalformedRecord", ["BND-03"], feats,
              "Band 1's level stream has dtype int8 (must be uint8, uint16 or uint32).")
    f, rec, info = one()
    rec["streams"][2]["stream_dtype"] = V.DTYPES["uint16"][0]
    s.invalid("x_BND-03_remainder_uint16", f, "MalformedRecord", ["BND-03"], feats,
              "The remainder stream of a float32 record has dtype uint16 (must be uint32).",
              also=("CorruptPayload",))
    f, rec, info = one()
    rec["streams"][1]["stream_shape"] = [12]
    rec["streams"][1]["chunk_elements"] = 12
    s.invalid("x_BND-03_levels_short", f, "MalformedRecord", ["BND-03"], feats,
              "Band 2's level stream has 12 entries for a [4, 6] tensor.",
              also=("CorruptPayload",))
    f, rec, info = one()
    rec["streams"][3]["stream_dtype"] = V.DTYPES["float16"][0]
    s.invalid("x_BND-03_scale_float16", f, "MalformedRecord", ["BND-03"], feats,
              "The scale stream has dtype float16 (must be float32).", also=("CorruptPayload",))
    f, rec, info = one(scale_mode=2, group_size=3)
    rec["streams"][3]["stream_shape"] = [4]
    rec["streams"][3]["chunk_elements"] = 4
    s.invalid("x_BND-03_group_scale_count", f, "MalformedRecord", ["BND-03"], feats,
              "A [4, 6] record with group_size 3 whose scale stream has 4 entries, not 8.",
              also=("CorruptPayload",))
    # BND-04
    f, rec, info = one()
    rec["record_flags"] = 3
    rec["error"] = dict(max_abs_error=0.0, mean_squared_error=0.0, signal_power=0.0)
    s.invalid("x_BND-04_lossy_with_remainder", f, "MalformedRecord", ["BND-04"], feats,
              "A lossless band record (with a remainder band) whose lossy flag is set.")
    f, rec, info = one(lossless=False)
    rec["record_flags"] = 1
    rec["error"] = None
    s.invalid("x_BND-04_lossless_without_remainder", f, "MalformedRecord", ["BND-04"], feats,
              "A band record without a remainder band whose lossy flag is clear.")

    # BND-05
    def big_base(levels):
        levels[0][1, 2] = (1 << 23) + 1
    f, rec, info = one(lossless=False, tweak_levels=big_base, quantizer=0)
    s.invalid("x_BND-05_band1_level_2_23_plus_1", f, "CorruptPayload", ["BND-05"], feats,
              "A band-1 level of 2^23 + 1.")

    def big_refine(levels):
        levels[1][0, 0] = -(1 << 5) - 1
    f, rec, info = one(lossless=False, refine_bits=[4, 4], tweak_levels=big_refine)
    s.invalid("x_BND-05_refine_level", f, "CorruptPayload", ["BND-05"], feats,
              "A band-2 level of −(2^5 + 1) with refine_bits 4 (the limit is 2^5).")
    # BND-06
    for what, val in (("zero", 0.0), ("negative", -1.0), ("inf", float("inf")),
                      ("nan", float("nan"))):
        sc = np.full(4, 0.01, np.float32)
        sc[2] = val
        f, rec, info = one(scales=sc)
        s.invalid(f"x_BND-06_channel_scale_{what}", f, "CorruptPayload", ["BND-06", "QZ-02"],
                  feats,
                  f"A stored channel scale that is {what}.")
    # BND-08
    f, rec, info = one()
    e = list(info["entries"])
    e[-1] = e[-1][:28] + bytes(32)
    set_params(rec, info["head"] + b"".join(e))
    s.invalid("x_BND-08_last_digest", f, "MalformedRecord", ["BND-08"], feats,
              "Band N's prefix_sha256 (all zero) differs from the record's sha256.")

    # BND-09
    def overflow(rem):
        rem[3] = 1 << 16
    rng = rng_for("bands", "invalid-shift")
    f, rec, info = one(bits=[b << 16 for b in data_bits("bfloat16", 24, rng, False)],
                       tweak_remainders=overflow)
    s.invalid("x_BND-09_remainder_past_shift", f, "CorruptPayload", ["BND-09"], feats,
              "remainder_shift 16 and a remainder of 2^16.", also=("DigestMismatch",),
              note="A decoder that does not check BND-09 decodes other bytes and fails REC-09.")
    # REC-09 with a band record: the record digest is of the full decode
    f, rec, info = one(digests=False)
    d = bytearray(rec["sha256"])
    d[0] ^= 1
    rec["sha256"] = bytes(d)
    s.invalid("x_REC-09_bands_digest", f, "DigestMismatch", ["REC-09"], feats,
              "A band record without prefix digests whose sha256 differs in one bit from the "
              "SHA-256 of its full decode (the original bytes).")
