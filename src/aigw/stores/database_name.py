"""The database as an operator should see it in a message: a SQLite file's absolute path, a server's URL without
its password."""

from __future__ import annotations

import os
import urllib.parse

from aigw.stores.sqlite.db import path_of


def shown_database(url: str) -> str:
    """The database as the operator should see it: a SQLite file's absolute path (a relative database_url is
    relative to where the command runs), a server's URL without its password."""
    if url.startswith("sqlite:"):
        path = path_of(url)
        return path if path == ":memory:" else os.path.abspath(path)
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return url.split("://", 1)[0] + "://..."
