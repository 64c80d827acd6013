"""Lane method 6 `rans_split` of codec `lanes`: spec/codecs/rans_split.md.

The top k bits of each byte are packed n = 8/k bytes to a symbol and coded with `rans`
(rans.py); the low 8 - k bits are stored as a little-endian bit string. Why: a float's top mantissa
plane is noise but for a slight skew of its top bits, and coding whole bytes spends one rANS symbol
per byte for a few hundredths of a bit; k = 2 keeps most of that for a quarter of the symbols.

split/join here are the numpy reference (and the path without the C kernels); _crans.c has the
same loops (`split_pack`, and the join inside its lane decoder).
"""

from __future__ import annotations

import numpy as np

from ..errors import CorruptPayload
from . import rans

METHOD_RANS_SPLIT = 6  # 3 and 5 stay unassigned: vectors x_LAN-04_method_3/_5 expect them unknown
TOP_BITS = (1, 2, 4)
ENCODER_TOP_BITS = 2
# decoded on its own: 16 states (two vector groups) decode a quarter of the symbols about as fast
# as 32 (tools: 136 against 129 us per 256K-byte lane) and cost 64 bytes less per chunk
ENCODER_STATES = 16


def sizes(d: int, k: int) -> tuple[int, int]:
    """(B, G): bytes of `low_bits` and symbols of a lane of d bytes (§1)."""
    return -(-d * (8 - k) // 8), -(-d * k // 8)


def _bits_lsb_first(values: np.ndarray, width: int, nbytes: int) -> np.ndarray:
    """`values` (each < 2^width) as a bit string, value i in bits i*width.., padded with zeros."""
    bits = ((values[:, None] >> np.arange(width, dtype=np.uint8)) & 1).astype(np.uint8).reshape(-1)
    out = np.packbits(bits, bitorder="little")
    return np.concatenate([out, np.zeros(nbytes - out.size, np.uint8)]) if out.size < nbytes \
        else out


def _fields_lsb_first(buf: np.ndarray, width: int, count: int) -> np.ndarray:
    """The inverse: `count` numbers of `width` bits from the bit string `buf`."""
    bits = np.unpackbits(buf, bitorder="little")[:count * width].reshape(count, width)
    return (bits.astype(np.uint16) << np.arange(width, dtype=np.uint16)).sum(1).astype(np.uint8)


def split(lane: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(symbols, low_bits) of a lane (uint8), as §2 lays them out."""
    d = lane.size
    n = 8 // k
    b, g = sizes(d, k)
    if native_split is not None:
        sym, low = np.empty(g, np.uint8), np.empty(b, np.uint8)
        native_split(lane, k, sym, low)
        return sym, low
    top = np.zeros(g * n, np.uint8)
    top[:d] = lane >> (8 - k)
    sym = (top.reshape(g, n).astype(np.uint16) << (k * np.arange(n, dtype=np.uint16))).sum(1)
    low = _bits_lsb_first(lane & ((1 << (8 - k)) - 1), 8 - k, b)
    return sym.astype(np.uint8), low


def join(sym: np.ndarray, low: np.ndarray, k: int, d: int) -> np.ndarray:
    """The lane of d bytes from its symbols and low bits (checked by the caller)."""
    n = 8 // k
    top = ((sym[:, None] >> (k * np.arange(n, dtype=np.uint8))) & ((1 << k) - 1)).reshape(-1)[:d]
    return (top << (8 - k)).astype(np.uint8) | _fields_lsb_first(low, 8 - k, d)


def encode(lane: np.ndarray, k: int = ENCODER_TOP_BITS, n_states: int | None = None,
           parts: tuple | None = None) -> bytes:
    """The lane data of `rans_split` for `lane`; `parts` = split(lane, k) if already made."""
    sym, low = split(lane, k) if parts is None else parts
    counts = histogram(sym)
    if not sym.size:  # no symbols: any table will do (rans.md §3: D = 0)
        counts[0] = 1
    r, _ = rans.estimate(counts)
    if r <= 0:  # a single symbol value, or none: still a valid rans lane with R = 12
        r = rans.ENCODER_SCALES[1]
    n_states = ENCODER_STATES if n_states is None else n_states
    return bytes([k]) + low.tobytes() + rans.encode(sym, counts, r, n_states)


def estimate(lane_size: int, k: int, sym_counts: np.ndarray) -> float:
    """Bytes of the lane data from the symbols' histogram (the rans part estimated)."""
    b, _ = sizes(lane_size, k)
    r, est = rans.estimate(sym_counts)
    return 1 + b + (est if r > 0 else 64.0)


def histogram(sym: np.ndarray) -> np.ndarray:
    if rans.native is not None:
        counts = np.empty(256, np.uint64)
        rans.native.histogram(sym, counts)
        return counts.astype(np.int64)
    return np.bincount(sym, minlength=256).astype(np.int64)


def check_layout(body, d: int) -> tuple[int, int, int]:
    """RSP-01, RSP-02: (k, B, G) of lane data `body` for a lane of d bytes."""
    if len(body) < 1 or body[0] not in TOP_BITS:
        raise CorruptPayload("rans_split lane data is empty or its top_bits is not 1, 2 or 4",
                             rule="RSP-01")
    k = body[0]
    b, g = sizes(d, k)
    if len(body) < 1 + b:
        raise CorruptPayload(f"rans_split lane data of {len(body)} bytes cannot hold {b} bytes "
                             "of low bits", rule="RSP-02")
    return k, b, g


def check_padding(sym: np.ndarray, low: np.ndarray, k: int, d: int) -> None:
    """RSP-03: the bits that stand for no byte of the lane are zero."""
    n = 8 // k
    used = d - (sym.size - 1) * n if sym.size else n
    if used < n and int(sym[-1]) >> (k * used):
        raise CorruptPayload("rans_split: the last symbol has bits set past the lane",
                             rule="RSP-03")
    tail = d * (8 - k) % 8
    if tail and int(low[-1]) >> tail:
        raise CorruptPayload("rans_split: low_bits padding bits are not zero", rule="RSP-03")


def decode_into(body, out: np.ndarray) -> None:
    """Decode lane data `body` into `out` (uint8, D bytes) or raise CorruptPayload."""
    body = memoryview(body)
    d = out.size
    k, b, g = check_layout(body, d)
    low = np.frombuffer(body, np.uint8, b, 1)
    sym = np.empty(g, np.uint8)
    rans.decode_into(body[1 + b:], sym)
    check_padding(sym, low, k, d)
    out[:] = join(sym, low, k, d)


native_split = getattr(rans.native, "split_pack", None)
