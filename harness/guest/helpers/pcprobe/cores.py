"""What a core dump and /proc say a mapping is."""

import json
import os
import resource
import signal
import struct

from pcprobe.base import read_to_end
from pcprobe.pages import Mapping

CORE_PATTERN = "/proc/sys/kernel/core_pattern"
NT_FILE = 0x46494C45


def _nt_file_names(core):
    """{start address: file name} from the NT_FILE note of an ELF64 core dump."""
    phoff, = struct.unpack_from("<Q", core, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", core, 0x36)
    names = {}
    for i in range(phnum):
        ptype, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", core, phoff + i * phentsize)
        if ptype != 4:  # PT_NOTE
            continue
        at, end = offset, offset + filesz
        while at + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", core, at)
            desc = at + 12 + (namesz + 3) // 4 * 4
            if ntype == NT_FILE:
                count, _ = struct.unpack_from("<QQ", core, desc)
                starts = [struct.unpack_from("<QQQ", core, desc + 16 + 24 * k)[0]
                          for k in range(count)]
                text = core[desc + 16 + 24 * count:desc + descsz].split(b"\0")
                names.update({start: text[k].decode(errors="replace")
                              for k, start in enumerate(starts)})
            at = desc + (descsz + 3) // 4 * 4
    return names


def mapping_names(path):
    """A child maps ``path``, reads the name /proc/self/maps gives the mapping, and dumps
    core (core_pattern set for it, restored after; only the core's headers and notes): the
    names /proc and the core's NT_FILE note (what gdb opens to load a core) give it."""
    with open(CORE_PATTERN) as fh:
        old_pattern = fh.read().strip()
    core_dir = "/tmp/harness-cores"
    os.makedirs(core_dir, exist_ok=True)
    with open(CORE_PATTERN, "w") as fh:
        fh.write(f"{core_dir}/core.%p")
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
                with open("/proc/self/coredump_filter", "w") as fh:
                    fh.write("0")
                mapping = Mapping(path)
                mapping.touch()
                start = f"{mapping.address:x}-"
                with open("/proc/self/maps") as fh:
                    line = next(line for line in fh if line.startswith(start))
                os.write(w, json.dumps({"address": mapping.address,
                                        "maps": line.split(None, 5)[5].strip()}).encode())
                os.close(w)
                signal.signal(signal.SIGABRT, signal.SIG_DFL)
                os.abort()
            finally:
                os._exit(1)
        os.close(w)
        answer = read_to_end(r)
        _, status = os.waitpid(pid, 0)
        child = json.loads(answer or b"{}")
        if "maps" not in child:
            raise OSError(0, f"the child mapping {path} ended without reporting (status {status})")
        core = f"{core_dir}/core.{pid}"
        if not os.WCOREDUMP(status) or not os.path.exists(core):
            raise OSError(0, f"the child mapping {path} dumped no core (status {status})")
        with open(core, "rb") as fh:
            names = _nt_file_names(fh.read())
        os.unlink(core)
    finally:
        with open(CORE_PATTERN, "w") as fh:
            fh.write(old_pattern)
    return {"maps": child["maps"], "core": names.get(child["address"])}
