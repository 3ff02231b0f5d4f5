"""The pytest plugin, loaded through the ``pytest11`` entry point named ``harness.plugin``.

Hooks and fixtures live in separate modules (as in labgrid's pytestplugin); this module
only gathers them so that pytest registers one plugin.
"""

from .fixtures import (
                       erofs_image,
                       erofs_tools,
                       guest,
                       guest_image,
                       image_catalog,
                       kernel,
                       mount,
                       pagecache,
                       vm,
                       vm_pool,
)
from .hooks import (
                       pytest_addoption,
                       pytest_collection_modifyitems,
                       pytest_configure,
                       pytest_report_header,
                       pytest_runtest_call,
                       pytest_runtest_makereport,
                       pytest_runtest_setup,
                       pytest_sessionfinish,
)

__all__ = ["erofs_image", "erofs_tools", "guest", "guest_image", "image_catalog", "kernel",
           "mount", "pagecache", "pytest_addoption", "pytest_collection_modifyitems",
           "pytest_configure", "pytest_report_header", "pytest_runtest_call",
           "pytest_runtest_makereport", "pytest_runtest_setup", "pytest_sessionfinish", "vm",
           "vm_pool"]
