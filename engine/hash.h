#ifndef UWCACHE_ENGINE_HASH_H
#define UWCACHE_ENGINE_HASH_H

/* The hash functions, as static inline so the engine's lookups inline them (hash.c exports
 * them for the binding). The two hash functions of uWSGI's cache, bit-identical to uWSGI on x86-64.
 *
 * uWSGI reads key bytes as (signed) char in places, so bytes >= 0x80 are sign-extended
 * before the XOR; its murmur2 also mixes the 1..3 tail bytes taken from the START of the
 * key. Both quirks are reproduced on purpose: stores and dumps exchanged with real uWSGI
 * must hash every key to the same bucket. We use explicit int8_t so the result does not
 * depend on the platform's char signedness.
 */
#include <stdint.h>
#include <string.h>

static inline uint32_t uwc_sext(uint8_t b) { return (uint32_t)(int32_t)(int8_t)b; }

static inline uint32_t uwc_djb33x_i(const uint8_t *key, uint64_t len) {
    uint32_t h = 5381;
    uint64_t i = 0;
    /* the chain of multiplies is inherently serial; unrolling only sheds loop control */
    for (; i + 4 <= len; i += 4) {
        h = (h * 33u) ^ uwc_sext(key[i]);
        h = (h * 33u) ^ uwc_sext(key[i + 1]);
        h = (h * 33u) ^ uwc_sext(key[i + 2]);
        h = (h * 33u) ^ uwc_sext(key[i + 3]);
    }
    for (; i < len; i++)
        h = (h * 33u) ^ uwc_sext(key[i]);
    return h;
}

/* djb33x of eight keys at once (get_many, issue 12.4), each bit-identical to uwc_djb33x_i.
 * One key's hash is a serial chain, 5 instructions a byte; here two vectors of four 32-bit
 * lanes, one key a lane, take four bytes of every key per 4-byte load and run the chains
 * side by side: h*33 as (h << 5) + h, the byte sign-extended by a shift pair, as uWSGI's
 * signed char (~2 instructions a byte a key). GCC/Clang generic vectors: SSE2 on x86-64,
 * NEON on aarch64. Bytes are read only inside [0, the shortest key's length) rounded down to
 * 4; each key's remaining bytes go through the scalar loop. Little-endian only (byte s of a
 * 4-byte load is bits 8s..8s+7); elsewhere every key goes through the scalar loop. */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define UWC_DJB33X_X8 1
typedef int32_t uwc_v4si __attribute__((vector_size(16)));
typedef uint32_t uwc_v4su __attribute__((vector_size(16)));
static inline int32_t uwc_ld32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }
#endif

static inline __attribute__((always_inline)) void uwc_djb33x_x8(const uint8_t *const k[8], const uint64_t len[8],
                                                                 uint32_t out[8]) {
    uint64_t i = 0;
    uint32_t h[8];
#ifdef UWC_DJB33X_X8
    uint64_t m = len[0], most = len[0];
    for (int t = 1; t < 8; t++) {
        if (len[t] < m) m = len[t];
        if (len[t] > most) most = len[t];
    }
    uwc_v4su a = {5381, 5381, 5381, 5381}, b = a;
    for (; i + 4 <= m; i += 4) {
        uwc_v4si x = {uwc_ld32(k[0] + i), uwc_ld32(k[1] + i), uwc_ld32(k[2] + i), uwc_ld32(k[3] + i)};
        uwc_v4si y = {uwc_ld32(k[4] + i), uwc_ld32(k[5] + i), uwc_ld32(k[6] + i), uwc_ld32(k[7] + i)};
        a = ((a << 5) + a) ^ (uwc_v4su)((uwc_v4si)((uwc_v4su)x << 24) >> 24);
        b = ((b << 5) + b) ^ (uwc_v4su)((uwc_v4si)((uwc_v4su)y << 24) >> 24);
        a = ((a << 5) + a) ^ (uwc_v4su)((uwc_v4si)((uwc_v4su)x << 16) >> 24);
        b = ((b << 5) + b) ^ (uwc_v4su)((uwc_v4si)((uwc_v4su)y << 16) >> 24);
        a = ((a << 5) + a) ^ (uwc_v4su)((uwc_v4si)((uwc_v4su)x << 8) >> 24);
        b = ((b << 5) + b) ^ (uwc_v4su)((uwc_v4si)((uwc_v4su)y << 8) >> 24);
        a = ((a << 5) + a) ^ (uwc_v4su)(x >> 24);
        b = ((b << 5) + b) ^ (uwc_v4su)(y >> 24);
    }
    if (i == most) {  /* keys of one length, a multiple of 4: no tails */
        memcpy(out, &a, 16);
        memcpy(out + 4, &b, 16);
        return;
    }
    memcpy(h, &a, 16);
    memcpy(h + 4, &b, 16);
#else
    for (int t = 0; t < 8; t++) h[t] = 5381;
#endif
    for (int t = 0; t < 8; t++) {
        uint32_t x = h[t];
        for (uint64_t j = i; j < len[t]; j++) x = (x * 33u) ^ uwc_sext(k[t][j]);
        out[t] = x;
    }
}

#define MURMUR_M 0x5BD1E995u

static inline uint32_t uwc_murmur2_i(const uint8_t *key, uint64_t len) {
    uint32_t h = (uint32_t)len;
    uint64_t n = len;
    const uint8_t *p = key;
    while (n >= 4) {
        uint32_t k = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        k *= MURMUR_M;
        k ^= k >> 24;
        k *= MURMUR_M;
        h *= MURMUR_M;
        h ^= k;
        p += 4;
        n -= 4;
    }
    /* the tail comes from key[0..2], not from p: uWSGI's quirk */
    switch (n) {
    case 3: h ^= uwc_sext(key[2]) << 16; /* fall through */
    case 2: h ^= uwc_sext(key[1]) << 8;  /* fall through */
    case 1: h ^= uwc_sext(key[0]); h *= MURMUR_M;
    }
    h ^= h >> 13;
    h *= MURMUR_M;
    h ^= h >> 15;
    return h;
}

/* wyhash (its "final version 3", by Wang Yi, released into the public domain under The
 * Unlicense: https://github.com/wangyi-fudan/wyhash), written here from the published
 * algorithm with its default secret and seed 0. Not a uWSGI hash: a cache using it cannot
 * exchange stores, dumps or UDP updates with uWSGI (the configuration refuses those). The
 * 64-bit result is folded to the engine's 32 bits. */
static const uint64_t WYP[4] = {0xa0761d6478bd642full, 0xe7037ed1a0b428dbull, 0x8ebc6af09c88c6e3ull,
                                0x589965cc75374cc3ull};

static inline void wy_mum(uint64_t *a, uint64_t *b) {
    __uint128_t r = (__uint128_t)*a * *b;
    *a = (uint64_t)r;
    *b = (uint64_t)(r >> 64);
}
static inline uint64_t wy_mix(uint64_t a, uint64_t b) { wy_mum(&a, &b); return a ^ b; }
/* little-endian loads (the engine's regions are host order and it only builds on x86-64/aarch64 LE) */
static inline uint64_t wy_r8(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint64_t wy_r4(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t wy_r3(const uint8_t *p, uint64_t k) {
    return ((uint64_t)p[0] << 16) | ((uint64_t)p[k >> 1] << 8) | p[k - 1];
}

static inline uint64_t uwc_wyhash64_i(const uint8_t *p, uint64_t len, uint64_t seed, const uint64_t *s) {
    uint64_t a, b;
    seed ^= s[0];
    if (__builtin_expect(len <= 16, 1)) {
        if (len >= 4) {
            uint64_t q = (len >> 3) << 2;
            a = (wy_r4(p) << 32) | wy_r4(p + q);
            b = (wy_r4(p + len - 4) << 32) | wy_r4(p + len - 4 - q);
        } else if (len > 0) {
            a = wy_r3(p, len);
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        uint64_t i = len;
        if (i > 48) {
            uint64_t see1 = seed, see2 = seed;
            do {
                seed = wy_mix(wy_r8(p) ^ s[1], wy_r8(p + 8) ^ seed);
                see1 = wy_mix(wy_r8(p + 16) ^ s[2], wy_r8(p + 24) ^ see1);
                see2 = wy_mix(wy_r8(p + 32) ^ s[3], wy_r8(p + 40) ^ see2);
                p += 48;
                i -= 48;
            } while (i > 48);
            seed ^= see1 ^ see2;
        }
        while (i > 16) {
            seed = wy_mix(wy_r8(p) ^ s[1], wy_r8(p + 8) ^ seed);
            i -= 16;
            p += 16;
        }
        a = wy_r8(p + i - 16);
        b = wy_r8(p + i - 8);
    }
    return wy_mix(s[1] ^ len, wy_mix(a ^ s[1], b ^ seed));
}

static inline uint32_t uwc_wyhash_i(const uint8_t *key, uint64_t len) {
    uint64_t h = uwc_wyhash64_i(key, len, 0, WYP);
    return (uint32_t)(h ^ (h >> 32));
}

#endif
