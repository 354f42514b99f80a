"""Starting, finding and stopping answers.

Usage::

    service = ChatService(settings, registry, db, quotas=quotas)
    await service.open()
    asked = AnswerRequest(messages=[{"role": "user", "content": "hi"}])  # answers/turns.py
    answer = await service.start(asked, owner_id=user.id, caller=quotas.caller(user, ip))
    frames = await service.reattach(answer_id, owner_id=user.id, after=last_event_id)
    await service.stop(answer_id, owner_id=user.id)
    await service.shutdown()

Answers run in the process that started them. With Redis (``CHATRELAY_REDIS_URL``) their events
are mirrored there and stops are published there, so any instance can re-attach a client to
any answer and stop it (answers/mirror.py); a heartbeat per instance lets the survivors
settle the answers of one that died (store/instances.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from chatrelay.alerts import Alerts
from chatrelay.answers.answer import Answer
from chatrelay.answers.carriage import carriage
from chatrelay.answers.events import Position
from chatrelay.answers.failover import RetryPolicy
from chatrelay.answers.frames import DONE
from chatrelay.answers.mirror import EventMirror
from chatrelay.answers.recorder import AnswerStore
from chatrelay.answers.replay import ending_frames, replay_stored, resume_index
from chatrelay.answers.turns import (
    AnswerRequest,
    check_sizes,
    read_turn,
    store_turn,
    with_system_prompt,
)
from chatrelay.config import Settings
from chatrelay.error_details import shows_details
from chatrelay.errors import ChatRelayError
from chatrelay.limits.admission import Admission, Caller
from chatrelay.limits.quotas import Quotas
from chatrelay.limits.spending import SpendAsk
from chatrelay.limits.tokens import estimate_prompt_tokens
from chatrelay.store import conversations, message_rows
from chatrelay.store.database import Database
from chatrelay.store.instances import InstanceHeartbeat
from chatrelay.store.models import MessageRow
from chatrelay.upstreams.dialects import GenerationParams
from chatrelay.upstreams.registry import UpstreamRegistry


class _Expiry:
    """Takes keys out of a dict ``ttl`` seconds after they are added, all with one timer.

    A timer per finished answer (``call_later``) would be several times an entry's size, kept
    for the whole ttl (docs/performance.md#finished-answers). Every key gets the same ttl, so
    the queue is in expiry order.
    """

    def __init__(self, entries: dict[str, Any], ttl: float) -> None:
        self._entries, self._ttl = entries, ttl
        self._queue: deque[tuple[float, str]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        self._queue.append((loop.time() + self._ttl, key))
        if self._timer is None:
            self._timer = loop.call_at(self._queue[0][0], self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        queue, now = self._queue, loop.time()
        while queue and queue[0][0] <= now:
            self._entries.pop(queue.popleft()[1], None)
        self._timer = loop.call_at(queue[0][0], self._expire, loop) if queue else None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


class ChatService:
    """Owns the running answers. A finished answer stays findable for ``finished_job_ttl``
    seconds (CHATRELAY_FINISHED_JOB_TTL, the setting's public name)."""

    def __init__(
        self,
        settings: Settings,
        registry: UpstreamRegistry,
        db: Database,
        *,
        quotas: Quotas | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.db = db
        self.answers: dict[str, Answer] = {}
        self._expiry = _Expiry(self.answers, settings.finished_job_ttl)
        self.quotas = quotas or Quotas.in_memory(settings, db)
        self._attachment_limits = message_rows.AttachmentLimits.of(settings)
        self.answer_store = AnswerStore(
            db, interval=settings.flush_interval, quotas=self.quotas, prices=registry.price_of
        )
        self._detailed_errors = shows_details(settings)
        self._policy = RetryPolicy(
            deadline=settings.retry_deadline, max_failovers=settings.max_failovers
        )
        self.heartbeat = InstanceHeartbeat(
            db, interval=settings.instance_heartbeat, running=self.running_ids
        )
        self.instance_id = self.heartbeat.id
        self.mirror: EventMirror | None = None
        self.alerts: Alerts | None = None  # told of every answer's end (chatrelay/alerts.py)
        if settings.redis_url is not None:
            self.mirror = EventMirror.connect(
                settings.redis_url,
                connect_timeout=settings.redis_timeout,
                prefix=settings.redis_prefix,
                on_stop=self.stop_local,
                interval=settings.event_mirror_interval,
                ttl=settings.finished_job_ttl,
                # Every frame of the longest answer allowed, with room for role and ending.
                max_events=settings.max_tokens_limit * 2 + 64,
                idle_check=settings.instance_heartbeat,
            )

    async def open(self) -> None:
        """Join the instances (settling the answers of dead ones) and start the background
        work: the answer flusher, the heartbeat, the event mirror. Call with the loop running."""
        await self.heartbeat.start()
        self.answer_store.start()
        if self.mirror is not None:
            self.mirror.start()

    async def start(
        self, asked: AnswerRequest, *, owner_id: str, caller: Caller | None = None
    ) -> Answer:
        """Store the question and an empty answer, then start generating the answer.

        With a ``caller``, its address's rate limit and stream slots are checked first and
        its budget is reserved before anything is stored (429/503 otherwise); what is held is
        settled when the answer ends, or given back here if the answer never starts.
        """
        admission = await self.quotas.admit(owner_id=owner_id, caller=caller)
        try:
            return await self._start(asked, owner_id=owner_id, admission=admission)
        except BaseException:
            await self.quotas.release(admission)
            raise

    async def _start(self, asked: AnswerRequest, *, owner_id: str, admission: Admission) -> Answer:
        model = self.registry.resolve_model(asked.model)
        max_tokens = asked.max_tokens or self.settings.default_max_tokens
        if max_tokens > self.settings.max_tokens_limit:
            raise ChatRelayError(
                400,
                f"max_tokens {max_tokens} is above this server's limit of "
                f"{self.settings.max_tokens_limit} (CHATRELAY_MAX_TOKENS_LIMIT).",
                code="max_tokens_too_large",
                param="max_tokens",
            )
        history, incoming, question = await read_turn(self.db, asked, owner_id=owner_id)
        upstream_messages = with_system_prompt(
            history + incoming, self.settings.system_prompt, asked.instructions
        )
        check_sizes(upstream_messages, self.settings)
        # Refused by name before anything is spent when no upstream of the model can take
        # what was asked; else only those that can will answer.
        carried = carriage(self.registry.serving(model), upstream_messages, asked.extra)
        # The budget (for the prompt too, history included) is reserved before anything is
        # stored or sent, and outside the writing transaction: the limits store may be remote,
        # and SQLite's write lock (or a pooled connection) must never wait on it.
        spend, prompt_tokens = None, None
        if self.registry.priced:  # the worst case in money, for the spend limits
            prompt_tokens = estimate_prompt_tokens(upstream_messages)
            worst, caps = self.registry.spend_ask(
                model, carried.upstreams, prompt_tokens=prompt_tokens, max_tokens=max_tokens
            )
            spend = SpendAsk(worst, caps)
        await self.quotas.reserve(
            admission,
            messages=upstream_messages,
            max_tokens=max_tokens,
            spend=spend,
            prompt_tokens=prompt_tokens,
        )
        allowed = carried.upstreams - admission.over_cap  # past their spend cap: not these
        # The question is committed before the upstream is called: nothing accepted is lost.
        conversation_id, answer_id = await store_turn(
            self.db,
            asked,
            owner_id=owner_id,
            incoming=incoming,
            question=question,
            model=model,
            instance_id=self.instance_id,
            attachment_limits=self._attachment_limits,
        )
        answer = Answer(
            answer_id=answer_id,
            owner_id=owner_id,
            conversation_id=conversation_id,
            registry=self.registry,
            policy=self._policy,
            model=model,
            messages=upstream_messages,
            params=GenerationParams(
                max_tokens,
                asked.temperature,
                asked.top_p,
                asked.top_k,
                extra=asked.extra or None,
                max_tokens_field=asked.max_tokens_field,
            ),
            upstreams=allowed,
            dropped_params=carried.dropped,
            detailed_errors=self._detailed_errors,
            recorder=self.answer_store.recorder(owner_id=owner_id, admission=admission),
            on_finished=self._forget_later,
        )
        self.answers[answer.id] = answer
        answer.start()
        if self.mirror is not None:
            self.mirror.track(answer.id, answer.buffer)
        return answer

    def _forget_later(self, answer: Answer) -> None:
        if self.alerts is not None:
            failed = answer.status in ("error", "interrupted")
            self.alerts.answer_ended(failed=failed, cut=answer.failovers > 0)
        if self.settings.finished_job_ttl <= 0:
            self.answers.pop(answer.id, None)
        else:
            self._expiry.add(answer.id)

    def local_answer(self, answer_id: str, *, owner_id: str) -> Answer | None:
        answer = self.answers.get(answer_id)
        return answer if answer is not None and answer.owner_id == owner_id else None

    def live_text(self, answer_id: str, *, owner_id: str) -> str | None:
        """The text so far of the owner's answer if it runs here (or ended a moment ago):
        fresher than its stored row, which is flushed on a timer; None otherwise."""
        answer = self.local_answer(answer_id, owner_id=owner_id)
        return answer.text if answer is not None else None

    async def _stored_answer(self, answer_id: str, *, owner_id: str) -> MessageRow:
        async with self.db.read() as session:
            message = await conversations.get_message(
                session, owner_id=owner_id, message_id=answer_id
            )
        if message.role != "assistant":
            raise conversations.NotFound("answer", answer_id)
        return message

    async def reattach(
        self, answer_id: str, *, owner_id: str, after: int = 0, position: Position | None = None
    ) -> AsyncIterator[bytes]:
        """The answer's events after event ``after`` (with ids), live while it runs anywhere;
        ``position`` follows how far they went out when it runs here.

        Raises NotFound (404) before anything streams if the answer is not the owner's.
        """
        answer = self.local_answer(answer_id, owner_id=owner_id)
        start = resume_index(answer.buffer, after) if answer is not None else None
        if answer is not None and start is not None:
            return answer.buffer.follow(start, ids=True, position=position)
        message = await self._stored_answer(answer_id, owner_id=owner_id)
        mirror = self.mirror
        if mirror is not None and (
            message.status == "streaming" or await mirror.exists(message.id)
        ):
            ending = partial(self._ending_if_over, message.id, owner_id)
            return mirror.follow(message.id, after=after, ending=ending)
        return replay_stored(self.db, message, poll_interval=self.settings.flush_interval)

    async def _ending_if_over(self, answer_id: str, owner_id: str) -> bytes | None:
        """For a follower that heard nothing for a while: None while the answer is streaming,
        else how its stream ends (its instance died and was settled, or it was deleted)."""
        try:
            message = await self._stored_answer(answer_id, owner_id=owner_id)
        except conversations.NotFound:
            return DONE
        return None if message.status == "streaming" else ending_frames(message)

    def adopt_answers(self, *, guest_id: str, owner_id: str) -> None:
        """A guest signed in to an account, which took its conversations: its answers running
        here are the account's now (their writes filter on the owner)."""
        for answer in self.answers.values():
            if answer.owner_id == guest_id:
                answer.owner_id = owner_id
                if answer.recorder is not None:
                    answer.recorder.owner_id = owner_id

    def running_ids(self) -> list[str]:
        return [answer.id for answer in self.answers.values() if not answer.finished]

    def stop_local(self, answer_id: str) -> bool:
        """Stop the answer if it runs in this process (a stop published by another instance
        names only the id: that instance checked the owner)."""
        answer = self.answers.get(answer_id)
        return answer.stop() if answer is not None else False

    async def stop(self, answer_id: str, *, owner_id: str) -> str:
        """Stop the answer wherever it runs; its status: ``stopping`` or how it ended."""
        answer = self.local_answer(answer_id, owner_id=owner_id)
        if answer is not None:
            answer.stop()
            return "stopping" if not answer.finished else answer.status
        message = await self._stored_answer(answer_id, owner_id=owner_id)
        if message.status != "streaming":
            return message.status
        if self.mirror is None:
            # Not here, and no other instance can be reached: a row its dead instance left
            # (the heartbeat settles it soon), or several instances without Redis.
            raise ChatRelayError(
                409,
                "This answer is being generated by another chatrelay instance, which this "
                "one cannot reach: set CHATRELAY_REDIS_URL on every instance so that stops "
                "and re-attaches work across them.",
                code="answer_elsewhere",
            )
        await self.mirror.publish_stop(answer_id)
        return "stopping"

    async def stop_all(self, message_ids: list[str], *, conversation_id: str) -> None:
        """Stop these answers wherever they run, and every answer of the conversation running
        here whatever its stored status says (the caller checked the owner)."""
        for answer in list(self.answers.values()):
            if answer.conversation_id == conversation_id:
                answer.stop()
        for answer_id in message_ids:
            if not self.stop_local(answer_id) and self.mirror is not None:
                await self.mirror.publish_stop(answer_id)

    async def shutdown(self) -> None:
        try:
            await asyncio.gather(
                *(answer.cancel_and_wait() for answer in list(self.answers.values()))
            )
            self.answers.clear()
            self._expiry.cancel()
            await self.answer_store.close()
            if self.mirror is not None:
                await self.mirror.close()
        finally:
            await self.heartbeat.close()
