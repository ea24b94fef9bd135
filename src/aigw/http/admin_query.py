"""An admin endpoint's query string, read strictly: a parameter that would be ignored is a 400 instead.

Read as absent, ``?limt=5``, ``?tenant=`` (an unset shell variable) or ``?tenant=a&tenant=b`` gave an answer
that looks right and is not the one asked for: every tenant's keys instead of one tenant's, the whole history
instead of a month, a purge of every model's answers. So each endpoint names the parameters it reads, and
every parameter must be one of them, given once and not empty; the 400 names it in ``param`` (OpenAI error
shape). ``HttpRequest.query`` drops blank values and keeps the last of a repeat, so the raw query string is
read here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl

from aigw import errors
from aigw.http.request import HttpRequest


def strict_query(req: HttpRequest, known: Sequence[str], hints: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each parameter of ``req``'s query once, by name; an unknown, repeated or empty one is a 400 naming it.

    ``known``: the endpoint's parameters, in the order its error lists them (none: it takes no parameters).
    ``hints``: what to say of a likely mistake instead of the list (``{"from": "did you mean `since`?"}``)."""
    out: dict[str, str] = {}
    for name, value in parse_qsl(req.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
        if name not in known:
            raise errors.InvalidRequest(f"{name or '(no name)'}: unknown parameter; {_hint(name, known, hints)}",
                                        param=name, code="unknown_parameter")
        if name in out:
            raise errors.InvalidRequest(f"{name}: given twice; give it once", param=name)
        if not value.strip():
            raise errors.InvalidRequest(f"{name}: empty; give a value, or leave `{name}` out", param=name)
        out[name] = value
    return out


def _hint(name: str, known: Sequence[str], hints: Mapping[str, str] | None) -> str:
    if hints and name in hints:
        return hints[name]
    return f"known: {', '.join(known)}" if known else "this endpoint takes no query parameters"
