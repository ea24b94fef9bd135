"""Shared hot state in Redis (scaled mode)."""
