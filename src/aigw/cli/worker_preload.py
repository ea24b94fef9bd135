"""What every `aigw serve --workers N` worker needs before it builds its app, done once, in the fork server the
workers are forked from (``serve_workers``): the gateway's imports (~45 MB, ~0.4 s of CPU) and, when the config
counts tokens locally, the tokenizer (~25 MB, ~0.1 s). What no worker writes afterwards (the tokenizer's native
tables, most of the imported code) stays shared between the workers instead of being built N times, and a
worker started again after a crash starts without importing anything.

The config is read as the workers read it (``export_for_workers`` left it in the environment); if it cannot be
read here, nothing more is loaded and each worker reports the error as it does without this module.
"""

from __future__ import annotations

import aigw.app
from aigw.accounting import tokens
from aigw.config.load import load_config


def _preload() -> None:
    try:
        config = load_config()
    except Exception:  # the workers say why, with their own start-up's exit code
        return
    if aigw.app.counts_locally(config):
        tokens.LOCAL_COUNTER.load()


_preload()
