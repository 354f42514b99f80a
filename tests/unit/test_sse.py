"""Tests for chatrelay.sse: literal byte streams, an independent reference decoder,
chunking-invariance and encode/decode round-trip properties."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatrelay.sse import (
    DONE,
    EventTooLarge,
    ServerSentEvent,
    SSEDecoder,
    encode_comment,
    encode_event,
)

E = ServerSentEvent
BOM = b"\xef\xbb\xbf"


def decode(*pieces: bytes, flush: bool = True) -> list[ServerSentEvent]:
    d = SSEDecoder()
    out: list[ServerSentEvent] = []
    for p in pieces:
        out += d.feed(p)
    if flush:
        out += d.flush()
    return out


def run(pieces: Iterable[bytes]) -> tuple[list[ServerSentEvent], int, str | None]:
    """Feed pieces then flush; return (events, comment count, last event id)."""
    d = SSEDecoder()
    out: list[ServerSentEvent] = []
    for p in pieces:
        out += d.feed(p)
    out += d.flush()
    return out, d.comments, d.last_event_id


# --------------------------------------------------------------------------- literal streams


def test_openai_style_stream() -> None:
    stream = (
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":'
        b'[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
        b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
        b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    d = SSEDecoder()
    events = d.feed(stream)
    assert [e.data[:22] for e in events] == [
        '{"id":"chatcmpl-1","ob',
        '{"id":"chatcmpl-1","ch',
        '{"id":"chatcmpl-1","ch',
        "[DONE]",
    ]
    assert all(e.event == "message" and e.id is None and e.retry is None for e in events)
    assert events[2].data.endswith('"content":"lo"}}]}')
    assert d.flush() == []
    assert d.comments == 0


def test_livepeer_style_stream_with_keepalives_and_abrupt_close() -> None:
    # Gateway writes "data: %s\n\n" per chunk with ": ping" keep-alives in between, and
    # sometimes closes the connection right after the last data line.
    chunk1 = (
        b'{"id":"lp-7","model":"meta-llama/Meta-Llama-3.1-8B-Instruct","created":1730000000,'
        b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":""}],'
        b'"tokens_used":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
    )
    chunk2 = (
        b'{"id":"lp-7","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"stop"}]}'
    )
    stream = b": ping\n\ndata: " + chunk1 + b"\n\n: ping\n\ndata: " + chunk2 + b"\n\ndata: [DONE]\n"
    d = SSEDecoder()
    # Fed in awkward pieces, as iter_any() may deliver.
    events: list[ServerSentEvent] = []
    for i in range(0, len(stream), 37):
        events += d.feed(stream[i : i + 37])
    assert [e.data for e in events] == [chunk1.decode(), chunk2.decode()]
    assert d.comments == 2
    # No blank line after [DONE]: only the lenient flush delivers it.
    assert d.flush() == [E("[DONE]")]


def test_crlf_line_endings() -> None:
    stream = b"event: delta\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"
    assert decode(stream) == [E("a\nb", "delta"), E("c")]


def test_cr_only_line_endings() -> None:
    stream = b"event: delta\rdata: a\rdata: b\r\rdata: c\r\r"
    assert decode(stream) == [E("a\nb", "delta"), E("c")]


def test_mixed_line_endings() -> None:
    stream = b"data: a\rdata: b\r\ndata: c\n\r\n"
    assert decode(stream) == [E("a\nb\nc")]


def test_cr_at_end_of_feed_then_lf_is_one_line_ending() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: a\r") == []
    # If this LF were a second line ending, "a" would be dispatched on its own here.
    assert d.feed(b"\ndata: b\r") == []
    assert d.feed(b"\n") == []
    assert d.feed(b"\r") == [E("a\nb")]
    assert d.feed(b"\n") == []  # belongs to the preceding CR
    assert d.feed(b"\n") == []  # a real blank line, but nothing buffered
    assert d.flush() == []


def test_cr_at_end_of_feed_then_cr_is_two_line_endings() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\r") == [E("a")]


def test_cr_at_end_of_feed_then_empty_feed_then_lf() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"") == []
    assert d.feed(b"\ndata: b\n\n") == [E("a\nb")]


def test_comments_are_counted_and_produce_no_event() -> None:
    d = SSEDecoder()
    assert d.feed(b": keep-alive\n\n") == []
    assert d.comments == 1
    assert d.feed(b":\n\n:ping\r\n\r\n") == []
    assert d.comments == 3
    assert d.feed(b": x\ndata: y\n: z\n\n") == [E("y")]
    assert d.comments == 5


def test_multi_line_data_and_space_handling() -> None:
    assert decode(b"data: a\ndata:\ndata: b\n\n") == [E("a\n\nb")]
    assert decode(b"data:x\n\n") == [E("x")]
    assert decode(b"data:  x \n\n") == [E(" x ")]  # only one leading space is removed
    assert decode(b"data: a: b:c\n\n") == [E("a: b:c")]  # only the first colon splits
    assert decode(b"event:  a\nid:  1\ndata:\tx\n\n") == [E("\tx", " a", " 1")]


def test_id_persists_across_events() -> None:
    d = SSEDecoder()
    events = d.feed(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\nid\ndata: d\n\n")
    assert [(e.data, e.id) for e in events] == [("a", "1"), ("b", "1"), ("c", "2"), ("d", "")]
    assert d.last_event_id == ""


def test_id_with_nul_is_ignored() -> None:
    d = SSEDecoder()
    events = d.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]
    assert d.last_event_id == "1"


def test_last_event_id_updates_at_blank_line_even_without_data() -> None:
    d = SSEDecoder()
    assert d.last_event_id is None
    assert d.feed(b"id: 5\n") == []
    assert d.last_event_id is None  # not yet dispatched
    assert d.feed(b"\n") == []
    assert d.last_event_id == "5"
    assert d.feed(b"data: x\n\n") == [E("x", id="5")]


def test_retry_valid_and_invalid() -> None:
    events = decode(
        b"retry: 3000\ndata: a\n\n"
        b"data: b\n\n"  # retry belongs to one event block only
        b"retry: 30a\ndata: c\n\n"
        b"retry: -1\ndata: d\n\n"
        b"retry:\ndata: e\n\n"
        b"retry\ndata: f\n\n"
        b"retry: 1.5\ndata: g\n\n"
        b"retry: \xef\xbc\x93\ndata: h\n\n"  # FULLWIDTH DIGIT THREE: not ASCII
        b"retry: \xc2\xb2\ndata: i\n\n"  # SUPERSCRIPT TWO: str.isdigit() but not ASCII
        b"retry:0\ndata: j\n\n"
        b"retry: 1\nretry: 2\ndata: k\n\n"
    )
    assert [(e.data, e.retry) for e in events] == [
        ("a", 3000),
        ("b", None),
        ("c", None),
        ("d", None),
        ("e", None),
        ("f", None),
        ("g", None),
        ("h", None),
        ("i", None),
        ("j", 0),
        ("k", 2),
    ]


def test_event_type() -> None:
    events = decode(
        b"event: delta\ndata: x\n\n"
        b"data: y\n\n"  # type does not persist
        b"event:\ndata: z\n\n"  # empty type -> "message"
        b"event: lost\n\ndata: w\n\n"  # blank line without data resets the type
        b"event: a\nevent: b\ndata: v\n\n"
    )
    assert [(e.event, e.data) for e in events] == [
        ("delta", "x"),
        ("message", "y"),
        ("message", "z"),
        ("message", "w"),
        ("b", "v"),
    ]


def test_bom_at_start_is_stripped() -> None:
    assert decode(BOM + b"data: x\n\n") == [E("x")]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_bom_split_over_two_feeds(cut: int) -> None:
    stream = BOM + b"data: x\n\n"
    assert decode(stream[:cut], stream[cut:]) == [E("x")]
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == [E("x")]


def test_bom_not_at_start_is_kept() -> None:
    # At the start of a later line it is part of the field name: "\ufeffdata" is ignored.
    assert decode(b"data: a\n\n" + BOM + b"data: b\n\n") == [E("a")]
    # Inside a value it is data.
    assert decode(b"data: " + BOM + b"x\n\n") == [E("\ufeffx")]
    # Only one BOM is stripped.
    assert decode(BOM + BOM + b"data: x\n\n") == []
    assert decode(BOM, BOM + b"data: x\n\n") == []
    assert decode(BOM + b"data: " + BOM + b"x\n\n") == [E("\ufeffx")]


def test_partial_bom_followed_by_other_bytes_is_not_stripped() -> None:
    # EF BB then "d": not a BOM; decodes to U+FFFD + "data", an unknown field.
    assert decode(b"\xef\xbbdata: x\n\ndata: y\n\n") == [E("y")]
    assert decode(b"\xef", b"\xbb", b"data: x\n\ndata: y\n\n") == [E("y")]


def test_4_byte_emoji_split_at_every_offset() -> None:
    emoji = "\U0001f600"
    stream = b"data: " + emoji.encode() + b" ok " + emoji.encode() + b"\n\n"
    expected = [E(f"{emoji} ok {emoji}")]
    for i in range(len(stream) + 1):
        assert decode(stream[:i], stream[i:]) == expected, i
        for j in range(i, len(stream) + 1):
            assert decode(stream[:i], stream[i:j], stream[j:]) == expected, (i, j)


def test_invalid_utf8_is_replaced() -> None:
    assert decode(b"data: a\xffb\n\n") == [E("a\ufffdb")]
    # A truncated sequence right before the line ending.
    assert decode(b"data: a\xe2\x82\n\n") == [E("a\ufffd")]


def test_empty_data_line_gives_empty_event() -> None:
    assert decode(b"data:\n\n") == [E("")]
    assert decode(b"data: \n\n") == [E("")]
    assert decode(b"data\n\n") == [E("")]
    assert decode(b"data:\ndata:\n\n") == [E("\n")]


def test_blank_lines_without_data_produce_nothing() -> None:
    d = SSEDecoder()
    assert d.feed(b"\n\n\r\n\r\r\n\n") == []
    assert d.feed(b"event: x\nid: 1\nretry: 5\n\n") == []
    assert d.flush() == []
    assert d.last_event_id == "1"


def test_field_without_colon() -> None:
    assert decode(b"data\ndata\n\n") == [E("\n")]
    assert decode(b"event\ndata: x\n\n") == [E("x")]
    assert decode(b"id\ndata: x\n\n") == [E("x", id="")]
    assert decode(b"retry\ndata: x\n\n") == [E("x")]


def test_unknown_fields_ignored() -> None:
    assert decode(b"foo: bar\nData: no\nDATA: no\n data: no\ndata : no\ndata: x\n\n") == [E("x")]


def test_flush_with_trailing_blank_line() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: x\n\n") == [E("x")]
    assert d.flush() == []


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r", b"\r\n"])
def test_flush_without_trailing_blank_line(ending: bytes) -> None:
    d = SSEDecoder()
    assert d.feed(b"id: 9\nevent: e\ndata: x\ndata: y" + ending) == []
    assert d.flush() == [E("x\ny", "e", "9")]
    assert d.last_event_id == "9"
    assert d.flush() == []


def test_flush_without_data_dispatches_nothing_and_resets() -> None:
    d = SSEDecoder()
    assert d.feed(b"event: e\nid: 3") == []
    assert d.flush() == []
    assert d.last_event_id == "3"
    # Reset for a new stream: event type gone, BOM stripped again, id kept.
    assert d.feed(BOM + b"data: z\n\n") == [E("z", id="3")]


def test_flush_resets_pending_cr() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: a\r") == []
    assert d.flush() == [E("a")]
    # A new stream starting with LF: a real (empty) line, not the tail of the old CRLF.
    assert d.feed(b"\ndata: b\n\n") == [E("b")]


def test_long_line_in_tiny_pieces() -> None:
    payload = b"x" * 20_000
    stream = b"data: " + payload + b"\n\n"
    d = SSEDecoder()
    out: list[ServerSentEvent] = []
    for i in range(0, len(stream), 3):
        out += d.feed(stream[i : i + 3])
    assert out == [E(payload.decode())]


def test_events_are_frozen_equal_and_hashable() -> None:
    (ev,) = decode(b"id: 1\nevent: t\nretry: 7\ndata: x\n\n")
    assert ev == E("x", "t", "1", 7)
    assert hash(ev) == hash(E("x", "t", "1", 7))
    assert repr(ev) == "ServerSentEvent(data='x', event='t', id='1', retry=7)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.data = "y"  # type: ignore[misc]


# --------------------------------------------------------------------------- encoder


def test_encode_event_bytes_fast_path() -> None:
    assert encode_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event('{"a":"\u00e9"}') == b'data: {"a":"\xc3\xa9"}\n\n'


def test_encode_event_fields_and_multiline() -> None:
    assert encode_event("a\nb\r\nc\rd", id="7", event="delta", retry=1500) == (
        b"id: 7\nevent: delta\nretry: 1500\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    )
    assert encode_event(b"a\r\nb") == b"data: a\ndata: b\n\n"
    assert encode_event("a\n") == b"data: a\ndata: \n\n"
    assert encode_event("") == b"data: \n\n"
    assert encode_event("x", event="") == b"data: x\n\n"
    assert encode_event("x", id="") == b"id: \ndata: x\n\n"
    assert encode_event(" x") == b"data:  x\n\n"


def test_encode_event_rejects_unencodable_fields() -> None:
    with pytest.raises(ValueError):
        encode_event("x", id="a\nb")
    with pytest.raises(ValueError):
        encode_event("x", id="a\x00b")
    with pytest.raises(ValueError):
        encode_event("x", event="a\rb")
    with pytest.raises(ValueError):
        encode_event("x", retry=-1)


def test_encode_comment_and_done() -> None:
    assert encode_comment() == b":\n\n"
    assert encode_comment("ping") == b": ping\n\n"
    assert encode_comment("a\nb") == b": a\n: b\n\n"
    assert DONE == b"data: [DONE]\n\n"
    d = SSEDecoder()
    assert d.feed(encode_comment("ping") + encode_comment() + DONE) == [E("[DONE]")]
    assert d.comments == 2


# --------------------------------------------------------------------------- reference decoder

_LINE_END = re.compile(rb"\r\n|\r|\n")


def reference_decode(stream: bytes) -> tuple[list[ServerSentEvent], int, str | None]:
    """A deliberately naive whole-stream decoder, written straight from the spec
    (plus the documented lenient end-of-stream dispatch)."""
    if stream.startswith(BOM):
        stream = stream[3:]
    raw_lines = _LINE_END.split(stream)
    if raw_lines[-1] == b"":
        raw_lines.pop()  # the stream ended with a line ending
    lines = [raw.decode("utf-8", "replace") for raw in raw_lines] + [""]
    events: list[ServerSentEvent] = []
    comments = 0
    data, event_type, id_buf, last_id, retry = "", "", None, None, None
    for line in lines:
        if line == "":
            last_id = id_buf
            if data:
                events.append(E(data[:-1], event_type or "message", id_buf, retry))
            data, event_type, retry = "", "", None
            continue
        if line.startswith(":"):
            comments += 1
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data += value + "\n"
        elif field == "event":
            event_type = value
        elif field == "id":
            if "\0" not in value:
                id_buf = value
        elif field == "retry" and re.fullmatch("[0-9]+", value):
            retry = int(value)
    return events, comments, last_id


# --------------------------------------------------------------------------- property tests

_interesting = st.sampled_from(
    ["\U0001f600", "\u00e9", "\u4e2d", "\ufeff", ":", " ", "\x00", "\u2028", "\x85", "\x0b"]
)
_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8", exclude_characters="\r\n"), _interesting),
    max_size=12,
)
_sp = st.sampled_from(["", " ", "  "])
_retry_value = st.one_of(
    st.integers(0, 10**6).map(str), st.sampled_from(["", "-1", "1.5", "12a", "\uff13"])
)
_line = st.one_of(
    st.builds(lambda sp, t: f"data:{sp}{t}", _sp, _text),
    st.builds(lambda sp, t: f"event:{sp}{t}", _sp, _text),
    st.builds(lambda sp, t: f"id:{sp}{t}", _sp, _text),
    st.builds(lambda sp, t: f"retry:{sp}{t}", _sp, _retry_value),
    st.builds(lambda t: f":{t}", _text),
    st.sampled_from(["", "", "", "data", "id", "event", "retry", "foo: bar", "\ufeffdata: x"]),
    _text,
).map(lambda s: s.encode())
_invalid_utf8 = st.sampled_from([b"data: \xff", b"data: \xe2\x82", b"\xf0\x9f", b"data: \xc3"])
_ending = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.one_of(_line, _invalid_utf8), max_size=25))
    with_bom: bool = draw(st.booleans())
    parts: list[bytes] = [BOM] if with_bom else []
    for line in lines:
        parts += [line, draw(_ending)]
    drop_last_ending: bool = draw(st.booleans())
    if parts and drop_last_ending:
        parts.pop()  # no final line ending: exercise flush()
    return b"".join(parts)


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


_settings = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(stream=sse_streams(), data=st.data())
def test_any_chunking_gives_the_same_result(stream: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")
    whole = run([stream])
    assert run(stream[i : i + 1] for i in range(len(stream))) == whole
    assert run(split_at(stream, cuts)) == whole
    assert whole == reference_decode(stream)


@_settings
@given(stream=sse_streams())
def test_crlf_split_between_feeds(stream: bytes) -> None:
    # Cut right after every CR: the worst case for CRLF handling.
    cuts = [m.end() for m in re.finditer(rb"\r", stream)]
    assert run(split_at(stream, cuts)) == run([stream])


_field_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=10
)
_any_text = st.text(
    # Line breaks drawn often, so CRLF, CR CR, LF CR... pairs are common too.
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(["\r", "\n"])),
    max_size=40,
)


def normalized(data: str) -> str:
    """What the receiver sees: the encoder turns CRLF and lone CR into LF line breaks."""
    return re.sub("\r\n|\r", "\n", data)


@_settings
@given(
    data=_any_text,
    id=st.none() | _field_text,
    event=st.none() | _field_text,
    retry=st.none() | st.integers(0, 2**40),
    as_bytes=st.booleans(),
)
def test_round_trip(
    data: str, id: str | None, event: str | None, retry: int | None, as_bytes: bool
) -> None:
    wire = encode_event(data.encode() if as_bytes else data, id=id, event=event, retry=retry)
    assert wire == encode_event(data, id=id, event=event, retry=retry)
    d = SSEDecoder()
    # The event is complete on the wire: feed() alone returns it, flush() has nothing left.
    assert d.feed(wire) == [E(normalized(data), event or "message", id, retry)]
    assert d.flush() == []
    assert d.last_event_id == id


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(
        st.tuples(_any_text, st.none() | _field_text, st.none() | _field_text), max_size=8
    ),
    comments=st.lists(_field_text, max_size=4),
)
def test_round_trip_stream(
    events: list[tuple[str, str | None, str | None]], comments: list[str]
) -> None:
    wire = b"".join(encode_comment(c) for c in comments)
    wire += b"".join(encode_event(data, id=id, event=ev) for data, id, ev in events)
    expected: list[ServerSentEvent] = []
    last_id: str | None = None
    for data, id, ev in events:
        last_id = id if id is not None else last_id
        expected.append(E(normalized(data), ev or "message", last_id))
    d = SSEDecoder()
    got = [e for i in range(len(wire)) for e in d.feed(wire[i : i + 1])]
    assert got + d.flush() == expected
    assert d.comments == len(comments)


def test_the_decoder_bounds_a_line_and_an_event() -> None:
    decoder = SSEDecoder(max_bytes=1000)
    decoder.feed(b"data: " + b"a" * 900)
    with pytest.raises(EventTooLarge, match="a line longer than 1000 bytes"):
        decoder.feed(b"a" * 200)  # still no end of line
    decoder = SSEDecoder(max_bytes=1000)
    with pytest.raises(EventTooLarge, match="an event's data"):
        for _ in range(30):  # data lines, and never the blank line that ends their event
            decoder.feed(b"data: " + b"b" * 50 + b"\n")
    decoder = SSEDecoder(max_bytes=1000)
    events = decoder.feed(b"data: " + b"c" * 990 + b"\n\n")  # within the bound: as ever
    assert [len(e.data) for e in events] == [990]
