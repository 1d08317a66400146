/* Engine-level multi-process write scaling, without Python: N forked processes, each pinned
 * to CPU (i % ncpu), overwrite random keys of one shared cache (bench/mp_scale.py's geometry:
 * 2000 items, block 128, key_size 64, hash_size 65536, 1000 hot keys, 100-byte values) for
 * a fixed number of operations. Prints, per process count, the CPU time per operation (user +
 * sys of the children) and the wall-clock throughput. Cache-line traffic between cores shows
 * as CPU per op growing from 1 process to 2.
 * build: cc -O2 -Iengine benchmarks/c/mp_engine.c engine/cache.c engine/hash.c -o /tmp/mp_engine -lpthread
 * usage: /tmp/mp_engine PROCS_LIST OPS_PER_PROC [READ_PERCENT]   e.g. 1,2,4 5000000 0 */
#define _GNU_SOURCE
#include "cache.h"
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void *alloc_fn(void *ctx, uint64_t n) { (void)n; return ctx; }

int main(int argc, char **argv) {
    uwc_params p = {.max_items = 2000, .key_size = 64, .block_size = 128, .blocks = 2000, .hash_size = 65536};
    uint64_t size;
    if (uwc_region_size(&p, &size)) return 1;
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uwc_cache c;
    if (uwc_create(&c, mem, size, &p, "tp", time(NULL))) return 2;
    char keys[1000][32];
    uint8_t val[100];
    memset(val, 'v', sizeof val);
    for (int i = 0; i < 1000; i++) {
        snprintf(keys[i], sizeof keys[i], "key:%08d:abcdefgh", i);
        uwc_write w = {.key = (uint8_t *)keys[i], .key_len = strlen(keys[i]), .value = val, .value_len = 100,
                       .flags = UWC_F_UPDATE, .now = time(NULL)};
        uwc_set(&c, &w);
    }
    long ops = argc > 2 ? atol(argv[2]) : 2000000;
    int reads = argc > 3 ? atoi(argv[3]) : 0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    char *list = strdup(argc > 1 ? argv[1] : "1,2,4");
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int n = atoi(tok);
        double t0 = now();
        for (int k = 0; k < n; k++) {
            if (fork() == 0) {
                cpu_set_t set;
                CPU_ZERO(&set);
                CPU_SET(k % ncpu, &set);
                sched_setaffinity(0, sizeof set, &set);
                uwc_counter_slot *cs = uwc_counter_claim(&c, getpid());
                unsigned x = 12345u + 7919u * (unsigned)k;
                uint8_t buf[128];
                uint64_t now_s = time(NULL);
                for (long i = 0; i < ops; i++) {
                    x = x * 1103515245u + 12345u;
                    int ki = (x >> 8) % 1000;
                    if ((int)((x >> 20) % 100) < reads) {
                        uwc_get(&c, (uint8_t *)keys[ki], 21, now_s, alloc_fn, buf, NULL, cs);
                    } else {
                        uwc_write w = {.key = (uint8_t *)keys[ki], .key_len = 21, .value = val, .value_len = 100,
                                       .flags = UWC_F_UPDATE, .now = now_s, .counters = cs};
                        uwc_set(&c, &w);
                    }
                }
                uwc_counter_release(&c, cs);
                _exit(0);
            }
        }
        double cpu = 0;
        for (int k = 0; k < n; k++) {
            int st;
            struct rusage ru;
            wait4(-1, &st, 0, &ru);
            cpu += ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
        }
        double wall = now() - t0;
        double loads[1];
        getloadavg(loads, 1);
        printf("{\"procs\": %d, \"cpu_ns_op\": %.1f, \"ops_s\": %.0f, \"load\": %.2f}\n", n, cpu * 1e9 / (ops * n),
               ops * n / wall, loads[0]);
        fflush(stdout);
    }
    return 0;
}
