"""A throw-away second Unix user for the tests that check what another user can reach.

Both pieces need root (useradd, setuid). Where that is refused, the fixture skips with a
printed reason (pytest -rs lists it), as do the PID-namespace tests where
unshare is refused; nothing else in the suite skips."""
from __future__ import annotations

import os
import pwd
import subprocess
import sys
from typing import Callable, Iterator, Optional, Tuple

import pytest

User = Tuple[int, int]


def throwaway_user(prefix: str) -> Iterator[User]:
    """Create a local user with useradd, yield its (uid, gid), remove it afterwards."""
    if os.geteuid() != 0:
        print("SKIP REASON: creating a second user needs root (useradd)")
        pytest.skip("creating a second user needs root (useradd)")
    name = f"{prefix}{os.getpid() % 100000}"
    made = subprocess.run(["useradd", "--no-create-home", "--system", "--shell", "/usr/sbin/nologin", name],
                          capture_output=True, text=True)
    if made.returncode not in (0, 9):  # 9: already exists (a leftover of a killed run)
        print(f"SKIP REASON: useradd refused: {made.stderr.strip()}")
        pytest.skip(f"useradd refused: {made.stderr.strip()}")
    try:
        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def exit_code_as(user: User, func: Callable[[], Optional[int]]) -> int:
    """Run func() in a forked child with the user's ids; its return value (None = 0) is the
    child's exit code, an exception is printed and gives 1."""
    uid, gid = user
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 99
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            code = func() or 0
        except BaseException as exc:  # noqa: BLE001 - reported through the exit code
            print("step as the second user failed:", repr(exc), file=sys.stderr)
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
