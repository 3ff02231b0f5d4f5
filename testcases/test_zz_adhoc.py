from conftest import BIG, SHARE
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe


def test_adhoc(erofs_image, mount: Mounter, pagecache: Probe, guest) -> None:
    a = erofs_image("sizes")
    out = []
    for src in ("loop", "block"):
        first = mount(a, SHARE, src)
        target = first.target + "-again"
        guest.vm.run(f"mkdir -p {target}", check=True)
        again = pagecache.mount(first.device, target, "inode_share,domain_id=d2")
        out.append(f"{src}: second mount in d2: {again}")
        out.append(guest.vm.run(f"grep {first.device} /proc/mounts").stdout)
        pagecache.umount(target)
    raise AssertionError("\n".join(out))
