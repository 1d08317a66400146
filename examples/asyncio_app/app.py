"""An asyncio (Starlette) app whose uvicorn workers share one uwcache cache: a cached page
made by a memoized ``async def``, a hit counter and a small key/value API.

Run it (from this directory)::

    pip install uwcache uvicorn starlette
    uvicorn --workers 4 --host 127.0.0.1 --port 8000 app:app

Each uvicorn worker is a separate process with its own event loop; all of them read and write
the same shared-memory cache. Cache calls are plain function calls of about a microsecond or
less that never wait on I/O, so they are made right in the ``async`` endpoints: no thread
pool, no ``await``. FastAPI is Starlette underneath: the same code works in its endpoints.
The ``X-Worker`` header says which worker answered.
"""
from __future__ import annotations

import asyncio
import os
import time

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from uwcache import LazyCache
from uwcache.memoize import memoize

# Opened in each worker on first use (uvicorn imports this module in every worker). Every
# worker must give the same geometry: it is the layout of the shared memory.
cache = LazyCache("asyncio-example", max_items=1000, block_size=4096, full_purge_lru=True)


@memoize(cache, expires=60)
async def render_home() -> str:
    # Runs in one worker; the other workers get these exact bytes from shared memory.
    await asyncio.sleep(0.05)  # stands for a slow query
    return f"<h1>uwcache example</h1><p>rendered by worker {os.getpid()} at {time.time():.6f}</p>"


async def home(request: Request) -> Response:
    return HTMLResponse(await render_home())


async def hit(request: Request) -> Response:
    return JSONResponse({"hits": cache.get().incr("hits")})  # atomic across all workers


async def hits(request: Request) -> Response:
    return JSONResponse({"hits": cache.get().get_int("hits", 0)})


async def put_value(request: Request) -> Response:
    name = request.path_params["name"]
    cache.get().set(f"value:{name}", await request.body())
    return JSONResponse({"stored": name})


async def get_value(request: Request) -> Response:
    value = cache.get().get(f"value:{request.path_params['name']}")
    if value is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse({"value": value.decode()})


async def tag_worker(request: Request, call_next):  # type: ignore[no-untyped-def]
    response = await call_next(request)
    response.headers["X-Worker"] = str(os.getpid())
    return response


app = Starlette(
    routes=[
        Route("/", home),
        Route("/hit", hit, methods=["POST"]),
        Route("/hits", hits),
        Route("/values/{name}", put_value, methods=["PUT"]),
        Route("/values/{name}", get_value, methods=["GET"]),
    ],
    middleware=[Middleware(BaseHTTPMiddleware, dispatch=tag_worker)],
)
