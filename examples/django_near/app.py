"""A one-file Django project in front of Redis, with this host's uwcache L1 in front of
that: ``uwcache.contrib.django.NearCache`` reads and writes django-redis's format, so the
same Redis can also be used by django-redis deployments elsewhere.

Run it (from this directory, with a Redis at $REDIS_URL)::

    pip install "uwcache[django,near]" gunicorn
    REDIS_URL=redis://127.0.0.1:6379/0 gunicorn -c gunicorn.conf.py -w 4 -b 127.0.0.1:8000 app:application

gunicorn.conf.py starts the node (the host's invalidation listener) in the gunicorn master.
"""
from __future__ import annotations

import os
import time

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    SECRET_KEY="example-only-not-a-secret",
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    CACHES={
        "default": {
            "BACKEND": "uwcache.contrib.django.NearCache",
            "LOCATION": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "TIMEOUT": 300,
            "OPTIONS": {"CACHE": "django-near"},  # the uwcache cache gunicorn.conf.py put in front
        }
    },
)
django.setup()

from django.core.cache import cache  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.cache import cache_page  # noqa: E402


@cache_page(60)
def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"<h1>near cache example</h1><p>rendered by worker {os.getpid()} at {time.time():.6f}</p>")


def value(request: HttpRequest, name: str) -> HttpResponse:
    if request.method == "PUT":
        cache.set(f"value:{name}", request.body.decode())
        return JsonResponse({"stored": name})
    stored = cache.get(f"value:{name}")
    if stored is None:
        return JsonResponse({"error": "not found"}, status=404)
    return JsonResponse({"value": stored, "worker": os.getpid()})


def stats(request: HttpRequest) -> HttpResponse:
    return JsonResponse(cache.near.stats())


urlpatterns = [path("", home), path("values/<str:name>", value), path("stats", stats)]
application = get_wsgi_application()
