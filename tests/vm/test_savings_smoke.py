"""`make savings` end to end on its smallest real pair (Python from Debian 12 and its
updates), two containers, three configurations: the guest helper, the composefs tools,
the store disk and the report all work, and the kernel shares what it must."""

import argparse
import json
from pathlib import Path

from harness.campaign.runner import Settings, run_campaign
from harness.savings.run import SavingsCampaign
from harness.vm.machine import VMConfig


def test_savings_on_the_small_pair_shares_every_identical_file(tmp_path: Path) -> None:
    options = argparse.Namespace(pairs="small", containers="1,2",
                                 configs="erofs,inode_share,composefs")
    settings = Settings(kernel=None, vm=VMConfig(memory_mb=2048), seed=0, minutes=0,
                        out=tmp_path, options=options)
    status = run_campaign(SavingsCampaign(), settings)
    results = json.loads((tmp_path / "savings.json").read_text())
    pair = results["pairs"]["small"]
    assert status == 0 and not pair["errors"], pair["errors"]
    shared = pair["read_all"]["inode_share"]["census"]
    assert shared["identical_files"] > 500
    assert shared["shared_files"] == shared["identical_files"], shared["unshared_largest"]
    assert shared["resident_without_twin_count"] == 0, shared["resident_without_twin"]
    # The control: without inode_share nothing of the new image is resident before its read.
    assert pair["read_all"]["erofs"]["census"]["shared_files"] == 0
    assert pair["read_all"]["inode_share"]["memcg_bytes"] < \
        0.8 * pair["read_all"]["erofs"]["memcg_bytes"]
    for config in ("erofs", "inode_share", "composefs"):
        counts = [p["containers"] for p in pair["containers"][config]["points"]]
        assert counts == [1, 2], (config, counts)
    assert (tmp_path / "savings-small.png").stat().st_size > 0
    assert "small" in (tmp_path / "savings.md").read_text()
    assert (tmp_path / "savings.html").stat().st_size > 0
