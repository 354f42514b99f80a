"""The Redis mirror's shutdown when a task swallows a cancellation (answers/mirror.py)."""

from __future__ import annotations

import asyncio

from chatrelay.answers.mirror import _cancelled


async def _absorbs_one_cancellation(cancels: list[int]) -> None:
    """As a mirror round does when redis-py's Pipeline.execute absorbs the cancellation: the
    task carries on, back to waiting for work."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cancels.append(1)
    await asyncio.Event().wait()  # waiting for work again


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again_and_ends() -> None:
    cancels: list[int] = []
    task = asyncio.create_task(_absorbs_one_cancellation(cancels))
    await asyncio.sleep(0)
    await _cancelled([task])
    assert task.cancelled() and cancels == [1]


async def test_tasks_already_ended_are_left_as_they_are() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    await _cancelled([task])
    assert task.done() and not task.cancelled()
