"""Root conftest: loads the harness plugin when it is not installed (a plain checkout).

Installed (`make venv`), the plugin comes through its pytest11 entry point of the same name
and this line changes nothing.
"""

pytest_plugins = ["harness.plugin", "pytester"]
