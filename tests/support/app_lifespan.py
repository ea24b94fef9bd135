"""Run a built app's start-up hooks, then its shutdown hooks, as a server's lifespan would."""

from __future__ import annotations

from aigw.http.server import GatewayApp


async def start_and_stop(app: GatewayApp) -> None:
    """Start ``app``, then stop it at once (the shutdown hooks run even when a start-up hook failed)."""
    try:
        for start in app.on_startup:
            await start()
    finally:
        for stop in reversed(app.on_shutdown):
            await stop()
