"""Record kind 3 `bands` (spec/records/bands.md): lossless full decode of any bit pattern, the exact
prefix arithmetic (centre of bin), the stored per-prefix errors and digests, the decoder's rules
BND-01..09 on crafted params, and the API / CLI entry points."""

import hashlib
import struct

import numpy as np
import pytest

from wcodec import dtypes as D
from wcodec import quant as Q
from wcodec.errors import CorruptPayload, DigestMismatch, InputError, MalformedRecord
from wcodec.reader import Reader
from wcodec.records.bands import HEAD, BandParams, Bands, remainder_decode, remainder_encode
from wcodec.writer import EncodeOptions, Writer

from conftest import SPECIAL_BITS

FLOATS = ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]


def _bits(x, name):
    """Bit patterns of float64 values x rounded to dtype `name` (QZ-03's rounding)."""
    return Q.round_to_dtype(np.asarray(x, np.float64).reshape(-1), D.by_name(name))


def _write(path, items, **opts):
    with Writer(path, options=EncodeOptions(threads=1, **opts)) as w:
        for name, dt, shape, el, kw in items:
            w.add(name, D.by_name(dt), shape, el, kind=Bands, **kw)


def _data(dt, shape=(24, 20), seed=1, specials=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 0.05
    x.reshape(-1)[7] = 0.9          # an outlier is never clipped
    el = _bits(x, dt)
    if specials:
        sp = np.array(SPECIAL_BITS[dt], dtype=np.uint64).astype(el.dtype)
        el[-sp.size:] = sp
    return el


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_lossless_every_bit_pattern(tmp_path, dt, n):
    """BND spec: the full decode of a lossless record gives the original bytes, NaN payloads,
    -0.0, infinities and subnormals included; every stored prefix digest matches its decode."""
    el = _data(dt)
    p = tmp_path / "b.wcd"
    scales = ["tensor", "channel", "group:7"][n % 3]
    _write(p, [("w", dt, [24, 20], el, dict(bands=n, rel_step=0.5, refine_bits=3,
                                             scales=scales, quantizer=["uniform", "dependent"][n % 2]))])
    with Reader(p) as r:
        assert r.read_bytes("w").tobytes() == el.tobytes()
        d = Bands.describe(r.info("w").record)
        assert d["bands"] == n and d["remainder"]
        for k in range(1, n + 1):
            b = r.read_bytes("w", bands=k) if k < n else r.read_bytes("w")
            assert hashlib.sha256(b).hexdigest() == d["prefix_sha256"][k - 1]


@pytest.mark.parametrize("dt", ["float32", "float16", "bfloat16", "float64"])
def test_prefix_is_centre_of_bin(tmp_path, dt):
    """A uniform band 1 and rounded refinements: prefix k is within half its step of x (plus the
    dtype's rounding), and the error falls with k."""
    el = _data(dt, specials=False)
    x = Q.to_float64(el, D.by_name(dt))
    p = tmp_path / "b.wcd"
    _write(p, [("w", dt, [24, 20], el, dict(bands=4, step=0.02, refine_bits=2,
                                             quantizer="uniform", lossless=False))])
    prev = np.inf
    with Reader(p) as r:
        bp = Bands.params(r.info("w").record)
        for k in range(1, 5):
            y = Q.to_float64(r.read_bytes("w", bands=k).view(D.by_name(dt).uint), D.by_name(dt))
            step = bp.scale * 2.0 ** -bp.shift(k)
            ulp = np.abs(x) * 2.0 ** -Q.float_format(D.by_name(dt)).mbits
            assert np.all(np.abs(y - x) <= step / 2 + ulp + 1e-300)
            mse = float(np.mean((y - x) ** 2))
            assert mse < prev
            prev = mse
            # stored ErrorStats of prefix k = what the decode gives
            assert bp.errors[k - 1]["mean_squared_error"] == pytest.approx(mse, rel=1e-9)


def test_lossy_full_decode_is_encoders_reconstruction(tmp_path):
    el = _data("float32", specials=False)
    enc = Bands.encode(D.by_name("float32"), [24, 20], el, EncodeOptions(), bands=3,
                       step=0.01, lossless=False)
    assert enc.lossy and enc.decoded is not None
    p = tmp_path / "b.wcd"
    _write(p, [("w", "float32", [24, 20], el, dict(bands=3, step=0.01, lossless=False))])
    with Reader(p) as r:
        assert r.read_bytes("w").tobytes() == enc.decoded.tobytes()
    with pytest.raises(InputError):   # a lossy record cannot hold NaN / inf
        Bands.encode(D.by_name("float32"), [24, 20], _data("float32"), EncodeOptions(), bands=3,
                     step=0.01, lossless=False)


def test_remainder_shift_skips_zero_low_bits(tmp_path):
    """bfloat16 values stored as float32: z = 16, and the full decode is still exact."""
    el = _data("float32", specials=False) & np.uint32(0xFFFF0000)
    p = tmp_path / "b.wcd"
    _write(p, [("w", "float32", [24, 20], el, dict(bands=2, rel_step=0.3))])
    with Reader(p) as r:
        assert Bands.params(r.info("w").record).remainder_shift == 16
        assert r.read_bytes("w").tobytes() == el.tobytes()


@pytest.mark.parametrize("width,z", [(64, 0), (32, 0), (32, 16), (16, 0), (8, 0), (8, 3)])
def test_remainder_round_trips_every_pattern(width, z):
    rng = np.random.default_rng(width + z)
    m = (1 << width) - 1
    x = rng.integers(0, 1 << 62, 4000, dtype=np.uint64) & np.uint64(m)
    x = (x >> np.uint64(z)) << np.uint64(z)
    c = rng.integers(0, 1 << 62, 4000, dtype=np.uint64) & np.uint64(m)
    r = remainder_encode(x, c, width, z)
    assert int(r.max()) < (1 << (width - z))
    assert np.array_equal(remainder_decode(r, c, width, z), x)


def test_band1_level_changes_bytes_not_decode(tmp_path):
    el = _data("float32", shape=(64, 64), specials=False)
    outs = []
    for lvl in (None, 19):
        p = tmp_path / f"b{lvl}.wcd"
        _write(p, [("w", "float32", [64, 64], el, dict(bands=3, step=0.01, band1_level=lvl))])
        with Reader(p) as r:
            outs.append([r.read_bytes("w", bands=k).tobytes() for k in (1, 2)])
    assert outs[0] == outs[1]


# -- decoder rules on crafted params ---------------------------------------------------------------
def _params(n=3, qz=1, mode=0, flags=1, z=0, g=0, s=0.01, bits=None, digests=False):
    bits = bits if bits is not None else [0] + [4] * (n - 2) + [0]
    out = [HEAD.pack(n, qz, mode, flags | (2 if digests else 0), z, g, s)]
    for b in bits:
        out.append(struct.pack("<B3xddd", b, 0.0, 0.0, 0.0))
        if digests:
            out.append(bytes(32))
    return b"".join(out)


@pytest.mark.parametrize("params,rule", [
    (_params(n=1, bits=[0]), "BND-01"),
    (_params(n=9, bits=[0] + [1] * 7 + [0]), "BND-01"),
    (_params(qz=2), "BND-01"),
    (_params(mode=3), "BND-01"),
    (_params(mode=2, g=0, s=0.0), "BND-01"),
    (_params(mode=0, g=5), "BND-01"),
    (_params(s=0.0), "BND-01"),
    (_params(s=float("nan")), "BND-01"),
    (_params(mode=1, s=0.5), "BND-01"),
    (_params(bits=[1, 4, 0]), "BND-01"),
    (_params(bits=[0, 4, 3]), "BND-01"),
    (_params(bits=[0, 25, 0]), "BND-01"),
    (_params(n=4, flags=0, bits=[0, 20, 9, 0][:3] + [1]), "BND-01"),
    (_params(flags=0, z=3, bits=[0, 4, 4]), "BND-01"),
    (_params()[:-1], "BND-01"),
    (_params(flags=1 | 4), "RSV-01"),
])
def test_params_rules(params, rule):
    with pytest.raises(MalformedRecord) as e:
        BandParams.unpack(params)
    assert e.value.rule == rule


def test_params_round_trip():
    p = BandParams.unpack(_params(n=4, bits=[0, 3, 5, 0], digests=True))
    assert p.pack() == _params(n=4, bits=[0, 3, 5, 0], digests=True)
    assert p.quantized_bands == 3 and p.shift(3) == 8


def test_prefix_digest_mismatch(tmp_path):
    """BND-07: a prefix whose bytes disagree with its stored digest is rejected (and the check
    can be skipped explicitly)."""
    from conftest import WFile  # noqa: F401  (crafting below edits the params in place)
    el = _data("float32", specials=False)
    p = tmp_path / "b.wcd"
    _write(p, [("w", "float32", [24, 20], el, dict(bands=3, step=0.01))])
    data = bytearray(p.read_bytes())
    with Reader(p) as r:
        params = bytes(r.info("w").params)
    pos = bytes(data).find(params)
    assert pos > 0
    # flip a byte of band 1's prefix_sha256 (entry 0 starts after the 16-byte header; its digest
    # after the 28-byte entry), then re-seal the index CRCs through WFile
    from conftest import WFile
    f = WFile.parse(bytes(data))
    rec = f.record("w")
    pp = bytearray(rec["params"])
    pp[16 + 28] ^= 1
    rec["params"] = bytes(pp)
    q = tmp_path / "c.wcd"
    q.write_bytes(f.build())
    with Reader(q) as r:
        with pytest.raises(DigestMismatch) as e:
            r.read_bytes("w", bands=1)
        assert e.value.rule == "BND-07"
        r.read_bytes("w", bands=2)          # other prefixes are unaffected
    with Reader(q, verify_sha256=False) as r:
        r.read_bytes("w", bands=1)


def test_api_bands(tmp_path):
    torch = pytest.importorskip("torch")
    from wcodec.api import load_file, safe_open, save_file
    g = torch.Generator().manual_seed(0)
    t = {"a": torch.randn(16, 12, generator=g) * 0.1, "i": torch.arange(5)}
    p = str(tmp_path / "m.wcd")
    save_file(t, p, bands=3, band_options=dict(band1_bits=3.0))
    full = load_file(p)
    assert torch.equal(full["a"], t["a"]) and torch.equal(full["i"], t["i"])
    errs = []
    with safe_open(p, "pt") as f:
        for k in (1, 2, 3):
            y = f.get_tensor("a", bands=k)
            errs.append(float(((y - t["a"]) ** 2).mean()))
    assert errs[0] > errs[1] > errs[2] == 0.0
    one = load_file(p, bands=1)
    assert torch.equal(one["i"], t["i"]) and not torch.equal(one["a"], t["a"])


def test_inspect_shows_band_sizes_and_prefix_errors(tmp_path):
    """`inspect` (report and table): each band's stored bytes add up to the tensor's, and the
    stored error of every prefix is the error of what that prefix decodes to."""
    from wcodec.inspect_view import inspect_report
    a, b = _data("float32", specials=False), _data("float16", shape=(8, 30), seed=2,
                                                   specials=False)
    p = tmp_path / "b.wcd"
    _write(p, [("a", "float32", [24, 20], a, dict(bands=4, step=0.01, refine_bits=3)),
               ("b", "float16", [8, 30], b, dict(bands=2, rel_step=0.3, scales="channel"))])
    with Reader(p) as r:
        rep = inspect_report(r)
        sse = {k: 0.0 for k in range(1, 5)}
        sig = 0.0
        for t in rep["tensors"]:
            bd = t["bands"]
            assert sum(bd["band_bytes"]) == t["stored_bytes"]
            assert bd["prefixes"][-1]["stored_bytes"] == t["stored_bytes"]
            dt = D.by_name(t["dtype"])
            x = Q.to_float64(r.read_bytes(t["name"]).view(dt.uint), dt)
            sig += float(np.sum(x * x))
            for k in range(1, 5):
                y = Q.to_float64(r.read_bytes(t["name"], bands=min(k, bd["bands"]))
                                 .view(dt.uint), dt) if k < bd["bands"] else x
                mse = float(np.mean((x - y) ** 2))
                sse[k] += mse * x.size
                if k <= bd["bands"]:
                    assert bd["prefixes"][k - 1]["mean_squared_error"] == pytest.approx(mse)
        summ = rep["band_summary"]
        assert [s["bands"] for s in summ] == [1, 2, 3, 4]
        for s in summ[:3]:
            assert s["snr_db"] == pytest.approx(10 * np.log10(sig / sse[s["bands"]]), abs=1e-6)
        assert summ[-1]["exact"] and summ[-1]["stored_bytes"] == sum(
            t["stored_bytes"] for t in rep["tensors"])
    from conftest import run_cli
    res = run_cli("inspect", str(p))
    assert res.returncode == 0 and "band prefixes" in res.stdout and "exact" in res.stdout
