"""`chatrelay keys list`'s table (cli/keys.py), without a database."""

from __future__ import annotations

import io
from datetime import datetime

from rich.console import Console

from chatrelay.cli.keys import keys_table
from chatrelay.store.models import ApiKey

KEY_ID = "key_AbCdEfGhIjKlMnOp"


def rendered(width: int, **key: object) -> str:
    row = ApiKey(
        id=KEY_ID,
        prefix="cr_abcdefg",
        name="laptop",
        created_at=datetime(2024, 1, 2, 3, 4),
        **key,
    )
    out = io.StringIO()
    Console(file=out, width=width).print(keys_table([(row, "alice")]))
    return out.getvalue()


def cells(table: str) -> list[str]:
    row = next(line for line in table.splitlines() if KEY_ID in line)
    return [cell.strip() for cell in row.split("│")[1:-1]]


def test_a_key_is_listed_by_its_first_characters_with_its_dates() -> None:
    assert cells(rendered(200)) == [
        KEY_ID,
        "cr_abcdefg…",
        "laptop",
        "alice",
        "2024-01-02 03:04",
        "-",  # never used
        "",  # not revoked
    ]
    used_and_revoked = rendered(
        200, last_used_at=datetime(2024, 2, 1, 0, 0), revoked_at=datetime(2024, 3, 1, 12, 30)
    )
    assert cells(used_and_revoked)[-2:] == ["2024-02-01 00:00", "2024-03-01 12:30"]


def test_the_id_is_never_cut_short_however_narrow_the_terminal() -> None:
    # `keys revoke` takes the id: it must stay whole to be copied.
    assert KEY_ID in rendered(40)
