"""Hostile-file kit shared by the fuzz, bomb and salvage tests and tools/fuzz_atheris.py.

- `Parts` / `split` / `join`: take a valid file apart into blocks and index bytes, and lay out
  (possibly forged) parts again with every offset, length and CRC32C recomputed, so that a mutation
  reaches the check it aims at instead of dying at the first CRC.
- `index_fields`: every integer field of an INDEX payload with its offset and width, found by a
  tiny independent walker (not the reader's parser), so fields can be inflated one by one.
- `reseal`: recompute the header, block, index and footer CRCs of a mutated file in place.
- `MUTATORS` / `mutate`: the mutation operators (bit flips, byte sets, truncation at structure
  boundaries, inflated lengths and counts, aliased and out-of-range offsets, swapped blocks, forged
  footers, lane and zstd header damage).
- `check_file`: the fuzz property. Opening, verifying and reading every tensor either succeeds
  with SHA-256-verified output or raises a wcodec FormatError, within a time and memory bound.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import time
import tracemalloc
from dataclasses import dataclass, field

import crc32c

MAGIC = b"\x89WCD\r\n\x1a\n"
FOOTER_MAGIC = b"WCDINDEX"
CHUNK, INDEX = 0x8001, 0x8002
NONE = 0xFFFFFFFF
BH = struct.Struct("<HHIIIQ")         # BlockHeader
BE = struct.Struct("<QQHHI")          # BlockEntry
FT = struct.Struct("<QQ8sII")         # Footer
IH = struct.Struct("<IIII")           # IndexHeader


def crc(b) -> int:
    return crc32c.crc32c(bytes(b))


def align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


# -- building files from parts -------------------------------------------------------------------
@dataclass
class Block:
    block_type: int = CHUNK
    tensor_id: int = NONE
    stream_id: int = NONE
    chunk_id: int = NONE
    payload: bytes = b""
    block_flags: int = 0
    payload_length: int | None = None  # override of the header's field (forged)


@dataclass
class Parts:
    alignment_log2: int = 6
    blocks: list[Block] = field(default_factory=list)
    tensor_count: int = 0
    metadata_count: int = 0
    tail: bytes = b""  # metadata entries then tensor records, raw
    version_major: int = 1
    version_minor: int = 0
    required_features: int = 0
    optional_features: int = 0


def header_bytes(p: Parts) -> bytes:
    h = MAGIC + struct.pack("<HHIIB7s", p.version_major, p.version_minor, p.required_features,
                            p.optional_features, p.alignment_log2, bytes(7))
    return h + struct.pack("<I", crc(h))


def block_bytes(b: Block) -> bytes:
    plen = len(b.payload) if b.payload_length is None else b.payload_length
    h = BH.pack(b.block_type, b.block_flags, b.tensor_id, b.stream_id, b.chunk_id, plen)
    body = h + bytes(b.payload)
    return body + struct.pack("<I", crc(body))


def join(p: Parts, *, entries_hook=None, counts=None, index_extra: bytes = b"",
         raw_index: bytes | None = None) -> bytes:
    """Lay the parts out as §2 says and build a matching block table, index and footer.
    `entries_hook(list_of_entry_dicts)` may forge the table; `counts` overrides
    (tensor_count, block_count, metadata_count) in the IndexHeader; `raw_index` replaces the whole
    INDEX payload."""
    a = 1 << p.alignment_log2
    out = bytearray(header_bytes(p))
    out += bytes(align_up(len(out), a) - len(out))
    entries = []
    for b in p.blocks:
        raw = block_bytes(b)
        entries.append(dict(offset=len(out), payload_length=len(b.payload), block_type=b.block_type,
                            reserved=0, block_crc32c=struct.unpack_from("<I", raw, len(raw) - 4)[0]))
        out += raw
        out += bytes(align_up(len(out), a) - len(out))
    if entries_hook is not None:
        entries_hook(entries)
    if raw_index is None:
        tc, bc, mc = counts or (p.tensor_count, len(entries), p.metadata_count)
        payload = IH.pack(tc, bc, mc, 0) + b"".join(
            BE.pack(e["offset"], e["payload_length"], e["block_type"], e["reserved"],
                    e["block_crc32c"]) for e in entries) + p.tail + index_extra
    else:
        payload = raw_index
    index_offset = len(out)
    out += block_bytes(Block(INDEX, payload=payload))
    out += footer_bytes(index_offset, 28 + len(payload))
    return bytes(out)


def footer_bytes(index_offset: int, index_block_size: int, magic: bytes = FOOTER_MAGIC,
                 reserved: int = 0) -> bytes:
    f = struct.pack("<QQ8sI", index_offset, index_block_size, magic, reserved)
    return f + struct.pack("<I", crc(f[:24]))


def split(data: bytes) -> Parts:
    """Take a *valid* file apart (no checks beyond what is needed to find things)."""
    a_log2 = data[20]
    index_offset, index_size, _, _, _ = FT.unpack_from(data, len(data) - 32)
    payload = data[index_offset + 24:index_offset + index_size - 4]
    tc, bc, mc, _ = IH.unpack_from(payload, 0)
    blocks = []
    for k in range(bc):
        off, plen, btype, _, _ = BE.unpack_from(payload, 16 + 24 * k)
        t, fl, ti, si, ci, pl = BH.unpack_from(data, off)
        blocks.append(Block(t, ti, si, ci, bytes(data[off + 24:off + 24 + plen]), fl))
    v = struct.unpack_from("<HHII", data, 8)
    return Parts(a_log2, blocks, tc, mc, bytes(payload[16 + 24 * bc:]), v[0], v[1], v[2], v[3])


def index_payload(data: bytes) -> tuple[int, bytes]:
    index_offset, index_size, _, _, _ = FT.unpack_from(data, len(data) - 32)
    return index_offset, data[index_offset + 24:index_offset + index_size - 4]


# -- walking the index for field positions -------------------------------------------------------
@dataclass
class Field:
    name: str
    offset: int   # in the INDEX payload
    size: int     # 1, 2, 4 or 8
    value: int


class _W:
    def __init__(self, buf):
        self.buf, self.pos, self.fields = buf, 0, []

    def u(self, size, name):
        v = int.from_bytes(self.buf[self.pos:self.pos + size], "little")
        if self.pos + size > len(self.buf):
            raise ValueError("past the end")
        self.fields.append(Field(name, self.pos, size, v))
        self.pos += size
        return v

    def skip(self, n):
        if self.pos + n > len(self.buf):
            raise ValueError("past the end")
        self.pos += n


def index_fields(payload: bytes) -> list[Field]:
    """Every integer field of a well-formed INDEX payload, in order."""
    w = _W(payload)
    tc = w.u(4, "tensor_count")
    bc = w.u(4, "block_count")
    mc = w.u(4, "metadata_count")
    w.u(4, "index.reserved")
    for k in range(bc):
        w.u(8, f"block[{k}].offset")
        w.u(8, f"block[{k}].payload_length")
        w.u(2, f"block[{k}].block_type")
        w.u(2, f"block[{k}].reserved")
        w.u(4, f"block[{k}].block_crc32c")
    for m in range(mc):
        kl = w.u(2, f"meta[{m}].key_length")
        w.skip(kl)
        w.u(1, f"meta[{m}].value_type")
        vl = w.u(4, f"meta[{m}].value_length")
        w.skip(vl)
    for t in range(tc):
        p = f"tensor[{t}]"
        nl = w.u(2, f"{p}.name_length")
        w.skip(nl)
        w.u(1, f"{p}.dtype")
        w.u(1, f"{p}.record_kind")
        flags = w.u(1, f"{p}.record_flags")
        rank = w.u(1, f"{p}.rank")
        for i in range(rank):
            w.u(8, f"{p}.shape[{i}]")
        if flags & 1:
            w.skip(32)
        if flags & 2:
            w.skip(24)
        pl = w.u(4, f"{p}.params_length")
        for j in range(pl):
            w.u(1, f"{p}.params[{j}]")
        sc = w.u(1, f"{p}.stream_count")
        for s in range(sc):
            q = f"{p}.stream[{s}]"
            w.u(1, f"{q}.stream_dtype")
            r = w.u(1, f"{q}.stream_rank")
            for i in range(r):
                w.u(8, f"{q}.stream_shape[{i}]")
            w.u(8, f"{q}.chunk_elements")
            cc = w.u(1, f"{q}.codec_count")
            for c in range(cc):
                w.u(2, f"{q}.codec[{c}].codec_id")
                cl = w.u(2, f"{q}.codec[{c}].config_length")
                for j in range(cl):
                    w.u(1, f"{q}.codec[{c}].config[{j}]")
            n = w.u(4, f"{q}.chunk_count")
            for c in range(n):
                w.u(4, f"{q}.chunk_blocks[{c}]")
            if flags & 8:  # has_chunk_crc32c
                for c in range(n):
                    w.u(4, f"{q}.chunk_crc32c[{c}]")
    return w.fields


def chunk_chains(payload: bytes) -> dict[int, list[tuple[int, bytes]]]:
    """block index -> the codec chain [(codec_id, config)] of the stream that owns it."""
    out = {}
    fs = index_fields(payload)
    chain, cur = [], None
    for f in fs:
        if f.name.endswith(".codec_count"):
            chain = []
        elif f.name.endswith(".codec_id"):
            cur = [f.value, b""]
            chain.append(cur)
        elif ".config[" in f.name:
            cur[1] += bytes([f.value])
        elif ".chunk_blocks[" in f.name:
            out[f.value] = [(c, bytes(cfg)) for c, cfg in chain]
    return out


# -- resealing -----------------------------------------------------------------------------------
def reseal(data: bytearray, *, header=True, blocks=True, index=True, footer=True) -> bytearray:
    """Recompute CRCs of whatever can still be located, in dependency order: block trailers and
    the block table's copies of them, then the index block, then the footer and the header."""
    n = len(data)
    if header and n >= 32:
        data[28:32] = struct.pack("<I", crc(data[:28]))
    if n < 64:
        return data
    io_, isz, _, _, _ = FT.unpack_from(data, n - 32)
    if 32 <= io_ and isz >= 28 and io_ + isz <= n - 32:
        p0, p1 = io_ + 24, io_ + isz - 4
        if blocks and p1 - p0 >= 16:
            bc = IH.unpack_from(data, p0)[1]
            for k in range(min(bc, (p1 - p0 - 16) // 24)):
                e = p0 + 16 + 24 * k
                off, plen = struct.unpack_from("<QQ", data, e)
                if off + 28 + plen <= io_:
                    hlen = struct.unpack_from("<Q", data, off + 16)[0]
                    if hlen == plen:
                        c = crc(data[off:off + 24 + plen])
                        data[off + 24 + plen:off + 28 + plen] = struct.pack("<I", c)
                        data[e + 20:e + 24] = struct.pack("<I", c)
        if index:
            data[p1:p1 + 4] = struct.pack("<I", crc(data[io_:p1]))
    if footer:
        data[n - 4:n] = struct.pack("<I", crc(data[n - 32:n - 8]))
    return data


def replace_index(data: bytes, payload: bytes) -> bytes:
    """The same blocks with a new INDEX payload (block header, CRC and footer rebuilt)."""
    io_, _ = index_payload(data)
    return bytes(data[:io_]) + block_bytes(Block(INDEX, payload=payload)) + \
        footer_bytes(io_, 28 + len(payload))


def boundaries(data: bytes) -> list[int]:
    """Offsets where a structure starts or ends in a valid file (for truncation)."""
    out = {0, 8, 28, 32, len(data) - 32, len(data) - 24, len(data) - 8, len(data) - 4, len(data) - 1}
    io_, payload = index_payload(data)
    out |= {io_, io_ + 24, io_ + 24 + len(payload)}
    for f in index_fields(payload):
        out |= {io_ + 24 + f.offset, io_ + 24 + f.offset + f.size}
    bc = IH.unpack_from(payload, 0)[1]
    for k in range(bc):
        off, plen = struct.unpack_from("<QQ", payload, 16 + 24 * k)
        out |= {off, off + 24, off + 24 + plen, off + 28 + plen}
    return sorted(x for x in out if 0 <= x < len(data))


# -- mutation operators --------------------------------------------------------------------------
INTERESTING = [0, 1, 2, 3, 7, 8, 15, 16, 17, 24, 28, 31, 32, 63, 64, 127, 128, 255, 256, 1023,
               1024, 1025, 4095, 4096, 65535, 65536, (1 << 20), (1 << 20) + 1, (1 << 24),
               (1 << 24) + 1, (1 << 26), (1 << 26) + 1, (1 << 28), (1 << 28) + 1, (1 << 31) - 1,
               1 << 31, (1 << 32) - 1, 1 << 32, 1 << 40, 1 << 62, (1 << 62) + 1, (1 << 63) - 1,
               1 << 63, (1 << 64) - 1]


def _interesting(rng: random.Random, size: int, old: int) -> int:
    bits = 8 * size
    cands = [v for v in INTERESTING if v < (1 << bits)]
    cands += [(old + 1) % (1 << bits), (old - 1) % (1 << bits), (old * 2) % (1 << bits),
              (old << 16) % (1 << bits), rng.getrandbits(bits), old ^ (1 << rng.randrange(bits))]
    return rng.choice(cands)


def m_bitflip(data, rng, reseal_after):
    d = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 4, 8))):
        i = rng.randrange(len(d))
        d[i] ^= 1 << rng.randrange(8)
    return reseal(d) if reseal_after else d


def m_byteset(data, rng, reseal_after):
    d = bytearray(data)
    i = rng.randrange(len(d))
    n = rng.choice((1, 1, 2, 4, 8))
    v = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x01, rng.randrange(256)))
    d[i:i + n] = bytes([v]) * len(d[i:i + n])
    return reseal(d) if reseal_after else d


def m_truncate(data, rng, reseal_after):
    cut = rng.choice(boundaries(data) + [rng.randrange(len(data))])
    return bytearray(data[:cut])


def m_truncate_sealed(data, rng, reseal_after):
    """Cut the file inside, then append a footer that points at the old index: a file that lost
    bytes in the middle but still ends in a plausible footer."""
    cut = rng.choice(boundaries(data))
    io_, payload = index_payload(data)
    return bytearray(data[:cut]) + footer_bytes(io_, 28 + len(payload))


def m_field(data, rng, reseal_after):
    """Set one integer field of the index to an interesting value; CRCs recomputed."""
    io_, payload = index_payload(data)
    fs = index_fields(payload)
    f = rng.choice(fs)
    v = _interesting(rng, f.size, f.value)
    p = bytearray(payload)
    p[f.offset:f.offset + f.size] = v.to_bytes(f.size, "little")
    d = bytearray(data)
    d[io_ + 24:io_ + 24 + len(p)] = p
    return reseal(d, blocks=False)


def m_field_named(data, rng, reseal_after, suffix=None):
    io_, payload = index_payload(data)
    fs = [f for f in index_fields(payload) if suffix is None or f.name.endswith(suffix)]
    if not fs:
        return bytearray(data)
    f = rng.choice(fs)
    v = _interesting(rng, f.size, f.value)
    d = bytearray(data)
    d[io_ + 24 + f.offset:io_ + 24 + f.offset + f.size] = v.to_bytes(f.size, "little")
    return reseal(d, blocks=False)


def m_count_with_room(data, rng, reseal_after):
    """Inflate a count *and* append zero bytes so the parser gets further (IDX-04's second half)."""
    io_, payload = index_payload(data)
    which = rng.choice((0, 4, 8))
    old = struct.unpack_from("<I", payload, which)[0]
    new = old + rng.choice((1, 2, 100, 4096))
    p = bytearray(payload)
    struct.pack_into("<I", p, which, new & 0xFFFFFFFF)
    p += bytes(rng.choice((8, 24, 64, 24 * 100, 8 * 4096)))
    return bytearray(replace_index(data, bytes(p)))


def m_header_field(data, rng, reseal_after):
    """Change a field of the file header or of a block header (block CRC recomputed)."""
    d = bytearray(data)
    io_, payload = index_payload(data)
    bc = IH.unpack_from(payload, 0)[1]
    if bc and rng.random() < 0.7:
        k = rng.randrange(bc)
        off = struct.unpack_from("<Q", payload, 16 + 24 * k)[0]
        pos, size = rng.choice(((0, 2), (2, 2), (4, 4), (8, 4), (12, 4), (16, 8)))
        old = int.from_bytes(d[off + pos:off + pos + size], "little")
        d[off + pos:off + pos + size] = _interesting(rng, size, old).to_bytes(size, "little")
        plen = struct.unpack_from("<Q", payload, 16 + 24 * k + 8)[0]
        c = crc(d[off:off + 24 + plen])
        d[off + 24 + plen:off + 28 + plen] = struct.pack("<I", c)
        if rng.random() < 0.5:  # and the table's copy, so LAY-05's CRC check passes
            struct.pack_into("<I", d, io_ + 24 + 16 + 24 * k + 20, c)
            reseal(d, blocks=False)
        return d
    pos, size = rng.choice(((8, 2), (10, 2), (12, 4), (16, 4), (20, 1), (21, 1), (24, 4)))
    old = int.from_bytes(d[pos:pos + size], "little")
    d[pos:pos + size] = _interesting(rng, size, old).to_bytes(size, "little")
    return reseal(d, blocks=False, index=False, footer=False)


def m_alias(data, rng, reseal_after):
    """Two chunks name the same block (REC-07), or a chunk names an out-of-range block."""
    io_, payload = index_payload(data)
    fs = [f for f in index_fields(payload) if ".chunk_blocks[" in f.name]
    if not fs:
        return bytearray(data)
    f = rng.choice(fs)
    bc = IH.unpack_from(payload, 0)[1]
    v = rng.choice([g.value for g in fs] + [bc, bc + 1, NONE, 1 << 31])
    d = bytearray(data)
    d[io_ + 24 + f.offset:io_ + 28 + f.offset] = struct.pack("<I", v)
    return reseal(d, blocks=False)


def m_offset(data, rng, reseal_after):
    """Block table offsets that alias, overlap, leave holes or point outside the file."""
    io_, payload = index_payload(data)
    bc = IH.unpack_from(payload, 0)[1]
    if not bc:
        return bytearray(data)
    k = rng.randrange(bc)
    offs = [struct.unpack_from("<Q", payload, 16 + 24 * j)[0] for j in range(bc)]
    v = rng.choice(offs + [0, 32, io_, io_ + 1, len(data), len(data) - 32, (1 << 64) - 1,
                           (1 << 63), offs[k] + 1, offs[k] - 1, offs[k] + 64])
    d = bytearray(data)
    struct.pack_into("<Q", d, io_ + 24 + 16 + 24 * k, v % (1 << 64))
    if rng.random() < 0.5:
        struct.pack_into("<Q", d, io_ + 24 + 16 + 24 * k + 8,
                         rng.choice((0, 1, len(data), (1 << 64) - 28, (1 << 63))))
    return reseal(d, blocks=False)


def m_swap(data, rng, reseal_after):
    """Swap two CHUNK blocks. Equal lengths: bytes swapped in place, optionally with the table's
    CRCs updated so only the id cross-check (REC-08) can catch it; otherwise the file is re-laid
    out with the blocks reordered and a consistent table."""
    parts = split(data)
    chunks = [i for i, b in enumerate(parts.blocks) if b.block_type == CHUNK]
    if len(chunks) < 2:
        return bytearray(data)
    i, j = rng.sample(chunks, 2)
    mode = rng.randrange(3)
    if mode == 0:  # swap the payloads but keep headers: block CRCs recomputed
        bi, bj = parts.blocks[i], parts.blocks[j]
        bi.payload, bj.payload = bj.payload, bi.payload
    elif mode == 1:  # swap whole blocks: headers carry the other ids (REC-08)
        parts.blocks[i], parts.blocks[j] = parts.blocks[j], parts.blocks[i]
    else:  # swap the ids only
        bi, bj = parts.blocks[i], parts.blocks[j]
        (bi.tensor_id, bi.stream_id, bi.chunk_id), (bj.tensor_id, bj.stream_id, bj.chunk_id) = \
            (bj.tensor_id, bj.stream_id, bj.chunk_id), (bi.tensor_id, bi.stream_id, bi.chunk_id)
    out = join(parts)
    if rng.random() < 0.3:  # keep the old table's CRCs: LAY-05 must catch it
        io_, payload = index_payload(out)
        _, old = index_payload(data)
        if len(old) == len(payload):
            d = bytearray(out)
            for k in range(len(parts.blocks)):
                e = io_ + 24 + 16 + 24 * k
                d[e + 20:e + 24] = old[16 + 24 * k + 20:16 + 24 * k + 24]
            return reseal(d, blocks=False)
    return bytearray(out)


def m_footer(data, rng, reseal_after):
    """A forged footer: valid magic and CRC, wrong offsets."""
    d = bytearray(data)
    n = len(d)
    io_, isz, _, _, _ = FT.unpack_from(d, n - 32)
    parts_off = [0, 32, 64, io_ - 64, io_ - 1, io_ + 1, io_ + 64, n - 32, n, 1 << 63,
                 (1 << 64) - 1, (1 << 64) - 28]
    choice = rng.randrange(4)
    if choice == 0:
        io_ = rng.choice(parts_off) % (1 << 64)
    elif choice == 1:
        isz = rng.choice([0, 1, 27, 28, isz - 1, isz + 1, 1 << 63, (1 << 64) - 1]) % (1 << 64)
    elif choice == 2:  # consistent pair pointing somewhere else (e.g. at a CHUNK block)
        io_ = rng.choice(parts_off[:5]) % (1 << 64)
        isz = (n - 32 - io_) % (1 << 64)
    else:
        reserved = rng.choice((1, 0xFFFFFFFF))
        d[n - 32:] = footer_bytes(io_, isz, reserved=reserved)
        return d
    d[n - 32:] = footer_bytes(io_, isz)
    return d


def m_lanes(data, rng, reseal_after):
    """Damage a CHUNK payload that is coded with `lanes` at the lane or zstd level, then fix the
    block's CRC (and the table's copy), so the codec itself must catch it."""
    io_, payload = index_payload(data)
    chains = chunk_chains(payload)
    cands = [(b, cfg[0]) for b, ch in chains.items() for cid, cfg in ch if cid == 256 and cfg]
    if not cands:
        return m_bitflip(data, rng, True)
    b, lanes = rng.choice(cands)
    off, plen = struct.unpack_from("<QQ", payload, 16 + 24 * b)
    p = bytearray(data[off + 24:off + 24 + plen])
    heads = [(p[5 * j], struct.unpack_from("<I", p, 5 * j + 1)[0]) for j in range(lanes)
             if 5 * j + 5 <= len(p)]
    op = rng.randrange(6)
    j = rng.randrange(max(1, len(heads)))
    if op == 0 and heads:  # lane method
        p[5 * j] = rng.choice((0, 1, 2, 3, 255))
    elif op == 1 and heads:  # coded_length
        struct.pack_into("<I", p, 5 * j + 1, _interesting(rng, 4, heads[j][1]))
    elif op in (2, 3):  # zstd frame header: content size / descriptor / window
        pos = 5 * lanes
        for k, (m, ln) in enumerate(heads):
            if m == 1:
                fh = pos + 4  # Frame_Header_Descriptor
                if fh < len(p):
                    if op == 2:
                        p[fh] ^= 1 << rng.randrange(8)
                    else:
                        # overwrite what follows the descriptor (window / dict id / content size)
                        for q in range(fh + 1, min(fh + 9, len(p))):
                            p[q] = rng.choice((0xFF, 0x00, rng.randrange(256)))
                break
            pos += ln
    elif op == 4:  # replace the whole payload with a fill-everything bomb header
        p = bytearray(b"".join(struct.pack("<BI", 2, 1) for _ in range(lanes))
                      + bytes(lanes))
    else:
        i = rng.randrange(len(p)) if p else 0
        if p:
            p[i] ^= 1 << rng.randrange(8)
    parts = split(data)
    parts.blocks[b].payload = bytes(p)
    return bytearray(join(parts))


def m_splice(data, rng, reseal_after):
    """Insert or delete a run of bytes: anywhere (everything after it shifts), or inside one
    block's payload with the file laid out again around it (so the codec sees the damage)."""
    if rng.random() < 0.5:
        parts = split(data)
        if parts.blocks:
            b = rng.choice(parts.blocks)
            p = bytearray(b.payload)
            i = rng.randrange(len(p) + 1)
            if p and rng.random() < 0.5:
                del p[i:i + rng.choice((1, 2, 4, 8, 64))]
            else:
                p[i:i] = bytes(rng.choice((1, 2, 4, 8, 64)))
            b.payload = bytes(p)
            return bytearray(join(parts))
    d = bytearray(data)
    i = rng.randrange(len(d))
    if rng.random() < 0.5:
        del d[i:i + rng.choice((1, 4, 8, 24, 64))]
    else:
        d[i:i] = bytes(rng.choice((1, 4, 8, 24, 64)))
    return reseal(d) if reseal_after else d


def m_blocks(data, rng, reseal_after):
    """Drop, duplicate or add a block and lay the file out again with a consistent table: the
    records then name blocks that moved, vanished or are nobody's."""
    parts = split(data)
    op = rng.randrange(4)
    if op == 0 and parts.blocks:
        del parts.blocks[rng.randrange(len(parts.blocks))]
    elif op == 1 and parts.blocks:
        k = rng.randrange(len(parts.blocks))
        b = parts.blocks[k]
        parts.blocks.insert(k, Block(b.block_type, b.tensor_id, b.stream_id, b.chunk_id,
                                     b.payload, b.block_flags))
    elif op == 2:  # an optional block (bit 15 clear): must be skipped, and still laid out
        parts.blocks.insert(rng.randrange(len(parts.blocks) + 1),
                            Block(rng.choice((0x0001, 0x7FFF)), payload=bytes(rng.randrange(9))))
    else:  # an unknown required block type
        parts.blocks.append(Block(rng.choice((0x8003, 0xFFFF)), payload=b"x"))
    return bytearray(join(parts))


MUTATORS = {
    "bitflip": m_bitflip,
    "byteset": m_byteset,
    "truncate": m_truncate,
    "truncate_sealed": m_truncate_sealed,
    "field": m_field,
    "count_room": m_count_with_room,
    "header_field": m_header_field,
    "alias": m_alias,
    "offset": m_offset,
    "swap": m_swap,
    "footer": m_footer,
    "lanes": m_lanes,
    "splice": m_splice,
    "blocks": m_blocks,
}


def mutate(data: bytes, rng: random.Random, op: str | None = None, rounds: int = 1) -> bytes:
    """Apply `rounds` mutation operators (random ones unless `op` is given). Operators that need
    a well-formed file to find their target fall back to a bit flip on a file that is not."""
    d = bytes(data)
    for _ in range(rounds):
        name = op or rng.choice(list(MUTATORS))
        try:
            d = bytes(MUTATORS[name](d, rng, rng.random() < 0.7))
        except (ValueError, struct.error, IndexError, KeyError, OverflowError):
            d = bytes(m_bitflip(d, rng, rng.random() < 0.5))
        if not d:
            break
    return d


# -- the property ---------------------------------------------------------------------------------
class PropertyViolation(AssertionError):
    pass


@dataclass
class Outcome:
    kind: str                 # "ok", "rejected" (open failed), "partial" (some tensors failed)
    error: str | None = None  # error class of the open failure or first tensor failure
    seconds: float = 0.0
    peak_bytes: int = 0
    tensors_ok: int = 0
    tensors_bad: int = 0


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise OSError(key)


def rss_tracking_available() -> bool:
    """Linux lets a process reset its own peak RSS (VmHWM) through /proc/self/clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kb("VmHWM:")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident memory above the level at entry (native allocations included)."""

    def __enter__(self):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.base = _status_kb("VmRSS:") * 1024
        self.peak = 0
        return self

    def __exit__(self, *exc):
        self.peak = max(0, _status_kb("VmHWM:") * 1024 - self.base)


def check_file(path, *, limits=None, time_bound: float = 5.0, memory_bound: int | None = None,
               threads: int = 1, memory: str | None = None) -> Outcome:
    """Open, verify() and read every tensor of `path`. Raises PropertyViolation (with the
    original exception chained) if anything but a FormatError escapes, if the output of a read
    that succeeded does not match its SHA-256, if verify() and the reads disagree, or if the time
    or memory bound is exceeded. `memory`: None, "rss" (peak RSS above the starting level,
    native allocations included) or "tracemalloc" (Python and numpy allocations only)."""
    if memory == "tracemalloc":
        tracemalloc.start()
    rss = PeakRSS().__enter__() if memory == "rss" else None
    t0, c0 = time.perf_counter(), time.process_time()
    out = Outcome("ok")
    try:
        _run(path, limits, threads, out)
        return out
    except PropertyViolation:
        raise
    except Exception as e:  # anything else escaping is a bug
        raise PropertyViolation(f"{type(e).__name__}: {e}") from e
    finally:
        out.seconds = time.process_time() - c0  # CPU seconds: robust on a shared machine
        wall = time.perf_counter() - t0
        if memory == "tracemalloc":
            out.peak_bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        elif rss is not None:
            rss.__exit__(None, None, None)
            out.peak_bytes = rss.peak
        if out.seconds > time_bound or wall > 10 * time_bound:
            raise PropertyViolation(f"took {out.seconds:.2f} CPU s ({wall:.2f} s wall), bound "
                                    f"{time_bound} CPU s")
        if memory_bound is not None and out.peak_bytes > memory_bound:
            raise PropertyViolation(f"peak memory {out.peak_bytes} > {memory_bound}")


def _check_read_all(r, failed: dict) -> None:
    """read_all (the batch path, native chunk decoder included) agrees with the reads one
    tensor at a time: it succeeds exactly when they all do, with the same bytes, and fails with
    one of their error classes otherwise."""
    from wcodec.errors import FormatError
    try:
        everything = r.read_all()
    except FormatError as e:
        if not failed:
            raise PropertyViolation(f"read_all failed ({e.error_class}) where every read "
                                    "succeeded")
        if e.error_class not in set(failed.values()):
            raise PropertyViolation(f"read_all failed with {e.error_class}, reads with "
                                    f"{sorted(set(failed.values()))}")
        return
    if failed:
        raise PropertyViolation(f"read_all succeeded where reads failed for {sorted(failed)}")
    for name, data in everything.items():
        if data.tobytes() != r.read_bytes(name).tobytes():
            raise PropertyViolation(f"{name}: read_all and read_bytes differ")


def _run(path, limits, threads, out: Outcome, salvage: bool = True) -> None:
    from wcodec.errors import FormatError
    from wcodec.reader import Reader

    kw = {} if limits is None else {"limits": limits}
    try:
        # every SHA-256 checked: the property below (a read that succeeds has the record's
        # digest; verify and reads agree) is about them, and a plain record with chunk CRCs
        # would skip its digest by default (REC-09)
        r = Reader(path, threads=threads, verify_sha256=True, **kw)
    except FormatError as e:
        out.kind, out.error = "rejected", e.error_class
        if salvage:
            _salvage(path, kw, threads)
        return
    with r:
        problems = r.verify()
        failed = {}
        for name in r.keys():
            info = r.info(name)
            try:
                data = r.read_bytes(name)
            except FormatError as e:
                failed[name] = e.error_class
                continue
            if data.size != info.nbytes:
                raise PropertyViolation(f"{name}: {data.size} bytes, record says {info.nbytes}")
            if info.sha256 is not None and hashlib.sha256(data).digest() != info.sha256:
                raise PropertyViolation(f"{name}: read succeeded but SHA-256 differs")
            del data
        _check_read_all(r, failed)
        bad_in_verify = {p["tensor"] for p in problems if p.get("tensor") is not None}
        if bad_in_verify != set(failed):
            raise PropertyViolation(f"verify() names {sorted(bad_in_verify)}, reads failed "
                                    f"for {sorted(failed)}")
        for p in problems:
            if p["error"] not in _format_error_names():
                raise PropertyViolation(f"verify() reported a non-format error {p}")
        out.tensors_bad = len(failed)
        out.tensors_ok = len(r.keys()) - len(failed)
        if failed:
            out.kind, out.error = "partial", next(iter(failed.values()))
        elif problems:
            out.kind, out.error = "partial", problems[0]["error"]
    if salvage:
        rep = _salvage(path, kw, threads)
        if set(rep.recovered) != set(r.keys()) - set(failed):
            raise PropertyViolation(f"salvage recovered {sorted(rep.recovered)}, strict reads "
                                    f"succeeded for {sorted(set(r.keys()) - set(failed))}")


def _salvage(path, kw, threads):
    """Salvage of any file: never anything but a FormatError; every problem typed."""
    from wcodec.salvage import SalvageReader, examine
    with SalvageReader(path, threads=threads, **kw) as s:
        rep = examine(s)
    for p in rep.problems + rep.lost:
        if p["error"] not in _format_error_names():
            raise PropertyViolation(f"salvage reported a non-format error {p}")
    return rep


def _format_error_names():
    from wcodec.errors import FORMAT_ERROR_CLASSES
    return FORMAT_ERROR_CLASSES


# -- seeds ----------------------------------------------------------------------------------------
def make_seeds(folder) -> list[str]:
    """Small valid files covering dtypes, shapes, chunking, both chains, alignments, metadata,
    files without digests and (when available) quantized records."""
    import numpy as np
    from wcodec import dtypes as D
    from wcodec.writer import EncodeOptions, Writer

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1234)
    paths = []

    def write(name, tensors, meta=None, **opts):
        p = os.path.join(folder, name)
        with Writer(p, metadata=meta, options=EncodeOptions(threads=1, **opts)) as w:
            for tname, dt, shape, arr, *kind in tensors:
                kw = kind[0] if kind else {}
                w.add(tname, D.by_name(dt), shape, arr, **kw)
        paths.append(p)

    normal = rng.standard_normal(700).astype(np.float32)
    bf16 = (normal.view(np.uint32) >> 16).astype(np.uint16)
    write("mixed.wcd", [
        ("w", "float32", (20, 35), normal),
        ("b", "bfloat16", (700,), bf16),
        ("z", "float16", (300,), np.zeros(300, np.uint16)),
        ("s", "int8", (), np.array([5], np.int8)),
        ("e", "float64", (0, 3), np.zeros(0, np.float64)),
    ], meta={"note": "hi", "n": 3, "f": 1.5, "ok": True, "raw": b"\x00\x01"},
        chunk_elements=256)
    write("raw.wcd", [
        ("a", "int32", (4, 25), np.arange(100, dtype=np.int32)),
        ("m", "bool", (64,), (np.arange(64) % 3 == 0).astype(np.uint8)),
        ("u", "uint64", (9,), np.arange(9, dtype=np.uint64) << np.uint64(40)),
    ], codec="raw", chunk_elements=32, alignment_log2=0)
    write("nosha.wcd", [
        ("x", "bfloat16", (3, 200), bf16[:600]),
        ("y", "float8_e4m3fn", (128,), rng.integers(0, 255, 128, dtype=np.uint8)),
    ], sha256=False, chunk_elements=128, alignment_log2=4)
    write("one.wcd", [("only", "float32", (260,), normal[:260])], chunk_elements=65536)
    write("empty.wcd", [])
    try:
        from wcodec.records.quantized import Quantized
        x = rng.standard_normal((16, 24)).astype(np.float32)
        write("quant.wcd", [
            ("q", "float32", (16, 24), x, dict(kind=Quantized, step=0.05)),
            ("qc", "float32", (16, 24), x, dict(kind=Quantized, rel_step=0.1,
                                                scale_mode="channel", quantizer="uniform")),
            ("qg", "float32", (16, 24), x, dict(kind=Quantized, rel_step=0.1,
                                                scale_mode="group", group_size=8, classes=2)),
            ("qw", "bfloat16", (8, 6), bf16[:48], dict(kind=Quantized, rel_step=0.2,
                                                       scale_mode="group", group_size=6)),
        ], chunk_elements=128)
    except ImportError:
        pass
    return paths


def conformance_seeds(root) -> list[str]:
    out = []
    vec = os.path.join(root, "conformance", "vectors")
    for dirpath, _, files in os.walk(vec):
        for f in sorted(files):
            if f.endswith((".wcd", ".wcodec")):
                out.append(os.path.join(dirpath, f))
    return sorted(out)


# -- bombs: small files that declare (or expand to) far more than they hold ---------------------
def _field_set(data: bytes, name: str, value: int) -> bytearray:
    io_, payload = index_payload(data)
    f = next(f for f in index_fields(payload) if f.name == name)
    d = bytearray(data)
    d[io_ + 24 + f.offset:io_ + 24 + f.offset + f.size] = value.to_bytes(f.size, "little")
    return d


def fill_bomb(path, elements: int, dtype: str = "float64") -> str:
    """One tensor of `elements` zeros in ONE chunk whose lanes are all `fill` (a few dozen bytes
    of payload): a file of ~1 KB that honestly decodes to elements × itemsize bytes. No digest,
    so the forged size needs no matching SHA-256. `elements` ≤ 2^26 (one chunk)."""
    import numpy as np
    from wcodec import dtypes as D
    from wcodec.writer import EncodeOptions, Writer
    small = os.fspath(path) + ".small"
    with Writer(small, options=EncodeOptions(threads=1, sha256=False, chunk_crc32c=False,
                                             chunk_elements=1 << 26)) as w:
        w.add("zeros", D.by_name(dtype), (1024,), np.zeros(1024, D.by_name(dtype).uint))
    data = open(small, "rb").read()
    os.unlink(small)
    d = _field_set(data, "tensor[0].shape[0]", elements)
    d = _field_set(bytes(d), "tensor[0].stream[0].stream_shape[0]", elements)
    with open(path, "wb") as f:
        f.write(bytes(reseal(d, blocks=False)))
    return os.fspath(path)


def zstd_window_bomb(path, window_log: int = 27) -> str:
    """A float32 tensor [2^18] whose exponent lane is a zstd frame with no content size and a
    declared window of 2^window_log bytes (a decoder must not allocate the window)."""
    import numpy as np
    import zstandard
    from wcodec import dtypes as D
    from wcodec.writer import EncodeOptions, Writer
    n = 1 << 18
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    with Writer(path, options=EncodeOptions(threads=1, sha256=False, chunk_crc32c=False,
                                                    chunk_elements=n)) as w:
        w.add("w", D.by_name("float32"), (n,), x)
    data = open(path, "rb").read()
    p = split(data)
    blk = p.blocks[0]
    lanes = [struct.unpack_from("<BI", blk.payload, 5 * j) for j in range(4)]
    pos, bodies = 20, []
    for m, ln in lanes:
        bodies.append(blk.payload[pos:pos + ln])
        pos += ln
    from wcodec.codecs.planes import PlanesCodec
    lane0 = bytes(memoryview(PlanesCodec().encode(x.view(np.uint32), D.by_name("float32")))
                  .cast("B")[:n])
    params = zstandard.ZstdCompressionParameters(window_log=window_log, compression_level=3,
                                                 write_content_size=False)
    co = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = co.compress(lane0) + co.flush()
    lanes[0] = (1, len(frame))
    bodies[0] = frame
    blk.payload = b"".join(struct.pack("<BI", m, ln) for m, ln in lanes) + b"".join(bodies)
    with open(path, "wb") as f:
        f.write(join(p))
    return os.fspath(path)


def many_records(path, n: int) -> str:
    """An index of n minimal (empty) tensor records: the cost of parsing records is per record,
    not per byte of payload (about 80 bytes each here)."""
    def rec(i):
        name = f"{i:x}".encode()
        r = struct.pack("<H", len(name)) + name + bytes([2, 1, 0, 1]) + struct.pack("<Q", 0)
        r += struct.pack("<I", 0) + bytes([1])
        r += bytes([2, 1]) + struct.pack("<QQ", 0, 1 << 16) + bytes([1])
        return r + struct.pack("<HH", 1, 0) + struct.pack("<I", 0)
    p = Parts(alignment_log2=0, tensor_count=n, tail=b"".join(rec(i) for i in range(n)))
    with open(path, "wb") as f:
        f.write(join(p))
    return os.fspath(path)


def block_count_bomb(path, n: int) -> str:
    """An INDEX listing n block entries (24 bytes each) in a file holding no block at all."""
    p = Parts(alignment_log2=0)
    head = header_bytes(p)
    payload = IH.pack(0, n, 0, 0) + BE.pack(32, 0, CHUNK, 0, 0) * n
    d = head + block_bytes(Block(INDEX, payload=payload)) + footer_bytes(len(head),
                                                                          28 + len(payload))
    with open(path, "wb") as f:
        f.write(d)
    return os.fspath(path)


MEASURE_CHILD = r"""
import json, resource, sys, hashlib
from wcodec.errors import FormatError
from wcodec.limits import Limits
from wcodec.reader import Reader
from wcodec.salvage import SalvageReader, examine
path, limits, salvage = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1"
import numpy, zstandard, crc32c  # noqa: imports before the baseline
def status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current level: import peaks do not count
base = status_kb("VmRSS:")
out = {"outcome": "ok", "error": None, "tensors": 0}
try:
    with Reader(path, limits=Limits(**limits), threads=1) as r:
        for n in r.keys():
            try:
                r.read_bytes(n)
                out["tensors"] += 1
            except FormatError as e:
                out["outcome"], out["error"] = "partial", e.error_class
        r.verify()
except FormatError as e:
    out["outcome"], out["error"] = "rejected", e.error_class
if salvage:
    with SalvageReader(path, limits=Limits(**limits), threads=1) as s:
        examine(s)
out["peak_kb"] = max(0, status_kb("VmHWM:") - base)
print(json.dumps(out))
"""


def measure_peak(path, limits: dict | None = None, salvage: bool = True,
                 timeout: float = 120) -> dict:
    """Open, read every tensor, verify() (and salvage) `path` in a fresh subprocess; returns
    {"outcome", "error", "tensors", "peak_kb", "cpu_s"}: peak_kb is the child's peak resident
    memory (VmHWM, reset after imports) above its level after imports, native allocations
    included (Linux)."""
    import json
    import resource
    import subprocess
    import sys
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run([sys.executable, "-c", MEASURE_CHILD, os.fspath(path),
                          json.dumps(limits or {}), "1" if salvage else "0"],
                         capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise PropertyViolation(f"{path}: child failed ({res.returncode}): {res.stderr[-2000:]}")
    out = json.loads(res.stdout)
    out["cpu_s"] = round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 2)
    return out
