"""Counting tokens when an upstream does not report its usage.

Usage::

    estimate_tokens("Hello there")                    # about 4 bytes of UTF-8 per token
    counter = LlamaVocabCounter(model_path)           # the embedded model's own tokenizer
    await counter.count("Hello there")                # in a worker thread, never on the loop

The estimate is what reservations use (it needs no I/O, so admission stays cheap) and what
settlement falls back to for upstreams whose tokenizer we do not have. Bytes rather than
characters so that scripts with more tokens per character (CJK: about one token each) are not
badly under-counted. The embedded llama.cpp model is counted exactly with its GGUF vocabulary,
loaded here without weights. Not through the llama.cpp server's ``/extras/tokenize``: that
takes the server's model lock and, with its default ``interrupt_requests``, would cut short
the answer it is streaming to someone else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import orjson

from chatrelay.text import message_text
from chatrelay.upstreams.dialects import UpstreamMessage

BYTES_PER_TOKEN = 4
# Role markers and separators a chat template adds around each message, and the reply's prefix.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3


def estimate_tokens(text: str) -> int:
    return -(-len(text.encode()) // BYTES_PER_TOKEN)  # ceil, without floats


def estimate_prompt_tokens(messages: Iterable[UpstreamMessage]) -> int:
    return TOKENS_PER_REPLY + sum(
        estimate_tokens(prompt_text(m)) + TOKENS_PER_MESSAGE for m in messages
    )


class TokenCounter(Protocol):
    #: Written to the ledger: where the numbers came from.
    source: str

    async def count(self, text: str) -> int: ...

    async def count_prompt(self, messages: Sequence[UpstreamMessage]) -> int: ...


class EstimatingCounter:
    source = "estimate"

    async def count(self, text: str) -> int:
        return estimate_tokens(text)

    async def count_prompt(self, messages: Sequence[UpstreamMessage]) -> int:
        return estimate_prompt_tokens(messages)


class LlamaVocabCounter:
    """Exact counts with a GGUF model's vocabulary, in one worker thread of its own."""

    source = "tokenizer"

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer")
        self._load_lock = threading.Lock()
        self._vocab: Any = None
        self._model: Any = None
        self._llama: Any = None

    def _load(self) -> Any:
        with self._load_lock:
            if self._vocab is None:
                import llama_cpp

                # llama.cpp logs every load to stderr unless its Python logger says otherwise.
                logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
                params = llama_cpp.llama_model_default_params()
                params.vocab_only = True
                model = llama_cpp.llama_model_load_from_file(str(self.model_path).encode(), params)
                if not model:
                    raise RuntimeError(f"cannot load the vocabulary of {self.model_path}")
                self._llama, self._model = llama_cpp, model
                self._vocab = llama_cpp.llama_model_get_vocab(model)
            return self._vocab

    def _count_sync(self, texts: Sequence[str]) -> int:
        vocab = self._load()
        total = 0
        for text in texts:
            data = text.encode()
            # With no output buffer llama_tokenize answers minus the number of tokens.
            total += -self._llama.llama_tokenize(vocab, data, len(data), None, 0, False, False)
        return total

    async def _count(self, texts: Sequence[str]) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._count_sync, texts)

    async def count(self, text: str) -> int:
        return await self._count([text]) if text else 0

    async def count_prompt(self, messages: Sequence[UpstreamMessage]) -> int:
        counted = await self._count([prompt_text(m) for m in messages])
        return counted + TOKENS_PER_REPLY + TOKENS_PER_MESSAGE * len(messages)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._model is not None:
            self._llama.llama_model_free(self._model)
            self._model = self._vocab = None


def prompt_text(message: UpstreamMessage) -> str:
    """What of a message is counted as prompt: its text, and the tool calls it carries (their
    names and arguments are tokens too); images are not estimated."""
    text = message_text(message)
    calls = message.get("tool_calls")
    if calls:
        text += orjson.dumps(calls).decode()
    return text
