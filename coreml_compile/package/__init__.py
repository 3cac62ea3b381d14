"""The package format: what a ``.mlpackage`` written by this project holds, and reading
it back safely.

The compiler writes packages and the runtime reads them; this module is the neutral
ground both import (it imports neither). A package is untrusted input: everything in it
is checked before anything runs (``files.py`` for the folder and its manifest,
``validate.py`` for the execution plan and the fallback graphs).
"""
