"""The C kernels of lane method `rans` (codec/wcodec/codecs/_crans.c) against the numba kernels and
the pure-Python lanes decoder: same encoded bytes, same decoded bytes, same rule for every defect.

The C module is optional (built by setup.py when a compiler is present); without it these tests
skip, and everything else runs on numba.
"""

import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from wcodec.codecs import LanesCodec, rans
from wcodec.codecs import _kernels as nb
from wcodec.errors import CorruptPayload, FormatError

native = rans.native
pytestmark = pytest.mark.skipif(native is None, reason="C kernels not built")


def _numba_encode(lane, counts, r, n):
    """rans.encode's numba path, whatever rans.native is."""
    f, ok = nb.normalize(counts, r)
    assert ok
    a, b, w, base, t = nb.table_layout(f)
    words = np.empty(lane.size + n + 1, np.uint16)
    states, nw = nb.rans_encode(lane, f, r, n, words)
    out = np.zeros(rans.HEADER.size + t + 4 * n + 2 * nw, np.uint8)
    out[:7] = np.frombuffer(rans.HEADER.pack(r, n, a, b, w, base), np.uint8)
    nb.pack_table(f, a, b, w, base, out[7:7 + t])
    out[7 + t:7 + t + 4 * n] = states.astype("<u4").view(np.uint8)
    out[7 + t + 4 * n:] = words[:nw].astype("<u2").view(np.uint8)
    return out.tobytes()


def _numba_decode(body, d):
    r, f, states, words = rans.parse(body)
    out = np.empty(d, np.uint8)
    ent, sym = nb.rans_table(f, r)
    x, used, ok = nb.rans_decode(states, words, ent, sym, r, out)
    if not ok:
        return None, "RNS-05"
    if used != words.size or (x != rans.RANS_L).any():
        return None, "RNS-06"
    return out, None


lanes_st = st.tuples(
    st.integers(0, 3),                      # distribution
    st.integers(0, 70000),                  # length
    st.sampled_from([1, 2, 3, 4, 5, 8, 9, 16, 24, 31, 32]),   # N
    st.sampled_from([9, 10, 11, 12, 13, 15]),                 # R
    st.integers(0, 2**32 - 1))              # seed


def _make(kind, n, seed):
    g = np.random.default_rng(seed)
    if kind == 0:
        return np.clip(np.round(g.normal(120, 2.5, n)), 0, 255).astype(np.uint8)
    if kind == 1:
        return g.integers(0, 256, n, dtype=np.uint8)
    if kind == 2:
        return (g.random(n) < 0.01).astype(np.uint8) * 200
    return g.integers(0, 5, n, dtype=np.uint8)


@settings(max_examples=60, deadline=None)
@given(lanes_st)
def test_c_encoder_and_decoder_agree_with_numba(args):
    kind, n, N, R, seed = args
    lane = _make(kind, n, seed)
    counts = nb.histogram(lane)
    c2 = np.empty(256, np.uint64)
    native.histogram(lane, c2)
    assert np.array_equal(counts, c2.astype(np.int64))
    if n == 0 or (counts > 0).sum() > 1 << R:
        return
    body = rans.encode(lane, counts, R, N)
    assert body == _numba_encode(lane, counts, R, N)
    out = np.empty(n, np.uint8)
    assert native.decode_lane(body, out) == 0
    assert np.array_equal(out, lane)
    # the fused lanes decoder, alone and next to a second lane of the same N (decoded in pairs)
    for k in (1, 2):
        payload = b"".join(struct.pack("<BI", 4, len(body)) for _ in range(k)) + body * k
        got = LanesCodec(k).decode(payload, n * k)
        assert bytes(got) == lane.tobytes() * k


def _defects(body):
    """(name, damaged body) pairs, one defect each, covering RNS-01..06."""
    r, n = body[0], body[1]
    yield "short", body[:5]
    yield "scale 0", b"\x00" + body[1:]
    yield "states 0", body[:1] + b"\x00" + body[2:]
    yield "odd words", body + b"\x00"
    yield "truncated words", body[:-2]
    yield "extra word", body + b"\x00\x00"
    for i in (7, 9, len(body) // 2, len(body) - 1, len(body) - 3):
        for bit in (0, 3, 7):
            b = bytearray(body)
            b[i] ^= 1 << bit
            yield f"flip {i}.{bit}", bytes(b)
    del r, n


@pytest.mark.parametrize("N", [4, 16])
def test_every_defect_gets_the_same_rule_in_c_and_numba(N):
    lane = _make(0, 5000, 7)
    body = rans.encode(lane, nb.histogram(lane), 11, N)
    for name, bad in _defects(body):
        try:
            ref, ref_rule = _numba_decode(bad, lane.size)
        except CorruptPayload as e:
            ref, ref_rule = None, e.rule
        out = np.empty(lane.size, np.uint8)
        code = native.decode_lane(bad, out)
        if ref_rule is None:
            assert code == 0 and np.array_equal(out, ref), name
        else:
            assert code and rans.NATIVE_ERRORS[code][0] == ref_rule, (name, code, ref_rule)


def _lanes_outcome(codec, payload, total, python):
    try:
        out = codec._decode_python(memoryview(payload), total) if python else \
            codec.decode(payload, total)
        return bytes(out), None
    except FormatError as e:
        return None, (type(e).__name__, e.rule)


def test_fused_lanes_decoder_reports_what_the_python_one_does():
    g = np.random.default_rng(3)
    d = 4096
    lanes = [_make(0, d, 1), g.integers(0, 256, d, dtype=np.uint8), np.full(d, 9, np.uint8),
             _make(3, d, 2)]
    bodies = [(4, rans.encode(lanes[0], nb.histogram(lanes[0]), 12, 16)),
              (0, lanes[1].tobytes()), (2, b"\x09"),
              (4, rans.encode(lanes[3], nb.histogram(lanes[3]), 10, 16))]
    codec = LanesCodec(4)

    def payload(bs):
        return b"".join(struct.pack("<BI", m, len(b)) for m, b in bs) + b"".join(b for _, b in bs)

    good = payload(bodies)
    assert _lanes_outcome(codec, good, 4 * d, False) == (b"".join(x.tobytes() for x in lanes), None)
    cases = [payload(bodies)[:-1], payload(bodies) + b"\x00"]
    for j in range(4):  # a defect in each lane: method, length, body
        for m in (3, 7, 0, 2, 4):
            bs = list(bodies)
            bs[j] = (m, bodies[j][1])
            cases.append(payload(bs))
        bs = list(bodies)
        bs[j] = (bodies[j][0], bodies[j][1][:-2])
        cases.append(payload(bs))
    for k in range(0, len(good), 97):  # flipped bytes anywhere
        b = bytearray(good)
        b[k] ^= 0x40
        cases.append(bytes(b))
    for total in (4 * d, 4 * d + 1, 4 * d - 4):
        for c in cases:
            assert _lanes_outcome(codec, c, total, False) == _lanes_outcome(codec, c, total, True)


@pytest.mark.parametrize("size,ut", [(2, np.uint16), (4, np.uint32)])
@pytest.mark.parametrize("rotate", [True, False])
def test_planes_kernels_agree_with_numba(size, ut, rotate):
    g = np.random.default_rng(size + rotate)
    for k in (0, 1, 7, 4096, 100003):
        w = g.integers(0, 2 ** (8 * size), k, dtype=np.uint64).astype(ut)
        a, b = np.empty(k * size, np.uint8), np.empty(k * size, np.uint8)
        native.planes_encode(w, size, rotate, a)
        nb.planes_encode(w, size, rotate, b)
        assert np.array_equal(a, b)
        back = np.empty(k, ut)
        native.planes_decode(a, size, rotate, back)
        assert np.array_equal(back, w)


def test_lossless_decode_does_not_import_numba(tmp_path):
    """With the C kernels a lossless decode never pays numba's import (over a second)."""
    import subprocess
    import sys
    import torch
    import wcodec
    p = tmp_path / "m.wcd"
    wcodec.save_file({"w": torch.randn(300, 500).to(torch.bfloat16),
                      "b": torch.randn(4000, dtype=torch.float32)}, p)
    code = ("import sys, wcodec; t = wcodec.load_file(sys.argv[1]); "
            "print(len(t), 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["2", "False"]
