"""Run a function in forked children, the way gunicorn workers share a cache after fork."""
import os
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
