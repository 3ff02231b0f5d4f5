"""Stateful exploration: random sequences checked against a model of page cache sharing."""
