"""Graph → Graph rewrites, one per file (the pipeline comes with its own issue)."""
