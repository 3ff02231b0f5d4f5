"""The SSH key pair the harness logs in with and the guest's host key.

Both are generated once per cache (never committed, never a password): the client key is
put into the guest's authorized_keys, and the host key is pinned so that paramiko rejects
any other server on the forwarded port.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.core import cache
from harness.core.errors import ToolMissing


@dataclass(frozen=True)
class GuestKeys:
    client_key: Path  # private key, OpenSSH PEM (paramiko ECDSA)
    client_public: str  # "ecdsa-sha2-nistp256 AAAA... harness"
    host_key: Path  # dropbear-format private host key for the guest
    host_public: str  # "ssh-ed25519 AAAA..."


def _build(out: Path) -> dict[str, object]:
    client = paramiko.ECDSAKey.generate(bits=256)
    client.write_private_key_file(str(out / "client_key"))
    (out / "client_key.pub").write_text(f"{client.get_name()} {client.get_base64()} harness\n")
    try:
        subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(out / "host_key")],
                       check=True, capture_output=True)
        public = subprocess.run(["dropbearkey", "-y", "-f", str(out / "host_key")],
                                check=True, capture_output=True, text=True).stdout
    except FileNotFoundError as exc:
        raise ToolMissing("dropbearkey is not installed (Debian package dropbear-bin); "
                          "run `make deps`") from exc
    line = next(ln for ln in public.splitlines() if ln.startswith("ssh-"))
    (out / "host_key.pub").write_text(" ".join(line.split()[:2]) + "\n")
    return {}


def guest_keys() -> GuestKeys:
    entry = cache.get_or_build("ssh", "keys-v1", _build)
    (entry / "client_key").chmod(0o600)
    return GuestKeys(entry / "client_key", (entry / "client_key.pub").read_text().strip(),
                     entry / "host_key", (entry / "host_key.pub").read_text().strip())
