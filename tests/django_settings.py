"""The minimal Django settings the framework tests share (a locmem default cache, no apps)."""
import django
from django.conf import settings


def configure() -> None:
    """Configure Django once per process; later calls (other test modules) change nothing."""
    if not settings.configured:
        settings.configure(
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            INSTALLED_APPS=[], USE_TZ=True, SECRET_KEY="tests", ALLOWED_HOSTS=["testserver"],
        )
        django.setup()
