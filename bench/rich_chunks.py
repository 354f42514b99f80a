"""CPU per chunk of tool-call and logprobs chunks against text chunks of the same size,
end to end: one chatrelay relaying each kind in turn from the mock, round after round.

Issue 20 asks that a tool-call or logprobs chunk cost no more than a text chunk of the same
size. bench/chunk_cost.py measures the relay's own code per event in process; this measures
what an operator pays, the server process's CPU per 1,000 chunks (socket reads, the SSE
decoder, the parse, the frame, the writes), with every kind's upstream chunk exactly as long
on the wire (the mock's ``kind=`` directive pads them alike):

    .venv/bin/python bench/rich_chunks.py [--rounds 10] [--concurrency 8] [--bytes 96]
        [--chatrelay src=/tmp/prev/src]   # another tree, as bench/ab.py takes it

Each round runs the kinds in a rotated order (this VM's speed drifts from minute to minute),
and what is reported is each kind's median and in how many rounds it cost no more than text.
"""

from __future__ import annotations

import argparse
import statistics

from compare import run_driver, warm_up
from systems import start_chatrelay, start_mock

KINDS = ("text", "tool", "logprobs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="answers per client a round")
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--pace-ms", type=float, default=20.0, help="0: unpaced")
    parser.add_argument("--bytes", type=int, default=96, help="text bytes of a text chunk")
    parser.add_argument("--chatrelay", default="", help="src=PATH, studies (as ab.py)")
    args = parser.parse_args()
    mock = start_mock()
    relay = None
    figures: dict[str, list[float]] = {kind: [] for kind in KINDS}
    try:
        relay = start_chatrelay(mock, prelude=args.chatrelay.replace("+", ","))
        warm_up(relay, mock)
        for number in range(args.rounds):
            order = KINDS[number % 3 :] + KINDS[: number % 3]
            for kind in order:
                result = run_driver(
                    relay,
                    mock,
                    concurrency=args.concurrency,
                    requests_per_client=args.requests,
                    chunks=args.chunks,
                    pace_ms=args.pace_ms,
                    chunk_bytes=args.bytes,
                    kind=kind,
                )
                figure = result.get("cpu_ms_per_1k_chunks")
                if figure is None:
                    raise SystemExit(f"{kind}: no figure this round ({result.get('errors')})")
                figures[kind].append(float(figure))
            print(f"round {number + 1}: " + "  ".join(f"{k} {figures[k][-1]:.1f}" for k in KINDS))
    finally:
        if relay is not None:
            relay.stop()
        mock.stop()
    print(f"C={args.concurrency}, ms of CPU per 1,000 chunks, every chunk as long on the wire")
    text = figures["text"]
    for kind in KINDS:
        median = statistics.median(figures[kind])
        line = f"{kind:9} median {median:.1f}  all {[round(f, 1) for f in figures[kind]]}"
        if kind != "text":
            no_more = sum(f <= t for f, t in zip(figures[kind], text, strict=True))
            ratio = median / statistics.median(text)
            line += f"  ({ratio:.2f} x text; no more than text in {no_more} of {args.rounds})"
        print(line)


if __name__ == "__main__":
    main()
