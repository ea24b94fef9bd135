"""The wire between ``aigw serve --workers N``'s workers and the counters their parent keeps.

A frame is a 4-byte big-endian length and a ``marshal`` of plain values (tuples, ints, floats, strings):
about a tenth of what pickling the dataclasses cost, and nothing in it can run code. A call is
``(id, method, args)``, where every scope list is a tuple of ``(kind, id, rpm, tpm, max_parallel,
budget_usd, budget_period)`` (``scope_rows``; the host makes each distinct one a ``Scope`` list once);
an answer is ``(id, True, result)`` with ``Admission`` and ``Reservation`` as tuples of their fields
(``encode_result`` / ``decode_result``), or ``(id, False, "ErrorType: message")``.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Callable
from typing import Any

from aigw.stores.base import Admission, Limits, Reservation, Scope

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # a longer length is a broken peer, not a call
ScopeRow = tuple[str, str, int | None, int | None, int | None, float | None, str]

# method -> (argument positions holding a scope list, positions holding one scope)
SCOPE_ARGS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "gate.enter": ((0, 3), ()), "gate.peek": ((0,), ()), "gate.leave": ((0, 4), ()),
    "limiter.admit": ((0,), ()), "limiter.release": ((0,), ()),
    "budgets.reserve": ((0,), ()), "budgets.settle": ((0,), ()), "budgets.seed": ((), ()),
    "budgets.reached": ((), (0,)), "budgets.forget": ((), (0,)), "budgets.seeded": ((), ()),
    "budgets.spent": ((), (0,)),
}


class CounterHostError(RuntimeError):
    """The host's store raised (a bug, not an outage): its type and message, raised in the worker."""


def frame(obj: Any) -> bytes:
    payload = marshal.dumps(obj)
    return HEADER.pack(len(payload)) + payload


def unframe(buf: bytearray) -> list[Any]:
    """The whole frames at the start of ``buf``, decoded and removed from it (a partial one stays)."""
    out = []
    at = 0
    end = len(buf)
    while end - at >= 4:
        (size,) = HEADER.unpack_from(buf, at)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes")
        if end - at - 4 < size:
            break
        out.append(marshal.loads(memoryview(buf)[at + 4:at + 4 + size]))
        at += 4 + size
    if at:
        del buf[:at]
    return out


def scope_rows(scopes: list[Scope]) -> tuple[ScopeRow, ...]:
    return tuple((s.kind, s.id, s.limits.rpm, s.limits.tpm, s.limits.max_parallel, s.limits.budget_usd,
                  s.limits.budget_period) for s in scopes)


def scopes_of_rows(rows: tuple[ScopeRow, ...]) -> list[Scope]:
    return [Scope(kind, ident, Limits(rpm=rpm, tpm=tpm, max_parallel=mp, budget_usd=usd,  # type: ignore[arg-type]
                                      budget_period=period))  # type: ignore[arg-type]
            for kind, ident, rpm, tpm, mp, usd, period in rows]


def _admission(a: Admission) -> tuple[Any, ...]:
    return (a.allowed, a.scope, a.reason, a.retry_after_s, a.limit_requests, a.remaining_requests, a.limit_tokens,
            a.remaining_tokens, a.reset_requests_s, a.reset_tokens_s, a.taken_at)


def _reservation(r: Reservation | None) -> tuple[Any, ...] | None:
    return None if r is None else (r.allowed, r.scope, r.limit_nano, r.spent_nano)


def _plain(value: Any) -> Any:
    return value


_ENCODE: dict[str, Callable[[Any], Any]] = {
    "gate.enter": lambda v: (_admission(v[0]), _reservation(v[1])),
    "gate.peek": lambda v: [_admission(a) for a in v],
    "limiter.admit": _admission,
    "budgets.reserve": _reservation,
}
_DECODE: dict[str, Callable[[Any], Any]] = {
    "gate.enter": lambda v: (Admission(*v[0]), None if v[1] is None else Reservation(*v[1])),
    "gate.peek": lambda v: [Admission(*a) for a in v],
    "limiter.admit": lambda v: Admission(*v),
    "budgets.reserve": lambda v: Reservation(*v),
}


def encode_result(method: str, value: Any) -> Any:
    return _ENCODE.get(method, _plain)(value)


def decode_result(method: str, value: Any) -> Any:
    return _DECODE.get(method, _plain)(value)
