"""What a chat request counts against, and what it holds from admission to its end.

``Quotas.caller`` makes the :class:`Caller`; ``Quotas.admit`` the :class:`Admission`, to which
``Quotas.reserve`` adds the budget's reservations; ``Quotas.settle`` or ``Quotas.release``
gives everything back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from chatrelay.limits.budget import Reservation

# What a guest that is not stored yet does once its request has passed every limit: write
# its rows (chatrelay.auth.identity.NewGuest.save).
OnAdmitted = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a chat request counts against: a user's budget (0: unlimited) and an address
    (what per-address limits count: an IPv6 client's network, see :meth:`Quotas.address`)."""

    user_id: str
    budget: int
    client_ip: str | None
    guest: bool = False
    on_admitted: OnAdmitted | None = None
    # The API key it came with (None: a session), for what each key spends.
    api_key_id: str | None = None
    # Spend limits (nanos per period; 0: unlimited): the user's, and its key's own if any.
    spend_limit: int = 0
    key_spend_limit: int | None = None


@dataclass(slots=True)
class Admission:
    """What one chat request holds from admission until it is settled or released."""

    id: str
    user_id: str
    budget: int
    client_ip: str | None
    admitted_at: datetime
    guest: bool = False
    on_admitted: OnAdmitted | None = None
    slot_key: str | None = None
    reservation: Reservation | None = None
    # A guest's hold on its address's guests' budget (CHATRELAY_GUEST_ADDRESS_TOKEN_BUDGET).
    address_reservation: Reservation | None = None
    reserved_tokens: int = 0
    done: bool = False
    api_key_id: str | None = None
    spend_limit: int = 0
    key_spend_limit: int | None = None
    # Spend limits' holds (limits/spending.py): the user's, the key's, capped upstreams'.
    spend_reservations: list[Reservation] = field(default_factory=list)
    # Upstreams whose spend cap could not take this answer: it is not sent there.
    over_cap: set[str] = field(default_factory=set)
