"""Hostile and damaged images: one trial (mount a damaged copy beside its healthy twin, walk
both, judge), used by the corpus tests and by the seeded fuzzer."""
