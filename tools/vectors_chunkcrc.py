"""Conformance vectors for the record flag `has_chunk_crc32c` (spec/container.md §6.4, §8.5,
REC-09, REC-11): batch `chunkcrc-1.0` of tools/gen_vectors.py.

Written from the spec: each chunk's CRC32C is taken over the bytes that chunk decodes to (§8.5),
here the slice of the tensor bytes the chunk covers. Invalid vectors take a valid file and change
one thing.
"""

from __future__ import annotations

import vectorlib as V
from vectorlib import File, chain

HAS_CHUNK_CRC32C = 0x08
LOSSLESS = ["REC-10", "PLN-01", "REC-09", "REC-11"]


def with_crcs(f: File, name: str, data: bytes, itemsize: int) -> dict:
    """Set has_chunk_crc32c on record `name` and give its stream the CRC32C of each chunk's
    decoded bytes."""
    rec = f.record(name)
    rec["record_flags"] |= HAS_CHUNK_CRC32C
    s = rec["streams"][0]
    step = s["chunk_elements"] * itemsize
    s["chunk_crc32c"] = [V.crc(data[c * step:(c + 1) * step]) for c in range(s["chunk_count"])]
    return rec


def batch_chunkcrc_1_0(s) -> None:
    """Records with chunk CRCs: several chunks through planes > lanes and through bytes, with and
    without a SHA-256; a CRC one bit off, a CRC of the stored instead of the decoded bytes, and
    a flag whose arrays are missing."""
    s.batch = "chunkcrc-1.0"
    feats = ["record:chunk_crc32c"]

    def base(dtype="bfloat16", n=2500, ce=1000, spec="planes+lanes", sha=True, vid="v_chunkcrc"):
        f = File(6)
        data = V.sample(dtype, n, V.rng_for(vid))
        f.add_plain("w", dtype, [n], data, chain_=chain(spec, dtype), chunk_elements=ce,
                    has_sha256=sha)
        with_crcs(f, "w", data, V.itemsize(dtype))
        return f, data

    f, _ = base(vid="v_chunkcrc_bfloat16")
    s.valid("v_chunkcrc_bfloat16", f, LOSSLESS, feats + ["dtype:bfloat16", "codec:planes",
                                                           "codec:lanes"],
            "bfloat16 [2500] in chunks of 1000 through planes > lanes, with a SHA-256 and the "
            "CRC32C of each chunk's decoded bytes (the last chunk is short).")
    f, _ = base("float32", 3001, 1024, sha=False, vid="v_chunkcrc_float32_no_sha")
    s.valid("v_chunkcrc_float32_no_sha", f, ["REC-10", "PLN-01", "REC-11"],
            feats + ["dtype:float32", "codec:planes", "codec:lanes"],
            "float32 [3001] in chunks of 1024 with chunk CRCs and no SHA-256: the chunk CRCs are "
            "the only end-to-end check.")
    f, _ = base("int32", 700, 256, spec="bytes", vid="v_chunkcrc_int32_bytes")
    s.valid("v_chunkcrc_int32_bytes", f, LOSSLESS, feats + ["dtype:int32", "codec:bytes"],
            "int32 [700] in chunks of 256 through codec bytes, with chunk CRCs.")

    f, _ = base(vid="x_REC-11_chunk_crc_flipped")
    f.record("w")["streams"][0]["chunk_crc32c"][1] ^= 1 << 17
    s.invalid("x_REC-11_chunk_crc_flipped", f, "DigestMismatch", ["REC-11"], feats,
              "The CRC32C of chunk 1's decoded bytes differs in one bit; the SHA-256 of the "
              "tensor is right, the stored bytes and their block CRC32C are intact.")

    f, _ = base(vid="x_REC-11_chunk_crc_of_stored")
    st = f.record("w")["streams"][0]
    st["chunk_crc32c"][2] = V.crc(f.blocks[st["chunk_blocks"][2]].payload)
    s.invalid("x_REC-11_chunk_crc_of_stored", f, "DigestMismatch", ["REC-11"], feats,
              "Chunk 2's CRC32C is taken over its stored (coded) payload instead of the bytes "
              "it decodes to.")

    f, _ = base("float16", 1500, 1000, sha=False, vid="x_REC-11_no_sha_last_chunk")
    f.record("w")["streams"][0]["chunk_crc32c"][-1] ^= 0x80000000
    s.invalid("x_REC-11_no_sha_last_chunk", f, "DigestMismatch", ["REC-11"], feats,
              "No SHA-256; the short last chunk's CRC32C differs in its top bit: only the chunk "
              "check can catch it.")

    f, _ = base(vid="x_IDX-03_chunk_crc_missing")
    # the stream is the last thing in the index: cut its three CRCs off the payload
    f.index_hook = lambda payload: payload[:-12]
    s.invalid("x_IDX-03_chunk_crc_missing", f, "Truncated", ["IDX-03", "LIM-01"], feats,
              "has_chunk_crc32c is set but the stream's chunk_crc32c array is not written: the "
              "index ends before it.", also=["MalformedRecord", "LayoutError"])
