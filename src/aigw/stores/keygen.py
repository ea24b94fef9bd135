"""Key secrets and ids. A secret is shown once; only its SHA-256 and a display prefix are kept.

SHA-256 without a salt is right here: the secrets are 190-bit random strings, not
passwords, so there is nothing to brute-force, and the lookup stays one hash.
"""

from __future__ import annotations

import hashlib
import os
import secrets

KEY_PREFIX = "sk-aigw-"
DISPLAY_CHARS = 12  # "sk-aigw-" plus 4 characters of the secret


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_CHARS]


def new_id(kind: str) -> str:
    """``ten_…``, ``prj_…``, ``key_…``: short random ids that say what they name."""
    return f"{kind}_{os.urandom(8).hex()}"
