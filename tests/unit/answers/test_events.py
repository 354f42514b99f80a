"""The event buffer keeps tokens as escaped JSON text only: what goes out must still be the
exact frames the encoder makes, and the text must come back whole."""

from __future__ import annotations

import asyncio

import orjson

from chatrelay.answers.events import EventBuffer
from chatrelay.answers.frames import DONE, OpenAIFrames

TOKENS = ['He said "hi"', "\n", "back\\slash", "naïve ☃ 😀", "\u2028", "<b>&</b>", "\t\x01"]


def filled() -> tuple[OpenAIFrames, EventBuffer]:
    encoder = OpenAIFrames("chatcmpl-1", "m", created=1)
    buffer = EventBuffer(encoder.content_template)
    buffer.append(encoder.role())
    for token in TOKENS:
        buffer.append_content(orjson.dumps(token)[1:-1])
    buffer.append(encoder.final("stop", None, status="complete"))
    buffer.append(DONE)
    buffer.close()
    return encoder, buffer


def test_frames_and_text_are_what_the_encoder_makes() -> None:
    encoder, buffer = filled()
    expected = [encoder.role(), *(encoder.content(t) for t in TOKENS)]
    expected += [encoder.final("stop", None, status="complete"), DONE]
    assert [buffer.frame(i) for i in range(len(buffer))] == expected
    assert buffer.content_text() == "".join(TOKENS)
    assert buffer.content_text(3, 5) == "".join(TOKENS[2:4])
    assert buffer.content_count() == len(TOKENS)
    for token, frame in zip(TOKENS, expected[1:-2], strict=True):
        body = orjson.loads(frame.removeprefix(b"data: "))
        assert body["choices"][0]["delta"]["content"] == token


async def test_follow_replays_with_ids_from_any_point() -> None:
    _, buffer = filled()
    whole = b"".join([chunk async for chunk in buffer.follow(ids=True)])
    frames = [buffer.frame(i) for i in range(len(buffer))]
    assert whole == b"".join(b"id: %d\n" % (i + 1) + f for i, f in enumerate(frames))
    rest = b"".join([chunk async for chunk in buffer.follow(after=5)])
    assert rest == b"".join(frames[5:])


async def test_a_live_follower_gets_each_event_as_it_comes() -> None:
    encoder = OpenAIFrames("chatcmpl-2", "m", created=1)
    buffer = EventBuffer(encoder.content_template)
    got: list[bytes] = []

    async def listen() -> None:
        async for chunk in buffer.follow(ids=True):
            got.append(chunk)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0)
    buffer.append_content(b"one")
    await asyncio.sleep(0)
    buffer.append(DONE)
    buffer.close()
    await asyncio.wait_for(listener, 1)
    assert got == [b"id: 1\n" + encoder.content("one"), b"id: 2\n" + DONE]


def test_whole_frames_between_tokens_take_no_text() -> None:
    encoder = OpenAIFrames("chatcmpl-3", "m", created=1)
    buffer = EventBuffer(encoder.content_template)
    buffer.append_content(orjson.dumps("a\n")[1:-1])
    buffer.append(b": keep-alive\n\n")
    buffer.append_content(orjson.dumps('"b"')[1:-1])
    assert buffer.content_text() == 'a\n"b"'
    assert buffer.content_text(1, 3) == '"b"'
    assert buffer.content_text(1, 2) == ""
    assert buffer.frame(1) == b": keep-alive\n\n"
    assert buffer.frame(2) == encoder.content('"b"')


def ended() -> tuple[OpenAIFrames, EventBuffer, bytes]:
    encoder = OpenAIFrames("chatcmpl-4", "m", created=1)
    buffer = EventBuffer(encoder.content_template)
    buffer.append(encoder.role())
    buffer.append_content(b"Hi")
    page_ending = encoder.final("stop", None, status="complete")
    buffer.append_ending(page_ending)
    buffer.append(DONE)
    buffer.close()
    return encoder, buffer, page_ending


OTHER_ENDING = b'data: {"done":true,"theirs":1}\n\n'


async def test_a_follower_given_an_ending_gets_its_own_in_the_endings_place() -> None:
    encoder, buffer, page_ending = ended()
    theirs = b"".join([chunk async for chunk in buffer.follow(ending=lambda: OTHER_ENDING)])
    assert theirs == encoder.role() + encoder.content("Hi") + OTHER_ENDING + DONE
    # The page's followers, and the stored frame itself, are untouched.
    page = b"".join([chunk async for chunk in buffer.follow()])
    assert page == encoder.role() + encoder.content("Hi") + page_ending + DONE
    assert buffer.frame(2) == page_ending
    assert buffer.content_text() == "Hi"  # the ending takes no text


async def test_the_ending_keeps_its_id_and_a_follower_past_it_never_renders_it() -> None:
    _, buffer, _ = ended()
    calls: list[int] = []

    def ending() -> bytes:
        calls.append(1)
        return OTHER_ENDING

    resumed = b"".join([c async for c in buffer.follow(after=2, ids=True, ending=ending)])
    assert resumed == b"id: 3\n" + OTHER_ENDING + b"id: 4\n" + DONE
    past = b"".join([c async for c in buffer.follow(after=3, ids=True, ending=ending)])
    assert past == b"id: 4\n" + DONE
    assert calls == [1]  # rendered once, for the one follower that got it


async def test_a_live_follower_gets_its_ending_when_it_comes() -> None:
    encoder = OpenAIFrames("chatcmpl-5", "m", created=1)
    buffer = EventBuffer(encoder.content_template)
    got: list[bytes] = []

    async def listen() -> None:
        async for chunk in buffer.follow(ending=lambda: OTHER_ENDING):
            got.append(chunk)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0)
    buffer.append_content(b"one")
    await asyncio.sleep(0)
    assert got == [encoder.content("one")]
    buffer.append_ending(encoder.error("cut", type="upstream_error", code="upstream_cut"))
    buffer.append(DONE)
    buffer.close()
    await listener
    assert b"".join(got) == encoder.content("one") + OTHER_ENDING + DONE
