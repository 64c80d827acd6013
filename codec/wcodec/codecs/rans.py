"""Lane method 4 `rans` of codec `lanes`: static order-0 rANS, spec/codecs/rans.md.

Encoder: one byte histogram per lane, the scale R (10..12) that gives the fewest bytes, frequencies
normalized to 2^R, ENCODER_STATES interleaved 32-bit states, 16-bit renormalization. Decoder: header
and table checked field by field (RNS-01..04) before any table is built, then one native loop; the
final states and the word count are checked after it (RNS-06).

Two implementations of the loops, giving the same bytes: C (`_crans.c`, vector decoder, built by
setup.py when a compiler is available) and numba (`_kernels.py`, always there).
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import CorruptPayload

METHOD_RANS = 4  # 3 stays unassigned: conformance vector x_LAN-04_method_3 expects it unknown
HEADER = struct.Struct("<BBBBBH")  # scale_log2, state_count, first_symbol, last_symbol, freq_bits,
#                                    freq_base
RANS_L = 1 << 16
MAX_SCALE_LOG2 = 15
MAX_STATES = 32
ENCODER_SCALES = (10, 12)  # encoder's search range for R: R <= 12 takes the fast decoder
ENCODER_STATES = 16  # two AVX2 registers of states: the vector decoder needs N % 8 == 0

_k = None

try:  # the C kernels (setup.py builds them when a compiler is there); numba otherwise
    from . import _crans as native
except ImportError:  # pragma: no cover - depends on the install
    native = None

# _crans error codes -> (rule, message) of parse() and decode_into() below
NATIVE_ERRORS = {
    1: ("RNS-01", "rans lane data is shorter than its header"),
    2: ("RNS-01", "rans header out of range"),
    3: ("RNS-03", "rans lane data too short for its table and states, or an odd number of word "
                  "bytes"),
    4: ("RNS-02", "rans table padding bits are not zero"),
    5: ("RNS-02", "rans frequencies do not sum to 2^scale_log2"),
    6: ("RNS-04", "rans initial state below 2^16"),
    7: ("RNS-05", "rans stream ends before the lane is decoded"),
    8: ("RNS-06", "rans stream does not end in its initial state"),
}


def native_error(code: int, where: str = "") -> CorruptPayload:
    rule, msg = NATIVE_ERRORS[code]
    return CorruptPayload(msg + where, rule=rule)


def _native_encoder() -> bool:
    return native is not None and hasattr(native, "rans_head")


def kernels():
    """The numba module, imported on first use (numba's import is slow; plain files never need it)."""
    global _k
    if _k is None:
        from . import _kernels
        _k = _kernels
    return _k


def estimate(counts: np.ndarray) -> tuple[int, float]:
    """(R, bytes) of the cheapest rANS coding of a lane with this histogram; R = -1 if none."""
    return choose_scale(counts, ENCODER_SCALES[0], ENCODER_SCALES[1], ENCODER_STATES)


def choose_scale(counts: np.ndarray, lo: int, hi: int, n_states: int) -> tuple[int, float]:
    """The scale R in lo..hi giving the fewest bytes, and that size (_kernels.choose_scale; the C
    port when built, so that an encode never imports numba)."""
    if _native_encoder():
        return native.choose_scale(np.ascontiguousarray(counts, np.uint64), lo, hi, n_states)
    return kernels().choose_scale(counts, lo, hi, n_states)


def encode(lane: np.ndarray, counts: np.ndarray, scale_log2: int,
           n_states: int | None = None) -> bytes:
    """The lane data of method `rans` for `lane` (uint8), frequencies from `counts`."""
    n_states = ENCODER_STATES if n_states is None else n_states
    if _native_encoder():  # normalization and table in C too (the same values as _kernels')
        f = np.empty(256, np.int64)
        head = np.empty(7 + 512, np.uint8)
        t = native.rans_head(np.ascontiguousarray(counts, np.uint64), scale_log2, n_states, f, head)
        if t < 0:
            raise ValueError("rans: more symbols than 2^scale_log2 slots")
        out = np.empty(t + 4 * n_states + 2 * lane.size + 16, np.uint8)  # 8 words of slack
        n = native.encode_lane(lane, f.astype(np.uint32), scale_log2, n_states, head[:t], out)
        if n < 0:  # cannot happen: one word per byte at most, and out holds that many
            raise AssertionError("rans: native encoder ran out of room")
        return out[:n].tobytes()
    k = kernels()
    f, ok = k.normalize(counts, scale_log2)
    if not ok:
        raise ValueError("rans: more symbols than 2^scale_log2 slots")
    a, b, w, base, t = k.table_layout(f)
    if native is not None:
        head = np.zeros(HEADER.size + t, np.uint8)
        head[:HEADER.size] = np.frombuffer(HEADER.pack(scale_log2, n_states, a, b, w, base),
                                           np.uint8)
        k.pack_table(f, a, b, w, base, head[HEADER.size:])
        out = np.empty(head.size + 4 * n_states + 2 * lane.size + 16, np.uint8)  # 8 words of slack
        n = native.encode_lane(lane, f.astype(np.uint32), scale_log2, n_states, head, out)
        if n < 0:  # cannot happen: one word per byte at most, and out holds that many
            raise AssertionError("rans: native encoder ran out of room")
        return out[:n].tobytes()
    words = np.empty(lane.size + n_states + 1, np.uint16)
    states, nw = k.rans_encode(lane, f, scale_log2, n_states, words)
    out = np.zeros(HEADER.size + t + 4 * n_states + 2 * nw, np.uint8)
    out[:HEADER.size] = np.frombuffer(HEADER.pack(scale_log2, n_states, a, b, w, base), np.uint8)
    k.pack_table(f, a, b, w, base, out[HEADER.size:HEADER.size + t])
    pos = HEADER.size + t
    out[pos:pos + 4 * n_states] = states.astype("<u4").view(np.uint8)
    out[pos + 4 * n_states:] = words[:nw].astype("<u2").view(np.uint8)
    return out.tobytes()


def parse(body) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Check the header and table (RNS-01..04); returns (R, f[256], states, words)."""
    body = memoryview(body)
    if len(body) < HEADER.size:
        raise CorruptPayload(f"rans lane data of {len(body)} bytes is shorter than its header",
                             rule="RNS-01")
    r, n, a, b, w, base = HEADER.unpack_from(body)
    if not 1 <= r <= MAX_SCALE_LOG2 or not 1 <= n <= MAX_STATES or a > b or not 1 <= w <= 16:
        raise CorruptPayload(f"rans header out of range: scale_log2 {r}, state_count {n}, "
                             f"symbols {a}..{b}, freq_bits {w}", rule="RNS-01")
    nbits = (b - a + 1) * w
    t = (nbits + 7) // 8
    if len(body) < HEADER.size + t + 4 * n or (len(body) - HEADER.size - t) % 2:
        raise CorruptPayload("rans lane data too short for its table and states, or an odd "
                             "number of word bytes", rule="RNS-03")
    table = np.frombuffer(body, np.uint8, t, HEADER.size)
    if nbits % 8 and table[-1] >> (nbits % 8):
        raise CorruptPayload("rans table padding bits are not zero", rule="RNS-02")
    f = kernels().unpack_table(table, a, b, w, base)
    if int(f.sum()) != 1 << r:
        raise CorruptPayload(f"rans frequencies sum to {int(f.sum())}, not 2^{r}", rule="RNS-02")
    pos = HEADER.size + t
    states = np.frombuffer(body, "<u4", n, pos).astype(np.int64)
    if (states < RANS_L).any():
        raise CorruptPayload("rans initial state below 2^16", rule="RNS-04")
    words = np.frombuffer(body, "<u2", (len(body) - pos - 4 * n) // 2, pos + 4 * n)
    return r, f, states, words


def decode_into(body, out: np.ndarray) -> None:
    """Decode lane data `body` into `out` (uint8, D bytes) or raise CorruptPayload."""
    if native is not None:
        code = native.decode_lane(body, out)
        if code:
            raise native_error(code)
        return
    r, f, states, words = parse(body)
    k = kernels()
    if states.size == 4 and r <= 12:
        x, used, ok = k.rans_decode4(states, words, k.rans_table_packed(f, r), r, out)
    else:
        ent, sym = k.rans_table(f, r)
        x, used, ok = k.rans_decode(states, words, ent, sym, r, out)
    if not ok:
        raise CorruptPayload("rans stream ends before the lane is decoded", rule="RNS-05")
    if used != words.size or (x != RANS_L).any():
        raise CorruptPayload("rans stream does not end in its initial state (final states "
                             f"{x.tolist()}, {words.size - used} words unread)", rule="RNS-06")
