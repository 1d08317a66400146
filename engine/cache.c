/* uwcache engine: see cache.h for the model. Behaviour follows uWSGI's cache2 (the
 * docs/internals/uwsgi-behaviour.md, sections 2-4) except where uWSGI has a documented bug we fix:
 * expired items are never returned, the bitmap and LRU are rebuilt on load, math ops
 * keep their counter in bitmap mode, and a dead lock holder is recovered from. */
#define _GNU_SOURCE
#include "cache.h"
#include "hash.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sched.h>

/* ---- item record access (uWSGI layout, host order, possibly unaligned) ---- */

enum {
    F_FLAGS = 0, F_KEYSIZE = 8, F_HASH = 16, F_VALSIZE = 24, F_FIRST = 32, F_EXPIRES = 40,
    F_HITS = 48, F_PREV = 56, F_NEXT = 64, F_LRU_PREV = 72, F_LRU_NEXT = 80, F_KEY = 88,
};

typedef uint64_t __attribute__((aligned(1), may_alias)) u64u;

static inline uint8_t *rec(const uwc_cache *c, uint64_t slot) { return c->items + slot * c->rec_size; }
static inline uint64_t rd(const uint8_t *r, int off) { return *(const u64u *)(r + off); }
static inline void wr(uint8_t *r, int off, uint64_t v) { *(u64u *)(r + off) = v; }
/* optimistic readers may race with a writer: force exactly one load per field */
static inline uint64_t vrd(const uint8_t *r, int off) { return *(const volatile u64u *)(r + off); }

#define SLOT(c, s) rec((c), (s))

_Static_assert(sizeof(uwc_seq_stripe) == 64, "a stripe (counter + robust mutex) is one cache line");
/* fresh_live (format 8) sits in what was the padding before sweeper_pid: every later field
 * keeps its offset, so a cold region of formats 5-7 opens as format 8 */
_Static_assert(offsetof(uwc_header, fresh_live) == offsetof(uwc_header, sweep_on_full_next) + 8 &&
               offsetof(uwc_header, sweeper_pid) == (offsetof(uwc_header, sweep_on_full_next) + 8 + 63) / 64 * 64,
               "the header layout of formats 5-7 is kept");

static inline uint64_t blocks_for(const uwc_cache *c, uint64_t len) {
    return (len + c->p.block_size - 1) / c->p.block_size;
}
static inline int is_bitmap(const uwc_cache *c) { return (c->p.options & UWC_OPT_BITMAP) != 0; }
static inline int is_lru(const uwc_cache *c) { return (c->p.options & UWC_OPT_LRU) != 0; }

/* ---- striped sequence counters: seqlock for readers, robust mutex for writers ----
 *
 * Stripe i covers the hash buckets b with b % UWC_SEQ_STRIPES == i: their chains, and the
 * records and values of the items in them. Readers never write it: they read the counter
 * before and after a lookup and retry if it changed or was odd. Writers hold the stripe's
 * robust mutex and keep the counter odd while they change anything it covers. The header
 * mutex holder takes the stripes it touches (lock order: header mutex, then stripes; only
 * the header mutex holder ever holds more than one stripe, so there is no cycle); an
 * overwrite of an existing key takes only its stripe, without the header mutex, so
 * processes updating different keys do not queue on one lock.
 *
 * The kernel releases a robust mutex whose holder dies (at exit, before the process is a
 * zombie; the lock word holds the holder's own thread id, so PID namespaces do not
 * matter). The next locker gets EOWNERDEAD: the stripe is marked dirty and stays odd until
 * the header mutex holder repairs it (stripe_fix): only a stripe-only overwrite can die
 * there without the header mutex, and it flags its record while copying the value. */

static inline void cpu_relax(void);
static inline uint64_t bucket_of(const uwc_cache *c, uint64_t h) {
    return c->hash_mask ? (h & c->hash_mask) : h % c->p.hash_size;
}
static inline unsigned stripe_of_bucket(uint64_t bucket) { return (unsigned)(bucket % UWC_SEQ_STRIPES); }

#define STRIPE_YIELDS 8          /* sched_yield()s before a stripe waiter starts sleeping */
#define LOCK_SPINS 128           /* pauses before sleeping in the kernel (some 2-10 us: far longer than
                                  * any critical section, far shorter than a time slice) */
#define OWNER_DIED_BIT 0x40000000 /* FUTEX_OWNER_DIED in a robust lock word */
#define WAITERS_BIT ((int)0x80000000u) /* FUTEX_WAITERS */
#define TID_MASK 0x3fffffff

/* ---- robust mutexes without the call overhead ----
 *
 * glibc's robust lock and unlock cost about 140 instructions per overwrite, more than the
 * rest of the engine's work. The uncontended cases are done here inline with glibc's own
 * protocol on the same pthread_mutex_t: announce the operation in the thread's robust list
 * head (list_op_pending), take the lock word with a compare-and-swap of our thread id,
 * link the mutex into the thread's robust list (so the kernel releases it if we die), and
 * the reverse on unlock (waking a sleeper when the waiters bit is set). Contended,
 * owner-died and error cases go through pthread_mutex_lock/trylock, which share the state.
 * A self-test against glibc at first use switches this on only where the layout is the one
 * expected; otherwise every lock goes through the pthread calls. */

struct uwc_robust_head { void *list; long futex_offset; void *list_op_pending; };

#if defined(__GLIBC__) && (defined(__x86_64__) || defined(__aarch64__))
#define UWC_FAST_ROBUST 1
#include <stddef.h>
#include <sys/syscall.h>
#include <linux/futex.h>

typedef struct { struct uwc_robust_head *head; int tid; } uwc_thread_lock_state;
static __thread uwc_thread_lock_state tls_lock __attribute__((tls_model("initial-exec")));
static int fast_robust;  /* set once by the self-test */
static pthread_once_t fast_once = PTHREAD_ONCE_INIT;

static void fast_after_fork(void) { tls_lock.tid = 0; }  /* the child has a new thread id */

static int fast_thread_init(void) {
    struct uwc_robust_head *h;
    size_t len;
    if (syscall(SYS_get_robust_list, 0, &h, &len) != 0 || len != sizeof *h || !h) return 0;
    tls_lock.head = h;
    tls_lock.tid = (int)syscall(SYS_gettid);
    return 1;
}

#define LINK_OF(m) ((void *)&(m)->__data.__list.__next)
#define AS_LIST(p) ((__pthread_list_t *)(((uintptr_t)(p) & ~1ul) - offsetof(__pthread_list_t, __next)))

static inline int fast_trylock(pthread_mutex_t *m) {
    struct uwc_robust_head *h = tls_lock.head;
    int expect = 0;
    h->list_op_pending = LINK_OF(m);
    __asm__ __volatile__("" ::: "memory");
    if (!__atomic_compare_exchange_n(&m->__data.__lock, &expect, tls_lock.tid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        __asm__ __volatile__("" ::: "memory");
        h->list_op_pending = NULL;
        return EBUSY;
    }
    /* glibc's __count, __owner and __nusers bookkeeping is left out: nothing reads it for a
     * robust normal mutex that only these functions unlock */
    __asm__ __volatile__("" ::: "memory");
    void *first = h->list;
    AS_LIST(first)->__prev = LINK_OF(m);
    m->__data.__list.__next = first;
    m->__data.__list.__prev = (void *)h;
    __asm__ __volatile__("" ::: "memory");
    h->list = LINK_OF(m);
    __asm__ __volatile__("" ::: "memory");
    h->list_op_pending = NULL;
    return 0;
}

static inline void fast_unlock(pthread_mutex_t *m) {
    struct uwc_robust_head *h = tls_lock.head;
    h->list_op_pending = LINK_OF(m);
    __asm__ __volatile__("" ::: "memory");
    AS_LIST(m->__data.__list.__next)->__prev = m->__data.__list.__prev;
    AS_LIST(m->__data.__list.__prev)->__next = m->__data.__list.__next;
    m->__data.__list.__prev = NULL;
    m->__data.__list.__next = NULL;
    m->__data.__owner = 0;  /* set by glibc when it took the lock (slow path) */
    if (__atomic_exchange_n(&m->__data.__lock, 0, __ATOMIC_RELEASE) & WAITERS_BIT)
        syscall(SYS_futex, &m->__data.__lock, FUTEX_WAKE, 1, NULL, NULL, 0);
    __asm__ __volatile__("" ::: "memory");
    h->list_op_pending = NULL;
}

/* A hold covered by list_op_pending alone: the kernel treats the pending entry like a list
 * entry when the thread dies (the lock word holds our thread id: it sets OWNER_DIED and
 * wakes a waiter). Only for a single stripe held with no other robust-mutex operation
 * before its release (a stripe-only overwrite or read); it saves linking the mutex into the
 * list. pend_unlock also releases a mutex glibc's slow path took (and linked). */
static inline int pend_trylock(pthread_mutex_t *m) {
    struct uwc_robust_head *h = tls_lock.head;
    int expect = 0;
    h->list_op_pending = LINK_OF(m);
    __asm__ __volatile__("" ::: "memory");
    if (__atomic_compare_exchange_n(&m->__data.__lock, &expect, tls_lock.tid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return 0;
    __asm__ __volatile__("" ::: "memory");
    h->list_op_pending = NULL;
    return EBUSY;
}

static inline void pend_unlock(pthread_mutex_t *m) {
    struct uwc_robust_head *h = tls_lock.head;
    if (h->list_op_pending != LINK_OF(m)) {  /* glibc took it and linked it */
        fast_unlock(m);
        return;
    }
    /* A plain store, not an exchange: nobody sleeps on a stripe's futex (stripe_mutex_take
     * polls), so there is no waiters bit to see. A locked exchange here would wait for the
     * value lines this write dirtied to be owned; the store lets that finish in the
     * background (issue 10.6: +20% all-writes throughput at 2-8 processes, -5% set). If we
     * die after it, the kernel finds a lock word without our id and leaves it alone. */
    __atomic_store_n(&m->__data.__lock, 0, __ATOMIC_RELEASE);
    __asm__ __volatile__("" ::: "memory");
    h->list_op_pending = NULL;
}

/* Lock and unlock a private robust mutex with glibc and with ours, crosswise, and check the
 * thread's robust list after each step. */
static int fast_selftest_passes(void) {
    struct uwc_robust_head *h = tls_lock.head;
    pthread_mutex_t m;
    pthread_mutexattr_t a;
    if (h->futex_offset != (long)offsetof(pthread_mutex_t, __data.__lock) - (long)offsetof(pthread_mutex_t, __data.__list.__next))
        return 0;
    if (pthread_mutexattr_init(&a)) return 0;
    int bad = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) ||
              pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) || pthread_mutex_init(&m, &a);
    pthread_mutexattr_destroy(&a);
    if (bad) return 0;
    void *before = h->list;
    int ok = 1;
    if (pthread_mutex_lock(&m)) {
        pthread_mutex_destroy(&m);
        return 0;
    }
    ok &= h->list == LINK_OF(&m) && m.__data.__list.__next == before && m.__data.__list.__prev == (void *)h &&
          AS_LIST(before)->__prev == LINK_OF(&m) && (m.__data.__lock & TID_MASK) == tls_lock.tid;
    fast_unlock(&m);  /* ours after glibc's */
    ok &= h->list == before && m.__data.__lock == 0;
    if (ok && fast_trylock(&m) == 0) {
        ok &= h->list == LINK_OF(&m) && pthread_mutex_trylock(&m) == EBUSY;
        ok &= pthread_mutex_unlock(&m) == 0;  /* glibc's after ours */
        ok &= h->list == before && m.__data.__lock == 0;
    } else {
        ok = 0;
    }
    pthread_mutex_destroy(&m);
    return ok;
}

static void fast_selftest(void) {
    pthread_atfork(NULL, NULL, fast_after_fork);
    if (!fast_thread_init()) return;
    fast_robust = fast_selftest_passes();
    /* a thread id in tls_lock means "fast path on": every refusal above must clear it */
    if (!fast_robust) tls_lock.tid = 0;
}

static inline int mutex_trylock(pthread_mutex_t *m) {
    if (__builtin_expect(!tls_lock.tid, 0)) {
        pthread_once(&fast_once, fast_selftest);
        if (!fast_robust || (!tls_lock.tid && !fast_thread_init())) return pthread_mutex_trylock(m);
    }
    if (fast_trylock(m) == 0) return 0;
    return pthread_mutex_trylock(m);  /* busy, or its owner died: glibc tells which */
}

static inline void mutex_unlock(pthread_mutex_t *m) {
    /* fast_robust implies this thread's state was set up by the lock call */
    if (__builtin_expect(fast_robust, 1)) fast_unlock(m);
    else pthread_mutex_unlock(m);
}
#else
#define mutex_trylock pthread_mutex_trylock
#define mutex_unlock pthread_mutex_unlock
#endif

/* Take a robust mutex: try, spin briefly reading the lock word (a waiter whose holder is
 * running gets it without a syscall), then sleep on the futex. Returns 0, EOWNERDEAD, or
 * another pthread error. */
static int mutex_take(pthread_mutex_t *m) {
    int r = mutex_trylock(m);
    if (__builtin_expect(r != EBUSY, 1)) return r;
#ifdef __GLIBC__
    for (int i = 0; i < LOCK_SPINS; i++) {
        cpu_relax();
        int w = __atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED);
        if (w == 0 || (w & OWNER_DIED_BIT)) {
            r = mutex_trylock(m);
            if (r != EBUSY) return r;
        }
    }
#endif
    return pthread_mutex_lock(m);
}

/* Take a stripe's mutex, never sleeping on its futex (format 7): spin reading the lock word
 * while its holder is likely running, then yield, then poll with short sleeps (a holder
 * that was descheduled, or one that died, which trylock reports as EOWNERDEAD). Since no
 * stripe waiter sets the futex waiters bit, a lone stripe's unlock is a plain store. */
static int stripe_mutex_take(pthread_mutex_t *m) {
    int r = mutex_trylock(m);
    if (__builtin_expect(r != EBUSY, 1)) return r;
    for (unsigned n = 0;; n++) {
        if (n < LOCK_SPINS) {
            cpu_relax();
#ifdef __GLIBC__
            int w = __atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED);
            if (w != 0 && !(w & OWNER_DIED_BIT)) continue;
#endif
        } else if (n < LOCK_SPINS + STRIPE_YIELDS) {
            sched_yield();
        } else {
            /* 20 us, doubling every 8 sleeps up to 1.28 ms (after some 10 ms): a descheduled
             * holder is back within a time slice, and a long wait (a holder stopped in a
             * debugger, many waiters) costs little CPU */
            unsigned shift = (n - LOCK_SPINS - STRIPE_YIELDS) / 8;
            struct timespec ts = {0, 20000L << (shift < 6 ? shift : 6)};
            nanosleep(&ts, NULL);
        }
        r = mutex_trylock(m);
        if (r != EBUSY) return r;
    }
}

/* A stripe taken from a dead holder (EOWNERDEAD, now ours): the slot its overwrite was
 * copying a value into, if any, may hold a torn value. Flag that record UWC_REC_WRITING, the
 * mark repair (stripe_fix, rebuild) drops records by. A slot out of range is foreign bytes:
 * no write of ours named it. */
static void stripe_adopt(uwc_cache *c, uwc_seq_stripe *st) {
    uint64_t s = st->writing;
    if (!s) return;
    if (s < c->p.max_items) {
        uint8_t *r = SLOT(c, s);
        wr(r, F_FLAGS, rd(r, F_FLAGS) | UWC_REC_WRITING);
    }
    st->writing = 0;
}

/* Take stripe i's mutex. Returns 0 when it is clean, 1 when a holder died inside it (now
 * or earlier: dirty), -1 on a lock error. A holder that died is counted once. */
static __attribute__((noinline)) int stripe_take_slow(uwc_cache *c, unsigned i) {
    uwc_seq_stripe *st = &c->h->seqs[i];
    int r = stripe_mutex_take(&st->m);
    if (__builtin_expect(r != 0, 0)) {
        if (r != EOWNERDEAD) return -1;
        __atomic_store_n(&st->dirty, 1, __ATOMIC_RELAXED);
        stripe_adopt(c, st);
        __atomic_add_fetch(&c->h->stripe_takeovers, 1, __ATOMIC_RELAXED);
        pthread_mutex_consistent(&st->m);
    }
    return __atomic_load_n(&st->dirty, __ATOMIC_RELAXED) ? 1 : 0;
}

/* The uncontended case inline. `alone`: a lone stripe hold (no other lock taken or let go
 * until its release with stripe_alone_unlock), covered by list_op_pending without linking
 * the mutex into the robust list; otherwise (the header mutex holder's stripes) linked, and
 * released by stripe_release. */
static inline __attribute__((always_inline)) int stripe_take(uwc_cache *c, unsigned i, int alone) {
#ifdef UWC_FAST_ROBUST
    uwc_seq_stripe *st = &c->h->seqs[i];
    if (__builtin_expect(tls_lock.tid != 0, 1) && (alone ? pend_trylock(&st->m) : fast_trylock(&st->m)) == 0)
        return __atomic_load_n(&st->dirty, __ATOMIC_RELAXED) ? 1 : 0;
#else
    (void)alone;
#endif
    return stripe_take_slow(c, i);
}
static inline int stripe_alone_take(uwc_cache *c, unsigned i) { return stripe_take(c, i, 1); }

static inline void stripe_alone_unlock(uwc_cache *c, unsigned i) {
#ifdef UWC_FAST_ROBUST
    if (__builtin_expect(tls_lock.tid != 0, 1)) { pend_unlock(&c->h->seqs[i].m); return; }
#endif
    pthread_mutex_unlock(&c->h->seqs[i].m);
}

/* Writer side: the counter goes odd (a dead holder may have left it odd already). */
static inline void stripe_make_odd(uwc_cache *c, unsigned i) {
    uint64_t *p = &c->h->seqs[i].v;
    uint64_t v = __atomic_load_n(p, __ATOMIC_RELAXED);
    if (!(v & 1)) __atomic_store_n(p, v + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);  /* the odd value is seen before our changes */
}

static inline void stripe_release(uwc_cache *c, unsigned i) {
    uint64_t *p = &c->h->seqs[i].v;
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
    mutex_unlock(&c->h->seqs[i].m);
}

static void stripe_fix(uwc_cache *c, unsigned i);

/* The header mutex holder takes a stripe before its first change to the stripe's buckets. */
static inline void touch_stripe(uwc_cache *c, unsigned i) {
    uint64_t bit = 1ull << (i & 63);
    if (c->odd_mask[i >> 6] & bit) return;
    int r = stripe_take(c, i, 0);
    if (__builtin_expect(r < 0, 0)) {
        /* a mutex the pthread calls refuse (foreign bytes): not ours to release; go on under
         * the header mutex alone and have the structure rebuilt */
        c->h->rebuild_pending = 1;
        return;
    }
    stripe_make_odd(c, i);
    c->odd_mask[i >> 6] |= bit;
    if (__builtin_expect(r == 1, 0)) stripe_fix(c, i);
}
static inline void touch_hash(uwc_cache *c, uint64_t h) { touch_stripe(c, stripe_of_bucket(bucket_of(c, h))); }
static void touch_all(uwc_cache *c) {
    for (unsigned i = 0; i < UWC_SEQ_STRIPES; i++) touch_stripe(c, i);
}

/* Release every stripe the mutex holder took (just before it unlocks). */
static void release_stripes(uwc_cache *c) {
    for (unsigned w = 0; w < UWC_SEQ_STRIPES / 64; w++) {
        uint64_t m = c->odd_mask[w];
        while (m) {
            stripe_release(c, w * 64 + (unsigned)__builtin_ctzll(m));
            m &= m - 1;
        }
        c->odd_mask[w] = 0;
    }
}

static int init_mutex(pthread_mutex_t *m);

/* A cold region (nobody attached): stripe mutexes may be held by dead processes or be
 * garbage from another boot: start fresh ones, with even counters. */
static void normalize_stripes(uwc_cache *c) {
    for (unsigned i = 0; i < UWC_SEQ_STRIPES; i++) {
        uwc_seq_stripe *st = &c->h->seqs[i];
        stripe_adopt(c, st);  /* a value copy that never finished: its record is dropped */
        if (st->v & 1) st->v++;
        st->dirty = 0;
        init_mutex(&st->m);
    }
    memset(c->odd_mask, 0, sizeof c->odd_mask);
}

static inline uint64_t seq_read_begin(const uwc_cache *c, uint64_t bucket) {
    return __atomic_load_n(&c->h->seqs[stripe_of_bucket(bucket)].v, __ATOMIC_ACQUIRE);
}
static inline int seq_read_retry(const uwc_cache *c, uint64_t bucket, uint64_t s) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&c->h->seqs[stripe_of_bucket(bucket)].v, __ATOMIC_RELAXED) != s;
}

/* ---- test hook: a value copy that dies halfway ---- */

/* Copy a value into shared memory. The caller has flagged the record (UWC_REC_WRITING) or
 * named its slot in the stripe (uwc_seq_stripe.writing). */
static inline void copy_value(uint8_t *dst, const void *src, uint64_t n, uint32_t wflags) {
    if (__builtin_expect(wflags & UWC_F_DEBUG_CRASH_COPY, 0)) {
        memcpy(dst, src, n / 2);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        raise(SIGKILL);
    }
    memcpy(dst, src, n);
}

#define SHARED_SLOT_PID (-1)  /* the overflow slot every process past the first 159 shares */

static inline void bump_by(uwc_counter_slot *cs, uint64_t *p, uint64_t n) {
    /* only this process writes its own slot: a plain read-modify-write is enough there */
    if (__builtin_expect(cs->pid == SHARED_SLOT_PID, 0)) __atomic_fetch_add(p, n, __ATOMIC_RELAXED);
    else __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}
static inline void bump(uwc_counter_slot *cs, uint64_t *p) { bump_by(cs, p, 1); }

static inline void count(uwc_counter_slot *cs, int hit) {
    if (cs) bump(cs, hit ? &cs->hits : &cs->miss);
}
static inline void count_write(uwc_counter_slot *cs) {
    if (cs) bump(cs, &cs->writes);
}

#define OPTIMISTIC_TRIES 16

static inline void add_bytes(uwc_counter_slot *cs, uwc_header *h, int64_t d) {
    if (!d) return;
    if (cs && cs->pid != SHARED_SLOT_PID)
        __atomic_store_n(&cs->bytes_delta, __atomic_load_n(&cs->bytes_delta, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
    else  /* shared by several processes (or none given): atomically */
        __atomic_fetch_add(cs ? &cs->bytes_delta : &h->counters[UWC_COUNTER_SLOTS - 1].bytes_delta, d,
                           __ATOMIC_RELAXED);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ---- lock ---- */

static void rebuild(uwc_cache *c, uint64_t now, uint64_t *dropped, int cold);

static void rebuild_now(uwc_cache *c) {
    uint64_t dropped = 0;
    rebuild(c, (uint64_t)time(NULL), &dropped, 0);
    c->h->repairs++;
}

int uwc_lock(uwc_cache *c) {
    int r = mutex_take(&c->h->lock);
    if (__builtin_expect(r != 0, 0)) {
        if (r != EOWNERDEAD) return UWC_ELOCK;
        /* The previous holder died mid-change: make the structure whole again. */
        rebuild_now(c);
        pthread_mutex_consistent(&c->h->lock);
    } else if (__builtin_expect(c->h->rebuild_pending != 0, 0)) {
        rebuild_now(c);
    }
    return UWC_OK;
}

void uwc_unlock(uwc_cache *c) {
    /* a bounds check failed during this operation: repair before anyone else looks */
    if (__builtin_expect(c->h->rebuild_pending != 0, 0)) rebuild_now(c);
    release_stripes(c);
    mutex_unlock(&c->h->lock);
}

/* A bounds check on shared memory failed: the region is damaged (or foreign bytes were
 * written into it). The operation goes on without following the bad value and the
 * structure is rebuilt before the header mutex is released. */
static inline void corrupt(uwc_cache *c) { c->h->rebuild_pending = 1; }

/* ---- geometry ---- */

static inline uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

int uwc_params_check(const uwc_params *p, const char **why) {
    const char *w = NULL;
    if (p->max_items < UWC_MAX_ITEMS_MIN) w = "max_items must be at least 2";
    else if (p->max_items > UWC_MAX_ITEMS_MAX) w = "max_items must be at most 2**32";
    else if (p->key_size < 1 || p->key_size > UWC_KEY_SIZE_MAX) w = "key_size must be 1..65535";
    else if (p->block_size < 1 || p->block_size > UWC_BLOCK_SIZE_MAX) w = "block_size must be 1..2**40";
    else if (p->blocks < p->max_items) w = "blocks must be at least max_items";
    else if (p->blocks > UWC_BLOCKS_MAX) w = "blocks must be at most 2**40";
    else if (p->hash_size < 1 || p->hash_size > UWC_HASH_SIZE_MAX) w = "hash_size must be 1..2**32-1";
    else if (p->hash_algo > UWC_HASH_WYHASH) w = "unknown hash algorithm";
    else {
        uint64_t size;
        if (uwc_region_size(p, &size) != UWC_OK) w = "the cache would need more than 2**46 bytes";
    }
    if (why) *why = w;
    return w ? UWC_EPARAMS : UWC_OK;
}

typedef uwc_layout layout;

static int compute_layout(const uwc_params *p, layout *l) {
    uint64_t rs = UWC_ITEM_HEADER + p->key_size, items_size, data_size, t;
    if (__builtin_mul_overflow(rs, p->max_items, &items_size)) return UWC_EPARAMS;
    if (__builtin_mul_overflow(p->block_size, p->blocks, &data_size)) return UWC_EPARAMS;
    l->items_off = UWC_HEADER_SIZE;
    l->data_off = align_up(l->items_off + items_size, 64);
    if (__builtin_add_overflow(l->data_off, data_size, &t)) return UWC_EPARAMS;
    l->table_off = align_up(t, 64);
    l->stack_off = align_up(l->table_off + UWC_BUCKET_BYTES * p->hash_size, 64);
    l->bitmap_off = align_up(l->stack_off + sizeof(uint32_t) * p->max_items, 64);
    uint64_t bm = (p->options & UWC_OPT_BITMAP) ? (p->blocks + 7) / 8 : 0;
    l->total = align_up(l->bitmap_off + bm, 4096);
    if (l->total > UWC_REGION_SIZE_MAX) return UWC_EPARAMS;
    return UWC_OK;
}

int uwc_region_layout(const uwc_params *p, uwc_layout *l) {
    if (p->max_items < 1 || p->block_size < 1 || p->blocks < 1) return UWC_EPARAMS;
    return compute_layout(p, l);
}

int uwc_region_size(const uwc_params *p, uint64_t *size) {
    layout l;
    if (p->max_items < 1 || p->block_size < 1 || p->blocks < 1) return UWC_EPARAMS;
    if (compute_layout(p, &l) != UWC_OK) return UWC_EPARAMS;
    *size = l.total;
    return UWC_OK;
}

static void bind_handle(uwc_cache *c, void *mem, uint64_t size, const uwc_params *p) {
    layout l;
    compute_layout(p, &l);
    c->base = mem;
    c->size = size;
    c->h = mem;
    c->p = *p;
    c->items = c->base + l.items_off;
    c->data = c->base + l.data_off;
    c->buckets = (uint32_t *)(c->base + l.table_off);
    c->stack = (uint32_t *)(c->base + l.stack_off);
    c->bitmap = (p->options & UWC_OPT_BITMAP) ? c->base + l.bitmap_off : NULL;
    c->rec_size = UWC_ITEM_HEADER + p->key_size;
    c->max_item_size = (p->options & UWC_OPT_BITMAP) ? p->block_size * p->blocks : p->block_size;
    c->bitmap_bytes = (p->options & UWC_OPT_BITMAP) ? (p->blocks + 7) / 8 : 0;
    c->hash_mask = (p->hash_size & (p->hash_size - 1)) == 0 ? p->hash_size - 1 : 0;
    c->home_slots = p->max_items - 1 >= UWC_HOME_MIN_SLOTS;
    memset(c->odd_mask, 0, sizeof c->odd_mask);
}

/* inlined into the operations (an exported function would not be, under -fPIC) */
static inline uint32_t key_hash(const uwc_cache *c, const uint8_t *key, uint64_t len) {
    switch (c->p.hash_algo) {
    case UWC_HASH_MURMUR2: return uwc_murmur2_i(key, len);
    case UWC_HASH_WYHASH: return uwc_wyhash_i(key, len);
    default: return uwc_djb33x_i(key, len);
    }
}

/* The single-key get and set: the default hash (djb33x, uWSGI's) inlined into them, the
 * others through key_hash's out-of-line copy (issue 16: saves the call and the switch). */
static inline __attribute__((always_inline)) uint32_t key_hash_hot(const uwc_cache *c, const uint8_t *key,
                                                                   uint64_t len) {
    if (__builtin_expect(c->p.hash_algo == UWC_HASH_DJB33X, 1)) return uwc_djb33x_i(key, len);
    return key_hash(c, key, len);
}

uint32_t uwc_hash(const uwc_cache *c, const uint8_t *key, uint64_t len) { return key_hash(c, key, len); }

uint64_t uwc_full_events(const uwc_cache *c) { return __atomic_load_n(&c->h->full, __ATOMIC_RELAXED); }

uint64_t uwc_n_items(const uwc_cache *c) {
    uint64_t n = __atomic_load_n(&c->h->n_items, __ATOMIC_RELAXED);
    if (__builtin_expect(n >= c->p.max_items, 0)) {  /* damaged: the next locker rebuilds */
        __atomic_store_n(&c->h->rebuild_pending, 1, __ATOMIC_RELAXED);
        n = c->p.max_items - 1;
    }
    return n;
}

/* ---- bitmap ---- */

static inline int bm_used(const uwc_cache *c, uint64_t k) { return (c->bitmap[k >> 3] & (0x80u >> (k & 7))) != 0; }
static inline void bm_set(uwc_cache *c, uint64_t k) { c->bitmap[k >> 3] |= (uint8_t)(0x80u >> (k & 7)); }
static inline void bm_clr(uwc_cache *c, uint64_t k) { c->bitmap[k >> 3] &= (uint8_t)~(0x80u >> (k & 7)); }

static void bm_mark(uwc_cache *c, uint64_t first, uint64_t n, int used) {
    for (uint64_t k = first; k < first + n; k++) {
        if (used) bm_set(c, k); else bm_clr(c, k);
    }
}

static void bm_reset(uwc_cache *c) {
    memset(c->bitmap, 0, c->bitmap_bytes);
    /* the unused low bits of the last byte are never allocatable */
    if (c->p.blocks % 8) c->bitmap[c->bitmap_bytes - 1] = (uint8_t)(0xFFu >> (c->p.blocks % 8));
}

/* uWSGI's first-fit from the hint, including its blind spot: a run never spans the end
 * of the bitmap, and after wrapping the scan stops at the end of the starting byte. */
static int64_t bm_find(uwc_cache *c, uint64_t needed) {
    uint64_t nbytes = c->bitmap_bytes;
    uint64_t pos = c->h->bitmap_pos;
    if (pos >= c->p.blocks) pos = 0;
    uint64_t start_byte = pos / 8, start_bit = pos % 8;
    uint64_t budget = nbytes + (start_bit ? 1 : 0);
    uint64_t j = start_byte, bit0 = start_bit, run = 0;
    int64_t base = -1;
    while (budget) {
        for (uint64_t bit = (j == start_byte ? bit0 : 0); bit < 8; bit++) {
            uint64_t k = j * 8 + bit;
            if (c->bitmap[j] & (0x80u >> bit)) {
                run = 0;
                base = -1;
            } else {
                if (base < 0) base = (int64_t)k;
                if (++run == needed) return base;
            }
        }
        j++;
        budget--;
        if (j >= nbytes) { j = 0; run = 0; base = -1; bit0 = 0; }
    }
    return -1;
}

static int64_t bm_alloc(uwc_cache *c, uint64_t needed) {
    int64_t f = bm_find(c, needed);
    if (f < 0) return -1;
    bm_mark(c, (uint64_t)f, needed, 1);
    uint64_t pos = (uint64_t)f + needed;
    c->h->bitmap_pos = pos >= c->p.blocks ? 0 : pos;
    return f;
}

/* ---- free-slot stack ----
 *
 * uWSGI pushes every slot 1..max_items-1 on the stack at creation, so the first insert
 * takes the highest slot. Ours is the same stack built lazily: slots 1..stack_fresh are
 * the bottom of it (never written), the explicit entries stack[0..stack_top) sit on top.
 * Every value read back from shared memory is checked: a bad one marks the region for a
 * rebuild instead of being followed.
 *
 * Home slots (large caches, format 8): a new item takes a slot its hash picks when that slot
 * is free, wherever it is in the stack. From the explicit entries it is swapped out (each
 * entry's free record keeps its position + 1 in F_PREV, a field no reader of a free record
 * uses; raw images show it as 0, as uWSGI's free records have it); from the fresh range it
 * is simply taken and counted in fresh_live, and the range's pops step over such live slots. A live slot at or below stack_fresh that is freed
 * goes back to the range (fresh_live - 1), never onto the explicit stack. */

static inline uint64_t free_slots(const uwc_cache *c) {
    uint64_t n = c->p.max_items, top = c->h->stack_top, fresh = c->h->stack_fresh, live = c->h->fresh_live;
    return (top < n && fresh < n && live <= fresh) ? top + fresh - live : 0;
}

static void stack_push(uwc_cache *c, uint64_t slot) {
    uint64_t n = c->p.max_items, top = c->h->stack_top, fresh = c->h->stack_fresh, live = c->h->fresh_live;
    if (top >= n - 1 || fresh >= n - 1 || live > fresh || top + fresh - live >= n - 1) { corrupt(c); return; }
    c->stack[top] = (uint32_t)slot;
    if (c->home_slots) wr(SLOT(c, slot), F_PREV, top + 1);
    c->h->stack_top = top + 1;
}

/* A slot that was live becomes free again. */
static void free_slot(uwc_cache *c, uint64_t slot) {
    if (slot <= c->h->stack_fresh) {  /* a home slot taken from the fresh range */
        if (c->h->fresh_live) c->h->fresh_live--;
        else corrupt(c);
        return;
    }
    stack_push(c, slot);
}

static uint64_t stack_pop(uwc_cache *c) {
    uint64_t n = c->p.max_items, top = c->h->stack_top, s;
    if (top) {
        if (top > n - 1) { corrupt(c); return 0; }
        s = c->stack[top - 1];
        if (s == 0 || s >= n || rd(SLOT(c, s), F_KEYSIZE)) { corrupt(c); return 0; }
        c->h->stack_top = top - 1;
        return s;
    }
    s = c->h->stack_fresh;
    if (s >= n) { corrupt(c); return 0; }
    /* step over the home slots taken from the range: each is then above it */
    while (s && rd(SLOT(c, s), F_KEYSIZE)) {
        if (!c->h->fresh_live) { corrupt(c); return 0; }
        c->h->fresh_live--;
        s--;
    }
    if (!s) {  /* every slot of the range was live: all stepped over */
        c->h->stack_fresh = 0;
        return 0;
    }
    c->h->stack_fresh = s - 1;
    return s;
}

/* The two slots a new item with hash h prefers (large caches), spread over 1..max_items-1
 * by the high bits of two multiplies that mix the low ones in (the bucket is the low bits,
 * so the slots do not follow the chain). Two homes, not one: filling a cache to the brim,
 * a new item finds one of them free 2/3 of the time rather than 1/2 (the fallback pops
 * take other items' homes). */
#define UWC_HOMES 2
static inline uint64_t home_of(const uwc_cache *c, uint32_t h, int i) {
    uint32_t m = h * (i ? 0x85EBCA77u : 0x9E3779B1u);
    return 1 + (((uint64_t)m * (c->p.max_items - 1)) >> 32);
}

/* A large cache's item usually sits in one of its homes: start fetching those records (and,
 * in single-block mode, their values) before the table entry is read, instead of after
 * (issue 16: one dependent memory read fewer at 1M items). Hints only: nothing is read. */
static inline __attribute__((always_inline)) void prefetch_home(const uwc_cache *c, uint32_t h, int value) {
    for (int i = 0; i < UWC_HOMES; i++) {
        uint64_t s = home_of(c, h, i);
        const uint8_t *r = SLOT(c, s);
        __builtin_prefetch(r + F_HASH);
        __builtin_prefetch(r + F_EXPIRES);
        __builtin_prefetch(r + F_KEY);
        if (value && !is_bitmap(c)) {
            const uint8_t *blk = c->data + s * c->p.block_size;
            __builtin_prefetch(blk);
            if (c->p.block_size > 64) __builtin_prefetch(blk + 64);
        }
    }
}

/* Take free slot s out of the free lists; 0 if it is not free. */
static int take_free(uwc_cache *c, uint64_t s) {
    uint8_t *r = SLOT(c, s);
    if (rd(r, F_KEYSIZE)) return 0;
    uint64_t top = c->h->stack_top, pos = rd(r, F_PREV), fresh = c->h->stack_fresh;
    if (s <= fresh) {
        if (c->h->fresh_live < fresh) {
            c->h->fresh_live++;
            return 1;
        }
    } else if (pos >= 1 && pos <= top && top <= c->p.max_items - 1 && c->stack[pos - 1] == s) {
        uint64_t last = c->stack[top - 1];
        c->stack[pos - 1] = (uint32_t)last;
        if (last && last < c->p.max_items && !rd(SLOT(c, last), F_KEYSIZE)) wr(SLOT(c, last), F_PREV, pos);
        else corrupt(c);
        c->h->stack_top = top - 1;
        wr(r, F_PREV, 0);
        return 1;
    }
    corrupt(c);  /* a free slot in no free list: rebuilt when the lock is let go */
    return 0;
}

/* The slot for a new item: a home when one is free (large caches), else the stack's top. */
static uint64_t take_slot(uwc_cache *c, uint32_t h) {
    if (c->home_slots) {
        for (int i = 0; i < UWC_HOMES; i++) {
            uint64_t s = home_of(c, h, i);
            if (take_free(c, s)) return s;
        }
    }
    return stack_pop(c);
}

/* Every slot free, in uWSGI's order (the first pop takes the highest slot). */
static void stack_reset(uwc_cache *c) {
    c->h->stack_top = 0;
    c->h->stack_fresh = c->p.max_items - 1;
    c->h->fresh_live = 0;
}

/* ---- LRU ---- */

static inline int slot_ok(const uwc_cache *c, uint64_t s) { return s < c->p.max_items; }

static void lru_append(uwc_cache *c, uint64_t s) {
    uint8_t *r = SLOT(c, s);
    uint64_t tail = c->h->lru_tail;
    if (!slot_ok(c, tail) || tail == s) { corrupt(c); tail = 0; }
    wr(r, F_LRU_NEXT, 0);
    wr(r, F_LRU_PREV, tail);
    if (tail) wr(SLOT(c, tail), F_LRU_NEXT, s);
    else c->h->lru_head = s;
    c->h->lru_tail = s;
}

static void lru_remove(uwc_cache *c, uint64_t s) {
    uint8_t *r = SLOT(c, s);
    uint64_t prev = rd(r, F_LRU_PREV), next = rd(r, F_LRU_NEXT);
    if (!slot_ok(c, prev) || !slot_ok(c, next)) { corrupt(c); prev = next = 0; }
    if (prev) wr(SLOT(c, prev), F_LRU_NEXT, next); else c->h->lru_head = next;
    if (next) wr(SLOT(c, next), F_LRU_PREV, prev); else c->h->lru_tail = prev;
    wr(r, F_LRU_PREV, 0);
    wr(r, F_LRU_NEXT, 0);
}

static void lru_touch(uwc_cache *c, uint64_t s) {
    if (c->h->lru_tail == s) return;
    lru_remove(c, s);
    lru_append(c, s);
}

/* A live record's value lies inside the data area (single-block: its own block). */
static inline int rec_value_ok(const uwc_cache *c, uint64_t s, const uint8_t *r) {
    uint64_t vs = rd(r, F_VALSIZE), first = rd(r, F_FIRST);
    if (vs == 0 || vs > c->max_item_size) return 0;
    if (is_bitmap(c)) return first < c->p.blocks && blocks_for(c, vs) <= c->p.blocks - first;
    return first == s;
}

/* ---- lookup under the lock ---- */

/* Key equality for the lookups, inlined for keys of up to 64 bytes (the usual ones), where a
 * libc memcmp call costs about 20 instructions plus the call (issue 16). Overlapping 8-byte
 * (or 4-byte) loads cover every length without a byte loop. Only equality is needed, not
 * memcmp's order. */
static inline __attribute__((always_inline)) int key_eq(const uint8_t *a, const uint8_t *b, uint64_t n) {
    if (n > 64) return memcmp(a, b, n) == 0;  /* long keys: libc's vector compare */
    if (n >= 8 && n <= 16) {  /* the usual keys: two overlapping loads, no branch between them */
        uint64_t x0, y0, x1, y1;
        memcpy(&x0, a, 8);
        memcpy(&y0, b, 8);
        memcpy(&x1, a + n - 8, 8);
        memcpy(&y1, b + n - 8, 8);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    if (n >= 8) {
        uint64_t x, y, i = 0;
        for (; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y) return 0;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        uint32_t x0, y0, x1, y1;
        memcpy(&x0, a, 4);
        memcpy(&y0, b, 4);
        memcpy(&x1, a + n - 4, 4);
        memcpy(&y1, b + n - 4, 4);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    uint32_t d = 0;
    for (uint64_t i = 0; i < n; i++) d |= (uint32_t)(a[i] ^ b[i]);
    return d == 0;
}

static inline int expired(uint64_t expires, uint64_t now) { return expires && expires <= now; }

/* `now` 0 means "read the clock only if an expiry needs it" (UWC_NOW_LATER): most items have
 * none, and time() costs some 4 ns, 5-8% of a whole get or set. */
static inline uint64_t clock_now(uint64_t *now) {
    if (__builtin_expect(!*now, 0)) *now = (uint64_t)time(NULL);
    return *now;
}
static inline int expired_lazy(uint64_t expires, uint64_t *now) { return expires && expires <= clock_now(now); }

static inline __attribute__((always_inline)) uint64_t lookup_locked(const uwc_cache *c, const uint8_t *key,
                                                                     uint64_t klen, uint32_t h) {
    uint64_t b = bucket_of(c, h), n = c->p.max_items;
    uint64_t s = c->buckets[2 * b], left = n;
    while (s) {
        if (s >= n || !left--) return 0;
        const uint8_t *r = SLOT(c, s);
        if (rd(r, F_HASH) == h && rd(r, F_KEYSIZE) == klen && key_eq(r + F_KEY, key, klen)) return s;
        s = rd(r, F_NEXT);
    }
    return 0;
}

/* The tag beside a chain head lets a lookup skip a head that cannot match without touching
 * its record, and answer a miss on a one-item chain from the table alone. Recomputed after
 * every change to a chain (under the mutex and the bucket's stripe). */
static void retag(uwc_cache *c, uint64_t b) {
    uint64_t head = c->buckets[2 * b];
    uint32_t t = 0;
    if (head && head < c->p.max_items) {
        const uint8_t *r = SLOT(c, head);
        t = ((uint32_t)rd(r, F_HASH) & UWC_TAG_HASH) | (rd(r, F_NEXT) ? UWC_TAG_MORE : 0);
    }
    c->buckets[2 * b + 1] = t;
}

static void chain_append(uwc_cache *c, uint64_t s, uint32_t h) {
    uint64_t b = bucket_of(c, h), cur = c->buckets[2 * (b)];
    uint8_t *r = SLOT(c, s);
    wr(r, F_NEXT, 0);
    if (!cur) {
        wr(r, F_PREV, 0);
        c->buckets[2 * (b)] = s;
        retag(c, b);
        return;
    }
    uint64_t steps = 0;
    if (!slot_ok(c, cur)) { corrupt(c); c->buckets[2 * b] = (uint32_t)s; wr(r, F_PREV, 0); retag(c, b); return; }
    for (;;) {
        uint64_t n = rd(SLOT(c, cur), F_NEXT);
        if (!n) break;
        if (!slot_ok(c, n) || ++steps > c->p.max_items) { corrupt(c); break; }
        cur = n;
    }
    wr(SLOT(c, cur), F_NEXT, s);
    wr(r, F_PREV, cur);
    retag(c, b);
}

static void chain_unlink(uwc_cache *c, uint64_t s) {
    uint8_t *r = SLOT(c, s);
    uint64_t prev = rd(r, F_PREV), next = rd(r, F_NEXT), b = bucket_of(c, rd(r, F_HASH));
    if (!slot_ok(c, prev) || !slot_ok(c, next)) { corrupt(c); return; }
    if (prev) wr(SLOT(c, prev), F_NEXT, next);
    else c->buckets[2 * b] = (uint32_t)next;
    if (next) wr(SLOT(c, next), F_PREV, prev);
    retag(c, b);
}

/* Lower the earliest known expiry to `expires` (0: nothing). Atomic, because a stripe-only
 * overwrite (set_fast) lowers it without the mutex while a mutex holder may be lowering it. */
static inline void lower_next_scan(uwc_cache *c, uint64_t expires) {
    if (!expires) return;
    uint64_t cur = __atomic_load_n(&c->h->next_scan, __ATOMIC_RELAXED);
    while ((cur == 0 || cur > expires) &&
           !__atomic_compare_exchange_n(&c->h->next_scan, &cur, expires, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

/* Free a live slot. Caller holds the lock. */
static void delete_slot(uwc_cache *c, uint64_t s) {
    uint8_t *r = SLOT(c, s);
    if (!rd(r, F_KEYSIZE)) return;
    touch_hash(c, rd(r, F_HASH));
    if (!rd(r, F_KEYSIZE)) return;  /* the stripe's repair dropped it */
    chain_unlink(c, s);
    uint64_t vs = rd(r, F_VALSIZE);
    if (rec_value_ok(c, s, r)) {
        if (is_bitmap(c)) {
            uint64_t nb = blocks_for(c, vs);
            bm_mark(c, rd(r, F_FIRST), nb, 0);
            c->h->blocks_used -= nb;
        }
        c->h->bytes_used -= vs;
    } else {
        corrupt(c);
    }
    if (is_lru(c)) lru_remove(c, s);
    wr(r, F_KEYSIZE, 0);
    wr(r, F_VALSIZE, 0);
    wr(r, F_HASH, 0);
    wr(r, F_PREV, 0);
    wr(r, F_NEXT, 0);
    wr(r, F_EXPIRES, 0);
    wr(r, F_FLAGS, 0);
    free_slot(c, s);
    if (c->h->n_items) c->h->n_items--; else corrupt(c);
}

/* Free the expired items of slots [from, to); returns how many. Optionally records their
 * keys. The earliest expiry left is lowered into *min_left (0 = none). */
static uint64_t sweep_range(uwc_cache *c, uint64_t from, uint64_t to, uint64_t now, uwc_keybuf *kb,
                            uint64_t *min_left, int release_each) {
    uint64_t freed = 0;
    for (uint64_t s = from; s < to; s++) {
        uint8_t *r = SLOT(c, s);
        uint64_t ks = rd(r, F_KEYSIZE), ex = rd(r, F_EXPIRES);
        if (!ks || !ex) continue;
        if (ex <= now) {
            /* an overwrite may have just given it a new TTL: look again under its stripe */
            touch_hash(c, rd(r, F_HASH));
            ex = rd(r, F_EXPIRES);
            ks = rd(r, F_KEYSIZE);
            if (!ks || !ex || ex > now) {
                if (ks && ex && (*min_left == 0 || ex < *min_left)) *min_left = ex;
                if (release_each) release_stripes(c);
                continue;
            }
            if (kb && ks <= c->p.key_size) {
                if (kb->len + 8 + ks > kb->cap) {
                    uint64_t ncap = (kb->cap ? kb->cap * 2 : 4096) + 8 + ks;
                    uint8_t *nb = realloc(kb->buf, ncap);
                    if (nb) { kb->buf = nb; kb->cap = ncap; }
                }
                if (kb->len + 8 + ks <= kb->cap) {
                    memcpy(kb->buf + kb->len, &ks, 8);
                    memcpy(kb->buf + kb->len + 8, r + F_KEY, ks);
                    kb->len += 8 + ks;
                    kb->count++;
                }
            }
            delete_slot(c, s);
            freed++;
            /* the sweeper (nothing else in progress) lets each stripe go at once: a reader
             * of that stripe waits for one delete, not for the chunk */
            if (release_each) release_stripes(c);
        } else if (*min_left == 0 || ex < *min_left) {
            *min_left = ex;
        }
    }
    c->h->expired_freed += freed;
    return freed;
}

/* Free every expired item in one go (inside a write that needs room). */
static uint64_t sweep_locked(uwc_cache *c, uint64_t now, uwc_keybuf *kb) {
    uint64_t min_left = 0;
    c->h->next_scan = 0;
    uint64_t freed = sweep_range(c, 1, c->p.max_items, now, kb, &min_left, 0);
    lower_next_scan(c, min_left);
    return freed;
}

/* bytes_used in the header plus every process's delta is the total; set the total. */
static void set_bytes_total(uwc_cache *c, uint64_t total) {
    uint64_t deltas = 0;
    for (int i = 0; i < UWC_COUNTER_SLOTS; i++)
        deltas += (uint64_t)__atomic_load_n(&c->h->counters[i].bytes_delta, __ATOMIC_RELAXED);
    c->h->bytes_used = total - deltas;
}

/* The shared structure of an empty cache, once every record is cleared and every slot is
 * free: no chains, no LRU list, no blocks held, nothing to sweep, no bytes stored. */
static void empty_structure(uwc_cache *c) {
    memset(c->buckets, 0, UWC_BUCKET_BYTES * c->p.hash_size);
    if (is_bitmap(c)) bm_reset(c);
    c->h->lru_head = c->h->lru_tail = 0;
    c->h->n_items = 0;
    c->h->next_scan = 0;
    c->h->blocks_used = 0;
    set_bytes_total(c, 0);
}

/* Delete every item. Like uWSGI, each freed slot is pushed in ascending order on top of
 * the slots that were already free, so later inserts land where uWSGI's would. */
static void clear_locked(uwc_cache *c) {
    touch_all(c);
    for (uint64_t s = 1; s < c->p.max_items; s++) {
        uint8_t *r = SLOT(c, s);
        if (!rd(r, F_KEYSIZE)) continue;
        wr(r, F_KEYSIZE, 0); wr(r, F_VALSIZE, 0); wr(r, F_HASH, 0);
        wr(r, F_PREV, 0); wr(r, F_NEXT, 0); wr(r, F_EXPIRES, 0);
        wr(r, F_LRU_PREV, 0); wr(r, F_LRU_NEXT, 0); wr(r, F_FLAGS, 0);
        free_slot(c, s);
    }
    empty_structure(c);
}

/* The "cache full" handler (uwsgi-behaviour.md §2.15). `protect` is a slot that must not be evicted
 * (the item being updated). Returns nonzero if it freed anything. */
static int full_handler(uwc_cache *c, uint64_t now, uint64_t protect, uwc_write *w) {
    w->events |= UWC_EV_FULL;
    c->h->full++;
    c->h->last_full_at = now;
    if (is_lru(c)) {
        uint64_t victim = c->h->lru_head;
        if (victim == protect && victim && slot_ok(c, victim)) victim = rd(SLOT(c, victim), F_LRU_NEXT);
        if (victim && (!slot_ok(c, victim) || !rd(SLOT(c, victim), F_KEYSIZE))) {
            corrupt(c);  /* never loop on a broken list: the rebuild fixes it */
            victim = 0;
        }
        if (victim) {
            delete_slot(c, victim);
            c->h->evictions++;
            w->events |= UWC_EV_EVICTED;
            return 1;
        }
    }
    if (c->p.sweep_on_full) {
        if (c->h->sweep_on_full_next <= now) {
            c->h->sweep_on_full_next = now + c->p.sweep_on_full;
            if (sweep_locked(c, now, NULL)) return 1;
        }
    }
    if (c->p.options & UWC_OPT_CLEAR_ON_FULL) {
        if (c->h->n_items) {
            clear_locked(c);
            return 1;
        }
    }
    return 0;
}

/* Before declaring the cache full, reclaim items that have already expired: they are
 * invisible to every reader anyway (uWSGI would fail the write until its sweeper ran).
 * The scan goes window by window from where this process's last one stopped and ends at
 * the first window that frees something, so a write into a large cache with many expired
 * items pays for a few thousand records, not for all of them (stripes touched stay held
 * until the write ends). Only a scan that went all the way round knows the earliest expiry
 * left; a shorter one leaves next_scan due, and the next full write goes on from there. */
#define RECLAIM_WINDOW 4096
static int reclaim_expired(uwc_cache *c, uint64_t now) {
    if (!c->h->next_scan || c->h->next_scan > now) return 0;
    uint64_t slots = c->p.max_items - 1, scanned = 0, freed = 0, min_left = 0;
    uint64_t due = c->h->next_scan;
    /* cleared first, so that an overwrite lowering it during the scan (set_fast, without the
     * mutex) is kept: the end only ever lowers it again */
    __atomic_store_n(&c->h->next_scan, 0, __ATOMIC_RELAXED);
    uint64_t from = c->reclaim_cursor;
    if (from < 1 || from >= c->p.max_items) from = 1;
    while (scanned < slots && !freed) {
        uint64_t to = from + RECLAIM_WINDOW;
        if (to > c->p.max_items) to = c->p.max_items;
        if (to - from > slots - scanned) to = from + (slots - scanned);
        freed += sweep_range(c, from, to, now, NULL, &min_left, 0);
        scanned += to - from;
        from = to >= c->p.max_items ? 1 : to;
    }
    c->reclaim_cursor = from;
    /* all the way round, min_left is the earliest expiry left; otherwise more may be due */
    lower_next_scan(c, scanned >= slots ? min_left : due);
    return freed > 0;
}

/* ---- math ---- */

static int64_t math_apply(uint32_t flags, int64_t a, int64_t b) {
    /* C int64 semantics without undefined behaviour: wrap, truncate toward zero,
     * x/0 = 0, INT64_MIN/-1 = INT64_MIN (uWSGI traps there and hangs its cache). */
    if (flags & UWC_F_INC) return (int64_t)((uint64_t)a + (uint64_t)b);
    if (flags & UWC_F_DEC) return (int64_t)((uint64_t)a - (uint64_t)b);
    if (flags & UWC_F_MUL) return (int64_t)((uint64_t)a * (uint64_t)b);
    if (flags & UWC_F_DIV) {
        if (b == 0) return 0;
        if (a == INT64_MIN && b == -1) return INT64_MIN;
        return a / b;
    }
    return a;
}

/* ---- set / update / math ---- */

static int set_locked(uwc_cache *c, uwc_write *w, uint32_t h) {
    uint64_t now = w->now;
    touch_hash(c, h);  /* before the lookup: overwrites change records without the mutex */
    uint64_t s = lookup_locked(c, w->key, w->key_len, h);
    int is_math = (w->flags & UWC_F_MATH) != 0;
    int64_t operand = 0;
    if (is_math) memcpy(&operand, w->value, 8);

    if (s && expired(rd(SLOT(c, s), F_EXPIRES), now)) {
        /* an expired item is gone for every purpose, including set/add/math */
        delete_slot(c, s);
        c->h->expired_freed++;
        s = 0;
    }

    uint64_t exp = w->expires;
    if (exp && !(w->flags & UWC_F_ABSEXPIRE)) exp += now;

    if (!s) {
        /* create */
        uint8_t vbuf[8];
        const uint8_t *val = w->value;
        uint64_t vlen = w->value_len;
        if (is_math) {
            int64_t r = math_apply(w->flags, c->p.math_initial, operand);
            memcpy(vbuf, &r, 8);
            val = vbuf;
            vlen = 8;
            w->math_result = r;
        }
        if (free_slots(c) == 0) {
            if (!reclaim_expired(c, now)) full_handler(c, now, 0, w);
            if (free_slots(c) == 0) return UWC_FULL;
        }
        /* Bitmap mode: find the blocks before taking the slot, so a failure leaves the
         * free stack untouched (eviction or clear_on_full may have changed it). */
        int64_t first = -1;
        uint64_t need = 1;
        if (is_bitmap(c)) {
            need = blocks_for(c, vlen);
            first = bm_alloc(c, need);
            /* a window's worth of freed items may not hold a long enough run: go on (a
             * round that frees nothing returns 0) before anything live is evicted */
            while (first < 0 && reclaim_expired(c, now)) first = bm_alloc(c, need);
            /* LRU caches evict until the run fits (uWSGI gives up after one eviction) */
            while (first < 0 && full_handler(c, now, 0, w) && is_lru(c)) first = bm_alloc(c, need);
            if (first < 0) return UWC_FULL;
        }
        s = take_slot(c, h);
        if (!s) {  /* a damaged free stack: rebuilt when the lock is let go */
            if (first >= 0) bm_mark(c, (uint64_t)first, need, 0);
            return UWC_ECORRUPT;
        }
        uint8_t *r = SLOT(c, s);
        if (first < 0) first = (int64_t)s;
        touch_hash(c, h);
        if (is_lru(c)) lru_append(c, s);
        lower_next_scan(c, exp);
        wr(r, F_EXPIRES, exp);
        wr(r, F_HASH, h);
        wr(r, F_HITS, 0);
        wr(r, F_FLAGS, w->flags & UWC_F_STORED_MASK);
        wr(r, F_FIRST, (uint64_t)first);
        memcpy(r + F_KEY, w->key, w->key_len);
        copy_value(c->data + (uint64_t)first * c->p.block_size, val, vlen, w->flags);
        wr(r, F_VALSIZE, vlen);
        /* the record becomes live only once key and value are whole */
        __atomic_thread_fence(__ATOMIC_RELEASE);
        wr(r, F_KEYSIZE, w->key_len);
        chain_append(c, s, h);
        c->h->n_items++;
        c->h->bytes_used += vlen;
        if (is_bitmap(c)) c->h->blocks_used += need;
        w->expires_abs = exp;
        return UWC_OK;
    }

    /* the key exists */
    uint8_t *r = SLOT(c, s);
    if (!(w->flags & UWC_F_UPDATE)) return UWC_EXISTS;

    uint8_t vbuf[8];
    const uint8_t *val = w->value;
    uint64_t vlen = w->value_len;
    uint64_t old_first = rd(r, F_FIRST), old_len = rd(r, F_VALSIZE);
    if (!rec_value_ok(c, s, r)) {
        corrupt(c);
        return UWC_ECORRUPT;
    }
    if (is_math) {
        int64_t cur = 0;
        if ((w->flags & UWC_F_STRICT_MATH) && old_len != 8) return UWC_ENOTINT;
        if (is_bitmap(c)) {
            /* the old value's bytes, zero-extended (uWSGI reads a fresh run: a bug) */
            memcpy(&cur, c->data + old_first * c->p.block_size, old_len < 8 ? old_len : 8);
        } else {
            /* uWSGI reads the first 8 bytes of the block whatever the value's length */
            memcpy(&cur, c->data + old_first * c->p.block_size, 8);
        }
        int64_t res = math_apply(w->flags, cur, operand);
        memcpy(vbuf, &res, 8);
        val = vbuf;
        vlen = 8;
        w->math_result = res;
    }
    uint64_t first = old_first;
    if (is_bitmap(c)) {
        uint64_t need = blocks_for(c, vlen);
        if (is_math && need == blocks_for(c, old_len)) {
            first = old_first;  /* same footprint: rewrite in place */
        } else {
            /* uWSGI allocates the new run while the old one is still held */
            int64_t f = bm_alloc(c, need);
            while (f < 0 && reclaim_expired(c, now)) f = bm_alloc(c, need);
            while (f < 0 && full_handler(c, now, s, w) && is_lru(c)) f = bm_alloc(c, need);
            if (f < 0 || !rd(r, F_KEYSIZE)) {
                if (f >= 0) bm_mark(c, (uint64_t)f, need, 0);
                return UWC_FULL;
            }
            bm_mark(c, old_first, blocks_for(c, old_len), 0);
            c->h->blocks_used += need - blocks_for(c, old_len);
            first = (uint64_t)f;
        }
    }
    /* flagged while its value is being written: a record a dead writer left flagged may
     * hold a torn value, and repair drops it */
    uint64_t fl = rd(r, F_FLAGS);
    wr(r, F_FLAGS, fl | UWC_REC_WRITING);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    if (!(w->flags & UWC_F_FIXEXPIRE)) {
        if (is_lru(c)) lru_touch(c, s);
        lower_next_scan(c, exp);
        /* an update without expires removes the TTL (as uWSGI). Fields that do not change
         * are not rewritten: every reader of this chain reads the record's line. */
        if (rd(r, F_EXPIRES) != exp) wr(r, F_EXPIRES, exp);
    }
    copy_value(c->data + first * c->p.block_size, val, vlen, w->flags);
    if (rd(r, F_FIRST) != first) wr(r, F_FIRST, first);
    if (rd(r, F_VALSIZE) != vlen) wr(r, F_VALSIZE, vlen);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    wr(r, F_FLAGS, fl & ~UWC_REC_WRITING);
    c->h->bytes_used += vlen - old_len;
    w->expires_abs = rd(r, F_EXPIRES);
    return UWC_OK;
}

/* Overwrite of an existing, live key in a single-block cache without LRU: nothing but the
 * item's record and block change, so the key's stripe is the only lock needed. Returns -1
 * when the write needs the mutex (absent or expired key).
 *
 * Shared cache lines: the stripe's (lock word, counter and `writing`, all on one line), the
 * value's block, and the record's only when its size or expiry changes. While the value is
 * copied the stripe names the slot (stripe->writing) instead of the record carrying a flag,
 * so an overwrite of the same size and expiry leaves the record's lines clean in the other
 * cores' caches: with several processes writing, each write moves one line fewer between
 * cores, and two of the neighbouring records' (records are 88 + key_size bytes and share
 * lines). */
static int set_fast(uwc_cache *c, uwc_write *w, uint32_t h) {
    uint64_t b = bucket_of(c, h);
    unsigned stripe = stripe_of_bucket(b);
    if (c->home_slots) prefetch_home(c, h, 0);  /* the record, while the stripe is taken */
    int lr = stripe_alone_take(c, stripe);
    if (__builtin_expect(lr != 0, 0)) {
        /* a holder died in this stripe: leave it (odd, dirty) to the header mutex path,
         * which repairs it first */
        if (lr > 0) stripe_alone_unlock(c, stripe);
        return -1;
    }
    /* clean and unheld means even: make it odd */
    uint64_t *seqp = &c->h->seqs[stripe].v;
    __atomic_store_n(seqp, __atomic_load_n(seqp, __ATOMIC_RELAXED) | 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    uint64_t s = lookup_locked(c, w->key, w->key_len, h);  /* the chain is stable under the stripe */
    uint8_t *r = s ? SLOT(c, s) : NULL;
    uint64_t old_exp = r ? rd(r, F_EXPIRES) : 0;
    if (!r || expired_lazy(old_exp, &w->now)) {
        __atomic_store_n(seqp, __atomic_load_n(seqp, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
        stripe_alone_unlock(c, stripe);
        return -1;
    }
    /* (a damaged F_FIRST does not matter here: we write the slot's own block) */
    int rc = UWC_OK;
    uint8_t *block = c->data + s * c->p.block_size;
    uint64_t old_len = rd(r, F_VALSIZE);
    if (!(w->flags & UWC_F_UPDATE)) {
        rc = UWC_EXISTS;
    } else if (w->flags & UWC_F_MATH) {
        if ((w->flags & UWC_F_STRICT_MATH) && old_len != 8) {
            rc = UWC_ENOTINT;
        } else {
            int64_t cur, operand, res;
            memcpy(&cur, block, 8);  /* the first 8 bytes of the block, as uWSGI */
            memcpy(&operand, w->value, 8);
            res = math_apply(w->flags, cur, operand);
            /* named while the value is copied: if we die here, repair drops the record */
            c->h->seqs[stripe].writing = (uint32_t)s;
            __atomic_thread_fence(__ATOMIC_RELEASE);
            copy_value(block, &res, 8, w->flags);
            if (old_len != 8) wr(r, F_VALSIZE, 8);
            __atomic_thread_fence(__ATOMIC_RELEASE);
            c->h->seqs[stripe].writing = 0;
            add_bytes(w->counters, c->h, (int64_t)(8 - old_len));
            w->math_result = res;
            w->expires_abs = old_exp;  /* math keeps the expiry (FIXEXPIRE) */
        }
    } else {
        uint64_t exp = w->expires;
        if (exp && !(w->flags & UWC_F_ABSEXPIRE)) exp += clock_now(&w->now);
        c->h->seqs[stripe].writing = (uint32_t)s;
        __atomic_thread_fence(__ATOMIC_RELEASE);
        copy_value(block, w->value, w->value_len, w->flags);
        if (old_len != w->value_len) wr(r, F_VALSIZE, w->value_len);
        if (!(w->flags & UWC_F_FIXEXPIRE)) {
            if (old_exp != exp) wr(r, F_EXPIRES, exp);
            w->expires_abs = exp;
        } else {
            w->expires_abs = old_exp;
        }
        __atomic_thread_fence(__ATOMIC_RELEASE);
        c->h->seqs[stripe].writing = 0;
        add_bytes(w->counters, c->h, (int64_t)(w->value_len - old_len));
    }
    __atomic_store_n(seqp, __atomic_load_n(seqp, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
    stripe_alone_unlock(c, stripe);
    if (rc == UWC_OK) lower_next_scan(c, w->expires_abs);  /* without the mutex: atomically */
    /* stored only when the second changes: one header line, read by all, written rarely */
    if ((rc == UWC_OK || rc == UWC_EXISTS) && (c->p.options & UWC_OPT_LASTMOD) &&
        __atomic_load_n(&c->h->last_modified_at, __ATOMIC_RELAXED) != clock_now(&w->now))
        __atomic_store_n(&c->h->last_modified_at, w->now, __ATOMIC_RELAXED);
    return rc;
}

int uwc_set(uwc_cache *c, uwc_write *w) {
    w->events = 0;
    w->expires_abs = 0;
    if (w->key_len == 0) return UWC_EKEY_EMPTY;
    if (w->key_len > c->p.key_size) return UWC_EKEY_LONG;
    if (w->flags & UWC_F_MATH) {
        if (w->value_len != 8) return UWC_EVAL_EMPTY;
        if (c->max_item_size < 8) return UWC_EVAL_LARGE;
    } else {
        if (w->value_len == 0) return UWC_EVAL_EMPTY;
        if (w->value_len > c->max_item_size) return UWC_EVAL_LARGE;
    }
    uint32_t h = key_hash_hot(c, w->key, w->key_len);
    int rc;
    if (!(c->p.options & (UWC_OPT_BITMAP | UWC_OPT_LRU))) {
        rc = set_fast(c, w, h);
        if (rc != -1) {
            if (rc == UWC_OK) count_write(w->counters);
            return rc;
        }
    }
    clock_now(&w->now);  /* set_locked takes `now` as it is */
    rc = uwc_lock(c);
    if (rc) return rc;
    rc = set_locked(c, w, h);
    if (rc == UWC_OK || rc == UWC_EXISTS) {
        if (c->p.options & UWC_OPT_LASTMOD) c->h->last_modified_at = w->now;
    }
    uwc_unlock(c);
    if (rc == UWC_OK) count_write(w->counters);
    return rc;
}

/* ---- get / exists ---- */

/* One optimistic pass. Returns UWC_OK / UWC_NOTFOUND, or -1 when torn (retry). Inlined: it
 * is the whole hot path of a get, and the call would cost more than its prologue saves. */
static inline __attribute__((always_inline)) int get_optimistic(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t h, uint64_t now,
                          uwc_alloc_fn alloc, void *ctx, uint8_t **dst, uint64_t *dst_len,
                          uint64_t *expires_out, int *lazy_hit) {
    uint64_t bucket = bucket_of(c, h);
    if (c->home_slots) prefetch_home(c, h, alloc != NULL);
    uint64_t seq = seq_read_begin(c, bucket);
    if (seq & 1) return -1;
    const volatile uint32_t *e = &c->buckets[2 * bucket];
    uint64_t s = e[0], steps = 0;
    uint32_t tag = e[1];
    __asm__ __volatile__("" ::: "memory");
    if (s && ((tag ^ h) & UWC_TAG_HASH) && !(tag & UWC_TAG_MORE)) s = 0;  /* one item, not ours */
    while (s) {
        if (s >= c->p.max_items || ++steps > c->p.max_items) return -1;
        const uint8_t *r = SLOT(c, s);
        __builtin_prefetch(r + F_KEY);  /* the key's line, fetched while the header is read */
        if (alloc && !(c->p.options & UWC_OPT_BITMAP)) {
            /* single-block mode: slot s's value is block s, so its address is known now and
             * its fetch (cache and TLB miss in a large cache) overlaps the record's instead
             * of following it (issue 16, the 1M-item get). Only hints: nothing is read. */
            const uint8_t *blk = c->data + s * c->p.block_size;
            __builtin_prefetch(blk);
            if (c->p.block_size > 64) __builtin_prefetch(blk + 64);
        }
        if (vrd(r, F_HASH) == h && vrd(r, F_KEYSIZE) == klen) {
            uint64_t vs = vrd(r, F_VALSIZE), first = vrd(r, F_FIRST), ex = vrd(r, F_EXPIRES);
            if (vs == 0 || vs > c->max_item_size || first >= c->p.blocks ||
                first * c->p.block_size + vs > c->p.block_size * c->p.blocks)
                return -1;
            if (alloc && (c->p.options & UWC_OPT_BITMAP))
                __builtin_prefetch(c->data + first * c->p.block_size);  /* the value, while the key compares */
            if (!key_eq(r + F_KEY, key, klen)) {
                s = vrd(r, F_NEXT);
                continue;
            }
            if (expired_lazy(ex, &now)) {
                if (seq_read_retry(c, bucket, seq)) return -1;
                *lazy_hit = 1;
                return UWC_NOTFOUND;
            }
            if (alloc) {
                if (*dst == NULL || *dst_len != vs) {
                    *dst = alloc(ctx, vs);
                    if (!*dst) return UWC_ENOMEM;
                    *dst_len = vs;
                }
                memcpy(*dst, c->data + first * c->p.block_size, vs);
            }
            if (seq_read_retry(c, bucket, seq)) return -1;
            if (expires_out) *expires_out = ex;
            return UWC_OK;
        }
        s = vrd(r, F_NEXT);
    }
    if (seq_read_retry(c, bucket, seq)) return -1;
    return UWC_NOTFOUND;
}

static int get_locked(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t h, uint64_t now,
                      uwc_alloc_fn alloc, void *ctx, uint64_t *expires_out) {
    touch_hash(c, h);  /* a stable copy: no overwrite of this stripe meanwhile */
    uint64_t s = lookup_locked(c, key, klen, h);
    if (s && expired(rd(SLOT(c, s), F_EXPIRES), now)) {
        delete_slot(c, s);
        c->h->expired_freed++;
        s = 0;
    }
    if (!s) return UWC_NOTFOUND;
    uint8_t *r = SLOT(c, s);
    uint64_t vs = rd(r, F_VALSIZE);
    if (!rec_value_ok(c, s, r)) {
        corrupt(c);
        return UWC_NOTFOUND;
    }
    if (alloc) {
        uint8_t *dst = alloc(ctx, vs);
        if (!dst) return UWC_ENOMEM;
        memcpy(dst, c->data + rd(r, F_FIRST) * c->p.block_size, vs);
    }
    if (is_lru(c)) lru_touch(c, s);
    wr(r, F_HITS, rd(r, F_HITS) + 1);
    if (expires_out) *expires_out = rd(r, F_EXPIRES);
    return UWC_OK;
}

/* A read under the key's stripe mutex: every writer of the stripe's chains, records and
 * values holds it, so the view is stable. Writes nothing. Returns -1 for the mutex path. */
static int get_stripe_locked(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t h, uint64_t now,
                             uwc_alloc_fn alloc, void *ctx, uint64_t *expires_out) {
    unsigned stripe = stripe_of_bucket(bucket_of(c, h));
    int lr = stripe_alone_take(c, stripe);
    if (lr < 0) return -1;
    int rc = -1;
    if (lr == 0) {
        uint64_t s = lookup_locked(c, key, klen, h);
        const uint8_t *r = s ? SLOT(c, s) : NULL;
        if (!r) {
            rc = UWC_NOTFOUND;
        } else if (!rec_value_ok(c, s, r)) {
            rc = -1;  /* damaged: the mutex path rebuilds */
        } else if (expired(rd(r, F_EXPIRES), now)) {
            rc = (c->p.options & UWC_OPT_LAZY) ? -1 : UWC_NOTFOUND;
        } else {
            uint64_t vs = rd(r, F_VALSIZE);
            rc = UWC_OK;
            if (alloc) {
                uint8_t *dst = alloc(ctx, vs);
                if (!dst) rc = UWC_ENOMEM;
                else memcpy(dst, c->data + rd(r, F_FIRST) * c->p.block_size, vs);
            }
            if (expires_out) *expires_out = rd(r, F_EXPIRES);
        }
    }
    stripe_alone_unlock(c, stripe);
    return rc;
}

int uwc_get(uwc_cache *c, const uint8_t *key, uint64_t klen, uint64_t now,
            uwc_alloc_fn alloc, void *ctx, uint64_t *expires_out, uwc_counter_slot *counters) {
    /* a key that cannot exist is still a miss (uWSGI counts it) */
    if (klen == 0) { count(counters, 0); return UWC_EKEY_EMPTY; }
    if (klen > c->p.key_size) { count(counters, 0); return UWC_EKEY_LONG; }
    uint32_t h = key_hash_hot(c, key, klen);
    if (!is_lru(c)) {
        uint8_t *dst = NULL;
        uint64_t dst_len = 0;
        for (int i = 0; i < OPTIMISTIC_TRIES; i++) {
            int lazy = 0;
            int rc = get_optimistic(c, key, klen, h, now, alloc, ctx, &dst, &dst_len, expires_out, &lazy);
            if (rc == -1) { cpu_relax(); continue; }
            if (rc == UWC_NOTFOUND && lazy && (c->p.options & UWC_OPT_LAZY)) break; /* delete it under the lock */
            if (rc == UWC_OK || rc == UWC_NOTFOUND) count(counters, rc == UWC_OK);
            return rc;
        }
        /* Writers kept us out: wait for the key's stripe (spin, then sleep), not for the
         * header mutex, so a long housekeeping job elsewhere does not hold us up. A stripe
         * a holder died in, or an expired key to delete, takes the header mutex path. */
        clock_now(&now);  /* the slow paths take `now` as it is */
        int rc = get_stripe_locked(c, key, klen, h, now, alloc, ctx, expires_out);
        if (rc != -1) {
            if (rc == UWC_OK || rc == UWC_NOTFOUND) count(counters, rc == UWC_OK);
            return rc;
        }
    }
    clock_now(&now);
    int rc = uwc_lock(c);
    if (rc) return rc;
    rc = get_locked(c, key, klen, h, now, alloc, ctx, expires_out);
    uwc_unlock(c);
    if (rc == UWC_OK || rc == UWC_NOTFOUND) count(counters, rc == UWC_OK);
    return rc;
}

int uwc_exists(uwc_cache *c, const uint8_t *key, uint64_t klen, uint64_t now, uint64_t *expires_out) {
    if (klen == 0) return UWC_EKEY_EMPTY;
    if (klen > c->p.key_size) return UWC_EKEY_LONG;
    uint32_t h = key_hash(c, key, klen);
    for (int i = 0; i < OPTIMISTIC_TRIES; i++) {
        int lazy = 0;
        uint8_t *dst = NULL;
        uint64_t dl = 0;
        int rc = get_optimistic(c, key, klen, h, now, NULL, NULL, &dst, &dl, expires_out, &lazy);
        if (rc != -1) return rc;
        cpu_relax();
    }
    int rc = uwc_lock(c);
    if (rc) return rc;
    touch_hash(c, h);
    uint64_t s = lookup_locked(c, key, klen, h);
    if (s && expired(rd(SLOT(c, s), F_EXPIRES), now)) s = 0;
    if (s && expires_out) *expires_out = rd(SLOT(c, s), F_EXPIRES);
    uwc_unlock(c);
    return s ? UWC_OK : UWC_NOTFOUND;
}

/* ---- delete / clear / keys / sweep ---- */

/* Under the mutex: free the key's item, if any. UWC_OK for a live item, UWC_NOTFOUND for none
 * or an expired one (freed all the same: *freed is set whenever an item went). */
static int delete_locked(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t h, uint64_t now, int *freed) {
    touch_hash(c, h);
    uint64_t s = lookup_locked(c, key, klen, h);
    if (!s) return UWC_NOTFOUND;
    int was_expired = expired(rd(SLOT(c, s), F_EXPIRES), now);
    delete_slot(c, s);
    *freed = 1;
    if (was_expired) {
        c->h->expired_freed++;
        return UWC_NOTFOUND;
    }
    return UWC_OK;
}

int uwc_delete(uwc_cache *c, const uint8_t *key, uint64_t klen, uint64_t now, uwc_counter_slot *counters) {
    if (klen == 0) return UWC_EKEY_EMPTY;
    if (klen > c->p.key_size) return UWC_EKEY_LONG;
    uint32_t h = key_hash(c, key, klen);
    int rc = uwc_lock(c), freed = 0;
    if (rc) return rc;
    rc = delete_locked(c, key, klen, h, now, &freed);
    if (freed && (c->p.options & UWC_OPT_LASTMOD)) c->h->last_modified_at = now;
    uwc_unlock(c);
    if (rc == UWC_OK) count_write(counters);
    return rc;
}

int uwc_clear(uwc_cache *c, uint64_t now, uwc_counter_slot *counters) {
    int rc = uwc_lock(c);
    if (rc) return rc;
    clear_locked(c);
    if (c->p.options & UWC_OPT_LASTMOD) c->h->last_modified_at = now;
    uwc_unlock(c);
    count_write(counters);
    return UWC_OK;
}

static int keybuf_add(uwc_keybuf *kb, const uint8_t *key, uint64_t ks) {
    if (kb->len + 8 + ks > kb->cap) {
        uint64_t ncap = (kb->cap ? kb->cap * 2 : 4096) + 8 + ks;
        uint8_t *nb = realloc(kb->buf, ncap);
        if (!nb) return UWC_ENOMEM;
        kb->buf = nb;
        kb->cap = ncap;
    }
    memcpy(kb->buf + kb->len, &ks, 8);
    memcpy(kb->buf + kb->len + 8, key, ks);
    kb->len += 8 + ks;
    kb->count++;
    return UWC_OK;
}

void uwc_keybuf_free(uwc_keybuf *kb) {
    free(kb->buf);
    kb->buf = NULL;
    kb->len = kb->cap = kb->count = 0;
}

/* Keys in uWSGI's order: ascending bucket, then chain order. Expired items are left out. */
int uwc_keys(uwc_cache *c, uint64_t now, uwc_keybuf *out) {
    int rc = uwc_lock(c);
    if (rc) return rc;
    rc = UWC_OK;
    for (uint64_t b = 0; b < c->p.hash_size && rc == UWC_OK; b++) {
        uint64_t s = c->buckets[2 * (b)], steps = 0;
        while (s && s < c->p.max_items && steps++ < c->p.max_items) {
            const uint8_t *r = SLOT(c, s);
            uint64_t ks = rd(r, F_KEYSIZE);
            if (ks > c->p.key_size) { corrupt(c); break; }
            if (ks && !expired(rd(r, F_EXPIRES), now)) {
                rc = keybuf_add(out, r + F_KEY, ks);
                if (rc) break;
            }
            s = rd(r, F_NEXT);
        }
    }
    uwc_unlock(c);
    return rc;
}

#define SWEEP_CHUNK 512  /* slots per hold of the lock: well under a millisecond */

/* The sweeper works in chunks of slots and lets go of the header mutex (and every stripe)
 * between them, so no get or set waits for a whole sweep. next_scan is cleared when the
 * sweep starts (writers meanwhile lower it again for what they add) and lowered to the
 * earliest expiry the sweep left behind when it ends. */
int uwc_sweep(uwc_cache *c, uint64_t now, int force, uwc_keybuf *freed_keys, uint64_t *freed) {
    *freed = 0;
    uint64_t ns = __atomic_load_n(&c->h->next_scan, __ATOMIC_RELAXED);
    if (!force && (ns == 0 || ns > now)) return UWC_OK;
    uint64_t min_left = 0, n = c->p.max_items;
    for (uint64_t from = 1; from < n; from += SWEEP_CHUNK) {
        int rc = uwc_lock(c);
        if (rc) return rc;
        if (from == 1) c->h->next_scan = 0;
        *freed += sweep_range(c, from, from + SWEEP_CHUNK < n ? from + SWEEP_CHUNK : n, now, freed_keys, &min_left, 1);
        int waiters = 0;
#ifdef __GLIBC__
        waiters = (__atomic_load_n(&c->h->lock.__data.__lock, __ATOMIC_RELAXED) & (int)0x80000000) != 0;
#endif
        if (from + SWEEP_CHUNK >= n) lower_next_scan(c, min_left);
        uwc_unlock(c);
        if (waiters) sched_yield();  /* let the woken waiter in before our next chunk */
    }
    return UWC_OK;
}

/* ---- sweeper lease: one process sweeps a cache at a time ---- */

int uwc_sweeper_claim(uwc_cache *c, int32_t pid, uint64_t now, uint64_t lease) {
    if (uwc_lock(c)) return 0;
    int32_t owner = c->h->sweeper_pid;
    int mine = 0;
    if (owner == pid || owner == 0 || c->h->sweeper_lease_until < now ||
        (kill(owner, 0) == -1 && errno == ESRCH)) {
        c->h->sweeper_pid = pid;
        c->h->sweeper_lease_until = now + lease;
        mine = 1;
    }
    uwc_unlock(c);
    return mine;
}

void uwc_sweeper_release(uwc_cache *c, int32_t pid) {
    if (uwc_lock(c)) return;
    if (c->h->sweeper_pid == pid) {
        c->h->sweeper_pid = 0;
        c->h->sweeper_lease_until = 0;
    }
    uwc_unlock(c);
}

/* ---- per-process counters ---- */

uwc_counter_slot *uwc_counter_claim(uwc_cache *c, int32_t pid) {
    for (int i = 0; i < UWC_COUNTER_SLOTS - 1; i++) {
        int32_t expect = 0;
        if (__atomic_compare_exchange_n(&c->h->counters[i].pid, &expect, pid, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return &c->h->counters[i];
    }
    /* all taken: reclaim the slot of a dead process, keeping its counts */
    if (uwc_lock(c) == UWC_OK) {
        for (int i = 0; i < UWC_COUNTER_SLOTS - 1; i++) {
            uwc_counter_slot *cs = &c->h->counters[i];
            int32_t owner = __atomic_load_n(&cs->pid, __ATOMIC_RELAXED);
            if (owner && kill(owner, 0) == -1 && errno == ESRCH) {
                c->h->retired_hits += cs->hits;
                c->h->retired_miss += cs->miss;
                c->h->retired_writes += cs->writes;
                c->h->bytes_used += (uint64_t)cs->bytes_delta;
                cs->hits = cs->miss = cs->writes = 0;
                cs->bytes_delta = 0;
                __atomic_store_n(&cs->pid, pid, __ATOMIC_RELEASE);
                uwc_unlock(c);
                return cs;
            }
        }
        uwc_unlock(c);
    }
    return NULL;  /* caller falls back to the shared overflow slot */
}

void uwc_counter_release(uwc_cache *c, uwc_counter_slot *cs) {
    if (!cs || cs == &c->h->counters[UWC_COUNTER_SLOTS - 1]) return;
    if (uwc_lock(c) != UWC_OK) return;
    c->h->retired_hits += cs->hits;
    c->h->retired_miss += cs->miss;
    c->h->retired_writes += cs->writes;
    c->h->bytes_used += (uint64_t)cs->bytes_delta;
    cs->hits = cs->miss = cs->writes = 0;
    cs->bytes_delta = 0;
    __atomic_store_n(&cs->pid, 0, __ATOMIC_RELEASE);
    uwc_unlock(c);
}

/* ---- stats ---- */

/* Stats take no lock: they come from counters every write keeps (items, bytes, blocks, hits)
 * and, for what no counter can know (how many items have expired by now, the longest free
 * run of the bitmap), from a read-only pass over the records or the bitmap that nobody
 * waits for. Those two are approximate while writes go on. */
#define STATS_EXPIRED_SAMPLE 65536u  /* slots stats() reads to count expired items, at most */

int uwc_stats_read(uwc_cache *c, uint64_t now, uwc_stats *st) {
    memset(st, 0, sizeof *st);
    uwc_header *h = c->h;
#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
    st->items = LD(h->n_items);
    st->hits = LD(h->retired_hits);
    st->miss = LD(h->retired_miss);
    st->writes = LD(h->retired_writes);
    uint64_t bytes = LD(h->bytes_used);
    for (int i = 0; i < UWC_COUNTER_SLOTS; i++) {
        st->hits += LD(h->counters[i].hits);
        st->miss += LD(h->counters[i].miss);
        st->writes += LD(h->counters[i].writes);
        bytes += (uint64_t)LD(h->counters[i].bytes_delta);
    }
    st->bytes_used = bytes;
    st->blocks_used = is_bitmap(c) ? LD(h->blocks_used) : st->items;
    st->full = LD(h->full);
    st->last_modified_at = LD(h->last_modified_at);
    st->evictions = LD(h->evictions);
    st->expired_freed = LD(h->expired_freed);
    st->repairs = LD(h->repairs);
    st->next_scan = LD(h->next_scan);
    for (unsigned i = 0; i < UWC_SEQ_STRIPES; i++) st->odd_stripes += LD(h->seqs[i].v) & 1;
    st->stripe_takeovers = LD(h->stripe_takeovers);
    st->sweeper_pid = LD(h->sweeper_pid);
    st->sweeper_lease_until = LD(h->sweeper_lease_until);
#undef LD
    uint64_t ns = st->next_scan;
    if (ns && ns <= now) {
        /* something may have expired: count without the lock, every slot up to
         * STATS_EXPIRED_SAMPLE of them, else an evenly spread sample of that many, scaled up
         * (at 1M items a full pass cost the caller ~10 ms; stats are polled every second) */
        uint64_t slots = c->p.max_items - 1;
        uint64_t stride = slots <= STATS_EXPIRED_SAMPLE ? 1 : (slots + STATS_EXPIRED_SAMPLE - 1) / STATS_EXPIRED_SAMPLE;
        uint64_t seen = 0, found = 0;
        for (uint64_t s = 1; s < c->p.max_items; s += stride) {
            const uint8_t *r = SLOT(c, s);
            seen++;
            if (vrd(r, F_KEYSIZE) && expired(vrd(r, F_EXPIRES), now)) found++;
        }
        st->expired_pending = stride == 1 ? found : (found * slots + seen / 2) / seen;
    }
    if (is_bitmap(c)) {
        uint64_t run = 0, best = 0;
        const volatile uint8_t *bm = c->bitmap;
        for (uint64_t j = 0; j < c->bitmap_bytes; j++) {
            uint8_t byte = bm[j];
            if (byte == 0) { run += 8; if (run > best) best = run; continue; }
            if (byte == 0xFF) { run = 0; continue; }
            for (unsigned bit = 0; bit < 8; bit++) {
                if (byte & (0x80u >> bit)) run = 0;
                else if (++run > best) best = run;
            }
        }
        st->largest_free_run = best;
    } else {
        st->largest_free_run = free_slots(c) ? 1 : 0;
    }
    return UWC_OK;
}

/* ---- structure check and rebuild ---- */

static int item_valid(const uwc_cache *c, uint64_t s) {
    const uint8_t *r = SLOT(c, s);
    uint64_t ks = rd(r, F_KEYSIZE), vs = rd(r, F_VALSIZE), first = rd(r, F_FIRST);
    if (ks == 0 || ks > c->p.key_size) return 0;
    if (vs == 0 || vs > c->max_item_size) return 0;
    if (rd(r, F_FLAGS) & UWC_REC_WRITING) return 0;  /* its writer died mid-copy */
    if (rd(r, F_HASH) != uwc_hash(c, r + F_KEY, ks)) return 0;
    if (is_bitmap(c)) {
        if (first >= c->p.blocks || first + blocks_for(c, vs) > c->p.blocks) return 0;
    } else if (first != s) {
        return 0;
    }
    return 1;
}

static void zero_item(uwc_cache *c, uint64_t s) {
    uint8_t *r = SLOT(c, s);
    wr(r, F_KEYSIZE, 0); wr(r, F_VALSIZE, 0); wr(r, F_HASH, 0);
    wr(r, F_PREV, 0); wr(r, F_NEXT, 0); wr(r, F_EXPIRES, 0);
    wr(r, F_LRU_PREV, 0); wr(r, F_LRU_NEXT, 0); wr(r, F_FLAGS, 0);
}

/* Stripe i's mutex came back from a dead holder (we hold the header mutex and the stripe).
 * Only a stripe-only overwrite (single-block, no LRU) holds a stripe without the header
 * mutex and changes anything: the record it flagged, if any, may hold a torn value and is
 * dropped. Anything else wrong in the stripe's chains asks for a full rebuild when the
 * header mutex is let go. Inside rebuild() there is nothing to do. */
static void stripe_fix(uwc_cache *c, unsigned i) {
    uwc_seq_stripe *st = &c->h->seqs[i];
    if (!c->rebuilding) {
        uint64_t n = c->p.max_items, steps = 0;
        for (uint64_t b = i; b < c->p.hash_size; b += UWC_SEQ_STRIPES) {
            uint64_t s = c->buckets[2 * b];
            while (s) {
                if (!slot_ok(c, s) || ++steps > n) { corrupt(c); break; }
                uint8_t *r = SLOT(c, s);
                uint64_t next = rd(r, F_NEXT);
                if (rd(r, F_FLAGS) & UWC_REC_WRITING) {
                    if (!is_bitmap(c) && !is_lru(c) && rec_value_ok(c, s, r) && rd(r, F_KEYSIZE) &&
                        rd(r, F_KEYSIZE) <= c->p.key_size) {
                        delete_slot(c, s);  /* stripe i is already ours: no recursion */
                        c->h->repairs++;
                    } else {
                        corrupt(c);
                    }
                }
                s = next;
            }
        }
    }
    __atomic_store_n(&st->dirty, 0, __ATOMIC_RELAXED);
}

/* Rebuild hash chains, free stack, bitmap, LRU and counters from the item records,
 * keeping chain and LRU order wherever the stored links are consistent. Items that fail
 * a bounds or hash check, or overlap another item's blocks, are dropped. */
static void rebuild(uwc_cache *c, uint64_t now, uint64_t *dropped, int cold) {
    uint64_t n = c->p.max_items;
    uint8_t *live = calloc(n, 1);
    uint8_t *seen = calloc(n, 1);
    uint64_t drop = 0;
    /* a cold region's stripes may be odd from dead processes (even from another boot, whose
     * pids mean nothing now): free them; otherwise take them, from dead holders if need be */
    if (cold) normalize_stripes(c);
    c->rebuilding = 1;
    touch_all(c);
    c->rebuilding = 0;
    c->h->rebuild_pending = 0;
    if (!live || !seen) {
        /* without scratch memory the only safe state is an empty cache */
        free(live); free(seen);
        for (uint64_t s = 1; s < n; s++) zero_item(c, s);
        stack_reset(c);
        empty_structure(c);
        *dropped = 0;
        return;
    }
    if (is_bitmap(c)) bm_reset(c);
    for (uint64_t s = 1; s < n; s++) {
        uint8_t *r = SLOT(c, s);
        if (!rd(r, F_KEYSIZE)) continue;
        int ok = item_valid(c, s);
        if (ok && is_bitmap(c)) {
            uint64_t first = rd(r, F_FIRST), nb = blocks_for(c, rd(r, F_VALSIZE));
            for (uint64_t k = first; k < first + nb; k++) if (bm_used(c, k)) { ok = 0; break; }
            if (ok) bm_mark(c, first, nb, 1);
        }
        if (ok) live[s] = 1;
        else { zero_item(c, s); drop++; }
    }

    /* hash chains: while rebuilding, a head's F_PREV temporarily holds its chain tail */
    memset(c->buckets, 0, UWC_BUCKET_BYTES * c->p.hash_size);
#define APPEND(s_) do {                                                          \
        uint64_t s__ = (s_), b__ = bucket_of(c, rd(SLOT(c, s__), F_HASH));    \
        uint64_t head__ = c->buckets[2 * (b__)];                                         \
        seen[s__] = 1;                                                           \
        wr(SLOT(c, s__), F_NEXT, 0);                                             \
        if (!head__) { c->buckets[2 * (b__)] = s__; wr(SLOT(c, s__), F_PREV, s__); }      \
        else {                                                                   \
            uint64_t tail__ = rd(SLOT(c, head__), F_PREV);                       \
            wr(SLOT(c, tail__), F_NEXT, s__);                                    \
            wr(SLOT(c, s__), F_PREV, tail__);                                    \
            wr(SLOT(c, head__), F_PREV, s__);                                    \
        }                                                                        \
    } while (0)
    uint64_t *orig_next = malloc(n * 8), *orig_prev = malloc(n * 8);
    if (orig_next && orig_prev) {
        for (uint64_t s = 0; s < n; s++) {
            orig_next[s] = live[s] ? rd(SLOT(c, s), F_NEXT) : 0;
            orig_prev[s] = live[s] ? rd(SLOT(c, s), F_PREV) : 0;
        }
        for (uint64_t s = 1; s < n; s++) {
            if (!live[s] || seen[s] || orig_prev[s] != 0) continue;
            uint64_t cur = s, b = bucket_of(c, rd(SLOT(c, s), F_HASH));
            while (cur) {
                uint64_t nx = orig_next[cur];
                APPEND(cur);
                if (!nx || nx >= n || !live[nx] || seen[nx] || orig_prev[nx] != cur ||
                    bucket_of(c, rd(SLOT(c, nx), F_HASH)) != b)
                    break;
                cur = nx;
            }
        }
    }
    for (uint64_t s = 1; s < n; s++) if (live[s] && !seen[s]) APPEND(s);
#undef APPEND
    for (uint64_t b = 0; b < c->p.hash_size; b++) {
        if (c->buckets[2 * (b)]) wr(SLOT(c, c->buckets[2 * (b)]), F_PREV, 0);
        retag(c, b);
    }

    /* LRU: follow the stored list from the stored head while it is consistent */
    if (is_lru(c)) {
        memset(seen, 0, n);
        uint64_t cur = c->h->lru_head, prev = 0, steps = 0;
        c->h->lru_head = c->h->lru_tail = 0;
        if (orig_next && orig_prev) {
            /* reuse the scratch arrays for the stored LRU links */
            for (uint64_t s = 0; s < n; s++) {
                orig_next[s] = live[s] ? rd(SLOT(c, s), F_LRU_NEXT) : 0;
                orig_prev[s] = live[s] ? rd(SLOT(c, s), F_LRU_PREV) : 0;
            }
            while (cur && cur < n && live[cur] && !seen[cur] && orig_prev[cur] == prev && steps++ < n) {
                uint64_t nx = orig_next[cur];
                seen[cur] = 1;
                lru_append(c, cur);
                prev = cur;
                cur = nx;
            }
        }
        for (uint64_t s = 1; s < n; s++) if (live[s] && !seen[s]) lru_append(c, s);
    }
    free(orig_next);
    free(orig_prev);

    /* free stack in ascending order: the next allocation takes the highest free slot (the
     * free slots below the first live one are the stack's lazy bottom) */
    uint64_t fresh = 0;
    while (fresh + 1 < n && !live[fresh + 1]) fresh++;
    c->h->stack_top = 0;
    c->h->stack_fresh = fresh;
    c->h->fresh_live = 0;
    uint64_t count = 0, min_exp = 0, bytes = 0, blocks = 0;
    for (uint64_t s = fresh + 1; s < n; s++) {
        if (!live[s]) { stack_push(c, s); continue; }
    }
    for (uint64_t s = 1; s < n; s++) {
        if (!live[s]) continue;
        count++;
        const uint8_t *r = SLOT(c, s);
        uint64_t ex = rd(r, F_EXPIRES), vs = rd(r, F_VALSIZE);
        if (ex && (min_exp == 0 || ex < min_exp)) min_exp = ex;
        bytes += vs;
        blocks += is_bitmap(c) ? blocks_for(c, vs) : 1;
    }
    c->h->n_items = count;
    c->h->next_scan = min_exp;
    c->h->blocks_used = is_bitmap(c) ? blocks : 0;
    set_bytes_total(c, bytes);
    c->h->rebuild_pending = 0;
    if (c->h->bitmap_pos >= c->p.blocks) c->h->bitmap_pos = 0;
    free(live);
    free(seen);
    *dropped = drop;
    (void)now;
}

int uwc_repair(uwc_cache *c, uint64_t now, uint64_t *dropped) {
    int rc = uwc_lock(c);
    if (rc) return rc;
    rebuild(c, now, dropped, 0);
    uwc_unlock(c);
    return UWC_OK;
}

#define CHECK(cond, ...) do { if (!(cond)) { snprintf(msg, msglen, __VA_ARGS__); rc = UWC_ECORRUPT; goto out; } } while (0)


int uwc_check(uwc_cache *c, char *msg, size_t msglen) {
    uint64_t n = c->p.max_items;
    uint8_t *seen = calloc(n, 1);
    uint8_t *bm = NULL;
    int rc = UWC_OK;
    if (!seen) return UWC_ENOMEM;
    if (is_bitmap(c)) {
        bm = calloc(c->bitmap_bytes ? c->bitmap_bytes : 1, 1);
        if (!bm) { free(seen); return UWC_ENOMEM; }
    }
    msg[0] = 0;
    int lrc = uwc_lock(c);
    if (lrc) { free(seen); free(bm); return lrc; }
    touch_all(c);  /* every stripe: no overwrite runs while we look */
    uint64_t live = 0;
    for (uint64_t s = 1; s < n; s++) {
        if (!rd(SLOT(c, s), F_KEYSIZE)) continue;
        live++;
        CHECK(item_valid(c, s), "slot %llu fails its bounds or hash check", (unsigned long long)s);
    }
    CHECK(live == c->h->n_items, "n_items is %llu but %llu slots are live",
          (unsigned long long)c->h->n_items, (unsigned long long)live);
    uint64_t reached = 0;
    for (uint64_t b = 0; b < c->p.hash_size; b++) {
        uint64_t s = c->buckets[2 * (b)], prev = 0;
        if (s && s < n) {
            const uint8_t *hr = SLOT(c, s);
            uint32_t want = ((uint32_t)rd(hr, F_HASH) & UWC_TAG_HASH) | (rd(hr, F_NEXT) ? UWC_TAG_MORE : 0);
            CHECK(c->buckets[2 * b + 1] == want, "bucket %llu has a stale tag", (unsigned long long)b);
        }
        while (s) {
            CHECK(s < n, "bucket %llu points outside the items", (unsigned long long)b);
            CHECK(!seen[s], "slot %llu is reached twice", (unsigned long long)s);
            const uint8_t *r = SLOT(c, s);
            CHECK(rd(r, F_KEYSIZE), "free slot %llu is in a chain", (unsigned long long)s);
            CHECK(bucket_of(c, rd(r, F_HASH)) == b, "slot %llu is in the wrong bucket", (unsigned long long)s);
            CHECK(rd(r, F_PREV) == prev, "slot %llu has a wrong prev link", (unsigned long long)s);
            seen[s] = 1;
            reached++;
            prev = s;
            s = rd(r, F_NEXT);
        }
    }
    CHECK(reached == live, "%llu live slots but %llu reachable from the table",
          (unsigned long long)live, (unsigned long long)reached);
    uint64_t top = c->h->stack_top, fresh = c->h->stack_fresh, fresh_live = c->h->fresh_live;
    CHECK(top < n && fresh < n && fresh_live <= fresh && top + fresh - fresh_live == n - 1 - live,
          "free stack holds %llu + %llu - %llu slots, expected %llu", (unsigned long long)top,
          (unsigned long long)fresh, (unsigned long long)fresh_live, (unsigned long long)(n - 1 - live));
    uint64_t live_below = 0;
    for (uint64_t s = 1; s <= fresh; s++) {
        if (seen[s]) {
            CHECK(c->home_slots, "slot %llu is live but below the free stack's fresh mark", (unsigned long long)s);
            live_below++;
        } else {
            seen[s] = 2;
        }
    }
    CHECK(live_below == fresh_live, "%llu live slots below the fresh mark, %llu counted",
          (unsigned long long)live_below, (unsigned long long)fresh_live);
    for (uint64_t i = 0; i < top; i++) {
        uint64_t s = c->stack[i];
        CHECK(s >= 1 && s < n && !seen[s], "free stack entry %llu is slot %llu (live or out of range)",
              (unsigned long long)i, (unsigned long long)s);
        CHECK(!c->home_slots || rd(SLOT(c, s), F_PREV) == i + 1, "free stack entry %llu (slot %llu) has a wrong position",
              (unsigned long long)i, (unsigned long long)s);
        seen[s] = 2;
    }
    if (is_bitmap(c)) {
        if (c->p.blocks % 8) bm[c->bitmap_bytes - 1] = (uint8_t)(0xFFu >> (c->p.blocks % 8));
        for (uint64_t s = 1; s < n; s++) {
            const uint8_t *r = SLOT(c, s);
            if (!rd(r, F_KEYSIZE)) continue;
            uint64_t first = rd(r, F_FIRST), nb = blocks_for(c, rd(r, F_VALSIZE));
            for (uint64_t k = first; k < first + nb; k++) {
                CHECK(!(bm[k >> 3] & (0x80u >> (k & 7))), "block %llu is used by two items", (unsigned long long)k);
                bm[k >> 3] |= (uint8_t)(0x80u >> (k & 7));
            }
        }
        CHECK(memcmp(bm, c->bitmap, c->bitmap_bytes) == 0, "the bitmap does not match the items");
    }
    if (is_lru(c)) {
        uint64_t s = c->h->lru_head, prev = 0, steps = 0;
        while (s) {
            CHECK(s < n && rd(SLOT(c, s), F_KEYSIZE), "LRU list reaches a free slot");
            CHECK(rd(SLOT(c, s), F_LRU_PREV) == prev, "LRU slot %llu has a wrong prev link", (unsigned long long)s);
            CHECK(++steps <= live, "LRU list has a loop");
            prev = s;
            s = rd(SLOT(c, s), F_LRU_NEXT);
        }
        CHECK(prev == c->h->lru_tail, "LRU tail is wrong");
        CHECK(steps == live, "LRU list holds %llu of %llu items", (unsigned long long)steps, (unsigned long long)live);
    }
out:
    uwc_unlock(c);
    free(seen);
    free(bm);
    return rc;
}

/* ---- lifecycle ---- */

static int init_mutex(pthread_mutex_t *m) {
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a)) return UWC_ELOCK;
    int rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) ||
             pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) ||
             pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc ? UWC_ELOCK : UWC_OK;
}

int uwc_create(uwc_cache *c, void *mem, uint64_t size, const uwc_params *p, const char *name, uint64_t now) {
    uint64_t need;
    if (uwc_params_check(p, NULL) || uwc_region_size(p, &need) || size < need) return UWC_EPARAMS;
    layout l;
    compute_layout(p, &l);
    uwc_header *h = mem;
    memset(h, 0, sizeof *h);
    memcpy(h->magic, UWC_MAGIC, 8);
    h->version = UWC_FORMAT_VERSION;
    h->header_size = UWC_HEADER_SIZE;
    h->byte_order = UWC_BYTE_ORDER_MARK;
    h->params = *p;
    h->items_off = l.items_off;
    h->data_off = l.data_off;
    h->table_off = l.table_off;
    h->stack_off = l.stack_off;
    h->bitmap_off = l.bitmap_off;
    h->total_size = l.total;
    h->created_at = now;
    strncpy(h->name, name, UWC_NAME_MAX);
    h->counters[UWC_COUNTER_SLOTS - 1].pid = SHARED_SLOT_PID;
    if (init_mutex(&h->lock)) return UWC_ELOCK;
    for (unsigned i = 0; i < UWC_SEQ_STRIPES; i++)
        if (init_mutex(&h->seqs[i].m)) return UWC_ELOCK;
    bind_handle(c, mem, size, p);
    /* items, buckets (slots and tags), stack and bitmap are zero already (see cache.h): no pass over them, and
     * the free stack is the lazy "every slot fresh" */
    stack_reset(c);
    if (is_bitmap(c) && c->p.blocks % 8) c->bitmap[c->bitmap_bytes - 1] = (uint8_t)(0xFFu >> (c->p.blocks % 8));
    __atomic_store_n(&h->state, UWC_STATE_READY, __ATOMIC_RELEASE);
    return UWC_OK;
}

int uwc_header_peek(const void *mem, uint64_t size, uwc_params *out, char *name_out, const char **why) {
    const uwc_header *h = mem;
    const char *w = NULL;
    if (size < UWC_HEADER_SIZE) w = "the region is smaller than a uwcache header";
    else if (memcmp(h->magic, UWC_MAGIC, 8) != 0) w = "not a uwcache region (bad magic)";
    else if (h->byte_order != UWC_BYTE_ORDER_MARK) w = "the region was written on a machine of another byte order";
    else if (h->version != UWC_FORMAT_VERSION) w = "the region has another uwcache format version";
    else if (h->header_size != UWC_HEADER_SIZE) w = "the region's header size differs";
    else if (uwc_params_check(&h->params, NULL)) w = "the region's header holds invalid parameters";
    else {
        uint64_t need = 0;  /* params passed the check above, so the size is computed */
        uwc_region_size(&h->params, &need);
        if (need != h->total_size || size < need) w = "the region is truncated or its size does not match its header";
    }
    if (why) *why = w;
    if (w) return UWC_ECORRUPT;
    if (out) *out = h->params;
    if (name_out) { memcpy(name_out, h->name, UWC_NAME_MAX); name_out[UWC_NAME_MAX] = 0; }
    return UWC_OK;
}

uint32_t uwc_cold_upgrade_to(const void *mem, uint64_t size) {
    const uwc_header *h = mem;
    if (size < UWC_HEADER_SIZE || memcmp(h->magic, UWC_MAGIC, 8) != 0 || h->byte_order != UWC_BYTE_ORDER_MARK ||
        h->header_size != UWC_HEADER_SIZE || h->state != UWC_STATE_READY)
        return 0;
    /* 5 -> 6 turned a stripe's padding into `writing` (zero in a format-5 region, and reset by
     * the recovery anyway); 6 -> 7 changed only the stripe waiters' protocol; 7 -> 8 added
     * home slots, whose state (fresh_live, in former padding; the free entries' positions)
     * the recovery's rebuild sets from the items */
    return h->version >= 5 && h->version <= 7 ? UWC_FORMAT_VERSION : 0;
}

int uwc_attach(uwc_cache *c, void *mem, uint64_t size, const uwc_params *expect, const char **why) {
    uwc_params got;
    int rc = uwc_header_peek(mem, size, &got, NULL, why);
    if (rc) return rc;
    if (expect) {
        const char *w = NULL;
        if (got.max_items != expect->max_items) w = "max_items";
        else if (got.key_size != expect->key_size) w = "key_size";
        else if (got.block_size != expect->block_size) w = "block_size";
        else if (got.blocks != expect->blocks) w = "block_count";
        else if (got.hash_size != expect->hash_size) w = "hash_size";
        else if (got.hash_algo != expect->hash_algo) w = "hash_algo";
        else if ((got.options ^ expect->options) & UWC_OPT_BITMAP) w = "mode_bitmap";
        else if ((got.options ^ expect->options) & UWC_OPT_LRU) w = "full_purge_lru";
        else if ((got.options ^ expect->options) & UWC_OPT_LAZY) w = "lazy_expire";
        else if ((got.options ^ expect->options) & UWC_OPT_CLEAR_ON_FULL) w = "clear_on_full";
        else if (got.math_initial != expect->math_initial) w = "math_initial";
        else if (got.sweep_on_full != expect->sweep_on_full) w = "sweep_on_full";
        if (w) {
            if (why) *why = w;
            return UWC_EMISMATCH;
        }
    }
    /* Only structure and shared semantics must match; logging and sweeping choices are
     * each process's own (this process's configuration wins for them). */
    const uint32_t shared = UWC_OPT_BITMAP | UWC_OPT_LRU | UWC_OPT_LAZY | UWC_OPT_CLEAR_ON_FULL;
    if (expect) got.options = (got.options & shared) | (expect->options & ~shared);
    bind_handle(c, mem, size, &got);
    return UWC_OK;
}

/* A region nobody is attached to (every user exited, or the machine restarted): its
 * mutex may be held by a dead process or be garbage from another boot. Start a fresh
 * mutex and rebuild every derived structure from the items. */
int uwc_recover(uwc_cache *c, uint64_t now, uint64_t *dropped) {
    if (init_mutex(&c->h->lock)) return UWC_ELOCK;
    memset(c->odd_mask, 0, sizeof c->odd_mask);
    for (int i = 0; i < UWC_COUNTER_SLOTS; i++) c->h->counters[i].bytes_delta = 0;
    rebuild(c, now, dropped, 1);
    release_stripes(c);  /* nobody else is attached: no mutex to release */
    c->h->full = 0;
    c->h->sweeper_pid = 0;
    c->h->sweeper_lease_until = 0;
    c->h->sweep_on_full_next = 0;
    for (int i = 0; i < UWC_COUNTER_SLOTS; i++) {
        c->h->counters[i].pid = 0;
        c->h->counters[i].hits = c->h->counters[i].miss = c->h->counters[i].writes = 0;
    }
    c->h->counters[UWC_COUNTER_SLOTS - 1].pid = SHARED_SLOT_PID;
    c->h->retired_hits = c->h->retired_miss = c->h->retired_writes = 0;
    uwc_near_reset(c);  /* near cache: deadlines of another boot mean nothing here */
    __atomic_store_n(&c->h->state, UWC_STATE_READY, __ATOMIC_RELEASE);
    return UWC_OK;
}

/* ---- uWSGI raw image (dump / store file body) ---- */

uint64_t uwc_image_size(const uwc_cache *c) {
    return c->rec_size * c->p.max_items + c->p.block_size * c->p.blocks;
}

int uwc_export_image(uwc_cache *c, uint8_t *dst, uint64_t dst_len) {
    uint64_t isz = c->rec_size * c->p.max_items, dsz = c->p.block_size * c->p.blocks;
    if (dst_len < isz + dsz) return UWC_EPARAMS;
    int rc = uwc_lock(c);
    if (rc) return rc;
    touch_all(c);  /* no overwrite may tear the copy */
    memcpy(dst, c->items, isz);
    memcpy(dst + isz, c->data, dsz);
    uwc_unlock(c);
    if (c->home_slots) {  /* a free record's position on the free stack is ours alone */
        for (uint64_t s = 1; s < c->p.max_items; s++) {
            uint8_t *r = dst + s * c->rec_size;
            if (!rd(r, F_KEYSIZE)) wr(r, F_PREV, 0);
        }
    }
    return UWC_OK;
}

/* Load items from a uWSGI-layout image with geometry `sp` (may differ from ours: the items
 * are translated one by one). Items that do not fit our limits are counted as dropped. */
int uwc_import_image(uwc_cache *c, const uint8_t *src, uint64_t src_len, const uwc_params *sp,
                     uint64_t now, uint64_t *loaded, uint64_t *dropped) {
    *loaded = *dropped = 0;
    uint64_t rs = UWC_ITEM_HEADER + sp->key_size, isz, dsz;
    if (__builtin_mul_overflow(rs, sp->max_items, &isz) || __builtin_mul_overflow(sp->block_size, sp->blocks, &dsz) ||
        isz + dsz > src_len)
        return UWC_EPARAMS;
    uint64_t src_max_item = (sp->options & UWC_OPT_BITMAP) ? sp->block_size * sp->blocks : sp->block_size;
    for (uint64_t s = 1; s < sp->max_items; s++) {
        const uint8_t *r = src + s * rs;
        uint64_t ks = rd(r, F_KEYSIZE), vs = rd(r, F_VALSIZE), first = rd(r, F_FIRST), ex = rd(r, F_EXPIRES);
        if (!ks) continue;
        if (ks > sp->key_size || vs == 0 || vs > src_max_item || first >= sp->blocks ||
            first * sp->block_size + vs > dsz) {
            (*dropped)++;
            continue;
        }
        if (expired(ex, now)) continue;
        uwc_write w = {0};
        w.key = r + F_KEY;
        w.key_len = ks;
        w.value = src + isz + first * sp->block_size;
        w.value_len = vs;
        w.expires = ex;
        w.flags = UWC_F_UPDATE | UWC_F_ABSEXPIRE;
        w.now = now;
        int rc = uwc_set(c, &w);
        if (rc == UWC_OK) (*loaded)++;
        else if (rc == UWC_ELOCK) return rc;
        else (*dropped)++;
    }
    return UWC_OK;
}

/* ---- test hook: die while holding the lock, halfway through a change ---- */

void uwc_debug_crash_in_lock(uwc_cache *c, int stage) {
    if (uwc_lock(c)) return;
    touch_all(c);
    uint64_t s;
    if (stage >= 1 && (s = stack_pop(c)) != 0) {
        /* half an insert: a slot taken from the stack, key written, not linked, not counted */
        uint8_t *r = SLOT(c, s);
        wr(r, F_HASH, uwc_hash(c, (const uint8_t *)"half", 4));
        memcpy(r + F_KEY, "half", 4);
        wr(r, F_FIRST, is_bitmap(c) ? 0 : s);
        wr(r, F_VALSIZE, 0);  /* invalid: a value was never written */
        wr(r, F_KEYSIZE, 4);
    }
    if (stage >= 2 && c->h->n_items) {
        /* and a corrupted counter and chain head */
        c->h->n_items += 7;
        c->buckets[2 * (0)] = c->p.max_items + 5;
    }
    raise(SIGKILL);
}

/* ==== near cache (issue 11) ==========================================================
 * The L1 in front of Redis. Leases sit in a small open-addressing table in the header,
 * keyed by a 64-bit key fingerprint, so Cache.get never meets a lease and its hit path is
 * untouched. Near fills mark their record's flags with UWC_NEAR_MARK, the shard and the
 * shard's generation; bumping the generation kills every earlier fill in O(1). Every lease
 * operation runs under the cache mutex (they are on the miss path only). */

#define NEAR_SHARD_SHIFT 16
#define NEAR_GEN_SHIFT 32
/* 31 bits of the generation: the flags' top bit is UWC_REC_WRITING (torn-value flag) */
#define NEAR_GEN_MASK 0x7FFFFFFFu

static inline uint64_t near_fp(const uint8_t *key, uint64_t klen) {
    uint64_t fp = ((uint64_t)uwc_murmur2(key, klen) << 32) | uwc_djb33x(key, klen);
    return fp < 2 ? fp + 2 : fp;
}
static inline int near_ms_before(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }

static inline uwc_near_slot *near_find(uwc_cache *c, uint64_t fp) {
    uwc_near_state *n = &c->h->near;
    for (uint32_t i = 0, j = (uint32_t)fp & (UWC_NEAR_LEASES - 1); i < UWC_NEAR_LEASES;
         i++, j = (j + 1) & (UWC_NEAR_LEASES - 1)) {
        uwc_near_slot *l = &n->leases[j];
        if (l->fp == 0) return NULL;
        if (l->fp == fp) return l;
    }
    return NULL;
}

static void near_drop(uwc_cache *c, uwc_near_slot *l) {
    l->fp = 1;  /* tombstone: later probes go on past it */
    l->token = 0;
    if (c->h->near.leases_live && --c->h->near.leases_live == 0)
        memset(c->h->near.leases, 0, sizeof c->h->near.leases);  /* no live lease: drop the tombstones */
}

static void near_clear_leases(uwc_cache *c) {
    memset(c->h->near.leases, 0, sizeof c->h->near.leases);
    c->h->near.leases_live = 0;
}

/* Rebuild the table from its unexpired leases (tombstones and expired ones go). */
static void near_compact(uwc_cache *c, uint32_t now32) {
    uwc_near_slot keep[UWC_NEAR_LEASES];
    uint32_t n = 0;
    for (uint32_t i = 0; i < UWC_NEAR_LEASES; i++) {
        uwc_near_slot *l = &c->h->near.leases[i];
        if (l->fp > 1 && near_ms_before(now32, l->until_ms)) keep[n++] = *l;
    }
    near_clear_leases(c);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = (uint32_t)keep[i].fp & (UWC_NEAR_LEASES - 1);
        while (c->h->near.leases[j].fp) j = (j + 1) & (UWC_NEAR_LEASES - 1);
        c->h->near.leases[j] = keep[i];
    }
    c->h->near.leases_live = n;
}

static inline int near_trusted(const uwc_cache *c, uint32_t shard, uint64_t now_ms) {
    return now_ms < __atomic_load_n(&c->h->near.deadline_ms[shard], __ATOMIC_ACQUIRE);
}

void uwc_near_count(uwc_cache *c, unsigned stat, uint64_t n) {
    if (stat < UWC_NEAR_ST_NSTATS) __atomic_fetch_add(&c->h->near.stats[stat], n, __ATOMIC_RELAXED);
}

/* Is this record a live near fill of a trusted shard's current generation? */
static inline int near_check(const uwc_cache *c, uint64_t flags, uint64_t now_ms) {
    if (!(flags & UWC_NEAR_MARK)) return UWC_NOTFOUND;  /* not filled by the near tier */
    uint32_t shard = (uint32_t)(flags >> NEAR_SHARD_SHIFT) & 0xFFu;
    if (shard >= UWC_NEAR_SHARDS) return UWC_NOTFOUND;
    if (!near_trusted(c, shard, now_ms)) return UWC_NEAR_UNTRUSTED;
    if (((uint32_t)(flags >> NEAR_GEN_SHIFT) & NEAR_GEN_MASK) !=
        (__atomic_load_n(&c->h->near.gen[shard], __ATOMIC_ACQUIRE) & NEAR_GEN_MASK))
        return UWC_NOTFOUND;  /* filled before a reconnect or a flush */
    return UWC_OK;
}

static int near_get_optimistic(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t h, uint64_t now,
                               uint64_t now_ms, uwc_alloc_fn alloc, void *ctx, uint8_t **dst, uint64_t *dst_len) {
    uint64_t bucket = bucket_of(c, h);
    uint64_t seq = seq_read_begin(c, bucket);
    if (seq & 1) return -1;
    uint64_t s = c->buckets[2 * bucket], steps = 0;
    __asm__ __volatile__("" ::: "memory");
    while (s) {
        if (s >= c->p.max_items || ++steps > c->p.max_items) return -1;
        const uint8_t *r = SLOT(c, s);
        if (vrd(r, F_HASH) == h && vrd(r, F_KEYSIZE) == klen && memcmp(r + F_KEY, key, klen) == 0) {
            uint64_t vs = vrd(r, F_VALSIZE), first = vrd(r, F_FIRST), ex = vrd(r, F_EXPIRES);
            uint64_t flags = vrd(r, F_FLAGS);
            /* a value being written (or left torn by a dead writer, whose stripe stays odd) */
            if (flags & UWC_REC_WRITING) return -1;
            if (vs == 0 || vs > c->max_item_size || first >= c->p.blocks ||
                first * c->p.block_size + vs > c->p.block_size * c->p.blocks)
                return -1;
            int st = expired(ex, now) ? UWC_NOTFOUND : near_check(c, flags, now_ms);
            if (st != UWC_OK) return seq_read_retry(c, bucket, seq) ? -1 : st;
            if (*dst == NULL || *dst_len != vs) {
                *dst = alloc(ctx, vs);
                if (!*dst) return UWC_ENOMEM;
                *dst_len = vs;
            }
            memcpy(*dst, c->data + first * c->p.block_size, vs);
            return seq_read_retry(c, bucket, seq) ? -1 : UWC_OK;
        }
        s = vrd(r, F_NEXT);
    }
    return seq_read_retry(c, bucket, seq) ? -1 : UWC_NOTFOUND;
}

int uwc_near_get(uwc_cache *c, const uint8_t *key, uint64_t klen, uint64_t now, uint64_t now_ms,
                 uwc_alloc_fn alloc, void *ctx, uwc_counter_slot *counters) {
    if (klen == 0) return UWC_EKEY_EMPTY;
    if (klen > c->p.key_size) return UWC_EKEY_LONG;
    uint32_t h = key_hash(c, key, klen);
    int rc = -1;
    uint8_t *dst = NULL;
    uint64_t dst_len = 0;
    if (!is_lru(c)) {
        for (int i = 0; i < OPTIMISTIC_TRIES && rc == -1; i++) {
            rc = near_get_optimistic(c, key, klen, h, now, now_ms, alloc, ctx, &dst, &dst_len);
            if (rc == -1) cpu_relax();
        }
    }
    if (rc == -1) {
        rc = uwc_lock(c);
        if (rc) return rc;
        touch_hash(c, h);
        uint64_t s = lookup_locked(c, key, klen, h);
        rc = UWC_NOTFOUND;
        if (s) {
            uint8_t *r = SLOT(c, s);
            rc = expired(rd(r, F_EXPIRES), now) ? UWC_NOTFOUND : near_check(c, rd(r, F_FLAGS), now_ms);
            if (rc == UWC_OK && !rec_value_ok(c, s, r)) {
                corrupt(c);  /* rebuilt before the lock is let go */
                rc = UWC_NOTFOUND;
            }
            if (rc == UWC_OK) {
                uint64_t vs = rd(r, F_VALSIZE);
                uint8_t *d = alloc(ctx, vs);
                if (!d) rc = UWC_ENOMEM;
                else memcpy(d, c->data + rd(r, F_FIRST) * c->p.block_size, vs);
                if (d && is_lru(c)) lru_touch(c, s);
            }
        }
        uwc_unlock(c);
    }
    if (rc == UWC_OK || rc == UWC_NOTFOUND) count(counters, rc == UWC_OK);
    else if (rc == UWC_NEAR_UNTRUSTED) uwc_near_count(c, UWC_NEAR_ST_UNTRUSTED, 1);
    return rc;
}

int uwc_near_lease(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t shard, uint64_t now_ms,
                   uint32_t lease_ms, uint32_t *token) {
    if (klen == 0) return UWC_EKEY_EMPTY;
    if (klen > c->p.key_size) return UWC_EKEY_LONG;
    if (shard >= UWC_NEAR_SHARDS) return UWC_EPARAMS;
    uint64_t fp = near_fp(key, klen);
    uint32_t now32 = (uint32_t)now_ms;
    int rc = uwc_lock(c);
    if (rc) return rc;
    uwc_near_state *n = &c->h->near;
    if (!near_trusted(c, shard, now_ms)) {
        rc = UWC_NEAR_UNTRUSTED;
        goto out;
    }
    uwc_near_slot *l = near_find(c, fp);
    if (l && near_ms_before(now32, l->until_ms)) {
        rc = UWC_EXISTS;  /* another fill is under way: wait for it */
        goto out;
    }
    if (!l) {
        if (n->leases_live >= UWC_NEAR_LEASES / 2) near_compact(c, now32);
        uint32_t j = (uint32_t)fp & (UWC_NEAR_LEASES - 1), i = 0;
        for (; i < UWC_NEAR_LEASES; i++, j = (j + 1) & (UWC_NEAR_LEASES - 1)) {
            uwc_near_slot *e = &n->leases[j];
            if (e->fp < 2) break;
        }
        if (i == UWC_NEAR_LEASES || n->leases_live >= UWC_NEAR_LEASES / 2) {
            uwc_near_count(c, UWC_NEAR_ST_LEASES_FULL, 1);
            rc = UWC_FULL;
            goto out;
        }
        l = &n->leases[j];
        l->fp = fp;
        n->leases_live++;
    }
    /* a fresh token; an expired lease of a dead filler is taken over */
    if (++n->token_seq == 0) n->token_seq = 1;
    l->token = n->token_seq;
    l->until_ms = now32 + (lease_ms ? lease_ms : 1);
    *token = l->token;
    rc = UWC_OK;
out:
    uwc_unlock(c);
    return rc;
}

int uwc_near_release(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t token) {
    if (klen == 0 || klen > c->p.key_size) return UWC_NOTFOUND;
    uint64_t fp = near_fp(key, klen);
    int rc = uwc_lock(c);
    if (rc) return rc;
    uwc_near_slot *l = near_find(c, fp);
    rc = UWC_NOTFOUND;
    if (l && l->token == token) {
        near_drop(c, l);
        rc = UWC_OK;
    }
    uwc_unlock(c);
    return rc;
}

int uwc_near_fill(uwc_cache *c, const uint8_t *key, uint64_t klen, uint32_t token, const uint8_t *value,
                  uint64_t vlen, uint64_t ttl_s, uint32_t shard, uint64_t now, uint64_t now_ms) {
    if (klen == 0) return UWC_EKEY_EMPTY;
    if (klen > c->p.key_size) return UWC_EKEY_LONG;
    if (shard >= UWC_NEAR_SHARDS) return UWC_EPARAMS;
    uint64_t fp = near_fp(key, klen);
    uint32_t h = key_hash(c, key, klen);
    int rc = uwc_lock(c);
    if (rc) return rc;
    uwc_near_slot *l = near_find(c, fp);
    if (!l || l->token != token) {
        /* deleted or invalidated since the lease was taken (or the generation moved on) */
        rc = UWC_NOTFOUND;
        uwc_near_count(c, UWC_NEAR_ST_LOST, 1);
        goto out;
    }
    near_drop(c, l);
    if (!near_trusted(c, shard, now_ms)) {
        rc = UWC_NEAR_UNTRUSTED;
        goto out;
    }
    if (vlen == 0) { rc = UWC_EVAL_EMPTY; goto out; }
    if (vlen > c->max_item_size) { rc = UWC_EVAL_LARGE; goto out; }
    uwc_write w;
    memset(&w, 0, sizeof w);
    w.key = key;
    w.key_len = klen;
    w.value = value;
    w.value_len = vlen;
    w.expires = ttl_s;
    w.flags = UWC_F_UPDATE;
    w.now = now;
    rc = set_locked(c, &w, h);
    if (rc == UWC_OK) {
        uint64_t s = lookup_locked(c, key, klen, h);  /* its stripe is still held (odd) */
        if (s) {
            uint64_t flags = (rd(SLOT(c, s), F_FLAGS) & UWC_F_STORED_MASK) | UWC_NEAR_MARK |
                             ((uint64_t)shard << NEAR_SHARD_SHIFT) |
                             ((uint64_t)(c->h->near.gen[shard] & NEAR_GEN_MASK) << NEAR_GEN_SHIFT);
            wr(SLOT(c, s), F_FLAGS, flags);
        }
        if (c->p.options & UWC_OPT_LASTMOD) c->h->last_modified_at = now;
        uwc_near_count(c, UWC_NEAR_ST_FILLS, 1);
    }
out:
    uwc_unlock(c);
    return rc;
}

int uwc_near_invalidate(uwc_cache *c, const uint8_t *keys, uint64_t keys_len, uint64_t now, uint64_t *removed) {
    uint64_t off = 0, gone = 0, seen = 0;
    int rc = uwc_lock(c);
    if (rc) return rc;
    while (off + 8 <= keys_len) {
        uint64_t kl;
        memcpy(&kl, keys + off, 8);
        off += 8;
        if (kl > keys_len - off) break;
        const uint8_t *k = keys + off;
        off += kl;
        seen++;
        if (kl == 0 || kl > c->p.key_size) continue;
        uwc_near_slot *l = near_find(c, near_fp(k, kl));
        if (l) near_drop(c, l);
        uint32_t h = key_hash(c, k, kl);
        touch_hash(c, h);
        uint64_t s = lookup_locked(c, k, kl, h);
        if (s) {
            delete_slot(c, s);
            gone++;
        }
    }
    if (gone && (c->p.options & UWC_OPT_LASTMOD)) c->h->last_modified_at = now;
    uwc_unlock(c);
    uwc_near_count(c, UWC_NEAR_ST_INVALIDATIONS, seen);
    if (removed) *removed = gone;
    return UWC_OK;
}

int uwc_near_bump(uwc_cache *c, int shard, uint32_t *gen_out) {
    if (shard >= UWC_NEAR_SHARDS) return UWC_EPARAMS;
    int rc = uwc_lock(c);
    if (rc) return rc;
    for (int i = 0; i < UWC_NEAR_SHARDS; i++) {
        if (shard >= 0 && i != shard) continue;
        __atomic_store_n(&c->h->near.gen[i], c->h->near.gen[i] + 1, __ATOMIC_RELEASE);
    }
    /* a lease taken before the bump may carry a value read before it: no fill may land */
    near_clear_leases(c);
    if (gen_out) *gen_out = c->h->near.gen[shard < 0 ? 0 : shard];
    uwc_unlock(c);
    return UWC_OK;
}

void uwc_near_trust(uwc_cache *c, uint32_t shard, uint64_t deadline_ms) {
    if (shard < UWC_NEAR_SHARDS) __atomic_store_n(&c->h->near.deadline_ms[shard], deadline_ms, __ATOMIC_RELEASE);
}

void uwc_near_reset(uwc_cache *c) {
    near_clear_leases(c);
    for (int i = 0; i < UWC_NEAR_SHARDS; i++) {
        c->h->near.deadline_ms[i] = 0;
        c->h->near.gen[i]++;
    }
}

/* ---- test hook: hold the header mutex for a while (stats and gets must not wait) ---- */

int uwc_debug_hold_lock(uwc_cache *c, unsigned ms, int stripes) {
    int rc = uwc_lock(c);
    if (rc) return rc;
    if (stripes) touch_all(c);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
    uwc_unlock(c);
    return UWC_OK;
}

/* ==================================================================================
 * ---- batch operations: get_many / set_many / delete_many / touch (issue 12.4) ----
 *
 * Self-contained on purpose: built only on uwc_get, uwc_lock/uwc_unlock and the lookup
 * helpers above (set_locked, get_locked, lookup_locked, delete_slot, touch_hash), so the
 * locking underneath can change without touching this section. Reads go key by key
 * through the optimistic path (no lock, no shared write) except in LRU caches, where a read
 * moves the item and every key of a chunk is read under one lock. Writes and deletes take
 * the lock once per chunk of BATCH_CHUNK keys: one pass, yet a huge batch never keeps
 * other processes out for long. Invalid keys/values are reported per entry in rcs[] and
 * skip the entry; only a lock failure (UWC_ELOCK) or an allocation failure (UWC_ENOMEM)
 * stops the batch and is returned.
 * ================================================================================== */

#define BATCH_CHUNK 128u

static int batch_key_check(const uwc_cache *c, uint64_t klen) {
    if (klen == 0) return UWC_EKEY_EMPTY;
    if (klen > c->p.key_size) return UWC_EKEY_LONG;
    return UWC_OK;
}

#define BATCH_GROUP 8u
/* Below this many bytes of table, records and values, a cache stays in the CPU caches of a
 * process that uses it: prefetching would only add instructions (measured: ~30 a key). */
#define BATCH_PREFETCH_MIN (1u << 20)

/* Prefetch what the lookups of a group of keys will read, in two rounds (the buckets, then
 * the head records and their values), so that the cache misses of a group overlap instead
 * of coming one after the other as with get(). Only hints: the values read here are
 * bounds-checked, never trusted (the lookup reads again, validated). */
static void batch_prefetch(const uwc_cache *c, const uint32_t *hs, const uint8_t *ok, uint64_t m) {
    uint64_t bk[BATCH_GROUP];
    for (uint64_t j = 0; j < m; j++) {
        bk[j] = bucket_of(c, hs[j]);
        __builtin_prefetch(&c->buckets[2 * bk[j]]);
    }
    for (uint64_t j = 0; j < m; j++) {
        uint64_t s = __atomic_load_n(&c->buckets[2 * bk[j]], __ATOMIC_RELAXED);
        if (!ok[j] || !s || s >= c->p.max_items) continue;
        const uint8_t *r = SLOT(c, s);
        __builtin_prefetch(r);
        /* single-block caches keep a record's value in the block of the same index */
        if (!is_bitmap(c)) __builtin_prefetch(c->data + s * c->p.block_size);
    }
}

typedef struct { uwc_alloc_at_fn fn; void *ctx; uint64_t index; } batch_alloc_ctx;

static void *batch_alloc_one(void *v, uint64_t size) {
    batch_alloc_ctx *b = v;
    return b->fn(b->ctx, b->index, size);
}

/* count()'s adds, once per batch */
static void batch_count(uwc_counter_slot *counters, uint64_t hits, uint64_t misses) {
    if (!counters) return;
    bump_by(counters, &counters->hits, hits);
    bump_by(counters, &counters->miss, misses);
}

/* What the optimistic reads of get_many use of the handle, copied into locals once per
 * batch: read through *c, the fields would be loaded again after every call of the
 * allocator (the compiler must assume that a call it cannot see into changes *c). The
 * handle's geometry is process-local and fixed. */
typedef struct {
    const uint8_t *items, *data;
    const uint32_t *buckets;
    uwc_seq_stripe *seqs;
    uint64_t rec_size, block_size, blocks, data_bytes, max_items, max_item_size, hash_mask, hash_size;
    int bitmap, prefetch;
} batch_view;

#define BATCH_TORN (-1)  /* the read met a writer, or a damaged chain: read again through uwc_get */
#define BATCH_LAZY (-2)  /* present but expired */

/* One optimistic read for get_many: get_optimistic's protocol, unchanged (the stripe's
 * counter read before; the chain walked with every field loaded once and bounds-checked;
 * the value copied; the counter read again: a change, or an odd counter, means torn), with
 * the batch's view and its allocator called directly (no adapter). Returns UWC_OK,
 * UWC_NOTFOUND, UWC_ENOMEM, BATCH_TORN or BATCH_LAZY. */
static inline __attribute__((always_inline)) int batch_read(const batch_view *v, const uint8_t *key, uint64_t klen,
                                                            uint32_t h, uint64_t now, uwc_alloc_at_fn alloc,
                                                            void *ctx, uint64_t index) {
    uint64_t bucket = v->hash_mask ? (h & v->hash_mask) : h % v->hash_size;
    const uint64_t *seqp = &v->seqs[stripe_of_bucket(bucket)].v;
    uint64_t seq = __atomic_load_n(seqp, __ATOMIC_ACQUIRE);
    if (seq & 1) return BATCH_TORN;
    const volatile uint32_t *e = &v->buckets[2 * bucket];
    uint64_t s = e[0], steps = 0;
    uint32_t tag = e[1];
    __asm__ __volatile__("" ::: "memory");
    if (s && ((tag ^ h) & UWC_TAG_HASH) && !(tag & UWC_TAG_MORE)) s = 0;  /* one item, not ours */
    int rc = UWC_NOTFOUND;
    while (s) {
        if (s >= v->max_items || ++steps > v->max_items) return BATCH_TORN;
        const uint8_t *r = v->items + s * v->rec_size;
        if (v->prefetch) {  /* a big cache: as get_optimistic, overlap the key's and value's misses */
            __builtin_prefetch(r + F_KEY);
            if (alloc && !v->bitmap) {
                const uint8_t *blk = v->data + s * v->block_size;
                __builtin_prefetch(blk);
                if (v->block_size > 64) __builtin_prefetch(blk + 64);
            }
        }
        if (vrd(r, F_HASH) == h && vrd(r, F_KEYSIZE) == klen) {
            uint64_t vs = vrd(r, F_VALSIZE), first = vrd(r, F_FIRST), ex = vrd(r, F_EXPIRES);
            /* vs - 1 wraps for 0: one test for 1 <= vs <= max_item_size */
            if (vs - 1 >= v->max_item_size || first >= v->blocks || first * v->block_size + vs > v->data_bytes)
                return BATCH_TORN;
            if (v->prefetch && alloc && v->bitmap)
                __builtin_prefetch(v->data + first * v->block_size);  /* the value, while the key compares */
            if (!key_eq(r + F_KEY, key, klen)) {
                s = vrd(r, F_NEXT);
                continue;
            }
            if (expired(ex, now)) {
                rc = BATCH_LAZY;
                break;
            }
            if (alloc) {
                uint8_t *dst = alloc(ctx, index, vs);
                if (!dst) return UWC_ENOMEM;
                memcpy(dst, v->data + first * v->block_size, vs);
            }
            rc = UWC_OK;
            break;
        }
        s = vrd(r, F_NEXT);
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(seqp, __ATOMIC_RELAXED) != seq) return BATCH_TORN;
    return rc;
}

/* A group's key lengths (0 for an invalid key: empty or longer than key_size) and hashes
 * (an invalid key's: never used). A full group in a djb33x cache: eight at once
 * (uwc_djb33x_x8), its loops unrolled for the constant BATCH_GROUP. */
static inline __attribute__((always_inline)) void batch_hash(const uwc_cache *c, const uwc_key *k, uint64_t m,
                                                             uint64_t *kl, uint32_t *hs) {
    const uint64_t key_size = c->p.key_size;
    if (m == BATCH_GROUP && c->p.hash_algo == UWC_HASH_DJB33X) {
        const uint8_t *kp[BATCH_GROUP];
        for (uint64_t j = 0; j < BATCH_GROUP; j++) {
            kp[j] = k[j].key;
            kl[j] = k[j].len <= key_size ? k[j].len : 0;
        }
        uwc_djb33x_x8(kp, kl, hs);
        return;
    }
    for (uint64_t j = 0; j < m; j++) {
        kl[j] = k[j].len <= key_size ? k[j].len : 0;
        hs[j] = kl[j] ? key_hash_hot(c, k[j].key, kl[j]) : 0;
    }
}

/* get_many outside LRU mode: no lock, nothing written to shared memory, one optimistic read
 * per key, in groups of BATCH_GROUP: hash the group's keys, then (in a cache too big to stay
 * in the CPU caches) prefetch their memory, then read them. A key that met a writer (or an
 * expired one in a lazy_expire cache, deleted under the lock) goes through uwc_get, which
 * retries, takes the locks if it must, and counts the key itself. Inlined twice: with an
 * allocator and without. */
static inline __attribute__((always_inline)) int get_many_optimistic(uwc_cache *c, const uwc_key *keys, uint64_t n,
                                                                     uint64_t now, uwc_alloc_at_fn alloc, void *ctx,
                                                                     int *rcs, uwc_counter_slot *counters) {
    const batch_view v = {
        .items = c->items, .data = c->data, .buckets = c->buckets, .seqs = c->h->seqs,
        .rec_size = c->rec_size, .block_size = c->p.block_size, .blocks = c->p.blocks,
        .data_bytes = c->p.block_size * c->p.blocks, .max_items = c->p.max_items,
        .max_item_size = c->max_item_size, .hash_mask = c->hash_mask, .hash_size = c->p.hash_size,
        .bitmap = is_bitmap(c), .prefetch = c->size >= BATCH_PREFETCH_MIN,
    };
    const int lazy_delete = (c->p.options & UWC_OPT_LAZY) != 0;
    uint64_t hits = 0, misses = 0;
    for (uint64_t g = 0; g < n; g += BATCH_GROUP) {
        uint64_t m = n - g < BATCH_GROUP ? n - g : BATCH_GROUP;
        uint32_t hs[BATCH_GROUP];
        uint64_t kl[BATCH_GROUP];  /* a valid key's length, 0 for an invalid key */
        const uwc_key *k = keys + g;
        batch_hash(c, k, m, kl, hs);
        if (v.prefetch) {
            uint8_t ok[BATCH_GROUP];
            for (uint64_t j = 0; j < m; j++) ok[j] = kl[j] != 0;
            batch_prefetch(c, hs, ok, m);
        }
        for (uint64_t j = 0; j < m; j++) {
            uint64_t i = g + j;
            if (!kl[j]) {  /* an invalid key is a miss, as in uwc_get */
                rcs[i] = batch_key_check(c, k[j].len);
                misses++;
                continue;
            }
            int rc = batch_read(&v, k[j].key, kl[j], hs[j], now, alloc, ctx, i);
            if (rc == BATCH_LAZY) rc = lazy_delete ? BATCH_TORN : UWC_NOTFOUND;
            if (__builtin_expect(rc == BATCH_TORN, 0)) {
                batch_alloc_ctx b = {alloc, ctx, i};
                rc = uwc_get(c, k[j].key, k[j].len, now, alloc ? batch_alloc_one : NULL, &b, NULL, counters);
                rcs[i] = rc;
                if (rc == UWC_ELOCK || rc == UWC_ENOMEM) {
                    batch_count(counters, hits, misses);
                    return rc;
                }
                continue;
            }
            rcs[i] = rc;
            if (__builtin_expect(rc == UWC_ENOMEM, 0)) {
                batch_count(counters, hits, misses);
                return rc;
            }
            hits += rc == UWC_OK;
            misses += rc != UWC_OK;
        }
    }
    batch_count(counters, hits, misses);
    return UWC_OK;
}

int uwc_get_many(uwc_cache *c, const uwc_key *keys, uint64_t n, uint64_t now, uwc_alloc_at_fn alloc, void *ctx,
                 int *rcs, uwc_counter_slot *counters) {
    if (!is_lru(c)) {
        if (alloc) return get_many_optimistic(c, keys, n, now, alloc, ctx, rcs, counters);
        return get_many_optimistic(c, keys, n, now, NULL, NULL, rcs, counters);
    }
    /* LRU: a read moves the item, so every key of a chunk is read under one lock */
    batch_alloc_ctx b = {alloc, ctx, 0};
    uwc_alloc_fn one = alloc ? batch_alloc_one : NULL;
    for (uint64_t start = 0; start < n; start += BATCH_CHUNK) {
        uint64_t end = n - start > BATCH_CHUNK ? start + BATCH_CHUNK : n;
        int rc = uwc_lock(c);
        if (rc) return rc;
        for (uint64_t i = start; i < end; i++) {
            rc = batch_key_check(c, keys[i].len);
            if (rc == UWC_OK) {
                b.index = i;
                rc = get_locked(c, keys[i].key, keys[i].len, key_hash(c, keys[i].key, keys[i].len), now, one, &b,
                                NULL);
            }
            rcs[i] = rc;
            if (rc == UWC_ENOMEM) {
                uwc_unlock(c);
                return rc;
            }
        }
        uwc_unlock(c);
        /* counted outside the lock, like uwc_get; an invalid key is a miss there too */
        for (uint64_t i = start; i < end; i++) count(counters, rcs[i] == UWC_OK);
    }
    return UWC_OK;
}

static int batch_write_check(const uwc_cache *c, const uwc_write *w) {
    int rc = batch_key_check(c, w->key_len);
    if (rc) return rc;
    if (w->flags & UWC_F_MATH) return UWC_EPARAMS;  /* counters go through uwc_set */
    if (w->value_len == 0) return UWC_EVAL_EMPTY;
    if (w->value_len > c->max_item_size) return UWC_EVAL_LARGE;
    return UWC_OK;
}

int uwc_set_many(uwc_cache *c, uwc_write *ws, uint64_t n, int *rcs) {
    for (uint64_t start = 0; start < n; start += BATCH_CHUNK) {
        uint64_t end = n - start > BATCH_CHUNK ? start + BATCH_CHUNK : n;
        int rc = uwc_lock(c);
        if (rc) return rc;
        int changed = 0;
        for (uint64_t i = start; i < end; i++) {
            uwc_write *w = &ws[i];
            w->events = 0;
            w->expires_abs = 0;
            rc = batch_write_check(c, w);
            if (rc == UWC_OK) rc = set_locked(c, w, uwc_hash(c, w->key, w->key_len));
            if (rc == UWC_OK || rc == UWC_EXISTS) changed = 1;
            rcs[i] = rc;
        }
        if (changed && (c->p.options & UWC_OPT_LASTMOD)) c->h->last_modified_at = ws[start].now;
        uwc_unlock(c);
        for (uint64_t i = start; i < end; i++)
            if (rcs[i] == UWC_OK) count_write(ws[i].counters);
    }
    return UWC_OK;
}

int uwc_delete_many(uwc_cache *c, const uwc_key *keys, uint64_t n, uint64_t now, int *rcs,
                    uwc_counter_slot *counters) {
    for (uint64_t start = 0; start < n; start += BATCH_CHUNK) {
        uint64_t end = n - start > BATCH_CHUNK ? start + BATCH_CHUNK : n;
        int rc = uwc_lock(c);
        if (rc) return rc;
        int changed = 0;
        for (uint64_t i = start; i < end; i++) {
            rc = batch_key_check(c, keys[i].len);
            if (rc == UWC_OK)
                rc = delete_locked(c, keys[i].key, keys[i].len, uwc_hash(c, keys[i].key, keys[i].len), now, &changed);
            rcs[i] = rc;
        }
        if (changed && (c->p.options & UWC_OPT_LASTMOD)) c->h->last_modified_at = now;
        uwc_unlock(c);
        for (uint64_t i = start; i < end; i++)
            if (rcs[i] == UWC_OK) count_write(counters);
    }
    return UWC_OK;
}

int uwc_touch(uwc_cache *c, const uint8_t *key, uint64_t klen, uint64_t expires, uint64_t now,
              uint64_t *expires_abs) {
    int rc = batch_key_check(c, klen);
    if (rc) return rc;
    uint32_t h = uwc_hash(c, key, klen);
    rc = uwc_lock(c);
    if (rc) return rc;
    touch_hash(c, h);
    uint64_t s = lookup_locked(c, key, klen, h);
    if (s && expired(rd(SLOT(c, s), F_EXPIRES), now)) {
        /* an expired item is gone for every purpose: touching it does not revive it */
        delete_slot(c, s);
        c->h->expired_freed++;
        s = 0;
    }
    rc = UWC_NOTFOUND;
    if (s) {
        uint8_t *r = SLOT(c, s);
        uint64_t exp = expires ? now + expires : 0;
        if (rd(r, F_EXPIRES) != exp) wr(r, F_EXPIRES, exp);
        lower_next_scan(c, exp);
        if (c->p.options & UWC_OPT_LASTMOD) c->h->last_modified_at = now;
        if (expires_abs) *expires_abs = exp;
        rc = UWC_OK;
    }
    uwc_unlock(c);
    return rc;
}

/* ---- end of batch operations ---- */
