"""SSH into the guest with paramiko: key-only, host key pinned, loopback only."""

from __future__ import annotations

import base64
import logging
import re
import secrets
import time
from dataclasses import dataclass

import paramiko

from harness.core.deadline import Deadline
from harness.guestimage.sshkeys import GuestKeys, client_pkey

# paramiko logs every refused connection while sshd is still starting as a traceback; the
# retry loop below reports the last error itself if the deadline passes.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class CommandResult:
    command: str
    status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 0


class CommandTimeout(Exception):
    """The guest command did not finish before its deadline."""


class SSHRefused(Exception):
    """The guest's sshd answered but rejected our key, or offered another host key."""


def _host_key(public: str) -> paramiko.PKey:
    kind, blob = public.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


class ShellSession:
    """One long-lived guest shell that runs commands one after another.

    Opening an SSH channel and having sshd fork a shell costs 60-90 ms per command under
    TCG; writing the command to a shell that is already running costs a few. Each command
    runs in a subshell (so ``exit`` and ``cd`` stay inside it) with stdin from /dev/null,
    and ends with a random token and its status on stdout and the token on stderr, so both
    streams are complete when both tokens have arrived.
    """

    def __init__(self, transport: paramiko.Transport, timeout: float) -> None:
        self.channel = transport.open_session(timeout=timeout)
        # A shell request with no terminal: dropbear starts root's login shell reading the
        # channel (non-interactive, no prompt). An exec request ("exec /bin/sh") would
        # start the login shell to run that and then a second shell: one exec more, about
        # 27 ms of every VM's first command under TCG.
        self.channel.invoke_shell()
        self.channel.settimeout(0.002)

    def run(self, command: str, deadline: Deadline) -> tuple[int, bytes, bytes]:
        token = secrets.token_hex(8)
        quoted = command.replace("'", "'\\''")
        script = (f"( eval '{quoted}' ) </dev/null; __rc=$?; "
                  f"printf '\\036{token} %d\\036\\n' $__rc; printf '\\036{token}\\036\\n' >&2\n")
        self.channel.sendall(script.encode())
        end_out = re.compile(rb"\x1e" + token.encode() + rb" (\d+)\x1e\n$")
        end_err = b"\x1e" + token.encode() + b"\x1e\n"
        out, err = bytearray(), bytearray()
        status: int | None = None
        err_done = False
        while status is None or not err_done:
            while self.channel.recv_stderr_ready():
                err += self.channel.recv_stderr(65536)
            if not err_done and err.endswith(end_err):
                del err[-len(end_err):]
                err_done = True
            if status is None:
                try:
                    chunk = self.channel.recv(65536)
                except TimeoutError:
                    chunk = None
                if chunk == b"":
                    raise ConnectionError("the guest shell session ended")
                if chunk:
                    out += chunk
                    match = end_out.search(out[-64:])
                    if match:
                        status = int(match.group(1))
                        del out[len(out) - len(match.group(0)):]
            elif not err_done:
                time.sleep(0.001)
            if deadline.expired() and (status is None or not err_done):
                raise CommandTimeout(f"{command!r} did not finish in {deadline.seconds:.0f} s")
        return status, bytes(out), bytes(err)

    def close(self) -> None:
        self.channel.close()


class GuestSSH:
    def __init__(self, port: int, keys: GuestKeys, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.keys = keys
        self.pkey = client_pkey(keys.client_key)
        self.client: paramiko.SSHClient | None = None
        self._shell: ShellSession | None = None

    def connect(self, deadline: Deadline) -> None:
        """Connect, retrying while the guest's sshd is not up yet, until the deadline."""
        pkey = self.pkey
        last: Exception | None = None
        # The guest prints its ready marker once sshd listens, so the first try normally
        # succeeds; the retries are for a guest whose sshd is not up (a kernel or image
        # that boots differently), with short waits: a refused connect costs next to nothing.
        delay = 0.02
        while not deadline.expired():
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[{self.host}]:{self.port}",
                                       self.keys.host_public.split()[0],
                                       _host_key(self.keys.host_public))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                timeout = max(1.0, min(10.0, deadline.remaining()))
                client.connect(self.host, self.port, username="root", pkey=pkey,
                               look_for_keys=False, allow_agent=False, timeout=timeout,
                               banner_timeout=timeout, auth_timeout=timeout)
                transport = client.get_transport()
                assert transport is not None
                transport.set_keepalive(5)
                self.client = client
                return
            except (paramiko.AuthenticationException, paramiko.BadHostKeyException) as exc:
                # sshd answered and said no: waiting will not change its mind.
                client.close()
                raise SSHRefused(f"the guest's sshd on {self.host}:{self.port} refused the "
                                 f"harness: {exc}") from exc
            except (paramiko.SSHException, OSError, EOFError) as exc:
                last = exc
                client.close()
                time.sleep(min(delay, deadline.remaining()))
                delay = min(delay * 2, 0.1)
        raise TimeoutError(f"SSH to {self.host}:{self.port} did not come up: {last}")

    def _transport(self) -> paramiko.Transport:
        if self.client is None:
            raise RuntimeError("SSH is not connected")
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionError("the SSH connection to the guest is closed")
        return transport

    def run(self, command: str, timeout: float, stdin: bytes | None = None) -> CommandResult:
        """Run ``command`` with ``sh``; stdin data goes through a channel of its own."""
        if stdin is not None:
            return self.run_channel(command, timeout, stdin)
        start = time.monotonic()
        deadline = Deadline(timeout)
        if self._shell is None:
            self._shell = ShellSession(self._transport(), timeout)
        try:
            status, out, err = self._shell.run(command, deadline)
        except BaseException:
            # A command that timed out (or a ^C) leaves the shell mid-command: drop it.
            self._shell.close()
            self._shell = None
            raise
        return CommandResult(command, status, out.decode(errors="replace"),
                             err.decode(errors="replace"), time.monotonic() - start)

    def run_channel(self, command: str, timeout: float,
                    stdin: bytes | None = None) -> CommandResult:
        """Run ``command`` on a fresh exec channel (slower; needed to feed stdin)."""
        transport = self._transport()
        start = time.monotonic()
        deadline = Deadline(timeout)
        channel = transport.open_session(timeout=timeout)
        try:
            channel.exec_command(command)
            if stdin is not None:
                # The guest takes the data as fast as it can: under TCG on a busy host its
                # window can stay full for seconds. Only the command's deadline bounds that
                # (a short timeout here once made a slow upload look like a dead guest).
                channel.settimeout(max(0.1, deadline.remaining()))
                try:
                    channel.sendall(stdin)
                except TimeoutError as exc:
                    raise CommandTimeout(f"{command!r} did not take its {len(stdin)} bytes of "
                                         f"input in {timeout:.0f} s") from exc
            channel.shutdown_write()
            channel.settimeout(0.2)  # the loop below polls
            out, err = bytearray(), bytearray()
            while True:
                got = False
                while channel.recv_ready():
                    out += channel.recv(65536)
                    got = True
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    got = True
                if channel.exit_status_ready() and not channel.recv_ready() \
                        and not channel.recv_stderr_ready():
                    break
                if deadline.expired():
                    raise CommandTimeout(f"{command!r} did not finish in {timeout:.0f} s")
                if not got:
                    try:
                        chunk = channel.recv(65536)
                        out += chunk
                        if not chunk and channel.exit_status_ready():
                            break
                    except TimeoutError:
                        pass
            status = channel.recv_exit_status()
        finally:
            channel.close()
        return CommandResult(command, status, out.decode(errors="replace"),
                             err.decode(errors="replace"), time.monotonic() - start)

    def open_stream(self, command: str, timeout: float) -> paramiko.Channel:
        """A channel running ``command`` for a line-based conversation (the caller owns it)."""
        channel = self._transport().open_session(timeout=timeout)
        channel.exec_command(command)
        channel.settimeout(timeout)
        return channel

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close()
            self._shell = None
        if self.client is not None:
            self.client.close()
            self.client = None
