"""Address checks of the config: the Redis URL shared by ``redis_url`` and ``cache.redis_url``, a deployment's
``api_base`` and the server's bind host (a leaf: the models and the CLI import it)."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")  # what redis-py's from_url accepts


def redis_scheme(value: str) -> str:
    """``value`` when empty or a scheme redis-py opens (in any case, as redis-py reads it); else ValueError.
    The value is not echoed: it may hold a password."""
    if value and not value.lower().startswith(REDIS_SCHEMES):
        raise ValueError("must be empty or start with redis://, rediss:// or unix:// "
                         "(e.g. redis://127.0.0.1:6379/0)")
    return value


def http_url(value: str) -> str:
    """``value`` when empty or an http(s) URL with a host, as the upstream client needs; else ValueError.
    The value is not echoed: it may hold credentials."""
    if not value:
        return value
    why = ""
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 -- parsing it is the check
    except ValueError as exc:  # an unclosed '[', a port that is no number
        why = f" ({exc})"
    else:
        if parts.scheme.lower() not in ("http", "https"):
            why = " (it has no http:// or https:// at its start)" if "://" not in value else ""
        elif not parts.hostname:
            why = " (no host)"
        elif any(c.isspace() or not c.isprintable() for c in value):
            why = " (it holds a space or a control character)"
        else:
            return value
    raise ValueError(f"must be an http:// or https:// URL with a host, e.g. https://api.openai.com/v1 or "
                     f"http://127.0.0.1:8000/v1{why}")


def bind_host(value: str) -> str:
    """``value`` when the server can be told to bind it: an IP address or a host name; else ValueError saying
    what is wrong (``0.0.0.0:4000`` and ``http://localhost`` were "unknown error -2" when binding)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        if len(value) <= 253 and _HOSTNAME.fullmatch(value):
            return value
    hint = ""
    if "://" in value:
        hint = " (no scheme)"
    elif value.count(":") == 1 and value.rsplit(":", 1)[1].isdigit():
        hint = " (the port goes in server.port or --port)"
    raise ValueError(f"must be an IP address or a host name, e.g. 127.0.0.1 or 0.0.0.0, got {value!r}{hint}")
