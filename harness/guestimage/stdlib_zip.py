"""Compile Python sources into one zip of byte code, for the guest's sys.path.

Run as a script by the guest's own interpreter (the byte code must match its version):

    python3.X stdlib_zip.py <out.zip> <root> <file.py>...

Every file is stored as ``<path relative to root>c``, compiled once with optimisation off
and marked as an unchecked hash-based pyc, so that the guest neither looks for the source
nor compares timestamps. The zip is deflated: the guest unpacks the initramfs on every
boot, which costs far more under TCG than inflating the few dozen modules a helper imports.
This file imports nothing from the harness.
"""

import importlib.util
import marshal
import sys
import zipfile

# An unchecked hash-based pyc: flags bit 0 set (hash-based), bit 1 clear (do not check).
UNCHECKED_HASH = (1).to_bytes(4, "little")


def main(argv: list[str]) -> int:
    out, root, *sources = argv
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for source in sorted(sources):
            with open(source, "rb") as fh:
                code = compile(fh.read(), source, "exec", dont_inherit=True)
            pyc = importlib.util.MAGIC_NUMBER + UNCHECKED_HASH + bytes(8) + marshal.dumps(code)
            # A fixed date keeps the zip identical from one build to the next.
            info = zipfile.ZipInfo(source[len(root):].lstrip("/") + "c", (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, pyc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
