"""CPU per chunk of a streamed ``/v1/responses`` answer against the same answer through
``/v1/chat/completions``: one chatrelay, the two APIs in turn from the mock, round after round.

Issue 23 asks that the Responses path cost no more than 1.3 x per chunk. Both ask the mock for
the same answer (64 chunks every 20 ms unless told otherwise); what an operator pays is the
server process's CPU per 1,000 chunks, admission, storing and billing included:

    .venv/bin/python bench/responses_cost.py [--rounds 10] [--concurrency 8]
        [--chatrelay src=/tmp/prev/src]   # another tree, as bench/ab.py takes it

The order of the two alternates each round (this VM's speed drifts from minute to minute);
reported are each one's median, the ratio, and in how many rounds Responses cost no more
than 1.3 x chat.
"""

from __future__ import annotations

import argparse
import statistics

from compare import run_driver, warm_up
from systems import start_chatrelay, start_mock

APIS = ("chat", "responses")
TARGET = 1.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="answers per client a round")
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--pace-ms", type=float, default=20.0, help="0: unpaced")
    parser.add_argument("--chatrelay", default="", help="src=PATH, studies (as ab.py)")
    args = parser.parse_args()
    mock = start_mock()
    relay = None
    figures: dict[str, list[float]] = {api: [] for api in APIS}
    try:
        relay = start_chatrelay(mock, prelude=args.chatrelay.replace("+", ","))
        warm_up(relay, mock)
        for number in range(args.rounds):
            for api in APIS if number % 2 == 0 else APIS[::-1]:
                result = run_driver(
                    relay,
                    mock,
                    concurrency=args.concurrency,
                    requests_per_client=args.requests,
                    chunks=args.chunks,
                    pace_ms=args.pace_ms,
                    chunk_bytes=20,
                    api=api,
                )
                figure = result.get("cpu_ms_per_1k_chunks")
                if figure is None:
                    raise SystemExit(f"{api}: no figure this round ({result.get('errors')})")
                figures[api].append(float(figure))
            print(f"round {number + 1}: " + "  ".join(f"{a} {figures[a][-1]:.1f}" for a in APIS))
    finally:
        if relay is not None:
            relay.stop()
        mock.stop()
    chat, responses = figures["chat"], figures["responses"]
    ratio = statistics.median(responses) / statistics.median(chat)
    within = sum(r <= TARGET * c for r, c in zip(responses, chat, strict=True))
    print(f"C={args.concurrency}, {args.chunks} chunks per answer, ms of CPU per 1,000 chunks")
    for api in APIS:
        print(f"{api:9} median {statistics.median(figures[api]):.1f}  all {figures[api]}")
    print(
        f"responses / chat = {ratio:.2f} (target at most {TARGET}); "
        f"within {TARGET} x in {within} of {args.rounds} rounds"
    )


if __name__ == "__main__":
    main()
