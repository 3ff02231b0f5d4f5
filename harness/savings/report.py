"""The savings report: a Markdown table per pair (what the README carries), a plot per pair
of memory against the number of containers (matplotlib), and an HTML page with both.

Memory is the page cache charged to the containers' memory cgroups (memcg ``file``); the
``Cached`` growth of the whole guest is kept beside it in savings.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from harness.core.paths import TEMPLATES

LABELS = {"erofs": "EROFS, no sharing", "inode_share": "EROFS inode_share",
          "inode_share_buffered": "EROFS inode_share, buffered image file",
          "composefs": "composefs", "overlay": "overlayfs of the trees"}
# The feature's cover letter (v17/v18): two minor versions of one container image.
COVER_LETTER = {"read_all": "16-49%", "containers": "4-47%"}
MIB = 2**20


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f} MiB"


def _above(value: float | None, ideal: float | None) -> str:
    if value is None or not ideal:
        return "-"
    return f"{100.0 * (value - ideal) / ideal:+.1f}%"


def _saving(value: float | None, baseline: float | None) -> str:
    if value is None or not baseline:
        return "-"
    return f"{100.0 * (baseline - value) / baseline:.1f}%"


def rows(pair: dict[str, Any], configs: list[str], most: int) -> list[dict[str, str]]:
    """One row per configuration, then the ideal: memory, saving against no sharing, and
    how far above the ideal, for reading everything and for ``most`` containers."""
    def at_most(config: str) -> float | None:
        for point in pair["containers"].get(config, {}).get("points", []):
            if point["containers"] == most:
                return float(point["memcg_bytes"])
        return None

    def read_all(config: str) -> float | None:
        entry = pair["read_all"].get(config)
        return float(entry["memcg_bytes"]) if entry else None

    def read_data(config: str) -> float | None:
        entry = pair["read_all"].get(config)
        return float(entry["memcg_bytes"] - entry["metadata_bytes"]) if entry else None

    def per_further(config: str) -> str:
        """What each container past the second adds: the cost of one more mount of an
        image whose files are already in the cache."""
        points = {p["containers"]: p["memcg_bytes"]
                  for p in pair["containers"].get(config, {}).get("points", [])}
        if 2 not in points or most <= 2 or most not in points:
            return "-"
        return _mib((points[most] - points[2]) / (most - 2))

    ideal_read = float(pair["ideal"]["read_all"])
    ideal_run = pair["ideal"]["containers"].get(str(most))
    base_read, base_run = read_all("erofs"), at_most("erofs")
    out = []
    for config in configs:
        entry = pair["read_all"].get(config) or {}
        reads = zip(entry.get("read_bytes", []), entry.get("read_seconds", []), strict=True)
        first = next(iter(reads), None)
        out.append({
            "config": LABELS.get(config, config),
            "read_mem": _mib(read_all(config)), "read_saving": _saving(read_all(config), base_read),
            "read_ideal": _above(read_all(config), ideal_read),
            "data_ideal": _above(read_data(config), ideal_read),
            "run_mem": _mib(at_most(config)), "run_saving": _saving(at_most(config), base_run),
            "run_ideal": _above(at_most(config), ideal_run),
            "further": per_further(config),
            "ttfb": f"{1000 * entry['ttfb_seconds']:.0f} ms" if entry else "-",
            "throughput": f"{first[0] / MIB / max(first[1], 1e-6):.0f} MiB/s" if first else "-",
            "error": pair["errors"].get(config, ""),
        })
    out.append({"config": "ideal (unique pages touched)", "read_mem": _mib(ideal_read),
                "read_saving": _saving(ideal_read, base_read), "read_ideal": "", "data_ideal": "",
                "run_mem": _mib(ideal_run), "run_saving": _saving(ideal_run, base_run),
                "run_ideal": "", "further": "", "ttfb": "", "throughput": "", "error": ""})
    return out


def census_lines(pair: dict[str, Any], configs: list[str]) -> list[str]:
    """Per configuration: how many of the new image's files with a byte-identical twin in
    the old image were served from the old one's cache, and what was not."""
    out = []
    for config in configs:
        entry = pair["read_all"].get(config)
        if not entry or "census" not in entry:
            continue
        c = entry["census"]
        text = (f"{LABELS.get(config, config)}: {c['shared_files']} of {c['identical_files']} "
                f"identical files shared ({c['shared_bytes'] / MIB:.1f} MiB); "
                f"metadata {entry['metadata_bytes'] / MIB:.1f} MiB of the charge")
        if c["unshared_files"]:
            largest = ", ".join(f"{u['path']} ({u['size']} B)" for u in c["unshared_largest"][:3])
            text += (f"; not shared: {c['unshared_files']} files, "
                     f"{c['unshared_bytes'] / MIB:.1f} MiB (largest: {largest})")
        if c["resident_without_twin_count"]:
            text += (f"; RESIDENT WITHOUT A TWIN: {c['resident_without_twin_count']} files "
                     f"({', '.join(c['resident_without_twin'][:3])})")
        out.append(text)
    return out


def markdown(results: dict[str, Any]) -> str:
    most = max(results["containers"])
    lines = []
    for name, pair in results["pairs"].items():
        same = pair["identity"]
        lines += [
            f"**{name}**: {len(pair['packages']['new'])} packages, {same['files_new']} files, "
            f"{same['bytes_new'] / MIB:.0f} MiB; identical between the versions: "
            f"{same['files_pct']}% of files, {same['bytes_pct']}% of bytes.",
            "",
            f"| configuration | read all: memory | saving | above ideal | data above ideal | "
            f"{most} containers: memory | saving | above ideal | each further container | "
            "first byte | read (cold) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in rows(pair, results["configs"], most):
            note = f" (failed: {row['error'][:80]})" if row["error"] else ""
            lines.append(f"| {row['config']}{note} | {row['read_mem']} | {row['read_saving']} | "
                         f"{row['read_ideal']} | {row['data_ideal']} | {row['run_mem']} | "
                         f"{row['run_saving']} | {row['run_ideal']} | {row['further']} | "
                         f"{row['ttfb']} | {row['throughput']} |")
        lines += [f"| the cover letter's savings | | {COVER_LETTER['read_all']} | | | | "
                  f"{COVER_LETTER['containers']} | | | | |", ""]
        lines += [f"- {line}" for line in census_lines(pair, results["configs"])] + [""]
    return "\n".join(lines)


def plot(name: str, pair: dict[str, Any], configs: list[str], counts: list[int],
         path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    for config in configs:
        points = pair["containers"].get(config, {}).get("points", [])
        if points:
            axes.plot([p["containers"] for p in points],
                      [p["memcg_bytes"] / MIB for p in points], marker="o",
                      label=LABELS.get(config, config))
    ideal = pair["ideal"]["containers"]
    axes.plot(counts, [ideal.get(str(c), 0) / MIB for c in counts],
              linestyle="--", color="black", label="ideal (unique pages touched)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(counts, [str(c) for c in counts])
    axes.set_xlabel("containers (alternating the old and the new image)")
    axes.set_ylabel("page cache charged (MiB)")
    axes.set_title(f"{name}: memory of N containers")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(results: dict[str, Any], out: Path) -> Path:
    """savings.md (the table, also printed), a plot per pair and savings.html: its path."""
    table = markdown(results)
    (out / "savings.md").write_text(table + "\n")
    plots = {}
    for name, pair in results["pairs"].items():
        path = out / f"savings-{name}.png"
        plot(name, pair, results["configs"], results["containers"], path)
        plots[name] = path.name
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, autoescape=True)
    most = max(results["containers"])
    html = env.get_template("savings.html.j2").render(
        results=results, plots=plots, most=most,
        tables={name: rows(pair, results["configs"], most)
                for name, pair in results["pairs"].items()}, cover=COVER_LETTER,
        census={name: census_lines(pair, results["configs"])
                for name, pair in results["pairs"].items()})
    (out / "savings.html").write_text(html)
    print(table)
    return out / "savings.html"
