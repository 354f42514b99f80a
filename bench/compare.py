"""Side by side, in one interleaved run: the mock directly, nginx, the floor of a Python relay
(bench/python_floor.py), chatrelay and LiteLLM.

What ``make bench`` runs. Every process is on 127.0.0.1 (the driver refuses anything else):

    bench/mock_upstream.py  <-  system under test  <-  bench/load_driver.py (C clients)

For each concurrency C (1, 8, 32, 64, 128, 512 by default, then 1,024 and 2,048 for as long
as chatrelay streams every answer without a stall) each system in turn (the order rotates
from one C to the next, so no system always runs on a machine warmed up by another) gets C
clients, each streaming answers of 64 chunks paced 20 ms apart, back to back; then
non-streaming requests at C=1 and C=32; then unpaced answers (as fast as the chain goes) for
the highest chunk rate. Per run it records, besides the driver's figures, the CPU seconds
and the peak resident memory of the system's process tree (from /proc). A Python relay
whose streams mostly stall at some C (fewer than a quarter without a stall) is not run at
higher C; the mock, nginx and the Python floor always run.

    .venv/bin/python bench/compare.py [--concurrency 1,8,32,64,128,512] [--no-litellm] [--smoke]
        [--arrival burst]

Writes bench/results/<UTC time>.json (and latest.json), then bench/report.py turns it into the
table and chart of docs/benchmarks.md.

``--arrival burst`` measures admission instead of the steady state: at each C, every client
asks its answer at the same instant (2-4 bursts a level, one after another), and each run
reports time to first token from the burst's instant, the time until the last stream's first
token, admissions per second and the streams that stalled once admitted. Such a run is a side
run (``<time>-burst.json`` and its own ``.md``; latest.json and docs/benchmarks.md untouched).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from systems import (
    BENCH,
    System,
    ensure_litellm,
    nginx_available,
    start_chatrelay,
    start_litellm,
    start_mock,
    start_nginx,
    start_python_floor,
)

RESULTS = BENCH / "results"


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": load,
    }


def run_driver(
    system: System,
    mock: System,
    *,
    concurrency: int,
    requests_per_client: int,
    chunks: int,
    pace_ms: float,
    chunk_bytes: int,
    non_streaming: bool = False,
    ramp_s: float | None = None,
    kind: str = "text",
    api: str = "chat",
    arrival: str = "spread",
    rate: float | None = None,
    duration_s: float = 5.0,
) -> dict[str, Any]:
    """One load run against ``system``, with its CPU and memory sampled meanwhile. Streams
    start spread over ``ramp_s`` (by default one answer's duration); ``arrival`` ``burst``:
    ``requests_per_client`` bursts of ``concurrency`` answers each asked at one instant;
    ``poisson``: ``rate`` answers a second for ``duration_s`` (see bench/load_driver.py)."""
    duration = chunks * pace_ms / 1000
    ramp = ramp_s if ramp_s is not None else 0.0 if non_streaming else duration
    deadline = ramp + requests_per_client * max(duration, 0.5) * 3 + 20
    if arrival == "poisson":
        deadline = duration_s + max(duration, 0.5) * 3 + 30
    command = [
        sys.executable,
        str(BENCH / "load_driver.py"),
        "--url",
        system.url,
        "--concurrency",
        str(concurrency),
        "--requests-per-client",
        str(requests_per_client),
        "--chunks",
        str(chunks),
        "--pace-ms",
        str(pace_ms),
        "--chunk-bytes",
        str(chunk_bytes),
        "--ramp-s",
        str(ramp),
        "--deadline-s",
        str(deadline),
        "--kind",
        kind,
        "--api",
        api,
    ]
    if system.api_key:
        command += ["--api-key", system.api_key]
    if non_streaming:
        command.append("--non-streaming")
    if arrival != "spread":  # (a spread run's command line stays what it was)
        command += ["--arrival", arrival]
    if arrival == "poisson":
        command += ["--rate", str(rate), "--duration-s", str(duration_s)]
    system.refresh_pids()
    load_before = os.getloadavg()[0]  # other work on the machine shows here
    measured = system if system.name != "direct" else None
    rss_before = measured.rss() if measured else 0
    cpu_before = measured.cpu() if measured else 0.0
    mock_cpu_before = mock.cpu()
    driver = subprocess.Popen(command, stdout=subprocess.PIPE)
    peak = rss_before
    while driver.poll() is None:
        if measured:
            peak = max(peak, measured.rss())
        time.sleep(0.05)
    out, _ = driver.communicate()
    if driver.returncode != 0:
        raise RuntimeError(f"load driver failed ({driver.returncode}) against {system.name}")
    figures: dict[str, Any] = json.loads(out)
    figures["load_average_before"] = round(load_before, 2)
    figures["system"] = system.name
    figures["mock_cpu_s"] = round(mock.cpu() - mock_cpu_before, 3)
    if measured:
        cpu = measured.cpu() - cpu_before
        figures["cpu_s"] = round(cpu, 3)
        units = figures["chunks"] if not non_streaming else figures["completed"]
        key = "cpu_ms_per_1k_chunks" if not non_streaming else "cpu_ms_per_request"
        scale = 1e6 if not non_streaming else 1e3
        figures[key] = round(cpu * scale / units, 1) if units else None
        # From the process's size before its first run, not before this one: memory that an
        # earlier, smaller run left behind (and this run reuses) is this run's too. So a
        # later run cannot look cheaper than it is; at small C it is an upper bound.
        idle = rss_before if measured.rss_idle is None else measured.rss_idle
        figures["rss_kb_idle"] = idle
        figures["rss_kb_before"] = rss_before
        figures["rss_kb_peak"] = peak
        figures["rss_kb_per_stream"] = round(max(0, peak - idle) / concurrency, 1)
    return figures


def warm_up(system: System, mock: System, *, chunk_bytes: int = 20) -> None:
    """A few short answers: imports, connection pools, the first database writes."""
    run_driver(
        system, mock, concurrency=4, requests_per_client=2, chunks=4, pace_ms=1,
        chunk_bytes=chunk_bytes,
    )  # fmt: skip


def holds(runs: list[dict[str, Any]], concurrency: int, kind: str = "paced") -> bool:
    """Whether chatrelay's paced run at ``concurrency`` completed every stream, none stalled."""
    wanted = ("chatrelay", concurrency, kind)
    for run in runs:
        if (run["system"], run["concurrency"], run.get("kind")) == wanted:
            return bool(run["completed"] == run["no_stall"] == run["requests"])
    return False


def summary_line(f: dict[str, Any]) -> str:
    if f.get("arrival") == "burst":
        return burst_line(f)
    if f["mode"] == "non-stream":
        return (
            f"{f['system']:<10} C={f['concurrency']:<4} non-stream: {f['completed']}/"
            f"{f['requests']} ok, p50 {f['latency_ms']['p50']} ms, p99 {f['latency_ms']['p99']}"
            f" ms, {f.get('requests_per_s')} req/s, cpu {f.get('cpu_ms_per_request')} ms/req"
        )
    return (
        f"{f['system']:<10} C={f['concurrency']:<4} pace={f['pace_ms']:g}: {f['no_stall']}/"
        f"{f['requests']} without stall, ttft p50 {f['ttft_ms']['p50']} ms, chunk latency "
        f"p50 {f['latency_ms']['p50']} p99 {f['latency_ms']['p99']} ms, gap p99 "
        f"{f['gap_ms']['p99']} ms, {f.get('chunks_per_s')} chunks/s, cpu "
        f"{f.get('cpu_ms_per_1k_chunks')} ms/1k chunks, {f.get('rss_kb_per_stream')} KB/stream"
        + (f", errors {f['errors']}" if f["errors"] else "")
    )


def burst_line(f: dict[str, Any]) -> str:
    """A burst run's figures: admission first."""
    return (
        f"{f['system']:<10} C={f['concurrency']:<4} burst x{f['bursts']}: ttft p50 "
        f"{f['ttft_ms']['p50']} p99 {f['ttft_ms']['p99']} ms, last first token "
        f"{f['last_first_token_ms']['p50']} ms (worst {f['last_first_token_ms']['max']}), "
        f"{f['admissions_per_s']['p50']} admissions/s, {f['stalled']} stalled, "
        f"{f['failed']} failed of {f['requests']}, cpu {f.get('cpu_ms_per_1k_chunks')} "
        "ms/1k chunks" + (f", errors {f['errors']}" if f["errors"] else "")
    )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", default="1,8,32,64,128,512")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=2048,
        help="past the last level, C doubles while chatrelay streams without a stall, up to this",
    )
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--chunk-bytes", type=int, default=20)
    parser.add_argument(
        "--systems",
        default="direct,nginx,python-floor,chatrelay,litellm",
        help="comma list; chatrelay:NAME+NAME adds chatrelay with bench/studies/ or src=PATH",
    )
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--arrival",
        choices=("spread", "burst"),
        default="spread",
        help="spread: C streams started over one answer's duration (steady state); burst: "
        "all C asked at one instant, 2-4 bursts a level (admission). A burst run is a side "
        "run (<time>-burst.json, its own .md), with no non-streaming or unpaced runs unless "
        "asked for",
    )
    parser.add_argument(
        "--non-streaming", default=None, help="C values; empty: none (default 1,32)"
    )
    parser.add_argument("--unpaced", default=None, help="C values; empty: none (default 32)")
    parser.add_argument("--unpaced-chunks", type=int, default=256)
    parser.add_argument(
        "--smoke", action="store_true", help="seconds, not minutes: tiny C and answers, no LiteLLM"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument(
        "--name",
        default="",
        help="a side run: saved as <time>-<name>.json with its own .md and .png, "
        "leaving latest.json and docs/benchmarks.md alone",
    )
    parser.add_argument(
        "--chatrelay-prelude",
        default="",
        help="studies: names of bench/studies/ files (gc-pauses; a comma list, src=PATH too) "
        "or Python code run in chatrelay's process before it starts",
    )
    args = parser.parse_args(argv)
    burst = args.arrival == "burst"
    if args.non_streaming is None:
        args.non_streaming = "" if burst else "1,32"
    if args.unpaced is None:
        args.unpaced = "" if burst else "32"
    if args.smoke:
        args.concurrency, args.chunks, args.pace_ms = "1,4", 8, 5.0
        if not burst:
            args.non_streaming, args.unpaced = "2", "2"
        args.unpaced_chunks = 16
        args.no_litellm = True
    levels = [int(c) for c in args.concurrency.split(",") if c]
    if args.smoke:
        args.max_concurrency = 2 * max(levels)  # one level further, if chatrelay holds
    wanted = [s for s in args.systems.split(",") if s and not (args.no_litellm and s == "litellm")]

    started_at = datetime.now(UTC)
    result: dict[str, Any] = {
        "started": started_at.isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "concurrency": levels,
            "chunks": args.chunks,
            "pace_ms": args.pace_ms,
            "chunk_bytes": args.chunk_bytes,
            "stall_ms": 100,
            "smoke": args.smoke,
            "non_streaming_concurrency": args.non_streaming,
            "unpaced_concurrency": args.unpaced,
            "unpaced_chunks": args.unpaced_chunks,
            **({"arrival": "burst"} if burst else {}),
        },
        "systems": {},
        "skipped": {},
        "runs": [],
    }
    mock = start_mock(pace_ms=args.pace_ms, chunks=args.chunks, chunk_bytes=args.chunk_bytes)
    systems: list[System] = []
    try:
        for name in wanted:
            try:
                if name == "direct":
                    systems.append(mock)
                elif name == "nginx":
                    if not nginx_available():
                        raise RuntimeError("nginx is not installed (apt-get install nginx)")
                    systems.append(start_nginx(mock))
                elif name == "python-floor":
                    systems.append(start_python_floor(mock))
                elif name == "chatrelay":
                    systems.append(start_chatrelay(mock, prelude=args.chatrelay_prelude))
                elif name.startswith("chatrelay:"):  # chatrelay:gc-pauses, chatrelay:src=PATH
                    experiments = name.split(":", 1)[1].replace("+", ",")
                    systems.append(start_chatrelay(mock, prelude=experiments, name=name))
                elif name == "litellm":
                    if not ensure_litellm():
                        raise RuntimeError("could not install litellm[proxy]")
                    systems.append(start_litellm(mock))
            except RuntimeError as why:
                print(f"skipping {name}: {why}", flush=True)
                result["skipped"][name] = str(why)
        result["systems"] = {s.name: s.describe() for s in systems}
        for s in systems:
            print(f"{s.name}: {s.version}; {json.dumps(s.settings)}", flush=True)
        common = {"chunk_bytes": args.chunk_bytes}
        for s in systems:
            warm_up(s, mock, chunk_bytes=args.chunk_bytes)
            s.refresh_pids()
            s.rss_idle = s.rss()  # warmed up, idle: memory per stream counts from here

        kind = "burst" if burst else "paced"
        collapsed: dict[str, int] = {}
        index = 0
        while index < len(levels):
            concurrency = levels[index]
            shift = index % len(systems)
            for s in systems[shift:] + systems[:shift]:
                if s.name in collapsed:
                    continue
                per_client = 2 if args.smoke else min(4, max(2, math.ceil(32 / concurrency)))
                figures = run_driver(
                    s,
                    mock,
                    concurrency=concurrency,
                    requests_per_client=per_client,
                    chunks=args.chunks,
                    pace_ms=args.pace_ms,
                    arrival=args.arrival,
                    **common,
                )
                figures["kind"] = kind
                result["runs"].append(figures)
                print(summary_line(figures), flush=True)
                # The mock, nginx and the floor cost little, so they always run; a relay whose
                # streams mostly stall would only slow the rest of the run down.
                mostly_stalled = figures["no_stall"] < figures["requests"] / 4
                if s.name not in ("direct", "nginx", "python-floor") and mostly_stalled:
                    collapsed[s.name] = concurrency
            # Past the last level asked for, on while chatrelay holds (no stream stalled); the
            # run's parameters hold this same list, so they name the levels that ran.
            further = index == len(levels) - 1 and concurrency * 2 <= args.max_concurrency
            if further and holds(result["runs"], concurrency, kind):
                levels.append(concurrency * 2)
            index += 1
        result["collapsed_at"] = collapsed

        for concurrency in [int(c) for c in args.non_streaming.split(",") if c]:
            for s in systems:
                per_client = 20 if args.smoke else max(5, 200 // concurrency)
                figures = run_driver(
                    s,
                    mock,
                    concurrency=concurrency,
                    requests_per_client=per_client,
                    chunks=args.chunks,
                    pace_ms=0,
                    non_streaming=True,
                    **common,
                )
                figures["kind"] = "non-stream"
                result["runs"].append(figures)
                print(summary_line(figures), flush=True)

        for concurrency in [int(c) for c in args.unpaced.split(",") if c]:
            for s in systems:
                figures = run_driver(
                    s,
                    mock,
                    concurrency=concurrency,
                    requests_per_client=1,
                    chunks=args.unpaced_chunks,
                    pace_ms=0,
                    **common,
                )
                figures["kind"] = "unpaced"
                result["runs"].append(figures)
                print(summary_line(figures), flush=True)
    finally:
        for s in systems:
            if s is not mock:
                s.stop()
        mock.stop()

    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if args.smoke else "")
    if burst:  # bursts measure admission: never the steady-state figures of latest.json
        stamp += "-burst"
    if args.name:
        stamp += f"-{args.name}"
    path = out / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    if not args.smoke and not args.name and not burst:
        (out / "latest.json").write_text(path.read_text())
    print(f"results: {path}", flush=True)
    if not args.no_report:
        from report import write_report

        write_report(path, smoke=args.smoke)
    return path


if __name__ == "__main__":
    main()
