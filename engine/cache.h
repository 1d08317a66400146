/* uwcache engine: one cache as a data structure inside one mapped region.
 *
 * The engine knows nothing of Python, sockets or files: it is handed a pointer to a
 * shared mapping and works inside it. Item records use uWSGI's exact layout (88-byte
 * record header + key buffer) so dumps and store translation stay byte-compatible.
 *
 * Concurrency: structural changes take one robust, process-shared mutex in the header.
 * The hash buckets are split into stripes; each stripe has its own robust mutex and a
 * sequence counter (odd while a writer is inside) on one cache line. Every writer of a
 * stripe's buckets, records or values holds that stripe's mutex (the header mutex holder
 * takes the stripes it touches; an overwrite of an existing key takes only its stripe).
 * Readers of caches without LRU look up and copy optimistically, without writing shared
 * memory, and validate the counter afterwards; after a few torn tries they take the
 * stripe's mutex. Robust mutexes are released by the kernel when their holder dies (even
 * an unreaped zombie, even in another PID namespace): the next locker gets EOWNERDEAD and
 * repairs what the dead holder covered (the whole structure for the header mutex, the
 * half-written record for a stripe). A waiter for the header mutex spins briefly, then
 * sleeps on its futex; a waiter for a stripe spins, yields, then polls with short sleeps,
 * so that no stripe's lock word ever has the futex waiters bit and a stripe-only hold is
 * let go with a plain store rather than a locked exchange (format 7).
 */
#ifndef UWCACHE_ENGINE_CACHE_H
#define UWCACHE_ENGINE_CACHE_H

#include <stdint.h>
#include <stddef.h>
#include <pthread.h>

#define UWC_MAGIC "UWCACHE"          /* 8 bytes with the NUL */
#define UWC_FORMAT_VERSION 8u  /* 2: 32-bit hash table and free stack; 3: near-cache state at the
                                  * header end; 4: a hash tag beside each chain head; 5: a robust
                                  * mutex per stripe, lazy free stack, byte/block counters;
                                  * 6: a stripe names the slot its overwrite is copying into
                                  * (uwc_seq_stripe.writing), instead of flagging the record;
                                  * 7: no stripe waiter sleeps on the stripe's futex, so a
                                  * stripe-only hold is let go with a plain store;
                                  * 8: large caches place a new item in a slot picked from its
                                  * hash (its home) when that slot is free: the fresh range
                                  * may hold live slots (fresh_live), each explicit free-stack
                                  * entry's record holds its position (F_PREV) */
#define UWC_HEADER_SIZE 32768u
#define UWC_ITEM_HEADER 88u
/* A hash-table bucket: the chain head's slot, then its tag (UWC_TAG_*), 4 bytes each. */
#define UWC_BUCKET_BYTES 8u
/* Caches with at least this many usable slots give each new item its home slot when free
 * (format 8): a lookup then fetches the record while it reads the table, one memory read
 * fewer where the records do not fit in the CPU caches. Smaller caches keep uWSGI's order
 * (the highest free slot first). */
#define UWC_HOME_MIN_SLOTS 65536u
#define UWC_TAG_HASH 0x7FFFFFFFu  /* the head's hash, low 31 bits */
#define UWC_TAG_MORE 0x80000000u  /* the chain has more than the head */
#define UWC_COUNTER_SLOTS 160
#define UWC_SEQ_STRIPES 128
#define UWC_NET_COUNTERS 16
#define UWC_BYTE_ORDER_MARK 0x01020304u
#define UWC_NAME_MAX 255

/* djb33x and murmur2 are uWSGI's (bit-identical); wyhash is ours, faster, and cannot be
 * used with anything that exchanges items with uWSGI. */
enum uwc_hash_algo { UWC_HASH_DJB33X = 0, UWC_HASH_MURMUR2 = 1, UWC_HASH_WYHASH = 2 };

/* Behaviour options stored in the header: every attached process must agree on them. */
#define UWC_OPT_BITMAP        0x01u
#define UWC_OPT_LRU           0x02u
#define UWC_OPT_LAZY          0x04u
#define UWC_OPT_NO_EXPIRE     0x08u
#define UWC_OPT_LASTMOD       0x10u
#define UWC_OPT_CLEAR_ON_FULL 0x20u
#define UWC_OPT_FULL_SILENT   0x40u

typedef struct uwc_params {
    uint64_t max_items;     /* slots including the reserved slot 0 */
    uint64_t key_size;
    uint64_t block_size;
    uint64_t blocks;
    uint64_t hash_size;     /* buckets */
    uint32_t hash_algo;
    uint32_t options;
    int64_t math_initial;
    uint64_t sweep_on_full; /* seconds, 0 = off */
} uwc_params;

enum uwc_status {
    UWC_OK = 0,
    UWC_NOTFOUND,
    UWC_EXISTS,
    UWC_FULL,
    UWC_EKEY_EMPTY,
    UWC_EKEY_LONG,
    UWC_EVAL_EMPTY,
    UWC_EVAL_LARGE,
    UWC_ENOTINT,
    UWC_ENOMEM,
    UWC_ELOCK,
    UWC_EPARAMS,
    UWC_EMISMATCH,
    UWC_ECORRUPT,
};

/* Write flags: uWSGI's bit values where uWSGI has the flag (they end up in item records). */
#define UWC_F_UPDATE      0x002u
#define UWC_F_LOCAL       0x004u
#define UWC_F_ABSEXPIRE   0x008u
#define UWC_F_MATH        0x010u
#define UWC_F_INC         0x020u
#define UWC_F_DEC         0x040u
#define UWC_F_MUL         0x080u
#define UWC_F_DIV         0x100u
#define UWC_F_FIXEXPIRE   0x200u
#define UWC_F_STORED_MASK 0x3FFu
/* ours, never stored: math requires an existing value of exactly 8 bytes */
#define UWC_F_STRICT_MATH 0x10000u
/* ours, never stored, a test hook: the value copy of this write copies half and SIGKILLs */
#define UWC_F_DEBUG_CRASH_COPY 0x20000u
/* ours, in a record's flags only while its value is being written (under its stripe): a
 * record left with it by a dead writer may hold a torn value and is dropped by repair */
#define UWC_REC_WRITING   0x8000000000000000ull

/* Events a write may report back so the binding can log (outside the lock). */
#define UWC_EV_FULL    0x1u   /* no room, the write failed or something had to be evicted */
#define UWC_EV_EVICTED 0x2u   /* an LRU item was purged to make room */

/* Per-process hit/miss counters, one cache line each, so readers never share a line. */
typedef struct uwc_counter_slot {
    _Alignas(64) int32_t pid;
    uint32_t pad0;
    uint64_t hits;
    uint64_t miss;
    uint64_t writes;
    int64_t bytes_delta;   /* value bytes this process's stripe-only overwrites added */
    uint8_t pad[24];
} uwc_counter_slot;

/* One stripe of hash buckets: its sequence counter and its robust mutex on one cache
 * line, so a write only disturbs the readers and writers of the buckets it touches.
 * A stripe-only overwrite names the slot whose value it copies in `writing` (format 6) rather
 * than flagging the record: the line is the writer's own already, and the record's lines stay
 * clean (shared, read-only) in every other core's cache. */
typedef struct uwc_seq_stripe {
    _Alignas(64) uint64_t v;   /* odd while a writer holds the stripe (or one died in it) */
    uint32_t dirty;            /* a holder died inside: repair before anything trusts it */
    uint32_t writing;          /* slot whose value is being copied (0: none); a holder that
                                * takes the stripe from a dead one flags that record
                                * UWC_REC_WRITING, so repair drops it */
    pthread_mutex_t m;         /* robust, process-shared: the kernel frees it if we die */
} uwc_seq_stripe;

/* ---- near cache (issue 11): state of the L1 in front of Redis, kept at the header's end ----
 * Leases live in their own small table, never in item records, so Cache.get cannot meet one
 * and its hit path is unchanged. The generation and trust deadline are per shard (one shard
 * per Redis master). */
#define UWC_NEAR_SHARDS 16
#define UWC_NEAR_LEASES 512    /* a power of two: 8 KiB of the 32 KiB header */
enum {
    UWC_NEAR_ST_FILLS = 0, UWC_NEAR_ST_LOST, UWC_NEAR_ST_WAITS, UWC_NEAR_ST_UNTRUSTED, UWC_NEAR_ST_INVALIDATIONS,
    UWC_NEAR_ST_LAG_US, UWC_NEAR_ST_LEASES_FULL, UWC_NEAR_ST_FLUSHES, UWC_NEAR_ST_RECONNECTS, UWC_NEAR_ST_READ_THROUGH,
    UWC_NEAR_ST_TTL_ONLY,  /* 1 while the listener runs without tracking (TTL-only mode) */
    UWC_NEAR_ST_NSTATS = 16,
};
typedef struct uwc_near_slot {
    uint64_t fp;        /* 64-bit key fingerprint; 0 = empty, 1 = tombstone */
    uint32_t token;
    uint32_t until_ms;  /* monotonic ms, truncated: compared wrap-safely */
} uwc_near_slot;
typedef struct uwc_near_state {
    _Alignas(64) uint64_t deadline_ms[UWC_NEAR_SHARDS];  /* monotonic ms; reads trust the L1 before it */
    uint32_t gen[UWC_NEAR_SHARDS];
    _Alignas(64) uint32_t token_seq;
    uint32_t leases_live;
    uint64_t stats[UWC_NEAR_ST_NSTATS];
    uwc_near_slot leases[UWC_NEAR_LEASES];
} uwc_near_state;

typedef struct uwc_header {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint32_t byte_order;
    uint32_t state;            /* UWC_STATE_READY once initialised */
    uwc_params params;
    uint64_t items_off, data_off, table_off, stack_off, bitmap_off, total_size;
    uint64_t created_at;
    char name[UWC_NAME_MAX + 1];

    _Alignas(64) pthread_mutex_t lock;
    uwc_seq_stripe seqs[UWC_SEQ_STRIPES];  /* odd while a writer changes those buckets */

    _Alignas(64) uint64_t n_items;
    uint64_t full;
    uint64_t lru_head, lru_tail;
    uint64_t next_scan;         /* earliest known expiry, 0 = nothing to sweep */
    uint64_t bitmap_pos;        /* first-fit hint */
    uint64_t last_modified_at;
    uint64_t stack_top;         /* explicit free-stack entries (above the fresh ones) */
    uint64_t stack_fresh;       /* slots 1..stack_fresh are free and sit below the stack */
    uint64_t bytes_used;        /* value bytes (plus the per-process deltas in counters) */
    uint64_t blocks_used;       /* bitmap mode: blocks held by items */
    uint64_t rebuild_pending;   /* a bounds check failed: rebuild before the lock is let go */
    uint64_t evictions;
    uint64_t expired_freed;
    uint64_t repairs;
    uint64_t writes;
    uint64_t last_full_at;      /* for "full" events per second in monitors */
    uint64_t stripe_takeovers;  /* stripes whose holder died, recovered (EOWNERDEAD) */
    uint64_t sweep_on_full_next;
    uint64_t fresh_live;        /* format 8: live (home) slots at or below stack_fresh; in
                                   what was padding, so formats 5-7 read it as 0 */

    _Alignas(64) int32_t sweeper_pid;
    uint32_t pad1;
    uint64_t sweeper_lease_until;

    _Alignas(64) uint64_t retired_hits;
    uint64_t retired_miss;
    uint64_t retired_writes;
    uint64_t net[UWC_NET_COUNTERS];  /* replication counters, owned by the network layer */

    uwc_counter_slot counters[UWC_COUNTER_SLOTS];

    uwc_near_state near;        /* format 3: near cache (issue 11) */
} uwc_header;

#define UWC_STATE_READY 0x52454459u  /* "REDY" */

/* A process-local handle. The geometry is copied out of the header at attach time and
 * never re-read from shared memory, so a damaged header cannot send us out of bounds. */
typedef struct uwc_cache {
    uint8_t *base;
    uint64_t size;
    uwc_header *h;
    uwc_params p;
    uint8_t *items;
    uint8_t *data;
    /* The hash table, per bucket b: buckets[2b] the head slot, buckets[2b+1] its tag (UWC_TAG_*).
     * (Named "buckets" since format 3, so that code written for the old one-u32 "table" does
     * not compile: every chain change must go through chain_append/chain_unlink or retag.) */
    uint32_t *buckets;
    uint32_t *stack;
    uint8_t *bitmap;
    uint64_t rec_size;
    uint64_t max_item_size;
    uint64_t bitmap_bytes;
    uint64_t hash_mask;   /* hash_size - 1 when it is a power of two, else 0 (use %) */
    uint64_t odd_mask[UWC_SEQ_STRIPES / 64];  /* stripes this lock holder made odd */
    int rebuilding;       /* inside rebuild(): stripes from dead holders need no own repair */
    uint64_t reclaim_cursor;  /* where this process's next full-cache reclaim scan starts */
    int home_slots;       /* max_items - 1 >= UWC_HOME_MIN_SLOTS: new items go to their home slot */
} uwc_cache;

typedef struct uwc_write {
    const uint8_t *key;
    uint64_t key_len;
    const uint8_t *value;
    uint64_t value_len;
    uint64_t expires;      /* relative seconds unless UWC_F_ABSEXPIRE; 0 = never */
    uint32_t flags;
    uint64_t now;          /* seconds; 0: uwc_set reads the clock only if it needs it */
    uwc_counter_slot *counters;  /* where to count the write (per process), may be NULL */
    /* outputs */
    int64_t math_result;
    uint64_t expires_abs;  /* expiry actually stored (absolute), 0 = none */
    uint32_t events;
} uwc_write;

typedef struct uwc_stats {
    uint64_t items, hits, miss, full, last_modified_at;
    uint64_t evictions, expired_freed, repairs, writes, next_scan;
    uint64_t blocks_used, bytes_used;  /* counters kept by every write */
    uint64_t expired_pending;          /* counted without the lock: approximate under writes; past
                                        * 65536 slots, estimated from an even sample of them */
    uint64_t largest_free_run;   /* bitmap mode: longest run of free blocks (read without the lock) */
    uint64_t odd_stripes;
    uint64_t stripe_takeovers;
    int32_t sweeper_pid;
    uint64_t sweeper_lease_until;
} uwc_stats;

/* Growable list of keys handed back by keys()/sweep(): [u64 len][bytes]... */
typedef struct uwc_keybuf {
    uint8_t *buf;
    uint64_t len, cap, count;
} uwc_keybuf;

/* Gives the buffer a value is copied into. It may be called with a stripe held through the
 * thread's list_op_pending alone (not linked into its robust list), so it must not take or
 * let go of any robust mutex, nor re-enter the engine; it may allocate. */
typedef void *(*uwc_alloc_fn)(void *ctx, uint64_t size);

/* hash.c */
uint32_t uwc_djb33x(const uint8_t *key, uint64_t len);
uint32_t uwc_murmur2(const uint8_t *key, uint64_t len);
uint32_t uwc_wyhash(const uint8_t *key, uint64_t len);
uint64_t uwc_wyhash64(const uint8_t *key, uint64_t len, uint64_t seed, const uint64_t *secret);

/* geometry */
/* the limits uwc_params_check enforces (inclusive) */
#define UWC_MAX_ITEMS_MIN 2ull
#define UWC_MAX_ITEMS_MAX (1ull << 32)
#define UWC_KEY_SIZE_MAX 65535ull
#define UWC_BLOCK_SIZE_MAX (1ull << 40)
#define UWC_BLOCKS_MAX (1ull << 40)
#define UWC_HASH_SIZE_MAX 0xFFFFFFFFull
#define UWC_REGION_SIZE_MAX (1ull << 46)
int uwc_params_check(const uwc_params *p, const char **why);
int uwc_region_size(const uwc_params *p, uint64_t *size);
/* where each area of a region starts (bytes from its base), and its total size */
typedef struct uwc_layout { uint64_t items_off, data_off, table_off, stack_off, bitmap_off, total; } uwc_layout;
int uwc_region_layout(const uwc_params *p, uwc_layout *l);

/* lifecycle: create a fresh region, attach to a live one, or recover a cold one.
 * uwc_create expects `mem` to be zero-filled past the header (a freshly truncated or
 * fallocated file is): it writes only the header, so creating a large cache is fast. */
int uwc_create(uwc_cache *c, void *mem, uint64_t size, const uwc_params *p, const char *name, uint64_t now);
int uwc_attach(uwc_cache *c, void *mem, uint64_t size, const uwc_params *expect, const char **why);
int uwc_recover(uwc_cache *c, uint64_t now, uint64_t *dropped);
int uwc_header_peek(const void *mem, uint64_t size, uwc_params *out, char *name_out, const char **why);
/* The format version a cold region of an older format can be opened as after a rewrite of
 * its version field (formats 5 and 6 differ from 7 only in how live processes lock, which a
 * cold open starts afresh), or 0 when it cannot be. */
uint32_t uwc_cold_upgrade_to(const void *mem, uint64_t size);

/* operations */
uint32_t uwc_hash(const uwc_cache *c, const uint8_t *key, uint64_t len);
/* now 0: the clock is read only if the item found has an expiry (or a slow path runs) */
int uwc_get(uwc_cache *c, const uint8_t *key, uint64_t klen, uint64_t now,
            uwc_alloc_fn alloc, void *ctx, uint64_t *expires_out, uwc_counter_slot *counters);
int uwc_exists(uwc_cache *c, const uint8_t *key, uint64_t klen, uint64_t now, uint64_t *expires_out);
int uwc_set(uwc_cache *c, uwc_write *w);
int uwc_delete(uwc_cache *c, const uint8_t *key, uint64_t klen, uint64_t now, uwc_counter_slot *counters);
int uwc_clear(uwc_cache *c, uint64_t now, uwc_counter_slot *counters);
int uwc_keys(uwc_cache *c, uint64_t now, uwc_keybuf *out);
int uwc_sweep(uwc_cache *c, uint64_t now, int force, uwc_keybuf *freed_keys, uint64_t *freed);
int uwc_stats_read(uwc_cache *c, uint64_t now, uwc_stats *s);
int uwc_check(uwc_cache *c, char *msg, size_t msglen);
int uwc_repair(uwc_cache *c, uint64_t now, uint64_t *dropped);
int uwc_sweeper_claim(uwc_cache *c, int32_t pid, uint64_t now, uint64_t lease);
void uwc_sweeper_release(uwc_cache *c, int32_t pid);
uint64_t uwc_n_items(const uwc_cache *c);
uint64_t uwc_full_events(const uwc_cache *c);  /* the `full` counter alone: no scan */

/* batch operations (cache.c, last section): per-entry status in rcs[], n entries */
typedef struct uwc_key { const uint8_t *key; uint64_t len; } uwc_key;
typedef void *(*uwc_alloc_at_fn)(void *ctx, uint64_t index, uint64_t size);
int uwc_get_many(uwc_cache *c, const uwc_key *keys, uint64_t n, uint64_t now, uwc_alloc_at_fn alloc, void *ctx,
                 int *rcs, uwc_counter_slot *counters);
int uwc_set_many(uwc_cache *c, uwc_write *ws, uint64_t n, int *rcs);
int uwc_delete_many(uwc_cache *c, const uwc_key *keys, uint64_t n, uint64_t now, int *rcs,
                    uwc_counter_slot *counters);
int uwc_touch(uwc_cache *c, const uint8_t *key, uint64_t klen, uint64_t expires, uint64_t now,
              uint64_t *expires_abs);

/* raw image (uWSGI dump layout: items area then data area) */
uint64_t uwc_image_size(const uwc_cache *c);
int uwc_export_image(uwc_cache *c, uint8_t *dst, uint64_t dst_len);
int uwc_import_image(uwc_cache *c, const uint8_t *src, uint64_t src_len, const uwc_params *src_params,
                     uint64_t now, uint64_t *loaded, uint64_t *dropped);

/* per-process counters */
uwc_counter_slot *uwc_counter_claim(uwc_cache *c, int32_t pid);
void uwc_counter_release(uwc_cache *c, uwc_counter_slot *slot);

/* lock (exposed for the crash tests and the network layer's dump) */
int uwc_lock(uwc_cache *c);
void uwc_unlock(uwc_cache *c);
void uwc_debug_crash_in_lock(uwc_cache *c, int stage);
/* test hook: hold the header mutex (and every stripe if `stripes`) for `ms` milliseconds */
int uwc_debug_hold_lock(uwc_cache *c, unsigned ms, int stripes);

void uwc_keybuf_free(uwc_keybuf *kb);

/* ---- near cache (issue 11): lease / fill / batched invalidate / generation / deadline ----
 * Items filled by the near tier carry a marker, their shard and the shard's generation in
 * the high bits of the record's flags (uWSGI never stores bits above 0x3FF). */
#define UWC_NEAR_UNTRUSTED 100      /* status: the shard's trust deadline has passed */
#define UWC_NEAR_MARK 0x80000000ull
int uwc_near_get(uwc_cache *c, const uint8_t *key, uint64_t klen, uint64_t now, uint64_t now_ms,
                 uwc_alloc_fn alloc, void *ctx, uwc_counter_slot *counters);
int uwc_near_lease(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t shard, uint64_t now_ms,
                   uint32_t lease_ms, uint32_t *token);
int uwc_near_fill(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t token, const uint8_t *value,
                  uint64_t vlen, uint64_t ttl_s, uint32_t shard, uint64_t now, uint64_t now_ms);
int uwc_near_release(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t token);
/* keys: [u64 len][bytes]... (the keybuf format); returns items removed in *removed */
int uwc_near_invalidate(uwc_cache *c, const uint8_t *keys, uint64_t keys_len, uint64_t now, uint64_t *removed);
int uwc_near_bump(uwc_cache *c, int shard, uint32_t *gen_out);  /* shard < 0: every shard */
void uwc_near_trust(uwc_cache *c, uint32_t shard, uint64_t deadline_ms);
void uwc_near_count(uwc_cache *c, unsigned stat, uint64_t n);
void uwc_near_reset(uwc_cache *c);  /* cold region: no lease, nothing trusted, new generation */

#endif
