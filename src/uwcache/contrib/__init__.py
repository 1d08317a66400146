"""Integrations with the frameworks people use (Django, Flask-Caching, cachelib)."""
