"""The fingerprint values the suite's catalog chose by hand keep the shapes its tests need
(testcases/test_fingerprint_shapes.py): the collision is checked with the xxhash package,
the kernel's hash of a shared inode (xxh32 of domain, NUL, value; seed 0)."""

from pathlib import Path

import xxhash

from harness.erofs.images import load_catalog

CATALOG = Path(__file__).resolve().parents[2] / "testcases" / "images.yaml"


def _values(tree: str) -> dict[str, bytes]:
    spec = load_catalog(CATALOG).image(tree)
    return {f.path: dict(f.xattrs)["user.harness.fp"].encode() for f in spec.files}


def test_the_collision_pair_has_one_shared_inode_hash_in_domain_d1() -> None:
    values = _values("fp-shapes")
    a, b = values["collide-a"], values["collide-b"]
    assert a != b and len(a) == len(b)
    assert xxhash.xxh32_intdigest(b"d1\0" + a, 0) == xxhash.xxh32_intdigest(b"d1\0" + b, 0)
    assert xxhash.xxh32_intdigest(b"d2\0" + a, 0) != xxhash.xxh32_intdigest(b"d2\0" + b, 0)


def test_the_other_shapes_are_what_their_names_say() -> None:
    values = _values("fp-shapes")
    assert values["prefix-long"].startswith(values["prefix-short"])
    assert values["nul-one"].split(b"\0")[0] == values["nul-two"].split(b"\0")[0]
    assert values["nul-one"] != values["nul-two"]
    assert values["empty-a"] == values["empty-b"] == b""
    spec = load_catalog(CATALOG).image("fp-oversized")
    assert spec.block_size == 1024
    assert all(len(v) > 1024 for v in _values("fp-oversized").values())
