"""The C extension is declared here, in one place; all other metadata is in pyproject.toml."""
from setuptools import Extension, setup

engine = Extension(
    "uwcache._engine",
    sources=[
        "src/uwcache/_enginemodule.c",
        "engine/cache.c",
        "engine/hash.c",
    ],
    include_dirs=["engine"],
    depends=["engine/cache.h", "engine/hash.h"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    libraries=["pthread"],
)

setup(ext_modules=[engine])
