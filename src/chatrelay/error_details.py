"""What a client is told of a failure: with its internal details, or only what failed and
what to do (CHATRELAY_DETAILED_ERRORS).

Usage::

    detailed = shows_details(settings)              # the setting, else: on for loopback only
    error = for_client(failure, detailed=detailed)  # where an answer's error is set

An upstream's failure, as chatrelay words it for the operator, names the upstream's URL and
port, the OS error, the upstream's own error text (which may echo what it was sent, a key
once), and the settings to check: right on a developer's machine, wrong for anyone on the
internet. With details off, the client gets a sentence by the kind of failure, and the
request id (``X-Request-Id``) under which the full text is in the server's log.

The one place: an answer's error is what every API shape shows (the HTTP error before
the stream, the error frame mid-stream, the /llm and /v1 re-encodings, the stored message), so
``Answer`` passes each error here once, as it is set.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from chatrelay.config import Settings
from chatrelay.errors import ChatRelayError
from chatrelay.observability import REQUEST_ID

log = logging.getLogger(__name__)

_AGAIN = "Try again in a moment."
_SEND_AGAIN = "The answer so far is kept; send the message again for a whole answer."
_TELL = "If it keeps failing, tell the operator of this server."


@runtime_checkable
class _UpstreamFailure(Protocol):
    """What is read of an upstream's failure (``UpstreamFailure``, upstreams/client.py): a
    protocol, so that this leaf does not import the layer above it."""

    kind: str
    upstream_status: int | None


# By UpstreamFailure.kind: what failed, and what to do.
_UPSTREAM_SUMMARIES = {
    "upstream_unreachable": f"The model's server could not be reached. {_AGAIN} {_TELL}",
    "upstream_timeout": f"The model's server did not answer in time. {_AGAIN}",
    "first_token_timeout": (
        "The model sent nothing in time (it may still be loading). Try again in a minute."
    ),
    "stall": f"The model's server stopped sending mid-answer. {_SEND_AGAIN}",
    "disconnect": f"The model's server dropped the connection mid-answer. {_SEND_AGAIN}",
    "cut": f"The model's server ended the answer before it was finished. {_SEND_AGAIN}",
    "stream_error": f"The model's server reported an error mid-answer. {_SEND_AGAIN}",
    "bad_event": f"The model's server sent data that could not be read. {_AGAIN} {_TELL}",
    "upstream_bad_response": (
        f"The model's server sent a response that could not be read. {_AGAIN} {_TELL}"
    ),
}
_UPSTREAM_STATUS_SUMMARIES = {
    400: "refused the request as invalid. Check what was sent: its length, model and parameters.",
    401: f"refused this server's credentials. {_TELL}",
    403: f"refused this server's credentials. {_TELL}",
    404: f"does not know the model or the address it was asked at. {_TELL}",
    413: "refused the request as too large. Send a shorter conversation.",
    422: "refused the request as invalid. Check what was sent: its length, model and parameters.",
    429: f"is busy. {_AGAIN}",
}


def shows_details(settings: Settings) -> bool:
    """CHATRELAY_DETAILED_ERRORS, else on only when bound to loopback (a developer's machine:
    nobody else can connect)."""
    if settings.detailed_errors is not None:
        return settings.detailed_errors
    return settings.on_loopback


def for_client(error: ChatRelayError, *, detailed: bool) -> ChatRelayError:
    """``error`` as the client is told it: itself when ``detailed``, else, when its message
    has internals in it, a copy that says only what failed and what to do (the original is
    logged with the request id)."""
    if detailed:
        return error
    summary = _summary(error)
    if summary is None:
        return error
    request_id = REQUEST_ID.get()
    log.warning(
        "request %s: %s (the client is told: %s)",
        request_id,
        error.message,
        summary,
        extra={"request_id": request_id, "code": error.code},
    )
    if request_id is not None:
        summary += f" (Request id {request_id}: the server's log has the details.)"
    told = type(error).__new__(type(error))
    told.__dict__.update(error.__dict__)
    told.args, told.message = (summary,), summary
    return told


def _summary(error: ChatRelayError) -> str | None:
    if isinstance(error, _UpstreamFailure):
        status = error.upstream_status
        if status is not None:
            what = _UPSTREAM_STATUS_SUMMARIES.get(status, f"failed. {_AGAIN}")
            return f"The model's server answered {status}: it {what}"
        return _UPSTREAM_SUMMARIES.get(error.kind, f"The model's server failed. {_AGAIN}")
    if error.code == "internal_error":  # an exception's own text, which may be anything
        return "Internal error in this server. " + _TELL
    return None
