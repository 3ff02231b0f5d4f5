"""``python -m harness``: the command line (harness/cli/main.py)."""

import sys

try:
    from harness.cli.main import main
except KeyboardInterrupt:
    # Ctrl-C while the modules load: nothing is started yet, so nothing to stop, and a
    # traceback from the import machinery would only hide that.
    print("harness: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
