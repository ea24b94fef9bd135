"""OpenAI adapter: ``client`` moves bytes, ``translate`` shapes bodies (pure), ``errors`` maps failures."""
