"""Record kind 3, `bands`: spec/records/bands.md.

A float tensor as N bands (2 to 8). Bands 1..Q are nested uniform quantizations
(spec/quantization.md): band 1 holds levels of a coarse step s (per tensor, channel or group), band j
refines the step by 2^-b_j. Decoding bands 1..k gives the centre of the bin that those levels pin the
value to. When the record is lossless, band N is the exact remainder in the bit domain: the
difference of order-preserving integer images of the original bit pattern and of the bit pattern of
prefix N-1, zigzag-coded and listed grouped by the exponent of prefix N-1 (so that the entropy coder
sees remainders of one size together). Decoding all N bands then gives the original bytes.

Params carry, for every prefix k, the encoder's ErrorStats and (optionally) the SHA-256 of the
decoded bytes, so `inspect` shows the error of each prefix and conformance can compare hashes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace

import numpy as np

from .. import dtypes as D
from .. import quant as Q
from ..errors import CorruptPayload, DigestMismatch, InputError, MalformedRecord
from .base import EncodedRecord, RecordKind, StreamPlan

KIND_ID = 3
MIN_BANDS, MAX_BANDS = 2, 8
MAX_BAND_BITS = 24

FLAG_REMAINDER = 0x01
FLAG_DIGESTS = 0x02
KNOWN_FLAGS = FLAG_REMAINDER | FLAG_DIGESTS

FLOAT_DTYPES = tuple(Q.FORMATS)

# band_count u8, quantizer u8, scale_mode u8, flags u8, remainder_shift u8, reserved u8[3],
# group_size u32, scale f32
HEAD = struct.Struct("<BBBBB3xIf")
# refine_bits u8, reserved u8[3], ErrorStats (3 x f64)
ENTRY = struct.Struct("<B3xddd")
DIGEST = 32


@dataclass
class BandParams:
    band_count: int
    quantizer: int
    layout: Q.ScaleLayout
    remainder: bool
    remainder_shift: int
    scale: float                      # the per-tensor scale (0.0 unless layout is per tensor)
    refine_bits: list[int]            # one per band; 0 for band 1 and the remainder band
    errors: list[dict]                # ErrorStats of every prefix k = 1..N
    digests: list[bytes] | None = field(default=None)

    @property
    def quantized_bands(self) -> int:
        return self.band_count - (1 if self.remainder else 0)

    def shift(self, k: int) -> int:
        """c_k: total refinement bits of prefix k (k <= quantized_bands)."""
        return sum(self.refine_bits[1:k])

    def entry_size(self) -> int:
        return ENTRY.size + (DIGEST if self.digests is not None else 0)

    def pack(self) -> bytes:
        flags = (FLAG_REMAINDER if self.remainder else 0) | \
            (FLAG_DIGESTS if self.digests is not None else 0)
        out = [HEAD.pack(self.band_count, self.quantizer, self.layout.mode, flags,
                         self.remainder_shift, self.layout.group_size, self.scale)]
        for j in range(self.band_count):
            e = self.errors[j]
            out.append(ENTRY.pack(self.refine_bits[j], e["max_abs_error"],
                                  e["mean_squared_error"], e["signal_power"]))
            if self.digests is not None:
                out.append(self.digests[j])
        return b"".join(out)

    @classmethod
    def unpack(cls, params: bytes, name: str | None = None) -> "BandParams":
        def bad(msg):
            return MalformedRecord(msg, rule="BND-01", tensor=name)
        if len(params) < HEAD.size:
            raise bad(f"band params of {len(params)} bytes are shorter than their header")
        n, qz, mode, flags, z, g, s = HEAD.unpack_from(params, 0)
        if not MIN_BANDS <= n <= MAX_BANDS:
            raise bad(f"band_count {n} not in {MIN_BANDS}..{MAX_BANDS}")
        if qz not in Q.QUANTIZER_NAMES:
            raise bad(f"quantizer {qz} is not 0 or 1")
        if flags & ~KNOWN_FLAGS or any(params[5:8]):
            raise MalformedRecord("band params reserved bits are not zero", rule="RSV-01",
                                  tensor=name)
        if mode not in Q.SCALE_NAMES:
            raise bad(f"scale_mode {mode} is not 0, 1 or 2")
        if (mode == Q.SCALE_GROUP) != (g != 0) or g > Q.MAX_GROUP_SIZE:
            raise bad(f"group_size {g} with scale_mode {mode}")
        if mode == Q.SCALE_TENSOR:
            if not (np.isfinite(s) and s > 0):
                raise bad("the tensor scale is not a positive finite binary32")
        elif bytes(params[12:16]) != b"\0\0\0\0":
            raise bad("scale must be +0.0 unless scale_mode is 0 (tensor)")
        digests = bool(flags & FLAG_DIGESTS)
        esize = ENTRY.size + (DIGEST if digests else 0)
        if len(params) != HEAD.size + n * esize:
            raise bad(f"band params are {len(params)} bytes, {HEAD.size + n * esize} expected")
        bits, errors, dig = [], [], ([] if digests else None)
        pos = HEAD.size
        for _ in range(n):
            b, mae, mse, sp = ENTRY.unpack_from(params, pos)
            if params[pos + 1:pos + 4] != b"\0\0\0":
                raise MalformedRecord("band entry reserved bytes are not zero", rule="RSV-01",
                                      tensor=name)
            bits.append(b)
            errors.append(dict(max_abs_error=mae, mean_squared_error=mse, signal_power=sp))
            pos += ENTRY.size
            if digests:
                dig.append(bytes(params[pos:pos + DIGEST]))
                pos += DIGEST
        remainder = bool(flags & FLAG_REMAINDER)
        nq = n - (1 if remainder else 0)
        if bits[0] != 0 or (remainder and bits[-1] != 0):
            raise bad("refine_bits is 0 for band 1 and for the remainder band")
        if any(not 1 <= b <= MAX_BAND_BITS for b in bits[1:nq]):
            raise bad(f"refine_bits of bands 2..{nq} must be 1..{MAX_BAND_BITS}")
        if sum(bits) > Q.MAX_REFINE_BITS:
            raise bad(f"refine_bits add up to {sum(bits)} > {Q.MAX_REFINE_BITS}")
        if not remainder and z:
            raise bad("remainder_shift is 0 when there is no remainder band")
        return cls(n, qz, Q.ScaleLayout(mode, g), remainder, z, float(s), bits, errors, dig)


# -- exact reconstruction (the decoder's arithmetic; the encoder uses the same functions) ---------
def _ordered(p: np.ndarray, width: int) -> np.ndarray:
    """o(p): the order-preserving image of a width-bit sign-magnitude pattern (uint64, mod 2^w)."""
    sign = p >> np.uint64(width - 1)
    return p ^ (sign * np.uint64((1 << (width - 1)) - 1))


def _mask(width: int) -> np.uint64:
    return np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)


def remainder_encode(x_bits: np.ndarray, c_bits: np.ndarray, width: int, z: int) -> np.ndarray:
    """zigzag((o(x >> z) − o(c >> z)) mod 2^w'), w' = width − z, as uint64 (BND spec §5)."""
    w = width - z
    m = _mask(w)
    zz = np.uint64(z)
    ox = _ordered(x_bits.astype(np.uint64) >> zz, w)
    oc = _ordered(c_bits.astype(np.uint64) >> zz, w)
    diff = (ox - oc) & m
    neg = diff >> np.uint64(w - 1)
    return ((diff << np.uint64(1)) & m) ^ (neg * m)


def remainder_decode(r: np.ndarray, c_bits: np.ndarray, width: int, z: int) -> np.ndarray:
    """Inverse of remainder_encode: the original bit patterns (uint64)."""
    w = width - z
    m = _mask(w)
    zz = np.uint64(z)
    r = r.astype(np.uint64)
    diff = (r >> np.uint64(1)) ^ ((r & np.uint64(1)) * m)
    oc = _ordered(c_bits.astype(np.uint64) >> zz, w)
    ox = (oc + diff) & m
    return _ordered(ox, w) << zz


def remainder_order(c_bits: np.ndarray, dtype: D.DType) -> np.ndarray:
    """The permutation that lists elements by the exponent field of prefix N−1, stable."""
    f = Q.float_format(dtype)
    key = ((c_bits.astype(np.uint64) >> np.uint64(f.mbits))
           & np.uint64((1 << f.ebits) - 1)).astype(np.uint16)
    return np.argsort(key, kind="stable")


def trailing_zero_bits(bits: np.ndarray, width: int) -> int:
    """The number of low bits that are zero in every element (the largest usable z), < width."""
    if bits.size == 0:
        return 0
    acc = np.bitwise_or.reduce(bits.astype(np.uint64))
    if acc == 0:
        return width - 1
    acc = int(acc)
    return min((acc & -acc).bit_length() - 1, width - 1)


def level_limit(p: BandParams, j: int) -> int:
    """BND-05: |q_1| <= 2^23; |q_j| <= 2^(b_j + 1) for a refinement band j (0-based index)."""
    return Q.MAX_BASE_LEVEL if j == 0 else (1 << (p.refine_bits[j] + 1))


def accumulate(levels: list[np.ndarray], p: BandParams, upto: int, rows: int, cols: int,
               name=None, acc: np.ndarray | None = None, start: int = 0) -> np.ndarray:
    """A_k (int64, (rows, cols)) from the levels of bands start+1..upto (A_start given as `acc`),
    with the range checks of BND-05."""
    for j in range(start, upto):
        q = levels[j - start].reshape(rows, cols)
        lim = level_limit(p, j)
        if q.size and int(np.abs(q).max()) > lim:
            raise CorruptPayload(f"a band {j + 1} level exceeds {lim} in magnitude",
                                 rule="BND-05", tensor=name)
        acc = Q.multipliers(q, p.quantizer) if j == 0 else Q.refine(acc, q, p.refine_bits[j])
    return acc


def scales64(p: BandParams, rows: int, cols: int, scale_stream: np.ndarray | None,
             name=None) -> np.ndarray:
    if p.layout.mode == Q.SCALE_TENSOR:
        return p.layout.expand(p.scale, rows, cols)
    s = scale_stream.view("<f4")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise CorruptPayload("a scale is not a positive finite binary32", rule="BND-06",
                             tensor=name)
    return p.layout.expand(s, rows, cols)


def prefix_bits(acc: np.ndarray, s64: np.ndarray, shift: int, dtype: D.DType) -> np.ndarray:
    """Bit patterns of a quantized prefix: round_to_dtype(float64(A_k) × s·2^-c_k)."""
    return Q.round_to_dtype(Q.dequantize(acc, s64, shift).reshape(-1), dtype)


def band1_scales(xm: np.ndarray, layout: Q.ScaleLayout, quantizer: int, *,
                 step: float | None = None, rel_step: float | None = None):
    """Band 1's stored scales (float32), their binary64 expansion and u = x / s. `step` and
    `rel_step` are nominal (uniform-quantizer) steps: the dependent quantizer stores half."""
    unit = 0.5 if quantizer == Q.QUANTIZER_DEPENDENT else 1.0
    sc = Q.choose_scales(xm, layout, step=None if step is None else step * unit,
                         rel_step=None if rel_step is None else rel_step * unit,
                         max_level=Q.MAX_BASE_LEVEL)
    s64 = layout.expand(sc, *xm.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        u = xm / s64                              # one binary64 division per element
    return sc, s64, np.where(np.isfinite(u), u, 0.0)


def band1_levels(u: np.ndarray, quantizer: int, lam: float = 0.0) -> np.ndarray:
    """Encoder: band 1's levels for u = x / s (rows, cols)."""
    if quantizer == Q.QUANTIZER_DEPENDENT:
        return np.clip(Q.dependent_levels(u, lam), -Q.MAX_BASE_LEVEL, Q.MAX_BASE_LEVEL)
    return Q.quantize(u, Q.MAX_BASE_LEVEL)


# -- the record kind -------------------------------------------------------------------------------
def _level_dtype(code: int):
    for d in Q.LEVEL_DTYPES:
        if d.code == code:
            return d
    return None


def _as_bits_list(refine_bits, count: int) -> list[int]:
    if isinstance(refine_bits, (int, np.integer)):
        return [int(refine_bits)] * count
    bits = [int(b) for b in refine_bits]
    if len(bits) < count:
        bits += [bits[-1] if bits else 4] * (count - len(bits))
    return bits[:count]


class Bands(RecordKind):
    kind_id = KIND_ID
    name = "bands"

    # -- encoder ----------------------------------------------------------------------------------
    @classmethod
    def encode(cls, dtype, shape, elements, options, *, bands: int = 3,
               step: float | None = None, rel_step: float | None = None,
               snr_db: float | None = None, scales="tensor", refine_bits=4,
               quantizer: str = "dependent", lam: float = 0.0, lossless: bool = True,
               values: np.ndarray | None = None,
               remainder_shift: int | None = None,
               band1_level: int | None = None) -> EncodedRecord:
        """Encode one float tensor as `bands` bands.

        Band 1's nominal step Δ: `step` (absolute), `rel_step` (× the RMS of each scale's
        elements) or `snr_db` (rel_step = √12·10^(−snr/20), the SNR a uniform step Δ gives on
        smooth data). The uniform quantizer stores s = Δ; the dependent (trellis) one s = Δ/2,
        which costs about the same bits as a uniform Δ and gives ~1.3 dB more SNR.
        Bands 2.. refine by `refine_bits` bits each (an int or one per refinement band).
        `lossless=False` drops the remainder: all bands are quantized, the last one is lossy.
        `band1_level`: the zstd level of band 1's streams (default: the options' level). Band 1 is
        small and read by every decoder, so a slow, strong level there pays: on MiniLM zstd-19
        codes band-1 levels ~0.16 bit/weight smaller than zstd-3 (close to their order-0
        entropy); it changes only the encoder's bytes, never how they decode."""
        if dtype.name not in FLOAT_DTYPES:
            raise InputError(f"band records hold float tensors, not {dtype.name} (store it plain)")
        n_bands = int(bands)
        if not MIN_BANDS <= n_bands <= MAX_BANDS:
            raise InputError(f"bands must be {MIN_BANDS}..{MAX_BANDS}, not {bands}")
        layout = Q.ScaleLayout.parse(scales)
        qz = quantizer if isinstance(quantizer, int) else Q.QUANTIZER_CODES.get(quantizer)
        if qz not in Q.QUANTIZER_NAMES:
            raise InputError(f"quantizer must be 'uniform' or 'dependent', not {quantizer!r}")
        given = sum(v is not None for v in (step, rel_step, snr_db))
        if given != 1:
            raise InputError("give exactly one of step=, rel_step=, snr_db= for band 1")
        if snr_db is not None:
            rel_step = float(np.sqrt(12.0) * 10.0 ** (-float(snr_db) / 20.0))
        nq = n_bands - (1 if lossless else 0)
        bits = [0] + _as_bits_list(refine_bits, nq - 1) + ([0] if lossless else [])
        if any(not 1 <= b <= MAX_BAND_BITS for b in bits[1:nq]):
            raise InputError(f"refine bits must be 1..{MAX_BAND_BITS}")
        if sum(bits) > Q.MAX_REFINE_BITS:
            raise InputError(f"refine bits add up to {sum(bits)} > {Q.MAX_REFINE_BITS}")

        rows, cols = Q.matrix_shape(shape)
        x = Q.to_float64(elements, dtype) if values is None else np.asarray(values, np.float64)
        finite = np.isfinite(x)
        if not lossless and not finite.all():
            raise InputError("a lossy band record cannot hold NaN or infinite values")
        xm = x.reshape(rows, cols)
        sc, s64, u = band1_scales(xm, layout, qz, step=step, rel_step=rel_step)
        levels, prefixes = [], []
        acc = None
        for j in range(nq):
            if j == 0:
                q = band1_levels(u, qz, lam)
                a = Q.multipliers(q, qz)
            else:
                t = np.ldexp(u, sum(bits[1:j + 1]))   # exact: a power-of-two scaling
                lim = 1 << (bits[j] + 1)
                base = acc << np.int64(bits[j])
                q = np.clip(Q.quantize(t, Q.MAX_ACCUMULATED) - base, -lim, lim)
                a = base + q
            levels.append(q)
            acc = a
            prefixes.append(prefix_bits(acc, s64, sum(bits[1:j + 1]), dtype))

        width = 8 * dtype.itemsize
        errors, digests = [], []
        for pb in prefixes:
            errors.append(Q.error_stats(x, Q.to_float64(pb, dtype)))
            digests.append(hashlib.sha256(pb.astype(dtype.uint).tobytes()).digest())
        streams = []
        b1opts = options if band1_level is None else replace(options, level=int(band1_level))
        for j, q in enumerate(levels):
            ldt, z = Q.pack_levels(q)
            streams.append(StreamPlan(ldt, (z.size,), z,
                                      (b1opts if j == 0 else options).chain_for(ldt),
                                      options.chunk_elements))
        z_shift = 0
        if lossless:
            xb = np.asarray(elements).view(dtype.uint).reshape(-1)
            z_shift = trailing_zero_bits(xb, width) if remainder_shift is None \
                else int(remainder_shift)
            c_bits = prefixes[-1]
            r = remainder_encode(xb, c_bits, width, z_shift)
            order = remainder_order(c_bits, dtype)
            rdt = D.BY_NAME[f"uint{width}"]
            streams.append(StreamPlan(rdt, (r.size,), r[order].astype(rdt.uint),
                                      options.chain_for(rdt), options.chunk_elements))
            errors.append(dict(max_abs_error=0.0, mean_squared_error=0.0,
                               signal_power=Q.error_stats(x, x)["signal_power"]))
            digests.append(hashlib.sha256(xb.tobytes()).digest())
        if layout.mode != Q.SCALE_TENSOR:
            f32 = D.BY_NAME["float32"]
            streams.append(StreamPlan(f32, (sc.size,), sc.reshape(-1).view(np.uint32),
                                      b1opts.chain_for(f32), options.chunk_elements))
        p = BandParams(n_bands, qz, layout, lossless, z_shift,
                       float(sc) if layout.mode == Q.SCALE_TENSOR else 0.0, bits, errors,
                       digests if options.sha256 else None)
        decoded = None if lossless else prefixes[-1].astype(dtype.uint).view(np.uint8)
        return EncodedRecord(params=p.pack(), streams=streams, lossy=not lossless,
                             error=None if lossless else errors[-1], decoded=decoded)

    # -- validation -------------------------------------------------------------------------------
    @classmethod
    def params(cls, record, name=None) -> BandParams:
        return BandParams.unpack(bytes(record.params), name)

    @classmethod
    def check(cls, record, name):
        p = cls.params(record, name)
        dtype = D.by_code(record.dtype)
        if dtype.name not in FLOAT_DTYPES:
            raise MalformedRecord(f"a band record holds a float tensor, not {dtype.name}",
                                  rule="BND-02", tensor=name)
        width = 8 * dtype.itemsize
        if p.remainder_shift >= width:
            raise MalformedRecord(f"remainder_shift {p.remainder_shift} ≥ {width}",
                                  rule="BND-02", tensor=name)
        lossy = bool(record.record_flags & 0x02)
        if lossy == p.remainder:
            raise MalformedRecord("a band record is lossy exactly when it has no remainder band",
                                  rule="BND-04", tensor=name)
        rows, cols = Q.matrix_shape(record.shape)
        n = rows * cols
        expect = p.band_count + (1 if p.layout.mode != Q.SCALE_TENSOR else 0)
        if record.stream_count != expect:
            raise MalformedRecord(f"{record.stream_count} streams, the params call for {expect}",
                                  rule="BND-03", tensor=name)
        s = record.streams
        for j in range(p.quantized_bands):
            if _level_dtype(s[j].stream_dtype) is None or list(s[j].stream_shape) != [n]:
                raise MalformedRecord(f"band {j + 1} is not a uint8/16/32 stream of {n} levels",
                                      rule="BND-03", tensor=name)
        i = p.quantized_bands
        if p.remainder:
            if s[i].stream_dtype != D.BY_NAME[f"uint{width}"].code or \
                    list(s[i].stream_shape) != [n]:
                raise MalformedRecord(f"the remainder band is a uint{width} stream of {n} "
                                      "elements", rule="BND-03", tensor=name)
            i += 1
        if p.layout.mode != Q.SCALE_TENSOR:
            if s[i].stream_dtype != D.BY_NAME["float32"].code or \
                    list(s[i].stream_shape) != [p.layout.count(rows, cols)]:
                raise MalformedRecord("the scale stream is float32 with one entry per channel "
                                      "or group", rule="BND-03", tensor=name)
        if p.digests is not None and record.sha256 is not None \
                and p.digests[-1] != bytes(record.sha256):
            raise MalformedRecord("the digest of prefix N differs from the record's sha256",
                                  rule="BND-08", tensor=name)

    # -- decoder ----------------------------------------------------------------------------------
    @classmethod
    def prefix_count(cls, record, bands) -> int:
        n = BandParams.unpack(bytes(record.params)).band_count
        if bands is None:
            return n
        k = int(bands)
        if k < 1:
            raise InputError(f"bands must be ≥ 1, not {bands}")
        return min(k, n)

    @classmethod
    def scale_stream_id(cls, p: BandParams) -> int | None:
        return p.band_count if p.layout.mode != Q.SCALE_TENSOR else None

    @classmethod
    def streams_needed(cls, record, bands=None, **options):
        p = BandParams.unpack(bytes(record.params))
        k = cls.prefix_count(record, bands)
        need = list(range(min(k, p.quantized_bands)))
        if p.remainder and k == p.band_count:
            need.append(p.quantized_bands)
        sid = cls.scale_stream_id(p)
        if sid is not None:
            need.append(sid)
        return need

    @classmethod
    def decode_levels(cls, record, streams: dict, bands_: range, name=None) -> list[np.ndarray]:
        out = []
        for j in bands_:
            ldt = _level_dtype(record.streams[j].stream_dtype)
            out.append(Q.zigzag_decode(streams[j].view(ldt.uint)))
        return out

    @classmethod
    def assemble(cls, record, streams, out, ctx, bands=None, **options):
        name = record.name.decode("utf-8", "replace")
        p = BandParams.unpack(bytes(record.params), name)
        k = cls.prefix_count(record, bands)
        bits = decode_prefix(record, p, streams, k, name)
        out[:] = bits.view(np.uint8)
        # BND-07 has no chunk-CRC exception: checked unless the user skipped digests
        verify = getattr(getattr(ctx, "reader", None), "verify_sha256", True) is not False
        if verify and p.digests is not None and k < p.band_count \
                and hashlib.sha256(out).digest() != p.digests[k - 1]:
            raise DigestMismatch(f"SHA-256 of the {k}-band prefix disagrees with the record",
                                 rule="BND-07", tensor=name)

    @classmethod
    def describe(cls, record) -> dict:
        p = BandParams.unpack(bytes(record.params))
        nq = p.quantized_bands
        band_streams = [[j] for j in range(p.band_count)]
        sid = cls.scale_stream_id(p)
        if sid is not None:
            band_streams[0].append(sid)
        return {
            "bands": p.band_count, "remainder": p.remainder,
            "quantizer": Q.QUANTIZER_NAMES[p.quantizer], "scales": p.layout.describe(),
            "step": p.scale if p.layout.mode == Q.SCALE_TENSOR else None,
            "refine_bits": p.refine_bits[1:nq], "remainder_shift": p.remainder_shift,
            "band_streams": band_streams,
            "prefix_error": [dict(e, snr_db=Q.snr_db(e)) for e in p.errors],
            "prefix_sha256": [d.hex() for d in p.digests] if p.digests is not None else None,
        }


def decode_prefix(record, p: BandParams, streams: dict, k: int, name=None) -> np.ndarray:
    """Bit patterns (dtype.uint, 1-D) of prefix k from decoded stream bytes."""
    dtype = D.by_code(record.dtype)
    rows, cols = Q.matrix_shape(record.shape)
    nq = p.quantized_bands
    upto = min(k, nq)
    levels = Bands.decode_levels(record, streams, range(upto), name)
    acc = accumulate(levels, p, upto, rows, cols, name)
    sid = Bands.scale_stream_id(p)
    s64 = scales64(p, rows, cols, streams.get(sid) if sid is not None else None, name)
    return finish_prefix(record, p, acc, s64, k, streams, name)


def finish_prefix(record, p: BandParams, acc, s64, k, streams, name=None) -> np.ndarray:
    """From A_min(k, Q) to the prefix's bit patterns, applying the remainder when k = N."""
    dtype = D.by_code(record.dtype)
    upto = min(k, p.quantized_bands)
    bits = prefix_bits(acc, s64, p.shift(upto), dtype)
    if p.remainder and k == p.band_count:
        bits = apply_remainder(bits, streams[p.quantized_bands], dtype, p.remainder_shift,
                               rule="BND-09", tensor=name)
    return bits


def apply_remainder(bits, stored, dtype, shift: int, *, rule: str, tensor) -> np.ndarray:
    """The exact bit patterns from a reconstruction's `bits` and the stored bit-domain remainder
    stream (in remainder order); shared by every record kind with an exact remainder."""
    width = 8 * dtype.itemsize
    stored = np.asarray(stored).view(D.BY_NAME[f"uint{width}"].uint)
    r = np.empty(stored.size, np.uint64)
    r[remainder_order(bits, dtype)] = stored
    if shift:
        mx = np.uint64((1 << (width - shift)) - 1)
        if r.size and r.max() > mx:
            raise CorruptPayload("a remainder does not fit the shifted width", rule=rule,
                                 tensor=tensor)
    return remainder_decode(r, bits, width, shift).astype(dtype.uint)


__all__ = ["Bands", "BandParams", "decode_prefix", "finish_prefix", "accumulate", "scales64",
           "prefix_bits", "remainder_encode", "remainder_decode", "remainder_order", "apply_remainder"]
