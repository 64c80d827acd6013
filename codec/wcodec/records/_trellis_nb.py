"""The dependent quantizer's Viterbi search compiled with numba (optional: `wcodec[fast]`).
Same search and the same tie-breaking as quantized._numpy_trellis; only the encoder uses it."""

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True)
def _row(u, r, lam, bits, K, out, bp, lv):
    C = u.shape[1]
    INF = 1e300
    J0 = 0.0
    J1 = INF
    J2 = INF
    J3 = INF
    zr = lam * bits[K]
    for j in range(C):
        x = u[r, j]
        ka = np.int64(np.floor(x * 0.5))
        kb = ka + 1
        ca = (x - 2.0 * ka) ** 2 + lam * bits[min(max(ka, -K), K) + K]
        cb = (x - 2.0 * kb) ** 2 + lam * bits[min(max(kb, -K), K) + K]
        z = x * x + zr
        if ka & 1:
            c01 = ca
            k01 = ka
            c00 = cb
            k00 = kb
        else:
            c00 = ca
            k00 = ka
            c01 = cb
            k01 = kb
        if z < c00:
            c00 = z
            k00 = 0
        m = np.int64(np.floor((x - 1.0) * 0.5))
        r1 = 2 * m + 1
        r2 = r1 + 2
        k1 = (r1 + 1) // 2 if r1 > 0 else (r1 - 1) // 2
        k2 = (r2 + 1) // 2 if r2 > 0 else (r2 - 1) // 2
        c1 = (x - r1) ** 2 + lam * bits[min(max(k1, -K), K) + K]
        c2 = (x - r2) ** 2 + lam * bits[min(max(k2, -K), K) + K]
        c10 = z
        k10 = np.int64(0)
        c11 = INF
        k11 = np.int64(0)
        if k1 & 1:
            if c1 < c11:
                c11 = c1
                k11 = k1
        else:
            if c1 < c10:
                c10 = c1
                k10 = k1
        if k2 & 1:
            if c2 < c11:
                c11 = c2
                k11 = k2
        else:
            if c2 < c10:
                c10 = c2
                k10 = k2
        # next state s' = 2a' + b' comes from s = 2b' + b with parity a' ^ b (quantizer a = b')
        o0 = J0 + c00
        o1 = J1 + c01
        if o1 < o0:
            n0 = o1
            bp[j, 0] = 1
            lv[j, 0] = k01
        else:
            n0 = o0
            bp[j, 0] = 0
            lv[j, 0] = k00
        o0 = J2 + c10
        o1 = J3 + c11
        if o1 < o0:
            n1 = o1
            bp[j, 1] = 1
            lv[j, 1] = k11
        else:
            n1 = o0
            bp[j, 1] = 0
            lv[j, 1] = k10
        o0 = J0 + c01
        o1 = J1 + c00
        if o1 < o0:
            n2 = o1
            bp[j, 2] = 1
            lv[j, 2] = k00
        else:
            n2 = o0
            bp[j, 2] = 0
            lv[j, 2] = k01
        o0 = J2 + c11
        o1 = J3 + c10
        if o1 < o0:
            n3 = o1
            bp[j, 3] = 1
            lv[j, 3] = k10
        else:
            n3 = o0
            bp[j, 3] = 0
            lv[j, 3] = k11
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
    for j in range(C - 1, -1, -1):
        out[r, j] = lv[j, s]
        s = 2 * (s & 1) + bp[j, s]


@njit(cache=True, nogil=True, parallel=True)
def trellis_rows(u, lam, bits, K, out):
    R, C = u.shape
    nt = 8
    for t in prange(nt):
        bp = np.empty((C, 4), np.uint8)
        lv = np.empty((C, 4), np.int64)
        for r in range(t, R, nt):
            _row(u, r, lam, bits, K, out, bp, lv)
