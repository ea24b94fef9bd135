"""Azure OpenAI's error quirks on top of the OpenAI family mapping.

Azure sends content-filter refusals as ``code: content_filter`` with an
``innererror`` (handled by the shared mapper) and, on 429, sometimes states the
wait only in prose ("Please retry after 6 seconds", or "Try again in 2 seconds" from
Azure AI Services), which is read here.
"""

from __future__ import annotations

import re
from typing import Any

from aigw import errors
from aigw.providers.openai.errors import map_error as map_openai_error

_RETRY_TEXT = re.compile(r"(?:retry after|try again in) (\d+(?:\.\d+)?) (second|millisecond)", re.IGNORECASE)


def map_error(status: int, text: str, parsed: Any, headers: Any) -> errors.GatewayError:
    mapped = map_openai_error(status, text, parsed, headers)
    if isinstance(mapped, errors.RateLimited) and mapped.retry_after is None:
        found = _RETRY_TEXT.search(text)
        if found:
            value = float(found.group(1))
            mapped.retry_after = value / 1000.0 if found.group(2).lower() == "millisecond" else value
    return mapped
