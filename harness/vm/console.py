"""The guest's serial console: QEMU runs under pexpect, a thread drains its output.

QEMU's stdout is the serial port (and its stderr lands there too, so a QEMU error such as
``KVM internal error`` is seen in the same stream). A reader thread copies everything to
the per-VM log file and a buffer, so the pty never fills and stalls the guest, and waits
scan the buffer from an offset with a deadline.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pexpect

from harness.core import procs
from harness.core.deadline import Deadline

MAX_BUFFER = 8 << 20  # keep the newest 8 MiB in memory; the log file keeps everything


class Console:
    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self._text = ""
        self._dropped = 0  # characters dropped from the front of the buffer
        self._cond = threading.Condition()
        # pexpect reaps QEMU with waitpid() both in isalive() and, at EOF, inside
        # read_nonblocking(): the reader thread and the caller must not race there (the
        # loser gets ECHILD, "did someone else call waitpid()?").
        self._child_lock = threading.Lock()
        self.child = pexpect.spawn(argv[0], argv[1:], echo=False, timeout=None,
                                   preexec_fn=procs.die_with_parent, dimensions=(50, 200))
        procs.register(self.child.pid, "qemu")
        self._ended = False
        self._thread = threading.Thread(target=self._pump, name=f"console-{self.child.pid}",
                                        daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return int(self.child.pid)

    def _pump(self) -> None:
        while True:
            try:
                with self._child_lock:
                    data = self.child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError, ValueError):
                break
            self._log.write(data)
            self._log.flush()
            with self._cond:
                self._text += data.decode("utf-8", errors="replace").replace("\r\n", "\n")
                if len(self._text) > MAX_BUFFER:
                    cut = len(self._text) - MAX_BUFFER
                    self._text = self._text[cut:]
                    self._dropped += cut
                self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        self._log.close()

    @property
    def ended(self) -> bool:
        return self._ended

    def wait_ended(self, seconds: float) -> bool:
        """Until QEMU's output ends (its last words read), at most ``seconds``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._ended, timeout=seconds)

    def offset(self) -> int:
        """An absolute position in the console stream, for ``since``."""
        with self._cond:
            return self._dropped + len(self._text)

    def since(self, offset: int) -> str:
        with self._cond:
            return self._text[max(0, offset - self._dropped):]

    def tail(self, lines: int = 30) -> str:
        with self._cond:
            return "\n".join(self._text.splitlines()[-lines:])

    def wait_for(self, patterns: list[str], deadline: Deadline,
                 start: int = 0) -> tuple[int, re.Match[str]] | None:
        """Wait until one of the regexes appears after ``start``; (index, match) or None.

        Returns None when the deadline passes or QEMU's output ends first.
        """
        compiled = [re.compile(p, re.MULTILINE) for p in patterns]
        with self._cond:
            while True:
                text = self._text[max(0, start - self._dropped):]
                for index, regex in enumerate(compiled):
                    match = regex.search(text)
                    if match:
                        return index, match
                if self._ended or deadline.expired():
                    return None
                self._cond.wait(min(0.5, deadline.remaining()))

    def alive(self) -> bool:
        """Whether QEMU still runs (reaping it if it has ended)."""
        with self._child_lock:
            try:
                return bool(self.child.isalive())
            except pexpect.ExceptionPexpect:  # already reaped: it has ended
                return False

    def exitstatus(self) -> int | None:
        """QEMU's exit status once it has ended (negative: killed by that signal)."""
        if self.alive():
            return None
        if self.child.signalstatus is not None:
            return -int(self.child.signalstatus)
        return int(self.child.exitstatus) if self.child.exitstatus is not None else None

    def kill(self) -> None:
        if self.alive():
            self.child.kill(9)
        self.close()

    def close(self) -> None:
        with self._child_lock:
            try:
                self.child.close(force=True)
            except pexpect.ExceptionPexpect:
                pass
        procs.unregister(self.child.pid)
        self._thread.join(timeout=5)
