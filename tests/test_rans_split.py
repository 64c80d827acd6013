"""Lane method 6 `rans_split` (spec/codecs/rans_split.md): packing against the spec's example and a
bit-level model, round trips through every decoder path (C lanes decoder, Python path, no C at
all, the chunk batch), one crafted defect per rule, and the encoder's choice."""

import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import wcodec
from wcodec.codecs import LanesCodec, rans, rans_split
from wcodec.codecs.lanes import METHOD_RANS, METHOD_RANS_SPLIT, METHOD_RAW
from wcodec.errors import CorruptPayload


def _model_split(lane: bytes, k: int) -> tuple[bytes, bytes]:
    """§2 bit by bit, with Python integers (independent of both implementations)."""
    n, wl = 8 // k, 8 - k
    sym = [0] * (-(-len(lane) // n))
    low = 0
    for i, v in enumerate(lane):
        sym[i // n] |= (v >> wl) << (k * (i % n))
        low |= (v & ((1 << wl) - 1)) << (i * wl)
    return bytes(sym), low.to_bytes(-(-len(lane) * wl // 8), "little")


def test_spec_example():
    lane = np.frombuffer(bytes([0xC5, 0x41, 0xFF, 0x00, 0x80]), np.uint8)
    sym, low = rans_split.split(lane, 2)
    assert sym.tobytes() == bytes([0x37, 0x02]) and low.tobytes() == bytes([0x45, 0xF0, 0x03, 0x00])
    assert rans_split.sizes(5, 2) == (4, 2)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([1, 2, 4]))
def test_split_matches_the_model_in_every_path(data, k):
    lane = np.frombuffer(data, np.uint8)
    want = _model_split(data, k)
    sym, low = rans_split.split(lane, k)  # C when built
    assert (sym.tobytes(), low.tobytes()) == want
    native, rans_split.native_split = rans_split.native_split, None
    try:
        sym2, low2 = rans_split.split(lane, k)  # numpy
    finally:
        rans_split.native_split = native
    assert (sym2.tobytes(), low2.tobytes()) == want
    assert rans_split.join(sym, low, k, len(data)).tobytes() == data


def _payload(body: bytes) -> bytes:
    return struct.pack("<BI", METHOD_RANS_SPLIT, len(body)) + body


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("d", [0, 1, 7, 8, 9, 4097, 70003])
def test_round_trip_every_decoder(k, d):
    g = np.random.default_rng(d + k)
    lane = g.integers(0, 256, d, dtype=np.uint8)
    body = rans_split.encode(lane, k, n_states=8 if d % 2 else 16)
    out = np.empty(d, np.uint8)
    rans_split.decode_into(body, out)
    assert np.array_equal(out, lane)
    payload = _payload(body)
    assert np.array_equal(np.asarray(LanesCodec(1).decode(payload, d)), lane)  # C lanes decoder
    assert np.array_equal(LanesCodec(1)._decode_python(memoryview(payload), d), lane)


def test_decodes_without_the_c_kernels(monkeypatch):
    lane = np.random.default_rng(3).integers(0, 256, 5003, dtype=np.uint8)
    body = rans_split.encode(lane, 2)
    monkeypatch.setattr(rans, "native", None)  # numba rANS, numpy join
    out = np.empty(lane.size, np.uint8)
    rans_split.decode_into(body, out)
    assert np.array_equal(out, lane)


def _good(d=2001, k=2):
    lane = np.random.default_rng(5).integers(0, 256, d, dtype=np.uint8)
    return lane, rans_split.encode(lane, k)


def _bad_padding_symbol():
    lane, _ = _good()
    sym, low = rans_split.split(lane, 2)
    sym = sym.copy()
    sym[-1] |= 0x80  # 2001 bytes: the last symbol stands for one byte
    c = rans_split.histogram(sym)
    return bytes([2]) + low.tobytes() + rans.encode(sym, c, 12, 16)


def _bad_padding_low():
    lane, body = _good()
    b, _ = rans_split.sizes(lane.size, 2)
    body = bytearray(body)
    body[b] |= 0x80  # 2001 * 6 bits: two padding bits in the last low byte
    return bytes(body)


@pytest.mark.parametrize("make,rule", [
    (lambda: b"", "RSP-01"),
    (lambda: bytes([3]) + _good()[1][1:], "RSP-01"),
    (lambda: bytes([0]) + _good()[1][1:], "RSP-01"),
    (lambda: _good()[1][:1 + 1500], "RSP-02"),
    (_bad_padding_symbol, "RSP-03"),
    (_bad_padding_low, "RSP-03"),
    (lambda: _good()[1] + b"\0\0", "RNS-06"),
    (lambda: _good()[1][:-2], "RNS-05"),
])
def test_defects_in_every_path(make, rule):
    body = make()
    for decode in (lambda: rans_split.decode_into(body, np.empty(2001, np.uint8)),
                   lambda: LanesCodec(1).decode(_payload(body), 2001),
                   lambda: LanesCodec(1)._decode_python(memoryview(_payload(body)), 2001)):
        with pytest.raises(CorruptPayload) as e:
            decode()
        assert e.value.rule == rule


def _mantissa_like(n, seed=0):
    """The sign and mantissa byte of bf16 weights: top bits slightly skewed, the rest noise."""
    w = (torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.03).to(torch.bfloat16)
    u = w.view(torch.int16).numpy().view(np.uint16)
    return (((u << 1) | (u >> 15)) & 0xFF).astype(np.uint8)


def test_encoder_choice():
    """rans_split for a plane that rans barely shrinks, rans for a skewed one, raw for noise."""
    def method(lane):
        payload = LanesCodec(1).encode(lane.tobytes())
        return payload[0]
    g = np.random.default_rng(1)
    mant = _mantissa_like(1 << 16)
    assert method(mant) == METHOD_RANS_SPLIT
    assert method(np.clip(g.normal(120, 2.5, 1 << 16), 0, 255).astype(np.uint8)) == METHOD_RANS
    assert method(g.integers(0, 256, 1 << 16, dtype=np.uint8)) == METHOD_RAW
    # the choice costs at most D/512 bytes over whole-byte rans (lanes.SPLIT_SLACK)
    c = rans.kernels().histogram(mant)
    r, _ = rans.estimate(c)
    whole = len(rans.encode(mant, c, r))
    split = len(LanesCodec(1).encode(mant.tobytes())) - 5
    assert split <= whole + mant.size / 512


def test_bf16_file_uses_rans_split_and_every_read_path_agrees(tmp_path):
    g = torch.Generator().manual_seed(2)
    t = {"a": (torch.randn(300001, generator=g) * 0.02).to(torch.bfloat16),
         "b": (torch.randn(70000, generator=g) * 0.05).to(torch.float32)}
    p = tmp_path / "m.wcd"
    wcodec.save_file(t, p)
    from wcodec.reader import Reader
    with Reader(p) as r:
        methods = set()
        for name in t:
            s = r.info(name).streams[0]
            for b in s.chunk_blocks:
                payload = r.block_payload(b, None)
                methods |= {payload[5 * j] for j in range(s.dtype.itemsize)}
        assert METHOD_RANS_SPLIT in methods and METHOD_RANS in methods
        whole = r.read_all()  # the native chunk batch
        for name, v in t.items():
            ref = v.contiguous().view(torch.uint8).numpy().tobytes()
            assert whole[name].tobytes() == ref
            assert r.read_bytes(name, verify_sha256=True).tobytes() == ref
