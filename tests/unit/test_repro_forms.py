"""Bug reports as they are posted: a mail with the reporter's image attached and a shell
script or a C program, turned into the project's report format; the reporter's image
judged by its bytes (never mounted on the host); a C program compiled statically. Every
bad input is an error that names it."""

from __future__ import annotations

import gzip
import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest

from harness.core.errors import SpecError
from harness.core.paths import PROJECT
from harness.erofs.tools import ErofsUtils
from harness.repro.cprog import compile_static
from harness.repro.given import EROFS_MAGIC, given_image
from harness.repro.mbox import derive_report, kind_of, read_mail
from harness.repro.spec import load_report

MAIL = PROJECT / "reports" / "mail" / "forged-fingerprint.mbox"


def _image(size: int = 8192) -> bytes:
    data = bytearray(size)
    data[1024:1028] = EROFS_MAGIC
    return bytes(data)


def _tools(tmp_path: Path, features: str = "sb_chksum ishare_xattrs", status: int = 0
           ) -> ErofsUtils:
    dump = tmp_path / "dump.erofs"
    dump.write_text(f"#!/bin/sh\necho 'Filesystem features:      {features}'\n"
                    f"echo 'Filesystem blocksize:     4096'\necho 'cannot read it' >&2\n"
                    f"exit {status}\n")
    dump.chmod(0o755)
    return ErofsUtils(mkfs=Path("/bin/false"), dump=dump, fsck=None, version="1.9.4")


def _mail(tmp_path: Path, attachments: list[tuple[str, bytes]], body: str = "Hi\n") -> Path:
    msg = EmailMessage()
    msg["From"], msg["Subject"] = "R <r@example.org>", "Re: [BUG] erofs: a bug"
    msg["Message-ID"] = "<x@example.org>"
    msg.set_content(body)
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream",
                           filename=name)
    path = tmp_path / "report.mbox"
    box = mailbox.mbox(str(path))
    box.add(mailbox.mboxMessage(msg))
    box.close()
    return path


@pytest.mark.parametrize("name,data,kind", [
    ("a.erofs", _image(), "image"),
    ("a.erofs.gz", gzip.compress(_image()), "image"),
    ("whatever", _image(), "image"),
    ("repro.sh", b"mount ...\n", "script"),
    ("run", b"#!/bin/sh\ntrue\n", "script"),
    ("repro.c", b"int main(void) { return 0; }\n", "c"),
    ("repro.syz", b"r0 = openat(...)\n", "syz"),
    (".config", b"CONFIG_EROFS_FS=y\n", "config"),
    ("notes.txt", b"some text\n", "other"),
    ("config.gz", b"\x1f\x8b" + b"x" * 20, "other"),
    ("repro.bin", b"\x7fELF" + b"\0" * 60, "other"),
])
def test_attachments_are_told_by_their_bytes_then_their_names(name: str, data: bytes,
                                                              kind: str) -> None:
    assert kind_of(name, data, "mail") == kind


def test_an_attachment_named_as_an_image_that_is_not_one_is_an_error_naming_it() -> None:
    with pytest.raises(SpecError, match=r"mail: attachment 'disk\.img' is named as an image "
                                        r"but is not an EROFS image: no EROFS magic"):
        kind_of("disk.img", b"\0" * 4096, "mail")
    with pytest.raises(SpecError, match=r"'x\.img\.gz': a gzip file that does not unpack"):
        kind_of("x.img.gz", b"\x1f\x8bnot gzip", "mail")


def test_the_mailed_report_derives_a_report_that_names_its_attachments(
        tmp_path: Path) -> None:
    mail = read_mail(MAIL)
    assert [(a.name, a.kind) for a in mail.attachments] == [
        ("genuine.erofs.gz", "image"), ("forged.erofs", "image"), ("repro.sh", "script")]
    path = derive_report(mail, MAIL, tmp_path / "out", "debian:7.3")
    assert path.name == "forged-fingerprint.yaml"
    report = load_report(path, set())
    assert report.title.startswith("erofs: inode_share serves another image")
    assert report.reproducer.script == (tmp_path / "out" / "repro.sh").resolve()
    assert [f.name for f in report.reproducer.files] == ["genuine.erofs.gz", "forged.erofs"]
    assert report.bug.exit_nonzero and report.kernel is not None
    assert (tmp_path / "out" / "forged.erofs").read_bytes()[1024:1028] == EROFS_MAGIC


def test_a_script_pasted_into_the_body_is_the_reproducer_and_a_quoted_oops_the_signature(
        tmp_path: Path) -> None:
    body = ("Hi,\n\nthis oopses:\n\n> [ 9.1] BUG: kernel NULL pointer dereference, address: 0\n"
            "> [ 9.1] Oops: Oops: 0000 [#1] SMP NOPTI\n\n"
            "#!/bin/sh\nmount -o loop,inode_share,domain_id=d a.erofs /mnt\ncat /mnt/f\n"
            "-- \nR\n")
    mail = read_mail(_mail(tmp_path, [("a.erofs", _image())], body))
    script = mail.of_kind("script")[0]
    assert script.data.decode() == "#!/bin/sh\nmount -o loop,inode_share,domain_id=d " \
                                   "a.erofs /mnt\ncat /mnt/f\n"
    report = load_report(derive_report(mail, tmp_path / "report.mbox", tmp_path / "out",
                                       "debian:7.3"), set())
    assert report.bug.splat == "oops" and not report.bug.exit_nonzero


def test_attachments_of_one_name_or_of_the_report_s_name_each_keep_their_bytes(
        tmp_path: Path) -> None:
    mail = read_mail(_mail(tmp_path, [("data", b"one"), ("data", b"two"), ("data", b"three"),
                                      ("report.yaml", b"not the report"), ("..", b"dots"),
                                      ("run.sh", b"#!/bin/sh\ncat data\n")]))
    report = load_report(derive_report(mail, tmp_path / "report.mbox", tmp_path / "out",
                                       "debian:7.3"), set())
    assert sorted(f.read_bytes() for f in report.reproducer.files) == [
        b"dots", b"not the report", b"one", b"three", b"two"]
    assert all(f.parent == (tmp_path / "out").resolve() for f in report.reproducer.files)


def test_a_mail_without_a_program_says_so_and_what_a_syz_program_needs(
        tmp_path: Path) -> None:
    mail = read_mail(_mail(tmp_path, [("a.erofs", _image()), ("repro.syz", b"r0 = x\n")]))
    with pytest.raises(SpecError, match=r"no reproducer.*syz-execprog.*repro\.c"):
        derive_report(mail, tmp_path / "report.mbox", tmp_path / "out", "debian:7.3")


def test_a_given_image_is_unpacked_checked_and_described(tmp_path: Path) -> None:
    packed = tmp_path / "mine.erofs.gz"
    packed.write_bytes(gzip.compress(_image()))
    image = given_image(packed, _tools(tmp_path), tmp_path / "work", "r.yaml:3")
    assert image.path.read_bytes() == _image() and image.key.startswith("given-")
    assert image.manifest["features"] == ["sb_chksum", "ishare_xattrs"]


def test_a_given_file_that_is_no_image_or_that_dump_erofs_rejects_is_named(
        tmp_path: Path) -> None:
    text = tmp_path / "notes.erofs"
    text.write_bytes(b"hello" * 400)
    with pytest.raises(SpecError, match=r"r\.yaml:3: .*notes\.erofs is not an EROFS image: "
                                        r"no EROFS magic at byte 1024"):
        given_image(text, _tools(tmp_path), tmp_path / "work", "r.yaml:3")
    broken = tmp_path / "broken.erofs"
    broken.write_bytes(_image())
    with pytest.raises(SpecError, match=r"broken\.erofs \(8192 bytes\): .*dump\.erofs cannot "
                                        r"read it \(exit 1\): cannot read it"):
        given_image(broken, _tools(tmp_path, status=1), tmp_path / "work", "r.yaml:3")


def test_a_c_program_compiles_statically_once_and_a_broken_one_names_its_line(
        tmp_path: Path) -> None:
    good = tmp_path / "good.c"
    good.write_text("#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n")
    binary = compile_static(good, tmp_path / "bin", "r.yaml:5")
    assert binary.exists() and binary.read_bytes()[:4] == b"\x7fELF"
    assert compile_static(good, tmp_path / "bin", "r.yaml:5") == binary
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void)\n{\n\treturn nope;\n}\n")
    with pytest.raises(SpecError, match=r"r\.yaml:5: bad\.c does not compile .*bad\.c:3:\d+: "
                                        r"'nope' undeclared"):
        compile_static(bad, tmp_path / "bin", "r.yaml:5")


def test_a_report_of_a_given_image_is_checked_like_any_other(tmp_path: Path) -> None:
    (tmp_path / "mine.erofs").write_bytes(_image())
    head = "title: t\nkernel: debian:7.3\n"
    both = head + ("mounts: [{name: a, image: sizes, file: mine.erofs}]\n"
                   "reproducer: {commands: ['true']}\nbug: {exit_code: 1}\n")
    (tmp_path / "both.yaml").write_text(both)
    with pytest.raises(SpecError, match=r"exactly one of image .* and file"):
        load_report(tmp_path / "both.yaml", {"sizes"})
    wrong = head + ("mounts: [{name: a, file: mine.erofs}]\nreproducer: {commands: ['true']}\n"
                    "bug: {wrong_bytes: 'a:f'}\n")
    (tmp_path / "wrong.yaml").write_text(wrong)
    with pytest.raises(SpecError, match="wrong_bytes compares with the catalog"):
        load_report(tmp_path / "wrong.yaml", {"sizes"})
    good = head + ("mounts: [{name: a, file: mine.erofs, options: 'inode_share,domain_id=d'}]"
                   "\nreproducer: {c: prog.c, files: [mine.erofs]}\nbug: {exit_code: nonzero}\n")
    (tmp_path / "prog.c").write_text("int main(void) { return 1; }\n")
    (tmp_path / "good.yaml").write_text(good)
    report = load_report(tmp_path / "good.yaml", {"sizes"})
    assert report.mounts[0].file == (tmp_path / "mine.erofs").resolve()
    assert report.reproducer.c == (tmp_path / "prog.c").resolve()
    assert report.bug.exit_nonzero and report.bug.exit_code is None
    (tmp_path / "bad.yaml").write_text(good.replace("nonzero", "often"))
    with pytest.raises(SpecError, match=r"bad\.yaml:5.*exit status .* or nonzero"):
        load_report(tmp_path / "bad.yaml", {"sizes"})


def test_every_report_in_the_project_loads() -> None:
    from harness.core.paths import CATALOG
    from harness.erofs.images import load_catalog
    images = set(load_catalog(CATALOG).images)
    for path in sorted((PROJECT / "reports").glob("*.yaml")):
        load_report(path, images)


def test_a_syzbot_folder_derives_a_tree_built_from_its_config_and_lists_what_is_not_honoured(
        tmp_path: Path) -> None:
    from harness.repro.syzbot import derive_syzbot
    folder = PROJECT / "reports" / "syzbot" / "remount-inode-share"
    fix = PROJECT / "reports" / "patches" / "remount-inode-share-fix.mbox"
    path = derive_syzbot(folder, tmp_path / "out", None, fix)
    text = path.read_text()
    assert "# not honoured: commit v7.3.4: no KERNEL_TREE given" in text
    report = load_report(path, set())
    assert str(report.kernel) == f"tree:,config={(tmp_path / 'out' / 'kernel.config').resolve()}"
    assert report.title == ("BUG: kernel NULL pointer dereference in "
                            "erofs_xattr_fill_inode_fingerprint")
    assert report.bug.splat == "any" and report.bug.dmesg == "erofs_xattr_fill_inode_fingerprint"
    assert report.reproducer.c is not None and report.checkpoints == {"patched": -1}
    assert report.patches == fix.resolve()
    # A tree that is no git repository cannot be checked out at the commit either.
    assert "does not have it" in derive_syzbot(folder, tmp_path / "o2", tmp_path).read_text()


def test_a_syzbot_folder_without_its_c_program_or_config_says_what_is_missing(
        tmp_path: Path) -> None:
    from harness.repro.syzbot import derive_syzbot
    (tmp_path / "repro.syz").write_text("r0 = openat(0xffffffffffffff9c, 0x0, 0x0, 0x0)\n")
    with pytest.raises(SpecError, match=r"only repro\.syz.*syz-execprog.*repro\.c"):
        derive_syzbot(tmp_path, tmp_path / "out", None)
    (tmp_path / "repro.c").write_text("int main(void) { return 0; }\n")
    with pytest.raises(SpecError, match=r"no kernel config"):
        derive_syzbot(tmp_path, tmp_path / "out", None)


def test_a_given_config_keeps_what_the_guest_only_trims_and_lists_what_the_build_changed(
        ) -> None:
    from harness.kernel.kbuild import forced_on_base, not_honoured
    from harness.kernel.kconfig import Request
    requests = [Request("CONFIG_INPUT", "n", "kconfigs/base.config:60", "trim"),
                Request("CONFIG_VT", "n", "kconfigs/base.config:61", "trim"),
                Request("CONFIG_VIRTIO_BLK", "y", "kconfigs/base.config:48", "disks")]
    given = {"CONFIG_INPUT": "y", "CONFIG_VIRTIO_BLK": "n", "CONFIG_IPV6": "y"}
    forced = forced_on_base(given, requests)
    assert [r.name for r in forced] == ["CONFIG_VT", "CONFIG_VIRTIO_BLK"]
    final = {"CONFIG_INPUT": "y", "CONFIG_VIRTIO_BLK": "y"}
    assert not_honoured(given, final, forced) == [
        "CONFIG_IPV6: the given config has y, the build has n (olddefconfig: a dependency "
        "or an option this tree does not have)",
        "CONFIG_VIRTIO_BLK: the given config has n, the build has y (the guest needs it, "
        "kconfigs/base.config:48)"]


@pytest.mark.parametrize("status,deadline,held", [
    (1, False, True), (3, False, True), (0, False, False), (137, True, False)])
def test_exit_code_nonzero_holds_only_for_a_program_that_ended_by_itself(
        tmp_path: Path, status: int, deadline: bool, held: bool) -> None:
    """A program killed at its deadline hung: it did not say it saw the bug."""
    from harness.repro.run import Inputs, Verdict, _Run
    (tmp_path / "r.yaml").write_text("title: t\nkernel: debian:7.3\nreproducer: {commands: "
                                     "['true']}\nbug: {exit_code: nonzero}\n")
    run = _Run(load_report(tmp_path / "r.yaml", set()), Verdict("base", "debian:7.3"),
               None, "tcg", Inputs())  # type: ignore[arg-type]
    run.exit_code, run.deadline = status, deadline
    run._check("", "", True)
    assert [c.held for c in run.verdict.checks] == [held]


@pytest.mark.parametrize("value", ["true", "256", "-1", "often"])
def test_an_exit_code_is_a_status_or_nonzero(tmp_path: Path, value: str) -> None:
    (tmp_path / "r.yaml").write_text("title: t\nkernel: debian:7.3\nreproducer: {commands: "
                                     f"['true']}}\nbug: {{exit_code: {value}}}\n")
    with pytest.raises(SpecError, match=r"r\.yaml:4: .*an exit status \(0-255\) or nonzero"):
        load_report(tmp_path / "r.yaml", set())


def test_a_syzbot_report_is_built_at_its_head_commit_when_the_tree_has_it(
        tmp_path: Path) -> None:
    """The git tree has the report's commit: the derived kernel is that tree at it."""
    import shutil
    import subprocess

    from harness.repro.syzbot import derive_syzbot
    folder = tmp_path / "syz"
    shutil.copytree(PROJECT / "reports" / "syzbot" / "remount-inode-share", folder)
    (folder / ".config").write_text("CONFIG_EROFS_FS=y\n")
    tree = tmp_path / "linux"
    (tree / "fs").mkdir(parents=True)
    (tree / "fs" / "a.c").write_text("a\n")
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "v7.3.4"], ["tag", "v7.3.4"]):
        subprocess.run([*git, *args], check=True)
    text = derive_syzbot(folder, tmp_path / "out", tree).read_text()
    assert "not honoured: commit" not in text
    report = load_report(tmp_path / "out" / "syz.yaml", set())
    assert str(report.kernel) == (f"tree:{tree},ref=v7.3.4,"
                                  f"config={(tmp_path / 'out' / 'kernel.config').resolve()}")
