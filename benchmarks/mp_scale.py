"""Aggregate ops/s of N forked processes sharing one cache, for several read shares.
(The script the issues quote their multi-process numbers from, kept here to reproduce them.)
Arms: ours (uwcache native Cache), compat (uwcache.uwsgi functions), dict (a private dict per
process: the machine's own scaling, no sharing), real (uWSGI's cache,
run inside `uwsgi --cache2 name=tp,items=2000,blocksize=128,keysize=64 --pyrun THIS --pyargv "real ..."`).
usage: mp_scale.py ARM PROCS READS SECS   e.g. ours 1,2,4,8,16 100,90,50 1.5
Prints one line: RESULT {"<reads>": {"<procs>": ops/s}}"""
import json
import os
import random
import sys
import time

KEYS = ["key:%08d:abcdefgh" % i for i in range(1000)]


def worker(get, put, reads, secs, wfd, start_at):
    rnd = random.Random(os.getpid())
    ops = [(rnd.random() * 100 < reads, rnd.choice(KEYS)) for _ in range(4096)]
    val = b"v" * 100
    while time.time() < start_at:
        pass
    n = 0
    end = start_at + secs
    while time.time() < end:
        for is_get, k in ops:
            if is_get:
                get(k)
            else:
                put(k, val)
        n += len(ops)
    os.write(wfd, b"%d\n" % n)
    os._exit(0)


def run(nproc, get, put, reads, secs):
    r, w = os.pipe()
    start_at = time.time() + 0.2 + 0.02 * nproc
    pids = []
    for _ in range(nproc):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            worker(get, put, reads, secs, w, start_at)
        pids.append(pid)
    os.close(w)
    for p in pids:
        os.waitpid(p, 0)
    total = sum(int(x) for x in os.read(r, 1 << 20).split())
    os.close(r)
    return total / secs


def main():
    args = sys.argv[1:] if len(sys.argv) > 2 else sys.argv[1].split()
    arm, procs, reads, secs = args[0], [int(x) for x in args[1].split(",")], [int(x) for x in args[2].split(",")], float(args[3])
    node = None
    if arm == "dict":  # control: a private dict per process (no sharing): the machine's own scaling
        d = {}
        get, put = d.get, d.__setitem__
    elif arm == "real":
        import uwsgi
        get = lambda k: uwsgi.cache_get(k, "tp")  # noqa: E731
        put = lambda k, v: uwsgi.cache_update(k, v, 0, "tp")  # noqa: E731
    else:
        import uwcache
        caching = uwcache.Caching()
        caching.add_cache("tp", max_items=2000, block_size=128, key_size=64)
        node = caching.start()
        if arm == "ours":
            c = node.cache("tp")
            get, put = c.get, c.set
        else:
            from uwcache import uwsgi as compat
            get = lambda k: compat.cache_get(k, "tp")  # noqa: E731
            put = lambda k, v: compat.cache_update(k, v, 0, "tp")  # noqa: E731
    for k in KEYS:
        put(k, b"v" * 100)
    res = {}
    for rd in reads:
        res[str(rd)] = {str(n): max(run(n, get, put, rd, secs) for _ in range(2)) for n in procs}
        print("PART %s %s" % (rd, json.dumps(res[str(rd)])), flush=True)
    print("RESULT " + json.dumps(res), flush=True)
    if node is not None:
        node.close()


if __name__ == "__main__":
    main()
