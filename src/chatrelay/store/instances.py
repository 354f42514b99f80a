"""Which chatrelay processes are alive, and settling the answers of those that died.

Every process registers at start-up and writes a heartbeat every ``interval`` seconds. An
instance is dead when its heartbeat is older than ``dead_after`` seconds, or at once when it
ran on this host and its process is gone (a restart after ``kill -9`` need not wait). Answers
a dead instance left ``streaming`` become ``interrupted``, keeping the text it had flushed.

Usage::

    heartbeat = InstanceHeartbeat(db, interval=5.0)
    await heartbeat.start()        # registers, settles the dead's answers, then beats
    ...                            # answers are stored with instance_id=heartbeat.id
    await heartbeat.close()        # deregisters
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from datetime import timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatrelay.store.database import Database
from chatrelay.store.models import Instance, Message, utcnow

log = logging.getLogger(__name__)

HOST = socket.gethostname()[:255]
# Heartbeats an instance may miss before the others take it for dead.
MISSED_BEATS = 3


def new_instance_id() -> str:
    return f"{HOST[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


async def settle_dead_instances(session: AsyncSession, *, own_id: str, dead_after: float) -> int:
    """Forget dead instances and mark their streaming answers interrupted; how many answers.

    Not an owner query on purpose: it is the recovery of every owner's rows, run by the server.
    """
    now = utcnow()
    stale = now - timedelta(seconds=dead_after)
    alive: list[str] = []
    dead: list[str] = []
    for instance in (await session.scalars(select(Instance))).all():
        gone = instance.host == HOST and not _process_exists(instance.pid)
        if instance.id != own_id and (gone or instance.heartbeat_at < stale):
            dead.append(instance.id)
        else:
            alive.append(instance.id)
    if dead:
        await session.execute(delete(Instance).where(Instance.id.in_(dead)))
    result = await session.execute(
        update(Message)
        .where(
            Message.status == "streaming",
            or_(
                Message.instance_id.not_in(alive),
                # Rows of a version before instances: interrupted once they stop growing.
                Message.instance_id.is_(None) & (Message.updated_at < stale),
            ),
        )
        .values(status="interrupted", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


class InstanceHeartbeat:
    """This process's entry in ``instances``, kept fresh, and the watch over the others."""

    def __init__(self, db: Database, *, interval: float) -> None:
        self.db = db
        self.id = new_instance_id()
        self.interval = interval
        self.dead_after = interval * MISSED_BEATS
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._beat_periodically(), name="instance-heartbeat")

    async def beat(self) -> int:
        """Write the heartbeat and settle the dead's answers; how many answers were settled."""
        async with self.db.transaction() as session:
            found = await session.get(Instance, self.id)
            if found is None:  # first beat, or taken for dead after a long pause: (re)join
                session.add(Instance(id=self.id, host=HOST, pid=os.getpid()))
            else:
                found.heartbeat_at = utcnow()
            await session.flush()
            settled = await settle_dead_instances(
                session, own_id=self.id, dead_after=self.dead_after
            )
        if settled:
            log.warning("marked %d answers of stopped instances interrupted", settled)
        return settled

    async def _beat_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception:  # the database may be away for a moment; beat again later
                log.exception("instance heartbeat failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # shutting down: the others will notice anyway
            async with self.db.transaction() as session:
                await session.execute(delete(Instance).where(Instance.id == self.id))
