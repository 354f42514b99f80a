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
    recorder = store.recorder(owner_id=user.id, admission=admission)  # for an Answer
    recorder.started(answer)              # its text flushed while it streams
    billed = await recorder.finished(outcome)   # its AnswerOutcome stored and billed
    await store.close()

The recorder knows the answer only as :class:`Streaming` (an id and a growing text) while it
streams, and as an immutable :class:`AnswerOutcome` at its end; it gives back what it billed,
which the answer then reports in its ending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import orjson
from sqlalchemy import Connection

from chatrelay.answers.attempt import AttemptUse
from chatrelay.answers.spending import Prices, cost_row
from chatrelay.limits.admission import Admission
from chatrelay.limits.billing import BilledUsage
from chatrelay.limits.quotas import Quotas
from chatrelay.store import answer_rows, costs, usage
from chatrelay.store.database import Database
from chatrelay.store.models import AnswerStatus, utcnow
from chatrelay.upstreams.chunk import Usage
from chatrelay.upstreams.dialects import UpstreamMessage

log = logging.getLogger(__name__)


def _both(*writes: Callable[[Connection], None] | None) -> Callable[[Connection], None]:
    def write(connection: Connection) -> None:
        for one in writes:
            if one is not None:
                one(connection)

    return write


# A flush this small (a few answers' text, as at low concurrency) is written on the event loop
# itself, not on the writer thread: the hop there and back (a wake-up of each thread) cost
# more CPU than the write (docs/performance.md#small-writes).
# Bigger ones stay on the thread, so that the loop never waits long for SQLite.
SMALL_FLUSH_ROWS = 16
SMALL_FLUSH_CHARS = 64 * 1024

# Tries of an answer's final write before it is given up (logged as an error).
FINAL_WRITE_ATTEMPTS = 3


class Streaming(Protocol):
    """What the flusher reads of a streaming answer."""

    @property
    def id(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def text_length(self) -> int:
        """Cheap change detection: grows whenever the text does."""
        ...


@dataclass(frozen=True, slots=True)
class AnswerOutcome:
    """How an answer ended, as it is stored and billed: made once by the answer, read only."""

    id: str
    model: str
    status: AnswerStatus
    text: str
    # The message's fields besides its text (tool_calls, reasoning_content, refusal), or None.
    extra: dict[str, Any] | None
    finish_reason: str | None
    error: str | None
    # The upstream's own usage (already bounded by the answer), or None when it gave none.
    usage: Usage | None
    # Who served it (each once, in order, comma-separated) and who served it last.
    upstream_names: str
    last_upstream: str
    # An upstream took the prompt (billed from then on, even without a token).
    accepted: bool
    max_tokens: int
    # The conversation as sent, for counting the prompt when no usage came.
    messages: list[UpstreamMessage]
    # Every attempt, in order, for what each cost (its row in attempt_costs).
    attempts: tuple[AttemptUse, ...] = ()

    @property
    def metered_text(self) -> str:
        """What is counted as the answer's tokens when the upstream reports no usage: its
        text, and its tool calls and reasoning (tokens too)."""
        extra = self.extra
        if not extra:
            return self.text
        more = (v if isinstance(v, str) else orjson.dumps(v).decode() for v in extra.values())
        return self.text + "".join(part for part in more if part != "null")


class AnswerRecorder:
    """One answer's link to the store; counts the writes made for it."""

    def __init__(
        self, store: AnswerStore, *, owner_id: str, admission: Admission | None = None
    ) -> None:
        self.store = store
        # Who asked. Not a filter of the answer's writes, which find its row by id whoever
        # owns it now (store/answer_rows.py).
        self.owner_id = owner_id
        self.admission = admission
        self.writes = 0
        self.saved_length = 0
        self.answer: Streaming | None = None

    def started(self, answer: Streaming) -> None:
        self.answer = answer
        self.store.active[answer.id] = self
        self.store.streaming.set()

    async def finished(self, outcome: AnswerOutcome) -> Usage | None:
        """Store and bill the answer's end. What was billed when the upstream reported no
        usage (the counted tokens, which then stand in for it everywhere), else None."""
        self.store.active.pop(outcome.id, None)
        self.answer = None
        return await self.store.save_final(self, outcome)


class AnswerStore:
    def __init__(
        self,
        db: Database,
        *,
        interval: float,
        quotas: Quotas | None = None,
        prices: Prices | None = None,
    ) -> None:
        self.db = db
        self.interval = interval
        self.quotas = quotas
        # What an upstream charges for a model (the registry's ``price_of``): each attempt's
        # cost is written with the answer's end.
        self.prices = prices
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
            answer = recorder.answer
            if answer is not None and answer.text_length != recorder.saved_length:
                grown.append((recorder, answer.text_length))
                text = answer.text
                size += len(text)
                rows.append({"b_id": answer.id, "b_content": text})
        if not rows:
            return
        small = len(rows) <= SMALL_FLUSH_ROWS and size <= SMALL_FLUSH_CHARS
        await self.db.write(partial(answer_rows.save_answer_texts, rows=rows), small=small)
        for recorder, length in grown:
            recorder.saved_length = length
            recorder.writes += 1

    async def save_final(self, recorder: AnswerRecorder, outcome: AnswerOutcome) -> Usage | None:
        priced: list[dict[str, Any]] = []  # the attempts' cost rows, made as it is billed

        def spent(billed: BilledUsage | None) -> dict[str, int]:
            """What each upstream was paid (nanos), for the spend limits' settlement."""
            priced[:] = self._cost_rows(recorder, outcome, billed)
            paid: dict[str, int] = {}
            for row in priced:
                paid[row["upstream"]] = paid.get(row["upstream"], 0) + (row["paid_cost"] or 0)
            return paid

        billed = await self._settle(recorder.admission, outcome, spent)
        if not priced:  # not billed here (no admission): priced all the same
            spent(billed)
        reported = outcome.usage
        counted = None
        if reported is None and billed is not None:
            # The upstream reported nothing (llama.cpp's server does not): the counted tokens
            # stand in everywhere, in the stored message, the final chunk, logs and metrics.
            reported = counted = Usage(billed.prompt_tokens, billed.completion_tokens)
        # Everything the writes need, read here on the event loop: they run on a writer thread.
        final = partial(
            answer_rows.finish_answer,
            answer_id=outcome.id,
            content=outcome.text,
            # Tool calls, reasoning, a refusal: stored with the text, sent back with the history.
            extra=outcome.extra,
            status=outcome.status,
            finish_reason=outcome.finish_reason,
            error=outcome.error,
            prompt_tokens=reported.prompt_tokens if reported else None,
            completion_tokens=reported.completion_tokens if reported else None,
            upstream=outcome.upstream_names or None,
        )
        ledger = self._usage_row(recorder, outcome, billed)
        costed = partial(costs.record_costs, rows=priced) if priced else None

        write = _both(final, ledger, costed)

        for attempt in range(1, FINAL_WRITE_ATTEMPTS + 1):
            try:
                await self.db.write(write, small=True)
                recorder.writes += 1
                return counted
            except answer_rows.AnswerRowMissing:
                # Never taken for a success: the row may be in a transaction that moves it.
                log.warning(
                    "answer %s: no row to store its end in (attempt %d)", outcome.id, attempt
                )
            except Exception:
                log.exception("saving answer %s failed (attempt %d)", outcome.id, attempt)
                if costed is not None:
                    # The answer comes first: its cost rows must never be why it is lost.
                    log.error("answer %s: saved without its attempts' costs", outcome.id)
                    write, costed = _both(final, ledger), None
            if attempt < FINAL_WRITE_ATTEMPTS:
                await asyncio.sleep(0.2 * attempt)
        log.error(
            "answer %s: its end (%s) could not be stored; given up", outcome.id, outcome.status
        )
        if ledger is not None or costed is not None:
            # Its row is gone (its conversation deleted meanwhile): what it spent is still
            # the operator's record, and its budget's.
            try:
                await self.db.write(_both(ledger, costed), small=True)
            except Exception:
                log.exception("recording the usage of answer %s failed", outcome.id)
        return counted

    def _cost_rows(
        self, recorder: AnswerRecorder, outcome: AnswerOutcome, billed: BilledUsage | None
    ) -> list[dict[str, Any]]:
        """Each attempt's cost (answers/spending.py), as rows of attempt_costs."""
        prices = self.prices
        if prices is None or not outcome.attempts:
            return []
        admission = recorder.admission
        user_id = admission.user_id if admission is not None else recorder.owner_id
        created_at = admission.admitted_at if admission is not None else utcnow()
        counted_prompt = billed.prompt_tokens if billed is not None else 0
        rows = [
            cost_row(
                prices(use.upstream, outcome.model),
                kind="answer",
                user_id=user_id,
                api_key_id=admission.api_key_id if admission is not None else None,
                message_id=outcome.id,
                model=outcome.model,
                upstream=use.upstream,
                accepted=use.accepted,
                # An attempt whose upstream said nothing of the prompt: the answer's count.
                prompt_tokens=counted_prompt if use.prompt_tokens is None else use.prompt_tokens,
                completion_tokens=use.completion_tokens,
                requested_tokens=use.requested_tokens,
                created_at=created_at,
                outcome=use.outcome,
                first_token_s=use.first_token_s,
                duration_s=use.duration_s,
                failed_over=number < len(outcome.attempts) - 1,  # another attempt came after
            )
            for number, use in enumerate(outcome.attempts)
        ]
        return rows

    async def _settle(
        self,
        admission: Admission | None,
        outcome: AnswerOutcome,
        spent: Callable[[BilledUsage], dict[str, int]],
    ) -> BilledUsage | None:
        # Before the write and outside its retries: holds are given back even if it fails.
        if admission is None or self.quotas is None:
            return None
        try:
            return await self.quotas.settle(
                admission,
                usage=outcome.usage,
                text=outcome.metered_text,
                messages=outcome.messages,
                upstream=outcome.last_upstream,
                # The prompt is billed once an upstream took it; never more than max_tokens.
                accepted=outcome.accepted,
                max_completion=outcome.max_tokens,
                spent=spent,
            )
        except Exception:  # the answer itself must be saved whatever happens to its bill
            log.exception("billing answer %s failed", outcome.id)
            return None

    @staticmethod
    def _usage_row(
        recorder: AnswerRecorder, outcome: AnswerOutcome, billed: BilledUsage | None
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
            message_id=outcome.id,
            model=outcome.model,
            upstream=outcome.upstream_names,
            prompt_tokens=billed.prompt_tokens,
            completion_tokens=billed.completion_tokens,
            reserved_tokens=admission.reserved_tokens,
            status=outcome.status,
            source=billed.source,
            created_at=admission.admitted_at,
        )
