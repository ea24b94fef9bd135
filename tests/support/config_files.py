"""A config file in a test's own directory, for the tests of loading it."""

from __future__ import annotations

from pathlib import Path


def write_config(tmp_path: Path, text: str) -> Path:
    """``text`` as ``tmp_path/aigw.yaml``; its path."""
    path = tmp_path / "aigw.yaml"
    path.write_text(text)
    return path
