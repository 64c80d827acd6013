"""The dependent quantizer's Viterbi search compiled with numba (optional: `wcodec[fast]`), and the
fused encoder kernel of a per-tensor-scale float32 record. Same search and the same tie-breaking as
quantized._numpy_trellis; only the encoder uses it.

Written branch-free: which candidate wins at an element depends on the data (the parity of the
nearest levels, the cost order of two paths), so a branch here mispredicts about every other time.
Costs are selected by min (minsd) and levels by arithmetic on the comparison bit or by conditional
moves; with the LLVM option below this took the search from ~50 to ~16 ns per element.
"""

import llvmlite.binding as _llvm
import numpy as np
from numba import njit

# LLVM's x86 "cmov converter" turns the conditional moves of the search back into branches when it
# guesses they are predictable; here they are not (random level parities), and the search runs 3×
# slower (52 vs 16 ns per element on Zen 3). A code-generation heuristic only: it changes no
# result, for this module's kernels or any other numba code compiled later in the process (numba
# itself sets process-wide LLVM options the same way, e.g. SVML).
_llvm.set_option("", "-x86-cmov-converter=false")

INF = 1e300


@njit(cache=True, nogil=True, inline="always")
def _rate(bits, k, K, clamp):
    return bits[(min(max(k, -K), K) if clamp else k) + K]


def padded_rate_table(bits, peak_u):
    """(table, K, clamp) for the search: the rate table extended by its end values to cover every
    candidate level of |u| ≤ peak_u, so the search needs no clamping (up to 2^20 entries; beyond
    that the table is kept and every index is clamped). Same costs either way."""
    K = (bits.size - 1) // 2
    Kp = int(peak_u * 0.5) + 3
    if Kp <= K or Kp > (1 << 20):
        return np.ascontiguousarray(bits, np.float64), K, Kp > K
    i = np.clip(np.arange(-Kp, Kp + 1), -K, K) + K
    return np.ascontiguousarray(bits[i], np.float64), Kp, False


@njit(cache=True, nogil=True)
def _forward(u, lam, bits, K, clamp, bp, lv):
    """Forward pass over one row u (1-D float64). bp[j] packs the four back-pointer bits of
    element j (bit s: state s came from its second predecessor), lv[j, s] the level that enters
    state s. Returns the best final state. Without `clamp`, bits must cover every candidate."""
    C = u.shape[0]
    J0 = 0.0
    J1 = INF
    J2 = INF
    J3 = INF
    zr = lam * bits[K]
    for j in range(C):
        x = u[j]
        # quantizer 0: even multipliers 2k; the two nearest, sorted by the parity of k
        ka = np.int64(np.floor(x * 0.5))
        odd = ka & 1
        ke = ka + odd
        ko = ka + 1 - odd
        de = x - 2.0 * ke
        do = x - 2.0 * ko
        ce = de * de + lam * _rate(bits, ke, K, clamp)
        co = do * do + lam * _rate(bits, ko, K, clamp)
        z = x * x + zr
        zw = z < ce
        c00 = z if zw else ce
        k00 = 0 if zw else ke
        c01 = co
        k01 = ko
        # quantizer 1: odd multipliers and zero; the two nearest odd multipliers r1 < x <= r2
        m = np.int64(np.floor((x - 1.0) * 0.5))
        r1 = 2 * m + 1
        r2 = r1 + 2
        k1 = (r1 + 2 * np.int64(r1 > 0) - 1) >> 1
        k2 = (r2 + 2 * np.int64(r2 > 0) - 1) >> 1
        d1 = x - r1
        d2 = x - r2
        c1 = d1 * d1 + lam * _rate(bits, k1, K, clamp)
        c2 = d2 * d2 + lam * _rate(bits, k2, K, clamp)
        p1 = k1 & 1
        p2 = k2 & 1
        # a candidate of the wrong parity costs INF (1e300 absorbs any real cost), so it never
        # wins a strict comparison: the same order of candidates as the numpy search
        c1e = c1 + INF * p1
        c1o = c1 + INF * (1 - p1)
        c2e = c2 + INF * p2
        c2o = c2 + INF * (1 - p2)
        t = c1e < z
        c10 = c1e if t else z
        k10 = k1 if t else 0
        t = c2e < c10
        c10 = c2e if t else c10
        k10 = k2 if t else k10
        t = c1o < INF
        c11 = c1o if t else INF
        k11 = k1 if t else 0
        t = c2o < c11
        c11 = c2o if t else c11
        k11 = k2 if t else k11
        # next state s' = 2a' + b' comes from s = 2b' + b with parity a' ^ b (quantizer a = b');
        # costs by min (minsd), levels and back-pointers by arithmetic on the comparison bit
        o0 = J0 + c00
        o1 = J1 + c01
        s0 = o1 < o0
        n0 = o1 if s0 else o0
        lv[j, 0] = k01 if s0 else k00
        o0 = J2 + c10
        o1 = J3 + c11
        s1 = o1 < o0
        n1 = o1 if s1 else o0
        lv[j, 1] = k11 if s1 else k10
        o0 = J0 + c01
        o1 = J1 + c00
        s2 = o1 < o0
        n2 = o1 if s2 else o0
        lv[j, 2] = k00 if s2 else k01
        o0 = J2 + c11
        o1 = J3 + c10
        s3 = o1 < o0
        n3 = o1 if s3 else o0
        lv[j, 3] = k10 if s3 else k11
        bp[j] = np.uint8(np.int64(s0) | (np.int64(s1) << 1) | (np.int64(s2) << 2) | (np.int64(s3) << 3))
        J0 = n0
        J1 = n1
        J2 = n2
        J3 = n3
    s = 0
    best = J0
    if J1 < best:
        best = J1
        s = 1
    if J2 < best:
        best = J2
        s = 2
    if J3 < best:
        best = J3
        s = 3
    return s


@njit(cache=True, nogil=True)
def trellis_rows(u, lam, bits, K, clamp, out):
    """Levels (rows, cols) of u (rows, cols) float64 into out (int64). Callers bound |u| ≤ 2^30,
    so every candidate level fits int32. Serial and without the GIL: callers run blocks of rows
    on threads (numba's own parallel loops spin-wait, which costs CPU time on a shared machine)."""
    R, C = u.shape
    bp = np.empty(C, np.uint8)
    lv = np.empty((C, 4), np.int32)
    for r in range(R):
        s = _forward(u[r], lam, bits, K, clamp, bp, lv)
        for j in range(C - 1, -1, -1):
            out[r, j] = lv[j, s]
            s = 2 * (s & 1) + ((bp[j] >> s) & 1)


@njit(cache=True, nogil=True)
def encode_rows_f32(x, S, lam, bits, K, clamp, dest, zig, dec, acc):
    """The fused encoder of a float32 tensor with one scale S (binary64 of a binary32) and the
    dependent quantizer, row by row: u = x / S and the trellis search, then in the backward walk
    of the Viterbi path the exact reconstruction of quantization.md §3.2 / QNT-08 (the path's
    state after element j has low bit a_j, the decoder's selector; m = 2k − a·sgn k,
    y = float64(m) × S, one rounding to binary32: what a decoder produces), the error statistics
    and the zigzag level.

    x (R, C) float32; outputs zig[dest[r]] the zigzag levels of row r (uint8/16/32: the caller
    sizes it from the peak, so they fit; dest groups rows by row class), dec (R, C) float32
    decoded values;
    acc[0:4] = Σ(x − y)², max |x − y|, Σx², max zigzag value (binary64). A decoded value that
    overflows binary32 comes out infinite; the caller then takes the general path (the spec
    saturates it)."""
    R, C = x.shape
    u = np.empty(C, np.float64)
    bp = np.empty(C, np.uint8)
    lv = np.empty((C, 4), np.int32)
    sse = 0.0
    mx = 0.0
    pw = 0.0
    zmax = 0
    for r in range(R):
        for j in range(C):
            u[j] = np.float64(x[r, j]) / S
        s = _forward(u, lam, bits, K, clamp, bp, lv)
        for j in range(C - 1, -1, -1):
            k = np.int64(lv[j, s])
            a = s & 1
            s = 2 * a + ((bp[j] >> s) & 1)
            mult = 2 * k - a * (np.int64(k > 0) - np.int64(k < 0))
            y = np.float32(np.float64(mult) * S)
            dec[r, j] = y
            xv = np.float64(x[r, j])
            e = xv - np.float64(y)
            sse += e * e
            ae = abs(e)
            mx = ae if ae > mx else mx
            pw += xv * xv
            zz = (k << 1) ^ (k >> 63)
            zig[dest[r], j] = zz
            zmax = zz if zz > zmax else zmax
    acc[0] = sse
    acc[1] = mx
    acc[2] = pw
    acc[3] = zmax


@njit(cache=True, nogil=True)
def stats_f32(x):
    """(Σx² in binary64, max |x|, all finite) of a float32 array in one pass."""
    s = 0.0
    m = 0.0
    ok = True
    for i in range(x.size):
        v = np.float64(x[i])
        if not np.isfinite(v):
            ok = False
        else:
            s += v * v
            a = abs(v)
            m = a if a > m else m
    return s, m, ok


@njit(cache=True, nogil=True)
def uniform_grid(x, steps, h, d):
    """Rate control's model of one tensor (a sample x, 1-D float64): for every step q of `steps`,
    the order-0 entropy h (bits per element) and the MSE d of the uniform quantizer round(x / q)
    (ties to even, as np.rint)."""
    n = x.size
    peak = 0.0
    for i in range(n):
        a = abs(x[i])
        peak = a if a > peak else peak
    for g in range(steps.size):
        q = steps[g]
        top = np.int64(np.rint(peak / q)) + 1
        cnt = np.zeros(2 * top + 1, np.int64)
        se = 0.0
        for i in range(n):
            k = np.rint(x[i] / q)
            e = x[i] - k * q
            se += e * e
            cnt[np.int64(k) + top] += 1
        ent = 0.0
        for c in cnt:
            if c:
                ent -= c * np.log2(c / n)
        h[g] = ent / n
        d[g] = se / n


@njit(cache=True, nogil=True)
def high_byte_hist(x, step, cls, out):
    """Rate control: per row class c, the histogram out[c, v] of the high byte v of the zigzag
    levels a step-`step` dependent quantizer gives the rows of x (R, C), approximated as
    min(floor(|x| / (256 · step)), 255) (|m| ≈ |x| / step and z ≈ |m|). Rare outliers put a
    second byte lane in a level stream; a sample seldom holds them, the whole tensor does."""
    R, C = x.shape
    inv = 1.0 / (256.0 * step)
    for r in range(R):
        c = cls[r]
        for j in range(C):
            v = np.int64(abs(np.float64(x[r, j])) * inv)
            out[c, min(v, 255)] += 1


@njit(cache=True, nogil=True)
def row_sumsq(x, out):
    """Σ x² of every row of x (R, C), in binary64."""
    R, C = x.shape
    for r in range(R):
        acc = 0.0
        for j in range(C):
            v = np.float64(x[r, j])
            acc += v * v
        out[r] = acc


@njit(cache=True, nogil=True)
def decode_rows_f32(z, rows, C, S, dependent, out):
    """Decoder (QNT-08, quantization.md §2.1, §3, §4) for a float32 tensor with one scale S:
    z holds the zigzag levels of `rows` (increasing row indices) in row order; row rows[i] of out
    (R, C) float32 gets y = float64(m) × S rounded once to binary32, m = k (uniform) or
    2k − a·sgn(k) (dependent, the state machine restarting at every row). Returns 0 when done,
    1 when a level exceeds 2^28 (QNT-06: nothing may be trusted), 2 when a value overflowed
    binary32 (the caller redoes the tensor with the spec's saturation)."""
    status = 0
    for i in range(rows.size):
        r = rows[i]
        st = 0
        base = i * C
        for j in range(C):
            zz = np.int64(z[base + j])
            if zz > (1 << 29):
                return 1
            k = (zz >> 1) ^ -(zz & 1)
            if dependent:
                a = st >> 1
                m = 2 * k - a * (np.int64(k > 0) - np.int64(k < 0))
                st = (((st & 1) ^ (k & 1)) << 1) | a
            else:
                m = k
            y = np.float32(np.float64(m) * S)
            if not np.isfinite(y):
                status = 2
            out[r, j] = y
    return status
