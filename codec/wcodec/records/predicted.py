"""Record kind 4, `predicted`: spec/records/predicted.md.

A tensor decodes as prediction(reference) + residual. The reference is another tensor of the same
file or of a parent file named by the SHA-256 of its whole content; the predictor is identity,
scalar affine or per-channel affine, after an optional stored permutation of rows or columns; the
residual is the integer difference of bit patterns (zigzag), their XOR, or quantized levels.

Decoding is exact: bit patterns are combined with integer arithmetic, and the affine predictor and
the quantized residual use binary64 operations, one at a time (no fused multiply-add), with one
rounding to the tensor's dtype. Reference chains are walked before anything is decoded: a cycle
is MalformedRecord (PRD-08), more than MAX_DEPTH predicted records LimitExceeded (PRD-09), a parent
file that no candidate matches by SHA-256 UnresolvedReference (PRD-10).
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .. import dtypes as D
from ..errors import (CorruptPayload, DigestMismatch, InputError, LimitExceeded, MalformedRecord,
                      UnresolvedReference)
from .base import EncodedRecord, RecordKind, StreamPlan

KIND_ID = 4
MAX_DEPTH = 16
MAX_HINT = 255
MAX_LEVEL = 1 << 28
MAX_REPEAT = 1024
MAGIC = b"\x89WCD\r\n\x1a\n"

SOURCE_FILE, SOURCE_PARENT = 1, 2
PRED_IDENTITY, PRED_SCALAR, PRED_CHANNEL = 0, 1, 2
PERM_NONE, PERM_ROWS, PERM_COLS = 0, 1, 2
RES_SUB, RES_XOR, RES_QUANT = 1, 2, 3
ORDER_NATURAL, ORDER_EXPONENT = 0, 1

SOURCE_NAMES = {SOURCE_FILE: "file", SOURCE_PARENT: "parent"}
PRED_NAMES = {PRED_IDENTITY: "identity", PRED_SCALAR: "scalar", PRED_CHANNEL: "channel"}
PERM_NAMES = {PERM_NONE: "none", PERM_ROWS: "rows", PERM_COLS: "columns"}
RES_NAMES = {RES_SUB: "sub", RES_XOR: "xor", RES_QUANT: "quantized"}
ORDER_NAMES = {ORDER_NATURAL: "natural", ORDER_EXPONENT: "exponent"}

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
# exponent field of the bit pattern: (shift, mask)
EXPONENT_FIELD = {"float64": (52, 0x7FF), "float32": (23, 0xFF), "float16": (10, 0x1F),
                  "bfloat16": (7, 0xFF)}
CANONICAL_NAN = {"float64": 0x7FF8000000000000, "float32": 0x7FC00000, "float16": 0x7E00,
                 "bfloat16": 0x7FC0}

# source u8, predictor u8, permutation u8, residual u8, order u8, reserved u8, repeat u16,
# a f64, b f64, step f32, reserved u32, parent_sha256 bytes[32]
HEAD = struct.Struct("<BBBBBBHddfI32s")
assert HEAD.size == 64


@dataclass(frozen=True)
class PredParams:
    source: int
    predictor: int
    permutation: int
    residual: int
    order: int
    repeat: int
    a: float
    b: float
    step: float
    parent_sha256: bytes
    ref_name: str
    hint: str

    def pack(self) -> bytes:
        name = self.ref_name.encode("utf-8")
        hint = self.hint.encode("utf-8")
        return (HEAD.pack(self.source, self.predictor, self.permutation, self.residual,
                          self.order, 0, self.repeat, self.a, self.b, self.step, 0,
                          self.parent_sha256)
                + struct.pack("<H", len(name)) + name + struct.pack("<H", len(hint)) + hint)

    @classmethod
    def unpack(cls, params: bytes, name: str | None = None) -> "PredParams":
        def bad(msg):
            return MalformedRecord(msg, rule="PRD-01", tensor=name)
        params = bytes(params)
        if len(params) < HEAD.size + 4:
            raise bad(f"predicted params of {len(params)} bytes are shorter than 68")
        (src, pred, perm, res, order, r0, repeat, a, b, step, r1, sha) = \
            HEAD.unpack_from(params)
        if r0 or r1:
            raise MalformedRecord("predicted params reserved fields are not zero",
                                  rule="RSV-01", tensor=name)
        pos = HEAD.size
        (n,) = struct.unpack_from("<H", params, pos)
        pos += 2
        if not 1 <= n <= 1024 or pos + n + 2 > len(params):
            raise bad("ref_name_length out of range or past the params")
        try:
            ref_name = params[pos:pos + n].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRecord("ref_name is not UTF-8", rule="STR-01", tensor=name) from None
        pos += n
        (h,) = struct.unpack_from("<H", params, pos)
        pos += 2
        if h > MAX_HINT or pos + h != len(params):
            raise bad("hint_length out of range, or params do not end after the hint")
        try:
            hint = params[pos:pos + h].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRecord("hint is not UTF-8", rule="STR-01", tensor=name) from None
        if src not in SOURCE_NAMES:
            raise bad(f"source {src} is not 1 or 2")
        if pred not in PRED_NAMES:
            raise bad(f"predictor {pred} is not 0, 1 or 2")
        if perm not in PERM_NAMES:
            raise bad(f"permutation {perm} is not 0, 1 or 2")
        if res not in RES_NAMES:
            raise bad(f"residual {res} is not 1, 2 or 3")
        if order not in ORDER_NAMES:
            raise bad(f"order {order} is not 0 or 1")
        if src == SOURCE_FILE and (any(sha) or h):
            raise bad("a same-file reference has a zero parent_sha256 and no hint")
        if h and ("/" in hint or "\\" in hint or "\x00" in hint or hint in (".", "..")):
            raise bad("the hint is a base name: no '/', '\\', NUL, '.' or '..'")
        zero_a, zero_b = struct.pack("<d", a) == bytes(8), struct.pack("<d", b) == bytes(8)
        if pred == PRED_SCALAR:
            if not (np.isfinite(a) and np.isfinite(b)):
                raise bad("scalar affine a and b must be finite")
            if not 1 <= repeat <= MAX_REPEAT:
                raise bad(f"a scalar affine predictor has repeat 1 to {MAX_REPEAT}, not {repeat}")
        elif not (zero_a and zero_b) or repeat:
            raise bad("a, b and repeat are zero unless the predictor is scalar affine")
        zero_step = struct.pack("<f", step) == bytes(4)
        if res == RES_QUANT:
            if not (np.isfinite(step) and step > 0):
                raise bad("a quantized residual has a finite step > 0")
        elif not zero_step:
            raise bad("step is +0.0 unless the residual is quantized")
        return cls(src, pred, perm, res, order, repeat, a, b, step, sha, ref_name, hint)


# -- exact arithmetic shared by encoder and decoder ---------------------------------------------
def to_float64(bits: np.ndarray, dtype: D.DType) -> np.ndarray:
    """Bit patterns (dtype.uint) to binary64 values, exactly."""
    with np.errstate(invalid="ignore"):  # signalling NaNs arrive quiet; round_T canonicalises
        if dtype.name == "bfloat16":
            return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return bits.view(np.dtype(dtype.numpy_name)).astype(np.float64)


def _f64_to_bf16_bits(y: np.ndarray) -> np.ndarray:
    """binary64 to bfloat16 with one rounding to nearest even (round to odd into binary32 first,
    which is exact for a later rounding to fewer bits)."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = y.astype(np.float32)
    bits = f.view(np.uint32).copy()
    back = f.astype(np.float64)
    finite = np.isfinite(y)
    away = finite & (np.abs(back) > np.abs(y))
    bits[away] -= 1
    bits[finite & (back != y)] |= 1
    huge = finite & ~np.isfinite(f)
    bits[huge] = (bits[huge] & 0x80000000) | 0x7F7FFFFF
    lsb = (bits >> 16) & 1
    return ((bits + 0x7FFF + lsb) >> 16).astype(np.uint16)


def round_to_dtype(y: np.ndarray, dtype: D.DType) -> np.ndarray:
    """binary64 to the dtype's bit patterns: one rounding to nearest, ties to even, overflow to
    ±infinity; every NaN becomes the dtype's canonical quiet NaN (PRD-11)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype.name == "bfloat16":
            out = _f64_to_bf16_bits(y)
        else:
            out = y.astype(np.dtype(dtype.numpy_name)).view(dtype.uint).copy()
    nan = np.isnan(y)
    if nan.any():
        out[nan] = CANONICAL_NAN[dtype.name]
    return out


def zigzag(d: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned B-bit difference (two's complement) to its zigzag code."""
    s = d.view(np.dtype(f"<i{bits // 8}"))
    return ((d << d.dtype.type(1)) ^ (s >> (bits - 1)).view(d.dtype))


def unzigzag(z: np.ndarray) -> np.ndarray:
    one = z.dtype.type(1)
    return (z >> one) ^ (np.zeros_like(z) - (z & one))


def exponent_order(p: np.ndarray, dtype: D.DType) -> np.ndarray:
    """σ: element indices sorted by the exponent field of the prediction, ties by index."""
    shift, mask = EXPONENT_FIELD[dtype.name]
    key = ((p >> p.dtype.type(shift)) & p.dtype.type(mask))
    key = key.astype(np.uint16 if mask > 0xFF else np.uint8)
    return np.argsort(key, kind="stable")


def permute(ref: np.ndarray, shape, axis_code: int, perm: np.ndarray) -> np.ndarray:
    if axis_code == PERM_NONE:
        return ref
    a = ref.reshape(shape)
    if axis_code == PERM_ROWS:
        return np.ascontiguousarray(a[perm]).reshape(-1)
    return np.ascontiguousarray(a[..., perm]).reshape(-1)


def predict(ref: np.ndarray, dtype: D.DType, shape, pp: PredParams, perm=None,
            coeffs=None) -> np.ndarray:
    """The prediction p as bit patterns (dtype.uint), from the decoded reference's bit patterns."""
    p = permute(ref, shape, pp.permutation, perm)
    if pp.predictor == PRED_IDENTITY:
        return p if p is not ref else p.copy()
    if pp.predictor == PRED_SCALAR:
        return scalar_affine(p, dtype, pp.a, pp.b, pp.repeat)
    x = to_float64(p, dtype)
    per_row = x.size // max(shape[0], 1)
    a = np.repeat(coeffs[0].astype(np.float64), per_row)
    b = np.repeat(coeffs[1].astype(np.float64), per_row)
    with np.errstate(over="ignore", invalid="ignore"):
        y = np.multiply(a, x)
        # b is added only where it is not zero, so that −0.0 × a keeps its sign (PRD-11)
        y = np.where(b != 0, np.add(y, b), y)
    return round_to_dtype(y, dtype)


def scalar_affine(p: np.ndarray, dtype: D.DType, a: float, b: float, repeat: int) -> np.ndarray:
    """`repeat` times: p = round_T(fl64(fl64(a × p) + b)) (PRD-11). AdamW's decoupled weight
    decay multiplies by (1 − lr·wd) once per step, so N steps are `repeat` = N with a = that
    factor in the tensor's dtype."""
    a64, b64 = np.float64(a), np.float64(b)
    if dtype.name == "float32" and b64 == 0 and np.float64(np.float32(a64)) == a64:
        # the same result in binary32: a × x of two binary32 values is exact in binary64, so
        # rounding it once to binary32 is what an IEEE binary32 multiplication does
        y = p.view(np.float32).copy()
        a32 = np.float32(a64)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            for _ in range(repeat):
                np.multiply(y, a32, out=y)
        out = y.view(np.uint32)
        nan = np.isnan(y)
        if nan.any():
            out[nan] = CANONICAL_NAN["float32"]
        return out
    out = p
    for _ in range(repeat):
        x = to_float64(out, dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.multiply(a64, x)
            if b64 != 0:  # skipped for ±0.0, so that −0.0 × a keeps its sign (PRD-11)
                y = np.add(y, b64)
        out = round_to_dtype(y, dtype)
    return out


def check_permutation(perm: np.ndarray, n: int, name) -> np.ndarray:
    perm = perm.astype(np.int64)
    if perm.size != n or (n and (perm.min() < 0 or perm.max() >= n)) or \
            np.bincount(perm, minlength=n).max(initial=1) != 1:
        raise CorruptPayload("the permutation stream is not a permutation of 0..n-1",
                             rule="PRD-05", tensor=name)
    return perm


def combine(p: np.ndarray, z: np.ndarray, dtype: D.DType, pp: PredParams, name=None
            ) -> np.ndarray:
    """Tensor-order residual z with prediction p -> decoded bit patterns (dtype.uint)."""
    if pp.residual == RES_SUB:
        return p + unzigzag(z)  # wraps mod 2^B
    if pp.residual == RES_XOR:
        return p ^ z
    q = unzigzag(z.astype(np.uint64)).view(np.int64)
    if q.size and int(np.abs(q).max()) > MAX_LEVEL:
        raise CorruptPayload("a quantized level exceeds 2^28 in magnitude", rule="PRD-12",
                             tensor=name)
    x = to_float64(p, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        # q × step is exact in binary64 (|q| ≤ 2^28, a 24-bit step): one rounding in the add
        y = np.add(x, np.multiply(q.astype(np.float64), np.float64(np.float32(pp.step))))
    # a zero level leaves the prediction's bit pattern as it is (NaN payloads, −0.0)
    return np.where(q == 0, p, round_to_dtype(y, dtype))


def dither_offsets(seed: int, n: int) -> np.ndarray:
    """The encoder's per-element rounding offsets in [0, 1) for `rounding="dither"`."""
    return np.random.default_rng(seed).random(n)


def quantize_levels(x: np.ndarray, xp: np.ndarray, step: float,
                    offsets: np.ndarray | None = None) -> np.ndarray:
    """Encoder: the levels of a quantized residual (binary64 values x, predictions xp):
    rint((x − xp)/step), or ⌊(x − xp)/step + offset⌋ with per-element offsets; non-finite
    residuals give 0, levels are clipped to ±2^28 (PRD-12)."""
    s = np.float64(np.float32(step))
    with np.errstate(over="ignore", invalid="ignore"):
        r = (x - xp) / s
        q = np.rint(r) if offsets is None else np.floor(r + offsets)
    q[~np.isfinite(q)] = 0
    return np.clip(q, -MAX_LEVEL, MAX_LEVEL).astype(np.int64)


# -- reference resolution ---------------------------------------------------------------------
def file_sha256(path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                return h.digest()
            h.update(b)


def _has_magic(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == MAGIC
    except OSError:
        return False


class ParentResolver:
    """Finds parent files by the SHA-256 of their whole content (PRD-10) among candidates: the
    files and folders in `search` (folders: every regular file that starts with the wcodec magic;
    a file named like the record's hint is tried first, so the usual case hashes one file). Readers
    of parents are opened once and shared; decoded reference tensors are cached (LRU, bounded)."""

    def __init__(self, search=(), *, cache_bytes: int = 256 << 20, reader_kw=None):
        self.search = [os.fspath(s) for s in search]
        self.cache_bytes = cache_bytes
        self.reader_kw = dict(reader_kw or {})
        self._readers: dict[bytes, object] = {}
        self._hashes: dict[tuple, bytes] = {}
        self._cache: OrderedDict = OrderedDict()
        self._cached = 0
        self._lock = threading.RLock()

    def candidates(self) -> list[str]:
        out = []
        for s in self.search:
            if os.path.isdir(s):
                for n in sorted(os.listdir(s)):
                    p = os.path.join(s, n)
                    if os.path.isfile(p) and _has_magic(p):
                        out.append(p)
            elif os.path.isfile(s):
                out.append(s)
        return out

    def sha_of(self, path: str) -> bytes:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
        got = self._hashes.get(key)
        if got is None:
            got = self._hashes[key] = file_sha256(path)
        return got

    def find(self, sha: bytes, hint: str = "", tensor=None) -> str:
        changed = None
        cands = self.candidates()
        if hint:
            first = [c for c in cands if os.path.basename(c) == hint]
            cands = first + [c for c in cands if os.path.basename(c) != hint]
        for c in cands:
            try:
                if self.sha_of(c) == sha:
                    return c
            except OSError:
                continue
            if hint and os.path.basename(c) == hint and changed is None:
                changed = c
        if changed is not None:
            raise UnresolvedReference(
                f"parent file {changed!r} has changed: its SHA-256 is {self.sha_of(changed).hex()}"
                f", the record names {sha.hex()}, and no other candidate matches",
                rule="PRD-10", tensor=tensor)
        where = ", ".join(self.search) or "no search path"
        raise UnresolvedReference(
            f"parent file with SHA-256 {sha.hex()}" + (f" (was {hint!r})" if hint else "")
            + f" not found in {where}: it is missing or was changed", rule="PRD-10",
            tensor=tensor)

    def open(self, sha: bytes, hint: str = "", tensor=None):
        with self._lock:
            r = self._readers.get(sha)
            if r is None:
                from ..reader import Reader
                path = self.find(sha, hint, tensor)
                r = Reader(path, **self.reader_kw)
                r.parent_resolver = self
                self._readers[sha] = r
            return r

    def cache_get(self, key):
        with self._lock:
            v = self._cache.get(key)
            if v is not None:
                self._cache.move_to_end(key)
            return v

    def cache_put(self, key, value: np.ndarray) -> None:
        if value.nbytes > self.cache_bytes:
            return
        with self._lock:
            if key in self._cache:
                return
            self._cache[key] = value
            self._cached += value.nbytes
            while self._cached > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.nbytes

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()
        self._cache.clear()
        self._cached = 0


def resolver_for(reader) -> ParentResolver:
    """The reader's resolver; by default the folder of the file being read is the search path."""
    r = getattr(reader, "parent_resolver", None)
    if r is None:
        r = ParentResolver([os.path.dirname(os.path.abspath(reader.path))])
        reader.parent_resolver = r
        reader.owned_resolver = r  # Reader.close closes the parent files it opened
    return r


def reference_chain(reader, name: str) -> list[tuple[object, str]]:
    """[(reader, name), ...] from `name` down to the first record that is not predicted, checked
    for cycles (PRD-08), depth (PRD-09), existence (PRD-06) and dtype/shape (PRD-07) before
    anything is decoded. Parent files are located and opened on the way (PRD-10)."""
    resolver = resolver_for(reader)
    chain = [(reader, name)]
    seen = {(id(reader), name)}
    info = reader.info(name)
    while info.record_kind == KIND_ID:
        pp = PredParams.unpack(info.params, chain[-1][1])
        # the order of the checks is PRD-09, PRD-10, PRD-08, PRD-06, PRD-07 at every step
        if len(chain) > MAX_DEPTH:
            raise LimitExceeded(f"reference chain longer than {MAX_DEPTH} predicted records",
                                rule="PRD-09", tensor=name)
        if pp.source == SOURCE_PARENT:
            nxt_reader = resolver.open(pp.parent_sha256, pp.hint, tensor=chain[-1][1])
        else:
            nxt_reader = chain[-1][0]
        key = (id(nxt_reader), pp.ref_name)
        if key in seen:
            raise MalformedRecord(f"reference cycle through {pp.ref_name!r}", rule="PRD-08",
                                  tensor=name)
        if pp.ref_name not in nxt_reader.tensors:
            where = "the parent file" if pp.source == SOURCE_PARENT else "this file"
            raise MalformedRecord(f"reference {pp.ref_name!r} is not a tensor of {where}",
                                  rule="PRD-06", tensor=chain[-1][1])
        ref = nxt_reader.info(pp.ref_name)
        if ref.dtype != info.dtype or tuple(ref.shape) != tuple(info.shape):
            raise MalformedRecord(f"reference {pp.ref_name!r} is {ref.dtype.name} "
                                  f"{list(ref.shape)}, the record {info.dtype.name} "
                                  f"{list(info.shape)}", rule="PRD-07", tensor=chain[-1][1])
        seen.add(key)
        chain.append((nxt_reader, pp.ref_name))
        info = ref
    return chain


def _decode_level(reader, name, ref_bits: np.ndarray) -> np.ndarray:
    """Decode one predicted record of `reader` given its reference's bit patterns; checks the
    record's SHA-256 (REC-09) unless the reader skips it."""
    info = reader.info(name)
    streams = {s: reader.decode_stream(info, s) for s in range(len(info.streams))}
    out = np.empty(info.nbytes, dtype=np.uint8)
    _assemble(info.record, info, streams, out, ref_bits, name)
    if reader.sha256_wanted(info) and info.sha256 is not None and \
            hashlib.sha256(out).digest() != info.sha256:
        raise DigestMismatch("SHA-256 of a decoded reference disagrees with its record",
                             rule="REC-09", tensor=name)
    return out


def reference_bytes(reader, name: str) -> np.ndarray:
    """The decoded bytes of the reference of predicted tensor `name` (iteratively, no
    recursion): the chain is checked first, then decoded from its base upwards."""
    resolver = resolver_for(reader)
    chain = reference_chain(reader, name)
    # the deepest level that is cached, or the base (not predicted)
    start = len(chain) - 1
    data = None
    for i in range(1, len(chain)):
        got = resolver.cache_get((id(chain[i][0]), chain[i][1]))
        if got is not None:
            start, data = i, got
            break
    if data is None:
        r, n = chain[start]
        data = r.read_bytes(n)
        resolver.cache_put((id(r), n), data)
    for i in range(start - 1, 0, -1):
        r, n = chain[i]
        data = _decode_level(r, n, data)
        resolver.cache_put((id(r), n), data)
    return data


# -- the record kind --------------------------------------------------------------------------
def _stream_layout(pp: PredParams, dtype: D.DType, shape) -> list[tuple]:
    """[(allowed stream dtypes, shape)] for the record's streams, in order (PRD-02)."""
    n = 1
    for d in shape:
        n *= int(d)
    if pp.residual == RES_QUANT:
        res = ("uint8", "uint16", "uint32")
    else:
        res = ({1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}[dtype.itemsize],)
    out = [(res, (n,))]
    if pp.permutation != PERM_NONE:
        d = shape[0] if pp.permutation == PERM_ROWS else shape[-1]
        out.append((("uint16", "uint32"), (int(d),)))
    if pp.predictor == PRED_CHANNEL:
        out.append((("float32",), (2, int(shape[0]))))
    return out


def _assemble(record, info_dtype_shape, streams, out, ref_bits, name):
    pp = PredParams.unpack(record.params, name)
    dtype = D.by_code(record.dtype)
    shape = tuple(int(d) for d in record.shape)
    idx = 1
    perm = coeffs = None
    if pp.permutation != PERM_NONE:
        d = shape[0] if pp.permutation == PERM_ROWS else shape[-1]
        sd = D.by_code(record.streams[idx].stream_dtype)
        perm = check_permutation(streams[idx].view(sd.uint), d, name)
        idx += 1
    if pp.predictor == PRED_CHANNEL:
        coeffs = streams[idx].view("<f4").reshape(2, shape[0])
        if not np.all(np.isfinite(coeffs)):
            raise CorruptPayload("a channel affine coefficient is not finite", rule="PRD-05",
                                 tensor=name)
    ref = np.asarray(ref_bits).view(dtype.uint)
    p = predict(ref, dtype, shape, pp, perm, coeffs)
    sd = D.by_code(record.streams[0].stream_dtype)
    z = streams[0].view(sd.uint)
    if pp.residual != RES_QUANT:
        z = z.astype(dtype.uint, copy=False)
    if pp.order == ORDER_EXPONENT:
        sigma = exponent_order(p, dtype)
        zt = np.empty_like(z)
        zt[sigma] = z
        z = zt
    w = combine(p, z, dtype, pp, name)
    out[:] = w.astype(dtype.uint, copy=False).view(np.uint8)


@dataclass(frozen=True)
class Reference:
    """Where a predicted record's reference lives: a tensor of this file, or of a parent file
    named by its SHA-256 (with the parent's base name as a hint)."""

    name: str
    parent_sha256: bytes | None = None
    hint: str = ""


class Predicted(RecordKind):
    kind_id = KIND_ID
    name = "predicted"

    @classmethod
    def encode(cls, dtype, shape, elements, options, *, reference: Reference,
               ref: np.ndarray, predictor: str = "identity", a: float = 1.0, b: float = 0.0,
               repeat: int = 1,
               coeffs: np.ndarray | None = None, permutation: str = "none",
               perm: np.ndarray | None = None, residual: str = "sub", order: str | None = None,
               step: float | None = None, rounding: str = "nearest",
               seed: int = 0) -> EncodedRecord:
        """`ref`: the reference's decoded bytes, exactly as a decoder will see them.
        `rounding` (quantized residuals; encoder-only, the decoder does not see it): "nearest"
        gives the level rint(r/step) for a residual r; "dither" gives ⌊r/step + u⌋ with one
        offset u per element, uniform in [0, 1), drawn from a generator seeded by `seed`. With
        the same seed at every checkpoint (archive_lossy "dither") each weight keeps its own
        rounding threshold, so the levels change only when a weight crosses it, while the
        rounding error is unbiased across weights; rounding to nearest puts every threshold at
        half a step, and its error — the part of each update below half a step, pointing back
        toward the previous checkpoint — adds up coherently in the model's output
        (docs/predicted.md measures both)."""
        shape = tuple(int(d) for d in shape)
        pp = make_params(dtype, shape, reference, predictor, a, b, permutation, residual, order,
                         step, repeat)
        ref = np.asarray(ref).reshape(-1).view(np.uint8).view(dtype.uint)
        if ref.size != elements.size:
            raise InputError(f"reference holds {ref.size} elements, the tensor {elements.size}")
        if perm is not None:
            perm = np.asarray(perm, dtype=np.int64)
        p = predict(ref, dtype, shape, pp, perm, coeffs)
        decoded, lossy, error = None, False, None
        if pp.residual == RES_SUB:
            z = zigzag(elements - p, 8 * dtype.itemsize)
        elif pp.residual == RES_XOR:
            z = elements ^ p
        else:
            x = to_float64(elements, dtype)
            xp = to_float64(p, dtype)
            if rounding not in ("nearest", "dither"):
                raise InputError(f"rounding must be 'nearest' or 'dither', not {rounding!r}")
            q = quantize_levels(x, xp, pp.step, None if rounding == "nearest"
                                else dither_offsets(seed, x.size))
            zq = ((q << 1) ^ (q >> 63)).view(np.uint64)
            top = int(zq.max()) if zq.size else 0
            ld = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
            z = zq.astype(ld)
            decoded = combine(p, zq, dtype, pp).view(np.uint8)
            y = to_float64(decoded.view(dtype.uint), dtype)
            lossy = True
            with np.errstate(invalid="ignore"):
                d = x - y
            fin = np.isfinite(d)
            error = dict(max_abs_error=float(np.abs(d[fin]).max()) if fin.any() else 0.0,
                         mean_squared_error=float(np.mean(d[fin] ** 2)) if fin.any() else 0.0,
                         signal_power=float(np.mean(x[np.isfinite(x)] ** 2))
                         if np.isfinite(x).any() else 0.0)
        if pp.order == ORDER_EXPONENT:
            z = z[exponent_order(p, dtype)]
        sdt = D.from_numpy(z.dtype)
        streams = [StreamPlan(sdt, (z.size,), z, options.chain_for(sdt),
                              options.chunk_elements)]
        if pp.permutation != PERM_NONE:
            pd = D.BY_NAME["uint16"] if perm.size <= 65536 else D.BY_NAME["uint32"]
            pv = perm.astype(pd.uint)
            streams.append(StreamPlan(pd, (pv.size,), pv, options.chain_for(pd),
                                      options.chunk_elements))
        if pp.predictor == PRED_CHANNEL:
            f32 = D.BY_NAME["float32"]
            cv = np.ascontiguousarray(coeffs, dtype="<f4").reshape(-1).view(np.uint32)
            streams.append(StreamPlan(f32, (2, shape[0]), cv, options.chain_for(f32),
                                      options.chunk_elements))
        return EncodedRecord(params=pp.pack(), streams=streams, lossy=lossy, error=error,
                             decoded=decoded)

    @classmethod
    def check(cls, record, name):
        pp = PredParams.unpack(record.params, name)
        dtype = D.by_code(record.dtype)
        shape = tuple(int(d) for d in record.shape)
        is_float = dtype.name in FLOAT_DTYPES
        if not is_float and (pp.predictor != PRED_IDENTITY or pp.residual == RES_QUANT
                             or pp.order != ORDER_NATURAL):
            raise MalformedRecord(f"affine predictors, quantized residuals and exponent order "
                                  f"need a float64/32/16 or bfloat16 tensor, not {dtype.name}",
                                  rule="PRD-04", tensor=name)
        if (pp.permutation != PERM_NONE or pp.predictor == PRED_CHANNEL) and not shape:
            raise MalformedRecord("permutations and channel affine need rank ≥ 1",
                                  rule="PRD-04", tensor=name)
        lossy = bool(record.record_flags & 0x02)
        if lossy != (pp.residual == RES_QUANT):
            raise MalformedRecord("the lossy flag is set exactly when the residual is quantized",
                                  rule="PRD-03", tensor=name)
        layout = _stream_layout(pp, dtype, shape)
        if record.stream_count != len(layout):
            raise MalformedRecord(f"{record.stream_count} streams, the params call for "
                                  f"{len(layout)}", rule="PRD-02", tensor=name)
        for i, (names, sh) in enumerate(layout):
            s = record.streams[i]
            sdn = D.by_code(s.stream_dtype).name
            if sdn not in names or tuple(s.stream_shape) != tuple(sh):
                raise MalformedRecord(f"stream {i} is {sdn} {list(s.stream_shape)}, expected "
                                      f"{'/'.join(names)} {list(sh)}", rule="PRD-02",
                                      tensor=name)

    @classmethod
    def assemble(cls, record, streams, out, ctx, **options):
        name = record.name.decode("utf-8", "replace")
        ref = reference_bytes(ctx.reader, name)
        _assemble(record, None, streams, out, ref, name)

    @classmethod
    def describe(cls, record) -> dict:
        pp = PredParams.unpack(record.params)
        d = {"reference": pp.ref_name, "source": SOURCE_NAMES[pp.source],
             "predictor": PRED_NAMES[pp.predictor], "permutation": PERM_NAMES[pp.permutation],
             "residual": RES_NAMES[pp.residual], "order": ORDER_NAMES[pp.order]}
        if pp.source == SOURCE_PARENT:
            d["parent_sha256"] = pp.parent_sha256.hex()
            d["parent_hint"] = pp.hint
        if pp.predictor == PRED_SCALAR:
            d["a"], d["b"], d["repeat"] = pp.a, pp.b, pp.repeat
        if pp.residual == RES_QUANT:
            d["step"] = pp.step
        return d


def _code(table: dict, value, what: str) -> int:
    if isinstance(value, int) and value in table:
        return value
    for k, v in table.items():
        if v == value:
            return k
    raise InputError(f"{what} must be one of {list(table.values())}, not {value!r}")


def make_params(dtype, shape, reference: Reference, predictor="identity", a=1.0, b=0.0,
                permutation="none", residual="sub", order=None, step=None,
                repeat=1) -> PredParams:
    pred = _code(PRED_NAMES, predictor, "predictor")
    perm = _code(PERM_NAMES, permutation, "permutation")
    res = _code(RES_NAMES, residual, "residual")
    is_float = dtype.name in FLOAT_DTYPES
    if order is None:
        order = "exponent" if is_float else "natural"
    ordc = _code(ORDER_NAMES, order, "order")
    if not is_float and (pred != PRED_IDENTITY or res == RES_QUANT or ordc != ORDER_NATURAL):
        raise InputError(f"{dtype.name}: only identity prediction with sub/xor residuals in "
                         "natural order")
    if res == RES_QUANT and not (step and np.isfinite(step) and np.float32(step) > 0):
        raise InputError("a quantized residual needs a step > 0")
    src = SOURCE_PARENT if reference.parent_sha256 is not None else SOURCE_FILE
    return PredParams(
        source=src, predictor=pred, permutation=perm, residual=res, order=ordc,
        repeat=int(repeat) if pred == PRED_SCALAR else 0, a=float(a) if pred == PRED_SCALAR else 0.0, b=float(b) if pred == PRED_SCALAR else 0.0,
        step=float(np.float32(step)) if res == RES_QUANT else 0.0,
        parent_sha256=reference.parent_sha256 or bytes(32), ref_name=reference.name,
        hint=reference.hint if src == SOURCE_PARENT else "")


def describe_chain(reader, name: str) -> dict:
    """For `inspect`: the record's parameters and its reference chain [{file, sha256, tensor,
    record_kind}], or the error that following the chain raises (reported, not raised)."""
    from ..errors import FormatError
    info = reader.info(name)
    out = dict(Predicted.describe(info.record))
    try:
        chain = reference_chain(reader, name)
    except FormatError as e:
        out["chain_error"] = f"{e.error_class}: {e}"
        return out
    steps = []
    for r, n in chain[1:]:
        steps.append(dict(file=os.path.basename(r.path), tensor=n,
                          record_kind=r.info(n).kind_name,
                          same_file=r is reader))
    out["chain"] = steps
    out["depth"] = sum(1 for r, n in chain if r.info(n).record_kind == KIND_ID)
    return out
