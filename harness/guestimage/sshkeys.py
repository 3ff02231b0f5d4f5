"""The SSH key pair the harness logs in with and the guest's host key.

Both are generated once per cache (never committed, never a password): the client key is
put into the guest's authorized_keys, and the host key is pinned so that paramiko rejects
any other server on the forwarded port.

The key types are the cheapest pair measured for the guest's dropbear under TCG, where
every cold boot pays for one handshake: an ECDSA P-256 host key and an RSA client key took
114-126 ms of key exchange and authentication, against 150-163 ms for an Ed25519 host key
with any client key (dropbear 2022.83, Debian 7.3 guest, medians of 5-7 connections).
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.core import cache
from harness.core.errors import ToolMissing


@dataclass(frozen=True)
class GuestKeys:
    client_key: Path  # private key, PEM (paramiko RSA)
    client_public: str  # "ssh-rsa AAAA... harness"
    host_key: Path  # dropbear-format private host key for the guest
    host_public: str  # "ecdsa-sha2-nistp256 AAAA..."


def _build(out: Path) -> dict[str, object]:
    client = paramiko.RSAKey.generate(bits=2048)
    client.write_private_key_file(str(out / "client_key"))
    (out / "client_key.pub").write_text(f"{client.get_name()} {client.get_base64()} harness\n")
    try:
        subprocess.run(["dropbearkey", "-t", "ecdsa", "-s", "256", "-f", str(out / "host_key")],
                       check=True, capture_output=True)
        public = subprocess.run(["dropbearkey", "-y", "-f", str(out / "host_key")],
                                check=True, capture_output=True, text=True).stdout
    except FileNotFoundError as exc:
        raise ToolMissing("dropbearkey is not installed (Debian package dropbear-bin); "
                          "run `make deps`") from exc
    line = next(ln for ln in public.splitlines() if ln.startswith(("ssh-", "ecdsa-")))
    (out / "host_key.pub").write_text(" ".join(line.split()[:2]) + "\n")
    return {}


def guest_keys() -> GuestKeys:
    entry = cache.get_or_build("ssh", "keys-v2", _build)
    (entry / "client_key").chmod(0o600)
    return GuestKeys(entry / "client_key", (entry / "client_key.pub").read_text().strip(),
                     entry / "host_key", (entry / "host_key.pub").read_text().strip())


@functools.cache
def client_pkey(path: Path) -> paramiko.PKey:
    """The client key at ``path``, loaded once per process: loading an RSA key checks it,
    about 60 ms of host time that would otherwise come between every guest's ready marker
    and its first connect."""
    return paramiko.PKey.from_path(path)
