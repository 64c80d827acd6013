"""safetensors in and out. Reading goes through safetensors' own parser; writing is streamed (one
tensor in memory at a time) in the layout safetensors itself writes, so that a file encoded from
safetensors and decoded again comes back byte for byte when tensors keep their order."""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from . import dtypes as D
from .atomic import AtomicFile
from .errors import InputError

ST_NAME = {v: k for k, v in D.SAFETENSORS_NAMES.items()}
MAX_HEADER = 100_000_000  # safetensors' own bound on its JSON header


def read_header(path) -> tuple[list[str], dict]:
    """Tensor names in data-offset order, and the `__metadata__` map."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise InputError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or n > os.fstat(f.fileno()).st_size - 8:
            raise InputError(f"{path}: safetensors header length {n} is not plausible")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: safetensors header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    try:
        names = sorted(header, key=lambda k: (header[k]["data_offsets"][0], k))
    except (TypeError, KeyError, IndexError):
        raise InputError(f"{path}: safetensors header entries lack data_offsets") from None
    return names, meta


def read_entries(path) -> tuple[int, dict]:
    """(offset of the data section, {name: (wcodec dtype name, shape, begin, end)}) from a header
    that safetensors has already validated."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    entries = {}
    for name, e in header.items():
        try:
            dtype = D.SAFETENSORS_NAMES[e["dtype"]]
        except KeyError:
            raise InputError(f"{path}: tensor {name!r} has dtype {e['dtype']!r}, which wcodec "
                             "cannot store") from None
        begin, end = e["data_offsets"]
        entries[name] = (dtype, tuple(e["shape"]), begin, end)
    return 8 + n, entries


def write_safetensors(path, entries, metadata: dict | None, produce) -> None:
    """`entries`: (name, DType, shape) in file order; `produce(name)` returns the tensor's bytes."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape in entries:
        n = int(np.prod(shape, dtype=object)) if shape else 1
        size = n * dtype.itemsize
        header[name] = {"dtype": ST_NAME[dtype.name], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with AtomicFile(path) as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for name, dtype, shape in entries:
            data = produce(name)
            out.write(memoryview(data).cast("B") if data.size else b"")
