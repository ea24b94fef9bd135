"""Anthropic Messages adapter: client.py moves bytes, translate*.py map shapes, errors.py maps failures."""
