"""chatrelay: streaming chat with LLMs, relayed from Livepeer or any OpenAI-compatible endpoint."""

__version__ = "0.1.0"
