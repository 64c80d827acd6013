"""Random-access reader over mmap (spec/container.md).

`open` reads only the header, the footer and the INDEX block, and checks them in the order the spec
gives; that order is the security argument: every length is checked against limits and against the
bytes that remain before anything is sized from it. Reading a tensor touches only its own blocks.
"""

from __future__ import annotations

import collections
import hashlib
import io
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import construct
import crc32c
import numpy as np

from . import dtypes as D
from . import fastpath
from . import layout as L
from . import layout_parse as LP
from .chain import Chain
from .errors import (
    BadMagic,
    ChecksumMismatch,
    DigestMismatch,
    FormatError,
    LayoutError,
    LimitExceeded,
    MalformedRecord,
    Truncated,
    UnsupportedFeature,
    UnsupportedVersion,
)
from .limits import (
    DEFAULT_LIMITS,
    MAX_ALIGNMENT_LOG2,
    MAX_CHUNK_ELEMENTS,
    MAX_CODECS,
    MAX_CONFIG_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PARAMS_LENGTH,
    MAX_RANK,
    MAX_STREAMS,
    MAX_TENSOR_BYTES_FORMAT,
    Limits,
)
from .metadata import decode_value
from .records import DecodeContext, record_class
from .writer import default_threads

# smallest encoded size of one entry, for IDX-04's checks against the bytes that remain
_MIN_METADATA_ENTRY = 8
_MIN_TENSOR_RECORD = 8

_HEADER_C = L.FileHeader.compile()
_BLOCK_HEADER_C = L.BlockHeader.compile()
_FOOTER_C = L.Footer.compile()
_BLOCK_ENTRY_C = L.BlockEntry.compile()  # salvage.py parses block entries one by one with it
# the block table as one numpy record array (its dtype is derived from L.BlockEntry), and the
# metadata entries and tensor records by parsers generated from layout.py (layout_parse.py): an
# index of a hundred tensors parses several times faster than with construct's compiled structs.
# Any failure is re-parsed by the declarative structs, so errors are theirs (see _parse_index)
_BLOCK_ENTRY_DT = LP.numpy_dtype(L.BlockEntry)
_BLOCK_ENTRY_FIELDS = tuple(_BLOCK_ENTRY_DT.names)
_PARSE_METADATA = LP.generate(L.MetadataEntry)
_PARSE_RECORDS = LP.generate(L.TensorRecord)


class BlockRow(collections.namedtuple("BlockEntry", _BLOCK_ENTRY_FIELDS)):
    """One BlockEntry of the block table (§6.2), fields as attributes (e.offset) or by name
    (e["offset"]) like the construct Container it stands for: a tuple costs a third of one to
    make, and a file has a block per 64K elements. (salvage.py may still list Containers.)"""

    __slots__ = ()

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)


def element_count(shape, itemsize: int, limit: int, *, tensor: str | None = None) -> int:
    """REC-04: product of dims and byte size, checked (Python ints cannot overflow, but the limit
    is checked after each factor so no huge intermediate is ever used to size anything)."""
    n = 1
    for d in shape:
        n *= d
        if n * itemsize > MAX_TENSOR_BYTES_FORMAT:
            raise LimitExceeded(f"shape {list(shape)} exceeds 2^62 bytes", rule="REC-04",
                                tensor=tensor)
    if n * itemsize > limit:
        raise LimitExceeded(f"{n * itemsize} bytes exceed the configured limit of {limit}",
                            rule="LIM-02", tensor=tensor)
    return n


@dataclass
class StreamInfo:
    dtype: D.DType
    shape: tuple[int, ...]
    elements: int
    chunk_elements: int
    chain: Chain
    chunk_blocks: list[int]
    chunk_crc32c: list[int] | None = None  # REC-11, when the record has has_chunk_crc32c


@dataclass
class TensorInfo:
    """What the index says about one tensor: everything `inspect` shows."""

    index: int
    name: str
    dtype: D.DType
    shape: tuple[int, ...]
    elements: int
    record_kind: int
    kind_name: str
    sha256: bytes | None
    lossy: bool
    error: dict | None
    params: bytes
    streams: list[StreamInfo]
    stored_bytes: int = 0
    chunk_crcs: bool = False  # has_chunk_crc32c: every stream carries chunk_crc32c
    record: object = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return self.elements * self.dtype.itemsize


def _parse(struct_, data, offset: int, what: str):
    try:
        return struct_.parse(data[offset:offset + struct_.sizeof()])
    except construct.ConstructError:
        raise Truncated(f"{what} runs past the end of the file") from None


class Reader:
    def __init__(self, path, *, limits: Limits = DEFAULT_LIMITS,
                 verify_sha256: bool | None = None, threads: int | None = None):
        """verify_sha256: None (default) checks every SHA-256 except those of `plain` records
        with chunk CRCs, whose chunk CRCs cover the whole tensor (REC-09, REC-11); True checks
        every SHA-256; False none. Chunk CRCs are always checked: they cost a pass over bytes
        still in cache."""
        self.path = os.fspath(path)
        self.limits = Limits.coerce(limits)
        self.verify_sha256 = verify_sha256
        self._threads = threads or default_threads()
        self._pool: ThreadPoolExecutor | None = None
        self._chains: dict[tuple, Chain] = {}  # codec specs -> Chain, shared by the streams
        self._file = open(self.path, "rb")
        try:
            size = os.fstat(self._file.fileno()).st_size
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            self.data = memoryview(self._mm) if self._mm is not None else memoryview(b"")
            self.file_size = size
            self._open()
        except BaseException:
            self.close()
            raise

    # -- open: header, footer, index, in spec order --------------------------------------------
    def _open(self) -> None:
        data, size = self.data, self.file_size
        head8 = bytes(data[:8])
        if size < 8:  # HDR-01 / HDR-02
            if L.MAGIC.startswith(head8):
                raise Truncated(f"file of {size} bytes is shorter than a header", rule="HDR-02")
            raise BadMagic("not a wcodec file (bad magic)", rule="HDR-01")
        if head8 != L.MAGIC:
            raise BadMagic("not a wcodec file (bad magic)", rule="HDR-01")
        if size < L.HEADER_SIZE + L.FOOTER_SIZE:
            raise Truncated(f"file of {size} bytes cannot hold a header and a footer",
                            rule="HDR-02")
        hdr = _HEADER_C.parse(bytes(data[:L.HEADER_SIZE]))
        if crc32c.crc32c(data[:28]) != hdr.header_crc32c:
            raise ChecksumMismatch("file header CRC32C mismatch", rule="HDR-03")
        if hdr.version_major != L.VERSION_MAJOR:
            raise UnsupportedVersion(f"format major version {hdr.version_major}, this decoder "
                                     f"reads {L.VERSION_MAJOR}", rule="HDR-04")
        if hdr.required_features:
            bit = (hdr.required_features & -hdr.required_features).bit_length() - 1
            raise UnsupportedFeature(f"unknown required feature bit {bit}", rule="HDR-05")
        if hdr.alignment_log2 > MAX_ALIGNMENT_LOG2:
            raise MalformedRecord(f"alignment_log2 {hdr.alignment_log2} > 16", rule="HDR-07")
        if any(hdr.reserved):
            raise MalformedRecord("file header reserved bytes are not zero", rule="RSV-01")
        self.header = hdr
        self.version = (hdr.version_major, hdr.version_minor)
        self.alignment = A = 1 << hdr.alignment_log2

        ftr = _FOOTER_C.parse(bytes(data[size - L.FOOTER_SIZE:]))
        if ftr.footer_magic != L.FOOTER_MAGIC:
            raise Truncated("no footer at the end of the file (truncated or unfinished)",
                            rule="FTR-01")
        if crc32c.crc32c(data[size - L.FOOTER_SIZE:size - 8]) != ftr.footer_crc32c:
            raise ChecksumMismatch("footer CRC32C mismatch", rule="FTR-02")
        if ftr.reserved:
            raise MalformedRecord("footer reserved field is not zero", rule="RSV-01")
        index_end = size - L.FOOTER_SIZE
        if (ftr.index_block_size < L.BLOCK_OVERHEAD or ftr.index_offset % A
                or ftr.index_offset + ftr.index_block_size != index_end):
            raise LayoutError("footer does not locate an index block ending at the footer",
                              rule="FTR-03")
        self.index_offset = ftr.index_offset
        payload_length = ftr.index_block_size - L.BLOCK_OVERHEAD
        if ftr.index_offset < L.HEADER_SIZE:
            raise LayoutError("index block overlaps the file header", rule="FTR-03")
        if payload_length > self.limits.max_index_bytes:
            raise LimitExceeded(f"index of {payload_length} bytes exceeds the limit of "
                                f"{self.limits.max_index_bytes}", rule="LIM-02")

        self._open_index(ftr.index_offset, payload_length)

    def _open_index(self, index_offset: int, payload_length: int) -> None:
        """IDX-01, IDX-02, then the index itself, for an INDEX block the caller located (the
        footer does; wcodec.salvage may find it by walking the blocks instead)."""
        data = self.data
        bh = _BLOCK_HEADER_C.parse(bytes(data[index_offset:index_offset + 24]))
        if (bh.block_type != L.BLOCK_INDEX or bh.payload_length != payload_length
                or (bh.tensor_id, bh.stream_id, bh.chunk_id) != (L.NONE_ID,) * 3):
            raise LayoutError("the footer's index block is not an INDEX block of that size",
                              rule="IDX-01")
        if bh.block_flags:
            raise MalformedRecord("INDEX block_flags is not zero", rule="RSV-01")
        p0 = index_offset + L.BLOCK_HEADER_SIZE
        trailer = int.from_bytes(data[p0 + payload_length:p0 + payload_length + 4], "little")
        if crc32c.crc32c(data[index_offset:p0 + payload_length]) != trailer:
            raise ChecksumMismatch("INDEX block CRC32C mismatch", rule="IDX-02")
        self._parse_index(bytes(data[p0:p0 + payload_length]))
        self._check_layout()
        self._check_records()

    def _parse_index(self, payload: bytes) -> None:
        lim = self.limits
        stream = io.BytesIO(payload)
        try:
            ih = L.IndexHeader.parse_stream(stream)
        except construct.ConstructError:
            raise Truncated("INDEX payload shorter than its header", rule="IDX-03") from None
        if ih.reserved:
            raise MalformedRecord("IndexHeader reserved field is not zero", rule="RSV-01")
        for count, limit, what in ((ih.block_count, lim.max_blocks, "blocks"),
                                   (ih.metadata_count, lim.max_metadata_entries, "metadata"),
                                   (ih.tensor_count, lim.max_tensors, "tensors")):
            if count > limit:
                raise LimitExceeded(f"{count} {what} exceed the limit of {limit}", rule="IDX-04")
        need = (L.INDEX_HEADER_SIZE + ih.block_count * L.BLOCK_ENTRY_SIZE
                + ih.metadata_count * _MIN_METADATA_ENTRY + ih.tensor_count * _MIN_TENSOR_RECORD)
        if need > len(payload):
            raise Truncated("INDEX counts need more bytes than the payload holds", rule="IDX-04")
        # every listed block takes at least 28 bytes before the index (LAY-01, LAY-04): checked
        # before the table is materialized, so a forged count cannot cost memory the file lacks
        if ih.block_count * L.BLOCK_OVERHEAD > self.index_offset - L.HEADER_SIZE:
            raise LayoutError(f"{ih.block_count} blocks cannot fit before the index",
                              rule="LAY-04")
        try:
            pos = L.INDEX_HEADER_SIZE
            # the block entries fit (IDX-04 above): one record array, then one BlockRow each
            table = np.frombuffer(payload, dtype=_BLOCK_ENTRY_DT, count=ih.block_count,
                                  offset=pos)
            self.blocks = list(map(BlockRow._make, table.tolist()))
            self._block_table = (table, self.blocks)  # for _check_layout
            start = pos + ih.block_count * L.BLOCK_ENTRY_SIZE
            try:
                # generated parsers check every read against the end of the payload; anything
                # that fails is redone by the declarative structs, which name the error
                payload = bytes(payload)
                raw_meta, end = _PARSE_METADATA(payload, start, ih.metadata_count)
                raw_records, end = _PARSE_RECORDS(payload, end, ih.tensor_count)
                stream.seek(end)
            except Exception:  # noqa: BLE001 - the declarative parse below says what is wrong
                stream.seek(start)
                raw_meta = [L.MetadataEntry.parse_stream(stream)
                            for _ in range(ih.metadata_count)]
                raw_records = [L.TensorRecord.parse_stream(stream)
                               for _ in range(ih.tensor_count)]
        except construct.ConstructError:
            raise Truncated("an index structure runs past the end of the INDEX payload",
                            rule="IDX-03") from None
        if stream.tell() != len(payload):
            raise MalformedRecord(f"{len(payload) - stream.tell()} bytes left over after the "
                                  "index", rule="IDX-03")
        self._metadata = {}
        for m in raw_meta:
            try:
                key = m.key.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedRecord("metadata key is not UTF-8", rule="META-01") from None
            if not 1 <= m.key_length <= 256:
                raise MalformedRecord(f"metadata key of {m.key_length} bytes", rule="META-01")
            if key in self._metadata:
                raise MalformedRecord(f"metadata key {key!r} appears twice", rule="META-01")
            if m.value_length > lim.max_metadata_value_bytes:
                raise LimitExceeded(f"metadata {key!r} value of {m.value_length} bytes",
                                    rule="LIM-02")
            self._metadata[key] = (m.value_type, decode_value(key, m.value_type, m.value))
        self._raw_records = raw_records

    def _check_layout(self) -> None:
        """§5.3 from the block table alone: no holes, no overlaps, blocks inside the file."""
        A, data = self.alignment, self.data
        end = L.HEADER_SIZE
        pad_end = L.align_up(end, A)
        if pad_end > self.index_offset:
            raise LayoutError("index block overlaps the header padding", rule="LAY-02")
        if data[end:pad_end] != bytes(pad_end - end):
            raise LayoutError("padding after the file header is not zero", rule="LAY-03")
        end = self._layout_end()
        if end is None:  # some block fails a check: the loop below says which and how
            end = self._check_layout_blocks()
        if self.index_offset != L.align_up(end, A):
            raise LayoutError(f"index starts at {self.index_offset}, expected "
                              f"{L.align_up(end, A)}", rule="LAY-02")

    def _layout_end(self) -> int | None:
        """The block checks of _check_layout_blocks over the whole table at once (numpy): the end
        of the last block when every block passes, None when any fails."""
        t, listed = getattr(self, "_block_table", (None, None))
        if listed is not self.blocks:  # self.blocks did not come from _parse_index's table
            return None
        if not len(t):
            return L.HEADER_SIZE
        A, limit = self.alignment, self.index_offset
        off, length, kind = t["offset"], t["payload_length"], t["block_type"]
        # every offset and length at most the index offset (< the file size), so the sums
        # below fit in int64
        if int(off.max()) > limit or int(length.max()) > limit:
            return None
        off = off.astype(np.int64)
        ends = off + L.BLOCK_OVERHEAD + length.astype(np.int64)
        starts = np.empty_like(ends)
        starts[0] = L.HEADER_SIZE
        starts[1:] = ends[:-1]
        starts = (starts + (A - 1)) // A * A  # L.align_up
        unknown = (kind & L.REQUIRED_BIT) != 0
        for known in L.KNOWN_BLOCK_TYPES:  # np.isin costs more than these few compares
            unknown &= kind != known
        bad = ((t["reserved"] != 0) | (kind == L.BLOCK_INDEX) | unknown
               | (off != starts) | (ends > limit))
        return None if bad.any() else int(ends[-1])

    def _check_layout_blocks(self) -> int:
        A, end = self.alignment, L.HEADER_SIZE
        for i, b in enumerate(self.blocks):
            if b.reserved:
                raise MalformedRecord("BlockEntry reserved field is not zero", rule="RSV-01",
                                      block=i)
            if b.block_type == L.BLOCK_INDEX:
                raise MalformedRecord("the block table lists an INDEX block", rule="IDX-05",
                                      block=i)
            if b.block_type & L.REQUIRED_BIT and b.block_type not in L.KNOWN_BLOCK_TYPES:
                raise UnsupportedFeature(f"unknown required block type 0x{b.block_type:04X}",
                                         rule="BLK-02", block=i)
            if b.offset != L.align_up(end, A):
                raise LayoutError(f"block starts at {b.offset}, expected {L.align_up(end, A)} "
                                  "(hole or overlap)", rule="LAY-01", block=i)
            end = b.offset + L.BLOCK_OVERHEAD + b.payload_length
            if end > self.index_offset:
                raise LayoutError("block runs into the index or past the file", rule="LAY-04",
                                  block=i)
        return end

    def _check_records(self) -> None:
        self.tensors: dict[str, TensorInfo] = {}
        owner: dict[int, tuple[int, int, int]] = {}
        for t, r in enumerate(self._raw_records):
            info = self._check_record(t, r, owner)
            self.tensors[info.name] = info
        t, listed = getattr(self, "_block_table", (None, None))
        if listed is self.blocks and len(owner) == int(np.count_nonzero(
                t["block_type"] == L.BLOCK_CHUNK)):
            pass  # every owned block is a distinct CHUNK block (REC-07): all of them are owned
        else:
            for i, b in enumerate(self.blocks):
                if b.block_type == L.BLOCK_CHUNK and i not in owner:
                    raise LayoutError("CHUNK block is named by no tensor", rule="REC-07",
                                      block=i)
        self._owner = owner

    def _check_record(self, t: int, r, owner: dict) -> TensorInfo:
        """One TensorRecord against §6.4 and its kind's page; `owner` collects chunk blocks.
        Fields are read as r['x'], not r.x: construct's Container attribute access is a Python
        call, and opening a file of many tensors was dominated by it. Block entries are read as
        e.x: BlockRow's attributes are the fast ones (salvage's Containers have both)."""
        lim = self.limits
        try:
            name = r['name'].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRecord(f"tensor {t}: name is not UTF-8", rule="REC-01") from None
        if not 1 <= r['name_length'] <= MAX_NAME_LENGTH:
            raise MalformedRecord(f"tensor {t}: name of {r['name_length']} bytes", rule="REC-01")
        if name in getattr(self, "tensors", ()):
            raise MalformedRecord(f"tensor name {name!r} appears twice", rule="REC-01")
        dtype = D.by_code(r['dtype'])
        flags = r['record_flags']
        if flags & ~L.KNOWN_RECORD_FLAGS:
            raise MalformedRecord("reserved record_flags bits set", rule="RSV-01", tensor=name)
        kind = record_class(r['record_kind'])
        if r['rank'] > MAX_RANK:
            raise LimitExceeded(f"rank {r['rank']} > {MAX_RANK}", rule="REC-05", tensor=name)
        n = element_count(r['shape'], dtype.itemsize, lim.max_tensor_bytes, tensor=name)
        if r['params_length'] > MAX_PARAMS_LENGTH:
            raise LimitExceeded("params_length > 1 MiB", rule="REC-05", tensor=name)
        if not 1 <= r['stream_count'] <= MAX_STREAMS:
            raise LimitExceeded(f"stream_count {r['stream_count']}", rule="REC-05", tensor=name)
        blocks, chains = self.blocks, self._chains
        n_blocks, stored = len(blocks), 0
        streams = []
        for s_id, s in enumerate(r['streams']):
            sd = D.by_code(s['stream_dtype'])
            if s['stream_rank'] > MAX_RANK:
                raise LimitExceeded(f"stream rank {s['stream_rank']}", rule="REC-05", tensor=name)
            sn = element_count(s['stream_shape'], sd.itemsize, lim.max_tensor_bytes, tensor=name)
            ce = s['chunk_elements']
            if not 1 <= ce <= MAX_CHUNK_ELEMENTS:
                raise LimitExceeded(f"chunk_elements {ce}", rule="REC-05", tensor=name)
            if not 1 <= s['codec_count'] <= MAX_CODECS:
                raise LimitExceeded(f"codec_count {s['codec_count']}", rule="REC-05", tensor=name)
            codecs = s['codecs']
            key = []
            for c in codecs:
                if c['config_length'] > MAX_CONFIG_LENGTH:
                    raise LimitExceeded("codec config over 1024 bytes", rule="REC-05",
                                        tensor=name)
                key.append((c['codec_id'], bytes(c['config'])))
            if s['chunk_count'] != -(-sn // ce):
                raise MalformedRecord(f"stream {s_id}: {s['chunk_count']} chunks for {sn} "
                                      f"elements of {ce}", rule="REC-06", tensor=name)
            key = tuple(key)
            chain = chains.get(key)
            if chain is None:  # most streams of a file share a chain: build each one once
                try:
                    chain = Chain.from_specs(codecs)
                except FormatError as e:
                    e.tensor = name
                    raise
                chains[key] = chain
            chunk_blocks = list(s['chunk_blocks'])
            for c, b in enumerate(chunk_blocks):
                e = blocks[b] if b < n_blocks else None
                if e is None or e.block_type != L.BLOCK_CHUNK:
                    raise LayoutError(f"stream {s_id} chunk {c} names block {b}, not a "
                                      "CHUNK block", rule="REC-07", tensor=name)
                if b in owner:
                    raise LayoutError(f"block {b} is named by two chunks", rule="REC-07",
                                      tensor=name)
                owner[b] = (t, s_id, c)
                stored += e.payload_length
            crcs = s['chunk_crc32c']
            streams.append(StreamInfo(sd, tuple(s['stream_shape']), sn, ce, chain, chunk_blocks,
                                      list(crcs) if crcs is not None else None))
        kind.check(r, name)
        error = r['error']
        return TensorInfo(
            index=t, name=name, dtype=dtype, shape=tuple(r['shape']), elements=n,
            record_kind=r['record_kind'], kind_name=kind.name, sha256=r['sha256'],
            lossy=bool(flags & L.FLAG_LOSSY),
            error=dict(error) if error is not None else None, params=r['params'],
            streams=streams, stored_bytes=stored, record=r,
            chunk_crcs=bool(flags & L.FLAG_HAS_CHUNK_CRC32C))

    # -- reading tensors -------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self.tensors)

    def metadata(self) -> dict:
        return {k: v for k, (_, v) in self._metadata.items()}

    def metadata_typed(self) -> dict:
        return dict(self._metadata)

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.path}") from None

    def block_payload(self, b: int, expect: tuple[int, int, int] | None) -> memoryview:
        """Check block b (LAY-05, REC-08, BLK-01, LAY-03) and return a view of its payload."""
        e, data = self.blocks[b], self.data
        h = _BLOCK_HEADER_C.parse(bytes(data[e.offset:e.offset + 24]))
        if h.block_type != e.block_type or h.payload_length != e.payload_length:
            raise LayoutError("block header disagrees with the block table", rule="LAY-05",
                              block=b)
        if h.block_flags:
            raise MalformedRecord("block_flags is not zero", rule="RSV-01", block=b)
        if expect is not None and (h.tensor_id, h.stream_id, h.chunk_id) != expect:
            raise LayoutError(f"block carries ids {(h.tensor_id, h.stream_id, h.chunk_id)}, the "
                              f"index expects {expect}", rule="REC-08", block=b)
        end = e.offset + 24 + e.payload_length
        trailer = int.from_bytes(data[end:end + 4], "little")
        if crc32c.crc32c(data[e.offset:end]) != trailer:
            raise ChecksumMismatch("block CRC32C mismatch", rule="BLK-01", block=b)
        if trailer != e.block_crc32c:
            raise ChecksumMismatch("block CRC32C differs from the block table's", rule="LAY-05",
                                   block=b)
        pad_end = L.align_up(end + 4, self.alignment)
        if any(data[end + 4:pad_end]):
            raise LayoutError("padding after the block is not zero", rule="LAY-03", block=b)
        return data[e.offset + 24:end]

    def sha256_wanted(self, info: TensorInfo, override: bool | None = None) -> bool:
        """REC-09: check the SHA-256 when asked to, or by default unless the record is `plain`
        with chunk CRCs (whose checks, REC-11, then cover every byte of the tensor)."""
        v = self.verify_sha256 if override is None else override
        if v is None:
            return not (info.chunk_crcs and info.record_kind == 1)
        return bool(v)

    def _decode_chunk(self, args) -> None:
        b, expect, chain, dtype, out, crc = args
        payload = self.block_payload(b, expect)
        try:
            chain.decode_chunk(payload, dtype, out)
        except FormatError as e:
            if e.block is None:  # codecs know their bytes, not where they came from
                e.block = b
            raise
        if crc is not None and crc32c.crc32c(out) != crc:
            raise DigestMismatch(f"CRC32C of the decoded chunk {expect[2]} disagrees with its "
                                 "record", rule="REC-11", block=b)

    def _pool_map(self, fn, jobs) -> None:
        if self._threads <= 1 or len(jobs) <= 1:
            for j in jobs:
                fn(j)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._threads)
        for _ in self._pool.map(fn, jobs):
            pass

    def decode_stream(self, info: TensorInfo, s_id: int, out: np.ndarray | None = None
                      ) -> np.ndarray:
        s = info.streams[s_id]
        size = s.dtype.itemsize
        if out is None:
            out = np.empty(s.elements * size, dtype=np.uint8)
        ce = s.chunk_elements
        jobs = []
        for c, b in enumerate(s.chunk_blocks):
            lo, hi = c * ce * size, min((c + 1) * ce, s.elements) * size
            jobs.append((b, (info.index, s_id, c), s.chain, s.dtype, out[lo:hi],
                         s.chunk_crc32c[c] if s.chunk_crc32c is not None else None))
        try:
            self._pool_map(self._decode_chunk, jobs)
        except FormatError as e:
            e.tensor = info.name
            raise
        return out

    def read_bytes(self, name: str, *, verify_sha256: bool | None = None, **options
                   ) -> np.ndarray:
        """The tensor's decoded bytes (§7.3) as a new, writable 1-D uint8 array. `options` go to
        the record kind (e.g. a band prefix); the SHA-256 is checked only on a full decode."""
        info = self.info(name)
        kind = record_class(info.record_kind)
        out = np.empty(info.nbytes, dtype=np.uint8)
        streams = {}
        for s_id in kind.streams_needed(info.record, **options):
            direct = kind.direct_stream == s_id
            streams[s_id] = self.decode_stream(info, s_id, out if direct else None)
        kind.assemble(info.record, streams, out, DecodeContext(self), **options)
        self._release([b for s in info.streams for b in s.chunk_blocks])
        check = self.sha256_wanted(info, verify_sha256)
        if check and not options and info.sha256 is not None \
                and hashlib.sha256(out).digest() != info.sha256:
            raise DigestMismatch("SHA-256 of the decoded tensor disagrees with its record",
                                 rule="REC-09", tensor=name)
        return out

    def read_all(self, names=None) -> dict[str, np.ndarray]:
        """read_bytes of many tensors at once (default: all, in file order), with the work spread
        over the thread pool: every chunk of every plain tensor is one job, then every SHA-256 is
        one job (hashlib and the codecs release the GIL). A model of many small tensors keeps
        all threads busy this way, where read_bytes can only split one tensor's chunks. Errors are
        the ones read_bytes would raise for the first failing tensor in `names` order, except that
        a decoding error of any tensor comes before any digest mismatch."""
        from .records import Plain
        names = list(self.tensors) if names is None else list(names)
        infos = [self.info(n) for n in names]
        out: dict[str, np.ndarray] = {}
        jobs, direct = [], []
        for info in infos:
            if record_class(info.record_kind) is not Plain:
                continue
            # one allocation per tensor (freed with it); one shared arena with huge pages was
            # tried and measured slower once memory is fragmented (docs/lossless.md)
            buf = out[info.name] = np.empty(info.nbytes, dtype=np.uint8)
            s, size = info.streams[0], info.streams[0].dtype.itemsize
            ce = s.chunk_elements
            shape = fastpath.native_shape(s.chain, s.dtype)  # once per stream, not per chunk
            base = buf.ctypes.data if shape else 0
            crcs = s.chunk_crc32c
            for c, b in enumerate(s.chunk_blocks):
                lo, hi = c * ce * size, min((c + 1) * ce, s.elements) * size
                crc = crcs[c] if crcs is not None else None
                row = fastpath.job_row_at(self, b, (info.index, 0, c), base + lo, hi - lo, crc) \
                    if shape else None
                jobs.append((info.name, (b, (info.index, 0, c), s.chain, s.dtype, buf[lo:hi], crc),
                             shape, row))
            direct.append(info)

        def decode(job):
            name, args = job[:2]
            try:
                self._decode_chunk(args)
            except FormatError as e:
                e.tensor = name
                return e
            return None

        # chunks the native batch decoder handles go to it, a batch per thread (fastpath.py);
        # the others one job each, the largest first so that the last jobs left are short ones.
        # The error raised is the one of the first chunk in file order, whatever order the
        # threads met them in.
        native: dict[tuple, list[int]] = {}
        python: list[int] = []
        for k, job in enumerate(jobs):
            shape = job[2]
            (native.setdefault(shape, []) if shape else python).append(k)
        tasks = []
        for shape, ks in native.items():
            # several batches per thread, handed out as threads free up: chunks of equal size
            # can differ 1.5x in time (raw against rans lanes), so static halves finish apart
            parts = 1 if self._threads <= 1 else self._threads * fastpath.BATCHES_PER_THREAD
            for part in fastpath.split([jobs[k][1][4].nbytes for k in ks], parts):
                tasks.append((shape, [ks[i] for i in part]))
        tasks.sort(key=lambda t: -sum(jobs[k][1][4].nbytes for k in t[1]))
        python.sort(key=lambda k: -jobs[k][1][4].size)
        tasks += [(None, [k]) for k in python]

        def run(task):
            shape, ks = task
            if shape is None:
                e = decode(jobs[ks[0]])
                return [(ks[0], e)] if e is not None else []
            rows = [jobs[k][3] for k in ks]
            return [(ks[i], e) for i, e in
                    fastpath.run_batch(self, shape, rows, lambda i: decode(jobs[ks[i]]))]
        failed = sorted(f for fs in self._map(run, tasks) for f in fs)
        if failed:
            raise failed[0][1]
        for info in infos:  # other record kinds assemble from several streams and references
            if info.name not in out:
                out[info.name] = self.read_bytes(info.name, verify_sha256=False)  # below
        self._release([b for info in direct for b in info.streams[0].chunk_blocks])
        checked = [i for i in infos if i.sha256 is not None and self.sha256_wanted(i)]
        if checked:

            def digest(info):
                return hashlib.sha256(out[info.name]).digest() == info.sha256
            for info, ok in zip(checked, self._map(digest, checked)):
                if not ok:
                    raise DigestMismatch("SHA-256 of the decoded tensor disagrees with its "
                                         "record", rule="REC-09", tensor=info.name)
        return {n: out[n] for n in names}

    def _map(self, fn, items) -> list:
        if self._threads <= 1 or len(items) <= 1:
            return [fn(i) for i in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._threads)
        return list(self._pool.map(fn, items))

    def _release(self, blocks) -> None:
        """Drop the blocks' pages from this process's resident set once decoded (`out` never
        aliases the map). The map is shared and read-only, so the kernel re-reads a page if it
        is touched again; without this, decoding a whole file leaves all of it resident and peak
        memory grows with the file instead of its largest tensor. (Skipping it for small files
        was tried: the same cost then shows in close(), which unmaps the populated pages.)"""
        if self._mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        spans = sorted((self.blocks[b].offset, self.blocks[b].offset + L.BLOCK_OVERHEAD
                        + self.blocks[b].payload_length) for b in blocks)
        merged: list[list[int]] = []
        for lo, hi in spans:  # one call per run of adjacent blocks (a whole file: one call)
            if merged and lo - merged[-1][1] < self.alignment + page:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        for lo, hi in merged:
            start = lo // page * page
            try:
                self._mm.madvise(mmap.MADV_DONTNEED, start, hi - start)
            except (OSError, ValueError):
                return  # advice only

    def read_array(self, name: str, **kw) -> tuple[np.ndarray, D.DType, tuple[int, ...]]:
        info = self.info(name)
        return self.read_bytes(name, **kw), info.dtype, info.shape

    # -- verify: every block and every tensor, collecting all problems ---------------------------
    def verify(self) -> list[dict]:
        problems = []
        for b in range(len(self.blocks)):
            try:
                self.block_payload(b, self._owner.get(b))
                self._release([b])
            except FormatError as e:
                problems.append(dict(block=b, tensor=_tensor_of(self, b), error=e.error_class,
                                     rule=e.rule, message=str(e)))
        bad_blocks = {p["block"] for p in problems}
        for name, info in self.tensors.items():
            if any(b in bad_blocks for s in info.streams for b in s.chunk_blocks):
                continue
            try:
                self.read_bytes(name, verify_sha256=True)
            except FormatError as e:
                problems.append(dict(block=e.block, tensor=name, error=e.error_class,
                                     rule=e.rule, message=str(e)))
        return problems

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        owned = getattr(self, "owned_resolver", None)
        if owned is not None:  # parent files this reader opened for predicted records
            self.owned_resolver = None
            owned.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        mm = getattr(self, "_mm", None)
        if mm is not None:
            try:
                self.data.release()
                mm.close()
            except BufferError:
                pass  # a view of a payload is still alive somewhere; the GC closes the map
            self._mm = None
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _tensor_of(reader: Reader, block: int) -> str | None:
    owner = reader._owner.get(block)
    if owner is None:
        return None
    for name, info in reader.tensors.items():
        if info.index == owner[0]:
            return name
    return None
