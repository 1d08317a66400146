"""The package's public names, and what importing it costs a process that only attaches."""
import json
import os
import subprocess
import sys

import uwcache

# Frozen: removing or renaming a public name is a breaking change; adding one means
# adding it here too.
PUBLIC = [
    "Cache", "CacheClosed", "CacheError", "CacheFull", "CacheOptions", "Caching", "ConfigError",
    "CorruptStore", "EmptyValue", "KeyTooLong", "LazyCache", "Node", "NotAnInteger", "PreloadFile",
    "PreloadItem", "RegionMismatch", "RemoteCache", "RemoteError", "RemoteUnavailable", "SharedMemoryFull",
    "UnknownCache",
    "ValueTooLarge", "attach", "import_uwsgi_store", "install_uwsgi_module", "format_cache2", "list_caches", "memoize",
    "near", "open_cache", "parse_cache2", "__version__",
]


def _run(code: str) -> dict:
    src = os.path.dirname(os.path.dirname(uwcache.__file__))
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_all_is_frozen_and_every_name_resolves():
    assert sorted(uwcache.__all__) == sorted(PUBLIC)
    names = _run(
        "import json, uwcache\n"
        "ns = {}\n"
        "exec('from uwcache import ' + ', '.join(n for n in uwcache.__all__), ns)\n"
        "print(json.dumps({n: type(ns[n]).__name__ for n in uwcache.__all__}))"
    )
    assert set(names) == set(PUBLIC)
    assert names["memoize"] == "function" and names["attach"] == "function"
    assert names["Cache"] == names["Node"] == names["RemoteCache"] == "type"
    assert names["__version__"] == "str"
    for n in PUBLIC:
        assert getattr(uwcache, n) is not None
    assert set(PUBLIC) <= set(dir(uwcache))
    with __import__("pytest").raises(AttributeError, match="no attribute 'nope'"):
        uwcache.nope


def test_memoize_stays_the_decorator_after_its_module_is_imported():
    kinds = _run(
        "import json, uwcache, uwcache.memoize, uwcache.contrib\n"
        "from uwcache.memoize import LazyCache\n"
        "from uwcache import memoize\n"
        "print(json.dumps([type(uwcache.memoize).__name__, type(memoize).__name__, LazyCache is uwcache.LazyCache]))"
    )
    assert kinds == ["function", "function", True]


def test_attach_path_does_not_import_the_network_layer_or_memoize():
    loaded = _run(
        "import json, sys, uwcache\n"
        "uwcache.attach, uwcache.open_cache, uwcache.Cache, uwcache.CacheError\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('uwcache'))))"
    )
    assert "uwcache.cache" in loaded
    for heavy in ("uwcache.net", "uwcache.remote", "uwcache.memoize", "uwcache.node", "uwcache.cli",
                  "uwcache.wire", "uwcache.serializers"):
        assert heavy not in loaded, loaded


def test_bare_import_loads_only_the_errors():
    loaded = _run("import json, sys, uwcache\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('uwcache'))))")
    assert loaded == ["uwcache", "uwcache.errors"]


def test_attach_path_does_not_import_logging():
    # logging (with traceback, string, threading...) is a third of the attach path's import time
    loaded = _run("import json, sys, uwcache\nuwcache.attach\nprint(json.dumps('logging' in sys.modules))")
    assert loaded is False


def test_memoize_and_near_can_be_patched_like_any_attribute(monkeypatch):
    # the package keeps the functions when their submodules load, but a test's patch wins
    import uwcache.memoize  # noqa: F401  (binds the submodule: the function stays)
    import uwcache.near  # noqa: F401

    original = uwcache.memoize
    assert callable(original) and callable(uwcache.near)
    monkeypatch.setattr(uwcache, "memoize", "patched")
    monkeypatch.setattr(uwcache, "near", "patched too")
    assert (uwcache.memoize, uwcache.near) == ("patched", "patched too")
    monkeypatch.undo()
    assert uwcache.memoize is original and callable(uwcache.near)
