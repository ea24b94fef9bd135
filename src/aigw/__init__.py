"""aigw: a self-hosted AI gateway speaking the OpenAI and Anthropic APIs."""

__version__ = "0.1.0"
