"""uwcache: uWSGI's caching framework as a standalone library (placeholder while the engine lands)."""
from .errors import *  # noqa: F401,F403
