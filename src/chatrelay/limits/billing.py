"""What an answer cost: the upstream's own count when it gives one, else counted from the
text (with the upstream's tokenizer when there is one, else the estimate).

Usage::

    billing = Billing()
    billing.counters["embedded"] = LlamaVocabCounter(model_path)   # the others are estimated
    billed = await billing.bill(usage=..., text=..., messages=..., upstream="embedded")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from chatrelay.limits.tokens import EstimatingCounter, TokenCounter
from chatrelay.upstreams.chunk import Usage
from chatrelay.upstreams.dialects import UpstreamMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BilledUsage:
    prompt_tokens: int
    completion_tokens: int
    source: str  # upstream | tokenizer | estimate

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Billing:
    def __init__(self) -> None:
        # Per upstream name; the rest are estimated. The embedded model registers its own.
        self.counters: dict[str, TokenCounter] = {}
        self.estimator = EstimatingCounter()

    async def bill(
        self,
        *,
        usage: Usage | None,
        text: str,
        messages: Sequence[UpstreamMessage],
        upstream: str,
        accepted: bool = False,
        max_completion: int | None = None,
    ) -> BilledUsage:
        """The tokens an answer cost: the upstream's own count, else counted from its text.

        ``accepted``: an upstream took the request (answered 200), so it read the prompt,
        which is billed even when no token came (stopped, or failed before the first one).
        ``max_completion``: the max_tokens the request allowed; an upstream that went past
        it (or says it did) is not billed for more."""
        if usage is not None and usage.total_tokens > 0:
            completion = usage.completion_tokens
            if max_completion is not None:
                completion = min(completion, max_completion)
            return BilledUsage(usage.prompt_tokens, completion, "upstream")
        counter = self.counters.get(upstream, self.estimator)
        if not text and not accepted:  # refused, or stopped before an upstream took it
            return BilledUsage(0, 0, counter.source)
        try:
            prompt = await counter.count_prompt(messages)
            completion = await counter.count(text) if text else 0
        except Exception:  # a broken tokenizer must not lose the bill
            log.exception("counting tokens with %s failed; estimating", upstream)
            counter = self.estimator
            prompt = await counter.count_prompt(messages)
            completion = await counter.count(text)
        if max_completion is not None:
            completion = min(completion, max_completion)
        return BilledUsage(prompt, completion, counter.source)

    async def close(self) -> None:
        """Let go of the tokenizers (their threads and vocabularies)."""
        for counter in self.counters.values():
            close = getattr(counter, "close", None)
            if close is not None:
                await asyncio.to_thread(close)
