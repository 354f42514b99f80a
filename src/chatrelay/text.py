"""Text that can be stored: what every request string field is validated as.

pydantic's strict strings accept a lone surrogate (``"\\ud800"`` in JSON), which no database
driver can encode, and PostgreSQL refuses NUL characters in text. Both are refused up front,
so such input is a 422 naming the field instead of a 500 from the database.
"""

from __future__ import annotations

from typing import Annotated

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
