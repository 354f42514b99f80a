"""Text that can be stored: what every request string field is validated as.

pydantic's strict strings accept a lone surrogate (``"\\ud800"`` in JSON), which no database
driver can encode, and PostgreSQL refuses NUL characters in text. Both are refused up front,
so such input is a 422 naming the field instead of a 500 from the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, StrictStr


def storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (it holds a lone surrogate)") from None
    return value


StoredText = Annotated[StrictStr, AfterValidator(storable)]


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text: its string content, or its text parts joined (what is counted,
    shown as the stored text, and sent where only text can go)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""
