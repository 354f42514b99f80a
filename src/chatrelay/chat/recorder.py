"""Keeps a streaming answer in the database: flushed on a timer, settled at the end.

Never a write per token: the text is written every ``interval`` seconds while it grows, and
once more with the final status, usage and error when the answer ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from chatrelay.store import conversations
from chatrelay.store.database import Database

if TYPE_CHECKING:
    from chatrelay.chat.job import GenerationJob

log = logging.getLogger(__name__)

# Job status -> stored message status.
STORED_STATUS = {"done": "complete", "stopped": "stopped", "error": "error"}


class AnswerRecorder:
    def __init__(self, db: Database, *, owner_id: str, interval: float) -> None:
        self.db = db
        self.owner_id = owner_id
        self.interval = interval
        self.writes = 0  # database writes for this answer, for the benchmark's figure
        self._flusher: asyncio.Task[None] | None = None

    def started(self, job: GenerationJob) -> None:
        self._flusher = asyncio.create_task(self._flush_periodically(job), name=f"flush-{job.id}")

    async def _flush_periodically(self, job: GenerationJob) -> None:
        saved = 0
        while True:
            await asyncio.sleep(self.interval)
            if job.text_length != saved:
                saved = job.text_length
                try:
                    async with self.db.transaction() as session:
                        await conversations.save_answer_text(
                            session, owner_id=self.owner_id, message_id=job.id, content=job.text
                        )
                    self.writes += 1
                except Exception:  # the final write retries; a flush must never kill the job
                    log.exception("flushing answer %s failed", job.id)

    async def finished(self, job: GenerationJob, *, status: str | None = None) -> None:
        """Write the final state. ``status`` overrides the job's (``interrupted`` on shutdown)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        usage = job.usage
        for attempt in range(3):
            try:
                async with self.db.transaction() as session:
                    await conversations.finish_answer(
                        session,
                        owner_id=self.owner_id,
                        message_id=job.id,
                        content=job.text,
                        status=status or STORED_STATUS.get(job.status, "interrupted"),
                        finish_reason=job.finish_reason,
                        error=job.error.message if job.error is not None else None,
                        prompt_tokens=usage.prompt_tokens if usage else None,
                        completion_tokens=usage.completion_tokens if usage else None,
                        upstream=job.upstream.config.name,
                    )
                self.writes += 1
                return
            except Exception:
                log.exception("saving answer %s failed (attempt %d)", job.id, attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
