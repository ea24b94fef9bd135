"""Log lines leave through a thread, so a reader of stderr that stops reading never stops the gateway.

stderr is a pipe to whatever collects the logs: a terminal, journald, a container
runtime's log driver. When that reader falls behind (a paused pager, a busy log
daemon), the pipe fills (64 KB on Linux) and the next write blocks. Written from
the event loop, as ``logging`` does, that one write stops every request in flight
until the reader resumes: a gateway logging a line per request froze after about
250 requests that way. ``BackgroundStream`` takes lines into a bounded queue and
writes them from a thread, a burst at a time; while the queue is full it drops
new lines and, once writing works again, says how many it dropped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TextIO

MAX_LINES = 10_000  # queued while the reader is stuck (a few MB at most); newer ones are dropped
LINGER_S = 0.005  # a woken writer waits this long so a burst of lines leaves in one write


class BackgroundStream:
    """A write-only text stream for ``logging`` handlers: ``write`` queues, a daemon thread writes."""

    def __init__(self, target: TextIO, max_lines: int = MAX_LINES, linger_s: float = LINGER_S) -> None:
        self.target = target
        self.max_lines = max_lines
        self.linger_s = linger_s
        self.dropped = 0
        self._reported = 0
        self._lines: deque[str] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="aigw-log-writer", daemon=True)
        self._thread.start()

    def write(self, text: str) -> int:
        if len(self._lines) >= self.max_lines:
            self.dropped += 1
        else:
            self._lines.append(text)
            if not self._wake.is_set():
                self._wake.set()
        return len(text)

    def flush(self) -> None:
        """Nothing to do here: lines leave from the writer thread (``close`` waits for them)."""

    def close(self, timeout_s: float = 2.0) -> None:
        """Write what is queued and stop the thread; gives up after ``timeout_s`` if the reader is stuck."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self.linger_s and not self._closing:
                time.sleep(self.linger_s)
            self._wake.clear()
            self._write_queued()
            if self._closing:
                self._write_queued()
                return

    def _write_queued(self) -> None:
        lines = self._lines
        parts = [lines.popleft() for _ in range(len(lines))]
        dropped = self.dropped - self._reported
        if dropped:
            self._reported += dropped
            parts.append(f"aigw: {dropped} log lines dropped: the reader of this log was not keeping up\n")
        if parts:
            try:
                self.target.write("".join(parts))
                self.target.flush()
            except (OSError, ValueError):  # the reader is gone (closed pipe, closed file): nothing to tell
                pass
