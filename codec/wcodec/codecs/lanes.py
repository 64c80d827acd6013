"""Codec `lanes` (id 256, bytes->bytes): spec/codecs/lanes.md.

Each lane (one byte plane when placed after `planes`) is coded alone with the smallest of raw, zstd,
fill and rans (spec/codecs/rans.md), by actual size, except that a lane which rans barely shrinks
(a float's top mantissa plane) takes rans_split (spec/codecs/rans_split.md) when that costs at most
0.2 % of it: a quarter of the rANS symbols to decode. Decoding checks every declared length before
allocating (LAN-03, LAN-05, LAN-06).

zstd is the fallback for lanes with repeats that an order-0 coder cannot see; it is tried in full
when the lane is short or when a 4 KiB sample of the lane compresses clearly below the order-0 cost
(most weight lanes have no repeats, and running zstd on them would halve the encoder's speed).
"""

from __future__ import annotations

import struct
import threading

import numpy as np
import zstandard

from ..errors import CorruptPayload, MalformedRecord, UnsupportedFeature
from . import rans, rans_split
from .base import BytesToBytesCodec

METHOD_RAW = 0
METHOD_ZSTD = 1
METHOD_FILL = 2
METHOD_RANS = rans.METHOD_RANS
METHOD_RANS_SPLIT = rans_split.METHOD_RANS_SPLIT
METHOD_NAMES = {METHOD_RAW: "raw", METHOD_ZSTD: "zstd", METHOD_FILL: "fill", METHOD_RANS: "rans",
                METHOD_RANS_SPLIT: "rans_split"}
ZSTD_SAMPLE = 4096
# below this lane length (a small tensor's lane: a bias, a norm scale) rans gets one state and R
# from 8 to 12, the cheapest header and table: measured on MiniLM's small tensors, that beats the
# zstd frame on most lanes (bf16: 41.7 against 45.3 KB, zstd left on 11 of 128 lanes), and a chunk
# without a zstd lane stays in the native decoder (fastpath.py) instead of the Python path
RANS_MIN_LANE = 4096
SMALL_SCALES = (8, 12)
SMALL_STATES = 1
# rans_split (k = 2) is tried on lanes that rans shrinks by less than 1/SPLIT_TRY, and taken when it
# costs at most D/SPLIT_SLACK bytes more than rans: a quarter of the rANS symbols (the decoder's
# and encoder's work) for at most 0.2 % of the lane (spec/codecs/rans_split.md §4)
SPLIT_TRY = 8
SPLIT_SLACK = 512
# on lanes of 16 KiB or less, zstd replaces the best of raw, fill and rans only when it is at least
# 1/ZSTD_GAIN smaller: a chunk with a zstd lane leaves the native decode batch for the Python path
# (~0.1 ms a chunk, as much as decoding a small chunk), and on MiniLM's small lanes most of zstd's
# wins were under 5 % (fp16: 33 zstd lanes, 1 that won by more than 1/8; the rest cost 243 bytes in
# all as rans or raw). Longer lanes keep "fewest bytes": there the Python trip is a small share.
ZSTD_GAIN = 8

_LANE_HEADER = struct.Struct("<BI")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_local = threading.local()  # zstd contexts are not thread-safe: one per thread


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    c = cache.get(level)
    if c is None:
        # content size in the frame lets a decoder check it before decompressing (LAN-06)
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True,
                                                    write_checksum=False)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def zstd_decode_exact(frame: memoryview, expected: int) -> bytes:
    """One complete zstd frame to exactly `expected` bytes, without ever allocating more (LAN-06)."""
    if bytes(frame[:4]) != _ZSTD_MAGIC:
        raise CorruptPayload("lane data is not a zstd frame", rule="LAN-06")
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as e:
        raise CorruptPayload(f"bad zstd frame header: {e}", rule="LAN-06") from None
    if declared != -1 and declared != expected:
        raise CorruptPayload(f"zstd frame declares {declared} bytes, lane holds {expected}",
                             rule="LAN-06")
    try:
        # max_output_size only bounds frames without a content size; those with one were checked
        out = _decompressor().decompress(frame, max_output_size=max(expected, 1),
                                         allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise CorruptPayload(f"zstd frame does not decode: {e}", rule="LAN-06") from None
    if len(out) != expected:
        raise CorruptPayload(f"zstd frame gave {len(out)} bytes, lane holds {expected}",
                             rule="LAN-06")
    return out


def _histogram(lane: np.ndarray) -> np.ndarray:
    if rans.native is not None:
        counts = np.empty(256, np.uint64)
        rans.native.histogram(lane, counts)
        return counts.astype(np.int64)
    return rans.kernels().histogram(lane)


# _crans.decode_lanes codes for the lanes layer -> (exception, rule, message)
_NATIVE_LANE_ERRORS = {
    20: (CorruptPayload, "LAN-02", "the expected length does not split into the lanes"),
    21: (CorruptPayload, "LAN-03", "lane headers run past the payload"),
    22: (CorruptPayload, "LAN-03", "lane lengths do not add up to the payload"),
    23: (CorruptPayload, "LAN-05", "raw lane {j} does not hold D bytes"),
    24: (CorruptPayload, "LAN-05", "fill lane {j} does not hold 1 byte"),
    25: (UnsupportedFeature, "LAN-04", "unknown lane method in lane {j}"),
    27: (CorruptPayload, "RSP-01", "rans_split lane {j} is empty or its top_bits is not 1, 2 or 4"),
    28: (CorruptPayload, "RSP-02", "rans_split lane {j} cannot hold its low bits"),
    29: (CorruptPayload, "RSP-03", "rans_split lane {j} has padding bits set"),
}
_NEED_PYTHON = 26


class LanesCodec(BytesToBytesCodec):
    codec_id = 256
    name = "lanes"

    def __init__(self, lane_count: int, level: int = 3):
        if not 1 <= lane_count <= 16:
            raise MalformedRecord(f"lane_count {lane_count} not in 1..16", rule="LAN-01")
        self.lane_count = lane_count
        self.level = level  # encoder choice only; not stored

    @classmethod
    def from_config(cls, config: bytes) -> "LanesCodec":
        if len(config) != 1:
            raise MalformedRecord(f"'lanes' config must be 1 byte, got {len(config)}",
                                  rule="LAN-01")
        return cls(config[0])

    def config_bytes(self) -> bytes:
        return bytes([self.lane_count])

    def describe(self) -> str:
        return f"lanes({self.lane_count})"

    def encode(self, data) -> bytes:
        buf = np.frombuffer(data, dtype=np.uint8)
        if buf.size % self.lane_count:
            raise ValueError("lanes: input length is not a multiple of lane_count")
        d = buf.size // self.lane_count
        lanes = [buf[j * d:(j + 1) * d] for j in range(self.lane_count)]
        counts = [_histogram(lane) if d else None for lane in lanes]
        plans = [self._rans_plan(lane, c) for lane, c in zip(lanes, counts)]
        splits = [self._split_plan(lane, p) for lane, p in zip(lanes, plans)]
        plans = [(-1, p[1]) if s is not None else p for p, s in zip(plans, splits)]
        # a chunk with one rans lane gets 32 states, so that a vector decoder has 4 chains in
        # flight (1-byte dtypes; float16, whose top mantissa plane stays raw; float32 and
        # bfloat16, whose top mantissa plane is rans_split, decoded on its own); with two or more
        # it decodes two lanes of 16 states together instead
        single = sum(p[0] > 0 for p in plans) == 1
        headers, bodies = [], []
        for lane, c, plan, sp in zip(lanes, counts, plans, splits):
            if sp is not None:
                headers.append(_LANE_HEADER.pack(METHOD_RANS_SPLIT, len(sp)))
                bodies.append(sp)
                continue
            method, body = self.encode_lane(lane, c, plan,
                                            2 * rans.ENCODER_STATES if single else None)
            headers.append(_LANE_HEADER.pack(method, len(body)))
            bodies.append(body)
        return b"".join(headers) + b"".join(bodies)

    @staticmethod
    def _rans_plan(lane: np.ndarray, counts) -> tuple[int, float]:
        """(R, estimated bytes) when rans is worth building for this lane, else (-1, size)."""
        d = lane.size
        if d == 0 or counts[lane[0]] == d:
            return -1, d
        if d < RANS_MIN_LANE:
            r, est = rans.choose_scale(counts, SMALL_SCALES[0], SMALL_SCALES[1], SMALL_STATES)
        else:
            r, est = rans.estimate(counts)
        return (r, est) if r > 0 and est < d else (-1, d)

    @staticmethod
    def _split_plan(lane: np.ndarray, plan: tuple[int, float]) -> bytes | None:
        """The rans_split lane data when it should replace rans (module doc), else None."""
        r, est = plan
        d = lane.size
        if r <= 0 or d < RANS_MIN_LANE or est < d * (1 - 1 / SPLIT_TRY):
            return None
        k = rans_split.ENCODER_TOP_BITS
        parts = rans_split.split(lane, k)
        if rans_split.estimate(d, k, rans_split.histogram(parts[0])) > est + d / SPLIT_SLACK:
            return None
        body = rans_split.encode(lane, k, parts=parts)
        return body if len(body) < d else None

    def encode_lane(self, lane: np.ndarray, counts=None, plan=None, n_states=None
                    ) -> tuple[int, bytes]:
        """(method, data): the fewest bytes among raw, fill, rans and zstd (see module doc)."""
        d = lane.size
        if d == 0:
            return METHOD_RAW, b""
        counts = _histogram(lane) if counts is None else counts
        if counts[lane[0]] == d:
            return METHOD_FILL, lane[:1].tobytes()
        best = (METHOD_RAW, None, d)  # the body is built only for the winner
        r, est = self._rans_plan(lane, counts) if plan is None else plan
        if r > 0:
            body = rans.encode(lane, counts, r, SMALL_STATES if d < RANS_MIN_LANE else n_states)
            if len(body) < d:
                best = (METHOD_RANS, body, len(body))
        if d > 64 and self._zstd_may_win(lane, best[2]):
            z = _compressor(self.level).compress(lane)
            # short lanes need zstd to win by 1/ZSTD_GAIN (see there), longer ones by a byte
            bar = best[2] * (ZSTD_GAIN - 1) / ZSTD_GAIN if d <= 4 * ZSTD_SAMPLE else best[2]
            if len(z) < bar:
                best = (METHOD_ZSTD, z, len(z))
        method, body, _ = best
        return method, lane.tobytes() if body is None else body

    def _zstd_may_win(self, lane: np.ndarray, cost: int) -> bool:
        d = lane.size
        if d <= 4 * ZSTD_SAMPLE:
            return True
        if rans.native is not None and \
                rans.native.repeats(lane[:ZSTD_SAMPLE]) < ZSTD_SAMPLE // 50:
            return False  # no repeats in the sample: zstd's literals cannot beat order-0 coding
        return self.zstd_sample_wins(lane, cost, self.level)

    @staticmethod
    def zstd_sample_wins(lane: np.ndarray, cost: int, level: int = 3) -> bool:
        """Whether zstd on a 4 KiB sample compresses clearly below `cost` bytes for the lane."""
        sample = len(_compressor(level).compress(lane[:ZSTD_SAMPLE]))
        return sample < 0.9 * cost * ZSTD_SAMPLE / lane.size

    def decode(self, data, expected_length):
        data = memoryview(data)
        if rans.native is not None:
            # one call for the whole payload: raw, fill and rans lanes, rans lanes decoded in
            # pairs by the vector decoder; a payload with a zstd lane takes the path below
            out = np.empty(expected_length, np.uint8)
            code, j = rans.native.decode_lanes(data, self.lane_count, out)
            if code == 0:
                return out
            if code in rans.NATIVE_ERRORS:
                raise rans.native_error(code, f" (lane {j})")
            if code != _NEED_PYTHON:
                cls, rule, msg = _NATIVE_LANE_ERRORS[code]
                raise cls(msg.format(j=j), rule=rule)
        return self._decode_python(data, expected_length)

    def _decode_python(self, data: memoryview, expected_length: int):
        n = self.lane_count
        if expected_length % n:
            raise CorruptPayload(f"{expected_length} bytes do not split into {n} lanes",
                                 rule="LAN-02")
        d = expected_length // n
        head = n * _LANE_HEADER.size
        if len(data) < head:
            raise CorruptPayload("lane headers run past the payload", rule="LAN-03")
        lanes = [_LANE_HEADER.unpack_from(data, j * _LANE_HEADER.size) for j in range(n)]
        if head + sum(length for _, length in lanes) != len(data):
            raise CorruptPayload("lane lengths do not add up to the payload", rule="LAN-03")
        out = np.empty(expected_length, np.uint8)  # every lane below writes all of its D bytes
        pos = head
        for j, (method, length) in enumerate(lanes):
            body = data[pos:pos + length]
            pos += length
            if method == METHOD_RAW:
                if length != d:
                    raise CorruptPayload(f"raw lane {j} holds {length} bytes, expected {d}",
                                         rule="LAN-05")
                out[j * d:(j + 1) * d] = np.frombuffer(body, np.uint8)
            elif method == METHOD_FILL:
                if length != 1:
                    raise CorruptPayload(f"fill lane {j} holds {length} bytes, expected 1",
                                         rule="LAN-05")
                out[j * d:(j + 1) * d] = body[0]
            elif method == METHOD_ZSTD:
                out[j * d:(j + 1) * d] = np.frombuffer(zstd_decode_exact(body, d), np.uint8)
            elif method == METHOD_RANS:
                rans.decode_into(body, out[j * d:(j + 1) * d])
            elif method == METHOD_RANS_SPLIT:
                rans_split.decode_into(body, out[j * d:(j + 1) * d])
            else:
                raise UnsupportedFeature(f"unknown lane method {method}", rule="LAN-04")
        return out
