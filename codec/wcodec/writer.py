"""Streaming writer (spec/container.md §2-6): blocks are appended as each tensor is encoded, so only
one tensor is in memory at a time; the index and footer go last. Output is atomic (W-WRT-02)."""

from __future__ import annotations

import hashlib
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import crc32c
import numpy as np

from . import layout as L
from . import layout_pack as P
from .chain import Chain
from .codecs import BytesCodec, LanesCodec, PlanesCodec
from .dtypes import DType
from .errors import InputError
from .limits import MAX_ALIGNMENT_LOG2, MAX_CHUNK_ELEMENTS, MAX_NAME_LENGTH, MAX_RANK
from .atomic import AtomicFile
from .metadata import build_entries
from .records import Plain

# 256K elements: per-chunk costs (block framing, lane headers, 16 rans states of 4 bytes per lane,
# the call path) fall well under 0.1 % of the bytes, while statistics still adapt within a tensor
# and a large tensor still splits into chunks that threads decode in parallel (docs/lossless.md)
DEFAULT_CHUNK_ELEMENTS = 1 << 18
DEFAULT_ALIGNMENT_LOG2 = 6
# tensor bytes that save_file and `wcodec encode` let the writer hold in flight (Writer's
# pipeline_bytes): enough to overlap the many small tensors of a model, small against the
# memory bound of tests/test_memory.py
PIPELINE_BYTES = 32 << 20


@dataclass(frozen=True)
class EncodeOptions:
    """Encoder choices; none of them changes how a file decodes."""

    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    level: int = 3             # zstd level of the `lanes` codec
    codec: str = "planes"      # "planes" (planes > lanes) or "raw" (bytes only)
    sha256: bool = True
    chunk_crc32c: bool = True  # REC-11: the decoder's default end-to-end check
    alignment_log2: int = DEFAULT_ALIGNMENT_LOG2
    threads: int | None = None

    def __post_init__(self):
        if not 1 <= self.chunk_elements <= MAX_CHUNK_ELEMENTS:
            raise InputError(f"chunk_elements must be 1..{MAX_CHUNK_ELEMENTS}")
        if not 0 <= self.alignment_log2 <= MAX_ALIGNMENT_LOG2:
            raise InputError(f"alignment_log2 must be 0..{MAX_ALIGNMENT_LOG2}")
        if self.codec not in ("planes", "raw"):
            raise InputError(f"codec must be 'planes' or 'raw', not {self.codec!r}")

    def chain_for(self, dtype: DType) -> Chain:
        if self.codec == "raw":
            return Chain(BytesCodec(), None)
        return Chain(PlanesCodec(), LanesCodec(dtype.itemsize, level=self.level))


def default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# padding up to the alignment (at most 2**MAX_ALIGNMENT_LOG2 - 1 bytes), sliced, never rebuilt
_ZEROS = bytes(1 << MAX_ALIGNMENT_LOG2)


def _chunk_block(args) -> tuple[bytes, bytes, int, int]:
    """Encode one chunk and frame it as a CHUNK block: (header, payload, block crc, CRC32C of the
    chunk's decoded bytes, §8.5). Runs on the pool."""
    chain, dtype, elements, tensor_id, stream_id, chunk_id = args
    payload = chain.encode_chunk(elements, dtype)
    header = P.block_header(L.BLOCK_CHUNK, 0, tensor_id, stream_id, chunk_id, len(payload))
    crc = crc32c.crc32c(payload, crc32c.crc32c(header))
    content = crc32c.crc32c(np.ascontiguousarray(elements).view(np.uint8))
    return header, payload, crc, content


def _sha256(data) -> bytes:
    return hashlib.sha256(data).digest()


def _tensor_job(digest_of, streams) -> tuple[bytes | None, list[list[tuple]]]:
    """All of a small tensor's work in one job: (SHA-256 of `digest_of` or None, the CHUNK
    blocks of each stream). Runs on the pool."""
    sha = hashlib.sha256(digest_of).digest() if digest_of is not None else None
    blocks = []
    for chain, dtype, elements, ce, tensor_id, stream_id in streams:
        blocks.append([_chunk_block((chain, dtype, elements[c * ce:(c + 1) * ce], tensor_id,
                                     stream_id, c)) for c in range(-(-elements.size // ce))])
    return sha, blocks


class Writer:
    """`with Writer(path) as w: w.add(name, dtype, shape, data)`; `data` holds the tensor's bytes
    (any numpy array whose buffer is the little-endian elements in C order). Never modifies it.

    `pipeline_bytes` > 0 lets add() return before a tensor is encoded, with up to that many bytes
    of tensors in flight: their chunks run on the pool while the caller prepares the next tensor,
    which is what keeps all threads busy on a model of many small tensors. The caller then must
    not change a tensor's buffer after passing it (save_file and `wcodec encode` hand over fresh
    or caller-owned tensors); with 0 (the default) add() returns once the tensor is written."""

    def __init__(self, path, *, metadata: dict | None = None, system_metadata: dict | None = None,
                 options: EncodeOptions = EncodeOptions(), progress=None,
                 pipeline_bytes: int = 0):
        self.options = options
        self._pending: deque = deque()  # tensors submitted to the pool, not yet written
        self._inflight = 0
        self._pipeline_bytes = pipeline_bytes
        self.alignment = 1 << options.alignment_log2
        self.metadata_entries = build_entries(metadata or {}, system=system_metadata)
        self.blocks: list[tuple] = []  # (offset, payload_length, block_type, block_crc32c)
        self.records: list[dict] = []
        self._record_bytes: list[bytes] = []  # each record packed as its tensor is written
        self.names: set[str] = set()
        self.progress = progress
        self._pool = ThreadPoolExecutor(max_workers=options.threads or default_threads())
        self._out = AtomicFile(path)
        self._closed = False
        try:
            self._write_header()
        except BaseException:
            self.abort()
            raise

    # -- low level ------------------------------------------------------------------------------
    def _pad(self) -> None:
        pos = self._out.tell()
        gap = L.align_up(pos, self.alignment) - pos
        if gap:
            self._out.write(b"\x00" * gap)

    def _write_header(self) -> None:
        fields = dict(magic=L.MAGIC, version_major=L.VERSION_MAJOR, version_minor=L.VERSION_MINOR,
                      required_features=0, optional_features=0,
                      alignment_log2=self.options.alignment_log2, reserved=bytes(7),
                      header_crc32c=0)
        head = L.FileHeader.build(fields)
        fields["header_crc32c"] = crc32c.crc32c(head[:28])
        self._out.write(L.FileHeader.build(fields))
        self._pad()

    def _frame_blocks(self, blocks, pieces: list, pos: int) -> tuple[list[int], int]:
        """Lay out CHUNK blocks (header, payload, crc, _) from file position `pos` on: their
        bytes go to `pieces` (written later, in one call per tensor), their index entries to
        self.blocks. Returns their block numbers and the position after them."""
        refs = []
        align = self.alignment
        for header, payload, crc, _ in blocks:
            refs.append(len(self.blocks))
            self.blocks.append((pos, len(payload), L.BLOCK_CHUNK, crc))
            pieces += (header, payload, P.BLOCK_TRAILER.pack(crc))
            pos += L.BLOCK_OVERHEAD + len(payload)
            gap = -pos % align
            if gap:
                pieces.append(_ZEROS[:gap])
                pos += gap
        return refs, pos

    # -- tensors --------------------------------------------------------------------------------
    def add(self, name: str, dtype: DType, shape, data: np.ndarray, *, kind=None,
            **kind_options) -> None:
        """Encode one tensor as a record of `kind` (default `plain`); `kind_options` go to the
        kind's encoder."""
        if self._closed:
            raise InputError("writer is closed")
        shape = tuple(int(d) for d in shape)
        self._check_tensor(name, shape)
        count = math.prod(shape)
        raw = np.asarray(data).reshape(-1).view(np.uint8)
        if raw.size != count * dtype.itemsize:
            raise InputError(f"tensor {name!r}: {raw.size} bytes for {count} × {dtype.name}")
        elements = raw.view(dtype.uint)
        elements.flags.writeable = False  # a view: the caller's array is untouched (W-WRT-03)
        kind = kind or Plain
        rec = kind.encode(dtype, shape, elements, self.options, **kind_options)
        digest_of = (raw if rec.decoded is None else rec.decoded) if self.options.sha256 else None
        tensor_id = len(self.records) + len(self._pending)
        if sum(plan.elements.size for plan in rec.streams) <= self.options.chunk_elements:
            # a small tensor (most of a model's) is one job: its digest and its chunks
            job = self._pool.submit(_tensor_job, digest_of, [
                (plan.chain, plan.dtype, plan.elements, plan.chunk_elements, tensor_id, stream_id)
                for stream_id, plan in enumerate(rec.streams)])
            futures, work = [job], job
        else:
            # a large one: a job per chunk, so that threads share it, and one for the digest
            sha = self._pool.submit(_sha256, digest_of) if digest_of is not None else None
            chunks = [self._submit_stream(tensor_id, stream_id, plan, plan.chain)
                      for stream_id, plan in enumerate(rec.streams)]
            futures = ([sha] if sha else []) + [f for fs in chunks for f in fs]  # submit order
            work = (sha, chunks)
        self._pending.append((name, shape, dtype, kind, rec, tensor_id, futures, work, raw.size))
        self._inflight += raw.size
        self.names.add(name)
        self._drain(self._pipeline_bytes if self._pipeline_bytes > 0 else -1)

    def _submit_stream(self, tensor_id: int, stream_id: int, plan, chain) -> list:
        n, ce = plan.elements.size, plan.chunk_elements
        el = plan.elements
        return [self._pool.submit(_chunk_block, (chain, plan.dtype, el[c * ce:(c + 1) * ce],
                                                 tensor_id, stream_id, c))
                for c in range(-(-n // ce))]

    def _drain(self, limit: int) -> None:
        """Write pending tensors in order: every one while more than `limit` bytes are in
        flight, then those whose jobs are all done."""
        while self._pending:
            head = self._pending[0]
            # newest first: a tensor's last job is the one most likely still running
            if self._inflight <= limit and not all(f.done() for f in reversed(head[6])):
                return
            self._pending.popleft()
            self._inflight -= head[8]
            self._write_record(*head[:8])

    def _write_record(self, name, shape, dtype, kind, rec, tensor_id, futures, work) -> None:
        # one wait for all the tensor's jobs rather than one wake-up per chunk: each wake-up
        # makes this thread take the GIL from the encoder threads and give it back
        wait(futures)
        if isinstance(work, tuple):
            sha, chunks = work
            sha = sha.result() if sha else None
            blocks = [[f.result() for f in fs] for fs in chunks]
        else:
            sha, blocks = work.result()
        pieces: list = []
        done: list[int] = []  # bytes of input per chunk, for progress
        pos = self._out.tell()
        streams = []
        for stream_id, (plan, bs) in enumerate(zip(rec.streams, blocks)):
            stream, pos = self._write_stream(tensor_id, stream_id, plan, bs, pieces, pos, done)
            streams.append(stream)
        self._out.writev(pieces)
        if self.progress:
            for n in done:
                self.progress(n)
        flags = (L.FLAG_HAS_SHA256 if sha else 0) | (L.FLAG_LOSSY if rec.lossy else 0) \
            | (L.FLAG_HAS_CHUNK_CRC32C if self.options.chunk_crc32c else 0)
        name_bytes = name.encode("utf-8")
        record = dict(
            name_length=len(name_bytes), name=name_bytes, dtype=dtype.code,
            record_kind=kind.kind_id, record_flags=flags, rank=len(shape), shape=list(shape),
            sha256=sha, error=rec.error,
            params_length=len(rec.params), params=rec.params, stream_count=len(streams),
            streams=streams)
        self.records.append(record)
        # packed now, while the pool still works, rather than in close() after the last chunk
        self._record_bytes.append(P.tensor_record(record))

    def _write_stream(self, tensor_id: int, stream_id: int, plan, blocks: list, pieces: list,
                      pos: int, done: list) -> tuple[dict, int]:
        n, ce = plan.elements.size, plan.chunk_elements
        count = len(blocks)
        chain = plan.chain
        # "raw where that is smaller": a stream that the chain does not shrink is stored as is
        if not isinstance(chain.array_to_bytes, BytesCodec) and \
                sum(len(b[1]) for b in blocks) >= n * plan.dtype.itemsize:
            chain = Chain(BytesCodec(), None)
            blocks = [f.result() for f in self._submit_stream(tensor_id, stream_id, plan, chain)]
        refs, pos = self._frame_blocks(blocks, pieces, pos)
        if self.progress:
            done += [min(ce, n - c * ce) * plan.dtype.itemsize for c in range(count)]
        specs = chain.to_specs()
        return dict(stream_dtype=plan.dtype.code, stream_rank=len(plan.shape),
                    stream_shape=list(plan.shape), chunk_elements=ce, codec_count=len(specs),
                    codecs=specs, chunk_count=count, chunk_blocks=refs,
                    chunk_crc32c=[b[3] for b in blocks] if self.options.chunk_crc32c else None
                    ), pos

    def _check_tensor(self, name, shape) -> None:
        if not isinstance(name, str):
            raise InputError(f"tensor names are str, not {type(name).__name__}")
        nb = name.encode("utf-8", errors="strict")
        if not 1 <= len(nb) <= MAX_NAME_LENGTH:
            raise InputError(f"tensor name {name[:40]!r}: 1 to {MAX_NAME_LENGTH} UTF-8 bytes")
        if name in self.names:
            raise InputError(f"tensor name {name!r} given twice")
        if len(shape) > MAX_RANK or any(d < 0 for d in shape):
            raise InputError(f"tensor {name!r}: shape {shape} (rank ≤ {MAX_RANK}, dims ≥ 0)")

    # -- finish ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        try:
            self._drain(-1)
            payload = self._index_payload()
            header = L.BlockHeader.build(dict(
                block_type=L.BLOCK_INDEX, block_flags=0, tensor_id=L.NONE_ID,
                stream_id=L.NONE_ID, chunk_id=L.NONE_ID, payload_length=len(payload)))
            crc = crc32c.crc32c(payload, crc32c.crc32c(header))
            index_offset = self._out.tell()
            self._out.write(header)
            self._out.write(payload)
            self._out.write(L.BlockTrailer.build(dict(block_crc32c=crc)))
            footer = dict(index_offset=index_offset, index_block_size=len(payload) + 28,
                          footer_magic=L.FOOTER_MAGIC, reserved=0, footer_crc32c=0)
            fb = L.Footer.build(footer)
            footer["footer_crc32c"] = crc32c.crc32c(fb[:24])
            self._out.write(L.Footer.build(footer))
            self._out.commit()
        except BaseException:
            self.abort()
            raise
        finally:
            self._closed = True
            self._pool.shutdown()

    def _index_payload(self) -> bytes:
        parts = [L.IndexHeader.build(dict(tensor_count=len(self.records),
                                          block_count=len(self.blocks),
                                          metadata_count=len(self.metadata_entries), reserved=0))]
        parts += [P.BLOCK_ENTRY.pack(off, length, btype, 0, crc)
                  for off, length, btype, crc in self.blocks]
        parts += [L.MetadataEntry.build(m) for m in self.metadata_entries]
        parts += self._record_bytes
        return b"".join(parts)

    def abort(self) -> None:
        self._closed = True
        self._out.abort()
        self._pool.shutdown(cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
