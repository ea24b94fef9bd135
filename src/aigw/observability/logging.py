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

import atexit
import logging
import re
import sys
import time
from collections.abc import Iterable
from itertools import islice
from typing import Any, TextIO

import orjson

from aigw.observability.log_writer import BackgroundStream

_BASE = list(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
_BASE_N = len(_BASE)  # a record's own attributes come first; `extra` fields follow them
_RESERVED = set(_BASE) | {"message", "asctime"}
REDACTED = "[REDACTED]"
# Secret-shaped strings. Each pattern starts with a literal, which Python's regex engine
# finds with a fast scan, and runs only when that literal is in the line at all.
_SHAPES = [
    (cue, re.compile(pattern))
    for cue, pattern in (
        ("earer", r"(earer\s+)[A-Za-z0-9._~+/=\-]{8,}"),  # Authorization: Bearer <token>
        ("EARER", r"(EARER\s+)[A-Za-z0-9._~+/=\-]{8,}"),
        ("sk-", r"(sk-)[A-Za-z0-9_\-]{20,}"),  # OpenAI-style and virtual keys (not their short display prefix)
        ("key=", r"(key=)[^\s&\"']{8,}"),  # ?api_key=... / ?key=... in URLs and messages
        ("Key=", r"(Key=)[^\s&\"']{8,}"),
        ("KEY=", r"(KEY=)[^\s&\"']{8,}"),
    )
]
_KEEP_CUE = r"\g<1>" + REDACTED


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

    def known(self, text: str) -> str:
        """``text`` without the secrets config named (not the shape patterns: for error messages a client
        reads, where a model name like ``task-...`` must survive)."""
        for s in self._secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def __call__(self, line: str) -> str:
        for s in self._secrets:
            if s in line:
                line = line.replace(s, REDACTED)
        for cue, pattern in _SHAPES:
            if cue in line:
                line = pattern.sub(_KEEP_CUE, line)
        return line


SCRUBBER = Scrubber()


def protect_secrets(secrets: Iterable[str]) -> None:
    """Never write these strings to a log line (called by ``app.py`` with config's secrets)."""
    SCRUBBER.add(secrets)


FIELDS = "aigw_fields"


def log_fields(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """Log one event with structured fields: like ``extra=``, without the caller lookup and the
    per-key copying, for lines written once per request.

    When the line would only reach the JSON handler ``configure`` installed (the usual
    case), it is formatted and written directly, without a LogRecord; any other set-up
    (more handlers, filters, a test's capture) gets a normal record."""
    if not logger.isEnabledFor(level):
        return
    root = logging.root
    if not logger.handlers and logger.propagate and len(root.handlers) == 1:
        handler = root.handlers[0]
        if type(handler) is JsonLineHandler and level >= handler.level and not handler.filters:
            handler.write_fields(level, logger.name, msg, fields)
            return
    record = logger.makeRecord(logger.name, level, "", 0, msg, (), None)
    record.__dict__[FIELDS] = fields
    logger.handle(record)


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

    def format_fields(self, level: int, name: str, msg: str, fields: dict[str, Any]) -> str:
        """The line ``format`` would make of a ``log_fields`` record, without the record."""
        now = time.time()
        sec = int(now)
        if sec != self._sec:
            self._sec, self._stamp = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        out: dict[str, Any] = {"ts": f"{self._stamp}.{int((now - sec) * 1000):03d}Z",
                               "level": _LEVELS.get(level) or logging.getLevelName(level).lower(),
                               "logger": name, "msg": msg}
        out.update(fields)
        return self._scrub(orjson.dumps(out, default=str).decode())

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._ts(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__.get(FIELDS)
        if fields is not None:  # log_fields: the fields are one dict, nothing else to look for
            out.update(fields)
        else:
            for key, value in islice(record.__dict__.items(), _BASE_N, None):
                if key not in _RESERVED and key[0] != "_":
                    out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return self._scrub(orjson.dumps(out, default=str).decode())


_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}


class JsonLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The JSON handler ``configure`` installs; ``log_fields`` writes to it without a LogRecord."""

    def __init__(self, stream: TextIO | BackgroundStream) -> None:
        super().__init__(stream)
        self.json = JsonFormatter()
        self.setFormatter(self.json)

    def write_fields(self, level: int, name: str, msg: str, fields: dict[str, Any]) -> None:
        try:
            line = self.json.format_fields(level, name, msg, fields)
            with self.lock:  # type: ignore[union-attr]
                self.stream.write(line + self.terminator)
                self.stream.flush()
        except Exception:  # as logging does: a broken log line never breaks the caller
            self.handleError(logging.LogRecord(name, level, "", 0, msg, None, None))


class TextFormatter(logging.Formatter):
    """Human-readable lines; ``extra`` fields follow the message as ``key=value``."""

    def __init__(self, scrub: Scrubber = SCRUBBER) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        items = record.__dict__.get(FIELDS) or record.__dict__
        extra = [f"{k}={_value(v)}" for k, v in items.items()
                 if k not in _RESERVED and not k.startswith("_") and k != FIELDS and v not in (None, "", [], 0)]
        if extra:
            first, nl, rest = line.partition("\n")
            line = first + " " + " ".join(extra) + nl + rest
        return self._scrub(line)


_PLAIN = re.compile(r"[^\s\"=\x00-\x1f\x7f]*")


def _value(v: Any) -> Any:
    """A field's value as the text line shows it: quoted (JSON escapes) when a client's text such as a model
    name holds a space, a quote, ``=`` or a control character, so it can neither add a field nor a line."""
    if isinstance(v, str) and not _PLAIN.fullmatch(v):
        return orjson.dumps(v).decode()
    return v


_background: BackgroundStream | None = None  # stderr's writer thread, once ``configure`` made one


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """The root handler: JSON or text lines to ``stream``, or to stderr through a writer thread
    (``log_writer``: a reader of stderr that stops reading must not stop the event loop)."""
    global _background
    # Neither format prints thread or process names: skip looking them up for every record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    if _background is not None:  # configured again (a worker, a test): the old thread writes what it has
        _background.close()
        _background = None
    out: TextIO | BackgroundStream
    if stream is not None:
        out = stream
    else:
        out = _background = BackgroundStream(sys.stderr)
        atexit.register(_background.close)
    handler: logging.Handler
    if fmt == "json":
        handler = JsonLineHandler(out)
    else:
        handler = logging.StreamHandler(out)
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    pool = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, OneLine) for f in pool.filters):
        pool.addFilter(OneLine())


class OneLine(logging.Filter):
    """A record's message without its traceback. For asyncpg's pool, which logs a full traceback each time it
    fails to reconnect (twice a second during a PostgreSQL outage, with two pools): the gateway reports the
    outage itself (store errors, /health/ready), and the error's own line says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            record.args = None
            record.exc_info = record.exc_text = None
        return True
