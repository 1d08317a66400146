/* A/B of two engine builds under one load: both are loaded (dlopen) into the same processes,
 * each with its own cache region, and time is cut into short epochs by the TSC; even epochs
 * run build A, odd epochs build B, in every process at once. Whatever else runs on the
 * machine falls on both builds alike, so the ratio of their op counts is steady even where
 * absolute numbers are not. Workload: bench/mp_scale.py's geometry, random overwrites of
 * 1000 hot keys with 100-byte values (READ_PERCENT gets instead).
 * build: cc -O2 -Iengine -shared -fPIC engine/cache.c engine/hash.c -o /tmp/a.so  (and b.so)
 *        cc -O2 -Iengine benchmarks/c/ab_epochs.c -o /tmp/ab_epochs -ldl
 * usage: /tmp/ab_epochs A.so B.so PROCS SECONDS [READ_PERCENT] */
#define _GNU_SOURCE
#include "cache.h"
#include <dlfcn.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

typedef struct {
    int (*region_size)(const uwc_params *, uint64_t *);
    int (*create)(uwc_cache *, void *, uint64_t, const uwc_params *, const char *, uint64_t);
    int (*set)(uwc_cache *, uwc_write *);
    int (*get)(uwc_cache *, const uint8_t *, uint64_t, uint64_t, uwc_alloc_fn, void *, uint64_t *, uwc_counter_slot *);
    uwc_counter_slot *(*claim)(uwc_cache *, int32_t);
    uwc_cache c;
} arm;

static void load(arm *a, const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); exit(1); }
    a->region_size = dlsym(h, "uwc_region_size");
    a->create = dlsym(h, "uwc_create");
    a->set = dlsym(h, "uwc_set");
    a->get = dlsym(h, "uwc_get");
    a->claim = dlsym(h, "uwc_counter_claim");
}
static void *alloc_fn(void *ctx, uint64_t n) { (void)n; return ctx; }

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: A.so B.so PROCS SECONDS [READS]\n"); return 2; }
    arm arms[2];
    load(&arms[0], argv[1]);
    load(&arms[1], argv[2]);
    int procs = atoi(argv[3]);
    double secs = atof(argv[4]);
    int reads = argc > 5 ? atoi(argv[5]) : 0;
    uwc_params p = {.max_items = 2000, .key_size = 64, .block_size = 128, .blocks = 2000, .hash_size = 65536};
    char keys[1000][32];
    uint8_t val[100];
    memset(val, 'v', sizeof val);
    for (int i = 0; i < 1000; i++) snprintf(keys[i], sizeof keys[i], "key:%08d:abcdefgh", i);
    for (int a = 0; a < 2; a++) {
        uint64_t size;
        arms[a].region_size(&p, &size);
        void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (arms[a].create(&arms[a].c, mem, size, &p, "tp", time(NULL))) return 3;
        for (int i = 0; i < 1000; i++) {
            uwc_write w = {.key = (uint8_t *)keys[i], .key_len = 21, .value = val, .value_len = 100,
                           .flags = UWC_F_UPDATE, .now = time(NULL)};
            arms[a].set(&arms[a].c, &w);
        }
    }
    /* epochs of ~2 ms of TSC */
    const uint64_t epoch = 4200000;
    uint64_t *res = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint64_t start = __rdtsc() + 100000000ull, stop = start + (uint64_t)(secs * 2.1e9);
    for (int k = 0; k < procs; k++) {
        if (fork() == 0) {
            uwc_counter_slot *cs[2] = {arms[0].claim(&arms[0].c, getpid()), arms[1].claim(&arms[1].c, getpid())};
            unsigned x = 12345u + 7919u * (unsigned)k;
            uint8_t buf[128];
            uint64_t now_s = time(NULL), ops[2] = {0, 0};
            while (__rdtsc() < start) {}
            for (;;) {
                uint64_t t = __rdtsc();
                if (t >= stop) break;
                int a = (int)((t / epoch) & 1);
                arm *A = &arms[a];
                for (int j = 0; j < 64; j++) {
                    x = x * 1103515245u + 12345u;
                    int ki = (x >> 8) % 1000;
                    if ((int)((x >> 20) % 100) < reads) {
                        A->get(&A->c, (uint8_t *)keys[ki], 21, now_s, alloc_fn, buf, NULL, cs[a]);
                    } else {
                        uwc_write w = {.key = (uint8_t *)keys[ki], .key_len = 21, .value = val, .value_len = 100,
                                       .flags = UWC_F_UPDATE, .now = now_s, .counters = cs[a]};
                        A->set(&A->c, &w);
                    }
                }
                ops[a] += 64;
            }
            __atomic_fetch_add(&res[0], ops[0], __ATOMIC_RELAXED);
            __atomic_fetch_add(&res[1], ops[1], __ATOMIC_RELAXED);
            _exit(0);
        }
    }
    for (int k = 0; k < procs; k++) wait(NULL);
    double loads[1];
    getloadavg(loads, 1);
    printf("{\"procs\": %d, \"a_ops\": %llu, \"b_ops\": %llu, \"b_over_a\": %.3f, \"load\": %.2f}\n", procs,
           (unsigned long long)res[0], (unsigned long long)res[1], (double)res[1] / (double)res[0], loads[0]);
    return 0;
}
