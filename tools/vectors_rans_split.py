"""Conformance vectors for lane method 6 `rans_split` of codec `lanes` (spec/codecs/rans_split.md):
batch `ranssplit-1.0` of tools/gen_vectors.py.

Written from the spec, not from wcodec: the packing of §2 below (symbols of the top k bits, the
low bits LSB first), and the rANS encoder of vectors_rans.py (rans.md §4) for the symbols.
Invalid vectors take a valid lane and change one thing.
"""

from __future__ import annotations

from vectors_rans import RANS, _lanes, lane_rans, rans_file, weights

RANS_SPLIT = 6
LOSSLESS = ["REC-10", "PLN-01", "REC-09"]
RULES = ["RSP-01", "RSP-02", "RSP-03", "RNS-01", "RNS-02", "RNS-03", "RNS-04", "RNS-05",
         "RNS-06", "LAN-03", "LAN-04"]


def pack(lane: bytes, k: int) -> tuple[bytes, bytes]:
    """(symbols, low_bits) of rans_split.md §2, padding bits zero."""
    n, wl = 8 // k, 8 - k
    g = -(-len(lane) // n)
    sym = bytearray(g)
    low = 0
    for i, v in enumerate(lane):
        sym[i // n] |= (v >> wl) << (k * (i % n))
        low |= (v & ((1 << wl) - 1)) << (i * wl)
    return bytes(sym), low.to_bytes(-(-len(lane) * wl // 8), "little")


def lane_split(lane: bytes, k: int, R: int = 12, N: int = 16, *, sym=None, low=None,
               words_extra: bytes = b"") -> bytes:
    """The lane data: top_bits, low_bits, then the symbols as a rans lane (R, N)."""
    s, lo = pack(lane, k)
    sym = s if sym is None else sym
    low = lo if low is None else low
    return bytes([k]) + low + lane_rans(sym, R, N) + words_extra


def batch_rans_split_1_0(s) -> None:
    """rans_split lanes: the layout of the spec's example, every k on the mantissa planes of
    bfloat16 and float32 (the reference encoder's choice: exponent in rans with 32 states, top
    mantissa plane in rans_split k = 2 with 16), lanes whose length is not a multiple of 8 / k;
    then one defect per rule."""
    s.batch = "ranssplit-1.0"
    feats = ["codec:lanes", "lane:rans_split"]
    valid_rules = RULES[2:3] + RULES[3:9] + LOSSLESS

    # the example of §2: D = 5, k = 2
    data = bytes([0xC5, 0x41, 0xFF, 0x00, 0x80])
    sym, low = pack(data, 2)
    assert (sym, low) == (bytes([0x37, 0x02]), bytes([0x45, 0xF0, 0x03, 0x00]))
    f = rans_file("w", "uint8", [5], data, [(RANS_SPLIT, lane_split(data, 2, R=4, N=1))])
    s.valid("v_rans_split_spec_example", f, valid_rules, feats + ["dtype:uint8"],
            "The example of rans_split.md §2: uint8 C5 41 FF 00 80 in one rans_split lane, k = 2 "
            "(symbols 37 02, low_bits 45 F0 03 00), the symbols in a rans lane with R = 4, N = 1.")

    cases = [
        ("v_rans_split_bfloat16", "bfloat16", 20001,
         lambda ln: [(RANS, lane_rans(ln[0], 12, 32)), (RANS_SPLIT, lane_split(ln[1], 2))],
         "the exponent plane in rans (R 12, N 32), the sign and mantissa plane in rans_split "
         "k = 2 (R 12, N 16), as the reference encoder writes them; 20001 bytes per lane, so "
         "the last symbol stands for one byte"),
        ("v_rans_split_float32_k124", "float32", 3001,
         lambda ln: [(RANS, lane_rans(ln[0], 11, 8)), (RANS_SPLIT, lane_split(ln[1], 1, 12, 8)),
                     (RANS_SPLIT, lane_split(ln[2], 4, 10, 24)), (RANS_SPLIT, lane_split(ln[3], 2, 12, 3))],
         "the exponent plane in rans, the three mantissa planes in rans_split with k = 1, 4 and "
         "2 and different R and N; 3001 bytes per lane"),
        ("v_rans_split_float8", "float8_e4m3fn", 4099,
         lambda ln: [(RANS_SPLIT, lane_split(ln[0], 4, 12, 32))],
         "one lane in rans_split k = 4 with 32 states; 4099 bytes"),
    ]
    for vid, dtype, n, lanes_of, what in cases:
        data = weights(vid, dtype, n)
        f = rans_file("w", dtype, [n], data, lanes_of(_lanes(data, dtype)))
        s.valid(vid, f, valid_rules, feats + [f"dtype:{dtype}", "codec:planes"],
                f"{dtype} [{n}] through planes > lanes: {what}.")

    data = bytes([0x9B])
    f = rans_file("w", "uint8", [1], data, [(RANS_SPLIT, lane_split(data, 1, 1, 1))])
    s.valid("v_rans_split_one_byte", f, valid_rules, feats + ["dtype:uint8"],
            "A one-byte lane (9B) in rans_split k = 1: one symbol with seven padding bits, one "
            "byte of low bits with one padding bit.")

    # -- defects, in the second lane of a bfloat16 chunk of 2001 elements (not a multiple of 4)
    n = 2001
    data = weights("x_rans_split_base", "bfloat16", n)
    ln = _lanes(data, "bfloat16")
    first = lane_rans(ln[0], 12, 32)
    good = lane_split(ln[1], 2)

    def bad(vid, lane1: bytes, rule, what):
        f = rans_file("w", "bfloat16", [n], data, [(RANS, first), (RANS_SPLIT, lane1)])
        s.invalid(vid, f, "CorruptPayload", [rule], feats + ["dtype:bfloat16"], what)

    bad("x_RSP-01_top_bits_3", bytes([3]) + good[1:], "RSP-01",
        "The rans_split lane's top_bits is 3.")
    bad("x_RSP-01_top_bits_8", bytes([8]) + good[1:], "RSP-01",
        "The rans_split lane's top_bits is 8 (nothing would be left for low_bits).")
    bad("x_RSP-01_empty", b"", "RSP-01", "The rans_split lane's data is empty (coded_length 0).")
    b_len = -(-n * 6 // 8)
    bad("x_RSP-02_low_bits_short", good[:b_len], "RSP-02",
        f"The rans_split lane holds top_bits and {b_len - 1} of its {b_len} bytes of low bits, "
        "nothing else.")
    sym, low = pack(ln[1], 2)
    high = bytearray(sym)
    high[-1] |= 0x80  # 2001 = 500 * 4 + 1: the last symbol stands for one byte, bits 2-7 are padding
    bad("x_RSP-03_last_symbol_bits", lane_split(ln[1], 2, sym=bytes(high)), "RSP-03",
        "The last symbol (a valid rans stream of it) has bit 7 set, past the lane's last byte.")
    lowp = bytearray(low)
    lowp[-1] |= 0x80  # 2001 * 6 = 12006 bits: the last byte has 2 padding bits
    bad("x_RSP-03_low_padding", lane_split(ln[1], 2, low=bytes(lowp)), "RSP-03",
        "The last byte of low_bits has padding bit 7 set.")
    bad("x_RNS-06_split_extra_word", good + b"\x00\x00", "RNS-06",
        "The symbols' rans stream has one word more than its decoder reads.")
    bad("x_RNS-05_split_truncated", good[:-2], "RNS-05",
        "The symbols' rans stream lacks its last word.")

    # the symbols are G = ceil(D / n) bytes, not D: a lane coding D symbols fails
    wrong = bytes([2]) + low + lane_rans(ln[1], 12, 16)
    bad("x_RNS-06_split_symbols_as_bytes", wrong, "RNS-06",
        "The symbols part is a rans stream of the lane's D bytes instead of its G symbols: "
        "decoding G symbols leaves words unread.")
