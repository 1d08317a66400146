"""Run a function in forked children, the way gunicorn workers share a cache after fork."""
import os
import signal
import time
from typing import Callable, List


def run_in_forks(n: int, child: Callable[[int], object]) -> List[int]:
    """Fork n children that each run ``child(i)``; return their exit codes (0 = returned
    something other than False, 1 = raised, 2 = returned False). Never returns in a child."""
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 2 if child(i) is False else 0
            finally:
                os._exit(code)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def wait_child(pid: int, timeout: float, hung: str = "a lock was not recovered") -> int:
    """Reap child `pid` and return its wait status; SIGKILL it and fail the test when it has
    not finished within `timeout` seconds (a hang is the failure these tests look for)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish within {timeout} s ({hung})")
