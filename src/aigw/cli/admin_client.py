"""A small synchronous client of the admin API, for the CLI (and tests): urllib, JSON in and out.

``AIGW_URL`` (default http://127.0.0.1:4000) and ``AIGW_MASTER_KEY`` reach it
through click's envvar support on the commands; nothing here reads the environment.
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import click

DEFAULT_URL = "http://127.0.0.1:4000"


class AdminError(Exception):
    def __init__(self, status: int, message: str, body: Any = None, retry_after: int | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body
        self.retry_after = retry_after  # seconds, from the refusal's Retry-After (a store outage's 503, say)

    def line(self) -> str:
        """The one line the CLI prints: the gateway's message, its status, and when to try again if it said."""
        said = f"HTTP {self.status}" if self.status else ""
        if self.retry_after is not None:
            said += f"; retry in {self.retry_after} s"
        return f"error: {self.message}" + (f" ({said})" if said else "")


def admin_path(*segments: str) -> str:
    """``/admin/`` and the segments, each percent-encoded whole (``admin_path("tenants", "a#b")``).

    Every id or name the CLI puts in a path goes through here: a '#', '?', '/', '%', space or
    non-ASCII character stays part of the name instead of ending the path or breaking the request.
    (Query strings are encoded by ``AdminClient.request``.)
    """
    return "/admin/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)


class AdminClient:
    """Every failure is an ``AdminError``: the gateway's refusal (its HTTP status), or status 0 for a
    bad URL, a gateway that cannot be reached, or an answer that is not the gateway's."""

    def __init__(self, url: str = DEFAULT_URL, key: str = "", timeout_s: float = 30.0) -> None:
        self.url = _checked_url(url)
        self.key = _checked_key(key)
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                as_text: bool = False) -> Any:
        """The answer's JSON, or its text with ``as_text`` (a CSV report, say)."""
        raw, _ = self._send(method, self._url(path, query), json.dumps(body).encode() if body is not None else None)
        if as_text:
            return raw.decode(errors="replace")
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise AdminError(0, f"the answer of {self.url} is not JSON: is it the gateway's URL? "
                                f"(set --url or AIGW_URL)") from None

    def text(self, method: str, path: str, query: dict[str, Any] | None = None) -> tuple[str, dict[str, str]]:
        """The answer as text (a CSV report, say) and its headers, by lower-case name."""
        raw, headers = self._send(method, self._url(path, query), None)
        return raw.decode(errors="replace"), headers

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        params = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        return self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")

    def _send(self, method: str, url: str, data: bytes | None) -> tuple[bytes, dict[str, str]]:
        headers = {"accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        if self.key:
            headers["authorization"] = f"Bearer {self.key}"
        try:
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw: bytes = resp.read()
                return raw, {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read()
            except (OSError, http.client.HTTPException):  # the refusal's body was cut off
                raw = b""
            try:
                payload = json.loads(raw)
                message = payload.get("error", {}).get("message") or raw.decode(errors="replace")
            except (ValueError, AttributeError):
                payload, message = None, raw.decode(errors="replace")[:300]
            message = _one_line(message)
            if exc.code == 401:  # the gateway's words are for an HTTP client ("send 'Authorization: Bearer'")
                message = (f"{message} (check --master-key or AIGW_MASTER_KEY)" if self.key
                           else "no admin key was sent: set --master-key or AIGW_MASTER_KEY")
            elif exc.code == 404:
                message = _not_mounted(self.url, message) or message + _root_hint(self.url)
            raise AdminError(exc.code, message, payload, _retry_after(exc.headers)) from None
        except urllib.error.URLError as exc:
            raise AdminError(0, f"cannot reach the gateway at {self.url} ({_one_line(exc.reason)})") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:  # reset, timeout, bad header, ...
            why = _one_line(exc) or type(exc).__name__
            raise AdminError(0, f"cannot talk to the gateway at {self.url} ({why})") from None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body)


def _retry_after(headers: Any) -> int | None:
    """A refusal's ``Retry-After`` in seconds (the gateway sends whole seconds), or None: none, or an HTTP date
    (the gateway never sends one), or not a number."""
    raw = (headers.get("retry-after") or "").strip() if headers is not None else ""
    return int(raw) if raw.isascii() and raw.isdigit() else None


# the admin routes a gateway mounts only when its config switches the feature on (app.py), by first segment
_FEATURE_OFF = {
    "cache": "has no response cache (its config has no cache: block), so there is nothing to purge",
    **dict.fromkeys(("tenants", "projects", "keys", "spend"),
                    "has tenancy switched off (tenancy.enabled: false in its config): it keeps no tenants, "
                    "projects, keys or spend"),
}


def _not_mounted(url: str, message: str) -> str:
    """What to say of the gateway's own router miss ("Unknown endpoint GET /admin/tenants.") on a route its
    config did not mount; "" when the miss is something else."""
    words = message.split()
    if len(words) != 4 or words[:2] != ["Unknown", "endpoint"] or not words[3].startswith("/admin/"):
        return ""
    feature = words[3].removeprefix("/admin/").split("/")[0].split("?")[0].rstrip(".")
    why = _FEATURE_OFF.get(feature, "")
    return f"the gateway at {url} {why}" if why else ""


def _root_hint(url: str) -> str:
    """What to say of a 404 when ``url`` has a path: set to the SDKs' base URL (``.../v1``), it finds no admin API."""
    parts = urllib.parse.urlsplit(url)
    if not parts.path.strip("/"):
        return ""
    root = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    return f" (set --url or AIGW_URL to the gateway's root URL, without {parts.path}, e.g. {root})"


def _checked_url(url: str) -> str:
    """``url`` without a trailing '/', if it can be a gateway's address; else an ``AdminError`` saying why."""
    url = url.strip()
    why = _url_problem(url)
    if why:
        raise AdminError(0, f"bad gateway URL {url!r}: {why} (set --url or AIGW_URL, e.g. {DEFAULT_URL})")
    return url.rstrip("/")


def _checked_key(key: str) -> str:
    """``key`` without the blanks around it (a file's line ending: the gateway strips its own master key and the
    key it is sent alike), if a header can carry it; else an ``AdminError`` that never shows it."""
    key = key.strip()
    if key.isascii() and key.isprintable():
        return key
    raise AdminError(0, "bad admin key: it holds a line break, a control or a non-ASCII character, which no key has "
                        "(the key is not shown; set --master-key or AIGW_MASTER_KEY)")


def _url_problem(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # an unclosed '[' of an IPv6 host
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "not an http(s) URL"
    if not parts.hostname:
        return "no host"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it contains a space or a control character"
    if "?" in url or "#" in url:
        return "a gateway URL has no query or fragment"
    try:
        parts.port  # noqa: B018 -- parsing it is the check
    except ValueError as exc:
        return f"bad port ({exc})"
    return ""


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


# -- shared CLI options and output -----------------------------------------------------
url_option = click.option("--url", envvar="AIGW_URL", default=DEFAULT_URL, show_default=True,
                          help="Gateway URL (env AIGW_URL).")
key_option = click.option("--master-key", "master_key", envvar="AIGW_MASTER_KEY", default="",
                          help="Master or admin key (env AIGW_MASTER_KEY).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def not_blank(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An id or name option given empty (``--tenant "$T"`` with T unset) names nothing: refused, never sent
    as a filter the gateway would read as "every tenant" (a purge of every tenant's cache, a bill of all)."""
    if value is not None and not value.strip():
        raise click.BadParameter("empty: name one, or leave the option out to mean every one")
    return value


def named(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An id or name argument given empty (``aigw keys show "$ID"`` with ID unset) names nothing: refused. Sent, it
    left the path ending in ``/``, which the gateway reads as the list (``tenants show ""`` listed every tenant and
    exited 0) or as a record named after the action (``keys revoke ""``: "No key `revoke`")."""
    if not value.strip():
        raise click.BadParameter("empty: name the record by its id or name")
    return value


def _not_json(constant: str) -> Any:
    """``NaN`` and ``Infinity``, which Python's json reads and JSON does not have: refused, never sent."""
    raise ValueError(f"{constant} is not a JSON value")


def json_object(ctx: click.Context, param: click.Parameter, raw: str | None) -> dict[str, Any] | None:
    """``--metadata`` as a JSON object: a key's cache setting ``{"cache": {"mode": "off"}}`` (docs/cache.md), a
    tenant's guardrails block (docs/guardrails.md). Without it only the admin API could set one."""
    if raw is None:
        return None
    try:
        value = json.loads(raw, parse_constant=_not_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise click.BadParameter('expected a JSON object, e.g. \'{"cache": {"mode": "off"}}\'')
    return value


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A number option must be one JSON can carry: ``nan``, ``inf`` (or ``1e400``, which is inf) went out as
    ``NaN`` or ``Infinity``, which is not JSON, and the gateway's refusal could not name the option."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def call(url: str, key: str, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
         as_text: bool = False) -> Any:
    """Run one admin call; on failure print the gateway's message and exit 1."""
    try:
        return AdminClient(url, key).request(method, path, body, query, as_text)
    except AdminError as exc:
        click.echo(exc.line(), err=True)  # a 503 that says when: retried by whoever runs it, never by us
        raise SystemExit(1) from None


def call_text(url: str, key: str, path: str, query: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """``call`` of a GET whose answer is text (a CSV file), with the answer's headers."""
    try:
        return AdminClient(url, key).text("GET", path, query)
    except AdminError as exc:
        click.echo(exc.line(), err=True)  # a 503 that says when: retried by whoever runs it, never by us
        raise SystemExit(1) from None


def page_options(fn: Any) -> Any:
    """``--limit`` and ``--after`` of a list command (the admin API's ``limit`` and ``after``)."""
    fn = click.option("--after", default="", help="The page after this id (the last id of the page before).")(fn)
    return click.option("--limit", type=click.IntRange(1, 1000), default=None,
                        help="At most this many (a page; default: all).")(fn)


def limit_fields(rpm: int | None, tpm: int | None, max_parallel: int | None, budget: float | None,
                 period: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"rpm": rpm, "tpm": tpm, "max_parallel": max_parallel, "budget_usd": budget,
                           "budget_period": period}
    return {k: v for k, v in out.items() if v is not None}


CLEARABLE = {"rpm": "rpm", "tpm": "tpm", "max-parallel": "max_parallel", "budget": "budget_usd",
             "period": "budget_period"}


def clear_option(extra: dict[str, str] | None = None) -> Callable[[Any], Any]:
    """``--clear FIELD`` of an update command: the admin API's ``null``, which removes a limit (the period goes
    back to monthly). Without it a limit, once set, could only be changed from the CLI, never removed."""
    fields = {**CLEARABLE, **(extra or {})}
    return click.option("--clear", "clear", multiple=True, type=click.Choice(list(fields)),
                        help=f"Remove this setting (repeatable): {', '.join(fields)}.")


def cleared(body: dict[str, Any], clear: tuple[str, ...], extra: dict[str, str] | None = None) -> dict[str, Any]:
    """``body`` with a ``null`` for each ``--clear`` field; a field both set and cleared is a usage error."""
    fields = {**CLEARABLE, **(extra or {})}
    for name in clear:
        if fields[name] in body:
            raise click.UsageError(f"--clear {name} and a new value for it: choose one")
        body[fields[name]] = None
    return body


def limit_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--rpm", type=int, help="Requests per minute."),
        click.option("--tpm", type=int, help="Tokens per minute."),
        click.option("--max-parallel", type=int, help="Requests in flight at once."),
        click.option("--budget", type=float, callback=finite, help="Budget in USD."),
        click.option("--period", type=click.Choice(["daily", "weekly", "monthly", "total"]),
                     help="Budget period (when first set: monthly)."),
    ]):
        fn = opt(fn)
    return fn
