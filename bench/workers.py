"""Several workers (issue 25): `chatrelay serve --workers N` side by side with one worker.

    .venv/bin/python bench/workers.py [--workers 1,2] [--levels 128,192,256,...,1024]
        [--burst-levels 64,256,512] [--bursts 3] [--chunks 64] [--pace-ms 20]
        [--find-rate] [--probe-s 5] [--ttft-p99-ms 1000] [--database postgresql] [--smoke]

One mock (bench/mock_upstream.py) and one chatrelay per worker count, all on 127.0.0.1, each
started as bench/compare.py starts chatrelay (every answer stored in SQLite, or with
``--database postgresql`` in a new database of the PostgreSQL on 127.0.0.1:5432, token budgets,
rate limit and stream slots on, metrics on, an API key per request) and each with
``CHATRELAY_REDIS_URL`` (several workers need it; the one-worker chatrelay has it too, so that
only the worker count differs). Needs Redis on 127.0.0.1:6379; its keys are removed after.
At each level the systems take turns (the order alternates from one level to the next):

- **stall-free C**: C streams spread over one answer's duration (the steady state of
  docs/benchmarks.md), two answers a client, at each of ``--levels``: the highest C at which
  every answer completed without a stall (a gap over 100 ms between two chunks) and with TTFT
  p99 under ``--ttft-p99-ms``. (Without the second condition a system that admits slowly
  passes levels it does not keep up with: answers waiting seconds for their first token are
  not streaming yet, so fewer streams are open at once than C says.) A system that fails a
  level is not asked the higher ones.
- **bursts**: ``--bursts`` bursts of C answers asked at one instant (bench/load_driver.py
  ``--arrival burst``) at each of ``--burst-levels``: admissions per second (streams that got
  their first token, per second until the last did), the time until the last first token,
  TTFT p50/p99 and the streams that stalled once admitted.
- with ``--find-rate``: the highest rate of new answers (Poisson arrivals) each sustains with
  TTFT p99 under ``--ttft-p99-ms``, searched as bench/burst.py does.

CPU per 1,000 chunks is every process of a system (the supervisor, its workers). On a machine
with few cores the mock, the driver and Redis take their share of them too.

Prints Markdown; the figures go to ``bench/results/<UTC time>-workers.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import socket
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from burst import Target, search_rate, settle
from compare import RESULTS, machine, run_driver, warm_up
from systems import System, rss_kb, start_chatrelay, start_mock

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = ("127.0.0.1", 6379)
REDIS_URL = "redis://127.0.0.1:6379/0"
# Limits far above the load, as compare.py sets the others (a burst is a few hundred answers).
LIMITS = {"CHATRELAY_GUEST_CREATE_LIMIT": "100000000/minute"}


def redis_running() -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(REDIS) == 0


def start(mock: System, workers: int, prefix: str, database: str | None) -> System:
    """chatrelay with ``workers`` workers (on PostgreSQL ``database`` if given), once every one
    of them serves."""
    extra = {"CHATRELAY_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"}
    system = start_chatrelay(
        mock,
        name=f"{workers} worker" + ("s" if workers > 1 else ""),
        CHATRELAY_WORKERS=str(workers),
        CHATRELAY_REDIS_URL=REDIS_URL,
        CHATRELAY_REDIS_PREFIX=prefix,
        **LIMITS,
        **(extra if database else {}),
    )
    assert system.workdir is not None
    if database:
        system.settings["persistence"] = f"PostgreSQL (a new database, {database})"
        asyncio.run(wait_for_postgres_instances(database, workers))
    else:
        wait_for_instances(Path(system.workdir) / "chatrelay.db", workers)
    system.settings.update(
        workers=workers,
        server=f"chatrelay serve --workers {workers}",
        quotas="user token budget, rate limit and stream slots in Redis (limits above the load)",
        metrics="on (/metrics"
        + (", all workers' through PROMETHEUS_MULTIPROC_DIR)" if workers > 1 else ")"),
    )
    system.refresh_pids()
    return system


def wait_for_instances(database: Path, count: int, timeout: float = 60.0) -> None:
    """Until ``count`` workers have joined (each writes its row in ``instances`` at start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reading = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
            with contextlib.closing(reading) as connection:
                (joined,) = connection.execute("SELECT count(*) FROM instances").fetchone()
            if joined == count:
                return
        except sqlite3.Error:
            pass  # not created yet
        time.sleep(0.1)
    raise RuntimeError(f"{count} workers did not all start within {timeout:g} s")


async def postgres(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def wait_for_postgres_instances(database: str, count: int, within: float = 60.0) -> None:
    import asyncpg

    connection = await asyncpg.connect(f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{database}")
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(asyncpg.UndefinedTableError):
                if await connection.fetchval("SELECT count(*) FROM instances") == count:
                    return
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    raise RuntimeError(f"{count} workers did not all start within {within:g} s")


def forget_redis(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def spread_run(
    system: System, mock: System, level: int, args: argparse.Namespace
) -> dict[str, Any]:
    settle(system)
    figures = run_driver(
        system, mock, concurrency=level, requests_per_client=2, chunks=args.chunks,
        pace_ms=args.pace_ms, chunk_bytes=20,
    )  # fmt: skip
    p99 = figures["ttft_ms"]["p99"]
    figures["stall_free"] = (
        figures["failed"] == 0
        and figures["no_stall"] == figures["requests"] > 0
        and p99 is not None
        and p99 < args.ttft_p99_ms
    )
    print(
        f"{system.name:<10} spread C={level:<5} {figures['no_stall']}/{figures['requests']} "
        f"without a stall, {figures['failed']} failed, ttft p50 {figures['ttft_ms']['p50']} "
        f"p99 {figures['ttft_ms']['p99']} ms, gap max {figures['gap_ms']['max']} ms, cpu "
        f"{figures.get('cpu_ms_per_1k_chunks')} ms/1k chunks"
        + (f", errors {figures['errors']}" if figures["errors"] else ""),
        flush=True,
    )
    return figures


def burst_run(system: System, mock: System, level: int, args: argparse.Namespace) -> dict[str, Any]:
    settle(system)
    figures = run_driver(
        system, mock, concurrency=level, requests_per_client=args.bursts, chunks=args.chunks,
        pace_ms=args.pace_ms, chunk_bytes=20, arrival="burst",
    )  # fmt: skip
    print(
        f"{system.name:<10} burst  C={level:<5} x{figures['bursts']}: "
        f"{figures['admissions_per_s']['p50']} admissions/s, last first token "
        f"{figures['last_first_token_ms']['p50']} ms, ttft p50 {figures['ttft_ms']['p50']} "
        f"p99 {figures['ttft_ms']['p99']} ms, {figures['stalled']} stalled, "
        f"{figures['failed']} failed of {figures['requests']}, cpu "
        f"{figures.get('cpu_ms_per_1k_chunks')} ms/1k chunks"
        + (f", errors {figures['errors']}" if figures["errors"] else ""),
        flush=True,
    )
    return figures


def in_turns(systems: list[System], index: int) -> list[System]:
    """The systems in the order of level ``index``: rotated by one each level."""
    shift = index % len(systems)
    return systems[shift:] + systems[:shift]


def measure(systems: list[System], mock: System, args: argparse.Namespace) -> dict[str, Any]:
    spread: dict[str, dict[int, dict[str, Any]]] = {s.name: {} for s in systems}
    failed_at: dict[str, int] = {}
    for index, level in enumerate(args.levels):
        for system in in_turns(systems, index):
            if system.name not in failed_at:
                spread[system.name][level] = figures = spread_run(system, mock, level, args)
                if not figures["stall_free"]:
                    failed_at[system.name] = level
    bursts: dict[str, dict[int, dict[str, Any]]] = {s.name: {} for s in systems}
    for index, level in enumerate(args.burst_levels):
        for system in in_turns(systems, index):
            bursts[system.name][level] = burst_run(system, mock, level, args)
    rates = {}
    if args.find_rate:
        for system in systems:
            target = Target(system.name, system.name, system)
            rates[system.name] = search_rate(target, mock, args)
    return {"spread": spread, "bursts": bursts, "rates": rates, "processes": processes(systems)}


def processes(systems: list[System]) -> dict[str, list[dict[str, Any]]]:
    """Each process of each system: its CPU seconds over the whole run (are the workers given
    equal shares?) and its resident memory now."""
    shares: dict[str, list[dict[str, Any]]] = {}
    for system in systems:
        system.refresh_pids()
        system.cpu()  # the latest readings
        by_pid: dict[int, float] = {}
        for (pid, _), seconds in system.threads_cpu.items():
            by_pid[pid] = by_pid.get(pid, 0.0) + seconds
        shares[system.name] = [
            {"pid": pid, "cpu_s": round(seconds, 2), "rss_kb": rss_kb([pid])}
            for pid, seconds in sorted(by_pid.items())
        ]
        print(f"{system.name}: {shares[system.name]}", flush=True)
    return shares


def stall_free(levels: dict[int, dict[str, Any]]) -> str:
    passed = [level for level, figures in levels.items() if figures["stall_free"]]
    if not passed:
        return "none of the levels"
    best = max(passed)
    return (
        f"{best}"
        if len(passed) == len(levels)
        else f"{best} (not {min(set(levels) - set(passed))})"
    )


def table(result: dict[str, Any], systems: list[System], args: argparse.Namespace) -> str:
    names = [s.name for s in systems]
    lines = [
        f"| | {' | '.join(names)} |",
        "|---|" + "---:|" * len(names),
        f"| stall-free C (spread; TTFT p99 < {args.ttft_p99_ms:g} ms) | "
        + " | ".join(stall_free(result["spread"][n]) for n in names)
        + " |",
    ]
    for level in args.levels:
        cells = []
        for name in names:
            f = result["spread"][name].get(level)
            cells.append(
                "-"
                if f is None
                else f"{f['no_stall']}/{f['requests']} no stall, TTFT p99 "
                f"{f['ttft_ms']['p99']:.0f} ms, {f.get('cpu_ms_per_1k_chunks')} ms CPU/1k chunks"
            )
        lines.append(f"| spread C={level} | {' | '.join(cells)} |")
    for level in args.burst_levels:
        cells = []
        for name in names:
            f = result["bursts"][name][level]
            cells.append(
                f"**{f['admissions_per_s']['p50']:.0f}/s**, last first token "
                f"{f['last_first_token_ms']['p50']:.0f} ms, TTFT p50/p99 "
                f"{f['ttft_ms']['p50']:.0f}/{f['ttft_ms']['p99']:.0f} ms, "
                f"{f['stalled']} stalled, {f['failed']} failed of {f['requests']}"
            )
        lines.append(f"| burst C={level} (x{args.bursts}) | {' | '.join(cells)} |")
    if result["rates"]:
        cells = [
            f"{result['rates'][n]['rate']:g}/s"
            + (" (at least)" if result["rates"][n]["at_least"] else "")
            for n in names
        ]
        lines.append(
            f"| sustained answers/s (TTFT p99 < {args.ttft_p99_ms:g} ms) | {' | '.join(cells)} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--levels", default="128,192,256,320,384,448,512,640,768,1024")
    parser.add_argument("--burst-levels", default="64,256,512")
    parser.add_argument("--bursts", type=int, default=3, help="bursts at each burst level")
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--find-rate", action="store_true")
    parser.add_argument("--probe-s", type=float, default=5.0)
    parser.add_argument("--ttft-p99-ms", type=float, default=1000.0)
    parser.add_argument("--start-rate", type=float, default=50.0)
    parser.add_argument("--max-rate", type=float, default=3200.0)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--smoke", action="store_true", help="a few seconds: tiny levels")
    args = parser.parse_args()
    args.no_stall = False  # (read by bench/burst.py's rate search)
    if args.smoke:
        args.levels, args.burst_levels, args.bursts, args.chunks = "8", "8", 1, 8
        args.probe_s, args.start_rate, args.max_rate = 1.0, 20.0, 20.0
    args.workers = [int(n) for n in args.workers.split(",")]
    args.levels = [int(n) for n in str(args.levels).split(",")]
    args.burst_levels = [int(n) for n in str(args.burst_levels).split(",")]
    return args


def main() -> None:
    args = parse_args()
    if not redis_running():
        raise SystemExit("Redis is not running on 127.0.0.1:6379 (several workers need it)")
    started_at = datetime.now(UTC)
    about = machine()
    mock = start_mock(pace_ms=args.pace_ms, chunks=args.chunks)
    systems: list[System] = []
    prefixes: list[str] = []
    databases: list[str] = []
    try:
        for workers in args.workers:
            prefixes.append(f"bench-workers-{secrets.token_hex(4)}:")
            database = None
            if args.database == "postgresql":
                databases.append(database := f"bench_workers_{secrets.token_hex(4)}")
                asyncio.run(postgres(f'CREATE DATABASE "{database}"'))
            systems.append(start(mock, workers, prefixes[-1], database))
        for system in systems:
            warm_up(system, mock)
        result = measure(systems, mock, args)
    finally:
        for system in systems:
            system.stop()
        mock.stop()
        for prefix in prefixes:
            forget_redis(prefix)
        for database in databases:
            asyncio.run(postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    result.update(
        machine=about,
        started=started_at.isoformat(),
        systems=[s.describe() for s in systems],
        arguments={k: v for k, v in vars(args).items()},
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    kind = "-postgresql" if args.database == "postgresql" else ""
    path = RESULTS / f"{stamp}-workers{kind}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print()
    print(
        f"Run of {started_at:%Y-%m-%d %H:%M} UTC on {about['cores']} cores, load average at "
        f"start {about['load_average_at_start'][0]:.2f}; {args.database}; answers of "
        f"{args.chunks} chunks paced "
        f"{args.pace_ms:g} ms; a stall is a gap over 100 ms.\n"
    )
    print(table(result, systems, args))
    print(f"\nfigures: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main()
