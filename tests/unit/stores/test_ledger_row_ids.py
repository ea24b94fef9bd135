"""Ledger row ids: unique without a system call per row, ordered by time, distinct per process."""

from __future__ import annotations

import os

from aigw.stores import sql_ledger
from aigw.stores.sql_ledger import new_record_id


def test_ids_are_unique_and_grow_with_time() -> None:
    ids = [new_record_id() for _ in range(70_000)]  # more than the counter's 16 bits
    assert len(set(ids)) == len(ids)
    times = [int(i[3:19], 16) for i in ids]
    assert times == sorted(times)


def test_a_forked_child_gets_its_own_tag() -> None:
    parent = sql_ledger._PROCESS_TAG
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its tag, then leave without running any test machinery
        os.write(write, sql_ledger._PROCESS_TAG.encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child and child != parent
