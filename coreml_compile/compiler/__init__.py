"""Frontends → IR → lowering: everything between a model and a Core ML program."""
