"""Programs run from an image, as a container runs its image's programs: execve() of a
file on an EROFS mount, sharing or not.

execve opens the file (a sharing mount's open makes the shared file it reads and maps
through), reads its ELF headers with kernel_read() and maps its segments with mmap(),
which on a sharing mount hands the VMA the shared file. What the program is told of
itself must still be its own path on the mount it was run from (/proc/self/exe, and the
mapping of its code in /proc/self/maps), never the shared inode's internal one; and the
pages its run faulted in are the shared cache: its twin in another image of the domain
finds them resident, as it would after a read.

The program is testcases/programs/whoami.c, compiled statically on the host; two images
hold it under other names.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from harness.core.cache import cache_root
from harness.erofs.images import BuiltImage, HeldFile, build_image_of
from harness.erofs.tools import ErofsUtils
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe
from harness.repro.cprog import compile_static
from testcases.conftest import SHARE, errno_name

PROGRAM = Path(__file__).parent / "programs" / "whoami.c"
HERE, THERE = "bin/whoami", "usr/local/bin/who-else"  # its paths in the two images
STATUS = 42  # whoami's exit status when it could say both things


@pytest.fixture(scope="module")
def program_twins(erofs_tools: ErofsUtils) -> tuple[BuiltImage, BuiltImage]:
    binary = compile_static(PROGRAM, cache_root() / "programs", "testcases/programs")
    data = binary.read_bytes()
    content = f"program:{binary.name}"
    return (build_image_of("program-a", "program", [HeldFile(HERE, data, content, 0o755)],
                           erofs_tools),
            build_image_of("program-b", "program", [HeldFile(THERE, data, content, 0o711)],
                           erofs_tools))


@pytest.mark.parametrize("options", ["", SHARE], ids=["private", "sharing"])
def test_a_program_run_from_a_mount_is_told_its_own_path(
        program_twins: tuple[BuiltImage, BuiltImage], source: str, options: str,
        mount: Mounter, pagecache: Probe) -> None:
    a, b = program_twins
    ma, mb = mount(a, options, source), mount(b, options, source)
    for m, path in ((ma, HERE), (mb, THERE)):
        ran = pagecache.execute(m.path(path))
        assert ran.status == STATUS, f"{m.path(path)} exited {ran.status}: {ran.stderr}"
        assert ran.said("exe") == m.path(path), f"/proc/self/exe: {ran.said('exe')}"
        assert ran.said("text") == m.path(path), (
            f"its code is mapped from {ran.said('text')}, not {m.path(path)}")


@pytest.mark.parametrize("options", ["", SHARE], ids=["private", "sharing"])
def test_the_pages_a_program_ran_from_are_its_twins_exactly_when_they_share(
        program_twins: tuple[BuiltImage, BuiltImage], source: str, options: str,
        mount: Mounter, pagecache: Probe) -> None:
    a, b = program_twins
    pagecache.drop_caches()  # no earlier run of it left pages anywhere
    ma, mb = mount(a, options, source), mount(b, options, source)
    ran = pagecache.execute(ma.path(HERE))
    assert ran.status == STATUS, f"{ma.path(HERE)} exited {ran.status}: {ran.stderr}"
    own, twin = pagecache.residency(ma.path(HERE)), pagecache.residency(mb.path(THERE))
    assert own.resident > 0, f"running it left nothing of it in its cache: {own}"
    if options:
        assert twin.resident == own.resident, (
            f"the twin shows {twin} where the program's own file shows {own}: its run did "
            f"not fill the shared cache")
    else:
        assert twin.resident == 0, f"a private twin shows {twin} of a run it never made"
    again = pagecache.execute(mb.path(THERE))
    assert again.status == STATUS and again.said("exe") == mb.path(THERE), again


@pytest.mark.known_bug(
    "replace_mm_exe_file() refuses a new executable while a VMA maps the old one by "
    "comparing vma->vm_file->f_path with the exe file's; a sharing mount's VMAs hold the "
    "shared inode's backing file, whose f_path is internal, so the check never matches "
    "and a running program's /proc/<pid>/exe can be replaced while its code is mapped "
    "(reports/ishare-exe-file-replaced-while-mapped.yaml; found by reading fs/erofs "
    "beside kernel/fork.c, 7.2.13 and 7.3.4)",
    signature=r"PR_SET_MM_EXE_FILE answered success, not EBUSY",
    releases=">=7.2", params=["*-sharing"],
    unless_patched="compare the user path of mappings in replace_mm_exe_file")
@pytest.mark.parametrize("options", ["", SHARE], ids=["private", "sharing"])
def test_a_running_programs_executable_cannot_be_replaced_while_it_is_mapped(
        program_twins: tuple[BuiltImage, BuiltImage], source: str, options: str,
        mount: Mounter, pagecache: Probe) -> None:
    """prctl(PR_SET_MM_EXE_FILE) (what CRIU restores /proc/<pid>/exe with) must refuse a
    program that still maps its executable, EBUSY, so /proc/<pid>/exe cannot be made to
    hide the code that runs: through a sharing mount as through a plain one."""
    path = mount(program_twins[0], options, source).path(HERE)
    ran = pagecache.execute(path)
    assert ran.status == STATUS, f"{path} exited {ran.status}: {ran.stderr}"
    answered = ran.said("exe_file_change")
    assert answered is not None, f"{path} did not say what prctl answered: {ran.stdout!r}"
    assert int(answered) == errno.EBUSY, (
        f"PR_SET_MM_EXE_FILE answered {errno_name(int(answered))}, not EBUSY, while {path} "
        f"is still mapped")
