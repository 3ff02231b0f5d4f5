"""How the harness ends when asked to: one policy for the command line and the plugin.

- Ctrl-C (SIGINT) raises KeyboardInterrupt, and every VM, disk image and temporary
  directory is removed on the way out (exit 130).
- A harness started with SIGINT *ignored* keeps it ignored. That is what a shell does to a
  background job (``cmd &``, ``nohup``) so that Ctrl-C at the terminal reaches only the
  foreground; the harness honours the parent's choice instead of re-arming it.
- SIGTERM (what ``kill``, CI runners and timeouts send) always takes the same clean path
  as Ctrl-C, whatever the SIGINT disposition (exit 143).
- SIGKILL cannot be caught: QEMU still dies with the harness (PR_SET_PDEATHSIG), but
  temporary files may remain under $TMPDIR.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is so that every ``finally`` runs. A
    KeyboardInterrupt, so that the paths that clean up after Ctrl-C clean up after it too."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated("terminated by SIGTERM")


def install_sigterm_cleanup() -> bool:
    """Turn SIGTERM into Terminated in this process. Only from the main thread, and only
    where nobody else has claimed SIGTERM; returns whether it was installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return False
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True
