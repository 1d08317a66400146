"""A Flask app whose gunicorn workers share one uwcache cache: a cached page, a hit counter
and a small key/value API.

Run it (from this directory)::

    pip install "uwcache[flask]" gunicorn
    gunicorn -w 4 -b 127.0.0.1:8000 app:app

Every worker is a separate process; all of them read and write the same shared-memory cache,
so the page is rendered once for all of them and the counter is exact. The ``X-Worker``
header says which worker answered.
"""
from __future__ import annotations

import os
import time

from flask import Flask, Response, jsonify, request
from flask_caching import Cache

app = Flask(__name__)
app.config.update(
    CACHE_TYPE="uwcache.contrib.flask.UWCache",
    CACHE_UWCACHE_NAME="example",  # the shared cache's name (namespace: $UWCACHE_NAMESPACE)
    CACHE_DEFAULT_TIMEOUT=300,
    CACHE_KEY_PREFIX="example:",
    # every worker must use the same geometry: it is the layout of the shared memory
    CACHE_OPTIONS={"max_items": 1000, "block_size": 4096, "full_purge_lru": True},
)
cache = Cache(app)  # nothing is mapped until the first request, in each worker


@app.after_request
def tag_worker(response: Response) -> Response:
    response.headers["X-Worker"] = str(os.getpid())
    return response


@app.get("/")
@cache.cached(timeout=60)
def home() -> str:
    # Rendered by one worker; the others serve these exact bytes from shared memory.
    return f"<h1>uwcache example</h1><p>rendered by worker {os.getpid()} at {time.time():.6f}</p>"


@app.post("/hit")
def hit() -> Response:
    return jsonify(hits=cache.cache.inc("hits"))  # atomic across all workers


@app.get("/hits")
def hits() -> Response:
    return jsonify(hits=cache.get("hits") or 0)


@app.put("/values/<name>")
def put_value(name: str) -> Response:
    cache.set(f"value:{name}", request.get_data(as_text=True))
    return jsonify(stored=name)


@app.get("/values/<name>")
def get_value(name: str) -> tuple[Response, int]:
    value = cache.get(f"value:{name}")
    if value is None:
        return jsonify(error="not found"), 404
    return jsonify(value=value), 200
