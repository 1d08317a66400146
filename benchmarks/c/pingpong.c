/* The machine's price for moving one cache line between two cores: two threads, pinned to
 * CPUs 0 and 1, take turns writing a shared counter, each waiting to see the other's write.
 * One turn is one line transfer; the average turn is what an atomic on a line the other core
 * wrote last waits for. Issue 10.6's write scaling is bounded by it: every correct overwrite
 * takes its key's lock with one such atomic, and with random shared keys the other core
 * wrote that lock's line last half of the time (benchmarks/FINDINGS.md, fifth pass).
 * build: cc -O2 benchmarks/c/pingpong.c -o /tmp/pingpong -lpthread
 * usage: /tmp/pingpong [TURNS]   (default 2000000) */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Alignas(64) volatile uint64_t turn;
static uint64_t turns = 2000000;

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("sched_setaffinity");
}

/* CPU 1 answers the odd turns */
static void *answer(void *unused) {
    (void)unused;
    pin(1);
    for (uint64_t i = 1; i < turns; i += 2) {
        while (turn != i) {
        }
        turn = i + 1;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) turns = strtoull(argv[1], NULL, 10) & ~1ull;
    if (turns < 2) turns = 2;
    pthread_t t;
    pin(0);
    if (pthread_create(&t, NULL, answer, NULL) != 0) return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (uint64_t i = 0; i < turns; i += 2) {
        turn = i + 1;
        while (turn != i + 2) {
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(t, NULL);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("{\"turns\": %llu, \"ns_per_transfer\": %.1f}\n", (unsigned long long)turns, ns / (double)turns);
    return 0;
}
