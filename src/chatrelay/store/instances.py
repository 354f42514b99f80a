"""Which chatrelay processes are alive, and settling the answers of those that died.

Every process registers at start-up and writes a heartbeat every ``interval`` seconds. An
instance is dead when its heartbeat is older than ``dead_after`` seconds (six heartbeats: a
busy moment is not a death), or at once when it ran on this host, in this PID namespace, and
its process is gone (a restart after ``kill -9`` need not wait). Answers a dead instance left
``streaming`` become ``interrupted``, keeping the text it had flushed. Heartbeats are stamped
and compared with the database's clock on PostgreSQL, so hosts whose clocks disagree do not
take each other for dead. An instance wrongly taken for dead (a pause longer than
``dead_after``) rejoins at its next heartbeat and marks its running answers streaming again.
An answer an instance alive claims (``streaming`` with its id) but does not run (its final
write was lost) is settled the same way, by that instance, once it is ``dead_after`` old:
nothing else would ever end it, and a client re-attached to it would wait for ever.

Usage::

    heartbeat = InstanceHeartbeat(db, interval=5.0)
    await heartbeat.start()        # registers, settles the dead's answers, then beats
    ...                            # answers are stored with instance_id=heartbeat.id
    await heartbeat.close()        # deregisters
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import (
    BindParameter,
    Connection,
    Interval,
    Select,
    Update,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from chatrelay.store.database import Database
from chatrelay.store.models import Instance, MessageRow, utcnow

log = logging.getLogger(__name__)


def _host() -> str:
    """This host, and its PID namespace: containers sharing a hostname see each other's pids
    only when they share the namespace too."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()[:200]}/{namespace}"


HOST = _host()
# Heartbeats an instance may miss before the others take it for dead.
MISSED_BEATS = 6


def new_instance_id() -> str:
    return f"{socket.gethostname()[:50]}:{os.getpid()}:{secrets.token_hex(4)}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _now(connection: Connection) -> Any:
    """The database's clock on PostgreSQL (instances on several hosts); SQLite is one host's."""
    return func.now() if connection.dialect.name == "postgresql" else utcnow()


class _Beat(NamedTuple):
    """A beat's statements, built once per dialect: building one (its cache key, its operators)
    cost more than running it (docs/performance.md#statements-built-once)."""

    touch: Update
    instances: Select[str, str, int, bool]
    interrupt: Update


@functools.cache
def _beat_statements(postgres: bool) -> _Beat:
    # Heartbeats are stamped and compared with the database's clock on PostgreSQL, else with
    # this host's (the parameters ``b_now`` and ``b_stale``). The answers' own times are this
    # host's on both, as they are written elsewhere.
    here: BindParameter[datetime] = bindparam("b_now")
    stale_here: BindParameter[datetime] = bindparam("b_stale")
    now = func.now() if postgres else here
    stale = now - bindparam("b_dead_after", type_=Interval()) if postgres else stale_here
    alive = select(Instance.id).scalar_subquery()  # read in the same statement: no race
    return _Beat(
        touch=update(Instance).where(Instance.id == bindparam("b_id")).values(heartbeat_at=now),
        instances=select(Instance.id, Instance.host, Instance.pid, Instance.heartbeat_at < stale),
        interrupt=update(MessageRow)
        .where(
            MessageRow.status == "streaming",
            or_(
                MessageRow.instance_id.not_in(alive),
                # Rows of a version before instances: interrupted once they stop growing.
                MessageRow.instance_id.is_(None) & (MessageRow.updated_at < stale_here),
            ),
        )
        .values(status="interrupted", updated_at=here),
    )


def _beat_parameters(instance_id: str, dead_after: float) -> dict[str, Any]:
    now, dead_after_ = utcnow(), timedelta(seconds=dead_after)
    return {
        "b_id": instance_id,
        "b_now": now,
        "b_stale": now - dead_after_,
        "b_dead_after": dead_after_,
    }


def settle_dead_instances(connection: Connection, *, own_id: str, dead_after: float) -> int:
    """Forget dead instances and mark their streaming answers interrupted; how many answers.
    Core statements, for :meth:`Database.write`.

    Not an owner query on purpose: it is the recovery of every owner's rows, run by the server.
    """
    statements = _beat_statements(connection.dialect.name == "postgresql")
    parameters = _beat_parameters(own_id, dead_after)
    dead = []
    for instance_id, host, pid, silent in connection.execute(statements.instances, parameters):
        if instance_id == own_id:
            continue
        # On this host and in this PID namespace: gone if its pid is gone, or is ours.
        gone = host == HOST and (pid == os.getpid() or not _process_exists(pid))
        if gone or silent:
            dead.append(instance_id)
    if dead:
        connection.execute(delete(Instance).where(Instance.id.in_(dead)))
    result = connection.execute(statements.interrupt, parameters)
    return int(result.rowcount or 0)


def settle_lost_answers(
    connection: Connection, *, own_id: str, running: list[str], before: datetime
) -> int:
    """Mark interrupted the answers stored ``streaming`` by this instance before ``before``
    that it does not run (``running``: the ids of those it does); how many. Usually none:
    the few streaming rows of this instance are read by the status index, and compared here
    with its answers (not a statement with every running id in it)."""
    claimed = connection.scalars(
        select(MessageRow.id).where(
            MessageRow.status == "streaming",
            MessageRow.instance_id == own_id,
            MessageRow.created_at < before,
        )
    ).all()
    lost = set(claimed).difference(running)
    if not lost:
        return 0
    result = connection.execute(
        update(MessageRow)
        .where(MessageRow.id.in_(lost), MessageRow.status == "streaming")
        .values(status="interrupted", updated_at=utcnow())
    )
    return int(result.rowcount or 0)


class InstanceHeartbeat:
    """This process's entry in ``instances``, kept fresh, and the watch over the others."""

    def __init__(
        self, db: Database, *, interval: float, running: Callable[[], list[str]] | None = None
    ) -> None:
        self.db = db
        # The ids of the answers this process is generating (revived after a wrong death).
        self.running = running or list
        self.id = new_instance_id()
        self.interval = interval
        self.dead_after = interval * MISSED_BEATS
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._beat_periodically(), name="instance-heartbeat")

    async def beat(self) -> int:
        """Write the heartbeat and settle the dead's answers; how many answers were settled.

        Core statements in one :meth:`Database.write` (on SQLite, whole on the writer thread):
        an ORM session costs an idle server much more
        (docs/performance.md#statements-built-once)."""
        # The running answers are read here, on the event loop: the write runs on a thread.
        settled = await self.db.write(
            partial(self._beat, running=self.running(), listed_at=utcnow())
        )
        if settled:
            log.warning("marked %d answers of stopped instances interrupted", settled)
        return settled

    def _beat(self, connection: Connection, *, running: list[str], listed_at: datetime) -> int:
        touch = _beat_statements(connection.dialect.name == "postgresql").touch
        beat = connection.execute(touch, {"b_id": self.id, "b_now": utcnow()})
        if not beat.rowcount:  # first beat, or taken for dead: (re)join
            connection.execute(
                insert(Instance).values(
                    id=self.id,
                    host=HOST,
                    pid=os.getpid(),
                    started_at=utcnow(),
                    heartbeat_at=_now(connection),
                )
            )
            _revive(connection, self.id, running)
        # An answer is stored (``created_at``) a moment before its answer is listed as running:
        # only one as old as a dead instance's answers is taken for lost.
        lost = settle_lost_answers(
            connection,
            own_id=self.id,
            running=running,
            before=listed_at - timedelta(seconds=self.dead_after),
        )
        if lost:
            log.warning("marked %d answers this instance had lost interrupted", lost)
        return settle_dead_instances(connection, own_id=self.id, dead_after=self.dead_after)

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
            await self.db.write(partial(_leave, instance_id=self.id))


def _revive(connection: Connection, instance_id: str, running: list[str]) -> None:
    """Answers another instance settled while this one was silent: they are still running."""
    if running:
        connection.execute(
            update(MessageRow)
            .where(MessageRow.id.in_(running), MessageRow.status == "interrupted")
            .values(status="streaming", instance_id=instance_id)
        )
        log.warning("rejoined after being taken for dead: %d answers run on", len(running))


def _leave(connection: Connection, *, instance_id: str) -> None:
    connection.execute(delete(Instance).where(Instance.id == instance_id))
