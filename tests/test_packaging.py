"""Packaging: what a user of the package index gets (issue 12.6).

The release path is tested end to end: build the sdist from the source tree, check that it
carries what the tests need, build a wheel from that sdist and repair it to a manylinux tag
with auditwheel (docs/releasing.md).
"""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_has_no_relative_links():
    """The README is the package index page, where a relative link or image is broken."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)", text) + re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, re.M)
    relative = [t for t in targets if not re.match(r"https?://", t)]
    assert relative == [], f"README.md has links that break on the package index: {relative}"


def test_setup_py_refuses_old_pythons_with_a_clear_message():
    code = "import sys; sys.version_info = (3, 8, 18, 'final', 0); sys.argv = ['setup.py', '--version']; " \
           "exec(compile(open('setup.py').read(), 'setup.py', 'exec'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "uwcache requires Python 3.9 or newer; this is Python 3.8" in done.stderr


def test_metadata_declares_pythons_and_urls():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.9"' in text
    for minor in range(9, 14):
        assert f'"Programming Language :: Python :: 3.{minor}"' in text
    urls = re.search(r"^\[project\.urls\]\n((?:.+\n)+)", text, re.M).group(1)
    assert all(re.search(r'= "https://[^"]+"$', line) for line in urls.splitlines() if not line.startswith("#"))


@pytest.mark.slow
def test_sdist_then_manylinux_wheel(tmp_path):
    if shutil.which("patchelf") is None:
        pytest.fail("patchelf is missing: apt-get install patchelf (auditwheel repair needs it)")
    python = sys.executable
    build = subprocess.run([python, "-m", "build", "--sdist", "--outdir", str(tmp_path / "sdist"), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (sdist,) = (tmp_path / "sdist").glob("uwcache-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("engine/cache.c", "engine/cache.h", "engine/hash.c", "src/uwcache/_enginemodule.c",
                   "src/uwcache/_cache_type.c", "src/uwcache/_compat.c", "src/uwcache/_engine_binding.h",
                   "src/uwcache/_engine.pyi", "src/uwcache/py.typed", "tests/conftest.py", "tests/oracle.py",
                   "tests/test_docs.py", "docs/guide.md", "examples/flask_app/app.py", "README.md", "LICENSE",
                   "setup.py", "pyproject.toml"):
        assert needed in names, f"the sdist lacks {needed}"

    # a wheel built from the sdist, as pip builds it (isolated, with pyproject's build requirements)
    wheel_dir = tmp_path / "wheel"
    built = subprocess.run([python, "-m", "pip", "wheel", "--no-deps", "-w", str(wheel_dir),
                            str(sdist)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheel_dir.glob("uwcache-*.whl")
    assert wheel.name.endswith("_x86_64.whl") or wheel.name.endswith("_aarch64.whl")
    assert "-linux_" in wheel.name  # a plain build carries the local tag, which PyPI refuses

    auditwheel = [python, "-m", "auditwheel"]
    repaired_dir = tmp_path / "wheelhouse"
    repaired = subprocess.run([*auditwheel, "repair", "-w", str(repaired_dir), str(wheel)],
                              capture_output=True, text=True, timeout=300)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    (fixed,) = repaired_dir.glob("uwcache-*.whl")
    assert re.search(r"-manylinux_2_\d+_(x86_64|aarch64)\.whl$", fixed.name), fixed.name
    with zipfile.ZipFile(fixed) as z:
        files = z.namelist()
    assert any(re.match(r"uwcache/_engine\.cpython-.*\.so$", f) for f in files)
    assert "uwcache/py.typed" in files and "uwcache/_engine.pyi" in files
    assert not any(f.startswith("uwcache.libs/") for f in files)  # nothing but libc: no library grafted
    # and it still imports: install it into a throwaway target and use it
    target = tmp_path / "site"
    installed = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--target", str(target), str(fixed)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    env = dict(os.environ, PYTHONPATH=str(target))
    check = subprocess.run([python, "-c", "import uwcache; c = uwcache.open_cache('w', namespace='wheel-check'); "
                            "c.set('k', 'v'); print(uwcache.__file__, c.get('k'))"],
                           capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=60)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(str(target)) and "b'v'" in check.stdout
