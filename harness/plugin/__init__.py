"""The pytest plugin, loaded through the ``pytest11`` entry point named ``harness.plugin``.

Hooks and fixtures live in separate modules; pytest loads both from here, so a new hook or
fixture needs no list kept in step by hand.
"""

pytest_plugins = ["harness.plugin.hooks", "harness.plugin.fixtures"]
