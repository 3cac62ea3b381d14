"""The ``coreml-compile`` command line."""
