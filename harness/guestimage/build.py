"""The guest image: an initramfs built from the recipe in vmimages/ for one kernel.

The userland part (host binaries, their libraries, Python, keys, init) is built once and
cached by a key over everything that goes into it; the modules part is built per kernel and
appended (the kernel unpacks concatenated cpio archives in order).
"""

from __future__ import annotations

import logging
import lzma
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from harness.core import cache
from harness.core.errors import HarnessError, SpecError, ToolMissing
from harness.core.paths import VMIMAGES
from harness.core.yamlconf import check_keys, load_yaml, where
from harness.guestimage.cpio import CpioWriter
from harness.guestimage.sshkeys import GuestKeys, guest_keys
from harness.kernel.kernel import Kernel

log = logging.getLogger(__name__)

RECIPE_DIR = VMIMAGES
RECIPE = RECIPE_DIR / "guest.yaml"
READY_MARKER = "HARNESS-GUEST"
SCRATCH_SERIAL = "harness-scratch"
RECIPE_KEYS = {"host_packages", "binaries", "links", "python_stdlib", "python_stdlib_exclude",
               "python_dynload_exclude", "modules", "boot_modules", "templates"}
DIRS = ["dev", "proc", "sys", "run", "tmp", "root", "root/.ssh", "etc", "etc/dropbear",
        "scratch", "mnt", "usr", "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "var",
        "var/log"]
MERGED_USR = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


@dataclass(frozen=True)
class Recipe:
    path: Path
    data: dict[str, Any]

    def get(self, key: str) -> Any:
        return self.data.get(key)


def load_recipe(path: Path = RECIPE) -> Recipe:
    data = load_yaml(path)
    check_keys(data, RECIPE_KEYS, {"binaries", "modules", "boot_modules", "templates"},
               "the guest recipe")
    for key in ("binaries", "modules", "boot_modules", "host_packages"):
        if key in data and not isinstance(data[key], list):
            raise SpecError(f"{where(data, key)}: {key} must be a list")
    return Recipe(path, data)


@dataclass(frozen=True)
class GuestImage:
    initramfs: Path
    key: str
    kernel_release: str

    @property
    def initrd_path(self) -> Path:
        return self.initramfs


# ---- the userland part ------------------------------------------------------------------

_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def shared_libraries(path: Path) -> list[Path]:
    """Absolute paths of the libraries ``path`` loads (ldd), empty for a static binary."""
    proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
    return [Path(m.group(1)) for m in map(_LDD_LINE.search, proc.stdout.splitlines()) if m]


def _image_path(host_path: Path) -> str:
    """Where a host file goes in the merged-/usr guest tree."""
    real = str(host_path)
    for top, usr in MERGED_USR.items():
        if real.startswith(f"/{top}/"):
            return "/" + usr + real[len(top) + 1:]
    return real


def _stdlib_files(root: Path, exclude: set[str], dynload_exclude: set[str]) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d not in exclude]
        dirnames[:] = [d for d in dirnames
                       if d not in ("test", "tests", "idle_test", "__pycache__")]
        for name in filenames:
            path = Path(dirpath) / name
            if path.suffix == ".so" and name.split(".", 1)[0] in dynload_exclude:
                continue
            if path.exists():  # skip dangling links (Debian links sitecustomize to /etc)
                files.append(path)
    return sorted(files)


def _stdlib_zip(recipe: Recipe, sources: list[Path], tmp: Path) -> tuple[str, bytes]:
    """The standard library's sources compiled by the guest's own interpreter into one
    zip: where it goes in the image (the first entry of Python's default sys.path, so no
    PYTHONPATH is needed) and its bytes. A quarter of the sources' size with their
    __pycache__, which the kernel no longer unpacks on every boot."""
    stdlib = Path(recipe.get("python_stdlib"))
    version = stdlib.name.removeprefix("python")  # "3.11"
    interpreter = Path("/usr/bin") / stdlib.name
    out = tmp / "stdlib.zip"
    proc = subprocess.run([str(interpreter), "-I", str(Path(__file__).with_name("stdlib_zip.py")),
                           str(out), str(stdlib), *map(str, sources)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"{recipe.path}: compiling {stdlib} with {interpreter} failed: "
                           f"{proc.stderr.strip()[-2000:]}")
    return f"{stdlib.parent}/python{version.replace('.', '')}.zip", out.read_bytes()


def userland_inputs(recipe: Recipe) -> tuple[list[Path], list[Path]]:
    """(executables, every other host file) the recipe pulls in, missing ones reported."""
    missing = [b for b in recipe.get("binaries") if not Path(b).exists()]
    if missing:
        pkgs = ", ".join(recipe.get("host_packages") or [])
        raise ToolMissing(f"{recipe.path}: host files missing for the guest image: "
                          f"{', '.join(missing)}. Install the host packages ({pkgs}) with "
                          f"`make deps`.")
    binaries = [Path(b).resolve() for b in recipe.get("binaries")]
    extra: set[Path] = set()
    stdlib = recipe.get("python_stdlib")
    stdlib_files = (_stdlib_files(Path(stdlib), set(recipe.get("python_stdlib_exclude") or []),
                                  set(recipe.get("python_dynload_exclude") or []))
                    if stdlib else [])
    extra.update(libraries_of(binaries + [f for f in stdlib_files if f.suffix == ".so"]))
    return binaries, sorted(extra | set(stdlib_files))


def libraries_of(executables: list[Path]) -> list[Path]:
    """The shared libraries ``executables`` load, remembered in the cache by their paths,
    sizes and mtimes: ldd over the image's ~50 executables costs 0.3 s, and every process
    that boots a VM (each pytest worker, each kernel a developer rebuilds) computes the
    image's key from them."""
    stamps = [f"{exe}:{st.st_size}:{st.st_mtime_ns}" for exe in executables
              for st in [exe.stat()]]
    key = cache.content_key(["ldd-v1", *stamps])

    def build(_out: Path) -> dict[str, object]:
        found: set[Path] = set()
        for exe in executables:
            found.update(shared_libraries(exe))
        return {"libraries": sorted(map(str, found))}

    for _ in range(2):
        entry = cache.get_or_build("guest-libraries", key, build)
        listed = cache.read_meta(entry).get("libraries")
        assert isinstance(listed, list)
        libraries = [Path(name) for name in listed]
        if all(lib.exists() for lib in libraries):
            return libraries
        # A library was removed from the host since: ask ldd again.
        cache.forget("guest-libraries", key)
    raise ToolMissing(f"shared libraries of the guest image's binaries are missing on this "
                      f"host: {', '.join(str(lib) for lib in libraries if not lib.exists())}; "
                      f"reinstall the host packages with `make deps`")


def busybox_applets() -> list[str]:
    """Where busybox installs its applets, mapped into the merged-/usr tree."""
    proc = subprocess.run(["/bin/busybox", "--list-full"], capture_output=True, text=True,
                          check=False)
    return sorted({_image_path(Path("/" + line.strip())) for line in proc.stdout.splitlines()
                   if line.strip() and not line.strip().endswith("/busybox")})


def _render(recipe: Recipe, template: str, context: dict[str, Any]) -> bytes:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(recipe.path.parent)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return env.get_template(template).render(**context).encode()
    except jinja2.TemplateError as exc:
        raise SpecError(f"{recipe.path.parent / template}: {exc}") from exc


def _template_context(recipe: Recipe) -> dict[str, Any]:
    return {"marker": READY_MARKER, "boot_modules": recipe.get("boot_modules"),
            "scratch_serial": SCRATCH_SERIAL}


def write_userland(recipe: Recipe, keys: GuestKeys, files: list[Path], out: Path) -> None:
    """The userland cpio; ``files`` is what ``userland_inputs`` found (binaries and others)."""
    with out.open("wb") as fh:
        cpio = CpioWriter(fh)
        for name in DIRS:
            cpio.directory(name, 0o700 if name.startswith("root") else 0o755)
        for top, usr in MERGED_USR.items():
            cpio.symlink(top, usr)
        cpio.chardev("dev/console", 5, 1)
        cpio.chardev("dev/null", 1, 3, 0o666)
        stdlib = recipe.get("python_stdlib")
        sources = [f for f in files if stdlib and f.suffix == ".py"
                   and f.is_relative_to(stdlib)]
        if sources:
            with tempfile.TemporaryDirectory(prefix="guest-stdlib.") as tmp:
                name, data = _stdlib_zip(recipe, sources, Path(tmp))
            cpio.file(_image_path(Path(name)), data)
        for path in sorted(set(files) - set(sources)):
            dest = _image_path(path)
            for parent in reversed(Path(dest).parents[:-1]):
                cpio.directory(str(parent))
            cpio.file(dest, path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644)
        for name, target in (recipe.get("links") or {}).items():
            cpio.symlink(name, target)
        # Every busybox applet the image has no real binary for (claimed names are kept).
        for applet in busybox_applets():
            cpio.symlink(applet, "/usr/bin/busybox")
        etc = {
            "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
            "etc/group": "root:x:0:\ntty:x:5:\n",
            "etc/shells": "/bin/sh\n",
            "etc/hosts": "127.0.0.1 localhost guest\n",
            "etc/profile": "export PATH=/usr/sbin:/usr/bin\nexport PS1='guest# '\n",
            "root/.ssh/authorized_keys": keys.client_public + "\n",
        }
        for name, text in etc.items():
            cpio.file(name, text.encode(), 0o600 if ".ssh" in name else 0o644)
        cpio.file("etc/dropbear/host_key", keys.host_key.read_bytes(), 0o600)
        context = _template_context(recipe)
        for dest, template in recipe.get("templates").items():
            cpio.file(dest, _render(recipe, template, context), 0o755)
        cpio.trailer()


def userland_key(recipe: Recipe, keys: GuestKeys, files: list[Path]) -> str:
    parts: list[str | bytes] = ["userland-v2", recipe.path.read_bytes(), keys.client_public,
                                keys.host_public]
    for template in sorted(recipe.get("templates").values()):
        parts.append((recipe.path.parent / template).read_bytes())
    for path in files:
        st = path.stat()
        parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    parts.append(Path(__file__).read_bytes())
    parts.append(Path(__file__).with_name("stdlib_zip.py").read_bytes())
    return cache.content_key(parts)


# ---- the modules part -------------------------------------------------------------------

def _module_index(modules_dir: Path) -> dict[str, Path]:
    index = {}
    for path in (modules_dir / "kernel").rglob("*.ko*"):
        name = path.name.split(".ko", 1)[0].replace("-", "_")
        index[name] = path
    return index


def _builtin(modules_dir: Path) -> set[str]:
    path = modules_dir / "modules.builtin"
    if not path.is_file():
        return set()
    return {Path(line.strip()).name.split(".ko", 1)[0].replace("-", "_")
            for line in path.read_text().splitlines() if line.strip()}


def module_closure(modules_dir: Path, wanted: list[str]) -> list[Path]:
    """The module files for ``wanted`` and everything they depend on (modinfo depends)."""
    index = _module_index(modules_dir)
    builtin = _builtin(modules_dir)
    todo = [w.replace("-", "_") for w in wanted]
    seen: set[str] = set()
    files = []
    while todo:
        name = todo.pop()
        if name in seen or name in builtin:
            continue
        seen.add(name)
        path = index.get(name)
        if path is None:
            continue  # built in under another name, or not in this kernel: fine
        files.append(path)
        deps = subprocess.run(["modinfo", "-F", "depends", str(path)], capture_output=True,
                              text=True, check=False).stdout.strip()
        todo += [d.replace("-", "_") for d in deps.split(",") if d]
    return sorted(files)


def _decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True,
                              check=True).stdout
    return data


def write_modules(kernel: Kernel, wanted: list[str], out: Path) -> None:
    """A cpio with the module closure decompressed (no decompression in the slow guest)."""
    assert kernel.modules_dir is not None
    with tempfile.TemporaryDirectory(prefix="guest-modules.") as tmp:
        base = Path(tmp) / "lib" / "modules" / kernel.release
        for path in module_closure(kernel.modules_dir, wanted):
            rel = path.relative_to(kernel.modules_dir)
            dest = base / str(rel).split(".ko", 1)[0]
            dest = dest.with_name(dest.name + ".ko")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(_decompressed(path))
        base.mkdir(parents=True, exist_ok=True)
        for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if (kernel.modules_dir / meta).is_file():
                (base / meta).write_bytes((kernel.modules_dir / meta).read_bytes())
        proc = subprocess.run(["depmod", "-b", tmp, kernel.release], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise HarnessError(f"depmod for {kernel.release} failed: {proc.stderr.strip()}")
        with out.open("wb") as fh:
            cpio = CpioWriter(fh)
            for found in sorted(Path(tmp).rglob("*")):
                entry = "usr/" + str(found.relative_to(tmp))
                if found.is_dir():
                    cpio.directory(entry)
                else:
                    cpio.file(entry, found.read_bytes())
            cpio.trailer()


# ---- the whole image --------------------------------------------------------------------

def build_guest_image(kernel: Kernel, recipe: Recipe | None = None) -> GuestImage:
    recipe = recipe or load_recipe()
    keys = guest_keys()
    binaries, others = userland_inputs(recipe)
    files = sorted(set(binaries) | set(others))
    ukey = userland_key(recipe, keys, files)

    def build_userland(out: Path) -> dict[str, object]:
        print("harness: building the guest userland (host binaries, Python, sshd)",
              file=sys.stderr, flush=True)
        write_userland(recipe, keys, files, out / "userland.cpio")
        return {}

    userland = cache.get_or_build("guest-userland", ukey, build_userland)
    key = cache.content_key(["guest-v1", ukey, kernel.key, kernel.release,
                             ",".join(recipe.get("modules"))])

    def build_image(out: Path) -> dict[str, object]:
        print(f"harness: building the guest image for {kernel.release}", file=sys.stderr,
              flush=True)
        parts = [userland / "userland.cpio"]
        if kernel.modules_dir is not None:
            write_modules(kernel, list(recipe.get("modules")), out / "modules.cpio")
            parts.append(out / "modules.cpio")
        with (out / "initramfs.cpio").open("wb") as fh:
            for part in parts:
                fh.write(part.read_bytes())
        if (out / "modules.cpio").exists():
            (out / "modules.cpio").unlink()
        return {"release": kernel.release}

    entry = cache.get_or_build("guest", key, build_image)
    return GuestImage(entry / "initramfs.cpio", key, kernel.release)
