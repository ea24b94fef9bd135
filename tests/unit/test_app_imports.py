"""Start-up cost: a gateway without Redis does not import a Redis client (~85 ms of start-up)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from aigw.app import build_app
from aigw.config.models import GatewayConfig
build_app(GatewayConfig.model_validate({"server": {"master_key": "sk-test"}, "database_url": "sqlite://:memory:",
                                        "models": [{"name": "m", "provider": "mock", "model": "mock-1"}]}))
print(sorted(m for m in sys.modules if m == "redis" or m.startswith("redis.")))
"""


def test_a_gateway_without_redis_url_imports_no_redis_client() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
