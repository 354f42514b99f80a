"""An A/B of two chatrelays' CPU: interleaved rounds, the order swapped each round.

On these shared 2-core VMs the same code's CPU per 1,000 chunks moves by ±15 % from one
hour (even one minute) to the next, so a single run of each cannot show a change of a few
per cent. Here both servers run side by side against one mock and take turns, round after
round, and what is reported is each one's median and how many rounds each was the cheaper.

    .venv/bin/python bench/ab.py --b src=/tmp/prev/src [--a ''] [--rounds 10]
        [--concurrency 8] [--requests 4] [--non-streaming] [--env NAME=VALUE ...]

``--a``/``--b`` are what bench/compare.py takes after ``chatrelay:``: ``src=PATH`` (another
source tree, e.g. a ``git worktree`` of an earlier commit), names of bench/studies/, or both
joined with ``+``; empty is this tree as it is. Streaming rounds report CPU ms per 1,000
chunks (64 chunks every 20 ms unless ``--chunks``/``--pace-ms`` say otherwise; pace 0 is
as fast as the chain goes); ``--non-streaming`` rounds report CPU ms per whole answer.
"""

from __future__ import annotations

import argparse
import statistics

from compare import run_driver, warm_up
from systems import System, start_chatrelay, start_mock


def one_round(system: System, mock: System, args: argparse.Namespace) -> float:
    figures = run_driver(
        system,
        mock,
        concurrency=args.concurrency,
        requests_per_client=args.requests,
        chunks=args.chunks,
        pace_ms=args.pace_ms,
        chunk_bytes=20,
        non_streaming=args.non_streaming,
    )
    key = "cpu_ms_per_request" if args.non_streaming else "cpu_ms_per_1k_chunks"
    if figures.get(key) is None:  # nothing came through: say what the driver saw
        raise SystemExit(f"{system.name}: no figure this round ({figures.get('errors')})")
    return float(figures[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", default="", help="this tree unless given (src=PATH, studies)")
    parser.add_argument("--b", required=True, help="e.g. src=/tmp/prev/src")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="answers per client a round")
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--pace-ms", type=float, default=20.0, help="0: unpaced")
    parser.add_argument("--non-streaming", action="store_true")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for both servers; {mock} is the mock's base URL "
        "(e.g. an upstream with prices: CHATRELAY_UPSTREAMS=[...])",
    )
    args = parser.parse_args()
    given_env = dict(item.split("=", 1) for item in args.env)
    if args.non_streaming and args.requests == 4:
        args.requests = 50
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    mock = start_mock()
    # "{mock}" in a value is the mock's base URL (for an [[upstreams]] entry in the env).
    env = {k: v.replace("{mock}", mock.url.rsplit("/v1/", 1)[0]) for k, v in given_env.items()}
    systems: dict[str, System] = {}
    figures: dict[str, list[float]] = {"a": [], "b": []}
    try:
        for name, given in (("a", args.a), ("b", args.b)):
            systems[name] = start_chatrelay(mock, prelude=given.replace("+", ","), name=name, **env)
        for system in systems.values():
            warm_up(system, mock)
        for number in range(args.rounds):
            order = ("a", "b") if number % 2 == 0 else ("b", "a")
            for name in order:
                figures[name].append(one_round(systems[name], mock, args))
            print(f"round {number + 1}: a {figures['a'][-1]:.1f}  b {figures['b'][-1]:.1f}")
    finally:
        for system in systems.values():
            system.stop()
        mock.stop()
    a_lower = sum(a < b for a, b in zip(figures["a"], figures["b"], strict=True))
    unit = "ms of CPU per answer" if args.non_streaming else "ms of CPU per 1,000 chunks"
    print(f"a = {args.a or 'this tree'}, b = {args.b}; C={args.concurrency}, {unit}")
    for name in ("a", "b"):
        print(f"{name}: median {statistics.median(figures[name]):.1f}, all {figures[name]}")
    print(f"a lower in {a_lower} of {args.rounds} rounds")


if __name__ == "__main__":
    main()
