"""A bug report as it is posted to the list: a mail (an mbox, as ``b4 mbox`` or a mail
client saves it, or one message) with the reporter's image attached and a shell script or
a C program that shows the bug.

``derive_report`` turns it into the project's report format: the attachments are written
beside a ``report.yaml`` that names them, so that the user can read what was derived, edit
it and run it again with ``make repro REPORT=<that file>``. Nothing here mounts anything:
an image is judged by its bytes (harness/repro/given.py), and only the guest mounts it.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import yaml

from harness.core.errors import SpecError
from harness.repro.given import is_erofs, not_an_image, unpacked
from harness.vm.splats import splats_seen

# Names that promise an image: such an attachment that is not one is an error. (A .gz or
# .bin may be anything: a config, a log, a compiled program.)
IMAGE_NAMES = re.compile(r"\.(img|erofs)(\.gz)?$", re.IGNORECASE)
SCRIPT_START = re.compile(r"^#!\s*/(?:usr/)?bin/(?:env\s+)?(?:ba|da)?sh\b.*$", re.MULTILINE)
SUBJECT_TAGS = re.compile(r"^\s*((re|fwd?)\s*:\s*|\[[^\]]*\]\s*)+", re.IGNORECASE)
CONFIG_HEAD = b"# Automatically generated file; DO NOT EDIT."


@dataclass(frozen=True)
class Attachment:
    name: str
    data: bytes
    kind: str  # image, script, c, syz, config or other

    @property
    def file_name(self) -> str:
        """A name safe to write: the basename, without anything a shell or path would read."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", Path(self.name).name) or "attachment"


@dataclass
class Mail:
    subject: str
    sender: str
    date: str
    message_id: str
    body: str
    attachments: list[Attachment] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Attachment]:
        return [a for a in self.attachments if a.kind == kind]


def kind_of(name: str, data: bytes, origin: str) -> str:
    """What an attachment is, by its bytes first and its name second. A file named as an
    image (.img, .erofs, .gz, ...) that is not one is an error naming it."""
    lower = name.lower()
    if lower.endswith(".c"):
        return "c"
    if lower.endswith(".syz"):
        return "syz"
    if lower.endswith(".config") or lower == "config" or data.startswith(CONFIG_HEAD):
        return "config"
    if lower.endswith(".sh") or data.startswith(b"#!"):
        return "script"
    try:
        body = unpacked(data)
    except SpecError as exc:
        if IMAGE_NAMES.search(name):
            raise SpecError(f"{origin}: attachment {name!r}: {exc}") from exc
        return "other"
    if is_erofs(body):
        return "image"
    if IMAGE_NAMES.search(name):
        raise SpecError(f"{origin}: attachment {name!r} is named as an image but is not an "
                        f"EROFS image: {not_an_image(body)}")
    return "other"


def _inline_script(text: str) -> str | None:
    """A shell script pasted into the body: from its #! line to the signature ("-- ") or
    the end of the part."""
    start = SCRIPT_START.search(text)
    if start is None:
        return None
    rest = text[start.start():]
    end = re.search(r"^-- $", rest, re.MULTILINE)
    return (rest[:end.start()] if end else rest).rstrip() + "\n"


def _message(path: Path) -> EmailMessage:
    """The message of ``path`` that carries the report: in an mbox, the first with an
    attachment (a thread's later replies quote it), else the first."""
    raw = path.read_bytes()
    if not raw.startswith(b"From "):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg
    box = mailbox.mbox(str(path), factory=None, create=False)
    messages: list[EmailMessage] = []
    try:
        for key in box.keys():
            msg = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            messages.append(msg)
    finally:
        box.close()
    if not messages:
        raise SpecError(f"{path}: an empty mbox")
    return next((m for m in messages if any(True for _ in m.iter_attachments())), messages[0])


def read_mail(path: Path) -> Mail:
    try:
        msg = _message(path)
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror}") from exc
    body_part = msg.get_body(preferencelist=("plain",))
    body = body_part.get_content() if body_part is not None else ""
    mail = Mail(subject=str(msg.get("Subject", "")).strip(), sender=str(msg.get("From", "")),
                date=str(msg.get("Date", "")), message_id=str(msg.get("Message-ID", "")),
                body=str(body))
    for number, part in enumerate(msg.iter_attachments(), 1):
        name = part.get_filename() or f"attachment-{number}"
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        mail.attachments.append(
            Attachment(name, data, kind_of(name, data, f"{path}: part {number}")))
    if not mail.of_kind("script") and not mail.of_kind("c"):
        script = _inline_script(mail.body)
        if script is not None:
            mail.attachments.append(Attachment("repro.sh", script.encode(), "script"))
    return mail


def derive_report(mail: Mail, source: Path, outdir: Path, kernel: str) -> Path:
    """Write the attachments and ``<mail file's stem>.yaml`` naming them into ``outdir``
    (where the verdicts of that report go too); its path."""
    programs = mail.of_kind("c") + mail.of_kind("script")
    if not programs:
        syz = mail.of_kind("syz")
        raise SpecError(
            f"{source}: no reproducer: the mail has no C program, no shell script attached "
            f"and none pasted (from its #! line)"
            + (f"; {syz[0].name} is a syzkaller program, which needs syz-execprog and "
               f"syz-executor built for the guest: attach the repro.c syzbot also gives"
               if syz else ""))
    outdir.mkdir(parents=True, exist_ok=True)
    # Each attachment under a name of its own in outdir (never the report's), named in the
    # report by its absolute path, so that no file of the same name elsewhere is taken.
    taken = {f"{source.stem}.yaml"}
    written: list[Path] = []
    for attachment in mail.attachments:
        name = attachment.file_name
        if name in (".", ".."):
            name = "attachment"
        while name in taken:
            name = "_" + name
        taken.add(name)
        (outdir / name).write_bytes(attachment.data)
        written.append((outdir / name).resolve())
    at = {id(a): path for a, path in zip(mail.attachments, written, strict=True)}
    program = programs[0]
    reproducer: dict[str, object] = {
        ("c" if program.kind == "c" else "script"): str(at[id(program)]),
        "files": [str(at[id(a)]) for a in mail.attachments
                  if a.kind == "image" or (a.kind == "other" and a is not program)],
        "timeout": 300,
    }
    # Mails indent and quote ("> ") what they paste from a console.
    splats = splats_seen(re.sub(r"(?m)^[ \t>]+", "", mail.body), "")
    # The mail's own kernel report, when it quotes one, is the signature; otherwise the
    # program's exit status says (a reporter's script exits non-zero when it sees the bug).
    bug: dict[str, object] = {"splat": splats[0].kind} if splats else {"exit_code": "nonzero"}
    report = {
        "title": SUBJECT_TAGS.sub("", mail.subject) or f"the report in {source.name}",
        "reported": f"{mail.sender}, {mail.date} {mail.message_id} (derived from {source} by "
                    f"make repro MBOX=)".replace("  ", " "),
        "kernel": kernel,
        "reproducer": reproducer,
        "bug": bug,
    }
    path = outdir / f"{source.stem}.yaml"
    images = [at[id(a)].name for a in mail.attachments if a.kind == "image"]
    path.write_text(
        f"# Derived from {source}: the attachments are beside this file. Edit it (the\n"
        f"# kernel, the signature under bug:) and run it again with\n"
        f"#   make repro REPORT={path}\n"
        + (f"# Images: {', '.join(images)} (checked with dump.erofs before the guest gets "
           f"them)\n" if images else "")
        + yaml.safe_dump(report, sort_keys=False, width=100))
    return path
