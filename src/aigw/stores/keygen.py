"""Key secrets and ids. A secret is shown once; only its SHA-256 and a display prefix are kept.

SHA-256 without a salt is right here: the secrets are 190-bit random strings, not
passwords, so there is nothing to brute-force, and the lookup stays one hash.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets

KEY_PREFIX = "sk-aigw-"
DISPLAY_CHARS = 12  # "sk-aigw-" plus 4 characters of the secret
TOKEN_BYTES = 24  # random bytes of a secret: 32 base64url characters (no padding) after the prefix
_SHAPE = re.compile(re.escape(KEY_PREFIX) + "[A-Za-z0-9_-]{" + str(TOKEN_BYTES * 4 // 3) + "}")


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def well_formed(secret: str) -> bool:
    """Whether ``secret`` has the shape ``new_secret`` gives every key (the only kind the database holds):
    anything else cannot be a virtual key, so it is refused without reading the database."""
    return _SHAPE.fullmatch(secret) is not None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_CHARS]


def new_id(kind: str) -> str:
    """``ten_…``, ``prj_…``, ``key_…``: short random ids that say what they name."""
    return f"{kind}_{os.urandom(8).hex()}"
