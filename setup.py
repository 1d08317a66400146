"""The C extension is declared here, in one place; all other metadata is in pyproject.toml."""
from setuptools import Extension, setup

engine = Extension(
    "uwcache._engine",
    sources=[
        "src/uwcache/_enginemodule.c",
        "src/uwcache/_engine/cache.c",
        "src/uwcache/_engine/hash.c",
    ],
    include_dirs=["src/uwcache/_engine"],
    depends=["src/uwcache/_engine/cache.h"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    libraries=["pthread"],
)

setup(ext_modules=[engine])
