"""A probe: every garbage collection over 5 ms, with its generation, logged to
``$TMPDIR/chatrelay-gc-<pid>.log``. What found the full collections that stalled every open
stream at once (docs/benchmarks.md, "Where chatrelay's time goes")."""

import gc
import os
import tempfile
import time
from typing import Any

_log = open(  # noqa: SIM115 (lives as long as the process)
    os.path.join(tempfile.gettempdir(), f"chatrelay-gc-{os.getpid()}.log"), "a"
)
_started = [0.0]


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    pause = (time.perf_counter() - _started[0]) * 1000
    if pause > 5:
        _log.write(f"gen{info['generation']} {pause:.1f} ms\n")
        _log.flush()


gc.callbacks.append(_timed)
