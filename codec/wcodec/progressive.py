"""Progressive loading of band files in torch (spec/records/bands.md, "Progressive decoding").

    sd, refiner = load_progressive("model.wcodec")    # every band record at its first band
    model.load_state_dict(sd, assign=True)            # the model runs on band 1 now
    refiner.refine(2)                                 # the same tensors, refined in place
    refiner.refine()                                  # all bands: the exact original weights

`load_progressive` decodes band 1 of every band record (other records in full) into torch tensors.
The `Refiner` keeps, per band record, the accumulated integer levels A_a of the bands decoded so
far and band 1's scales, so going to k bands reads only the level streams of bands a+1..k (and the
remainder stream for the full decode): band 1's blocks are never read again. The new values are
written into the same tensor storage (`tensor.copy_` through an integer view), so a model that
holds these tensors as its parameters sees the refined weights without reloading.

Every prefix is checked against its stored SHA-256 (BND-07) and the full decode against the
record's (REC-09) unless `verify_sha256=False`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from . import dtypes as D
from . import quant as Q
from .errors import DigestMismatch, UsageError
from .reader import Reader
from .records.bands import BandParams, Bands, accumulate, finish_prefix, scales64

_INT_VIEW = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


@dataclass
class _BandState:
    name: str
    info: object
    params: BandParams
    rows: int
    cols: int
    acc: np.ndarray            # A_a, (rows, cols), the narrowest int type that holds it
    scale_stream: np.ndarray | None
    bands: int                 # a: bands decoded so far


class Refiner:
    """Refines the tensors returned by `load_progressive` in place, band by band."""

    def __init__(self, reader: Reader, tensors: dict, states: dict, verify_sha256: bool):
        self.reader = reader
        self.tensors = tensors
        self._states = states
        self._verify = verify_sha256
        self.blocks_read: list[int] = []     # every block this object decoded, in order

    # -- what is loaded ------------------------------------------------------------------------
    @property
    def max_bands(self) -> int:
        return max((s.params.band_count for s in self._states.values()), default=0)

    def bands(self, name: str) -> int | None:
        """How many bands of `name` are in its tensor now (None: not a band record)."""
        s = self._states.get(name)
        return s.bands if s is not None else None

    # -- refinement ----------------------------------------------------------------------------
    def refine(self, bands: int | None = None, names=None) -> None:
        """Bring every band record (or those in `names`) to `bands` bands (default: all of them,
        i.e. the exact original), reading only the bands not yet decoded. Fewer bands than a
        tensor already holds is a usage error (the refinement is one-way)."""
        if self.reader is None:
            raise UsageError("this refiner is closed")
        for name in (names if names is not None else list(self._states)):
            s = self._states[name]
            k = s.params.band_count if bands is None else min(int(bands), s.params.band_count)
            if k < s.bands:
                raise UsageError(f"{name} already holds {s.bands} bands; cannot go back to {k}")
            if k > s.bands:
                self._refine_one(s, k)

    def _read(self, s: _BandState, sid: int) -> np.ndarray:
        blocks = s.info.streams[sid].chunk_blocks
        self.blocks_read.extend(blocks)
        out = self.reader.decode_stream(s.info, sid)
        self.reader._release(blocks)
        return out

    def _refine_one(self, s: _BandState, k: int) -> None:
        p = s.params
        nq = p.quantized_bands
        upto = min(k, nq)
        if upto > s.bands:
            streams = {j: self._read(s, j) for j in range(s.bands, upto)}
            levels = Bands.decode_levels(s.info.record, streams, range(s.bands, upto), s.name)
            acc = accumulate(levels, p, upto, s.rows, s.cols, s.name,
                             acc=s.acc.astype(np.int64), start=s.bands)
            s.acc = _narrow(acc, p.shift(upto))
        streams = {}
        if p.remainder and k == p.band_count:
            streams[nq] = self._read(s, nq)
        s64 = scales64(p, s.rows, s.cols, s.scale_stream, s.name)
        bits = finish_prefix(s.info.record, p, s.acc.astype(np.int64), s64, k, streams, s.name)
        self._check(s, k, bits)
        _write_into(self.tensors[s.name], bits)
        s.bands = k

    def _check(self, s: _BandState, k: int, bits: np.ndarray) -> None:
        if not self._verify:
            return
        p = s.params
        if k < p.band_count:
            want, rule = (p.digests[k - 1] if p.digests is not None else None), "BND-07"
        else:
            want, rule = s.info.sha256, "REC-09"
        if want is not None and hashlib.sha256(bits.tobytes()).digest() != bytes(want):
            raise DigestMismatch(f"SHA-256 of the {k}-band prefix disagrees with the record",
                                 rule=rule, tensor=s.name)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _narrow(acc: np.ndarray, shift: int) -> np.ndarray:
    """A_a needs at most 25 + c_a bits (spec, Progressive decoding): int32 while that fits."""
    return acc.astype(np.int32) if 25 + shift <= 31 else acc


def _write_into(t, bits: np.ndarray) -> None:
    """Overwrite torch tensor t's elements with these bit patterns, in place (same storage)."""
    import torch
    iv = getattr(torch, _INT_VIEW[t.element_size()])
    src = torch.from_numpy(bits.view(np.dtype(_INT_VIEW[t.element_size()])).reshape(t.shape))
    t.view(iv).copy_(src)


def load_progressive(path, *, bands: int = 1, verify_sha256: bool = True, limits=None
                     ) -> tuple[dict, Refiner]:
    """Open a wcodec file and decode every band record at its first `bands` bands (others in
    full). Returns (state dict of torch tensors, Refiner); keep the refiner to refine later and
    close it (or use it as a context manager) when done."""
    from .torch_interop import raw_to_tensor
    if int(bands) < 1:
        raise UsageError(f"bands must be >= 1, not {bands}")
    reader = Reader(path, verify_sha256=verify_sha256,
                    **({"limits": limits} if limits is not None else {}))
    try:
        tensors, states = {}, {}
        ref = Refiner(reader, tensors, states, verify_sha256)
        for name in reader.keys():
            info = reader.info(name)
            if info.kind_name != "bands":
                tensors[name] = raw_to_tensor(reader.read_bytes(name), info.dtype, info.shape)
                continue
            p = Bands.params(info.record, name)
            rows, cols = Q.matrix_shape(info.shape)
            st = _BandState(name, info, p, rows, cols, np.zeros((rows, cols), np.int32), None, 0)
            sid = Bands.scale_stream_id(p)
            if sid is not None:
                st.scale_stream = ref._read(st, sid)
            # a zero tensor of the right dtype, filled by the first refinement
            tensors[name] = raw_to_tensor(np.zeros(info.nbytes, np.uint8), info.dtype,
                                          info.shape)
            states[name] = st
            ref._refine_one(st, min(int(bands), p.band_count))
        return tensors, ref
    except BaseException:
        reader.close()
        raise


__all__ = ["load_progressive", "Refiner"]
