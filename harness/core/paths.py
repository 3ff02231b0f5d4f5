"""Where the project's files are: one place, so that moving a module moves no path."""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # harness/
PROJECT = PACKAGE.parent  # the checkout: testcases/, kconfigs/, vmimages/, reports/
DATA = PACKAGE / "data"
TEMPLATES = PACKAGE / "templates"
CATALOG = PROJECT / "testcases" / "images.yaml"
KCONFIGS = PROJECT / "kconfigs"
VMIMAGES = PROJECT / "vmimages"
ARTIFACTS = PROJECT / "artifacts"
