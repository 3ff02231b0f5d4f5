import io
import stat

from harness.guestimage.cpio import CpioWriter


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """A minimal newc reader: name -> (mode, content)."""
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += (4 - pos % 4) % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data[pos:pos + size])
        pos += size
        pos += (4 - pos % 4) % 4


def test_archive_round_trips_files_links_devices() -> None:
    buf = io.BytesIO()
    cpio = CpioWriter(buf)
    cpio.directory("etc")
    cpio.file("etc/x", b"hello", 0o600)
    cpio.file("etc/x", b"second write is ignored")
    cpio.symlink("bin", "usr/bin")
    cpio.chardev("dev/console", 5, 1)
    cpio.trailer()
    entries = read_newc(buf.getvalue())
    assert entries["etc/x"] == (stat.S_IFREG | 0o600, b"hello")
    assert entries["bin"][1] == b"usr/bin" and stat.S_ISLNK(entries["bin"][0])
    assert stat.S_ISCHR(entries["dev/console"][0]) and stat.S_ISDIR(entries["etc"][0])
