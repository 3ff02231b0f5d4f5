"""``python3 -m pcprobe --serve`` (or one batch: ``python3 -m pcprobe '<json list>'``)."""

from pcprobe.server import main

main()
