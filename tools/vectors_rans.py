"""Conformance vectors for lane method 4 `rans` of codec `lanes` (spec/codecs/rans.md): batch
`rans-1.0` of tools/gen_vectors.py.

Written from the spec, not from wcodec: a small Python rANS encoder following rans.md §4 (states
start at 2^16, symbols coded last to first, renormalize before coding, words reversed), with the
frequencies, scale and state count chosen per vector, and a table packer following §2. Invalid
vectors take a valid lane and change one thing.
"""

from __future__ import annotations

import struct

import numpy as np

import vectorlib as V
from vectorlib import File, chain, rng_for

RANS = 4
L = 1 << 16
LOSSLESS = ["REC-10", "PLN-01", "REC-09"]
DECODE_RULES = ["RNS-01", "RNS-02", "RNS-03", "RNS-04", "RNS-05", "RNS-06", "LAN-03", "LAN-04"]


# -- the encoder of rans.md §4 ---------------------------------------------------------------------
def normalize(lane: bytes, R: int) -> list[int]:
    """Frequencies summing to 2^R, at least 1 for each byte value present (the generator's own,
    frozen choice): proportional, floored, the rest to the most frequent value."""
    counts = [0] * 256
    for v in lane:
        counts[v] += 1
    n, M = len(lane), 1 << R
    f = [max(1, c * M // n) if c else 0 for c in counts]
    top = max(range(256), key=lambda s: (f[s], -s))
    f[top] += M - sum(f)
    assert f[top] >= 1 and sum(f) == M
    return f


def encode(lane: bytes, f: list[int], R: int, N: int) -> tuple[list[int], list[int]]:
    C = [0] * 256
    for s in range(1, 256):
        C[s] = C[s - 1] + f[s - 1]
    x = [L] * N
    emitted = []
    for i in range(len(lane) - 1, -1, -1):
        j, s = i % N, lane[i]
        if x[j] >= f[s] << (32 - R):
            emitted.append(x[j] & 0xFFFF)
            x[j] >>= 16
        x[j] = (x[j] // f[s] << R) + x[j] % f[s] + C[s]
    return x, emitted[::-1]


def body(R, N, a, b, w, base, f, states, words, *, pad_bits=0) -> bytes:
    acc = 0
    for s in range(a, b + 1):
        v = f[s] - base
        assert 0 <= v < 1 << w
        acc |= v << ((s - a) * w)
    nbits = (b - a + 1) * w
    acc |= pad_bits << nbits
    table = acc.to_bytes((nbits + 7) // 8, "little")
    return struct.pack("<BBBBBH", R, N, a, b, w, base) + table + \
        b"".join(struct.pack("<I", s) for s in states) + b"".join(struct.pack("<H", v) for v in words)


def lane_rans(lane: bytes, R: int, N: int, *, base: int | None = None, full_range=False,
              f: list[int] | None = None, w: int | None = None) -> bytes:
    f = f or normalize(lane, R)
    present = [s for s in range(256) if f[s]]
    a, b = (0, 255) if full_range else (present[0], present[-1])
    if base is None:
        base = min(f[a:b + 1]) if all(f[a:b + 1]) else 0
    w = w or max(1, max(f[s] - base for s in range(a, b + 1)).bit_length())
    states, words = encode(lane, f, R, N)
    return body(R, N, a, b, w, base, f, states, words)


# -- files -----------------------------------------------------------------------------------------
def _lanes(data: bytes, dtype: str, lane_count: int | None = None) -> list[bytes]:
    x = V.planes_encode(data, dtype)
    return V.split_lanes(x, lane_count or V.itemsize(dtype))


def rans_file(name, dtype, shape, data, lane_bodies, lane_count=None) -> File:
    """One tensor in one chunk through planes > lanes whose lanes are given as (method, body)."""
    f = File(6)
    f.add_plain(name, dtype, shape, data,
                chain_=chain("planes+lanes", dtype, lanes=lane_count, methods="raw"))
    f.blocks[0].payload = V.lanes_payload(lane_bodies)
    return f


def weights(vid: str, dtype: str, n: int) -> bytes:
    r = rng_for(vid)
    v = (r.standard_normal(n) * 0.04).astype(np.float32)
    if dtype == "float32":
        return v.astype("<f4").tobytes()
    if dtype == "float16":
        return v.astype("<f2").tobytes()
    if dtype == "bfloat16":  # round to nearest even on the top 16 bits
        u = v.view("<u4").astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return u.astype("<u2").tobytes()
    if dtype == "float8_e4m3fn":  # any byte pattern except the NaNs 0x7F/0xFF, weighted small
        b = np.clip(np.round(r.normal(40, 6, n)), 0, 126).astype(np.uint8)
        b[r.random(n) < 0.5] |= 0x80
        return b.tobytes()
    raise ValueError(dtype)


def batch_rans_1_0(s) -> None:
    s.batch = "rans-1.0"
    feats = ["codec:lanes", "lane:rans"]
    valid_rules = DECODE_RULES[:-1] + LOSSLESS

    # -- valid: every float dtype, several scales and state counts ------------------------------
    cases = [("bfloat16", 3000, [(12, 4), (11, 4)]),
             ("float16", 2000, [(12, 4), (15, 2)]),
             ("float32", 1500, [(10, 1), (12, 3), (13, 4), (14, 32)]),
             ("float8_e4m3fn", 4000, [(12, 8)])]
    for dtype, n, params in cases:
        vid = f"v_rans_{dtype}"
        data = weights(vid, dtype, n)
        lanes = _lanes(data, dtype)
        f = rans_file("w", dtype, [n], data,
                      [(RANS, lane_rans(ln, R, N)) for ln, (R, N) in zip(lanes, params)])
        s.valid(vid, f, valid_rules, feats + [f"dtype:{dtype}", "codec:planes"],
                f"{dtype} [{n}] through planes > lanes, every lane rans with (scale_log2, "
                f"state_count) = {params}.")

    # the worked example of rans.md §2 (a = 5, b = 7, w = 4, table 85 03) in a real lane
    r = rng_for("v_rans_spec_example")
    lane = bytes(r.choice([5, 6, 7], 200, p=[5 / 16, 8 / 16, 3 / 16]).astype(np.uint8))
    f5 = [0] * 256
    f5[5], f5[6], f5[7] = 5, 8, 3
    states, words = encode(lane, f5, 4, 2)
    b = body(4, 2, 5, 7, 4, 0, f5, states, words)
    assert b[7:9] == bytes.fromhex("8503")
    f = File(6)
    f.add_plain("u", "uint8", [200], lane, chain_=chain("bytes+lanes", "uint8", methods="raw"))
    f.blocks[0].payload = V.lanes_payload([(RANS, b)])
    s.valid("v_rans_spec_example", f, valid_rules, feats + ["dtype:uint8"],
            "The frequency table of rans.md §2 (values 5, 6, 7 with f = 5, 8, 3, R = 4) coding "
            "200 bytes with 2 states.")

    # edge cases: one symbol (no words at all), all 256 symbols with the largest table, more
    # states than symbols, freq_base in use, a symbol range wider than the symbols present
    f = File(6)
    one = bytes([0x3C]) * 300
    f.add_plain("one_symbol", "uint8", [300], one, chain_=chain("bytes+lanes", "uint8"))
    f.blocks[0].payload = V.lanes_payload([(RANS, lane_rans(one, 10, 4))])
    allv = bytes(rng_for("v_rans_edges", "all").permutation(np.tile(np.arange(256), 7))
                 .astype(np.uint8))
    f.add_plain("all_256", "uint8", [len(allv)], allv, chain_=chain("bytes+lanes", "uint8"))
    fmax = normalize(allv, 15)
    f.blocks[1].payload = V.lanes_payload([(RANS, lane_rans(allv, 15, 4, base=0, f=fmax, w=16))])
    few = bytes([9, 200, 9, 9, 17])
    f.add_plain("more_states", "uint8", [5], few, chain_=chain("bytes+lanes", "uint8"))
    f.blocks[2].payload = V.lanes_payload([(RANS, lane_rans(few, 8, 32, full_range=True))])
    s.valid("v_rans_edges", f, valid_rules, feats + ["dtype:uint8"],
            "Edge cases: a lane of one byte value (its frequency is 2^R, no words), all 256 byte "
            "values with R = 15 and 16-bit table entries (the largest table), 32 states for 5 "
            "bytes (27 states never move), and a table over 0..255 with zero frequencies.")

    data = weights("v_rans_mixed_methods", "float32", 2048)
    ln = _lanes(data, "float32")
    up = (np.frombuffer(data, "<u4") & 0xFFFF0000).astype("<u4").tobytes()
    lu = _lanes(up, "float32")
    f = File(6)
    f.add_plain("w", "float32", [2048], data,
                chain_=chain("planes+lanes", "float32", methods="raw"))
    f.blocks[0].payload = V.lanes_payload([(RANS, lane_rans(ln[0], 12, 4)),
                                           (V.ZSTD, V.zstd_compress(ln[1])),
                                           (RANS, lane_rans(ln[2], 13, 2)), (V.RAW, ln[3])])
    f.add_plain("upcast", "float32", [2048], up,
                chain_=chain("planes+lanes", "float32", methods="raw"))
    f.blocks[1].payload = V.lanes_payload([(RANS, lane_rans(lu[0], 12, 4)),
                                           (RANS, lane_rans(lu[1], 12, 4)), (V.FILL, lu[2][:1]),
                                           (RANS, lane_rans(lu[3], 10, 4))])  # the sign bits
    s.valid("v_rans_mixed_methods", f, valid_rules + ["LAN-05", "LAN-06"],
            feats + ["lane:zstd", "lane:raw", "lane:fill", "dtype:float32"],
            "rans lanes next to zstd, raw and fill lanes in the same chunk.")

    # -- invalid: one defect each, in a float32 [1024] tensor's exponent lane ------------------
    data = weights("x_rans_base", "float32", 1024)
    ln = _lanes(data, "float32")
    R, N = 12, 4
    fb = normalize(ln[0], R)
    present = [v for v in range(256) if fb[v]]
    a, b_ = present[0], present[-1]
    w = max(fb[a:b_ + 1]).bit_length()
    states, words = encode(ln[0], fb, R, N)

    def bad(vid, lane0: bytes, rule, what, error="CorruptPayload", method=RANS):
        f = File(6)
        f.add_plain("w", "float32", [1024], data,
                    chain_=chain("planes+lanes", "float32", methods="raw"))
        f.blocks[0].payload = V.lanes_payload([(method, lane0)] + [(V.RAW, x) for x in ln[1:]])
        s.invalid(vid, f, error, [rule], feats + ["dtype:float32"], what)

    good = body(R, N, a, b_, w, 0, fb, states, words)
    T = ((b_ - a + 1) * w + 7) // 8
    bad("x_RNS-01_short_header", good[:6], "RNS-01", "rans lane data of 6 bytes (the header is 7).")
    bad("x_RNS-01_scale_zero", bytes([0]) + good[1:], "RNS-01", "scale_log2 = 0.")
    bad("x_RNS-01_scale_16", bytes([16]) + good[1:], "RNS-01", "scale_log2 = 16.")
    bad("x_RNS-01_states_zero", good[:1] + bytes([0]) + good[2:], "RNS-01", "state_count = 0.")
    bad("x_RNS-01_states_33", good[:1] + bytes([33]) + good[2:], "RNS-01", "state_count = 33.")
    bad("x_RNS-01_first_after_last", good[:2] + bytes([b_ + 1, b_]) + good[4:], "RNS-01",
        "first_symbol > last_symbol.")
    bad("x_RNS-01_freq_bits_17", good[:4] + bytes([17]) + good[5:], "RNS-01", "freq_bits = 17.")
    bad("x_RNS-01_freq_bits_0", good[:4] + bytes([0]) + good[5:], "RNS-01", "freq_bits = 0.")
    fsum = list(fb)
    fsum[present[-1]] += 1
    if fsum[present[-1]] >= 1 << w:
        raise AssertionError("pick another symbol")
    bad("x_RNS-02_freq_sum", body(R, N, a, b_, w, 0, fsum, states, words), "RNS-02",
        "The frequencies sum to 2^12 + 1 (one table value one too large).")
    bad("x_RNS-02_freq_base", body(R, N, a, b_, w, 0, fb, states, words)[:5] + b"\x01\x00"
        + good[7:], "RNS-02", "freq_base = 1 added to a table that sums to 2^R without it.")
    nbits = (b_ - a + 1) * w
    assert nbits % 8, "the padding vector needs padding bits"
    bad("x_RNS-02_padding_bits", body(R, N, a, b_, w, 0, fb, states, words, pad_bits=1),
        "RNS-02", "The first padding bit after the table is 1.")
    bad("x_RNS-03_no_states", good[:7 + T + 4 * N - 2], "RNS-03",
        "The lane data ends inside the states.")
    bad("x_RNS-03_odd_words", good + b"\x00", "RNS-03", "One byte after the last whole word.")
    st = list(states)
    st[1] = 0xFFFF
    bad("x_RNS-04_state_below", body(R, N, a, b_, w, 0, fb, st, words), "RNS-04",
        "Initial state 1 is 0xFFFF (below 2^16).")
    bad("x_RNS-05_truncated", good[:-2], "RNS-05",
        "The last word is missing: a renormalization runs out of words.")
    bad("x_RNS-06_extra_word", good + b"\x34\x12", "RNS-06",
        "One word more than the decoder reads.")
    # a changed initial state that still reads exactly every word but does not end at 2^16
    for k in range(1, 1 << 16):
        st = list(states)
        st[0] = states[0] ^ k
        res = _decode(ln[0], fb, R, st, words)
        if res == "mismatch":
            break
    bad("x_RNS-06_final_state", body(R, N, a, b_, w, 0, fb, st, words), "RNS-06",
        f"Initial state 0 XOR {k}: all words are read but state 0 does not end at 2^16.")
    bad("x_LAN-04_method_5", good, "LAN-04", "A lane with method 5 (unassigned).",
        error="UnsupportedFeature", method=5)


def _decode(lane: bytes, f, R, states, words) -> str:
    """rans.md §3 step 5-6 on given states: 'ok', 'truncated' or 'mismatch' (all words read,
    a state not at 2^16) or 'unread'."""
    C = [0] * 256
    for s in range(1, 256):
        C[s] = C[s - 1] + f[s - 1]
    sym = [s for s in range(256) for _ in range(f[s])]
    x, p, N, M = list(states), 0, len(states), 1 << R
    for i in range(len(lane)):
        j = i % N
        slot = x[j] & (M - 1)
        s = sym[slot]
        x[j] = f[s] * (x[j] >> R) + slot - C[s]
        if x[j] < L:
            if p == len(words):
                return "truncated"
            x[j] = (x[j] << 16) | words[p]
            p += 1
    if p != len(words):
        return "unread"
    return "ok" if all(v == L for v in x) else "mismatch"


def batch_rans_1_0b(s) -> None:
    """rans lanes as the reference encoder writes them since its C kernels (N = 16, R <= 12,
    256K-element chunks), long enough that a vector decoder runs many rounds, and pairs of lanes
    with equal or different N in one chunk (a decoder may decode such lanes together); plus
    defects in the second lane of a pair and deep in a long stream."""
    s.batch = "rans-1.0b"
    feats = ["codec:lanes", "lane:rans"]
    valid_rules = DECODE_RULES[:-1] + LOSSLESS
    cases = [("v_rans_n16_bfloat16", "bfloat16", 20000, [(12, 16), (12, 16)]),
             ("v_rans_n16_float16", "float16", 9000, [(11, 16), (12, 8)]),
             ("v_rans_n24_float32", "float32", 6000, [(12, 24), (10, 16), (12, 32), (12, 8)]),
             ("v_rans_n16_float8", "float8_e4m3fn", 30001, [(12, 16)])]
    for vid, dtype, n, params in cases:
        data = weights(vid, dtype, n)
        lanes = _lanes(data, dtype)
        f = rans_file("w", dtype, [n], data,
                      [(RANS, lane_rans(ln, R, N)) for ln, (R, N) in zip(lanes, params)])
        s.valid(vid, f, valid_rules, feats + [f"dtype:{dtype}", "codec:planes"],
                f"{dtype} [{n}] through planes > lanes, every lane rans with (scale_log2, "
                f"state_count) = {params}: many rounds of N symbols, lanes of one chunk with "
                "equal or different N.")

    # defects in the second of two N = 16 lanes, and at the end of a long stream
    data = weights("x_rans_pair_base", "bfloat16", 20000)
    ln = _lanes(data, "bfloat16")
    R, N = 12, 16
    first = lane_rans(ln[0], R, N)
    fb = normalize(ln[1], R)
    present = [v for v in range(256) if fb[v]]
    a, b_ = present[0], present[-1]
    w = max(fb[a:b_ + 1]).bit_length()
    states, words = encode(ln[1], fb, R, N)
    good = body(R, N, a, b_, w, 0, fb, states, words)

    def bad(vid, lane1: bytes, rule, what):
        f = File(6)
        f.add_plain("w", "bfloat16", [20000], data,
                    chain_=chain("planes+lanes", "bfloat16", methods="raw"))
        f.blocks[0].payload = V.lanes_payload([(RANS, first), (RANS, lane1)])
        s.invalid(vid, f, "CorruptPayload", [rule], feats + ["dtype:bfloat16"], what)

    bad("x_RNS-05_pair_truncated", good[:-2], "RNS-05",
        "Two N = 16 lanes; the second one's last word is missing.")
    bad("x_RNS-06_pair_extra_word", good + b"\x00\x00", "RNS-06",
        "Two N = 16 lanes; the second one has one word more than its decoder reads.")
    mid = len(words) // 2
    flipped = list(words)
    flipped[mid] ^= 0x0100
    res = _decode(ln[1], fb, R, states, flipped)
    assert res in ("mismatch", "unread", "truncated"), res
    rule = {"mismatch": "RNS-06", "unread": "RNS-06", "truncated": "RNS-05"}[res]
    bad(f"x_{rule}_pair_word_flipped", body(R, N, a, b_, w, 0, fb, states, flipped), rule,
        f"Two N = 16 lanes; bit 8 of word {mid} of the second lane flipped (decoding goes on "
        "and the end check fails).")
