"""The holds of running answers kept alive: every budget reservation and stream slot is a
lease (``CHATRELAY_BUDGET_LEASE``) that the store lets go of unless it is renewed, so what a
dead process held comes back by itself, and what a live one holds is renewed here.

Usage::

    leases = Leases(budget, streams, lease=60)
    leases.start()              # renews every third of a lease
    leases.hold(admission)      # from its first hold...
    leases.let_go(admission)    # ...to its settlement
    await leases.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from chatrelay.limits.admission import Admission
from chatrelay.limits.budget import TokenBudget
from chatrelay.limits.streams import StreamSlots

log = logging.getLogger(__name__)


class Leases:
    def __init__(self, budget: TokenBudget, streams: StreamSlots, *, lease: float) -> None:
        self.budget = budget
        self.streams = streams
        self.lease = lease
        self._holding: dict[str, Admission] = {}
        self._renewer: asyncio.Task[None] | None = None

    def hold(self, admission: Admission) -> None:
        self._holding[admission.id] = admission

    def let_go(self, admission: Admission) -> None:
        self._holding.pop(admission.id, None)

    def start(self) -> None:
        """Renew the leases of running answers; call with the event loop running."""
        self._renewer = asyncio.create_task(self._renew_periodically(), name="lease-renewer")

    async def _renew_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.renew(self._holding.values())
            except Exception:  # e.g. Redis down: retried next round, within the lease
                log.warning("renewing limit leases failed", exc_info=True)

    async def renew(self, admissions: Iterable[Admission]) -> None:
        holding = list(admissions)
        held = [a.reservation for a in holding if a.reservation is not None]
        held += [a.address_reservation for a in holding if a.address_reservation is not None]
        held += [r for a in holding for r in a.spend_reservations]
        await self.budget.renew(held)
        slots = [(a.slot_key, a.id) for a in holding if a.slot_key is not None]
        if slots:
            await self.streams.renew(slots=slots, lease=self.lease)

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
