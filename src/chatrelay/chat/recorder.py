"""Keeps streaming answers in the database: flushed on a timer, settled at the end.

The final write is also where a request's limits are settled: its tokens billed (the
upstream's usage, else counted), its budget reservation and stream slot given back, and a row
added to the usage ledger in the same transaction as the answer.

Never a write per token, nor a transaction per answer per tick: one :class:`AnswerStore` per
process writes the grown text of *every* streaming answer in one batched transaction each
``interval`` seconds, and each answer once more with its final status, usage and error.

Usage::

    store = AnswerStore(db, interval=0.5)
    store.start()
    recorder = store.recorder(owner_id=user.id, admission=admission)  # for a GenerationJob
    ...
    await store.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from chatrelay.limits.quotas import Admission, BilledUsage, Quotas
from chatrelay.store import conversations, usage
from chatrelay.store.database import Database
from chatrelay.upstreams.chunk import Usage

if TYPE_CHECKING:
    from chatrelay.chat.job import GenerationJob

log = logging.getLogger(__name__)
# A flush this small (a few answers' text, as at low concurrency) is written on the event loop
# itself, not on the writer thread: the hop there and back (a wake-up of each thread) cost
# more CPU than the write (docs/performance.md#small-writes).
# Bigger ones stay on the thread, so that the loop never waits long for SQLite.
SMALL_FLUSH_ROWS = 16
SMALL_FLUSH_CHARS = 64 * 1024

# Tries of an answer's final write before it is given up (logged as an error).
FINAL_WRITE_ATTEMPTS = 3

# Job status -> stored message status.
STORED_STATUS = {"done": "complete", "stopped": "stopped", "error": "error"}


class AnswerRecorder:
    """One answer's link to the store; counts the writes made for it."""

    def __init__(
        self, store: AnswerStore, *, owner_id: str, admission: Admission | None = None
    ) -> None:
        self.store = store
        # Who asked. Not a filter of the answer's writes, which find its row by id whoever
        # owns it now (store/conversations.py).
        self.owner_id = owner_id
        self.admission = admission
        self.writes = 0
        self.saved_length = 0
        self.job: GenerationJob | None = None

    def started(self, job: GenerationJob) -> None:
        self.job = job
        self.store.active[job.id] = self
        self.store.streaming.set()

    async def finished(self, job: GenerationJob, *, status: str | None = None) -> None:
        """Write the final state. ``status`` overrides the job's (``interrupted`` on shutdown)."""
        self.store.active.pop(job.id, None)
        await self.store.save_final(self, job, status=status)


class AnswerStore:
    def __init__(self, db: Database, *, interval: float, quotas: Quotas | None = None) -> None:
        self.db = db
        self.interval = interval
        self.quotas = quotas
        self.active: dict[str, AnswerRecorder] = {}
        # Set while any answer streams: an idle server's flusher sleeps instead of waking
        # every ``interval`` to find nothing to write.
        self.streaming = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def recorder(self, *, owner_id: str, admission: Admission | None = None) -> AnswerRecorder:
        return AnswerRecorder(self, owner_id=owner_id, admission=admission)

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_periodically(), name="answer-flusher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _flush_periodically(self) -> None:
        while True:
            if not self.active:
                self.streaming.clear()
                await self.streaming.wait()
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # the final write retries; a flush must never stop the flusher
                log.exception("flushing streaming answers failed")

    async def flush(self) -> None:
        """Write the text of every answer that grew since its last write, in one transaction."""
        grown: list[tuple[AnswerRecorder, int]] = []
        rows: list[dict[str, str]] = []
        size = 0
        for recorder in list(self.active.values()):
            job = recorder.job
            if job is not None and job.text_length != recorder.saved_length:
                grown.append((recorder, job.text_length))
                text = job.text
                size += len(text)
                rows.append({"b_id": job.id, "b_content": text})
        if not rows:
            return
        small = len(rows) <= SMALL_FLUSH_ROWS and size <= SMALL_FLUSH_CHARS
        await self.db.write(partial(conversations.save_answer_texts, rows=rows), small=small)
        for recorder, length in grown:
            recorder.saved_length = length
            recorder.writes += 1

    async def save_final(
        self, recorder: AnswerRecorder, job: GenerationJob, *, status: str | None
    ) -> None:
        reported = job.usage
        stored_status = status or STORED_STATUS.get(job.status, "interrupted")
        billed = await self._settle(recorder.admission, job)
        if reported is None and billed is not None:
            # The upstream reported nothing (llama.cpp's server does not): the counted tokens
            # stand in everywhere, in the stored message, the final chunk, logs and metrics.
            reported = job.usage = Usage(billed.prompt_tokens, billed.completion_tokens)
        # Everything the writes need, read here on the event loop: they run on a writer thread.
        final = partial(
            conversations.finish_answer,
            message_id=job.id,
            content=job.text,
            # Tool calls, reasoning, a refusal: stored with the text, sent back with the history.
            extra=job.answer_extra,
            status=stored_status,
            finish_reason=job.finish_reason,
            error=job.error.message if job.error is not None else None,
            prompt_tokens=reported.prompt_tokens if reported else None,
            completion_tokens=reported.completion_tokens if reported else None,
            upstream=job.upstream_names or None,
        )
        ledger = self._usage_row(recorder, job, billed, stored_status)

        def write(connection: Connection) -> None:
            final(connection)
            if ledger is not None:
                ledger(connection)

        for attempt in range(1, FINAL_WRITE_ATTEMPTS + 1):
            try:
                await self.db.write(write, small=True)
                recorder.writes += 1
                return
            except conversations.AnswerRowMissing:
                # Never taken for a success: the row may be in a transaction that moves it.
                log.warning("answer %s: no row to store its end in (attempt %d)", job.id, attempt)
            except Exception:
                log.exception("saving answer %s failed (attempt %d)", job.id, attempt)
            if attempt < FINAL_WRITE_ATTEMPTS:
                await asyncio.sleep(0.2 * attempt)
        log.error("answer %s: its end (%s) could not be stored; given up", job.id, stored_status)
        if ledger is not None:
            # Its row is gone (its conversation deleted meanwhile): what it spent is still
            # the operator's record, and its budget's.
            try:
                await self.db.write(ledger, small=True)
            except Exception:
                log.exception("recording the usage of answer %s failed", job.id)

    async def _settle(self, admission: Admission | None, job: GenerationJob) -> BilledUsage | None:
        # Before the write and outside its retries: holds are given back even if it fails.
        if admission is None or self.quotas is None:
            return None
        served = job.served_by or job.attempts
        try:
            return await self.quotas.settle(
                admission,
                usage=job.usage,
                text=job.metered_text,
                messages=job.messages,
                upstream=served[-1] if served else "",
                # The prompt is billed once an upstream took it; never more than max_tokens.
                accepted=job.upstream_accepted,
                max_completion=job.params.max_tokens,
            )
        except Exception:  # the answer itself must be saved whatever happens to its bill
            log.exception("billing answer %s failed", job.id)
            return None

    @staticmethod
    def _usage_row(
        recorder: AnswerRecorder, job: GenerationJob, billed: BilledUsage | None, status: str
    ) -> Callable[[Connection], None] | None:
        """The usage ledger's row for this answer, as a write (None when it is not billed)."""
        admission = recorder.admission
        if billed is None or admission is None:
            return None
        return partial(
            usage.record_usage,
            # Whose budget held and was billed for it: the same on every instance, also
            # after a guest signed in to an account meanwhile (the ledger seeds budgets).
            user_id=admission.user_id,
            message_id=job.id,
            model=job.model,
            upstream=job.upstream_names,
            prompt_tokens=billed.prompt_tokens,
            completion_tokens=billed.completion_tokens,
            reserved_tokens=admission.reserved_tokens,
            status=status,
            source=billed.source,
            created_at=admission.admitted_at,
        )
