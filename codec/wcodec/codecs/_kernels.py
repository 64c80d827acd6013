"""Native-speed loops (numba, compiled on first use and cached on disk) for the `planes` transform and
the `rans` lane method (spec/codecs/planes.md, spec/codecs/rans.md).

Every kernel is `nogil`, so the writer's and reader's thread pools run chunks in parallel. Nothing here
validates input: the callers in planes.py and rans.py check every length and field first; the decoder
kernel only reports how many words it read and its final states, and the caller judges them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

RANS_L = 1 << 16  # lower end of the normalized state interval [2^16, 2^32)


# -- planes (spec/codecs/planes.md): rotate floats left by one bit, byte j of plane = byte size-1-j
# One loop per element size, so that the byte moves are straight-line code.
@njit(cache=True, nogil=True)
def planes_encode(words, size, rotate, out):
    k = words.size
    if size == 2:
        for i in range(k):
            t = np.int64(words[i])
            if rotate:
                t = (t << 1) | (t >> 15)
            out[i] = (t >> 8) & 0xFF
            out[k + i] = t & 0xFF
    else:  # size 4
        for i in range(k):
            t = np.int64(words[i])
            if rotate:
                t = (t << 1) | (t >> 31)
            out[i] = (t >> 24) & 0xFF
            out[k + i] = (t >> 16) & 0xFF
            out[2 * k + i] = (t >> 8) & 0xFF
            out[3 * k + i] = t & 0xFF


@njit(cache=True, nogil=True)
def planes_decode(planes, size, rotate, words):
    k = words.size
    if size == 2:
        for i in range(k):
            t = (np.int64(planes[i]) << 8) | np.int64(planes[k + i])
            if rotate:
                t = (t >> 1) | ((t & 1) << 15)
            words[i] = t
    else:  # size 4
        for i in range(k):
            t = (np.int64(planes[i]) << 24) | (np.int64(planes[k + i]) << 16) | \
                (np.int64(planes[2 * k + i]) << 8) | np.int64(planes[3 * k + i])
            if rotate:
                t = (t >> 1) | ((t & 1) << 31)
            words[i] = t


# -- rans: encoder side ---------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def histogram(lane):
    # four partial counts: runs of one value (exponents) would otherwise stall on one counter
    h = np.zeros((4, 256), np.int64)
    n = lane.size
    m = n - n % 4
    for i in range(0, m, 4):
        h[0, lane[i]] += 1
        h[1, lane[i + 1]] += 1
        h[2, lane[i + 2]] += 1
        h[3, lane[i + 3]] += 1
    for i in range(m, n):
        h[0, lane[i]] += 1
    return h[0] + h[1] + h[2] + h[3]


@njit(cache=True, nogil=True)
def normalize(counts, scale_log2):
    """Frequencies summing to 2^R, >= 1 for every present symbol, close to minimal code length:
    floor(count * 2^R / n) (at least 1), the units left over to the largest remainders, and any
    excess (from the 1s) taken one unit at a time where it costs least. Returns (f, feasible)."""
    m = 1 << scale_log2
    n = counts.sum()
    f = np.zeros(256, np.int64)
    rem = np.zeros(256, np.float64)
    present = 0
    tot = 0
    for s in range(256):
        if counts[s] > 0:
            present += 1
            q = counts[s] * m / n
            v = np.int64(q)
            rem[s] = q - v
            if v < 1:
                v = 1
                rem[s] = -1.0
            f[s] = v
            tot += v
    if present > m or n == 0:
        return f, False
    if tot < m:
        order = np.argsort(-rem, kind="mergesort")  # stable: the C encoder sorts the same way
        k = 0
        while tot < m:
            s = order[k % 256]
            if counts[s] > 0:
                f[s] += 1
                tot += 1
            k += 1
    while tot > m:
        best, loss = -1, 1e300
        for s in range(256):
            if f[s] > 1:
                c = counts[s] / (f[s] - 0.5)  # ~ bits lost by f -> f - 1, up to a constant
                if c < loss:
                    loss, best = c, s
        f[best] -= 1
        tot -= 1
    return f, True


@njit(cache=True, nogil=True)
def table_layout(f):
    """(first, last, freq_bits, freq_base, table bytes) of the compact table of spec RNS §3."""
    a, b = 0, 255
    while f[a] == 0:
        a += 1
    while f[b] == 0:
        b -= 1
    lo, hi = f[a], f[a]
    for s in range(a, b + 1):
        lo = min(lo, f[s])
        hi = max(hi, f[s])
    base = lo if lo > 0 else 0  # a base needs every symbol of the range present
    span = hi - base
    w = 1
    while (1 << w) <= span:
        w += 1
    return a, b, w, base, ((b - a + 1) * w + 7) // 8


@njit(cache=True, nogil=True)
def pack_table(f, a, b, w, base, out):
    acc = 0
    nb = 0
    o = 0
    for s in range(a, b + 1):
        acc |= (f[s] - base) << nb
        nb += w
        while nb >= 8:
            out[o] = acc & 0xFF
            o += 1
            acc >>= 8
            nb -= 8
    if nb > 0:
        out[o] = acc & 0xFF


@njit(cache=True, nogil=True)
def unpack_table(buf, a, b, w, base):
    f = np.zeros(256, np.int64)
    acc = 0
    nb = 0
    o = 0
    mask = (1 << w) - 1
    for s in range(a, b + 1):
        while nb < w:
            acc |= np.int64(buf[o]) << nb
            o += 1
            nb += 8
        f[s] = (acc & mask) + base
        acc >>= w
        nb -= w
    return f


@njit(cache=True, nogil=True)
def choose_scale(counts, lo_scale, hi_scale, n_states):
    """The scale R in lo..hi giving the fewest bytes (header + table + states + words)."""
    best_r, best_bytes = -1, 1e300
    for r in range(lo_scale, hi_scale + 1):
        f, ok = normalize(counts, r)
        if not ok:
            continue
        t = table_layout(f)[4]
        size = 7 + t + 4 * n_states + code_bits(counts, f, r) / 8 + 2
        if size < best_bytes:
            best_bytes, best_r = size, r
    return best_r, best_bytes


@njit(cache=True, nogil=True)
def code_bits(counts, f, scale_log2):
    """Bits the symbols cost with frequencies f (the rANS stream is within a few words of this)."""
    b = 0.0
    for s in range(256):
        if counts[s] > 0:
            b += counts[s] * (scale_log2 - math.log2(f[s]))
    return b


@njit(cache=True, nogil=True)
def rans_encode(lane, f, scale_log2, n_states, words):
    """Encode `lane` backwards; fills `words` (capacity >= lane.size + n_states) in decoder order
    and returns (final states, word count)."""
    c = np.zeros(256, np.int64)
    for s in range(1, 256):
        c[s] = c[s - 1] + f[s - 1]
    x = np.full(n_states, RANS_L, np.int64)
    shift = 32 - scale_log2
    inv = np.zeros(256, np.float64)
    for s in range(256):
        if f[s] > 0:
            inv[s] = 1.0 / f[s]
    nw = 0
    d = lane.size
    j = (d - 1) % n_states if d > 0 else 0
    for i in range(d - 1, -1, -1):
        s = lane[i]
        fs = f[s]
        xj = x[j]
        if xj >= (fs << shift):
            words[nw] = xj & 0xFFFF
            nw += 1
            xj >>= 16
        # x div f through a double reciprocal: exact after one correction (x < 2^32, f <= 2^15)
        q = np.int64(xj * inv[s])
        r = xj - q * fs
        if r >= fs:
            q += 1
            r -= fs
        elif r < 0:
            q -= 1
            r += fs
        x[j] = (q << scale_log2) + r + c[s]
        j -= 1
        if j < 0:
            j = n_states - 1
    # words were produced last-symbol-first; the decoder reads them first-symbol-first
    lo, hi = 0, nw - 1
    while lo < hi:
        t = words[lo]
        words[lo] = words[hi]
        words[hi] = t
        lo += 1
        hi -= 1
    return x, nw


# -- rans: decoder side ---------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def rans_table(f, scale_log2):
    """slot -> (f_s << 16 | slot - C_s) and slot -> s, for the 2^R slots."""
    m = 1 << scale_log2
    ent = np.empty(m, np.uint32)
    sym = np.empty(m, np.uint8)
    c = 0
    for s in range(256):
        fs = f[s]
        for k in range(fs):
            ent[c + k] = (fs << 16) | k
            sym[c + k] = s
        c += fs
    return ent, sym


@njit(cache=True, nogil=True)
def rans_decode(states, words, ent, sym, scale_log2, out):
    """Decode out.size symbols; symbol i uses state i mod N. Returns (states, words read, ok);
    ok is False when a renormalization needed a word past the end (the caller reports it)."""
    n = states.size
    x = states.copy()
    mask = (1 << scale_log2) - 1
    nw = words.size
    d = out.size
    p = 0
    i = 0
    # fast rounds: N symbols read at most N words, so no bounds check is needed inside a round
    while i + n <= d and p + n <= nw:
        for j in range(n):
            xj = x[j]
            slot = xj & mask
            e = ent[slot]
            out[i + j] = sym[slot]
            xj = (e >> 16) * (xj >> scale_log2) + (e & 0xFFFF)
            if xj < RANS_L:
                xj = (xj << 16) | words[p]
                p += 1
            x[j] = xj
        i += n
    j = 0
    while i < d:  # tail, checked word by word
        xj = x[j]
        slot = xj & mask
        e = ent[slot]
        out[i] = sym[slot]
        xj = (e >> 16) * (xj >> scale_log2) + (e & 0xFFFF)
        if xj < RANS_L:
            if p >= nw:
                return x, p, False
            xj = (xj << 16) | words[p]
            p += 1
        x[j] = xj
        i += 1
        j += 1
        if j == n:
            j = 0
    return x, p, True


# -- rans: the fast path for what the reference encoder writes (N = 4, R <= 12) -------------------
@njit(cache=True, nogil=True)
def rans_table_packed(f, scale_log2):
    """slot -> s | (slot - C_s) << 8 | (f_s - 1) << 20, one 32-bit load per symbol (R <= 12)."""
    m = 1 << scale_log2
    ent = np.empty(m, np.uint32)
    c = 0
    for s in range(256):
        fs = f[s]
        for k in range(fs):
            ent[c + k] = s | (k << 8) | ((fs - 1) << 20)
        c += fs
    return ent


@njit(cache=True, nogil=True)
def rans_decode4(states, words, ent, scale_log2, out):
    """rans_decode for N = 4 with the states in registers; same results and return values."""
    x0, x1, x2, x3 = states[0], states[1], states[2], states[3]
    mask = (1 << scale_log2) - 1
    nw = words.size
    d = out.size
    p = 0
    i = 0
    while i + 4 <= d and p + 4 <= nw:
        e0 = np.int64(ent[x0 & mask])
        e1 = np.int64(ent[x1 & mask])
        e2 = np.int64(ent[x2 & mask])
        e3 = np.int64(ent[x3 & mask])
        out[i] = e0 & 0xFF
        out[i + 1] = e1 & 0xFF
        out[i + 2] = e2 & 0xFF
        out[i + 3] = e3 & 0xFF
        x0 = ((e0 >> 20) + 1) * (x0 >> scale_log2) + ((e0 >> 8) & 0xFFF)
        x1 = ((e1 >> 20) + 1) * (x1 >> scale_log2) + ((e1 >> 8) & 0xFFF)
        x2 = ((e2 >> 20) + 1) * (x2 >> scale_log2) + ((e2 >> 8) & 0xFFF)
        x3 = ((e3 >> 20) + 1) * (x3 >> scale_log2) + ((e3 >> 8) & 0xFFF)
        if x0 < RANS_L:
            x0 = (x0 << 16) | words[p]
            p += 1
        if x1 < RANS_L:
            x1 = (x1 << 16) | words[p]
            p += 1
        if x2 < RANS_L:
            x2 = (x2 << 16) | words[p]
            p += 1
        if x3 < RANS_L:
            x3 = (x3 << 16) | words[p]
            p += 1
        i += 4
    x = np.empty(4, np.int64)
    x[0], x[1], x[2], x[3] = x0, x1, x2, x3
    while i < d:  # tail, checked word by word
        j = i & 3
        xj = x[j]
        e = np.int64(ent[xj & mask])
        out[i] = e & 0xFF
        xj = ((e >> 20) + 1) * (xj >> scale_log2) + ((e >> 8) & 0xFFF)
        if xj < RANS_L:
            if p >= nw:
                return x, p, False
            xj = (xj << 16) | words[p]
            p += 1
        x[j] = xj
        i += 1
    return x, p, True

