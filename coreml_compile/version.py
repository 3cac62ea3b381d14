"""The package version (a leaf, so every layer can name it)."""

__version__ = "0.1.0"
