"""Frontends translate a source model into the IR; they do not optimise."""
