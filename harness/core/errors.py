"""Errors meant for people.

Every error the harness raises on purpose is a ``HarnessError``: its message is one
paragraph that says what was wrong, where (file:line, option, kernel) and what to do.
The CLI and the pytest plugin print that paragraph instead of a traceback.
"""

from __future__ import annotations


class HarnessError(Exception):
    """A failure with a message written for the user, never a traceback."""


class SpecError(HarnessError):
    """A kernel spec, image spec, option or file given by the user is malformed."""


class KernelNotFound(HarnessError):
    """The requested kernel is not in the archive or not on disk."""


class ToolMissing(HarnessError):
    """A host program the harness needs is not installed."""


class CacheCorrupt(HarnessError):
    """A cache entry failed verification (it is rebuilt, and this says why)."""


class VMError(HarnessError):
    """The VM failed to start, answer or stop.

    Carries what was run and the last lines the guest printed, so that the message alone
    says why without the console log.
    """

    def __init__(self, message: str, *, command: list[str] | None = None,
                 console_tail: str = "", exitcode: int | None = None) -> None:
        self.command = command or []
        self.console_tail = console_tail
        self.exitcode = exitcode
        parts = [message]
        if exitcode is not None:
            parts.append(f"QEMU exit status: {exitcode}.")
        if self.command:
            parts.append("Command: " + " ".join(self.command))
        if console_tail.strip():
            parts.append("Last console lines:\n" + console_tail.rstrip())
        super().__init__("\n".join(parts))


class BootTimeout(VMError):
    """The guest did not become ready before its deadline."""


class GuestDied(VMError):
    """The QEMU process ended, or the guest stopped answering, while in use."""


class GuestCommandError(HarnessError):
    """A command run in the guest exited non-zero where success was required."""

    def __init__(self, command: str, status: int, stdout: str, stderr: str) -> None:
        self.command = command
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"guest command failed with status {status}: {command}\n"
            f"stdout: {stdout.strip()[-2000:]}\nstderr: {stderr.strip()[-2000:]}"
        )


class StateError(HarnessError):
    """An object was used in a state that does not allow the call."""
