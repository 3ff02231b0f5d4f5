"""Memory for N mounts of images with the same content, each file read through every mount:
Cached growth with and without inode_share, against the ideal of one copy (what one mount
alone costs, measured as N = 1)."""

from __future__ import annotations

from harness.bench.campaign import BenchCampaign
from harness.campaign.runner import CampaignRun, Outcome, Verdict
from harness.core.paths import CATALOG
from harness.erofs.images import build_image, load_catalog
from harness.erofs.tools import provide
from harness.guest.handle import Guest
from harness.guest.mounts import Mounter
from harness.guest.session import GuestSession

COUNTS = (1, 2, 4, 8, 16)


class SharingBench(BenchCampaign):
    name = "bench-sharing"
    help = "page cache for N mounts of twin images, with and without inode_share"

    def prepare(self, run: CampaignRun) -> None:
        tools, catalog = provide(), load_catalog(CATALOG)
        self.a = build_image(catalog.image("sizes"), tools)
        self.b = build_image(catalog.image("renamed"), tools)

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        # Asked of the booted kernel: a kernel given without its config has it read back.
        if not run.kernel.features["page_cache_share"]:
            return Outcome(Verdict.NO_VERDICT, {}, [
                f"kernel {run.kernel.release} has no page cache sharing to measure"])
        probe = session.probe
        rows = []
        for n in COUNTS:
            result = {}
            for label, options in (("plain", ""), ("shared", "inode_share,domain_id=bench")):
                run.say(f"{n} mounts, {label}")
                guest = Guest(session, f"bench-{n}-{label}")
                mounter = Mounter(guest)
                mounts = [mounter(self.a if i % 2 == 0 else self.b, options, "loop")
                          for i in range(n)]
                paths = [m.path("four-mib" if m.image is self.a else "h") for m in mounts]
                probe.drop_caches()
                with probe.batch() as batch:
                    before = batch.meminfo()
                    for path in paths:
                        batch.read(path)
                    after = batch.meminfo()
                result[label] = after.value["Cached"] - before.value["Cached"]
                guest.cleanup()
            rows.append({"mounts": n, "plain_kib": result["plain"],
                         "shared_kib": result["shared"]})
        ideal = rows[0]["plain_kib"]  # one mount alone: one copy
        print(f"| {'N mounts':>8} | {'no sharing KiB':>14} | {'sharing KiB':>11} | "
              f"{'ideal KiB':>9} | {'saving':>6} | {'ideal saving':>12} |")
        for row in rows:
            plain, shared = row["plain_kib"], row["shared_kib"]
            print(f"| {row['mounts']:>8} | {plain:>14} | {shared:>11} | {ideal:>9} | "
                  f"{1 - shared / plain:>6.0%} | {1 - ideal / plain:>12.0%} |")
        print("(4 MiB file read through every loop mount; Cached growth includes the loop "
              "devices' backing-file pages on the guest's ext4)", flush=True)
        return Outcome(Verdict.CLEAN, {"rows": rows, "ideal_kib": ideal})
