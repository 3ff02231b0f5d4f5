"""Guest side of `make stress`: readers on many mounts of twin images, through every access
path, while a churner mounts, unmounts (plainly and lazily), remounts, drops caches and
reads under a tight memory.max. Every byte read is verified against the manifest.

Run as ``python3 stress.py CONFIG_JSON``; prints one JSON line of counters every
``progress`` seconds and a final one with ``"done": true``. Standard library only, plus the
page cache probe (the pcprobe package, next to this file) for its read methods.
"""

import errno
import json
import os
import random
import signal
import sys
import time

import pcprobe  # the probe's package, beside this file (sys.path[0])

METHODS = ["read", "pread", "readv", "mmap_shared", "mmap_private", "sendfile", "splice",
           "fadvise_willneed", "readahead", "io_uring"]
# A mount can go away between a reader choosing it and opening a file: these are the
# answers of a path that is gone. EIO or wrong bytes never are.
GONE = {errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.ENOTCONN, errno.ENODEV}
ROOT = "/run/stress"
LIVE = ROOT + "/live"  # one file per mounted target: its image key and options


def _live():
    out = []
    for name in os.listdir(LIVE):
        try:
            with open(os.path.join(LIVE, name)) as fh:
                out.append(json.load(fh))
        except (OSError, ValueError):
            continue
    return out


def reader(cfg, index, counters_path, stop_at):
    rng = random.Random(cfg["seed"] * 1000 + index)
    counts = {"reads": 0, "bytes": 0, "gone": 0, "wrong": [], "errors": []}
    last_write = 0.0
    while time.monotonic() < stop_at:
        live = _live()
        if not live:
            time.sleep(0.05)
            continue
        mount = rng.choice(live)
        files = cfg["images"][mount["image"]]
        rel = rng.choice(sorted(files))
        method = rng.choice(METHODS)
        path = os.path.join(mount["target"], rel)
        try:
            got = pcprobe.read_file(path, method)
        except OSError as exc:
            if exc.errno in GONE:
                counts["gone"] += 1
            elif len(counts["errors"]) < 20:
                counts["errors"].append(f"{path} ({method}, {mount['options']}): {exc}")
            continue
        counts["reads"] += 1
        counts["bytes"] += got["bytes"]
        if got["sha256"] != files[rel] and len(counts["wrong"]) < 20:
            counts["wrong"].append(f"{path} ({method}, {mount['options']}): "
                                   f"{got['sha256'][:12]} not {files[rel][:12]}")
        now = time.monotonic()
        if now - last_write > 1.0:
            last_write = now
            _dump(counters_path, counts)
    _dump(counters_path, counts)


def _dump(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _run(argv):
    return os.spawnvp(os.P_WAIT, argv[0], argv)


def churner(cfg, counters_path, stop_at):
    rng = random.Random(cfg["seed"])
    counts = {"mount": 0, "umount": 0, "lazy_umount": 0, "busy": 0, "remount": 0,
              "drop_caches": 0, "pressure": 0, "errors": []}
    serial = 0
    mounted = {}  # target -> (record, loop device or None)
    last_write = 0.0

    def mount_one():
        nonlocal serial
        serial += 1
        key = rng.choice(sorted(cfg["images"]))
        domain = rng.choice(["d1", "d1", "d2", None])
        options = f"inode_share,domain_id={domain}" if domain else ""
        target = f"{ROOT}/m{serial}"
        image = cfg["uploads"][key]
        loop = None
        if rng.random() < 0.5:
            out = os.popen(f"losetup -f --show -r {image}").read().strip()
            if not out:
                counts["errors"].append(f"losetup {image} failed")
                return
            source, loop = out, out
        else:
            source = image
        answer = pcprobe.do_mount(source, target, options)
        if not answer["ok"]:
            counts["errors"].append(f"mount {key} {options}: {answer['errname']}")
            if loop:
                _run(["losetup", "-d", loop])
            return
        record = {"target": target, "image": key, "options": options or "plain"}
        _dump(f"{LIVE}/m{serial}", record)
        mounted[target] = (f"{LIVE}/m{serial}", loop)
        counts["mount"] += 1

    def umount_one(lazy):
        target = rng.choice(sorted(mounted))
        live_file, loop = mounted[target]
        os.unlink(live_file)  # new readers stop choosing it; running ones may still be in it
        answer = pcprobe.do_umount(target, lazy)
        if not answer["ok"]:
            if answer["errno"] == errno.EBUSY:
                counts["busy"] += 1
                answer = pcprobe.do_umount(target, True)
            if not answer["ok"]:
                counts["errors"].append(f"umount {target}: {answer['errname']}")
                return
        del mounted[target]
        if loop:
            _run(["losetup", "-d", loop])  # autoclear-like: detaches once the mount is gone
        counts["lazy_umount" if lazy else "umount"] += 1

    def remount_one():
        target = rng.choice(sorted(mounted))
        with open(mounted[target][0]) as fh:
            options = json.load(fh)["options"]
        answer = pcprobe.do_remount(target, "" if options == "plain" else options)
        if not answer["ok"]:
            counts["errors"].append(f"remount {target}: {answer['errname']}")
        counts["remount"] += 1

    def pressure():
        live = _live()
        if not live:
            return
        mount = rng.choice(live)
        rel = rng.choice(sorted(cfg["images"][mount["image"]]))
        path = os.path.join(mount["target"], rel)
        try:
            answer = pcprobe.cgroup_read(f"stress{rng.randrange(4)}", path,
                                         rng.choice(["stream", "mmap_shared"]), 8 << 20)
        except (OSError, ValueError) as exc:
            counts["errors"].append(f"read under memory.max: {exc}")
            return
        read = answer["read"]
        if "error" in read:
            if "No such file" not in read["error"] and "Not a directory" not in read["error"]:
                counts["errors"].append(f"{path} under memory.max: {read['error']}")
        elif read["sha256"] != cfg["images"][mount["image"]][rel]:
            counts["errors"].append(f"{path} under memory.max: wrong bytes "
                                    f"{read['sha256'][:12]}")
        counts["pressure"] += 1

    while time.monotonic() < stop_at:
        action = rng.choices(["mount", "umount", "lazy", "remount", "drop", "pressure"],
                             [4 if len(mounted) < cfg["max_mounts"] else 0,
                              2 if len(mounted) > 2 else 0, 1 if len(mounted) > 2 else 0,
                              1 if mounted else 0, 1, 1])[0]
        try:
            if action == "mount":
                mount_one()
            elif action == "umount":
                umount_one(False)
            elif action == "lazy":
                umount_one(True)
            elif action == "remount":
                remount_one()
            elif action == "drop":
                pcprobe.drop_caches(3, sync=False)
                counts["drop_caches"] += 1
            else:
                pressure()
        except OSError as exc:
            counts["errors"].append(f"{action}: {exc}")
        counts["errors"] = counts["errors"][:20]
        time.sleep(rng.uniform(0, cfg["churn_pause"]))
        now = time.monotonic()
        if now - last_write > 1.0:
            last_write = now
            _dump(counters_path, counts)
    for target in list(mounted):
        live_file, loop = mounted.pop(target)
        os.unlink(live_file)
        pcprobe.do_umount(target, True)
        if loop:
            _run(["losetup", "-d", loop])
    _dump(counters_path, counts)


def _collect(paths):
    total = {"reads": 0, "bytes": 0, "gone": 0, "wrong": [], "errors": [], "churn": {}}
    for kind, path in paths:
        try:
            with open(path) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        if kind == "churn":
            total["churn"] = {k: v for k, v in data.items() if k != "errors"}
            total["errors"] += [f"churn: {e}" for e in data["errors"]]
        else:
            for key in ("reads", "bytes", "gone"):
                total[key] += data[key]
            total["wrong"] += data["wrong"]
            total["errors"] += data["errors"]
    return total


HANG_GRACE = 90.0  # seconds after the budget before a child counts as stuck


def _where(pid):
    out = [pcprobe.where_in_kernel(pid)]
    try:
        with open(f"/proc/{pid}/stat") as fh:
            out.insert(0, "state " + fh.read().split(")")[1].split()[0])
    except OSError:
        pass
    return "; ".join(out)


def main():
    cfg = json.loads(sys.argv[1])
    os.makedirs(LIVE, exist_ok=True)
    for name in os.listdir(LIVE):
        os.unlink(os.path.join(LIVE, name))
    started = time.monotonic()
    stop_at = started + cfg["seconds"]
    paths, children = [], []
    for index in range(cfg["readers"] + 1):
        kind = "churn" if index == cfg["readers"] else "reader"
        path = f"{ROOT}/counters-{index}.json"
        paths.append((kind, path))
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                if kind == "churn":
                    churner(cfg, path, stop_at)
                else:
                    reader(cfg, index, path, stop_at)
            finally:
                os._exit(0)
        children.append(pid)
    alive = set(children)
    while alive and time.monotonic() < stop_at + HANG_GRACE:
        time.sleep(cfg["progress"])
        for pid in list(alive):
            if os.waitpid(pid, os.WNOHANG)[0]:
                alive.discard(pid)
        total = _collect(paths)
        total["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(total), flush=True)
    total = _collect(paths)
    # A child still running long after the budget is stuck in the kernel: say where.
    total["stuck"] = [f"pid {pid}: {_where(pid)}" for pid in sorted(alive)]
    total["seconds"] = round(time.monotonic() - started, 1)
    total["done"] = True
    print(json.dumps(total), flush=True)


if __name__ == "__main__":
    main()
