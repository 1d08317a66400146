"""The benchmark workload, shared by every phase and every process.

Deterministic (seeded), so the scripts that run inside ``uwsgi --pyrun`` and the ones that
run under plain Python build byte-identical keys, values and op sequences. Stdlib only:
this module is imported by uWSGI's embedded interpreter too.
"""

from __future__ import annotations

import random
import string
from typing import List, Sequence, Tuple

SEED = 20240611
N_KEYS = 1000
KEY_MIN, KEY_MAX = 16, 32
VALUE_SIZES = (100, 4096)
BATCH = 1000          # ops per timed batch (per-op time = batch time / BATCH)

# Cache geometry used for uwcache AND uWSGI (same cache2 options on both sides).
KEY_SIZE = 64
MAX_ITEMS = 1024      # slot 0 is reserved: 1023 usable >= N_KEYS


def block_size_for(value_size: int) -> int:
    """Smallest power-of-two block (>= 128) that holds one value of that size."""
    b = 128
    while b < value_size:
        b *= 2
    return b


def cache_name(value_size: int) -> str:
    return f"b{value_size}"


def cache2(name: str, max_items: int, block_size: int, hash_size: int = 65536) -> str:
    """uWSGI's ``--cache2`` value for one benchmark cache."""
    return f"name={name},items={max_items},blocksize={block_size},keysize={KEY_SIZE},hashsize={hash_size}"


_ALPHABET = (string.ascii_letters + string.digits).encode()
_ALNUM = bytes(_ALPHABET[i % len(_ALPHABET)] for i in range(256))  # random byte -> letter/digit


def make_keys(n: int = N_KEYS, prefix: str = "k", seed: int = SEED) -> List[bytes]:
    """n distinct ASCII keys of 16-32 bytes (memcached-safe: no spaces/control chars)."""
    rng = random.Random(f"{seed}:{prefix}")
    keys = []
    for i in range(n):
        head = f"{prefix}{i}:".encode()
        length = rng.randint(KEY_MIN, KEY_MAX)
        keys.append(head + rng.randbytes(max(0, length - len(head))).translate(_ALNUM))
    return keys


def make_value(size: int, seed: int = SEED) -> bytes:
    rng = random.Random(f"{seed}:v{size}")
    return bytes(rng.getrandbits(8) for _ in range(size))


def shuffled(keys: Sequence[bytes], seed: int) -> List[bytes]:
    out = list(keys)
    random.Random(seed).shuffle(out)
    return out


def mix_blocks(keys: Sequence[bytes], gets_per_set: int, n_ops: int, seed: int
               ) -> List[Tuple[Tuple[bytes, ...], bytes]]:
    """One pass of a get/set mix: blocks of (gets_per_set get keys, one set key).

    gets_per_set=9 is the 90/10 mix, 1 is 50/50, -1 means gets only (the "set key" is None),
    0 means sets only. n_ops is rounded to whole blocks.
    """
    rng = random.Random(seed)
    blocks = []
    if gets_per_set < 0:
        per = 10
        for _ in range(n_ops // per):
            blocks.append((tuple(rng.choice(keys) for _ in range(per)), None))
        return blocks
    per = gets_per_set + 1
    for _ in range(n_ops // per):
        blocks.append((tuple(rng.choice(keys) for _ in range(gets_per_set)), rng.choice(keys)))
    return blocks


MIXES = {
    # name -> gets per set
    "90/10": 9,
    "50/50": 1,
    "100/0": -1,
    "0/100": 0,
}


def ops_per_pass(blocks: Sequence[Tuple[Tuple[bytes, ...], bytes]]) -> int:
    return sum(len(g) + (0 if s is None else 1) for g, s in blocks)
