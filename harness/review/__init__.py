"""``make review``: a patch series from the list in, a reply a maintainer can send out."""
