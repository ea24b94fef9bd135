"""Log lines through a writer thread: in order, all of them at close, and a reader that stops reading
stops nothing but the log (lines past the queue's bound are counted and reported)."""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time

from aigw.observability import logging as aigw_logging
from aigw.observability.log_writer import BackgroundStream


def test_lines_arrive_in_order_and_all_of_them_by_close() -> None:
    target = io.StringIO()
    stream = BackgroundStream(target)
    for i in range(1000):
        stream.write(f"line {i}\n")
    stream.close()
    assert target.getvalue().splitlines() == [f"line {i}" for i in range(1000)]


def test_a_burst_leaves_in_few_writes() -> None:
    class Counting(io.StringIO):
        writes = 0

        def write(self, s: str) -> int:
            self.writes += 1
            return super().write(s)

    target = Counting()
    stream = BackgroundStream(target, linger_s=0.05)
    for i in range(500):
        stream.write(f"line {i}\n")
    stream.close()
    assert len(target.getvalue().splitlines()) == 500 and target.writes <= 3


def test_a_reader_that_stops_reading_never_blocks_the_writer_and_hears_what_was_dropped() -> None:
    read_fd, write_fd = os.pipe()  # nobody reads it yet: it fills after 64 KB
    target = os.fdopen(write_fd, "w")
    stream = BackgroundStream(target, max_lines=100)
    line = "x" * 99 + "\n"

    def log_a_lot() -> None:
        for _ in range(5000):  # 500 KB: far past what the pipe and the queue hold
            stream.write(line)

    writer = threading.Thread(target=log_a_lot, daemon=True)
    started = time.monotonic()
    writer.start()
    writer.join(5)
    assert not writer.is_alive() and time.monotonic() - started < 5  # a plain write would still be stuck
    assert stream.dropped > 0
    dropped = stream.dropped
    got = b""
    reader = os.fdopen(read_fd, "rb")
    deadline = time.monotonic() + 10
    while b"dropped" not in got:  # reading again: the queued lines, then the count of the dropped ones
        assert time.monotonic() < deadline, "no report of the dropped lines"
        got += os.read(reader.fileno(), 1 << 16)
    stream.close()
    target.close()
    reader.close()
    assert f"aigw: {dropped} log lines dropped".encode() in got
    assert got.count(line.encode()) + dropped == 5000  # each line written or counted, none lost silently


def test_configure_writes_to_stderr_through_the_thread_and_a_new_configure_ends_the_old_one() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        aigw_logging.configure("info", "json")
        first = root.handlers[0]
        assert isinstance(first, logging.StreamHandler) and isinstance(first.stream, BackgroundStream)
        assert first.stream.target is sys.stderr
        aigw_logging.configure("info", "text", stream=io.StringIO())  # a caller's own stream: written directly
        assert not first.stream._thread.is_alive()
        assert isinstance(root.handlers[0], logging.StreamHandler)
        assert isinstance(root.handlers[0].stream, io.StringIO)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_a_process_that_exits_right_after_logging_loses_no_line() -> None:
    """The last lines before an exit (a failed start-up's reason, say) are written at exit."""
    import subprocess

    script = ("import logging, sys\n"
              "from aigw.observability.logging import configure\n"
              "configure('info', 'text')\n"
              "for i in range(2000): logging.getLogger('t').info('line %d', i)\n"
              "logging.getLogger('t').error('the reason it stops')\n"
              "sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    lines = done.stderr.splitlines()
    assert len(lines) == 2001 and lines[-1].endswith("the reason it stops")
