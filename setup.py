"""The C extension is declared here, in one place; all other metadata is in pyproject.toml."""
import sys

# pyproject's requires-python stops pip; this stops everything else (setup.py run by hand,
# --ignore-requires-python, very old pip) before a compiler error or a confusing traceback.
# Kept to syntax that Python 2.7 can parse, so the message is what anyone sees.
if sys.version_info < (3, 9):
    sys.exit(
        "uwcache requires Python 3.9 or newer; this is Python %d.%d (%s).\n"
        "Install it with a newer interpreter, e.g. python3.11 -m pip install uwcache"
        % (sys.version_info[0], sys.version_info[1], sys.executable)
    )

from setuptools import Extension, setup  # noqa: E402

engine = Extension(
    "uwcache._engine",
    sources=[
        "src/uwcache/_enginemodule.c",
        "src/uwcache/_cache_type.c",
        "src/uwcache/_compat.c",
        "engine/cache.c",
        "engine/hash.c",
    ],
    include_dirs=["engine"],
    depends=["engine/cache.h", "engine/hash.h", "src/uwcache/_engine_binding.h"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-fvisibility=hidden"],
    libraries=["pthread"],
)

setup(ext_modules=[engine])
