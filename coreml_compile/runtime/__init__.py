"""Executors that run compiled models (reference, Core ML, torch fallback)."""
