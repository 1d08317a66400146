#!/usr/bin/env bash
# The whole benchmark suite in one command, from any directory:
#
#     benchmarks/run.sh            # full run: data/, RESULTS.md and plots/ under benchmarks/
#     benchmarks/run.sh --quick    # small counts, to check the suite (output: benchmarks/.quick/)
#
# Extra arguments go to bench.py (--phases latency,throughput,cores,mules,scaling,iscale,memory,profile,perf).
# It creates/uses a venv (BENCH_VENV, default benchmarks/.venv), installs the Python peers,
# uWSGI from PyPI and uwcache from this checkout, starts redis-server and memcached on unix
# sockets of its own (apt-get installing them first when missing and running as root),
# runs everything, and stops the servers it started.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
VENV="${BENCH_VENV:-$HERE/.venv}"
PYTHON="${PYTHON:-python3}"
PY_DEPS=(diskcache cachetools redis pymemcache matplotlib uwsgi)

log() { printf '[run.sh] %s\n' "$*" >&2; }

SRC="$(mktemp -d "${TMPDIR:-/tmp}/uwcache-bench-src.XXXXXX")"
RUN="$(mktemp -d "${TMPDIR:-/tmp}/uwcache-bench-run.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$SRC" "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- system tools: install what is missing (root + apt only); each is optional ----
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v memcached >/dev/null || missing+=(memcached)
command -v valgrind >/dev/null || missing+=(valgrind)      # instruction counts (profile phase)
command -v perf >/dev/null || missing+=(linux-perf)         # CPU profile of 1 vs 2 processes
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing ${missing[*]}"
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
            || log "could not install all of: ${missing[*]} (the parts that need them are skipped)"
    else
        log "not installed (and not root): ${missing[*]}; the parts that need them are skipped"
    fi
fi

# ---- venv: peers, uWSGI (compiled from PyPI, about a minute the first time), uwcache ----
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_DEPS[@]}" >"$RUN/pip-deps.log" 2>&1
then
    cat "$RUN/pip-deps.log" >&2
    log "installing the Python dependencies failed"
    exit 1
fi
# Build uwcache from a copy of the checkout (tracked + new files, uncommitted edits
# included) so the build never writes into the working tree other people use.
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -co --exclude-standard -z -- . ':!benchmarks' | tar --null -T - -cf -) \
        | tar -C "$SRC" -xf -
else
    tar -C "$REPO" --exclude=./benchmarks --exclude=./build --exclude='*.egg-info' --exclude='*.so' \
        --exclude='.venv*' -cf - . | tar -C "$SRC" -xf -
fi
log "installing uwcache from $REPO"
if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$SRC" \
        >"$RUN/pip.log" 2>&1; then
    cat "$RUN/pip.log" >&2
    log "building uwcache failed"
    exit 1
fi

# ---- servers of our own, on unix sockets in a private directory ----
args=()
wait_socket() {  # path pid name
    for _ in $(seq 1 200); do
        [[ -S "$1" ]] && return 0
        kill -0 "$2" 2>/dev/null || { log "$3 exited at start"; return 1; }
        sleep 0.05
    done
    log "$3 did not create $1"
    return 1
}
if command -v redis-server >/dev/null; then
    redis-server --port 0 --unixsocket "$RUN/redis.sock" --unixsocketperm 700 --save '' --appendonly no \
        --dir "$RUN" --logfile "$RUN/redis.log" &
    pids+=($!)
    wait_socket "$RUN/redis.sock" "$!" redis-server && args+=(--redis-socket "$RUN/redis.sock")
fi
if command -v memcached >/dev/null; then
    mc_user=()
    [[ $(id -u) == 0 ]] && mc_user=(-u root)  # memcached refuses to run as root without -u
    memcached -s "$RUN/memcached.sock" -a 0700 -m 1024 -t 2 "${mc_user[@]}" >"$RUN/memcached.log" 2>&1 &
    pids+=($!)
    wait_socket "$RUN/memcached.sock" "$!" memcached && args+=(--memcached-socket "$RUN/memcached.sock")
fi

log "running the suite"
cd "$REPO"
"$VENV/bin/python" "$HERE/bench.py" "${args[@]}" --command "benchmarks/run.sh${*:+ $*}" "$@"
