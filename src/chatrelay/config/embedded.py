"""The embedded model's settings: the llama.cpp server started when no upstream is configured."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"


class EmbeddedSettings(BaseModel):
    """Settings mixin: the embedded model."""

    embedded: bool = Field(
        default=True, description="Start the embedded model when no upstream is configured."
    )
    embedded_model_path: Path | None = Field(
        default=None,
        description="A different GGUF file for the embedded server. Unset: the bundled "
        "SmolLM2-135M-Instruct.",
    )
    embedded_context: int = Field(
        default=2048, ge=256, description="llama.cpp context size of the embedded server."
    )
    embedded_threads: int | None = Field(
        default=None, description="llama.cpp threads of the embedded server. Unset: all cores."
    )
    embedded_start_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds `serve` waits for the embedded server to answer at start.",
    )
