"""Find the gateway's SQLite writer processes (``aigw.sqlite_child``) by the file they write."""

from __future__ import annotations

from pathlib import Path


def writer_processes(db: Path | str) -> list[int]:
    """PIDs of live ``aigw.sqlite_child`` processes writing ``db``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"aigw.sqlite_child" in argv and str(db).encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found
