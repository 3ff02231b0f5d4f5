"""Campaigns: time-boxed runs of generated inputs against one guest (explore, fuzz, stress,
layouts), each a small declaration that one runner (``runner.py``) carries out."""
