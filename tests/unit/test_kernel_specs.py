from pathlib import Path

import pytest

from harness.core.errors import KernelNotFound, SpecError
from harness.kernel.debian import choose_debian_package, debian_candidates
from harness.kernel.kernel import bzimage_release, parse_config
from harness.kernel.spec import DebianSpec, PathSpec, TreeSpec, parse_kernel_spec


def test_debian_spec_parses_version_prefix() -> None:
    assert parse_kernel_spec("debian:7.3") == DebianSpec("7.3")


def test_path_spec_takes_modules_option(tmp_path: Path) -> None:
    spec = parse_kernel_spec(f"path:{tmp_path}/bzImage,modules={tmp_path}/mods")
    assert spec == PathSpec(tmp_path / "bzImage", tmp_path / "mods")


@pytest.mark.parametrize("text", [
    "debian:7.3", "path:/k/bzImage", "path:/k/bzImage,modules=/k/mods", "tree:",
    "tree:/src/linux,ref=v7.3,patches=/p/fix.mbox,upto=1,kconfig=/a.config+/b.config,debug",
    "tree:,config=/syzbot/kernel.config", "tree:,source=7.2,faults",
])
def test_a_spec_renders_back_to_the_text_it_was_parsed_from(text: str) -> None:
    assert str(parse_kernel_spec(text)) == text


def test_a_tree_spec_with_patches_is_a_new_value() -> None:
    base = parse_kernel_spec("tree:/src,kconfig=/a.config")
    assert isinstance(base, TreeSpec)
    patched = base.with_patches(Path("/p/s.mbox"), upto=2)
    assert str(patched) == "tree:/src,patches=/p/s.mbox,upto=2,kconfig=/a.config"
    assert base.patches is None


@pytest.mark.parametrize("text, needle", [
    ("ubuntu:22.04", "unknown kernel spec kind 'ubuntu'"),
    ("debian:latest", "'latest' is not a version prefix"),
    ("7.3", "has no kind"),
    ("path:/x,initrd=/y", "unknown option 'initrd=/y'"),
])
def test_bad_kernel_spec_names_the_culprit(text: str, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_kernel_spec(text)
    assert needle in str(info.value)
    assert "accepted forms" in str(info.value)


INDEX = [
    {"Package": "linux-image-7.2.13+deb14-cloud-amd64", "Version": "7.2.13-1", "Suite": "sid"},
    {"Package": "linux-image-7.2.9+deb13-cloud-amd64", "Version": "7.2.9-1", "Suite": "sid"},
    {"Package": "linux-image-7.20.1+deb15-cloud-amd64", "Version": "7.20.1-1", "Suite": "sid"},
    {"Package": "linux-image-7.2.13+deb14-cloud-amd64-dbg", "Version": "7.2.13-1"},
    {"Package": "linux-image-cloud-amd64", "Version": "7.2.13-1"},
]


def test_prefix_matches_on_dot_boundaries_newest_first() -> None:
    names = [p.name for p in debian_candidates(INDEX, "7.2")]
    assert names == ["linux-image-7.2.13+deb14-cloud-amd64", "linux-image-7.2.9+deb13-cloud-amd64"]


def test_pinned_package_is_used_when_available() -> None:
    pins = {"pins": {"7.2": {"package": "linux-image-7.2.9+deb13-cloud-amd64",
                             "version": "7.2.9-1"}}}
    assert choose_debian_package(INDEX, "7.2", pins).name.startswith("linux-image-7.2.9")


def test_pin_gone_from_archive_names_the_newest_available() -> None:
    pins = {"pins": {"7.2": {"package": "linux-image-7.2.1+deb13-cloud-amd64",
                             "version": "7.2.1-1"}}}
    with pytest.raises(KernelNotFound) as info:
        choose_debian_package(INDEX, "7.2", pins)
    message = str(info.value)
    assert "no longer in the archive" in message
    assert "linux-image-7.2.13+deb14-cloud-amd64 7.2.13-1" in message


def test_version_not_in_archive_is_a_clear_error() -> None:
    with pytest.raises(KernelNotFound, match=r"no Debian cloud-amd64 kernel matching debian:5\.99"):
        choose_debian_package(INDEX, "5.99", {"pins": {}})


def test_release_read_from_bzimage_header(tmp_path: Path) -> None:
    image = bytearray(0x1000)
    image[0x202:0x206] = b"HdrS"
    image[0x20E:0x210] = (0x300).to_bytes(2, "little")
    image[0x500:0x530] = b"7.3.4-test (root@host) #1 SMP\0".ljust(0x30, b"\0")
    path = tmp_path / "bzImage"
    path.write_bytes(bytes(image))
    assert bzimage_release(path) == "7.3.4-test"


def test_non_bzimage_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(b"\x7fELF" + bytes(0x400))
    with pytest.raises(SpecError, match="not an x86 bzImage"):
        bzimage_release(path)


def test_config_parsing_keeps_values() -> None:
    config = parse_config('CONFIG_EROFS_FS=m\n# CONFIG_X is not set\nCONFIG_S="a b"\n')
    assert config == {"CONFIG_EROFS_FS": "m", "CONFIG_S": "a b"}
