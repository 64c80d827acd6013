"""Batches of CHUNK blocks decoded by one native call each (codecs/_crans.c `decode_chunks`).

Why: a chunk decoded through Python costs a block-header parse, a CRC32C call, a codec call per
stage and a planes pass, all holding the GIL between the kernels; on MiniLM that was ~20 % of a
decode and kept two threads at 1.1-1.4x one. Here the chunks of plain streams whose chain is
`planes > lanes(itemsize)` (what the encoder writes) are checked and decoded in C without the
GIL, a batch per thread.

The native path only ever accepts. When it stops at a chunk (any failed check, a zstd lane, a
shape it does not handle), that chunk is decoded by the Python path, which raises the spec's
error with its rule id or decodes it; the batch then goes on natively. So errors, their order
and their wording are the Python path's by construction.
"""

from __future__ import annotations

import threading

import numpy as np

from . import layout as L
from .codecs import LanesCodec, PlanesCodec, rans

# columns of a job row (the J_* enum of _crans.c)
_COLS = 12
# batches per worker thread in Reader.read_all: enough for the pool to even out chunks that
# decode at different speeds, few enough that the Python per call stays negligible
BATCHES_PER_THREAD = 8


def native_shape(chain, dtype) -> tuple[int, int, bool] | None:
    """(lanes, itemsize, rotate) when `decode_chunks` handles chunks of this chain, else None."""
    native = rans.native
    if native is None or not hasattr(native, "decode_chunks"):
        return None
    a, b = chain.array_to_bytes, chain.bytes_to_bytes
    size = dtype.itemsize
    if not isinstance(a, PlanesCodec) or not isinstance(b, LanesCodec) or size not in (1, 2, 4) \
            or b.lane_count != size:
        return None
    return size, size, bool(dtype.is_float and size > 1)


def job_row(reader, b: int, ids: tuple[int, int, int], out: np.ndarray, crc: int | None
            ) -> list[int]:
    """The int64 row of block b decoding into `out` (a contiguous uint8 view, kept alive by the
    caller while the batch runs), checked against the chunk CRC `crc` (REC-11) if not None."""
    return job_row_at(reader, b, ids, out.ctypes.data, out.nbytes, crc)


def job_row_at(reader, b: int, ids: tuple[int, int, int], addr: int, nbytes: int,
               crc: int | None) -> list[int]:
    """job_row with the output given as an address and a length (the caller computes them from
    one base address per tensor: numpy's .ctypes costs microseconds per view)."""
    e = reader.blocks[b]
    end = e.offset + 24 + e.payload_length
    pad_end = L.align_up(end + 4, reader.alignment)
    return [e.offset, e.payload_length, e.block_type, e.block_crc32c, ids[0], ids[1], ids[2],
            addr, nbytes, pad_end, crc is not None, crc or 0]


def run_batch(reader, shape, rows: list[list[int]], fallback) -> list[tuple[int, object]]:
    """Decode rows natively; `fallback(k)` decodes row k through the Python path and returns an
    error or None. Returns [(k, error)] for the rows whose fallback failed."""
    lanes, size, rotate = shape
    jobs = np.asarray(rows, dtype=np.int64).reshape(-1, _COLS)
    max_out = int(jobs[:, 8].max()) if len(jobs) else 0
    scratch, tables = _buffers(max_out if size > 1 else 0)
    errors, k = [], 0
    while k < len(jobs):
        done = rans.native.decode_chunks(reader.data, jobs[k:], lanes, size, rotate, scratch,
                                         tables)
        k += done
        if k < len(jobs):
            err = fallback(k)
            if err is not None:
                errors.append((k, err))
            k += 1
    return errors


_local = threading.local()


def _buffers(scratch_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's scratch (decoded lanes before the planes interleave) and rANS table space,
    kept between batches: allocated per call they cost a page fault per 4 KiB every time."""
    s = getattr(_local, "scratch", None)
    if s is None or s.size < scratch_bytes:
        s = _local.scratch = np.empty(max(scratch_bytes, 1), np.uint8)
    t = getattr(_local, "tables", None)
    if t is None:
        t = _local.tables = np.empty(1 << 15, np.uint64)
    return s, t


def split(sizes: list[int], parts: int) -> list[list[int]]:
    """Indices of `sizes` in `parts` groups of about equal sum (largest first, each to the
    lightest group), each group in ascending index order."""
    groups: list[list[int]] = [[] for _ in range(max(1, parts))]
    load = [0] * len(groups)
    for k in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
        g = load.index(min(load))
        groups[g].append(k)
        load[g] += sizes[k]
    return [sorted(g) for g in groups if g]


# -- encoder side -----------------------------------------------------------------------------------
def encode_chunk(chain, elements: np.ndarray, dtype) -> bytes | None:
    """The CHUNK payload of `elements` through a `planes > lanes(itemsize)` chain in one native
    call (_crans.c encode_chunk: the decisions and bytes of lanes.py, without the GIL), or None
    when the chain is another, the C kernels are missing, or the chunk needs lanes.py (lanes of
    16 KiB or less, lanes whose sample has repeats for zstd)."""
    native = rans.native
    if native is None or not hasattr(native, "encode_chunk"):
        return None
    shape = native_shape(chain, dtype)
    if shape is None:
        return None
    _, size, rotate = shape
    k = elements.shape[0]
    if k <= 4 * 4096:
        return None
    out, scratch = _encode_buffers(size, k)
    zcost = np.empty(size, np.int64)
    elements = np.ascontiguousarray(elements)
    n = native.encode_chunk(elements, size, rotate, out, scratch, zcost)
    if n < 0:
        return None
    for j in np.flatnonzero(zcost >= 0):  # lanes.py's zstd sample trial (LanesCodec._zstd_may_win)
        lane = elements.view(np.uint8) if size == 1 else scratch[j * k:(j + 1) * k]
        if LanesCodec.zstd_sample_wins(lane, int(zcost[j]), chain.bytes_to_bytes.level):
            return None  # zstd may win this lane: lanes.py decides the whole chunk
    return out[:n].tobytes()


def _encode_buffers(size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's output and scratch space for encode_chunk, kept between chunks."""
    need_out, need_scratch = 5 * size + size * k, size * 2 * k + 3 * k + 8192
    o = getattr(_local, "enc_out", None)
    if o is None or o.size < need_out:
        o = _local.enc_out = np.empty(need_out, np.uint8)
    s = getattr(_local, "enc_scratch", None)
    if s is None or s.size < need_scratch:
        s = _local.enc_scratch = np.empty(need_scratch, np.uint8)
    return o, s
