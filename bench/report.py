"""Turns a results JSON of bench/compare.py into Markdown tables and a PNG chart.

    .venv/bin/python bench/report.py [bench/results/latest.json]

Writes the chart next to the JSON (``<name>.png``; ``latest.png`` for latest.json) and puts the
tables between the ``<!-- results -->`` markers of docs/benchmarks.md (only for the run that is
latest.json; any other run's Markdown goes to ``<name>.md`` next to its JSON instead).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
ORDER = ["direct", "nginx", "python-floor", "chatrelay", "litellm"]
# One colour per system in every panel, whichever systems a panel has figures for.
COLOURS = {
    "direct": "tab:blue",
    "nginx": "tab:orange",
    "python-floor": "tab:gray",
    "chatrelay": "tab:green",
    "litellm": "tab:red",
}


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _runs(result: dict[str, Any], kind: str) -> dict[tuple[int, str], dict[str, Any]]:
    return {(r["concurrency"], r["system"]): r for r in result["runs"] if r.get("kind") == kind}


def _systems(result: dict[str, Any]) -> list[str]:
    present = {r["system"] for r in result["runs"]}
    # chatrelay with studies or another tree ("chatrelay:src=PATH") right after chatrelay.
    variants = sorted(s for s in present if s.startswith("chatrelay:"))
    listed = [s for s in ORDER if s in present]
    if variants:
        at = listed.index("chatrelay") + 1 if "chatrelay" in listed else len(listed)
        listed[at:at] = variants
    return listed + sorted(present - set(listed))


def _colour(name: str) -> str | None:
    return COLOURS.get(name) or ("tab:purple" if name.startswith("chatrelay:") else None)


def added(run: dict[str, Any], floor: dict[str, Any] | None, metric: str, q: str) -> float | None:
    if floor is None:
        return None
    value: float | None = _sub(run[metric][q], floor[metric][q])
    return value


def paced_table(result: dict[str, Any]) -> str:
    runs = _runs(result, "paced")
    lines = [
        "| C | system | streams without stall | added TTFT p50 / p99 ms | added chunk latency "
        "p50 / p99 ms | added gap p50 / p99 ms | chunks/s | CPU ms / 1k chunks "
        "| KB / open stream |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    levels = sorted({c for c, _ in runs})
    for c in levels:
        floor = runs.get((c, "direct"))
        for name in _systems(result):
            run = runs.get((c, name))
            if run is None:
                if name in result.get("collapsed_at", {}):
                    lines.append(
                        f"| {c} | {name} | not run: collapsed at C="
                        f"{result['collapsed_at'][name]} | | | | | | |"
                    )
                continue
            stall = f"{run['no_stall']}/{run['requests']}"
            if name == "direct":
                ttft = f"*{_num(run['ttft_ms']['p50'], 2)} / {_num(run['ttft_ms']['p99'], 2)}*"
                lat = f"*{_num(run['latency_ms']['p50'], 2)} / {_num(run['latency_ms']['p99'], 2)}*"
                gap = f"*{_num(run['gap_ms']['p50'], 1)} / {_num(run['gap_ms']['p99'], 1)}*"
            else:
                ttft = (
                    f"{_num(added(run, floor, 'ttft_ms', 'p50'), 2)} / "
                    f"{_num(added(run, floor, 'ttft_ms', 'p99'), 2)}"
                )
                lat = (
                    f"{_num(added(run, floor, 'latency_ms', 'p50'), 2)} / "
                    f"{_num(added(run, floor, 'latency_ms', 'p99'), 2)}"
                )
                gap = (
                    f"{_num(added(run, floor, 'gap_ms', 'p50'), 2)} / "
                    f"{_num(added(run, floor, 'gap_ms', 'p99'), 2)}"
                )
            lines.append(
                f"| {c} | {name} | {stall} | {ttft} | {lat} | {gap} | "
                f"{_num(run.get('chunks_per_s'), 0)} | {_num(run.get('cpu_ms_per_1k_chunks'))} | "
                f"{_num(run.get('rss_kb_per_stream'))} |"
            )
    return "\n".join(lines)


def non_stream_table(result: dict[str, Any]) -> str:
    runs = _runs(result, "non-stream")
    if not runs:
        return ""
    lines = [
        "| C | system | completed | added latency p50 / p99 ms | requests/s | CPU ms / request |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for c in sorted({c for c, _ in runs}):
        floor = runs.get((c, "direct"))
        for name in _systems(result):
            run = runs.get((c, name))
            if run is None:
                continue
            if name == "direct":
                lat = f"*{_num(run['latency_ms']['p50'], 2)} / {_num(run['latency_ms']['p99'], 2)}*"
            else:
                lat = (
                    f"{_num(added(run, floor, 'latency_ms', 'p50'), 2)} / "
                    f"{_num(added(run, floor, 'latency_ms', 'p99'), 2)}"
                )
            lines.append(
                f"| {c} | {name} | {run['completed']}/{run['requests']} | {lat} | "
                f"{_num(run.get('requests_per_s'), 0)} | {_num(run.get('cpu_ms_per_request'), 2)} |"
            )
    return "\n".join(lines)


def unpaced_table(result: dict[str, Any]) -> str:
    runs = _runs(result, "unpaced")
    if not runs:
        return ""
    lines = [
        "| C | system | chunks | chunks/s | CPU ms / 1k chunks | chunk latency p50 / p99 ms |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for c in sorted({c for c, _ in runs}):
        for name in _systems(result):
            run = runs.get((c, name))
            if run is None:
                continue
            lines.append(
                f"| {c} | {name} | {run['chunks']:,} | {_num(run.get('chunks_per_s'), 0)} | "
                f"{_num(run.get('cpu_ms_per_1k_chunks'))} | {_num(run['latency_ms']['p50'], 2)}"
                f" / {_num(run['latency_ms']['p99'], 2)} |"
            )
    return "\n".join(lines)


def is_burst(result: dict[str, Any]) -> bool:
    return bool(result["parameters"].get("arrival") == "burst")


def burst_table(result: dict[str, Any]) -> str:
    """Bursts (``compare.py --arrival burst``): absolute figures, each from the burst's instant."""
    runs = _runs(result, "burst")
    lines = [
        "| C | system | bursts | TTFT p50 / p99 ms | last first token ms (median / worst "
        "burst) | admissions/s | stalled / failed | CPU ms / 1k chunks |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in sorted({c for c, _ in runs}):
        for name in _systems(result):
            run = runs.get((c, name))
            if run is None:
                if name in result.get("collapsed_at", {}):
                    lines.append(
                        f"| {c} | {name} | not run: collapsed at C="
                        f"{result['collapsed_at'][name]} | | | | | |"
                    )
                continue
            last = run["last_first_token_ms"]
            lines.append(
                f"| {c} | {name} | {run['bursts']} | {_num(run['ttft_ms']['p50'], 1)} / "
                f"{_num(run['ttft_ms']['p99'], 1)} | {_num(last['p50'], 1)} / "
                f"{_num(last['max'], 1)} | {_num(run['admissions_per_s']['p50'], 0)} | "
                f"{run['stalled']} / {run['failed']} of {run['requests']} | "
                f"{_num(run.get('cpu_ms_per_1k_chunks'))} |"
            )
    return "\n".join(lines)


def burst_markdown(result: dict[str, Any], chart: str | None) -> str:
    m, p = result["machine"], result["parameters"]
    parts = [
        f"Burst run of {result['started']} UTC on {m['cores']} cores ({m['cpu']}), Linux "
        f"{m['kernel']}, load average at start {m['load_average_at_start'][0]:.2f}; at each "
        f"C every client asks an answer of {p['chunks']} chunks paced {p['pace_ms']:g} ms at "
        "the same instant (the connections opened beforehand), several bursts one after "
        "another. TTFT counts from the burst's instant; the last first token is when the "
        "burst's last stream got its first token; admissions/s: the streams that got one, "
        "per second until then; stalled: streams with a gap over "
        f"{p['stall_ms']} ms once their first token had come.",
    ]
    if chart:
        parts.append(f"![bursts side by side]({chart})")
    parts += ["**Bursts**:", burst_table(result)]
    parts += ["**Systems**:", systems_section(result)]
    return "\n\n".join(parts) + "\n"


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Issue 9's targets for chatrelay: (target, what this run measured, met?)."""
    runs = _runs(result, "paced")
    levels = sorted({c for c, _ in runs})
    out: list[tuple[str, str, bool | None]] = []

    def clean(c: int, name: str) -> bool | None:
        run = runs.get((c, name))
        return None if run is None else run["no_stall"] == run["requests"]

    nginx_clean = [c for c in levels if clean(c, "nginx")]
    relay_clean = [c for c in nginx_clean if clean(c, "chatrelay")]
    if nginx_clean:
        out.append(
            (
                "no stall at every C where nginx has none",
                f"nginx clean at C={nginx_clean}; chatrelay clean at C={relay_clean}",
                relay_clean == nginx_clean,
            )
        )
    cpu = {
        c: runs[(c, "chatrelay")].get("cpu_ms_per_1k_chunks")
        for c in levels
        if (c, "chatrelay") in runs
    }
    if cpu:
        worst = max(v for v in cpu.values() if v is not None)
        shown = ", ".join(f"C={c}: {_num(v, 0)}" for c, v in cpu.items())
        out.append(("≤ 100 ms CPU per 1,000 chunks", shown, worst <= 100))
    if (64, "chatrelay") in runs and (64, "direct") in runs:
        value = added(runs[(64, "chatrelay")], runs[(64, "direct")], "latency_ms", "p50")
        out.append(
            (
                "added per-chunk latency p50 ≤ 1 ms at C=64",
                f"{_num(value, 2)} ms",
                value is not None and value <= 1,
            )
        )
    if (8, "chatrelay") in runs and (8, "nginx") in runs:
        value = _sub(runs[(8, "chatrelay")]["ttft_ms"]["p50"], runs[(8, "nginx")]["ttft_ms"]["p50"])
        out.append(
            (
                "added TTFT p50 ≤ 5 ms over nginx at C=8",
                f"{_num(value, 2)} ms",
                value is not None and value <= 5,
            )
        )
    memory = [
        (c, runs[(c, "chatrelay")].get("rss_kb_per_stream"))
        for c in levels
        if c >= 128 and (c, "chatrelay") in runs
    ]
    if memory:
        shown = ", ".join(f"C={c}: {_num(v, 0)} KB" for c, v in memory)
        worst_kb = max(v or 0 for _, v in memory)
        out.append(("≤ 50 KB resident memory per open stream", shown, worst_kb <= 50))
    return out


def systems_section(result: dict[str, Any]) -> str:
    lines = []
    for name in _systems(result):
        info = result["systems"].get(name)
        if info is None:
            continue
        settings = "; ".join(f"{k}: {v}" for k, v in info["settings"].items())
        lines.append(f"- **{name}**: {info['version']}. {settings}")
    for name, why in result.get("skipped", {}).items():
        lines.append(f"- **{name}**: not run ({why})")
    return "\n".join(lines)


def markdown(result: dict[str, Any], chart: str | None) -> str:
    if is_burst(result):
        return burst_markdown(result, chart)
    m, p = result["machine"], result["parameters"]
    parts = [
        f"Run of {result['started']} UTC on {m['cores']} cores ({m['cpu']}), Linux "
        f"{m['kernel']}, load average at start {m['load_average_at_start'][0]:.2f}; answers of "
        f"{p['chunks']} chunks paced {p['pace_ms']:g} ms, {p['chunk_bytes']} content bytes a "
        f"chunk; a stall is a gap over {p['stall_ms']} ms. *Italics*: the mock directly "
        "(absolute figures, the floor); other rows: what the system adds to it at the same C.",
    ]
    if chart:
        parts.append(f"![side by side]({chart})")
    parts += [
        "**Streaming, paced** (each client streams answers back to back):",
        paced_table(result),
    ]
    table = non_stream_table(result)
    if table:
        parts += ["**Non-streaming** (`stream: false`, back to back per client):", table]
    table = unpaced_table(result)
    if table:
        parts += [
            f"**Unpaced** ({p['unpaced_chunks']} chunks an answer as fast as the chain "
            "goes: the highest chunk rate):",
            table,
        ]
    goal_lines = ["| target (chatrelay) | this run | met |", "|---|---|---|"]
    for goal, shown, met in targets(result):
        goal_lines.append(f"| {goal} | {shown} | {'yes' if met else 'no'} |")
    parts += ["**Targets** (issue 9):", "\n".join(goal_lines)]
    parts += ["**Systems**:", systems_section(result)]
    return "\n\n".join(parts) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    runs = _runs(result, "burst" if is_burst(result) else "paced")
    levels = sorted({c for c, _ in runs})
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    Figure = Callable[[dict[str, Any]], float | None]
    panels: list[tuple[Any, str, Figure, str]] = [
        (
            axes[0][0],
            "chunk latency p50, ms (send to receive)",
            lambda r: r["latency_ms"]["p50"],
            "log",
        ),
        (
            axes[0][1],
            "streams without a stall (gap > 100 ms), %",
            lambda r: 100 * r["no_stall"] / r["requests"] if r["requests"] else None,
            "linear",
        ),
        (
            axes[1][0],
            "CPU ms per 1,000 chunks (system under test)",
            lambda r: r.get("cpu_ms_per_1k_chunks"),
            "log",
        ),
        (
            axes[1][1],
            "resident memory per open stream, KB",
            lambda r: r.get("rss_kb_per_stream"),
            "linear",
        ),
    ]
    if is_burst(result):
        panels = [
            (axes[0][0], "TTFT p50, ms (from the burst)", lambda r: r["ttft_ms"]["p50"], "log"),
            (axes[0][1], "TTFT p99, ms (from the burst)", lambda r: r["ttft_ms"]["p99"], "log"),
            (
                axes[1][0],
                "admissions per second (median burst)",
                lambda r: r["admissions_per_s"]["p50"],
                "log",
            ),
            (
                axes[1][1],
                "CPU ms per 1,000 chunks (system under test)",
                lambda r: r.get("cpu_ms_per_1k_chunks"),
                "log",
            ),
        ]
    for ax, title, value, scale in panels:
        for name in _systems(result):
            xs, ys = [], []
            for c in levels:
                run = runs.get((c, name))
                y = value(run) if run is not None else None
                if y is not None and not (scale == "log" and y <= 0):
                    xs.append(c)
                    ys.append(y)
            if xs:
                ax.plot(xs, ys, marker="o", label=name, color=_colour(name))
        ax.set_xscale("log", base=2)
        ax.set_yscale(scale)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent streams (C)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=_colour(n), marker="o", label=n) for n in _systems(result)]
    axes[0][0].legend(handles=handles)
    m = result["machine"]
    what = "bursts" if is_burst(result) else "side by side"
    fig.suptitle(f"chatrelay {what}, {m['cores']} cores, {result['started']} UTC")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(json_path: Path, *, smoke: bool = False) -> Path:
    """The chart and the Markdown of one results file; returns where the Markdown went."""
    result = json.loads(json_path.read_text())
    latest = json_path.parent / "latest.json"
    is_latest = latest.exists() and latest.read_text() == json_path.read_text()
    png = json_path.with_name("latest.png" if is_latest and not smoke else json_path.stem + ".png")
    chart(result, png)
    in_results = json_path.parent.resolve() == (BENCH / "results").resolve()
    if smoke or not is_latest or not DOC.exists() or not in_results:
        out = json_path.with_suffix(".md")
        out.write_text(markdown(result, png.name))
        return out
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = markdown(result, f"../bench/results/{png.name}")
    source = f"From `bench/results/{json_path.name}`, made by `bench/report.py`.\n\n"
    DOC.write_text(f"{head}{BEGIN}\n{source}{body}{END}{tail}")
    return DOC


if __name__ == "__main__":
    given = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH / "results" / "latest.json"
    print(write_report(given))
