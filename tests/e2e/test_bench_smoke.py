"""The benchmark harness still works: a smoke run of bench/compare.py (seconds, tiny C and
answers, no LiteLLM) produces real figures for every system, and the driver refuses any target
that is not 127.0.0.1. Asserts on figures being there, never on timings: the machine is shared.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def test_smoke_run_produces_figures_for_every_system(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, str(BENCH / "compare.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [path] = out.glob("*-smoke.json")
    result = json.loads(path.read_text())

    systems = set(result["systems"])
    expected = {"direct", "python-floor", "chatrelay"}
    expected |= {"nginx"} if Path("/usr/sbin/nginx").exists() else set()
    assert expected <= systems, result.get("skipped")
    for name in systems:
        assert result["systems"][name]["version"], name

    params = result["parameters"]
    runs = {(r["kind"], r["system"], r["concurrency"]): r for r in result["runs"]}
    # Past the levels asked for (1 and 4) the run goes one further (the smoke run's limit)
    # if chatrelay streamed every answer at 4 without a stall, and only then.
    at_4 = runs[("paced", "chatrelay", 4)]
    held = at_4["completed"] == at_4["no_stall"] == at_4["requests"]
    assert params["concurrency"] == ([1, 4, 8] if held else [1, 4])
    for name in systems:
        for concurrency in params["concurrency"]:
            r = runs[("paced", name, concurrency)]
            assert r["completed"] == r["requests"] > 0, r["errors"]
            assert r["chunks"] == r["requests"] * params["chunks"]
            assert r["no_stall"] <= r["requests"]
            for metric in ("ttft_ms", "latency_ms", "gap_ms"):
                assert r[metric]["p50"] is not None and r[metric]["p99"] is not None, metric
            assert r["ttft_ms"]["p50"] > 0
            # Paced: the chunks really arrive apart (not every one: on a loaded machine a
            # reader that fell behind takes several at once).
            assert r["gap_ms"]["max"] > 0
            assert r["chunks_per_s"] > 0
            if name != "direct":  # the system under test's own process tree was measured
                assert r["cpu_s"] >= 0 and r["cpu_ms_per_1k_chunks"] is not None
                assert r["rss_kb_peak"] > 0 and r["rss_kb_per_stream"] >= 0
        [non_stream] = [r for k, r in runs.items() if k[0] == "non-stream" and k[1] == name]
        assert non_stream["completed"] == non_stream["requests"] > 0, non_stream["errors"]
        assert non_stream["latency_ms"]["p50"] > 0 and non_stream["requests_per_s"] > 0
        [unpaced] = [r for k, r in runs.items() if k[0] == "unpaced" and k[1] == name]
        assert unpaced["chunks"] == unpaced["requests"] * params["unpaced_chunks"]

    # The report: a Markdown table with a row per system, and a real PNG chart.
    markdown = path.with_suffix(".md").read_text()
    for name in systems:
        assert f"| {name} |" in markdown
    assert "| target (chatrelay) |" in markdown
    with Image.open(path.with_suffix(".png")) as chart:
        assert chart.format == "PNG" and chart.size[0] > 300


def test_burst_smoke_run_reports_admission_for_every_system(tmp_path: Path) -> None:
    """``compare.py --arrival burst``: every system gets bursts of C answers asked at one
    instant, and each run says when the answers' first tokens came; a side run, so it
    writes no latest.json."""
    out = tmp_path / "results"
    run = subprocess.run(
        [
            sys.executable,
            str(BENCH / "compare.py"),
            "--smoke",
            "--arrival",
            "burst",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [path] = out.glob("*-smoke-burst.json")
    assert not (out / "latest.json").exists()
    result = json.loads(path.read_text())
    assert result["parameters"]["arrival"] == "burst"

    systems = set(result["systems"])
    expected = {"direct", "python-floor", "chatrelay"}
    expected |= {"nginx"} if Path("/usr/sbin/nginx").exists() else set()
    assert expected <= systems, result.get("skipped")
    # Bursts only: no non-streaming or unpaced runs unless asked for.
    assert {r["kind"] for r in result["runs"]} == {"burst"}
    runs = {(r["system"], r["concurrency"]): r for r in result["runs"]}
    for name in systems:
        for concurrency in result["parameters"]["concurrency"]:
            r = runs[(name, concurrency)]
            assert r["bursts"] == 2 and r["requests"] == 2 * concurrency
            assert r["completed"] == r["admitted"] == r["requests"], r["errors"]
            assert r["chunks"] == r["requests"] * result["parameters"]["chunks"]
            assert 0 < r["ttft_ms"]["p50"] <= r["ttft_ms"]["p99"]
            last = r["last_first_token_ms"]
            assert 0 < last["p50"] <= last["max"]
            assert r["admissions_per_s"]["p50"] > 0
            assert 0 <= r["stalled"] <= r["requests"]
            if name != "direct":
                assert r["cpu_ms_per_1k_chunks"] is not None

    markdown = path.with_suffix(".md").read_text()
    for name in systems:
        assert f"| {name} |" in markdown
    assert "last first token" in markdown
    with Image.open(path.with_suffix(".png")) as chart:
        assert chart.format == "PNG" and chart.size[0] > 300


def test_burst_table_and_rate_search_cover_every_target(tmp_path: Path) -> None:
    """bench/burst.py: the issue's table (TTFT per target and C, CPU per 1,000 chunks,
    whole-answer CPU, stalls) and a Poisson rate search against nginx, chatrelay's /v1 with a
    key and its /api/chat without a cookie."""
    targets = ["v1", "chat"]
    if Path("/usr/sbin/nginx").exists():
        targets.insert(0, "nginx")
    out = tmp_path / "results"
    run = subprocess.run(
        [
            sys.executable,
            str(BENCH / "burst.py"),
            "--smoke",
            "--find-rate",
            "--targets",
            ",".join(targets),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [path] = out.glob("*-smoke-burst-table.json")
    result = json.loads(path.read_text())

    levels = result["parameters"]["levels"]
    cells = {(c["target"], c["concurrency"]): c for c in result["cells"]}
    assert set(cells) == {(t, c) for t in targets for c in levels}
    for cell in cells.values():
        for key, chunks in (("paced", result["parameters"]["chunks"]), ("one_chunk", 1)):
            r = cell[key]
            assert r["arrival"] == "burst"
            assert r["completed"] == r["requests"] > 0, r["errors"]
            assert r["chunks"] == r["requests"] * chunks
        assert cell["whole_answer_cpu_ms"] is not None
    for line in (f"| {c} |" for c in levels):
        assert line in run.stdout
    assert "| C at once |" in run.stdout and "chatrelay `/api/chat`, no cookie" in run.stdout

    # Each target's search: Poisson probes, and the figure is the highest sustained one
    # (or 0 when none was), a floor only when the ceiling itself was sustained.
    assert [found["target"] for found in result["rates"]] == targets
    for found in result["rates"]:
        assert found["probes"]
        for probe in found["probes"]:
            assert probe["arrival"] == "poisson" and probe["requests"] > 0
        sustained = [p["rate"] for p in found["probes"] if p["sustained"]]
        assert found["rate"] == max(sustained, default=0)
        assert found["at_least"] == (found["rate"] == max(p["rate"] for p in found["probes"]))
    assert "highest rate with TTFT p99 under" in run.stdout


def test_rate_search_doubles_then_bisects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import burst

    tried: list[float] = []

    def up_to_100(rate: float) -> bool:
        tried.append(rate)
        return rate <= 100

    rate, at_least = burst.find_rate(up_to_100, start=8, ceiling=1024)
    assert 90 <= rate <= 100 and not at_least
    assert tried[:6] == [8, 16, 32, 64, 128, 96]
    assert burst.find_rate(lambda rate: True, start=8, ceiling=100) == (100, True)
    assert burst.find_rate(lambda rate: rate <= 2, start=8, ceiling=100)[0] == 2
    assert burst.find_rate(lambda rate: False, start=8, ceiling=100) == (0, False)


def test_driver_refuses_targets_other_than_loopback() -> None:
    for url in (
        "http://10.0.0.1:8000/v1/chat/completions",
        "http://localhost:8000/",
        "https://127.0.0.1:8000/",
        "http://[::1]:8000/",
    ):
        run = subprocess.run(
            [sys.executable, str(BENCH / "load_driver.py"), "--url", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode != 0
        assert "refused" in run.stderr, run.stderr


def test_every_study_runs_before_chatrelay_on_todays_code(tmp_path: Path) -> None:
    """Each file of bench/studies/, by its name as the harness takes it, runs in a process that
    then imports chatrelay's app, as in the server (a study that imports a name the code no
    longer has fails here)."""
    studies = sorted(p.stem.replace("_", "-") for p in (BENCH / "studies").glob("*.py"))
    assert studies
    for name in studies:
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(BENCH)!r}); import systems\n"
                f"exec(systems.prelude_code({name!r}))\n"
                "from chatrelay.app import create_app\n",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},
        )
        assert run.returncode == 0, (name, run.stderr[-3000:])


def test_a_retired_or_unknown_study_is_refused_not_run_as_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import systems

    for names in ("inline-writes", "gc-pauses,no-such-study"):
        with pytest.raises(SystemExit, match="no study"):
            systems.prelude_code(names)
    assert systems.prelude_code("import gc; gc.freeze()") == "import gc; gc.freeze()"


def test_chatrelay_runs_another_trees_code_with_a_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``chatrelay:src=PATH+gc-pauses`` (compare.py, ab.py): the server runs the code of the
    other tree, with the study run in its own process first."""
    other = tmp_path / "other" / "src"
    shutil.copytree(
        ROOT / "src" / "chatrelay",
        other / "chatrelay",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    init = other / "chatrelay" / "__init__.py"
    marker = tmp_path / "imported-from-the-other-tree"
    init.write_text(init.read_text() + f"\nopen({str(marker)!r}, 'a').close()\n")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(BENCH))
    import systems

    mock = systems.start_mock(chunks=4, pace_ms=1)
    try:
        relay = systems.start_chatrelay(mock, prelude=f"src={other},gc-pauses", name="other")
        try:
            assert relay.process is not None and marker.exists()
            assert (tmp_path / f"chatrelay-gc-{relay.process.pid}.log").exists()
            request = urllib.request.Request(
                relay.url,
                data=json.dumps(
                    {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
                ).encode(),
                headers={
                    "Authorization": f"Bearer {relay.api_key}",
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.load(response)
            assert answer["choices"][0]["message"]["content"]
        finally:
            relay.stop()
    finally:
        mock.stop()


def test_every_bench_script_imports_against_todays_code() -> None:
    """The scripts the docs cite import chatrelay's modules (some its internals): one that
    names something the code no longer has fails here, not when someone next runs it."""
    scripts = sorted(p.stem for p in BENCH.glob("*.py"))
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import importlib, sys; sys.path.insert(0, {str(BENCH)!r})\n"
            f"for name in {scripts!r}: importlib.import_module(name)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
