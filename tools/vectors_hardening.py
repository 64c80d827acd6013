"""Conformance batch hardening-1.0 (issue 8): counts and lengths that the file declares but does not
back with bytes, so that a decoder which allocates before it checks (LIM-01) would reserve
gigabytes from a file of a few hundred bytes, and a block table far larger than the blocks the
file holds. Each vector has exactly one defect; every CRC and size agrees with the bytes."""

from __future__ import annotations

import struct

from vectorlib import File


def batch_hardening_1_0(s) -> None:
    from gen_vectors import base, rec_offset, set_at
    s.batch = "hardening-1.0"

    f = base()
    f.build()
    b_rec = rec_offset(f, 1)  # tensor `b`, int8 [5] through `bytes`: the last record
    assert f.record("b")["name"] == b"b"
    meta0 = f.layout["index_parts"][0] + 24 * len(f.blocks)
    key_len = len(b"note")
    inflate = [  # (id, offset in the INDEX payload, new bytes, what, also, rules)
        ("name_length_65535", b_rec, struct.pack("<H", 0xFFFF),
         "the last record's name_length is 65,535: above 1,024, and far more bytes than remain",
         ("MalformedRecord", "LimitExceeded"), ["REC-01", "LIM-01", "IDX-03"]),
        ("params_length_4gib", b_rec + 47, struct.pack("<I", 0xFFFFFFFF),
         "the last record's params_length is 2^32 - 1: above 1 MiB, and not backed by bytes",
         ("LimitExceeded",), ["REC-05", "LIM-01", "IDX-03"]),
        ("config_length_65535", b_rec + 73, struct.pack("<H", 0xFFFF),
         "the last stream's CodecSpec config_length is 65,535: above 1,024, not backed by bytes",
         ("LimitExceeded",), ["REC-05", "LIM-01", "IDX-03"]),
        ("chunk_count_4g", b_rec + 75, struct.pack("<I", 0xFFFFFFFF),
         "the last stream's chunk_count is 2^32 - 1 (its chunk_blocks would need 16 GiB)",
         ("MalformedRecord",), ["REC-06", "LIM-01", "IDX-03"]),
        ("metadata_value_length_4gib", meta0 + 2 + key_len + 1, struct.pack("<I", 0xFFFFFFFF),
         "the metadata entry's value_length is 2^32 - 1: above 1 MiB, not backed by bytes",
         ("LimitExceeded",), ["LIM-02", "LIM-01", "IDX-03"]),
    ]
    for vid, at, new, what, also, rules in inflate:
        g = base()
        g.index_hook = lambda p, at=at, new=new: set_at(p, at, new)
        s.invalid(f"x_LIM-01_{vid}", g, "Truncated", rules, ["index", "limits"],
                  f"In the INDEX payload, {what}; every CRC is recomputed. A decoder must check "
                  "the length against the bytes that remain before allocating from it.",
                  also=also, note="Truncated (the structure runs past the payload) is the class "
                  "a parser that checks bytes first reports; the others are accepted for a "
                  "parser that checks the field's own range first.")

    # a block table of 40,000 entries (960,000 bytes) in a file that holds no CHUNK block
    n = 40_000
    g = File(0)
    g.meta_str("note", "no blocks")
    entry = struct.pack("<QQHHI", 32, 0, 0x8001, 0, 0)
    g.index_hook = lambda p, n=n, entry=entry: (struct.pack("<IIII", 0, n, 1, 0)
                                                + entry * n + p[16:])
    s.invalid("x_LAY-04_block_table_without_blocks", g, "LayoutError",
              ["LAY-01", "LAY-04", "IDX-04"], ["index", "layout", "limits"],
              f"The block table lists {n:,} CHUNK blocks of payload_length 0 at offset 32, but "
              "the index starts right after the header: the blocks cannot fit (every block takes "
              "28 bytes), and a decoder can tell before building the table.")
