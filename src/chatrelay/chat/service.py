"""Starting, finding and stopping generation jobs.

Usage::

    service = ChatService(settings, registry)
    job = service.start(request)     # checks limits, picks the upstream, starts the job
    service.stop(message_id)
    await service.shutdown()
"""

from __future__ import annotations

import asyncio
import secrets

from chatrelay.chat.job import GenerationJob
from chatrelay.chat.schemas import ChatRequest
from chatrelay.config import Settings
from chatrelay.errors import NOT_FOUND, ChatRelayError
from chatrelay.upstreams.dialects import GenerationParams
from chatrelay.upstreams.registry import UpstreamRegistry


def new_message_id() -> str:
    # Unguessable: until accounts exist (persistence), knowing the id is what allows a stop.
    return "msg_" + secrets.token_urlsafe(16)


class ChatService:
    """Owns the running jobs. A finished job stays findable for ``finished_job_ttl`` seconds."""

    def __init__(self, settings: Settings, registry: UpstreamRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.jobs: dict[str, GenerationJob] = {}

    def start(self, request: ChatRequest) -> GenerationJob:
        self._check_sizes(request)
        upstream, model = self.registry.resolve(request.model)
        max_tokens = request.max_tokens or self.settings.default_max_tokens
        if max_tokens > self.settings.max_tokens_limit:
            raise ChatRelayError(
                400,
                f"max_tokens {max_tokens} is above this server's limit of "
                f"{self.settings.max_tokens_limit} (CHATRELAY_MAX_TOKENS_LIMIT).",
                code="max_tokens_too_large",
                param="max_tokens",
            )
        job = GenerationJob(
            message_id=new_message_id(),
            upstream=upstream,
            model=model,
            messages=[{"role": m.role, "content": m.content} for m in request.messages],
            params=GenerationParams(max_tokens, request.temperature, request.top_p),
            on_finished=self._forget_later,
        )
        self.jobs[job.id] = job
        job.start()
        return job

    def _check_sizes(self, request: ChatRequest) -> None:
        limits = self.settings
        if len(request.messages) > limits.max_messages:
            raise ChatRelayError(
                400,
                f"Too many messages: {len(request.messages)}, the limit is {limits.max_messages} "
                "(CHATRELAY_MAX_MESSAGES).",
                code="too_many_messages",
                param="messages",
            )
        total = 0
        for index, message in enumerate(request.messages):
            size = len(message.content)
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
                f"The messages have {total} characters in all, the limit is "
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

    def get(self, message_id: str) -> GenerationJob:
        job = self.jobs.get(message_id)
        if job is None:
            raise ChatRelayError(
                404,
                f"No answer '{message_id}' is being generated.",
                code="message_not_found",
                type=NOT_FOUND,
            )
        return job

    def stop(self, message_id: str) -> GenerationJob:
        job = self.get(message_id)
        job.stop()
        return job

    async def shutdown(self) -> None:
        await asyncio.gather(*(job.cancel_and_wait() for job in list(self.jobs.values())))
        self.jobs.clear()
