"""A one-file Django project whose gunicorn workers share one uwcache cache: a cached page
(``cache_page``), a hit counter and a small key/value API.

Run it (from this directory)::

    pip install "uwcache[django]" gunicorn
    gunicorn -w 4 -b 127.0.0.1:8000 app:application

In a real project the ``CACHES`` block below goes into ``settings.py`` unchanged. The
``X-Worker`` header says which worker answered.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    SECRET_KEY="example-only-not-a-secret",
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[f"{__name__}.worker_header"],
    CACHES={
        "default": {
            "BACKEND": "uwcache.contrib.django.UWCache",
            "LOCATION": "example-django",  # the shared cache's name (namespace: $UWCACHE_NAMESPACE)
            "TIMEOUT": 300,
            # every worker must use the same geometry: it is the layout of the shared memory
            "OPTIONS": {"max_items": 1000, "block_size": 4096, "full_purge_lru": True},
        }
    },
)
django.setup()

from django.core.cache import cache  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.cache import cache_page  # noqa: E402


def worker_header(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response["X-Worker"] = str(os.getpid())
        return response

    return middleware


@cache_page(60)
def home(request: HttpRequest) -> HttpResponse:
    # Rendered by one worker; the others serve this response from shared memory.
    return HttpResponse(f"<h1>uwcache example</h1><p>rendered by worker {os.getpid()} at {time.time():.6f}</p>")


def hit(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    cache.add("hits", 0, timeout=None)  # Django's incr needs the key: create it once
    return JsonResponse({"hits": cache.incr("hits")})  # one atomic engine operation


def hits(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"hits": cache.get("hits", 0)})


def value(request: HttpRequest, name: str) -> HttpResponse:
    if request.method == "PUT":
        cache.set(f"value:{name}", request.body.decode())
        return JsonResponse({"stored": name})
    stored = cache.get(f"value:{name}")
    if stored is None:
        return JsonResponse({"error": "not found"}, status=404)
    return JsonResponse({"value": stored})


urlpatterns = [
    path("", home),
    path("hit", hit),
    path("hits", hits),
    path("values/<str:name>", value),
]

application = get_wsgi_application()
