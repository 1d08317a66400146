/* The two hash functions of uWSGI's cache, bit-identical to uWSGI on x86-64.
 *
 * uWSGI reads key bytes as (signed) char in places, so bytes >= 0x80 are sign-extended
 * before the XOR; its murmur2 also mixes the 1..3 tail bytes taken from the START of the
 * key. Both quirks are reproduced on purpose: stores and dumps exchanged with real uWSGI
 * must hash every key to the same bucket. We use explicit int8_t so the result does not
 * depend on the platform's char signedness.
 */
#include "cache.h"

static inline uint32_t sext(uint8_t b) { return (uint32_t)(int32_t)(int8_t)b; }

uint32_t uwc_djb33x(const uint8_t *key, uint64_t len) {
    uint32_t h = 5381;
    uint64_t i = 0;
    /* the chain of multiplies is inherently serial; unrolling only sheds loop control */
    for (; i + 4 <= len; i += 4) {
        h = (h * 33u) ^ sext(key[i]);
        h = (h * 33u) ^ sext(key[i + 1]);
        h = (h * 33u) ^ sext(key[i + 2]);
        h = (h * 33u) ^ sext(key[i + 3]);
    }
    for (; i < len; i++)
        h = (h * 33u) ^ sext(key[i]);
    return h;
}

#define MURMUR_M 0x5BD1E995u

uint32_t uwc_murmur2(const uint8_t *key, uint64_t len) {
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
    case 3: h ^= sext(key[2]) << 16; /* fall through */
    case 2: h ^= sext(key[1]) << 8;  /* fall through */
    case 1: h ^= sext(key[0]); h *= MURMUR_M;
    }
    h ^= h >> 13;
    h *= MURMUR_M;
    h ^= h >> 15;
    return h;
}
