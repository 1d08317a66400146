"""Shared fixtures: every test run gets its own shared-memory directory, every test its own
namespace, so tests never see each other's caches (nor a developer's real ones)."""
import itertools
import os
import shutil
import sys
import tempfile

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:  # `import oracle`, `import helpers` from any test module
    sys.path.insert(0, TESTS_DIR)

# Set before uwcache is imported anywhere, and inherited by every subprocess a test starts.
_SHM_ROOT = tempfile.mkdtemp(prefix="uwcache-tests-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
os.environ["UWCACHE_SHM_DIR"] = _SHM_ROOT
os.environ.pop("UWCACHE_NAMESPACE", None)

_counter = itertools.count()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "uwsgi: runs real uWSGI (the test oracle); fails, never skips, when uwsgi is missing",
    )
    config.addinivalue_line("markers", "slow: takes more than a few seconds (multi-process, sleeps)")


def pytest_unconfigure(config):
    shutil.rmtree(_SHM_ROOT, ignore_errors=True)


@pytest.fixture
def namespace():
    """A namespace no other test uses."""
    return f"t{os.getpid()}-{next(_counter)}"


@pytest.fixture
def shm_dir():
    return _SHM_ROOT


@pytest.fixture(scope="session")
def uwsgi_bin():
    """Path of the real uwsgi executable (see oracle.find_uwsgi); fails the test with an
    install hint when it is missing (uWSGI tests must not be skipped silently)."""
    import oracle

    try:
        return oracle.find_uwsgi()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
