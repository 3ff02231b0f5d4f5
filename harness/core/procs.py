"""Processes the harness starts, owned by pid, never outliving it.

Every child gets PR_SET_PDEATHSIG(SIGKILL) so that it dies with the harness even when the
harness is killed with SIGKILL; the ones still registered at interpreter exit are killed
too. Nothing here ever signals a process the harness did not start.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import threading

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_owned: dict[int, str] = {}
_lock = threading.Lock()


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the thread that forked it exits."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def register(pid: int, name: str) -> None:
    with _lock:
        _owned[pid] = name


def unregister(pid: int) -> None:
    with _lock:
        _owned.pop(pid, None)


def owned() -> dict[int, str]:
    with _lock:
        return dict(_owned)


def _kill_owned() -> None:
    for pid in owned():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        unregister(pid)


atexit.register(_kill_owned)
