"""EROFS page cache sharing test harness: kernels, guests, VMs and a pytest plugin."""

__version__ = "0.1.0"
