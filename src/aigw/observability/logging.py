"""Log set-up: one line per event, JSON or text, never a key or a prompt.

Every line goes through one scrubber before it is written: the secrets the
gateway knows (master key, provider API keys, secret-looking upstream headers)
are replaced by ``[REDACTED]``, and so is anything shaped like a bearer token or
an ``sk-`` key, whatever code logged it and whatever exception carried it.
Handlers are process-global in ``logging``, so the scrubber's secret set is too:
``protect_secrets`` adds to it when a gateway is built.

Prompts and completions are kept out by construction: request lines carry
metadata only, unless ``observability.log_bodies`` is on (then the observe stage
adds PII-redacted, size-capped bodies).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
REDACTED = "[REDACTED]"
_SHAPES = re.compile(
    r"(?i)(?<=bearer )[A-Za-z0-9._~+/=\-]{8,}"  # Authorization: Bearer <token>
    r"|\bsk-[A-Za-z0-9_\-]{12,}"  # OpenAI-style and our own virtual keys
    r"|(?<=api[_-]key=)[^\s&\"']{8,}"  # ?api_key=... / key=... in URLs and messages
    r"|(?<=[?&]key=)[^\s&\"']{8,}"
)


class Scrubber:
    """Removes known secrets and secret-shaped strings from a finished log line."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            if s and len(s) >= 6 and s not in self._secrets:
                self._secrets.append(s)
        self._secrets.sort(key=len, reverse=True)  # longest first: a key containing another

    def clear(self) -> None:
        self._secrets.clear()

    def __call__(self, line: str) -> str:
        for s in self._secrets:
            if s in line:
                line = line.replace(s, REDACTED)
        return _SHAPES.sub(REDACTED, line)


SCRUBBER = Scrubber()


def protect_secrets(secrets: Iterable[str]) -> None:
    """Never write these strings to a log line (called by ``app.py`` with config's secrets)."""
    SCRUBBER.add(secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields become top-level keys."""

    def __init__(self, scrub: Scrubber = SCRUBBER) -> None:
        super().__init__()
        self._scrub = scrub
        self._sec = -1
        self._stamp = ""

    def _ts(self, record: logging.LogRecord) -> str:
        sec = int(record.created)
        if sec != self._sec:  # strftime once a second, not once a line
            self._sec, self._stamp = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._ts(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return self._scrub(orjson.dumps(out, default=str).decode())


class TextFormatter(logging.Formatter):
    """Human-readable lines; ``extra`` fields follow the message as ``key=value``."""

    def __init__(self, scrub: Scrubber = SCRUBBER) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{k}={v}" for k, v in record.__dict__.items()
                 if k not in _RESERVED and not k.startswith("_") and v not in (None, "", [], 0)]
        if extra:
            first, nl, rest = line.partition("\n")
            line = first + " " + " ".join(extra) + nl + rest
        return self._scrub(line)


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
