"""Any server speaking the OpenAI API (vLLM, Ollama, Groq, Mistral, DeepSeek, OpenRouter, ...).

The OpenAI adapter plus quirk switches read from ``deployment.quirks`` (see ``quirks``).
"""
