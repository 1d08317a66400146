"""get_many versus a dict built from get calls (issue 12.4): run with

    PYTHONPATH=src python benchmarks/batch.py [--keys 100] [--items N] [--samples 5000]

The three ways (a `get` loop, a dict comprehension over `get`, `get_many`) are interleaved
call by call in this one process: each sample times one batch of every way, in a shuffled
order, so a burst of load from elsewhere hits all of them alike, and the median over the
samples drops the batches that such a burst interrupted. Prints the median time per batch
of each way and the speed-up of `get_many` over the faster `get` version (ratio of the
medians). It is a plain program (not a test): wall-clock timings on a shared machine are
noisy, so read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time

import uwcache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--hash-size", type=int, default=0,
                        help="hash buckets (default: the power of two above twice the items)")
    parser.add_argument("--missing", type=float, default=0.0, help="fraction of keys that are absent")
    parser.add_argument("--items", type=int, default=0,
                        help="fill the cache with this many items and read --keys of them, spread over "
                             "the whole cache (a cache bigger than the CPU caches: lookups miss memory)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as shm:
        os.environ["UWCACHE_SHM_DIR"] = shm
        total = max(args.items, args.keys)
        # hash_size: a power of two, as open_cache's own sizing picks (--hash-size to override)
        hash_size = args.hash_size or 1 << (total * 2 + 9).bit_length()
        cache = uwcache.open_cache("batch-bench", namespace="bench", max_items=total * 2 + 10,
                                   hash_size=hash_size, block_size=max(64, args.value_size))
        every = [f"key:{i:08d}" for i in range(total)]
        step = total // args.keys
        keys = every[::step][: args.keys]
        absent = set(keys[int(len(keys) * (1 - args.missing)):])
        for start in range(0, total, 10000):
            cache.set_many({k: b"v" * args.value_size for k in every[start:start + 10000] if k not in absent})

        get = cache.get

        def loop() -> dict:
            out = {}
            for k in keys:
                v = get(k)
                if v is not None:
                    out[k] = v
            return out

        def comprehension() -> dict:
            return {k: v for k in keys if (v := get(k)) is not None}

        def many() -> dict:
            return cache.get_many(keys)

        assert loop() == comprehension() == many()
        ways = {"get loop": loop, "get comprehension": comprehension, "get_many": many}
        times: dict = {name: [] for name in ways}
        order = list(ways)
        clock = time.perf_counter_ns
        for _ in range(args.samples):
            random.shuffle(order)
            for name in order:
                fn = ways[name]
                t0 = clock()
                fn()
                times[name].append(clock() - t0)
        med = {name: statistics.median(t) / 1e9 for name, t in times.items()}
        for name, m in med.items():
            print(f"{name:18s} {m * 1e6:8.2f} us per {args.keys} keys ({m / args.keys * 1e9:6.1f} ns/key)")
        fastest_python = min(med["get loop"], med["get comprehension"])
        print(f"get_many speed-up over the faster get version: {fastest_python / med['get_many']:.2f}x "
              f"(medians of {args.samples} interleaved batches each)")
        cache.close()


if __name__ == "__main__":
    main()
