"""Azure OpenAI adapter: the OpenAI adapter with Azure's URL shape, ``api-key`` auth and error quirks."""
