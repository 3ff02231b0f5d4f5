from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.kernel.aptrepo import (
    Mirrors,
    PrivateApt,
    find_mirrors,
    parse_deb822,
    parse_one_line,
    parse_packages,
)

DEB822 = """\
Types: deb
# a comment line
URIs: file:///srv/mirror/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: file:///srv/mirror/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: file:///srv/disabled/
Suites: sid
Components: main
Enabled: no
"""


def test_mirrors_come_from_the_system_sources() -> None:
    mirrors = find_mirrors(parse_deb822(DEB822, "/etc/apt/sources.list.d/debian.sources"))
    assert mirrors.archive == "file:///srv/mirror/debian"
    assert mirrors.security == "file:///srv/mirror/debian-security"


def test_one_line_sources_are_read() -> None:
    entries = parse_one_line("deb [signed-by=/k.gpg] file:///srv/m/debian bookworm main\n"
                             "# deb file:///srv/x/ sid main\n", "/etc/apt/sources.list")
    assert len(entries) == 1 and entries[0].signed_by == "/k.gpg"
    assert entries[0].origin == "/etc/apt/sources.list:1"


def test_no_debian_source_is_a_clear_error() -> None:
    entries = parse_one_line("deb file:///srv/ppa/ jammy-custom universe\n", "/etc/apt/x.list")
    with pytest.raises(HarnessError, match=r"no Debian archive mirror found.*x\.list"):
        find_mirrors(entries)


# What an Ubuntu runner (GitHub's ubuntu-latest) has: deb822 sources of noble, with main,
# signed by the Ubuntu keyring. Same shape as Debian's; the suites give it away.
UBUNTU = """\
Types: deb
URIs: file:///srv/mirror/ubuntu/
Suites: noble noble-updates noble-backports
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg

Types: deb
URIs: file:///srv/mirror/ubuntu-security/
Suites: noble-security
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
"""


def test_ubuntu_sources_are_refused_with_what_was_found() -> None:
    entries = parse_deb822(UBUNTU, "/etc/apt/sources.list.d/ubuntu.sources")
    with pytest.raises(HarnessError) as info:
        find_mirrors(entries)
    message = str(info.value)
    assert "not Debian's" in message and "noble" in message and "ubuntu.sources" in message
    assert "Debian container" in message


def test_debian_security_suite_of_the_old_layout_is_debian() -> None:
    entries = parse_one_line("deb file:///srv/m/debian buster main\n"
                             "deb file:///srv/m/security buster/updates main\n", "/x.list")
    assert find_mirrors(entries).archive == "file:///srv/m/debian"


def test_private_sources_use_the_discovered_mirror(tmp_path: Path) -> None:
    apt = PrivateApt(tmp_path, Mirrors("file:///srv/m/debian", None, "/k.gpg"))
    text = apt.sources_text()
    assert "deb [signed-by=/k.gpg] file:///srv/m/debian sid main" in text
    assert "trixie-backports" in text
    assert "security" not in text  # no security mirror configured, none invented
    assert any(opt.startswith("Dir::State::Lists=" + str(tmp_path)) for opt in apt.options())


def test_packages_index_stanzas() -> None:
    text = "Package: a\nVersion: 1\nDescription: x\n more\n\nPackage: b\nVersion: 2\n"
    assert [s["Package"] for s in parse_packages(text)] == ["a", "b"]
