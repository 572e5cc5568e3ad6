"""Shared test builders (tiny models, fake and trained runs, the fixed workflow)."""
