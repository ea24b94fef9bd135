"""Cache purges announced through a Redis stream, for every replica (see ``stores/purge_log.py``).

One stream under the gateway's prefix, trimmed to about ``MAX_LEN`` entries: a
replica that fell that far behind (hours without reading it) misses the oldest.
Entry ids are Redis's own (``<ms>-<seq>``), so cursors order across replicas.
"""

from __future__ import annotations

from typing import Any

from aigw.stores.purge_log import Purge

MAX_LEN = 10_000


class RedisPurgeLog:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.key = f"{prefix}purges:cache"  # not under "cache:", which a purge of everything empties

    async def announce(self, tenant: str | None, model: str | None) -> str:
        fields = {"tenant": tenant or "", "model": model or ""}
        entry_id = await self.redis.xadd(self.key, fields, maxlen=MAX_LEN, approximate=True)
        return _text(entry_id)

    async def head(self) -> str:
        last = await self.redis.xrevrange(self.key, count=1)
        return _text(last[0][0]) if last else "0-0"

    async def since(self, cursor: str) -> tuple[str, list[Purge]]:
        entries = await self.redis.xrange(self.key, min=f"({cursor}", max="+")
        out = []
        for entry_id, fields in entries:
            values = {_text(k): _text(v) for k, v in fields.items()}
            entry = _text(entry_id)
            out.append(Purge(entry, values.get("tenant") or None, values.get("model") or None, entry))
        return (out[-1].after if out else cursor), out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
