"""Starting, finding and stopping generation jobs.

Usage::

    service = ChatService(settings, registry, db, quotas=quotas)
    job = await service.start(request, owner_id=user.id, caller=quotas.caller(user, ip))
    service.stop(message_id, owner_id=user.id)
    await service.shutdown()
"""

from __future__ import annotations

import asyncio

from chatrelay.chat.failover import RetryPolicy
from chatrelay.chat.job import GenerationJob
from chatrelay.chat.recorder import AnswerStore
from chatrelay.chat.schemas import ChatRequest
from chatrelay.config import Settings
from chatrelay.errors import ChatRelayError
from chatrelay.limits.quotas import Admission, Caller, Quotas
from chatrelay.store import conversations
from chatrelay.store.database import Database
from chatrelay.store.models import Message as StoredMessage
from chatrelay.upstreams.dialects import GenerationParams, Message
from chatrelay.upstreams.registry import UpstreamRegistry


def _counts_as_history(message: StoredMessage) -> bool:
    if message.role != "assistant":
        return True
    return message.status in conversations.HISTORY_STATUSES and bool(message.content)


def _as_message(message: StoredMessage) -> Message:
    return {"role": message.role, "content": message.content}


class ChatService:
    """Owns the running jobs. A finished job stays findable for ``finished_job_ttl`` seconds."""

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
        self.jobs: dict[str, GenerationJob] = {}
        self.quotas = quotas or Quotas.in_memory(settings, db)
        self.answers = AnswerStore(db, interval=settings.flush_interval, quotas=self.quotas)
        self._policy = RetryPolicy(
            deadline=settings.retry_deadline, max_failovers=settings.max_failovers
        )

    def open(self) -> None:
        """Start the background work (the answer flusher); call with the event loop running."""
        self.answers.start()

    async def start(
        self, request: ChatRequest, *, owner_id: str, caller: Caller | None = None
    ) -> GenerationJob:
        """Store the question and an empty answer, then start generating the answer.

        With a ``caller``, its address's rate limit and stream slots are checked first and
        its budget is reserved before anything is stored (429/503 otherwise); what is held is
        settled when the answer ends, or given back here if the job never starts.
        """
        admission = await self.quotas.admit(owner_id=owner_id, caller=caller)
        try:
            return await self._start(request, owner_id=owner_id, admission=admission)
        except BaseException:
            await self.quotas.release(admission)
            raise

    async def _start(
        self, request: ChatRequest, *, owner_id: str, admission: Admission
    ) -> GenerationJob:
        model = self.registry.resolve_model(request.model)
        max_tokens = request.max_tokens or self.settings.default_max_tokens
        if max_tokens > self.settings.max_tokens_limit:
            raise ChatRelayError(
                400,
                f"max_tokens {max_tokens} is above this server's limit of "
                f"{self.settings.max_tokens_limit} (CHATRELAY_MAX_TOKENS_LIMIT).",
                code="max_tokens_too_large",
                param="max_tokens",
            )
        incoming = [{"role": m.role, "content": m.content} for m in request.messages]
        history: list[Message] = []
        if request.conversation_id is not None:
            async with self.db.read() as session:
                conversation = await conversations.get_conversation(
                    session, owner_id=owner_id, conversation_id=request.conversation_id
                )
                stored = await conversations.messages_of(
                    session, owner_id=owner_id, conversation_id=conversation.id
                )
            history = [_as_message(m) for m in stored if _counts_as_history(m)]
            # The server keeps the history: of what the client sent, only the new message.
            incoming = incoming[-1:]
        upstream_messages = self._with_system_prompt(history + incoming)
        self._check_sizes(upstream_messages)
        # The budget (for the prompt too, history included) is reserved before anything is
        # stored or sent, and outside the writing transaction: the limits store may be remote,
        # and SQLite's write lock (or a pooled connection) must never wait on it.
        await self.quotas.reserve(admission, messages=upstream_messages, max_tokens=max_tokens)
        # The question is committed before the upstream is called: nothing accepted is lost.
        async with self.db.transaction() as session:
            if request.conversation_id is None:
                first_user = next((m for m in incoming if m["role"] == "user"), incoming[0])
                conversation = await conversations.create_conversation(
                    session,
                    owner_id=owner_id,
                    title=conversations.title_from(first_user["content"]),
                )
                last_seq = 0
            else:
                # Again under the write lock: it may have been deleted or grown meanwhile.
                conversation = await conversations.get_conversation(
                    session, owner_id=owner_id, conversation_id=request.conversation_id, lock=True
                )
                last_seq = await conversations.last_seq(
                    session, owner_id=owner_id, conversation_id=conversation.id
                )
            for message in incoming:
                last_seq += 1
                await conversations.add_message(
                    session, owner_id=owner_id, conversation=conversation, seq=last_seq, **message
                )
            answer = await conversations.add_message(
                session,
                owner_id=owner_id,
                conversation=conversation,
                role="assistant",
                content="",
                status="streaming",
                seq=last_seq + 1,
                model=model,
            )
        job = GenerationJob(
            message_id=answer.id,
            owner_id=owner_id,
            conversation_id=conversation.id,
            pool=self.registry,
            policy=self._policy,
            model=model,
            messages=upstream_messages,
            params=GenerationParams(max_tokens, request.temperature, request.top_p),
            recorder=self.answers.recorder(owner_id=owner_id, admission=admission),
            on_finished=self._forget_later,
        )
        self.jobs[job.id] = job
        job.start()
        return job

    def _with_system_prompt(self, messages: list[Message]) -> list[Message]:
        prompt = self.settings.system_prompt
        if prompt and not any(m["role"] == "system" for m in messages):
            return [{"role": "system", "content": prompt}, *messages]
        return messages

    def _check_sizes(self, messages: list[Message]) -> None:
        limits = self.settings
        if len(messages) > limits.max_messages:
            raise ChatRelayError(
                400,
                f"Too many messages: {len(messages)}, the limit is {limits.max_messages} "
                "(CHATRELAY_MAX_MESSAGES).",
                code="too_many_messages",
                param="messages",
            )
        total = 0
        for index, message in enumerate(messages):
            size = len(message["content"])
            total += size
            if size > limits.max_message_chars:
                raise ChatRelayError(
                    400,
                    f"messages[{index}].content has {size} characters, the limit is "
                    f"{limits.max_message_chars} (CHATRELAY_MAX_MESSAGE_CHARS).",
                    code="message_too_long",
                    param=f"messages[{index}].content",
                )
        if total > limits.max_total_chars:
            raise ChatRelayError(
                400,
                f"The messages of the conversation have {total} characters in all, the limit is "
                f"{limits.max_total_chars} (CHATRELAY_MAX_TOTAL_CHARS).",
                code="conversation_too_long",
                param="messages",
            )

    def _forget_later(self, job: GenerationJob) -> None:
        ttl = self.settings.finished_job_ttl
        if ttl <= 0:
            self.jobs.pop(job.id, None)
        else:
            asyncio.get_running_loop().call_later(ttl, self.jobs.pop, job.id, None)

    def get(self, message_id: str, *, owner_id: str) -> GenerationJob:
        job = self.jobs.get(message_id)
        if job is None or job.owner_id != owner_id:
            raise conversations.NotFound("message", message_id)
        return job

    def stop(self, message_id: str, *, owner_id: str) -> GenerationJob:
        job = self.get(message_id, owner_id=owner_id)
        job.stop()
        return job

    async def shutdown(self) -> None:
        await asyncio.gather(*(job.cancel_and_wait() for job in list(self.jobs.values())))
        self.jobs.clear()
        await self.answers.close()
