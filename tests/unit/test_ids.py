"""Time-ordered ids: unique without a system call per id, ordered by time, distinct per process."""

from __future__ import annotations

import os

from aigw import ids
from aigw.http.request import HttpRequest
from aigw.ids import time_ordered_id
from aigw.stores.sql_ledger import new_record_id


def test_ids_are_unique_and_grow_with_time() -> None:
    made = [time_ordered_id("x_") for _ in range(70_000)]  # more than the counter's 16 bits
    assert len(set(made)) == len(made)
    times = [int(i[2:18], 16) for i in made]
    assert times == sorted(times)


def test_a_forked_child_gets_its_own_tag() -> None:
    parent = ids._tag
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its tag, then leave without running any test machinery
        os.write(write, ids._tag.encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child and child != parent


def test_ledger_rows_and_requests_get_time_ordered_ids() -> None:
    scope = {"method": "POST", "path": "/v1/chat/completions", "headers": []}
    first, second = HttpRequest(scope, None).request_id, HttpRequest(scope, None).request_id
    assert first.startswith("req_") and second.startswith("req_") and first < second
    assert new_record_id().startswith("sp_") and new_record_id() < new_record_id()


def test_a_client_request_id_is_kept_when_safe() -> None:
    def rid(value: bytes) -> str:
        return HttpRequest({"method": "GET", "path": "/", "headers": [(b"x-request-id", value)]}, None).request_id
    assert rid(b"client-42") == "client-42"
    assert rid(b"bad id with spaces").startswith("req_")
