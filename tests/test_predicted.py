"""Record kind 4 `predicted` (spec/records/predicted.md): every predictor, residual, permutation and
order round-trips bit for bit; the exact arithmetic (PRD-11) matches independent implementations;
reference chains are bounded (PRD-09), cycles rejected (PRD-08), and a missing or changed parent
is UnresolvedReference (PRD-10)."""

from __future__ import annotations

import os
import shutil
import struct
from fractions import Fraction

import numpy as np
import pytest

from wcodec import dtypes as D
from wcodec import errors as E
from wcodec.reader import Reader
from wcodec.records import predicted as P
from wcodec.records.predicted import Predicted, PredParams, Reference
from wcodec.writer import Writer

from conftest import SPECIAL_BITS

F32, BF16 = D.BY_NAME["float32"], D.BY_NAME["bfloat16"]


def bits(a: np.ndarray, dt: D.DType) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(dt.uint)


def pair(rng, shape, dt: D.DType, noise=1e-3):
    """A reference and a nearby tensor, as bit patterns of dt (with the dt's special values)."""
    a = rng.standard_normal(shape)
    b = a * 0.999 + rng.standard_normal(shape) * noise
    if dt.name == "bfloat16":
        ra = P.round_to_dtype(a.reshape(-1), dt)
        rb = P.round_to_dtype(b.reshape(-1), dt)
    elif dt.name in P.FLOAT_DTYPES:
        ra = bits(a.astype(dt.numpy_name), dt)
        rb = bits(b.astype(dt.numpy_name), dt)
    else:
        if dt.name.startswith("float8"):  # no numpy dtype: any byte patterns
            ra = rng.integers(0, 256, a.size).astype(np.uint8)
            return ra, (ra + rng.integers(-2, 3, a.size).astype(np.uint8)).astype(np.uint8)
        info = np.iinfo(dt.numpy_name) if dt.name != "bool" else None
        if info is None:
            ra = rng.integers(0, 2, a.size).astype(np.uint8)
            rb = ra ^ (rng.random(a.size) < 0.1).astype(np.uint8)
        else:
            ra = rng.integers(info.min, info.max, a.size, dtype=dt.numpy_name).view(dt.uint)
            rb = (ra + rng.integers(-3, 4, a.size).astype(dt.uint)).astype(dt.uint)
        return ra, rb
    spec = np.array(SPECIAL_BITS[dt.name], dtype=dt.uint)
    rb = rb.copy()
    rb[:spec.size] = spec
    ra[spec.size:2 * spec.size] = spec  # specials in the reference too
    return ra, rb


def write(path, items):
    """items: (name, dtype, shape, bit patterns, kind options or None)."""
    with Writer(path) as w:
        for name, dt, shape, data, opts in items:
            if opts is None:
                w.add(name, dt, shape, data)
            else:
                w.add(name, dt, shape, data, kind=Predicted, **opts)


def read_all(path):
    with Reader(path) as r:
        return {n: r.read_bytes(n) for n in r.keys()}, {n: r.info(n) for n in r.keys()}


CASES = [
    ("float32", dict(residual="sub")),
    ("float32", dict(residual="xor")),
    ("float32", dict(residual="sub", order="natural")),
    ("float32", dict(predictor="scalar", a=float(np.float32(1 - 3e-7)), repeat=20)),
    ("float32", dict(predictor="scalar", a=0.75, b=0.125, repeat=3)),
    ("float32", dict(predictor="channel")),
    ("float32", dict(permutation="rows")),
    ("float32", dict(permutation="columns", residual="xor")),
    ("float64", dict(predictor="scalar", a=0.999, b=-1e-3, repeat=2)),
    ("float16", dict(predictor="channel", permutation="rows")),
    ("bfloat16", dict(predictor="scalar", a=0.99, repeat=5)),
    ("bfloat16", dict(residual="xor", permutation="columns")),
    ("int8", dict(residual="sub")),
    ("int64", dict(residual="xor", permutation="rows")),
    ("uint16", dict(residual="sub")),
    ("bool", dict(residual="xor")),
    ("float8_e4m3fn", dict(residual="sub")),
]


@pytest.mark.parametrize("dtname,opts", CASES, ids=lambda c: str(c))
def test_lossless_roundtrip(tmp_path, dtname, opts):
    rng = np.random.default_rng(len(str(opts)))
    dt = D.BY_NAME[dtname]
    shape = (12, 10)
    ra, rb = pair(rng, shape, dt)
    opts = dict(opts)
    if opts.get("predictor") == "channel":
        opts["coeffs"] = np.stack([rng.uniform(0.5, 1.5, shape[0]),
                                   rng.uniform(-0.1, 0.1, shape[0])]).astype(np.float32)
        opts["coeffs"][1, 0] = 0.0  # a zero offset (the sign of −0.0 × α is kept)
    if opts.get("permutation", "none") != "none":
        d = shape[0] if opts["permutation"] == "rows" else shape[1]
        opts["perm"] = rng.permutation(d)
    path = tmp_path / "m.wcodec"
    write(path, [("ref", dt, shape, ra, None),
                 ("x", dt, shape, rb, dict(reference=Reference("ref"), ref=ra.view(np.uint8),
                                           **opts))])
    got, info = read_all(path)
    assert info["x"].record_kind == 4
    assert got["x"].tobytes() == rb.tobytes()
    assert got["ref"].tobytes() == ra.tobytes()


def test_identity_sub_zero_residual(tmp_path):
    rng = np.random.default_rng(1)
    ra, _ = pair(rng, (64, 64), F32)
    path = tmp_path / "m.wcodec"
    write(path, [("a", F32, (64, 64), ra, None),
                 ("b", F32, (64, 64), ra, dict(reference=Reference("a"), ref=ra.view(np.uint8)))])
    got, _ = read_all(path)
    assert got["b"].tobytes() == ra.tobytes()
    # a repeated tensor costs almost nothing
    with Reader(path) as r:
        assert sum(r.blocks[b].payload_length for s in r.info("b").streams
                   for b in s.chunk_blocks) < ra.nbytes / 50


# -- exact arithmetic (PRD-11) ------------------------------------------------------------------
def _bf16_reference(y: float) -> int:
    """binary64 -> bfloat16 by exact rational rounding to nearest even (an independent model)."""
    if y != y:
        return 0x7FC0
    sign = 0x8000 if (y < 0 or (y == 0 and struct.pack("<d", y)[7] & 0x80)) else 0
    m = abs(Fraction(y)) if y not in (float("inf"), float("-inf")) else None
    if m is None:
        return sign | 0x7F80
    if m == 0:
        return sign
    if m < Fraction(2) ** -126:
        q = Fraction(2) ** -133  # subnormal quantum
    else:
        e = -126
        while m >= Fraction(2) ** (e + 1):
            e += 1
        q = Fraction(2) ** (e - 7)
    k = m / q
    n = int(k)
    r = k - n
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2):
        n += 1
    best = n * q
    if best >= Fraction(2) ** 128 - Fraction(2) ** (127 - 8):
        return sign | 0x7F80  # overflow to infinity
    v = np.float64(float(best)).astype(np.float32).view(np.uint32)
    return sign | (int(v) >> 16)


def test_bfloat16_rounding_is_single_rounding():
    rng = np.random.default_rng(5)
    ys = list(rng.standard_normal(300) * 10.0 ** rng.integers(-40, 39, 300))
    # ties and near-ties at binary32 and bfloat16 precision: double rounding would get these wrong
    for base in (1.0, 3.0, 1.5e-39, 2.0 ** -133):
        ulp16 = base * 2.0 ** -8
        ys += [base + ulp16 * k / 2 + d for k in (1, 3) for d in (0.0, base * 2.0 ** -30,
                                                                   -base * 2.0 ** -30)]
    ys += [0.0, -0.0, 3.4e38, -3.4e38, 3.3961e38, 1e-45, -1e-46, float("nan"), float("inf")]
    y = np.array(ys, dtype=np.float64)
    got = P.round_to_dtype(y, BF16)
    want = np.array([_bf16_reference(float(v)) for v in y], dtype=np.uint16)
    assert (got == want).all(), [(float(v), hex(g), hex(w)) for v, g, w in zip(y, got, want)
                                 if g != w][:5]


def test_scalar_affine_fast_path_equals_binary64_definition():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(2000) * 10.0 ** rng.integers(-44, 38, 2000)).astype(np.float32)
    x[:4] = [-0.0, 0.0, np.inf, np.nan]
    a = float(np.float32(1 - 3e-7))
    fast = P.scalar_affine(x.view(np.uint32), F32, a, 0.0, 7)
    slow = x.view(np.uint32)
    for _ in range(7):  # the spec's steps, written out
        y = P.to_float64(slow, F32) * np.float64(a)
        slow = P.round_to_dtype(y, F32)
    assert (fast == slow).all()
    assert fast[0] == 0x80000000  # −0.0 × a keeps its sign
    assert fast[3] == P.CANONICAL_NAN["float32"]


def test_adamw_weight_decay_is_reproduced_exactly():
    """torch.optim.AdamW's decoupled decay (lr·wd, in float32) applied N times with zero grad
    equals the scalar predictor with repeat = N."""
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.randn(4096))
    start = w.detach().clone().numpy().view(np.uint32).copy()
    opt = torch.optim.AdamW([w], lr=3e-5, weight_decay=0.01)
    for _ in range(20):
        opt.zero_grad()
        w.grad = torch.zeros_like(w)
        opt.step()
    a = float(np.float32(1 - 3e-5 * 0.01))
    pred = P.scalar_affine(start, F32, a, 0.0, 20)
    assert (pred == w.detach().numpy().view(np.uint32)).mean() > 0.99


def test_quantized_residual(tmp_path):
    rng = np.random.default_rng(3)
    ra, rb = pair(rng, (32, 16), F32, noise=1e-2)
    step = 1e-3
    path = tmp_path / "m.wcodec"
    write(path, [("a", F32, (32, 16), ra, None),
                 ("b", F32, (32, 16), rb, dict(reference=Reference("a"), ref=ra.view(np.uint8),
                                                residual="quantized", step=step))])
    got, info = read_all(path)
    assert info["b"].record.record_flags & 2  # lossy
    with np.errstate(invalid="ignore", over="ignore"):
        x = rb.view(np.float32).astype(np.float64)
        y = got["b"].view(np.float32).astype(np.float64)
        p = ra.view(np.float32).astype(np.float64)
        # levels are clipped to 2^28 (PRD-12): only residuals within that range are bounded
        fin = np.isfinite(x) & np.isfinite(p) & (np.abs(x - p) < step * 2.0 ** 27)
    assert fin.sum() > 400
    assert np.abs(x - y)[fin].max() <= step * 0.5 * 1.001
    # a zero level leaves the prediction's bit pattern, NaN payloads and −0.0 included
    same = (rb == ra)
    assert (got["b"].view(np.uint32)[same] == ra[same]).all()
    nanref = np.isnan(ra.view(np.float32))
    assert (got["b"].view(np.uint32)[nanref] == ra[nanref]).all()


# -- reference chains ---------------------------------------------------------------------------
def chain_file(path, depth):
    """t0 plain, t1..t_depth each predicted from the one before."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(50).astype(np.float32)
    items = [("t0", F32, (50,), bits(x, F32), None)]
    for i in range(1, depth + 1):
        y = x + np.float32(i * 1e-3)
        items.append((f"t{i}", F32, (50,), bits(y, F32),
                      dict(reference=Reference(f"t{i - 1}"), ref=x.view(np.uint8))))
        x = y
    write(path, items)
    return x


def test_depth_16_decodes_17_is_limit(tmp_path):
    chain_file(tmp_path / "d.wcodec", 17)
    with Reader(tmp_path / "d.wcodec") as r:
        r.read_bytes("t16")  # 16 predicted records: fine
        with pytest.raises(E.LimitExceeded) as ei:
            r.read_bytes("t17")
        assert ei.value.rule == "PRD-09"


def test_depth_values_exact(tmp_path):
    last = chain_file(tmp_path / "d.wcodec", 16)
    with Reader(tmp_path / "d.wcodec") as r:
        assert r.read_bytes("t16").tobytes() == last.tobytes()


@pytest.mark.parametrize("cycle", [["a"], ["a", "b"], ["a", "b", "c"]])
def test_cycle_rejected(tmp_path, cycle):
    x = bits(np.arange(8, dtype=np.float32), F32)
    items = [("base", F32, (8,), x, None)]
    for i, n in enumerate(cycle):
        nxt = cycle[(i + 1) % len(cycle)]
        items.append((n, F32, (8,), x, dict(reference=Reference(nxt), ref=x.view(np.uint8))))
    write(tmp_path / "c.wcodec", items)
    with Reader(tmp_path / "c.wcodec") as r:
        assert r.read_bytes("base").tobytes() == x.tobytes()
        with pytest.raises(E.MalformedRecord) as ei:
            r.read_bytes("a")
        assert ei.value.rule == "PRD-08"


def test_missing_reference_and_wrong_shape(tmp_path):
    x = bits(np.arange(8, dtype=np.float32), F32)
    write(tmp_path / "r.wcodec", [
        ("base", F32, (8,), x, None),
        ("small", F32, (4,), x[:4], None),
        ("nobody", F32, (8,), x, dict(reference=Reference("ghost"), ref=x.view(np.uint8))),
        ("shape", F32, (8,), x, dict(reference=Reference("small"), ref=x.view(np.uint8)))])
    with Reader(tmp_path / "r.wcodec") as r:
        for name, rule in (("nobody", "PRD-06"), ("shape", "PRD-07")):
            with pytest.raises(E.MalformedRecord) as ei:
                r.read_bytes(name)
            assert ei.value.rule == rule


def test_bad_permutation_is_corrupt(tmp_path):
    x = bits(np.arange(12, dtype=np.float32), F32)
    write(tmp_path / "p.wcodec", [
        ("base", F32, (4, 3), x, None),
        ("x", F32, (4, 3), x, dict(reference=Reference("base"), ref=x.view(np.uint8),
                                   permutation="rows", perm=np.array([0, 1, 1, 3])))])
    with Reader(tmp_path / "p.wcodec") as r:
        with pytest.raises(E.CorruptPayload) as ei:
            r.read_bytes("x")
        assert ei.value.rule == "PRD-05"


# -- parent files (PRD-10) ----------------------------------------------------------------------
def parent_and_child(folder):
    rng = np.random.default_rng(6)
    ra, rb = pair(rng, (16, 8), F32)
    parent = folder / "p.wcodec"
    write(parent, [("w", F32, (16, 8), ra, None)])
    sha = P.file_sha256(parent)
    child = folder / "c.wcodec"
    write(child, [("w", F32, (16, 8), rb, dict(reference=Reference("w", sha, "p.wcodec"),
                                               ref=ra.view(np.uint8)))])
    return parent, child, rb


def test_parent_found_by_hash_even_renamed(tmp_path):
    parent, child, rb = parent_and_child(tmp_path)
    got, info = read_all(child)
    assert got["w"].tobytes() == rb.tobytes()
    os.rename(parent, tmp_path / "renamed.bin")
    got, _ = read_all(child)
    assert got["w"].tobytes() == rb.tobytes()


def test_close_closes_the_parent_files_it_opened(tmp_path):
    parent, child, rb = parent_and_child(tmp_path)
    r = Reader(child)
    assert r.read_bytes("w").tobytes() == rb.tobytes()
    parents = list(r.owned_resolver._readers.values())
    assert len(parents) == 1 and parents[0]._mm is not None
    r.close()
    assert parents[0]._mm is None and r.owned_resolver is None


def test_missing_parent(tmp_path):
    parent, child, _ = parent_and_child(tmp_path)
    parent.unlink()
    with Reader(child) as r:
        with pytest.raises(E.UnresolvedReference) as ei:
            r.read_bytes("w")
    assert ei.value.rule == "PRD-10" and "not found" in str(ei.value)
    assert E.UnresolvedReference.exit_code == 20


def test_changed_parent(tmp_path):
    parent, child, _ = parent_and_child(tmp_path)
    d = shutil.copy(child, tmp_path / "other")
    rng = np.random.default_rng(9)
    write(parent, [("w", F32, (16, 8), bits(rng.standard_normal((16, 8)).astype(np.float32),
                                             F32), None)])
    with Reader(d) as r:
        with pytest.raises(E.UnresolvedReference) as ei:
            r.read_bytes("w")
    assert "has changed" in str(ei.value)


# -- params (PRD-01) ----------------------------------------------------------------------------
def good_params(**kw):
    base = dict(source=1, predictor=0, permutation=0, residual=1, order=0, repeat=0, a=0.0,
                b=0.0, step=0.0, parent_sha256=bytes(32), ref_name="r", hint="")
    base.update(kw)
    return PredParams(**base)


@pytest.mark.parametrize("kw,rule", [
    (dict(source=3), "PRD-01"), (dict(predictor=3), "PRD-01"), (dict(permutation=3), "PRD-01"),
    (dict(residual=0), "PRD-01"), (dict(order=2), "PRD-01"),
    (dict(predictor=1, a=1.0, repeat=0), "PRD-01"),
    (dict(predictor=1, a=1.0, repeat=1025), "PRD-01"),
    (dict(predictor=1, a=float("inf"), repeat=1), "PRD-01"),
    (dict(a=1.0), "PRD-01"), (dict(repeat=1), "PRD-01"),
    (dict(residual=3, step=0.0), "PRD-01"), (dict(step=1.0), "PRD-01"),
    (dict(parent_sha256=b"\x01" * 32), "PRD-01"), (dict(hint="x"), "PRD-01"),
    (dict(source=2, parent_sha256=b"\x01" * 32, hint="../x"), "PRD-01"),
    (dict(ref_name=""), "PRD-01"),
])
def test_bad_params(kw, rule):
    with pytest.raises(E.MalformedRecord) as ei:
        PredParams.unpack(good_params(**kw).pack())
    assert ei.value.rule == rule


def test_params_reserved_and_length():
    raw = bytearray(good_params().pack())
    raw[5] = 1
    with pytest.raises(E.MalformedRecord) as ei:
        PredParams.unpack(bytes(raw))
    assert ei.value.rule == "RSV-01"
    with pytest.raises(E.MalformedRecord):
        PredParams.unpack(good_params().pack() + b"\x00")
    good = PredParams.unpack(good_params(predictor=1, a=0.5, b=-0.0, repeat=1024).pack())
    assert good.repeat == 1024


def test_aligned_layer_prediction(tmp_path):
    """Hidden units matched by the assignment solver; the encoder picks the predicted record with
    the permuted reference by coded size, and decoding restores the layer's own order."""
    linear_sum_assignment = pytest.importorskip("scipy.optimize").linear_sum_assignment
    from wcodec.records.predicted_encoder import choose
    from wcodec.writer import EncodeOptions
    rng = np.random.default_rng(8)
    a = rng.standard_normal((64, 32)).astype(np.float32)
    true = rng.permutation(64)
    b = (a[true] + rng.standard_normal(a.shape) * 1e-4).astype(np.float32)
    fa = a / np.linalg.norm(a, axis=1, keepdims=True)
    fb = b / np.linalg.norm(b, axis=1, keepdims=True)
    _, perm = linear_sum_assignment(-(fb @ fa.T))
    assert (perm == true).all()
    ra, rb = bits(a, F32), bits(b, F32)
    c = choose("b", F32, a.shape, rb, ra, Reference("a"), EncodeOptions(),
               extra=[dict(predictor="identity", permutation="rows", perm=perm, residual="sub")])
    assert c.kind is Predicted and c.options["permutation"] == "rows"
    assert c.size < 0.8 * c.intra_size
    # unrelated data: intra is kept, never a larger predicted record
    noise = bits(rng.standard_normal(a.shape).astype(np.float32), F32)
    c2 = choose("n", F32, a.shape, noise, ra, Reference("a"), EncodeOptions(),
                extra=[dict(predictor="identity", permutation="rows", perm=perm,
                            residual="sub")])
    assert c2.size <= c2.intra_size
    write(tmp_path / "m.wcodec", [("a", F32, a.shape, ra, None),
                                  ("b", F32, a.shape, rb, dict(c.options))])
    got, _ = read_all(tmp_path / "m.wcodec")
    assert got["b"].tobytes() == rb.tobytes()


@pytest.mark.parametrize("kw", [dict(predictor=1, a=0.5, repeat=1), dict(order=1),
                                dict(residual=3, step=1.0)])
def test_integer_tensor_only_identity_natural_lossless(tmp_path, kw):
    """PRD-04: an int8 tensor with an affine predictor, exponent order or quantized residual."""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tools"))
    import vectorlib as V
    import vectors_predicted as VP
    f = V.File(6)
    data = bytes(range(12))
    f.add_plain("w0", "int8", [3, 4], data, chain_=V.chain("bytes"))
    rec = VP.add_predicted(f, "w1", "int8", [3, 4], data, x=data, expect=False)
    VP.set_params(rec, VP.params(**kw))
    if kw.get("residual") == 3:
        rec["record_flags"] = 3
        rec["error"] = dict(max_abs_error=0.0, mean_squared_error=0.0, signal_power=0.0)
    path = tmp_path / "i.wcodec"
    path.write_bytes(f.build())
    with pytest.raises(E.MalformedRecord) as ei:
        with Reader(path) as r:
            r.read_bytes("w1")
    assert ei.value.rule == "PRD-04"
