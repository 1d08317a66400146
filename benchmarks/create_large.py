"""Time the creation of a 1 GiB memory-only cache (its memory reserved at creation).

usage: PYTHONPATH=src python benchmarks/create_large.py [runs]
"""
import statistics
import sys
import time

import uwcache
from uwcache.cache import destroy


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    times = []
    for i in range(runs):
        namespace = f"bench-create-{i}"
        start = time.perf_counter()
        cache = uwcache.open_cache("big", namespace=namespace, max_items=16384, block_size=65536, hash_size=16384)
        times.append((time.perf_counter() - start) * 1000)
        size = cache.region_size
        cache.close()
        destroy("big", namespace=namespace)
    print(f"{size / 2**30:.3f} GiB: median {statistics.median(times):.0f} ms, runs "
          + ", ".join(f"{t:.0f}" for t in times))


if __name__ == "__main__":
    main()
