"""The Redis URL check shared by ``redis_url`` and ``cache.redis_url`` (a leaf: both models import it)."""

from __future__ import annotations

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")  # what redis-py's from_url accepts


def redis_scheme(value: str) -> str:
    """``value`` when empty or a scheme redis-py opens (in any case, as redis-py reads it); else ValueError.
    The value is not echoed: it may hold a password."""
    if value and not value.lower().startswith(REDIS_SCHEMES):
        raise ValueError("must be empty or start with redis://, rediss:// or unix:// "
                         "(e.g. redis://127.0.0.1:6379/0)")
    return value
