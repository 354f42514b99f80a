"""Deleting what nobody can use any more: expired sessions and abandoned guests.

Usage::

    pruner = Pruner(db, interval=3600)   # CHATRELAY_PRUNE_INTERVAL; 0: never
    pruner.start()                       # with the loop running: first round within a minute
    pruned = await pruner.run_once()     # Pruned(sessions=..., guests=...)
    await pruner.close()

Retention:

- a session row lives until it expires (``CHATRELAY_SESSION_DAYS``, guests'
  ``CHATRELAY_GUEST_SESSION_DAYS``, counted from its last use), then goes at the next round;
- a guest lives while it has an unexpired session *and* a conversation. One without a
  conversation goes at the first round after it is :data:`GUEST_GRACE` old; one whose
  sessions all expired goes with its conversations (nobody can be that guest again: its
  cookie was the only way). An account is never pruned;
- the usage ledger is kept: it is the operator's record and has no foreign keys.

Every instance prunes; the deletes are idempotent, so several at once only repeat work.
Each transaction deletes at most :data:`BATCH` rows, so SQLite's write lock is never held
long by a large backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from chatrelay.store import users
from chatrelay.store.database import Database
from chatrelay.store.models import utcnow

log = logging.getLogger(__name__)

# A guest younger than this is never pruned: its first conversation may be being written.
GUEST_GRACE = timedelta(hours=1)
BATCH = 500
# The first round comes this soon after start (or after one interval, if shorter): a server
# restarted more often than its interval still prunes.
FIRST_ROUND = 60.0


@dataclass(frozen=True, slots=True)
class Pruned:
    sessions: int
    guests: int


class Pruner:
    def __init__(self, db: Database, *, interval: float) -> None:
        self._db = db
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._run_periodically(), name="pruner")

    async def _run_periodically(self) -> None:
        delay = min(self.interval, FIRST_ROUND)
        while True:
            await asyncio.sleep(delay)
            delay = self.interval
            try:
                pruned = await self.run_once()
            except Exception:  # e.g. the database restarting: the next round tries again
                log.warning("pruning sessions and guests failed", exc_info=True)
                continue
            if pruned.sessions or pruned.guests:
                log.info(
                    "pruned %d expired sessions and %d abandoned guests",
                    pruned.sessions,
                    pruned.guests,
                )

    async def run_once(self) -> Pruned:
        now = utcnow()
        sessions = guests = 0
        while True:
            async with self._db.transaction() as session:
                done = await users.delete_expired_sessions(session, now=now, limit=BATCH)
            sessions += done
            if done < BATCH:
                break
        while True:
            async with self._db.transaction() as session:
                done = await users.delete_abandoned_guests(
                    session, now=now, created_before=now - GUEST_GRACE, limit=BATCH
                )
            guests += done
            if done < BATCH:
                break
        return Pruned(sessions=sessions, guests=guests)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
