# ---------------------------------------------------------------------------
# uWSGI oracle harness (tests/oracle.py): `uwsgi` marker and `uwsgi_bin` fixture
# ---------------------------------------------------------------------------
import os as _oracle_os
import sys as _oracle_sys

import pytest as _oracle_pytest

# make `import oracle` work from every test module, whatever the rootdir/import mode
_ORACLE_TESTS_DIR = _oracle_os.path.dirname(_oracle_os.path.abspath(__file__))
if _ORACLE_TESTS_DIR not in _oracle_sys.path:
    _oracle_sys.path.insert(0, _ORACLE_TESTS_DIR)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "uwsgi: runs real uWSGI (the test oracle); fails, never skips, when uwsgi is missing",
    )


@_oracle_pytest.fixture(scope="session")
def uwsgi_bin():
    """Path of the real uwsgi executable (see oracle.find_uwsgi); fails the test with an
    install hint when it is missing (uWSGI tests must not be skipped silently)."""
    import oracle

    try:
        return oracle.find_uwsgi()
    except RuntimeError as e:
        _oracle_pytest.fail(str(e), pytrace=False)
