/* Exported wrappers around the inline hash functions of hash.h. */
#include "cache.h"
#include "hash.h"

uint32_t uwc_djb33x(const uint8_t *key, uint64_t len) { return uwc_djb33x_i(key, len); }
uint32_t uwc_murmur2(const uint8_t *key, uint64_t len) { return uwc_murmur2_i(key, len); }
uint32_t uwc_wyhash(const uint8_t *key, uint64_t len) { return uwc_wyhash_i(key, len); }
uint64_t uwc_wyhash64(const uint8_t *key, uint64_t len, uint64_t seed, const uint64_t *secret) {
    return uwc_wyhash64_i(key, len, seed, secret);
}
