"""Bursts (issue 25): C answers asked at the same instant, side by side, and the highest rate
of new answers a system sustains.

    .venv/bin/python bench/burst.py [--levels 8,32,128,256] [--chatrelay src=PATH]
        [--targets nginx,v1,chat] [--chunks 64] [--pace-ms 20] [--bursts N]
        [--find-rate] [--probe-s 5] [--ttft-p99-ms 1000] [--no-stall] [--smoke]

One mock (bench/mock_upstream.py), nginx, and chatrelay started as bench/compare.py starts it
(one worker; every answer stored, limits and metrics on), all on 127.0.0.1. The targets:

- ``nginx``: nginx as a plain SSE reverse proxy (the physical-limit anchor);
- ``v1``: chatrelay's ``/v1/chat/completions`` with an API key;
- ``chat``: chatrelay's ``/api/chat`` without a cookie, so every answer makes a new guest
  (the guest creation limit is set far above the load, as the other limits are);
- also ``direct`` (the mock itself) and ``python-floor`` when asked for.

``--chatrelay SPEC`` (repeatable) is what bench/compare.py takes after ``chatrelay:``:
``src=PATH`` runs another tree's code (``git worktree add /tmp/base <commit>``), names of
bench/studies/ run before it; each chatrelay gives its own ``v1`` and ``chat`` columns. Without
it, this tree's.

**The table**: at each C, each target in turn (the order rotates from one C to the next) gets
``--bursts`` bursts of C answers of ``--chunks`` chunks paced ``--pace-ms`` ms (every client's
connection opened first, then every request written at one instant), then as many bursts of
one-chunk answers. From the first: TTFT p50/p99 from the burst's instant, the time until the
burst's last stream had its first token, admissions per second (streams that got a first
token, per second until the last did), streams that stalled once admitted (a gap over
100 ms), CPU per 1,000 chunks. From both, the **whole-answer CPU**: the CPU an answer costs
apart from its chunks (admission, storing, billing), the per-answer part of a straight line
through the two runs' CPU per answer against chunks per answer.

**The rate** (``--find-rate``): for each target, Poisson arrivals (exponential gaps, a fixed
seed) for ``--probe-s`` seconds a probe, at rates doubling from ``--start-rate`` while every
answer completes with TTFT p99 (from when it was due) under ``--ttft-p99-ms`` (and, with
``--no-stall``, no stream stalls), then bisected to 10 %: the highest rate that passed. On
a 2-core machine the mock and the driver share the cores, so for nginx it is the machine's
figure, not nginx's.

Prints Markdown; the figures go to ``bench/results/<UTC time>-burst-table.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compare import RESULTS, machine, run_driver, warm_up
from systems import (
    System,
    nginx_available,
    start_chatrelay,
    start_mock,
    start_nginx,
    start_python_floor,
)

TARGETS = ("direct", "nginx", "python-floor", "v1", "chat")
# Without a cookie every answer creates a guest; the default limit (20 an hour per address)
# would refuse the 21st. Far above the load, as compare.py sets the other limits.
GUEST_LIMIT = {"CHATRELAY_GUEST_CREATE_LIMIT": "100000000/minute"}


@dataclasses.dataclass
class Target:
    key: str  # "nginx", "v1", "chat"; with the chatrelay's spec when not this tree's
    label: str  # the table's heading
    system: System  # a view of the started system: this target's URL and credentials


def view(system: System, name: str, url: str, api_key: str | None) -> System:
    """The same process measured under another name, URL and key (its own CPU readings;
    stopping it is left to the system it views)."""
    return dataclasses.replace(
        system, name=name, url=url, api_key=api_key, threads_cpu={}, workdir=None, pids=[]
    )


def start_targets(
    mock: System, wanted: list[str], chatrelays: list[str], started: list[System]
) -> list[Target]:
    """The targets asked for, in the table's order; what was started goes to ``started``."""
    targets: list[Target] = []
    for key in wanted:
        if key == "direct":
            targets.append(Target("direct", "the mock directly", mock))
        elif key == "nginx":
            if not nginx_available():
                raise SystemExit("nginx is not installed (apt-get install nginx)")
            started.append(start_nginx(mock))
            targets.append(Target("nginx", "nginx", started[-1]))
        elif key == "python-floor":
            started.append(start_python_floor(mock))
            targets.append(Target("python-floor", "the Python floor", started[-1]))
    for spec in chatrelays:
        if not {"v1", "chat"} & set(wanted):
            break
        name = f"chatrelay:{spec}" if spec else "chatrelay"
        relay = start_chatrelay(mock, prelude=spec.replace("+", ","), name=name, **GUEST_LIMIT)
        started.append(relay)
        shown = f"chatrelay[{spec}]" if spec else "chatrelay"
        base = relay.url.rsplit("/v1/", 1)[0]
        if "v1" in wanted:
            key = f"v1@{spec}" if spec else "v1"
            targets.append(
                Target(key, f"{shown} `/v1` with a key", view(relay, key, relay.url, relay.api_key))
            )
        if "chat" in wanted:
            key = f"chat@{spec}" if spec else "chat"
            url = f"{base}/api/chat"
            targets.append(
                Target(key, f"{shown} `/api/chat`, no cookie", view(relay, key, url, None))
            )
    return targets


def settle(system: System, *, limit_s: float = 5.0) -> None:
    """Until the system is idle (under 5 % of a core for a quarter second; at most
    ``limit_s``): what the last run left running is not charged to the next."""
    if system.process is None:
        return
    system.refresh_pids()
    before, deadline = system.cpu(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = system.cpu()
        if now - before < 0.05 * 0.25:
            return
        before = now


def whole_answer_ms(paced: dict[str, Any], short: dict[str, Any]) -> float | None:
    """CPU ms an answer costs apart from its chunks: the two runs' CPU per answer against
    their chunks per answer, a straight line through both, read at zero chunks (the cost of a
    chunk is not let go below zero, where the two runs' noise can put it)."""
    if "cpu_s" not in paced or not paced["requests"] or not short["requests"]:
        return None
    per_answer = [1e3 * r["cpu_s"] / r["requests"] for r in (paced, short)]
    chunks = [r["chunks"] / r["requests"] for r in (paced, short)]
    per_chunk = 0.0
    if chunks[0] > chunks[1]:
        per_chunk = max(0.0, (per_answer[0] - per_answer[1]) / (chunks[0] - chunks[1]))
    return round(per_answer[1] - per_chunk * chunks[1], 3)


def bursts_at(concurrency: int, given: int | None) -> int:
    """Enough bursts for some 256 answers a cell (2 to 8): a p99 of 8 answers is their max."""
    return given or min(8, max(2, math.ceil(256 / concurrency)))


def measure_cell(
    target: Target, mock: System, concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    common: dict[str, Any] = {
        "concurrency": concurrency,
        "requests_per_client": bursts_at(concurrency, args.bursts),
        "pace_ms": args.pace_ms,
        "chunk_bytes": 20,
        "arrival": "burst",
    }
    settle(target.system)
    paced = run_driver(target.system, mock, chunks=args.chunks, **common)
    settle(target.system)
    short = run_driver(target.system, mock, chunks=1, **common)
    cell = {
        "target": target.key,
        "concurrency": concurrency,
        "paced": paced,
        "one_chunk": short,
        "whole_answer_cpu_ms": whole_answer_ms(paced, short),
    }
    print(cell_line(target, cell), flush=True)
    return cell


def cell_line(target: Target, cell: dict[str, Any]) -> str:
    f = cell["paced"]
    return (
        f"{target.key:<8} C={cell['concurrency']:<4} x{f['bursts']}: ttft p50 "
        f"{f['ttft_ms']['p50']} p99 {f['ttft_ms']['p99']} ms, last first token "
        f"{f['last_first_token_ms']['p50']} ms, {f['admissions_per_s']['p50']} admissions/s, "
        f"{f['stalled']} stalled, {f['failed']} failed of {f['requests']}, cpu "
        f"{f.get('cpu_ms_per_1k_chunks')} ms/1k chunks, whole answer "
        f"{cell['whole_answer_cpu_ms']} ms" + (f", errors {f['errors']}" if f["errors"] else "")
    )


def find_rate(
    passes: Callable[[float], bool], *, start: float, ceiling: float, resolution: float = 0.1
) -> tuple[float, bool]:
    """The highest rate that ``passes`` (doubling from ``start``, halving below it when it
    fails, then bisecting to ``resolution``) and whether it is only a floor (``ceiling`` held)."""
    passed, failed = 0.0, None
    rate = start
    while failed is None:
        if passes(rate):
            passed = rate
            if rate >= ceiling:
                return passed, True
            rate = min(rate * 2, ceiling)
        else:
            failed = rate
    while passed == 0 and failed > 1:
        rate = failed / 2
        if passes(rate):
            passed = rate
        else:
            failed = rate
    while failed - passed > max(1.0, passed * resolution):
        rate = round((passed + failed) / 2, 1)
        if passes(rate):
            passed = rate
        else:
            failed = rate
    return passed, False


def search_rate(target: Target, mock: System, args: argparse.Namespace) -> dict[str, Any]:
    """Poisson probes against ``target`` until its highest sustained rate is known."""
    probes: list[dict[str, Any]] = []

    def passes(rate: float) -> bool:
        settle(target.system, limit_s=15)  # an overloaded probe leaves a backlog behind
        f = run_driver(
            target.system,
            mock,
            concurrency=1,
            requests_per_client=1,
            chunks=args.chunks,
            pace_ms=args.pace_ms,
            chunk_bytes=20,
            arrival="poisson",
            rate=rate,
            duration_s=args.probe_s,
        )
        p99 = f["ttft_ms"]["p99"]
        every_one = bool(f["requests"]) and f["completed"] == f["requests"]
        f["sustained"] = every_one and p99 is not None and p99 < args.ttft_p99_ms
        if args.no_stall:
            f["sustained"] = f["sustained"] and f["stalled"] == 0
        probes.append(f)
        print(
            f"{target.key:<8} {rate:g}/s: {f['requests']} answers, ttft p50 "
            f"{f['ttft_ms']['p50']} p99 {p99} ms, {f['stalled']} stalled, {f['failed']} failed, "
            f"up to {f['concurrency']} open, cpu {f.get('cpu_ms_per_1k_chunks')} ms/1k chunks: "
            + ("sustained" if f["sustained"] else "not sustained"),
            flush=True,
        )
        return bool(f["sustained"])

    rate, floor_only = find_rate(passes, start=args.start_rate, ceiling=args.max_rate)
    return {"target": target.key, "rate": rate, "at_least": floor_only, "probes": probes}


def _pair(values: dict[str, Any], digits: int = 0) -> str:
    p50, p99 = values["p50"], values["p99"]
    if p50 is None or p99 is None:
        return "-"
    return f"{p50:,.{digits}f} / {p99:,.{digits}f} ms"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def tables(result: dict[str, Any], targets: list[Target]) -> str:
    """The issue's table (TTFT per target and C), the details of each cell, the rates."""
    cells = {(c["concurrency"], c["target"]): c for c in result["cells"]}
    levels = sorted({c for c, _ in cells})
    parts = []
    if cells:
        head = "| C at once | " + " | ".join(f"{t.label} TTFT p50 / p99" for t in targets)
        lines = [head + " |", "|---:|" + "---|" * len(targets)]
        for c in levels:
            row = [_pair(cells[(c, t.key)]["paced"]["ttft_ms"]) for t in targets]
            lines.append(f"| {c} | " + " | ".join(row) + " |")
        parts.append("\n".join(lines))
        lines = [
            "| C | target | TTFT p50 / p99 | last first token (median / worst burst) | "
            "admissions/s | stalled / failed | CPU ms / 1k chunks | whole-answer CPU ms |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in levels:
            for t in targets:
                cell = cells[(c, t.key)]
                f = cell["paced"]
                last = f["last_first_token_ms"]
                lines.append(
                    f"| {c} | {t.label} | {_pair(f['ttft_ms'])} | {_num(last['p50'])} / "
                    f"{_num(last['max'])} ms | {_num(f['admissions_per_s']['p50'])} | "
                    f"{f['stalled']} / {f['failed']} of {f['requests']} | "
                    f"{_num(f.get('cpu_ms_per_1k_chunks'))} | "
                    f"{_num(cell['whole_answer_cpu_ms'], 2)} |"
                )
        parts.append("\n".join(lines))
    if result["rates"]:
        limit = result["parameters"]["ttft_p99_ms"]
        lines = [
            f"| target | highest rate with TTFT p99 under {limit:g} ms | there: TTFT p50 / p99, "
            "stalled | probes (rate: p99 ms; ✗ not sustained) |",
            "|---|---:|---:|---|",
        ]
        labels = {t.key: t.label for t in targets}
        for found in result["rates"]:
            probes = ", ".join(
                f"{p['rate']:g}: {_num(p['ttft_ms']['p99'])}{'' if p['sustained'] else ' ✗'}"
                for p in found["probes"]
            )
            rate = f"{'≥ ' if found['at_least'] else ''}{found['rate']:g} answers/s"
            there = [p for p in found["probes"] if p["sustained"] and p["rate"] == found["rate"]]
            shown = (
                f"{_pair(there[-1]['ttft_ms'])}, {there[-1]['stalled']} of {there[-1]['requests']}"
                if there
                else "-"
            )
            lines.append(f"| {labels[found['target']]} | {rate} | {shown} | {probes} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="8,32,128,256", help="C values; empty: no table")
    parser.add_argument(
        "--targets", default="nginx,v1,chat", help=f"comma list of {', '.join(TARGETS)}"
    )
    parser.add_argument(
        "--chatrelay",
        action="append",
        default=None,
        metavar="SPEC",
        help="src=PATH (another tree) and/or bench/studies/ names joined with +; repeatable "
        "(each its own columns); default this tree",
    )
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--bursts", type=int, default=None, help="per cell (default 2-8)")
    parser.add_argument("--find-rate", action="store_true", help="also the Poisson search")
    parser.add_argument("--probe-s", type=float, default=5.0, help="each rate probe's length")
    parser.add_argument("--ttft-p99-ms", type=float, default=1000.0)
    parser.add_argument(
        "--no-stall", action="store_true", help="a probe with a stalled stream fails too"
    )
    parser.add_argument("--start-rate", type=float, default=8.0, help="answers a second")
    parser.add_argument("--max-rate", type=float, default=1024.0, help="the search stops here")
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny C, 4 chunks")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.levels, args.chunks, args.pace_ms, args.bursts = "2,4", 4, 5.0, 2
        args.probe_s, args.start_rate, args.max_rate = 1.0, 4.0, 8.0
    args.level_list = [int(c) for c in args.levels.split(",") if c]
    args.target_list = [t for t in args.targets.split(",") if t]
    unknown = set(args.target_list) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}: choose from {', '.join(TARGETS)}")
    args.chatrelay = args.chatrelay or [""]
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    started_at = datetime.now(UTC)
    result: dict[str, Any] = {
        "started": started_at.isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "levels": args.level_list,
            "chunks": args.chunks,
            "pace_ms": args.pace_ms,
            "bursts": args.bursts,
            "chatrelay": args.chatrelay,
            "probe_s": args.probe_s,
            "ttft_p99_ms": args.ttft_p99_ms,
            "no_stall": args.no_stall,
            "smoke": args.smoke,
        },
        "systems": {},
        "cells": [],
        "rates": [],
    }
    mock = start_mock(pace_ms=args.pace_ms, chunks=args.chunks)
    started: list[System] = []
    try:
        targets = start_targets(mock, args.target_list, args.chatrelay, started)
        for t in targets:
            result["systems"][t.key] = t.system.describe()
            print(f"{t.key}: {t.system.version} at {t.system.url}", flush=True)
            warm_up(t.system, mock)
        for index, concurrency in enumerate(args.level_list):
            shift = index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                result["cells"].append(measure_cell(target, mock, concurrency, args))
        if args.find_rate:
            for target in targets:
                result["rates"].append(search_rate(target, mock, args))
    finally:
        for system in started:
            system.stop()
        mock.stop()
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if args.smoke else "")
    path = args.out / f"{stamp}-burst-table.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    m = result["machine"]
    print(
        f"\nRun of {result['started']} UTC on {m['cores']} cores ({m['cpu']}), load average at "
        f"start {m['load_average_at_start'][0]:.2f}; answers of {args.chunks} chunks paced "
        f"{args.pace_ms:g} ms; figures in {path}\n"
    )
    print(tables(result, targets), flush=True)
    return path


if __name__ == "__main__":
    main()
