"""An interactive shell in the guest over paramiko, with the local terminal in raw mode."""

from __future__ import annotations

import os
import select
import shutil
import sys
import termios
import tty

import paramiko


def interactive_shell(client: paramiko.SSHClient) -> int:
    transport = client.get_transport()
    assert transport is not None
    channel = transport.open_session()
    size = shutil.get_terminal_size()
    if sys.stdin.isatty():
        channel.get_pty(term=os.environ.get("TERM", "vt100"), width=size.columns,
                        height=size.lines)
    channel.invoke_shell()
    old = termios.tcgetattr(sys.stdin) if sys.stdin.isatty() else None
    try:
        if old is not None:
            tty.setraw(sys.stdin.fileno())
        while True:
            readable, _, _ = select.select([channel, sys.stdin], [], [])
            if channel in readable:
                data = channel.recv(65536)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if sys.stdin in readable:
                data = os.read(sys.stdin.fileno(), 4096)
                if not data:
                    channel.shutdown_write()
                    continue
                channel.sendall(data)
    finally:
        if old is not None:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old)
    return channel.recv_exit_status()
