"""Shared helpers of the core test suite.

- dtype tables and bit-pattern helpers (tests compare bytes, never values);
- `WFile`: a parsed wcodec file that a test can change field by field and lay out again with
  every length, offset and CRC32C recomputed, so that a crafted file carries exactly one defect;
- `run_cli`: the real `wcodec` command in a subprocess.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import crc32c
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from wcodec import layout as L

# -- hypothesis ----------------------------------------------------------------------------------
settings.register_profile(
    "wcodec", deadline=None, max_examples=20, derandomize=False, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("wcodec")

# -- dtypes --------------------------------------------------------------------------------------
DTYPE_NAMES = ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
               "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"]
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1,
            "float8_e5m2": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1,
            "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1}
# numpy dtypes with exactly the wcodec layout (bfloat16 and float8 have none)
NUMPY_DTYPES = {"float64": "<f8", "float32": "<f4", "float16": "<f2", "int8": "i1",
                "int16": "<i2", "int32": "<i4", "int64": "<i8", "uint8": "u1", "uint16": "<u2",
                "uint32": "<u4", "uint64": "<u8", "bool": "?"}

# Bit patterns every float test must carry through: -0.0, +-inf, quiet and signalling NaNs with
# payloads, negative NaN, smallest/largest subnormals (both signs), the largest finite value.
SPECIAL_BITS = {
    "float64": [0x8000000000000000, 0x7FF0000000000000, 0xFFF0000000000000,
                0x7FF8000000000001, 0x7FF0000000000001, 0xFFF8DEADBEEF0001, 0x0000000000000001,
                0x000FFFFFFFFFFFFF, 0x800FFFFFFFFFFFFF, 0x7FEFFFFFFFFFFFFF],
    "float32": [0x80000000, 0x7F800000, 0xFF800000, 0x7FC00001, 0x7F800001, 0xFFC0BEEF,
                0x00000001, 0x007FFFFF, 0x807FFFFF, 0x7F7FFFFF],
    "float16": [0x8000, 0x7C00, 0xFC00, 0x7E01, 0x7C01, 0xFE0F, 0x0001, 0x03FF, 0x83FF, 0x7BFF],
    "bfloat16": [0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x7F81, 0xFFCF, 0x0001, 0x007F, 0x807F, 0x7F7F],
    "float8_e4m3fn": [0x80, 0x7F, 0xFF, 0x01, 0x07, 0x87, 0x7E, 0xFE],
    "float8_e5m2": [0x80, 0x7C, 0xFC, 0x7D, 0x7E, 0xFF, 0x01, 0x03, 0x83, 0x7B],
}


def int_specials(bits: int) -> list[int]:
    top = (1 << bits) - 1
    return [0, 1, top, 1 << (bits - 1), top >> 1]


def special_patterns(name: str) -> list[int]:
    if name == "bool":
        return [0, 1]
    return SPECIAL_BITS.get(name) or int_specials(8 * ITEMSIZE[name])


def uint_np(name: str) -> np.dtype:
    return np.dtype(f"<u{ITEMSIZE[name]}")


def torch_dtype(name: str):
    import torch
    return getattr(torch, name)


def torch_carrier(name: str):
    """A fully supported torch integer dtype of the same width, to move bit patterns around."""
    import torch
    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[ITEMSIZE[name]]


def torch_bits(t) -> bytes:
    """The element bytes of a torch tensor in C order (spec §7.3), whatever its strides."""
    import torch
    # a fresh C-contiguous copy: contiguous() may keep any stride of a size-1 dimension
    t = t.detach().cpu().clone(memory_format=torch.contiguous_format)
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def numpy_bits(a: np.ndarray) -> bytes:
    """The little-endian element bytes of a numpy array in C order, whatever its strides/order."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return a.tobytes()


# -- the CLI -------------------------------------------------------------------------------------
def _wcodec_cmd() -> list[str]:
    """The installed `wcodec` console script of this interpreter (falls back to its module)."""
    script = Path(sys.executable).parent / "wcodec"
    if script.exists():
        return [str(script)]
    found = shutil.which("wcodec")
    if found:
        return [found]
    return [sys.executable, "-c", "from wcodec.cli import entry; entry()"]


WCODEC_CMD = _wcodec_cmd()


def run_cli(*args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """`wcodec ARGS` in a real subprocess (the installed entry point's module)."""
    e = dict(os.environ)
    e.pop("WCODEC_DEBUG", None)
    e.setdefault("COLUMNS", "200")
    if env:
        e.update(env)
    cmd = [*WCODEC_CMD, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=e)


# -- a changeable model of a wcodec file ----------------------------------------------------------
def plain(obj):
    """construct Container/ListContainer -> plain dicts and lists (without construct's `_io`)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


def crc(data) -> int:
    return crc32c.crc32c(bytes(data))


class WBlock:
    """One block: its header fields, payload, and optional overrides of what the table says."""

    def __init__(self, block_type, payload, tensor_id=L.NONE_ID, stream_id=L.NONE_ID,
                 chunk_id=L.NONE_ID, block_flags=0):
        self.header = dict(block_type=block_type, block_flags=block_flags, tensor_id=tensor_id,
                           stream_id=stream_id, chunk_id=chunk_id, payload_length=None)
        self.payload = bytes(payload)
        self.crc = None          # trailer override
        self.entry = {}          # BlockEntry field overrides (a value or f(computed value))
        self.gap_before = b""    # extra bytes written before the block (after normal padding)
        self.pad_byte = 0        # value of this block's padding bytes

    def header_bytes(self) -> bytes:
        h = dict(self.header)
        if h["payload_length"] is None:
            h["payload_length"] = len(self.payload)
        return L.BlockHeader.build(h)


class WFile:
    """A wcodec file as editable parts. `build()` lays it out again per spec §2-6: padding to the
    alignment, every block CRC, the block table from the real offsets, the INDEX payload and block,
    and the footer, each recomputed unless a test overrides that one field."""

    def __init__(self):
        self.header: dict = {}
        self.header_crc = None
        self.header_pad_byte = 0
        self.blocks: list[WBlock] = []
        self.index_header: dict = {}      # overrides of IndexHeader fields
        self.metadata: list[dict] = []
        self.records: list[dict] = []
        self.index_tail = b""             # bytes appended to the INDEX payload
        self.index_payload_override = None
        self.index_payload_hook = None    # payload -> payload, applied last
        self.index_block: dict = {}       # overrides of the INDEX BlockHeader fields
        self.index_crc = None
        self.gap_before_index = b""
        self.footer: dict = {}            # overrides of Footer fields (value or f(computed))
        self.footer_crc = None
        self.tail = b""                   # bytes after the footer

    # -- parse ---------------------------------------------------------------------------------
    @classmethod
    def parse(cls, data: bytes) -> "WFile":
        import io
        f = cls()
        f.header = plain(L.FileHeader.parse(data[:32]))
        del f.header["header_crc32c"]
        ftr = L.Footer.parse(data[-32:])
        p0 = ftr.index_offset + 24
        payload = data[p0:p0 + ftr.index_block_size - 28]
        s = io.BytesIO(payload)
        ih = L.IndexHeader.parse_stream(s)
        entries = [L.BlockEntry.parse_stream(s) for _ in range(ih.block_count)]
        f.metadata = [plain(L.MetadataEntry.parse_stream(s)) for _ in range(ih.metadata_count)]
        f.records = [plain(L.TensorRecord.parse_stream(s)) for _ in range(ih.tensor_count)]
        assert s.tell() == len(payload)
        for e in entries:
            h = L.BlockHeader.parse(data[e.offset:e.offset + 24])
            b = WBlock(h.block_type, data[e.offset + 24:e.offset + 24 + h.payload_length],
                       h.tensor_id, h.stream_id, h.chunk_id, h.block_flags)
            f.blocks.append(b)
        return f

    def copy(self) -> "WFile":
        return copy.deepcopy(self)

    # -- helpers for tests ----------------------------------------------------------------------
    @property
    def alignment(self) -> int:
        return 1 << min(self.header["alignment_log2"], 16)

    def record(self, name: str) -> dict:
        for r in self.records:
            if r["name"] == name.encode():
                return r
        raise KeyError(name)

    def chunk_block(self, name: str, chunk: int = 0, stream: int = 0) -> int:
        return self.record(name)["streams"][stream]["chunk_blocks"][chunk]

    def add_block(self, block: WBlock) -> int:
        self.blocks.append(block)
        return len(self.blocks) - 1

    # -- build ----------------------------------------------------------------------------------
    def header_bytes(self) -> bytes:
        h = dict(self.header, header_crc32c=0)
        raw = L.FileHeader.build(h)
        h["header_crc32c"] = crc(raw[:28]) if self.header_crc is None else self.header_crc
        return L.FileHeader.build(h)

    def index_payload(self, entries) -> bytes:
        if self.index_payload_override is not None:
            return self.index_payload_override
        ih = dict(tensor_count=len(self.records), block_count=len(entries),
                  metadata_count=len(self.metadata), reserved=0)
        ih.update(self.index_header)
        parts = [L.IndexHeader.build(ih)]
        parts += [L.BlockEntry.build(e) for e in entries]
        parts += [L.MetadataEntry.build(m) for m in self.metadata]
        parts += [L.TensorRecord.build(r) for r in self.records]
        return b"".join(parts) + self.index_tail

    def build(self) -> bytes:
        A = self.alignment
        out = bytearray(self.header_bytes())

        def pad(byte=0):
            out.extend(bytes([byte]) * (L.align_up(len(out), A) - len(out)))

        pad(self.header_pad_byte)
        entries = []
        for b in self.blocks:
            out.extend(b.gap_before)
            offset = len(out)
            hb = b.header_bytes()
            body = hb + b.payload
            trailer = crc(body) if b.crc is None else b.crc
            out.extend(body)
            out.extend(L.BlockTrailer.build(dict(block_crc32c=trailer)))
            e = dict(offset=offset, payload_length=len(b.payload),
                     block_type=b.header["block_type"], reserved=0, block_crc32c=trailer)
            e.update({k: v(e[k]) if callable(v) else v for k, v in b.entry.items()})
            entries.append(e)
            pad(b.pad_byte)
        out.extend(self.gap_before_index)
        index_offset = len(out)
        payload = self.index_payload(entries)
        if self.index_payload_hook is not None:
            payload = self.index_payload_hook(payload)
        ih = dict(block_type=L.BLOCK_INDEX, block_flags=0, tensor_id=L.NONE_ID,
                  stream_id=L.NONE_ID, chunk_id=L.NONE_ID, payload_length=len(payload))
        ih.update(self.index_block)
        body = L.BlockHeader.build(ih) + payload
        out.extend(body)
        out.extend(L.BlockTrailer.build(dict(
            block_crc32c=crc(body) if self.index_crc is None else self.index_crc)))
        ftr = dict(index_offset=index_offset, index_block_size=len(payload) + 28,
                   footer_magic=L.FOOTER_MAGIC, reserved=0, footer_crc32c=0)
        ftr.update({k: v(ftr[k]) if callable(v) else v for k, v in self.footer.items()})
        raw = L.Footer.build(ftr)
        ftr["footer_crc32c"] = crc(raw[:24]) if self.footer_crc is None else self.footer_crc
        out.extend(L.Footer.build(ftr))
        out.extend(self.tail)
        return bytes(out)


def lanes_payload(lanes) -> bytes:
    """A `lanes` codec payload from [(method, body), ...] (spec/codecs/lanes.md)."""
    import struct
    return b"".join(struct.pack("<BI", m, len(body)) for m, body in lanes) + \
        b"".join(bytes(body) for _, body in lanes)


def parse_lanes(payload: bytes, lane_count: int) -> list[tuple[int, bytes]]:
    import struct
    heads = [struct.unpack_from("<BI", payload, 5 * j) for j in range(lane_count)]
    pos, out = 5 * lane_count, []
    for m, n in heads:
        out.append((m, payload[pos:pos + n]))
        pos += n
    assert pos == len(payload)
    return out


# -- shared fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wcodec")


class PathMaker:
    """Fresh file names inside one folder; usable from hypothesis tests (no function fixtures)."""

    def __init__(self, root: Path):
        self.root = root
        self.n = 0

    def __call__(self, suffix=".wcodec") -> Path:
        self.n += 1
        return self.root / f"f{self.n}{suffix}"


@pytest.fixture(scope="module")
def fresh_path(tmp_path_factory) -> PathMaker:
    return PathMaker(tmp_path_factory.mktemp("files"))
