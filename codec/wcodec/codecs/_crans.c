/* Native kernels of lane method `rans` (spec/codecs/rans.md): one call decodes or encodes a whole
 * lane.
 *
 * Why C and not only numba: the scalar numba loop decodes ~0.5 G symbols/s, so a bf16 model with
 * two coded planes cannot decode as fast as peers that use SIMD Huffman decoders. Here the decoder
 * runs 8 states per AVX2 register (the spec's round of N states, words read in state order, is
 * exactly the interleaving a vector decoder needs) and falls back to a portable scalar loop. The
 * module is optional: wcodec/codecs/rans.py uses the numba kernels when it is not built, and the
 * tests check that both give the same bytes.
 *
 * decode_lane(body, out) -> 0 or an error code (ERR_* below; rans.py turns it into CorruptPayload
 *   with the rule id). Checks RNS-01..06 in the order of the spec before touching `out`.
 * encode_lane(lane, freqs, scale_log2, state_count, out) -> bytes written into `out` (the complete
 *   lane data: header, table, states, words) or -1 if `out` is too small.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define WC_X86 1
#endif

#define RANS_L 65536u
#define MAX_STATES 32
#define HEADER_SIZE 7

enum {
    ERR_SHORT_HEADER = 1,   /* RNS-01 */
    ERR_HEADER_RANGE = 2,   /* RNS-01 */
    ERR_TOO_SHORT = 3,      /* RNS-03 */
    ERR_PADDING = 4,        /* RNS-02 */
    ERR_SUM = 5,            /* RNS-02 */
    ERR_STATE = 6,          /* RNS-04 */
    ERR_TRUNCATED = 7,      /* RNS-05 */
    ERR_FINAL = 8,          /* RNS-06 */
};

/* ---- decoding --------------------------------------------------------------------------------- */

typedef struct {
    unsigned R, N;
    uint32_t f[256];
    uint32_t x[MAX_STATES];
    const uint8_t *words;  /* little-endian u16, possibly unaligned */
    size_t nw;
} lane_t;

static inline uint32_t load_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint32_t word_at(const uint8_t *w, size_t i) {
    return (uint32_t)w[2 * i] | ((uint32_t)w[2 * i + 1] << 8);
}

/* RNS-01..04: header, table, states. Fills `L`; returns 0 or an error code. */
static int parse_lane(const uint8_t *b, size_t n, lane_t *L) {
    if (n < HEADER_SIZE) return ERR_SHORT_HEADER;
    unsigned R = b[0], N = b[1], a = b[2], z = b[3], w = b[4];
    uint32_t base = (uint32_t)b[5] | ((uint32_t)b[6] << 8);
    if (R < 1 || R > 15 || N < 1 || N > MAX_STATES || a > z || w < 1 || w > 16)
        return ERR_HEADER_RANGE;
    size_t nbits = (size_t)(z - a + 1) * w, t = (nbits + 7) / 8;
    if (n < HEADER_SIZE + t + 4 * (size_t)N || (n - HEADER_SIZE - t) % 2) return ERR_TOO_SHORT;
    const uint8_t *tab = b + HEADER_SIZE;
    if ((nbits % 8) && (tab[t - 1] >> (nbits % 8))) return ERR_PADDING;
    memset(L->f, 0, sizeof L->f);
    uint64_t acc = 0, sum = 0;
    unsigned nb = 0;
    size_t o = 0;
    uint32_t mask = (1u << w) - 1;
    for (unsigned s = a; s <= z; s++) {
        while (nb < w) { acc |= (uint64_t)tab[o++] << nb; nb += 8; }
        L->f[s] = (uint32_t)(acc & mask) + base;
        sum += L->f[s];
        acc >>= w;
        nb -= w;
    }
    if (sum != (1u << R)) return ERR_SUM;
    const uint8_t *st = tab + t;
    for (unsigned j = 0; j < N; j++) {
        L->x[j] = load_u32(st + 4 * j);
        if (L->x[j] < RANS_L) return ERR_STATE;
    }
    L->R = R;
    L->N = N;
    L->words = st + 4 * N;
    L->nw = (n - HEADER_SIZE - t - 4 * (size_t)N) / 2;
    return 0;
}

/* slot -> s | (slot - C_s) << 8 | (f_s - 1) << 20 for R <= 12; for larger R the same fields in
 * 64 bits (s, slot - C_s << 8, f_s << 24). One load per decoded symbol either way. */
static void build_table(const lane_t *L, uint32_t *ent32, uint64_t *ent64) {
    uint32_t c = 0;
    for (unsigned s = 0; s < 256; s++) {
        uint32_t fs = L->f[s];
        for (uint32_t k = 0; k < fs; k++) {
            if (ent32) ent32[c + k] = s | (k << 8) | ((fs - 1) << 20);
            else ent64[c + k] = (uint64_t)s | ((uint64_t)k << 8) | ((uint64_t)fs << 24);
        }
        c += fs;
    }
}

/* The tail (and every lane the fast paths do not take): symbol by symbol, every read checked.
 * Starts at output byte i, word p. Returns 0 or ERR_TRUNCATED. */
static int decode_scalar(lane_t *L, const uint32_t *ent32, const uint64_t *ent64,
                         uint8_t *out, size_t d, size_t i, size_t *pp) {
    const unsigned R = L->R, N = L->N;
    const uint32_t mask = (1u << R) - 1;
    size_t p = *pp;
    unsigned j = (unsigned)(i % N);
    for (; i < d; i++) {
        uint32_t x = L->x[j], slot = x & mask, fs, bias;
        if (ent32) {
            uint32_t e = ent32[slot];
            out[i] = (uint8_t)e;
            fs = (e >> 20) + 1;
            bias = (e >> 8) & 0xFFF;
        } else {
            uint64_t e = ent64[slot];
            out[i] = (uint8_t)e;
            fs = (uint32_t)(e >> 24);
            bias = (uint32_t)(e >> 8) & 0xFFFF;
        }
        x = fs * (x >> R) + bias;
        if (x < RANS_L) {
            if (p >= L->nw) { L->x[j] = x; *pp = p; return ERR_TRUNCATED; }
            x = (x << 16) | word_at(L->words, p++);
        }
        L->x[j] = x;
        if (++j == N) j = 0;
    }
    *pp = p;
    return 0;
}

/* Four states in registers, branch-free renormalization (the branch mispredicts on half the
 * symbols of a mantissa plane). Rounds while N words are surely available. */
static size_t decode_fast4(lane_t *L, const uint32_t *ent, uint8_t *out, size_t d, size_t *pp) {
    const unsigned R = L->R;
    const uint32_t mask = (1u << R) - 1;
    uint32_t x0 = L->x[0], x1 = L->x[1], x2 = L->x[2], x3 = L->x[3];
    const uint8_t *w = L->words;
    size_t p = *pp, i = 0;
    while (i + 4 <= d && p + 4 <= L->nw) {
        uint32_t e0 = ent[x0 & mask], e1 = ent[x1 & mask], e2 = ent[x2 & mask], e3 = ent[x3 & mask];
        out[i] = (uint8_t)e0; out[i + 1] = (uint8_t)e1; out[i + 2] = (uint8_t)e2; out[i + 3] = (uint8_t)e3;
        x0 = ((e0 >> 20) + 1) * (x0 >> R) + ((e0 >> 8) & 0xFFF);
        x1 = ((e1 >> 20) + 1) * (x1 >> R) + ((e1 >> 8) & 0xFFF);
        x2 = ((e2 >> 20) + 1) * (x2 >> R) + ((e2 >> 8) & 0xFFF);
        x3 = ((e3 >> 20) + 1) * (x3 >> R) + ((e3 >> 8) & 0xFFF);
#define RENORM(x) do { uint32_t c_ = (x) < RANS_L; uint32_t y_ = ((x) << 16) | word_at(w, p); \
                       (x) = c_ ? y_ : (x); p += c_; } while (0)
        RENORM(x0); RENORM(x1); RENORM(x2); RENORM(x3);
        i += 4;
    }
    L->x[0] = x0; L->x[1] = x1; L->x[2] = x2; L->x[3] = x3;
    *pp = p;
    return i;
}

#ifdef WC_X86
/* perm[m] moves the k-th word of a loaded group to the k-th lane whose bit is set in m. */
static uint32_t perm_lut[256][8] __attribute__((aligned(32)));

static void init_perm(void) {
    for (unsigned m = 0; m < 256; m++) {
        unsigned k = 0;
        for (unsigned j = 0; j < 8; j++) perm_lut[m][j] = (m >> j) & 1 ? k++ : 0;
    }
}

/* One group of 8 states: decode 8 symbols into out[0..7], renormalize from words at *p. */
__attribute__((target("avx2,popcnt")))
static inline __m256i step8(__m256i x, const uint32_t *ent, __m128i rs, __m256i mask,
                            uint8_t *out, const uint8_t *w, size_t *p) {
    const __m256i one = _mm256_set1_epi32(1), b12 = _mm256_set1_epi32(0xFFF);
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    /* eight scalar loads, not vpgatherdd: on the AMD cores measured (tools/bench_rans_chains.c)
     * the gather instruction made the whole step about 1.5x slower */
    uint32_t sl[8] __attribute__((aligned(32)));
    _mm256_store_si256((__m256i *)sl, _mm256_and_si256(x, mask));
    __m256i e = _mm256_setr_epi32((int)ent[sl[0]], (int)ent[sl[1]], (int)ent[sl[2]], (int)ent[sl[3]],
                                  (int)ent[sl[4]], (int)ent[sl[5]], (int)ent[sl[6]], (int)ent[sl[7]]);
    __m256i sy = _mm256_shuffle_epi8(e, pick);
    _mm_storel_epi64((__m128i *)out, _mm_unpacklo_epi32(_mm256_castsi256_si128(sy),
                                                        _mm256_extracti128_si256(sy, 1)));
    __m256i fs = _mm256_add_epi32(_mm256_srli_epi32(e, 20), one);
    __m256i bias = _mm256_and_si256(_mm256_srli_epi32(e, 8), b12);
    x = _mm256_add_epi32(_mm256_mullo_epi32(fs, _mm256_srl_epi32(x, rs)), bias);
    __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(x, 16), _mm256_setzero_si256());
    unsigned m = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(need));
    __m256i wv = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + 2 * *p)));
    wv = _mm256_permutevar8x32_epi32(wv, _mm256_load_si256((const __m256i *)perm_lut[m]));
    x = _mm256_blendv_epi8(x, _mm256_or_si256(_mm256_slli_epi32(x, 16), wv), need);
    *p += (size_t)_mm_popcnt_u32(m);
    return x;
}

/* Up to 4 lanes whose N is a multiple of 8 (8 to 32), decoded together: each round steps every
 * group of 8 states of every lane, so 2 lanes of N = 16 keep 4 independent dependency chains in
 * flight (one chain is latency-bound: table loads, multiply, renormalization). A round of a lane reads
 * at most N words, and each group loads 8 words at its position: rounds run while p + N + 8 words
 * exist in every lane, and each lane's rest goes to decode_scalar. Returns nothing; i[] and p[]
 * say where each lane stopped. */
__attribute__((target("avx2,popcnt"), always_inline))
static inline void decode_avx2_kg(lane_t **L, const uint32_t **ent, uint8_t **out, size_t d,
                                  const unsigned k, const unsigned G0, size_t *iout, size_t *pout) {
    __m256i x[4][4], mask[4];
    __m128i rs[4];
    size_t p[4], i = 0;
    unsigned G[4];
    for (unsigned l = 0; l < k; l++) {
        G[l] = G0;
        rs[l] = _mm_cvtsi32_si128((int)L[l]->R);
        mask[l] = _mm256_set1_epi32((int)((1u << L[l]->R) - 1));
        for (unsigned g = 0; g < G[l]; g++)
            x[l][g] = _mm256_loadu_si256((const __m256i *)(L[l]->x + 8 * g));
        p[l] = 0;
    }
    for (;;) {
        int room = 1;
        for (unsigned l = 0; l < k; l++)
            room &= i + L[l]->N <= d && p[l] + L[l]->N + 8 <= L[l]->nw;
        if (!room) break;
        /* every lane of a set has the same N (decode_lanes groups them so) */
        for (unsigned g = 0; g < G0; g++)
            for (unsigned l = 0; l < k; l++)
                x[l][g] = step8(x[l][g], ent[l], rs[l], mask[l], out[l] + i + 8 * g, L[l]->words, &p[l]);
        i += L[0]->N;
    }
    for (unsigned l = 0; l < k; l++) {
        for (unsigned g = 0; g < G[l]; g++) _mm256_storeu_si256((__m256i *)(L[l]->x + 8 * g), x[l][g]);
        iout[l] = i;
        pout[l] = p[l];
    }
}

/* The loop above with k and N known to the compiler for the encoder's shapes (two lanes of 16
 * states, one lane of 32), so that every state register stays in a register; any other shape
 * runs the same code with runtime bounds. */
__attribute__((target("avx2,popcnt")))
static void decode_avx2(lane_t **L, const uint32_t **ent, uint8_t **out, size_t d, unsigned k,
                        size_t *iout, size_t *pout) {
    unsigned G = L[0]->N / 8;
    if (k == 2 && G == 2) decode_avx2_kg(L, ent, out, d, 2, 2, iout, pout);
    else if (k == 1 && G == 4) decode_avx2_kg(L, ent, out, d, 1, 4, iout, pout);
    else if (k == 1 && G == 2) decode_avx2_kg(L, ent, out, d, 1, 2, iout, pout);
    else if (k == 1) decode_avx2_kg(L, ent, out, d, 1, G, iout, pout);
    else if (k == 2) decode_avx2_kg(L, ent, out, d, 2, G, iout, pout);
    else if (k == 3) decode_avx2_kg(L, ent, out, d, 3, G, iout, pout);
    else decode_avx2_kg(L, ent, out, d, 4, G, iout, pout);  /* k <= 4: the arrays' size */
}

static int have_avx2;
#endif

static int finish_lane(lane_t *L, size_t i, size_t p, const uint32_t *ent32, const uint64_t *ent64,
                       uint8_t *out, size_t d) {
    int err = decode_scalar(L, ent32, ent64, out, d, i, &p);
    if (err) return err;
    if (p != L->nw) return ERR_FINAL;
    for (unsigned j = 0; j < L->N; j++)
        if (L->x[j] != RANS_L) return ERR_FINAL;
    return 0;
}

/* One lane alone (any R, N). `scratch` holds 2^15 u64. */
static int decode_one(lane_t *L, uint8_t *out, size_t d, uint64_t *scratch) {
    size_t p = 0, i = 0;
    if (L->R > 12) {
        build_table(L, NULL, scratch);
        return finish_lane(L, 0, 0, NULL, scratch, out, d);
    }
    uint32_t *ent = (uint32_t *)scratch;
    build_table(L, ent, NULL);
#ifdef WC_X86
    if (have_avx2 && L->N % 8 == 0) {
        lane_t *ls[1] = {L};
        const uint32_t *es[1] = {ent};
        uint8_t *os[1] = {out};
        decode_avx2(ls, es, os, d, 1, &i, &p);
    } else
#endif
    if (L->N == 4) i = decode_fast4(L, ent, out, d, &p);
    return finish_lane(L, i, p, ent, NULL, out, d);
}

/* ---- lane method 6 `rans_split` (spec/codecs/rans_split.md) ------------------------------------ */
/* Byte i = top k bits from symbol i / n (n = 8 / k, first byte in the lowest bits) over the low
 * 8 - k bits, taken LSB first from `low`. */
static void split_join_scalar(const uint8_t *sym, const uint8_t *low, size_t nlow, unsigned k,
                              size_t d, uint8_t *out, size_t i) {
    const unsigned n = 8 / k, wl = 8 - k;
    const uint32_t mk = (1u << k) - 1, ml = (1u << wl) - 1;
    for (; i < d; i++) {
        size_t bit = i * wl, byte = bit / 8;
        uint32_t v = low[byte] | (byte + 1 < nlow ? (uint32_t)low[byte + 1] << 8 : 0);
        uint32_t top = (sym[i / n] >> (k * (i % n))) & mk;
        out[i] = (uint8_t)((top << wl) | ((v >> (bit % 8)) & ml));
    }
}

#ifdef WC_X86
/* k = 2, eight bytes per step: 6 bytes of low bits and 2 symbols scattered with pdep (fast on
 * the Zen 3 and Intel cores this runs on). Returns how many bytes it wrote (a multiple of 8). */
__attribute__((target("bmi2")))
static size_t split_join2_bmi2(const uint8_t *sym, const uint8_t *low, size_t nlow, size_t d,
                               uint8_t *out) {
    size_t i = 0;
    for (; i + 8 <= d && 6 * (i / 8) + 8 <= nlow; i += 8) {
        uint64_t lo;
        uint16_t s;
        memcpy(&lo, low + 6 * (i / 8), 8);
        memcpy(&s, sym + i / 4, 2);
        uint64_t v = _pdep_u64(lo, 0x3F3F3F3F3F3F3F3Full) | _pdep_u64(s, 0xC0C0C0C0C0C0C0C0ull);
        memcpy(out + i, &v, 8);
    }
    return i;
}
__attribute__((target("bmi2")))
static size_t split_pack2_bmi2(const uint8_t *lane, size_t d, uint8_t *sym, uint8_t *low) {
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        uint64_t v;
        memcpy(&v, lane + i, 8);
        uint64_t lo = _pext_u64(v, 0x3F3F3F3F3F3F3F3Full);
        uint16_t s = (uint16_t)_pext_u64(v, 0xC0C0C0C0C0C0C0C0ull);
        memcpy(low + 6 * (i / 8), &lo, 6);
        memcpy(sym + i / 4, &s, 2);
    }
    return i;
}
static int have_bmi2;

/* The inverse for the encoder: 32 lane bytes to 24 bytes of low bits and 8 symbols per step.
 * Returns how many bytes it consumed (a multiple of 32); writes at most 4 bytes past its last
 * 24-byte group of low bits, so it stops while 4 more bytes of `low` are the caller's. */
__attribute__((target("avx2")))
static size_t split_pack2_avx2(const uint8_t *lane, size_t d, uint8_t *sym, uint8_t *low,
                               size_t nlow) {
    const __m256i gather = _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
                                            0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    const __m256i first = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                           0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i m6 = _mm256_set1_epi32(0x3F3F3F3F), m2 = _mm256_set1_epi32(0x03030303);
    const __m256i f0 = _mm256_set1_epi32(0x3F), f1 = _mm256_set1_epi32(0xFC0),
                  f2 = _mm256_set1_epi32(0x3F000), f3 = _mm256_set1_epi32(0xFC0000);
    const __m256i s0 = _mm256_set1_epi32(0x3), s1 = _mm256_set1_epi32(0xC),
                  s2 = _mm256_set1_epi32(0x30), s3 = _mm256_set1_epi32(0xC0);
    size_t i = 0;
    for (; i + 32 <= d && 3 * (i / 4) + 28 <= nlow; i += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(lane + i));
        __m256i x = _mm256_and_si256(v, m6);  /* the four 6-bit fields of each 32-bit group */
        __m256i lo = _mm256_or_si256(
            _mm256_or_si256(_mm256_and_si256(x, f0), _mm256_and_si256(_mm256_srli_epi32(x, 2), f1)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(x, 4), f2),
                            _mm256_and_si256(_mm256_srli_epi32(x, 6), f3)));
        lo = _mm256_shuffle_epi8(lo, gather);  /* 12 bytes at the bottom of each half */
        uint8_t *l = low + 3 * (i / 4);
        _mm_storeu_si128((__m128i *)l, _mm256_castsi256_si128(lo));
        _mm_storeu_si128((__m128i *)(l + 12), _mm256_extracti128_si256(lo, 1));
        __m256i t = _mm256_and_si256(_mm256_srli_epi32(v, 6), m2);  /* top 2 bits of each byte */
        __m256i sy = _mm256_or_si256(
            _mm256_or_si256(_mm256_and_si256(t, s0), _mm256_and_si256(_mm256_srli_epi32(t, 6), s1)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(t, 12), s2),
                            _mm256_and_si256(_mm256_srli_epi32(t, 18), s3)));
        sy = _mm256_shuffle_epi8(sy, first);
        uint32_t a = (uint32_t)_mm256_extract_epi32(sy, 0), b = (uint32_t)_mm256_extract_epi32(sy, 4);
        memcpy(sym + i / 4, &a, 4);
        memcpy(sym + i / 4 + 4, &b, 4);
    }
    return i;
}

/* k = 2, 32 bytes per step: 24 bytes of low bits spread to eight 24-bit groups by a byte shuffle,
 * each group's four 6-bit fields and its symbol's four 2-bit fields put in place by shifts and
 * masks. Returns how many bytes it wrote (a multiple of 32). */
__attribute__((target("avx2")))
static size_t split_join2_avx2(const uint8_t *sym, const uint8_t *low, size_t nlow, size_t d,
                               uint8_t *out) {
    const __m256i spread = _mm256_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1,
                                            0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);
    const __m256i m0 = _mm256_set1_epi32(0x3F), m1 = _mm256_set1_epi32(0x3F00),
                  m2 = _mm256_set1_epi32(0x3F0000), m3 = _mm256_set1_epi32(0x3F000000),
                  t0 = _mm256_set1_epi32(0xC0), t1 = _mm256_set1_epi32(0xC000),
                  t2 = _mm256_set1_epi32(0xC00000), t3 = _mm256_set1_epi32((int)0xC0000000u);
    size_t i = 0;
    for (; i + 32 <= d && 3 * (i / 4) + 28 <= nlow; i += 32) {
        const uint8_t *l = low + 3 * (i / 4);
        __m256i v = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)l)),
            _mm_loadu_si128((const __m128i *)(l + 12)), 1);
        v = _mm256_shuffle_epi8(v, spread);
        __m256i lo = _mm256_or_si256(
            _mm256_or_si256(_mm256_and_si256(v, m0), _mm256_and_si256(_mm256_slli_epi32(v, 2), m1)),
            _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(v, 4), m2),
                            _mm256_and_si256(_mm256_slli_epi32(v, 6), m3)));
        __m256i sv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(sym + i / 4)));
        __m256i hi = _mm256_or_si256(
            _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(sv, 6), t0),
                            _mm256_and_si256(_mm256_slli_epi32(sv, 12), t1)),
            _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(sv, 18), t2),
                            _mm256_and_si256(_mm256_slli_epi32(sv, 24), t3)));
        _mm256_storeu_si256((__m256i *)(out + i), _mm256_or_si256(lo, hi));
    }
    return i;
}
#endif

static void split_join(const uint8_t *sym, const uint8_t *low, size_t nlow, unsigned k, size_t d,
                       uint8_t *out) {
    size_t i = 0;
#ifdef WC_X86
    if (k == 2 && have_avx2) i = split_join2_avx2(sym, low, nlow, d, out);
    if (k == 2 && have_bmi2) i += split_join2_bmi2(sym + i / 4, low + 3 * (i / 4), nlow - 3 * (i / 4),
                                                   d - i, out + i);
#endif
    split_join_scalar(sym, low, nlow, k, d, out, i);
}

/* The encoder's side: symbols (ceil(d k / 8) bytes) and low bits (ceil(d (8 - k) / 8) bytes),
 * padding bits zero. */
static void split_pack(const uint8_t *lane, size_t d, unsigned k, uint8_t *sym, uint8_t *low) {
    const unsigned n = 8 / k, wl = 8 - k;
    size_t i = 0, g = (d * k + 7) / 8, b = (d * wl + 7) / 8;
#ifdef WC_X86
    if (k == 2 && have_avx2) i = split_pack2_avx2(lane, d, sym, low, b);
    if (k == 2 && have_bmi2) i += split_pack2_bmi2(lane + i, d - i, sym + i / 4, low + 3 * (i / 4));
#endif
    /* i is a multiple of 8: the rest starts on whole bytes of both outputs */
    memset(sym + i * k / 8, 0, g - i * k / 8);
    memset(low + i * wl / 8, 0, b - i * wl / 8);
    for (; i < d; i++) {
        size_t bit = i * wl;
        uint32_t lo = (uint32_t)(lane[i] & ((1u << wl) - 1)) << (bit % 8);
        low[bit / 8] |= (uint8_t)lo;
        if (lo >> 8) low[bit / 8 + 1] |= (uint8_t)(lo >> 8);
        sym[i / n] |= (uint8_t)((lane[i] >> wl) << (k * (i % n)));
    }
}

#define LANE_HEADER 5
enum {
    ERR_LAN02 = 20, ERR_LAN03_HEAD = 21, ERR_LAN03_SUM = 22, ERR_LAN05_RAW = 23, ERR_LAN05_FILL = 24,
    ERR_LAN04 = 25, NEED_PYTHON = 26,  /* a zstd lane: the caller decodes this payload itself */
    ERR_RSP01 = 27, ERR_RSP02 = 28, ERR_RSP03 = 29,  /* rans_split (rans_split.md) */
};

/* A rans_split lane whose symbols' header parsed into L: the symbols (RNS-05, RNS-06), the
 * padding bits (RSP-03), then the bytes. The symbols go to `scratch` past the two tables when they
 * fit there and the table is the small one, else to a buffer of their own. */
#define SPLIT_SCRATCH_OFFSET 32768  /* bytes: two tables of 4096 u32 */
#define SPLIT_SCRATCH_BYTES ((sizeof(uint64_t) << 15) - SPLIT_SCRATCH_OFFSET)
static int decode_split(lane_t *L, unsigned k, const uint8_t *low, size_t nlow, uint8_t *out,
                        size_t d, uint64_t *scratch) {
    const unsigned n = 8 / k;
    size_t g = (d * k + 7) / 8;
    uint8_t *sym, *own = NULL;
    if (L->R <= 12 && g <= SPLIT_SCRATCH_BYTES) {
        sym = (uint8_t *)scratch + SPLIT_SCRATCH_OFFSET;
    } else {
        own = malloc(g ? g : 1);  /* g <= d / 2: bounded by the checked output length */
        if (!own) return NEED_PYTHON;  /* out of memory, not a format error: the Python path retries */
        sym = own;
    }
    int err = decode_one(L, sym, g, scratch);
    if (!err) {
        size_t used = d - (g ? g - 1 : 0) * n;  /* bytes the last symbol stands for */
        unsigned tail = (unsigned)(d * (8 - k) % 8);
        if ((g && used < n && (sym[g - 1] >> (k * used))) || (tail && (low[nlow - 1] >> tail)))
            err = ERR_RSP03;
        else
            split_join(sym, low, nlow, k, d, out);
    }
    free(own);
    return err;
}

/* The whole `lanes` payload (spec/codecs/lanes.md) into out (L bytes). Checks run in the order of
 * the spec and of lanes.py: a lane's error is reported only if every lane before it decoded. The
 * rans lanes that can go through the vector decoder are decoded together, two at a time. Returns
 * an error code and sets *bad to the lane it concerns. */
static int decode_lanes_impl(const uint8_t *data, size_t n, unsigned lanes, uint8_t *out, size_t total,
                             uint64_t *scratch, unsigned *bad) {
    *bad = 0;
    if (total % lanes) return ERR_LAN02;
    size_t d = total / lanes, head = (size_t)lanes * LANE_HEADER;
    if (n < head) return ERR_LAN03_HEAD;
    size_t sum = 0;
    for (unsigned j = 0; j < lanes; j++) {
        const uint8_t *h = data + j * LANE_HEADER;
        if (h[0] == 1) return NEED_PYTHON;
        sum += (size_t)load_u32(h + 1);
    }
    if (head + sum != n) return ERR_LAN03_SUM;
    /* pass 1, in lane order: methods, lengths, rans headers; raw and fill decoded right away. The
     * first lane that fails stops the pass; lanes before it still get decoded (and may fail
     * first). */
    lane_t L[16];
    int is_rans[16] = {0}, first_err = 0;
    unsigned split_k[16] = {0};  /* rans_split lanes: k, where L[j] is the lane of their symbols */
    const uint8_t *split_low[16];
    size_t split_nlow[16];
    unsigned nl = lanes;
    size_t pos = head;
    for (unsigned j = 0; j < lanes && !first_err; j++) {
        const uint8_t *h = data + j * LANE_HEADER, *body = data + pos;
        size_t len = load_u32(h + 1);
        pos += len;
        uint8_t *o = out + (size_t)j * d;
        switch (h[0]) {
        case 0:
            if (len != d) first_err = ERR_LAN05_RAW; else memcpy(o, body, d);
            break;
        case 2:
            if (len != 1) first_err = ERR_LAN05_FILL; else memset(o, body[0], d);
            break;
        case 4:
            first_err = parse_lane(body, len, &L[j]);
            is_rans[j] = !first_err;
            break;
        case 6: {  /* RSP-01, RSP-02, then the symbols' rans header (RNS-01..04) */
            unsigned k = len ? body[0] : 0;
            if (k != 1 && k != 2 && k != 4) { first_err = ERR_RSP01; break; }
            size_t nlow = (d * (8 - k) + 7) / 8;
            if (len < 1 + nlow) { first_err = ERR_RSP02; break; }
            first_err = parse_lane(body + 1 + nlow, len - 1 - nlow, &L[j]);
            if (!first_err) { split_k[j] = k; split_low[j] = body + 1; split_nlow[j] = nlow; }
            break;
        }
        default:
            first_err = ERR_LAN04;
        }
        if (first_err) { nl = j; *bad = j; }
    }
    /* pass 2: the rans lanes before nl; pairs of vector-decodable lanes go together */
    int pending = -1;  /* a vector-decodable lane waiting for a partner */
    uint32_t *ent2 = (uint32_t *)scratch + 4096;  /* the partner's table */
    for (unsigned j = 0; j < nl; j++) {
        if (split_k[j]) {
            /* decoded on its own, after any lane before it (errors stay in lane order) */
            if (pending >= 0) {
                int err = decode_one(&L[pending], out + (size_t)pending * d, d, scratch);
                if (err) { *bad = (unsigned)pending; return err; }
                pending = -1;
            }
            int err = decode_split(&L[j], split_k[j], split_low[j], split_nlow[j],
                                   out + (size_t)j * d, d, scratch);
            if (err) { *bad = j; return err; }
            continue;
        }
        if (!is_rans[j]) continue;
        uint8_t *o = out + (size_t)j * d;
        int err = 0;
#ifdef WC_X86
        if (have_avx2 && L[j].N % 8 == 0 && L[j].R <= 12) {
            if (pending < 0 || L[pending].N != L[j].N) {
                if (pending >= 0) {  /* different N: decode the waiting one alone */
                    err = decode_one(&L[pending], out + (size_t)pending * d, d, scratch);
                    if (err) { *bad = (unsigned)pending; return err; }
                }
                pending = (int)j;
                continue;
            }
            uint32_t *ent1 = (uint32_t *)scratch;
            build_table(&L[pending], ent1, NULL);
            build_table(&L[j], ent2, NULL);
            lane_t *ls[2] = {&L[pending], &L[j]};
            const uint32_t *es[2] = {ent1, ent2};
            uint8_t *os[2] = {out + (size_t)pending * d, o};
            size_t is[2], ps[2];
            decode_avx2(ls, es, os, d, 2, is, ps);
            for (unsigned l = 0; l < 2; l++) {
                size_t i = is[l], p = ps[l];
                /* each lane on alone with the vector loop, then its checked tail */
                if (i < d) {
                    lane_t *one[1] = {ls[l]};
                    const uint32_t *e1[1] = {es[l]};
                    uint8_t *o1[1] = {os[l] + i};
                    size_t i2, p2;
                    lane_t tmp = *ls[l];
                    tmp.words = ls[l]->words + 2 * p;
                    tmp.nw = ls[l]->nw - p;
                    one[0] = &tmp;
                    decode_avx2(one, e1, o1, d - i, 1, &i2, &p2);
                    memcpy(ls[l]->x, tmp.x, sizeof tmp.x);
                    i += i2;
                    p += p2;
                }
                err = finish_lane(ls[l], i, p, es[l], NULL, os[l], d);
                if (err) { *bad = l ? j : (unsigned)pending; return err; }
            }
            pending = -1;
            continue;
        }
#endif
        if (pending >= 0) {
            err = decode_one(&L[pending], out + (size_t)pending * d, d, scratch);
            if (err) { *bad = (unsigned)pending; return err; }
            pending = -1;
        }
        err = decode_one(&L[j], o, d, scratch);
        if (err) { *bad = j; return err; }
    }
    if (pending >= 0) {
        int err = decode_one(&L[pending], out + (size_t)pending * d, d, scratch);
        if (err) { *bad = (unsigned)pending; return err; }
    }
    return first_err;
}

/* decode_lane(body, out) -> error code: one rans lane. */
static PyObject *py_decode_lane(PyObject *self, PyObject *args) {
    Py_buffer body, out;
    if (!PyArg_ParseTuple(args, "y*w*", &body, &out)) return NULL;
    int err;
    uint64_t *scratch = PyMem_RawMalloc(sizeof(uint64_t) << 15);
    if (!scratch) {
        PyBuffer_Release(&body);
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    lane_t L;
    err = parse_lane(body.buf, (size_t)body.len, &L);
    if (!err) err = decode_one(&L, out.buf, (size_t)out.len, scratch);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    PyBuffer_Release(&body);
    PyBuffer_Release(&out);
    return PyLong_FromLong(err);
}

/* decode_lanes(data, lane_count, out) -> (error code, lane): a whole `lanes` payload. */
static PyObject *py_decode_lanes(PyObject *self, PyObject *args) {
    Py_buffer data, out;
    unsigned lanes;
    if (!PyArg_ParseTuple(args, "y*Iw*", &data, &lanes, &out)) return NULL;
    if (lanes < 1 || lanes > 16) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "decode_lanes: lane_count must be 1 to 16");
        return NULL;
    }
    int err;
    unsigned bad = 0;
    uint64_t *scratch = PyMem_RawMalloc(sizeof(uint64_t) << 15);
    if (!scratch) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    err = decode_lanes_impl(data.buf, (size_t)data.len, lanes, out.buf, (size_t)out.len, scratch, &bad);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return Py_BuildValue("(iI)", err, bad);
}

/* ---- encoding ----------------------------------------------------------------------------------- */

/* Per byte value: what one encoder step needs, in one 32-byte record (one cache line holds two). */
typedef struct {
    uint64_t xmax;   /* f << (32 - R): renormalize when x >= xmax */
    uint32_t mlo;    /* x div f = (x + (x * mlo >> 32)) >> l, exact for every x < 2^32 */
    uint32_t l;      /* (Granlund and Montgomery 1994, thm 4.2, with the 33-bit magic 2^32 + mlo) */
    uint32_t f, c;   /* frequency and cumulative frequency */
    uint64_t pad;
} encsym_t;

/* One encoder step, branch-free: the renormalization word is always stored and the pointer moves
 * only when it is needed (that branch would mispredict on every other byte of a mantissa plane). */
#define ENC_STEP(xv, sym) do {                                                          \
        const encsym_t *e_ = &es[(sym)];                                                \
        uint32_t x_ = (xv);                                                             \
        unsigned c_ = (uint64_t)x_ >= e_->xmax;                                         \
        w[-1] = (uint16_t)x_;                                                           \
        w -= c_;                                                                        \
        x_ >>= 16 * c_;                                                                 \
        uint32_t q_ = (uint32_t)((x_ + (((uint64_t)x_ * e_->mlo) >> 32)) >> e_->l);     \
        (xv) = (q_ << R) + (x_ - q_ * e_->f) + e_->c;                                   \
    } while (0)

#ifdef WC_X86
/* cmp_lut[m]: moves the lanes set in m, in lane order, to the top |m| positions (the encoder's
 * words of one group go below the ones already written, lowest lane lowest). */
static uint32_t cmp_lut[256][8];

static void init_cmp(void) {
    for (unsigned m = 0; m < 256; m++) {
        unsigned k = (unsigned)__builtin_popcount(m), r = 0;
        for (unsigned j = 0; j < 8; j++) cmp_lut[m][j] = 0;
        for (unsigned j = 0; j < 8; j++)
            if ((m >> j) & 1) cmp_lut[m][8 - k + r++] = j;
    }
}

/* Whole rounds of the encoder, 8 states per register (N % 8 == 0, R <= 12): the same arithmetic
 * as ENC_STEP, lane by lane, so the bytes are identical. Bytes lane[0..i) with i a multiple of
 * N; returns the new word pointer. */
__attribute__((target("avx2,popcnt")))
static uint16_t *encode_avx2(const uint8_t *lane, size_t i, const encsym_t *es, unsigned R,
                             unsigned N, uint32_t *x, uint16_t *w) {
    /* per byte value: f | c << 13 | l << 26 (f <= 2^12, c < 2^12, l <= 12), and mlo */
    uint64_t t[256];  /* both in one entry: one load per byte, then split by two shuffles */
    for (unsigned s = 0; s < 256; s++)
        t[s] = (uint64_t)(es[s].f | (es[s].c << 13) | (es[s].l << 26)) | (uint64_t)es[s].mlo << 32;
    const __m256i split_idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const unsigned G = N / 8;
    __m256i xv[4];
    for (unsigned g = 0; g < G; g++) xv[g] = _mm256_loadu_si256((const __m256i *)(x + 8 * g));
    const __m128i rsh = _mm_cvtsi32_si128((int)(32 - R)), rl = _mm_cvtsi32_si128((int)R);
    const __m256i m13 = _mm256_set1_epi32(0x1FFF), m12 = _mm256_set1_epi32(0xFFF),
                  m16 = _mm256_set1_epi32(0xFFFF), one = _mm256_set1_epi32(1),
                  zero = _mm256_setzero_si256(), ones = _mm256_set1_epi32(-1);
    while (i) {
        i -= N;
        for (unsigned g = G; g-- > 0;) {
            __m256i x0 = xv[g];
            /* scalar loads, not two vpgatherdd: faster on the AMD cores measured (as in the
             * decoder) */
            const uint8_t *b_ = lane + i + 8 * g;
            __m256i lo4 = _mm256_permutevar8x32_epi32(
                _mm256_setr_epi64x((long long)t[b_[0]], (long long)t[b_[1]], (long long)t[b_[2]],
                                   (long long)t[b_[3]]), split_idx);
            __m256i hi4 = _mm256_permutevar8x32_epi32(
                _mm256_setr_epi64x((long long)t[b_[4]], (long long)t[b_[5]], (long long)t[b_[6]],
                                   (long long)t[b_[7]]), split_idx);
            __m256i a = _mm256_permute2x128_si256(lo4, hi4, 0x20);    /* the 8 low halves */
            __m256i mlo = _mm256_permute2x128_si256(lo4, hi4, 0x31);  /* the 8 high halves */
            __m256i f = _mm256_and_si256(a, m13);
            __m256i c = _mm256_and_si256(_mm256_srli_epi32(a, 13), m12);
            __m256i l = _mm256_srli_epi32(a, 26);
            /* renormalize when x >= f << (32 - R), i.e. x >> (32 - R) >= f */
            __m256i need = _mm256_xor_si256(_mm256_cmpgt_epi32(f, _mm256_srl_epi32(x0, rsh)), ones);
            unsigned m = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(need));
            __m256i wv = _mm256_permutevar8x32_epi32(_mm256_and_si256(x0, m16),
                                                     _mm256_loadu_si256((const __m256i *)cmp_lut[m]));
            wv = _mm256_permute4x64_epi64(_mm256_packus_epi32(wv, wv), 0x08);
            _mm_storeu_si128((__m128i *)(w - 8), _mm256_castsi256_si128(wv));
            w -= _mm_popcnt_u32(m);
            x0 = _mm256_blendv_epi8(x0, _mm256_srli_epi32(x0, 16), need);
            /* q = x div f = (x + (x * mlo >> 32)) >> l, as (hi + ((x - hi) >> 1)) >> (l - 1) */
            __m256i ev = _mm256_srli_epi64(_mm256_mul_epu32(x0, mlo), 32);
            __m256i od = _mm256_mul_epu32(_mm256_srli_epi64(x0, 32), _mm256_srli_epi64(mlo, 32));
            __m256i hi = _mm256_blend_epi32(ev, od, 0xAA);
            __m256i t = _mm256_add_epi32(hi, _mm256_srli_epi32(_mm256_sub_epi32(x0, hi), 1));
            __m256i q = _mm256_srlv_epi32(t, _mm256_sub_epi32(l, one));
            q = _mm256_blendv_epi8(q, x0, _mm256_cmpeq_epi32(l, zero));  /* f = 1: q = x */
            __m256i r = _mm256_sub_epi32(x0, _mm256_mullo_epi32(q, f));
            xv[g] = _mm256_add_epi32(_mm256_add_epi32(_mm256_sll_epi32(q, rl), r), c);
        }
    }
    for (unsigned g = 0; g < G; g++) _mm256_storeu_si256((__m256i *)(x + 8 * g), xv[g]);
    return w;
}
#endif

/* Encode d bytes with N states, frequencies f (sum 2^R, f > 0 for every byte present). The words
 * are written backwards, ending at `wend`; returns their count, or -1 if `cap` words do not fit. */
static ptrdiff_t encode_impl(const uint8_t *lane, size_t d, const uint32_t *f, unsigned R,
                             unsigned N, uint32_t *x, uint16_t *wend, size_t cap) {
    encsym_t es[256];
    uint32_t acc = 0;
    for (unsigned s = 0; s < 256; s++) {
        unsigned l = 0;
        while (f[s] > (1u << l)) l++;
        es[s].f = f[s];
        es[s].c = acc;
        es[s].l = l;
        es[s].mlo = f[s] ? (uint32_t)((((unsigned __int128)1 << (32 + l)) / f[s]) + 1) : 0;
        es[s].xmax = (uint64_t)f[s] << (32 - R);
        es[s].pad = 0;
        acc += f[s];
    }
    for (unsigned j = 0; j < N; j++) x[j] = RANS_L;
    /* at most one word per byte, plus the 8 slots below the last word that the branch-free
     * steps may scribble on: checked once here instead of per word */
    if (cap < d + 8) return -1;
    uint16_t *w = wend;
    size_t i = d;
    while (i % N) {  /* the last, partial round: bytes d-1 down to a multiple of N */
        i--;
        ENC_STEP(x[i % N], lane[i]);
    }
#ifdef WC_X86
    if (have_avx2 && N % 8 == 0 && R <= 12 && i) {
        w = encode_avx2(lane, i, es, R, N, x, w);
        i = 0;
    }
#endif
    while (i) {  /* whole rounds, state N-1 down to 0 */
        for (unsigned jj = N; jj-- > 0;) {
            i--;
            ENC_STEP(x[jj], lane[i]);
        }
    }
    return (ptrdiff_t)(wend - w);
}

/* encode_lane(lane, freqs(u32[256] bytes), R, N, table(bytes), out(writable)) -> length or -1.
 * `table` is the already packed header + frequency table (rans.py builds it); out receives it,
 * then the states, then the words. */
static PyObject *py_encode_lane(PyObject *self, PyObject *args) {
    Py_buffer lane, freqs, head, out;
    unsigned R, N;
    if (!PyArg_ParseTuple(args, "y*y*IIy*w*", &lane, &freqs, &R, &N, &head, &out)) return NULL;
    Py_ssize_t result = -1;
    if (freqs.len != 256 * 4 || R < 1 || R > 15 || N < 1 || N > MAX_STATES) {
        PyErr_SetString(PyExc_ValueError, "encode_lane: bad frequencies, R or N");
        result = -2;
    } else {
        size_t fixed = (size_t)head.len + 4 * (size_t)N;
        if ((size_t)out.len >= fixed) {
            uint8_t *o = out.buf;
            size_t cap = ((size_t)out.len - fixed) / 2;
            /* words first go to the end of `out` (written backwards), then move down behind the
             * states: one memmove instead of a reversal */
            uint16_t *wend = (uint16_t *)(o + fixed) + cap;
            uint32_t x[MAX_STATES];
            ptrdiff_t nw;
            Py_BEGIN_ALLOW_THREADS
            nw = encode_impl(lane.buf, (size_t)lane.len, freqs.buf, R, N, x, wend, cap);
            if (nw >= 0) {
                memcpy(o, head.buf, (size_t)head.len);
                memcpy(o + head.len, x, 4 * (size_t)N);  /* little-endian hosts (checked at import) */
                memmove(o + fixed, wend - nw, 2 * (size_t)nw);
            }
            Py_END_ALLOW_THREADS
            if (nw >= 0) result = (Py_ssize_t)(fixed + 2 * (size_t)nw);
        }
    }
    PyBuffer_Release(&lane);
    PyBuffer_Release(&freqs);
    PyBuffer_Release(&head);
    PyBuffer_Release(&out);
    if (result == -2) return NULL;
    return PyLong_FromSsize_t(result);
}

/* Byte counts of b[0..n) (n < 2^32 per table) into out: eight tables fed from one 8-byte load, so
 * that a run of one value (an exponent plane is mostly a few values) does not wait on the
 * store-to-load latency of one counter. */
static void histogram_c(const uint8_t *b, size_t n, uint64_t *out) {
    uint32_t h[8][256];
    memset(h, 0, sizeof h);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, b + i, 8);
        h[0][v & 255]++; h[1][(v >> 8) & 255]++; h[2][(v >> 16) & 255]++; h[3][(v >> 24) & 255]++;
        h[4][(v >> 32) & 255]++; h[5][(v >> 40) & 255]++; h[6][(v >> 48) & 255]++; h[7][v >> 56]++;
    }
    for (; i < n; i++) h[0][b[i]]++;
    for (unsigned s = 0; s < 256; s++) {
        uint64_t t = 0;
        for (unsigned k = 0; k < 8; k++) t += h[k][s];
        out[s] = t;
    }
}

/* histogram(lane, counts(writable u64[256])): byte counts, four partial tables (runs of one value
 * would otherwise serialize on one counter). */
static PyObject *py_histogram(PyObject *self, PyObject *args) {
    Py_buffer lane, counts;
    if (!PyArg_ParseTuple(args, "y*w*", &lane, &counts)) return NULL;
    if (counts.len != 256 * 8) {
        PyBuffer_Release(&lane);
        PyBuffer_Release(&counts);
        PyErr_SetString(PyExc_ValueError, "histogram: counts must be 256 u64");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *b = lane.buf;
    size_t n = (size_t)lane.len;
    uint64_t *out = counts.buf, part[256];
    memset(out, 0, 256 * 8);
    for (size_t i = 0; i < n; i += (size_t)1 << 30) {  /* u32 tables: 1 GiB at a time */
        histogram_c(b + i, n - i > ((size_t)1 << 30) ? (size_t)1 << 30 : n - i, part);
        for (unsigned s = 0; s < 256; s++) out[s] += part[s];
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&lane);
    PyBuffer_Release(&counts);
    Py_RETURN_NONE;
}

/* repeats(buf) -> how many positions start a 6-byte string seen earlier (one hash slot per
 * value, so a lower bound). zstd can beat an order-0 coder only through such repeats; lanes.py
 * skips its zstd trial on lanes that have almost none (every weight plane). */
static size_t repeats_c(const uint8_t *b, size_t n) {
    size_t hits = 0;
    if (n > 65535) n = 65535;  /* positions + 1 fit in 16 bits; a sample is enough */
    uint16_t seen[1 << 12];
    memset(seen, 0, sizeof seen);
    const uint64_t mask = 0xFFFFFFFFFFFFull;
    for (size_t i = 0; i + 8 <= n; i++) {
        uint64_t v;
        memcpy(&v, b + i, 8);
        v &= mask;
        uint32_t h = (uint32_t)((v * 0x9E3779B97F4A7C15ull) >> 52);
        uint32_t j = seen[h];
        if (j) {
            uint64_t u;
            memcpy(&u, b + j - 1, 8);
            hits += (u & mask) == v;
        }
        seen[h] = (uint16_t)(i + 1);
    }
    return hits;
}

static PyObject *py_repeats(PyObject *self, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    size_t hits;
    Py_BEGIN_ALLOW_THREADS
    hits = repeats_c(buf.buf, (size_t)buf.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return PyLong_FromSize_t(hits);
}

/* ---- the planes transform (spec/codecs/planes.md) ------------------------------------------- */
/* Here too so that a lossless decode needs no numba (whose import alone takes over a second). */

/* The arguments of both planes calls: (src, size, rotate, dst) with size 2 or 4 and equal
 * lengths; k is the element count. Returns 0, or -1 with an exception set and nothing held. */
static int planes_args(PyObject *args, const char *name, Py_buffer *in, Py_buffer *out,
                       unsigned *size, int *rotate, size_t *k) {
    if (!PyArg_ParseTuple(args, "y*Ipw*", in, size, rotate, out)) return -1;
    *k = (size_t)out->len / (*size ? *size : 1);
    if ((*size != 2 && *size != 4) || (size_t)in->len != *k * *size || (size_t)out->len != *k * *size) {
        PyBuffer_Release(in);
        PyBuffer_Release(out);
        PyErr_Format(PyExc_ValueError, "%s: size 2 or 4, equal lengths", name);
        return -1;
    }
    return 0;
}

static void planes_from(const uint8_t *p, unsigned size, int rotate, uint8_t *dst, size_t k);

/* planes_decode(planes, size, rotate, words): words[i] from byte i of each of the `size` planes,
 * most significant first, rotated right by one bit for floats. size is 2 or 4. */
static PyObject *py_planes_decode(PyObject *self, PyObject *args) {
    Py_buffer in, out;
    unsigned size;
    int rotate;
    size_t k;
    if (planes_args(args, "planes_decode", &in, &out, &size, &rotate, &k)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    planes_from(in.buf, size, rotate, out.buf, k);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* planes_encode(words, size, rotate, planes): the inverse. */
static PyObject *py_planes_encode(PyObject *self, PyObject *args) {
    Py_buffer in, out;
    unsigned size;
    int rotate;
    size_t k;
    if (planes_args(args, "planes_encode", &in, &out, &size, &rotate, &k)) return NULL;
    uint8_t *p = out.buf;
    Py_BEGIN_ALLOW_THREADS
    if (size == 2) {
        const uint16_t *w = in.buf;
        uint8_t *p0 = p, *p1 = p + k;
        for (size_t i = 0; i < k; i++) {
            uint16_t t = rotate ? (uint16_t)((w[i] << 1) | (w[i] >> 15)) : w[i];
            p0[i] = (uint8_t)(t >> 8);
            p1[i] = (uint8_t)t;
        }
    } else {
        const uint32_t *w = in.buf;
        uint8_t *p0 = p, *p1 = p + k, *p2 = p + 2 * k, *p3 = p + 3 * k;
        for (size_t i = 0; i < k; i++) {
            uint32_t t = rotate ? (w[i] << 1) | (w[i] >> 31) : w[i];
            p0[i] = (uint8_t)(t >> 24);
            p1[i] = (uint8_t)(t >> 16);
            p2[i] = (uint8_t)(t >> 8);
            p3[i] = (uint8_t)t;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* ---- whole chunks: block checks, lanes, planes, in one call per batch -------------------------- */
/* Why: with a call per lane and the block checks in Python, the GIL and the per-chunk Python work
 * left two threads at 1.1-1.4x one thread and cost ~20 % of a decode. decode_chunks runs a batch
 * of CHUNK blocks of plain streams whose chain is `planes > lanes(itemsize)` without the GIL.
 * It only ever accepts: on any failure it returns the job's index and the caller re-runs that
 * chunk through the Python path, which raises the spec's error (or decodes a zstd lane). */

static uint32_t crc32c_sw_table[256];

static void init_crc32c(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_sw_table[n] = c;
    }
}

#ifdef WC_X86
static int have_sse42;

/* Three independent crc32 chains over the thirds of each 3 x 4 KiB block, joined by shifting
 * the first two over the bytes that follow them (x^(8n) mod P applied as a GF(2) matrix
 * product, precomputed for n = 4 KiB and 8 KiB): one chain alone is latency-bound at a third of
 * the instruction's throughput. */
#define CRC_PART 4096
static uint32_t crc_shift1[4][256], crc_shift2[4][256];

static uint32_t gf2_times(const uint32_t *mat, uint32_t v) {
    uint32_t r = 0;
    for (int i = 0; v; i++, v >>= 1) if (v & 1) r ^= mat[i];
    return r;
}
static void gf2_square(uint32_t *sq, const uint32_t *mat) {
    for (int i = 0; i < 32; i++) sq[i] = gf2_times(mat, mat[i]);
}
/* the operator that appends n zero bytes to a raw (uninverted) crc register */
static void crc_zeros_op(uint32_t *op, size_t n) {
    /* one zero bit: the reflected polynomial for bit 0, a shift for the others; squared three
     * times it appends one zero byte; then square-and-multiply over the bits of n */
    uint32_t cur[32], tmp[32];
    cur[0] = 0x82F63B78u;
    for (int i = 1; i < 32; i++) cur[i] = 1u << (i - 1);
    for (int k = 0; k < 3; k++) { gf2_square(tmp, cur); memcpy(cur, tmp, sizeof cur); }
    for (int i = 0; i < 32; i++) op[i] = 1u << i;  /* identity */
    while (n) {
        if (n & 1) {
            for (int i = 0; i < 32; i++) tmp[i] = gf2_times(cur, op[i]);
            memcpy(op, tmp, sizeof tmp);
        }
        n >>= 1;
        if (n) { gf2_square(tmp, cur); memcpy(cur, tmp, sizeof cur); }
    }
}
static void crc_shift_table(uint32_t tab[4][256], size_t n) {
    uint32_t op[32];
    crc_zeros_op(op, n);
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++) tab[k][b] = gf2_times(op, b << (8 * k));
}
static inline uint32_t crc_shift(uint32_t tab[4][256], uint32_t c) {
    return tab[0][c & 255] ^ tab[1][(c >> 8) & 255] ^ tab[2][(c >> 16) & 255] ^ tab[3][c >> 24];
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *b, size_t n) {
    uint64_t c0 = ~crc;
    while (n >= 3 * CRC_PART) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *b1 = b + CRC_PART, *b2 = b + 2 * CRC_PART;
        for (size_t i = 0; i < CRC_PART; i += 8) {
            uint64_t v0, v1, v2;
            memcpy(&v0, b + i, 8); memcpy(&v1, b1 + i, 8); memcpy(&v2, b2 + i, 8);
            c0 = _mm_crc32_u64(c0, v0);
            c1 = _mm_crc32_u64(c1, v1);
            c2 = _mm_crc32_u64(c2, v2);
        }
        c0 = crc_shift(crc_shift2, (uint32_t)c0) ^ crc_shift(crc_shift1, (uint32_t)c1) ^ c2;
        b += 3 * CRC_PART;
        n -= 3 * CRC_PART;
    }
    for (; n >= 8; n -= 8, b += 8) { uint64_t v; memcpy(&v, b, 8); c0 = _mm_crc32_u64(c0, v); }
    for (; n; n--) c0 = _mm_crc32_u8((uint32_t)c0, *b++);
    return ~(uint32_t)c0;
}
#endif

static uint32_t crc32c_of(const uint8_t *b, size_t n) {
#ifdef WC_X86
    if (have_sse42) return crc32c_hw(0, b, n);
#endif
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc32c_sw_table[(c ^ b[i]) & 255] ^ (c >> 8);
    return ~c;
}

/* planes_decode's loop (size 2 or 4), 32 elements at a time with AVX2 where available */
#ifdef WC_X86
__attribute__((target("avx2")))
static size_t planes2_avx2(const uint8_t *p0, const uint8_t *p1, uint16_t *w, size_t k, int rotate) {
    size_t i = 0;
    for (; i + 32 <= k; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(p0 + i)), b = _mm256_loadu_si256((const __m256i *)(p1 + i));
        a = _mm256_permute4x64_epi64(a, 0xD8);
        b = _mm256_permute4x64_epi64(b, 0xD8);
        /* after the 0xD8 permutes, the per-half unpacks give elements 0-15 and 16-31 in order */
        __m256i lo = _mm256_unpacklo_epi8(b, a), hi = _mm256_unpackhi_epi8(b, a);  /* t = a << 8 | b */
        if (rotate) {
            lo = _mm256_or_si256(_mm256_srli_epi16(lo, 1), _mm256_slli_epi16(lo, 15));
            hi = _mm256_or_si256(_mm256_srli_epi16(hi, 1), _mm256_slli_epi16(hi, 15));
        }
        _mm256_storeu_si256((__m256i *)(w + i), lo);
        _mm256_storeu_si256((__m256i *)(w + i + 16), hi);
    }
    return i;
}
__attribute__((target("avx2")))
static size_t planes4_avx2(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3,
                           uint32_t *w, size_t k, int rotate) {
    size_t i = 0;
    for (; i + 32 <= k; i += 32) {
        __m256i a = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(p0 + i)), 0xD8);
        __m256i b = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(p1 + i)), 0xD8);
        __m256i c = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(p2 + i)), 0xD8);
        __m256i d = _mm256_permute4x64_epi64(_mm256_loadu_si256((const __m256i *)(p3 + i)), 0xD8);
        __m256i ab_lo = _mm256_unpacklo_epi8(b, a), ab_hi = _mm256_unpackhi_epi8(b, a);  /* a<<8|b */
        __m256i cd_lo = _mm256_unpacklo_epi8(d, c), cd_hi = _mm256_unpackhi_epi8(d, c);  /* c<<8|d */
        /* after the 0xD8 permutes each unpack yields 16 elements in order: ab_lo 0-15, ab_hi
         * 16-31; the 16-bit unpacks work per 128-bit half: t0 = 0-3 | 8-11, t1 = 4-7 | 12-15,
         * t2 = 16-19 | 24-27, t3 = 20-23 | 28-31 */
        __m256i t0 = _mm256_unpacklo_epi16(cd_lo, ab_lo), t1 = _mm256_unpackhi_epi16(cd_lo, ab_lo);
        __m256i t2 = _mm256_unpacklo_epi16(cd_hi, ab_hi), t3 = _mm256_unpackhi_epi16(cd_hi, ab_hi);
        if (rotate) {
            t0 = _mm256_or_si256(_mm256_srli_epi32(t0, 1), _mm256_slli_epi32(t0, 31));
            t1 = _mm256_or_si256(_mm256_srli_epi32(t1, 1), _mm256_slli_epi32(t1, 31));
            t2 = _mm256_or_si256(_mm256_srli_epi32(t2, 1), _mm256_slli_epi32(t2, 31));
            t3 = _mm256_or_si256(_mm256_srli_epi32(t3, 1), _mm256_slli_epi32(t3, 31));
        }
        _mm256_storeu_si256((__m256i *)(w + i), _mm256_permute2x128_si256(t0, t1, 0x20));
        _mm256_storeu_si256((__m256i *)(w + i + 8), _mm256_permute2x128_si256(t0, t1, 0x31));
        _mm256_storeu_si256((__m256i *)(w + i + 16), _mm256_permute2x128_si256(t2, t3, 0x20));
        _mm256_storeu_si256((__m256i *)(w + i + 24), _mm256_permute2x128_si256(t2, t3, 0x31));
    }
    return i;
}
#endif

static void planes_from(const uint8_t *p, unsigned size, int rotate, uint8_t *dst, size_t k) {
    size_t i = 0;
    if (size == 2) {
        uint16_t *w = (uint16_t *)dst;
        const uint8_t *p0 = p, *p1 = p + k;
#ifdef WC_X86
        if (have_avx2) i = planes2_avx2(p0, p1, w, k, rotate);
#endif
        for (; i < k; i++) {
            uint16_t t = (uint16_t)((p0[i] << 8) | p1[i]);
            w[i] = rotate ? (uint16_t)((t >> 1) | (t << 15)) : t;
        }
    } else {
        uint32_t *w = (uint32_t *)dst;
        const uint8_t *p0 = p, *p1 = p + k, *p2 = p + 2 * k, *p3 = p + 3 * k;
#ifdef WC_X86
        if (have_avx2) i = planes4_avx2(p0, p1, p2, p3, w, k, rotate);
#endif
        for (; i < k; i++) {
            uint32_t t = ((uint32_t)p0[i] << 24) | ((uint32_t)p1[i] << 16) | ((uint32_t)p2[i] << 8) | p3[i];
            w[i] = rotate ? (t >> 1) | (t << 31) : t;
        }
    }
}

/* One job, the columns of decode_chunks' int64 rows. */
enum { J_OFFSET, J_PAYLOAD, J_TYPE, J_CRC, J_TENSOR, J_STREAM, J_CHUNK, J_OUT, J_OUTLEN, J_PADEND,
       J_HAS_CONTENT_CRC, J_CONTENT_CRC, J_COLS };

/* LAY-05, RSV-01, REC-08, BLK-01, LAY-05, LAY-03 as reader.block_payload checks them, then the
 * chain. Returns 0 when the chunk is decoded into its output, else non-zero. */
static int decode_one_chunk(const uint8_t *data, size_t size, const int64_t *j, unsigned lanes,
                            unsigned itemsize, int rotate, uint8_t *scratch, uint64_t *tables) {
    uint64_t off = (uint64_t)j[J_OFFSET], plen = (uint64_t)j[J_PAYLOAD], pad_end = (uint64_t)j[J_PADEND];
    if (off > size || plen > size - off || size - off - plen < 28 || pad_end > size
            || pad_end < off + 28 + plen) return 1;
    const uint8_t *h = data + off;
    if ((h[0] | h[1] << 8) != (uint32_t)j[J_TYPE] || (h[2] | h[3]) || load_u32(h + 4) != (uint32_t)j[J_TENSOR]
            || load_u32(h + 8) != (uint32_t)j[J_STREAM] || load_u32(h + 12) != (uint32_t)j[J_CHUNK]
            || (load_u32(h + 16) | (uint64_t)load_u32(h + 20) << 32) != plen) return 1;
    uint32_t trailer = load_u32(h + 24 + plen);
    if (trailer != (uint32_t)j[J_CRC] || crc32c_of(h, 24 + plen) != trailer) return 1;
    for (const uint8_t *q = h + 28 + plen; q < data + pad_end; q++) if (*q) return 1;
    uint8_t *dst = (uint8_t *)(uintptr_t)j[J_OUT];
    size_t total = (size_t)j[J_OUTLEN];
    unsigned bad;
    if (itemsize == 1) {
        if (decode_lanes_impl(h + 24, plen, lanes, dst, total, tables, &bad)) return 1;
    } else {
        if (decode_lanes_impl(h + 24, plen, lanes, scratch, total, tables, &bad)) return 1;
        planes_from(scratch, itemsize, rotate, dst, total / itemsize);
    }
    /* REC-11 over the bytes just written, while they are in cache */
    return j[J_HAS_CONTENT_CRC] && crc32c_of(dst, total) != (uint32_t)j[J_CONTENT_CRC];
}

/* decode_chunks(data, jobs(int64[n, J_COLS]), lanes, itemsize, rotate, scratch, tables) -> index
 * of the first job that did not decode, or n. Only `planes > lanes(itemsize)` chunks of itemsize
 * 1, 2, 4; J_OUT is the address of the output (the caller keeps it alive, J_OUTLEN bytes).
 * `scratch` (writable, at least every job's J_OUTLEN bytes when itemsize > 1) and `tables`
 * (writable, 2^15 u64) are the caller's, reused across calls: allocating them per call cost a
 * page fault per 4 KiB on every batch. */
static PyObject *py_decode_chunks(PyObject *self, PyObject *args) {
    Py_buffer data, jobs, scratch, tables;
    unsigned lanes, itemsize;
    int rotate;
    if (!PyArg_ParseTuple(args, "y*y*IIpw*w*", &data, &jobs, &lanes, &itemsize, &rotate, &scratch,
                          &tables)) return NULL;
    size_t n = (size_t)jobs.len / (J_COLS * 8);
    if ((size_t)jobs.len != n * J_COLS * 8 || lanes != itemsize || (itemsize != 1 && itemsize != 2 && itemsize != 4)
            || (size_t)tables.len < (sizeof(uint64_t) << 15)) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&jobs);
        PyBuffer_Release(&scratch);
        PyBuffer_Release(&tables);
        PyErr_SetString(PyExc_ValueError, "decode_chunks: jobs of int64[n, 12], lanes == itemsize in "
                                          "1, 2, 4, tables of 2^15 u64");
        return NULL;
    }
    size_t k = 0, room = itemsize > 1 ? (size_t)scratch.len : (size_t)-1;
    const int64_t *J = jobs.buf;
    Py_BEGIN_ALLOW_THREADS
    for (; k < n; k++) {
        if ((uint64_t)J[k * J_COLS + J_OUTLEN] > room) break;
        if (decode_one_chunk(data.buf, (size_t)data.len, J + k * J_COLS, lanes, itemsize, rotate,
                             scratch.buf, tables.buf)) break;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyBuffer_Release(&jobs);
    PyBuffer_Release(&scratch);
    PyBuffer_Release(&tables);
    return PyLong_FromSize_t(k);
}

/* split_pack(lane, k, sym, low): lane method rans_split's symbols and low bits of `lane`
 * (rans_split.md §2); sym and low must be exactly ceil(d k / 8) and ceil(d (8 - k) / 8) bytes. */
static PyObject *py_split_pack(PyObject *self, PyObject *args) {
    Py_buffer lane, sym, low;
    unsigned k;
    if (!PyArg_ParseTuple(args, "y*Iw*w*", &lane, &k, &sym, &low)) return NULL;
    size_t d = (size_t)lane.len;
    int ok = (k == 1 || k == 2 || k == 4) && (size_t)sym.len == (d * k + 7) / 8
             && (size_t)low.len == (d * (8 - k) + 7) / 8;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        split_pack(lane.buf, d, k, sym.buf, low.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&lane);
    PyBuffer_Release(&sym);
    PyBuffer_Release(&low);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "split_pack: k in 1, 2, 4 and outputs of the spec's sizes");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- whole chunks, encoder side: the lanes payload of a `planes > lanes(itemsize)` chunk ----------- */
/* Why: per lane, the Python encoder (lanes.py) made a histogram call, a numba scale search, a
 * numba normalization, the table packing and the rANS call, with the GIL held in between: on
 * MiniLM bf16 that was ~100 of ~240 ms of CPU per save. encode_chunk does the same decisions with
 * the same arithmetic in one call without the GIL, planes and histograms in one pass. It gives
 * the bytes lanes.py gives (tests/test_encode_native.py compares them), hands chunks with lanes of
 * 16 KiB or less back to Python, and leaves lanes.py's zstd sample trial (lanes whose sample has
 * repeats) to the caller. */
#define ENC_SCALE_LO 10       /* rans.ENCODER_SCALES */
#define ENC_SCALE_HI 12
#define ENC_STATES 16         /* rans.ENCODER_STATES */
#define ENC_RANS_MIN_LANE 4096
#define ENC_ZSTD_SAMPLE 4096
#define ENC_SPLIT_TRY 8       /* lanes.SPLIT_TRY, SPLIT_SLACK */
#define ENC_SPLIT_SLACK 512
#define ENC_SPLIT_K 2         /* rans_split.ENCODER_TOP_BITS, ENCODER_STATES */
#define ENC_SPLIT_STATES 16

typedef struct { double key; int s; } keyed_t;

static int keyed_less(const keyed_t *a, const keyed_t *b) {
    return a->key < b->key || (a->key == b->key && a->s < b->s);
}
static void heap_down(keyed_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && keyed_less(&h[l], &h[m])) m = l;
        if (r < n && keyed_less(&h[r], &h[m])) m = r;
        if (m == i) return;
        keyed_t t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}

/* _kernels.normalize, step for step (the float64 arithmetic included). 0 if infeasible. */
static int normalize_c(const uint64_t *counts, unsigned R, int64_t *f) {
    const int64_t m = (int64_t)1 << R;
    int64_t n = 0, tot = 0, present = 0;
    double rem[256];
    for (unsigned s = 0; s < 256; s++) n += (int64_t)counts[s];
    for (unsigned s = 0; s < 256; s++) {
        f[s] = 0;
        rem[s] = 0.0;
        if (counts[s] > 0) {
            present++;
            double q = (double)((int64_t)counts[s] * m) / (double)n;
            int64_t v = (int64_t)q;
            rem[s] = q - (double)v;
            if (v < 1) { v = 1; rem[s] = -1.0; }
            f[s] = v;
            tot += v;
        }
    }
    if (present > m || n == 0) return 0;
    if (tot < m) {
        /* one unit each to the symbols in the order of np.argsort(-rem, kind="stable"), cycling;
         * the order is popped from a heap of (-rem, s) only as far as it is needed */
        keyed_t heap[256];
        int seq[256], ns = 0, n_heap = 256;
        for (int s = 0; s < 256; s++) { heap[s].key = -rem[s]; heap[s].s = s; }
        for (int i = 127; i >= 0; i--) heap_down(heap, n_heap, i);
        while (tot < m && n_heap > 0) {
            int s = heap[0].s;
            seq[ns++] = s;
            heap[0] = heap[--n_heap];
            heap_down(heap, n_heap, 0);
            if (counts[s] > 0) { f[s]++; tot++; }
        }
        for (int64_t k = 0; tot < m; k++) {  /* further rounds: the whole order again */
            int s = seq[k % ns];
            if (counts[s] > 0) { f[s]++; tot++; }
        }
    }
    if (tot > m) {
        /* take one unit at a time from the symbol with the least counts / (f - 0.5) among
         * f > 1, the lowest s on ties: _kernels.normalize's scan, as a heap of (key, s) */
        keyed_t heap[256];
        int n_heap = 0;
        for (int s = 0; s < 256; s++)
            if (f[s] > 1) {
                heap[n_heap].key = (double)counts[s] / ((double)f[s] - 0.5);
                heap[n_heap].s = s;
                n_heap++;
            }
        for (int i = n_heap / 2 - 1; i >= 0; i--) heap_down(heap, n_heap, i);
        while (tot > m) {
            int s = heap[0].s;
            f[s]--;
            tot--;
            if (f[s] > 1) heap[0].key = (double)counts[s] / ((double)f[s] - 0.5);
            else heap[0] = heap[--n_heap];
            heap_down(heap, n_heap, 0);
        }
    }
    return 1;
}

typedef struct { unsigned a, b, w, base; size_t t; } layout_t;

static layout_t table_layout_c(const int64_t *f) {
    layout_t L;
    unsigned a = 0, b = 255;
    while (f[a] == 0) a++;
    while (f[b] == 0) b--;
    int64_t lo = f[a], hi = f[a];
    for (unsigned s = a; s <= b; s++) { if (f[s] < lo) lo = f[s]; if (f[s] > hi) hi = f[s]; }
    int64_t base = lo > 0 ? lo : 0, span = hi - base;
    unsigned w = 1;
    while (((int64_t)1 << w) <= span) w++;
    L.a = a; L.b = b; L.w = w; L.base = (unsigned)base;
    L.t = ((size_t)(b - a + 1) * w + 7) / 8;
    return L;
}

static double code_bits_c(const uint64_t *counts, const int64_t *f, unsigned R) {
    double bits = 0.0;
    for (unsigned s = 0; s < 256; s++)
        if (counts[s] > 0) bits += (double)counts[s] * ((double)R - log2((double)f[s]));
    return bits;
}

/* _kernels.choose_scale(counts, 10, 12, 16): *r = -1 when no scale fits; best_f receives the
 * frequencies of the chosen scale (rans_encode_c takes them instead of normalizing again) */
static double choose_scale_range(const uint64_t *counts, unsigned lo, unsigned hi, unsigned N,
                                 int *r, int64_t *best_f) {
    double best = 1e300;
    int64_t f[256];
    *r = -1;
    for (unsigned R = lo; R <= hi; R++) {
        if (!normalize_c(counts, R, f)) continue;
        layout_t L = table_layout_c(f);
        double size = (double)(7 + (int64_t)L.t + 4 * (int64_t)N) + code_bits_c(counts, f, R) / 8 + 2;
        if (size < best) { best = size; *r = (int)R; memcpy(best_f, f, sizeof f); }
    }
    return best;
}
static double choose_scale_c(const uint64_t *counts, int *r, int64_t *best_f) {
    return choose_scale_range(counts, ENC_SCALE_LO, ENC_SCALE_HI, ENC_STATES, r, best_f);
}

/* The rans lane header and packed table (rans.md §1, §2) of frequencies f at scale R with N
 * states into out (7 + 512 bytes at most); returns its length. */
static size_t rans_head_c(const int64_t *f, unsigned R, unsigned N, uint8_t *o) {
    layout_t L = table_layout_c(f);
    o[0] = (uint8_t)R; o[1] = (uint8_t)N; o[2] = (uint8_t)L.a; o[3] = (uint8_t)L.b; o[4] = (uint8_t)L.w;
    o[5] = (uint8_t)L.base; o[6] = (uint8_t)(L.base >> 8);
    memset(o + 7, 0, L.t);
    uint64_t acc = 0;
    unsigned nb = 0;
    size_t q = 7;
    for (unsigned s = L.a; s <= L.b; s++) {
        acc |= (uint64_t)(f[s] - L.base) << nb;
        nb += L.w;
        while (nb >= 8) { o[q++] = (uint8_t)acc; acc >>= 8; nb -= 8; }
    }
    if (nb) o[q] = (uint8_t)acc;
    return 7 + L.t;
}

/* rans.encode(lane, counts, R, N) into `out` (room for the table, the states and 2 (d + 8) bytes
 * of words); returns the lane data's length, or 0 if normalization fails (it cannot: R came from
 * choose_scale_c on the same counts). */
static size_t rans_encode_c(const uint8_t *lane, size_t d, const int64_t *f, unsigned R,
                            unsigned N, uint8_t *out, size_t cap) {
    uint8_t *o = out;
    size_t head = rans_head_c(f, R, N, o);
    size_t fixed = head + 4 * (size_t)N;
    uint32_t f32[256], x[MAX_STATES];
    for (unsigned s = 0; s < 256; s++) f32[s] = (uint32_t)f[s];
    size_t wcap = (cap - fixed) / 2;
    uint16_t *wend = (uint16_t *)(o + fixed) + wcap;
    ptrdiff_t nw = encode_impl(lane, d, f32, R, N, x, wend, wcap);
    if (nw < 0) return 0;
    memcpy(o + head, x, 4 * (size_t)N);
    memmove(o + fixed, wend - nw, 2 * (size_t)nw);
    return fixed + 2 * (size_t)nw;
}



/* planes of k elements (size 2 or 4, rotated for floats), then a histogram per plane: fusing the
 * two measured slower (fewer partial tables per plane than histogram_c's eight) */
static void planes_hist(const uint8_t *src, unsigned size, int rotate, size_t k, uint8_t *p,
                        uint64_t (*hist)[256]) {
    if (size == 2) {
        const uint16_t *w = (const uint16_t *)src;
        uint8_t *p0 = p, *p1 = p + k;
        if (rotate)
            for (size_t i = 0; i < k; i++) {
                uint16_t t = (uint16_t)((w[i] << 1) | (w[i] >> 15));
                p0[i] = (uint8_t)(t >> 8); p1[i] = (uint8_t)t;
            }
        else
            for (size_t i = 0; i < k; i++) { p0[i] = (uint8_t)(w[i] >> 8); p1[i] = (uint8_t)w[i]; }
    } else {
        const uint32_t *w = (const uint32_t *)src;
        uint8_t *p0 = p, *p1 = p + k, *p2 = p + 2 * k, *p3 = p + 3 * k;
        for (size_t i = 0; i < k; i++) {
            uint32_t t = rotate ? (w[i] << 1) | (w[i] >> 31) : w[i];
            p0[i] = (uint8_t)(t >> 24); p1[i] = (uint8_t)(t >> 16); p2[i] = (uint8_t)(t >> 8); p3[i] = (uint8_t)t;
        }
    }
    for (unsigned j = 0; j < size; j++) histogram_c(p + j * k, k, hist[j]);
}

/* The lanes payload of one chunk of k elements into `out` (5 * size + size * k bytes at least);
 * `scratch`: ENC_SCRATCH(size, k) bytes. Returns the payload length, or -1 for "lanes.py decides
 * this chunk" (lanes of 16 KiB or less); zcost[j] >= 0 asks the caller for lanes.py's zstd sample
 * trial on lane j (the only step that needs zstd). The decisions are lanes.py's: fill for
 * a constant lane; rans when its estimate beats raw; rans_split instead when rans saves less than
 * 1/8 and the split costs at most D/512 more (and its bytes come out below D); 32 states when a
 * single lane stays rans; raw when the coded bytes are not smaller. */
#define ENC_SCRATCH(size, k) ((size_t)(size) * 2 * (k) + 3 * (size_t)(k) + 8192)
static ptrdiff_t encode_chunk_impl(const uint8_t *src, size_t k, unsigned size, int rotate,
                                   uint8_t *out, uint8_t *scratch, int64_t *zcost) {
    if (k <= 4 * ENC_ZSTD_SAMPLE) return -1;
    const size_t d = k;
    uint64_t hist[4][256];
    const uint8_t *lane[4];
    uint8_t *planes = scratch, *split_body = scratch + size * d, *work = split_body + size * d;
    if (size == 1) {
        lane[0] = src;
        histogram_c(src, d, hist[0]);
    } else {
        planes_hist(src, size, rotate, k, planes, hist);
        for (unsigned j = 0; j < size; j++) lane[j] = planes + j * d;
    }
    enum { RAW = 0, FILL = 1, RANS = 2, SPLIT = 3 };
    int method[4], R[4];
    double est[4];
    size_t split_len[4] = {0};
    int64_t F[4][256], fs[256];  /* the frequencies at the chosen scale, per lane / split symbols */
    for (unsigned j = 0; j < size; j++) {
        if (hist[j][lane[j][0]] == d) { method[j] = FILL; continue; }
        est[j] = choose_scale_c(hist[j], &R[j], F[j]);
        method[j] = (R[j] > 0 && est[j] < (double)d) ? RANS : RAW;
        if (method[j] != RANS || est[j] < (double)d * (1 - 1.0 / ENC_SPLIT_TRY)) continue;
        /* rans_split: estimate, then the body (kept only if below D) */
        const unsigned kk = ENC_SPLIT_K;
        size_t g = (d * kk + 7) / 8, b = (d * (8 - kk) + 7) / 8;
        uint8_t *sym = work, *low = work + g, *rw = work + g + b;  /* rw: 2 g + 4096 bytes */
        split_pack(lane[j], d, kk, sym, low);
        uint64_t sh[256];
        histogram_c(sym, g, sh);
        int rs;
        double es = choose_scale_c(sh, &rs, fs);
        if (1 + (double)b + (rs > 0 ? es : 64.0) > est[j] + (double)d / ENC_SPLIT_SLACK) continue;
        if (rs <= 0 && (rs = ENC_SCALE_HI, !normalize_c(sh, ENC_SCALE_HI, fs))) continue;
        size_t n = rans_encode_c(sym, g, fs, (unsigned)rs, ENC_SPLIT_STATES, rw, 2 * g + 4096);
        if (!n || 1 + b + n >= d) continue;
        uint8_t *o = split_body + j * d;
        o[0] = (uint8_t)kk;
        memcpy(o + 1, low, b);
        memcpy(o + 1 + b, rw, n);
        split_len[j] = 1 + b + n;
        method[j] = SPLIT;
    }
    unsigned nrans = 0;
    for (unsigned j = 0; j < size; j++) nrans += method[j] == RANS;
    uint8_t *body = out + 5 * size;
    size_t pos = 0;
    for (unsigned j = 0; j < size; j++) {
        uint8_t m;
        size_t n;
        if (method[j] == FILL) {
            body[pos] = lane[j][0]; n = 1; m = 2;
        } else if (method[j] == SPLIT) {
            memcpy(body + pos, split_body + j * d, split_len[j]); n = split_len[j]; m = 6;
        } else {
            n = 0;
            if (method[j] == RANS)
                n = rans_encode_c(lane[j], d, F[j], (unsigned)R[j],
                                  nrans == 1 ? 2 * ENC_STATES : ENC_STATES, work, 2 * d + 4096);
            if (n && n < d) {
                memcpy(body + pos, work, n); m = 4;
            } else {
                memcpy(body + pos, lane[j], d); n = d; m = 0;
            }
        }
        /* a lane that stays rans or raw gets lanes.py's zstd sample trial when its sample
         * repeats: zcost[j] is the size that trial compares with, else -1 */
        zcost[j] = (method[j] == RANS || method[j] == RAW)
                   && repeats_c(lane[j], ENC_ZSTD_SAMPLE) >= ENC_ZSTD_SAMPLE / 50 ? (int64_t)n : -1;
        out[5 * j] = m;
        uint32_t l32 = (uint32_t)n;
        memcpy(out + 5 * j + 1, &l32, 4);
        pos += n;
    }
    return (ptrdiff_t)(5 * size + pos);
}

/* choose_scale(counts(u64[256]), lo, hi, n_states) -> (R, estimated bytes): _kernels.choose_scale */
static PyObject *py_choose_scale(PyObject *self, PyObject *args) {
    Py_buffer c;
    unsigned lo, hi, n;
    if (!PyArg_ParseTuple(args, "y*III", &c, &lo, &hi, &n)) return NULL;
    if (c.len != 256 * 8 || lo < 1 || hi > 15 || lo > hi) {
        PyBuffer_Release(&c);
        PyErr_SetString(PyExc_ValueError, "choose_scale: counts of 256 u64, 1 <= lo <= hi <= 15");
        return NULL;
    }
    int r;
    int64_t f[256];
    double est = choose_scale_range(c.buf, lo, hi, n, &r, f);
    PyBuffer_Release(&c);
    return Py_BuildValue("(id)", r, est);
}

/* rans_head(counts(u64[256]), R, N, f_out(w* int64[256]), head_out(w* >= 519 bytes)) -> header
 * length, or -1 when no normalization exists: _kernels.normalize, table_layout and pack_table */
static PyObject *py_rans_head(PyObject *self, PyObject *args) {
    Py_buffer c, fo, ho;
    unsigned R, N;
    if (!PyArg_ParseTuple(args, "y*IIw*w*", &c, &R, &N, &fo, &ho)) return NULL;
    Py_ssize_t n = -2;
    if (c.len == 256 * 8 && fo.len == 256 * 8 && ho.len >= 7 + 512 && R >= 1 && R <= 15 && N >= 1
            && N <= MAX_STATES)
        n = normalize_c(c.buf, R, fo.buf) ? (Py_ssize_t)rans_head_c(fo.buf, R, N, ho.buf) : -1;
    PyBuffer_Release(&c);
    PyBuffer_Release(&fo);
    PyBuffer_Release(&ho);
    if (n == -2) {
        PyErr_SetString(PyExc_ValueError, "rans_head: counts and f of 256, head of 519 bytes, R, N");
        return NULL;
    }
    return PyLong_FromSsize_t(n);
}

/* encode_chunk(elements, itemsize, rotate, out, scratch, zcost(w* int64[itemsize])) -> payload
 * length or -1. Lane j's plane is left at scratch[j k : (j + 1) k] (itemsize > 1) for the caller's
 * zstd sample trial on the lanes with zcost[j] >= 0. */
static PyObject *py_encode_chunk(PyObject *self, PyObject *args) {
    Py_buffer in, out, scratch, zc;
    unsigned size;
    int rotate;
    if (!PyArg_ParseTuple(args, "y*Ipw*w*w*", &in, &size, &rotate, &out, &scratch, &zc)) return NULL;
    size_t k = (size == 1 || size == 2 || size == 4) ? (size_t)in.len / size : 0;
    int ok = k && (size_t)in.len == k * size && (size_t)out.len >= 5 * size + size * k
             && (size_t)scratch.len >= ENC_SCRATCH(size, k) && (size_t)zc.len >= 8 * size;
    ptrdiff_t n = -1;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        n = encode_chunk_impl(in.buf, k, size, rotate, out.buf, scratch.buf, zc.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    PyBuffer_Release(&scratch);
    PyBuffer_Release(&zc);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "encode_chunk: itemsize 1, 2, 4; out and scratch too small");
        return NULL;
    }
    return PyLong_FromSsize_t(n);
}

/* crc32c(buf) -> CRC32C of buf (for tests of the kernel against the crc32c package) */
static PyObject *py_crc32c(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    uint32_t c;
    Py_BEGIN_ALLOW_THREADS
    c = crc32c_of(b.buf, (size_t)b.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef methods[] = {
    {"decode_lane", py_decode_lane, METH_VARARGS, "Decode one rans lane into out; 0 or an error code."},
    {"decode_lanes", py_decode_lanes, METH_VARARGS, "Decode a whole lanes payload; (error code, lane)."},
    {"encode_lane", py_encode_lane, METH_VARARGS, "Encode one rans lane into out; its length or -1."},
    {"repeats", py_repeats, METH_VARARGS, "Positions starting a 6-byte string seen before."},
    {"planes_decode", py_planes_decode, METH_VARARGS, "Byte planes to words (planes.md)."},
    {"planes_encode", py_planes_encode, METH_VARARGS, "Words to byte planes (planes.md)."},
    {"histogram", py_histogram, METH_VARARGS, "Byte histogram of a buffer into 256 u64 counts."},
    {"decode_chunks", py_decode_chunks, METH_VARARGS, "Check and decode a batch of CHUNK blocks; jobs done."},
    {"crc32c", py_crc32c, METH_VARARGS, "CRC32C of a buffer."},
    {"split_pack", py_split_pack, METH_VARARGS, "rans_split symbols and low bits of a lane."},
    {"encode_chunk", py_encode_chunk, METH_VARARGS, "The lanes payload of a planes > lanes chunk, or -1."},
    {"choose_scale", py_choose_scale, METH_VARARGS, "Scale and size estimate of a rans lane."},
    {"rans_head", py_rans_head, METH_VARARGS, "Normalized frequencies and the rans header and table."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_crans", NULL, -1, methods};

PyMODINIT_FUNC PyInit__crans(void) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "_crans assumes a little-endian host");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    init_crc32c();
#ifdef WC_X86
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    init_perm();
    init_cmp();
    have_sse42 = __builtin_cpu_supports("sse4.2");
    have_bmi2 = __builtin_cpu_supports("bmi2");
    crc_shift_table(crc_shift1, CRC_PART);
    crc_shift_table(crc_shift2, 2 * CRC_PART);
    PyModule_AddIntConstant(m, "AVX2", have_avx2);
#else
    PyModule_AddIntConstant(m, "AVX2", 0);
#endif
    return m;
}
