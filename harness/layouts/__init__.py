"""`make layouts`: valid images generated across mkfs.erofs's layouts (trees.py, mkfs.py),
built and judged by erofs-utils on the host (build.py), mounted every way in the guest and
checked against their trees and the sharing model (check.py, model.py), searched and shrunk
with hypothesis (search.py), findings written as reports (found.py); the campaign is run.py.
"""
