"""What metrics and request logs cost: per streamed chunk, and per request.

Per chunk the relay adds exactly one clock read and one histogram observation (the
inter-token gap; its label child is resolved once per answer). Per request it adds a request
id, one counter increment and one structured log line. Both are timed here, single-process
and with PROMETHEUS_MULTIPROC_DIR (several workers), against the same loop without them.

    .venv/bin/python bench/observability_overhead.py
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time

N = 200_000


def per_chunk() -> None:
    from chatrelay.observability import TOKEN_GAP

    gap = TOKEN_GAP.labels("bench-model", "bench-upstream").observe
    parts: list[str] = []
    started = time.perf_counter()
    for _ in range(N):
        parts.append("tok")  # the loop's own work, kept the same in both runs
    without = time.perf_counter() - started
    parts.clear()
    last = time.monotonic()
    started = time.perf_counter()
    for _ in range(N):
        now = time.monotonic()
        gap(now - last)
        last = now
        parts.append("tok")
    with_metrics = time.perf_counter() - started
    mode = "multi-process" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "single-process"
    print(
        f"per chunk ({mode}): {(with_metrics - without) / N * 1e6:.2f} us added "
        f"({without / N * 1e6:.2f} -> {with_metrics / N * 1e6:.2f} us for the loop body)"
    )


def per_request() -> None:
    from chatrelay.observability import REQUESTS, JsonFormatter

    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - for the whole run
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bench.requests")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    fields = {"request_id": "0123456789abcdef", "method": "POST", "path": "/api/chat",
              "route": "/api/chat", "status": 200, "duration_ms": 12.3, "user_id": "usr_x",
              "model": "m", "upstream": "u", "prompt_tokens": 42, "completion_tokens": 64,
              "ttft_ms": 120.5}  # fmt: skip
    count = N // 10
    started = time.perf_counter()
    for _ in range(count):
        REQUESTS.labels("/api/chat", "200").inc()
        logger.info("request", extra=fields)
    each = (time.perf_counter() - started) / count
    print(f"per request: {each * 1e6:.1f} us (counter + JSON log line)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        per_chunk()
    else:
        per_chunk()
        per_request()
        with tempfile.TemporaryDirectory() as directory:
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
            subprocess.run([sys.executable, __file__, "--child"], env=env, check=True)
