"""A probe: where the memory goes. tracemalloc on, and a snapshot taken whenever
bench/memory_breakdown.py asks (it creates ``$TMPDIR/chatrelay-memory-<pid>.<name>.request``;
the snapshot is written beside it as ``.snapshot``). Slows the server several times over: run
it slowly paced."""

import os
import tempfile
import threading
import time
import tracemalloc

tracemalloc.start(1)
_path = os.path.join(tempfile.gettempdir(), f"chatrelay-memory-{os.getpid()}")


def _watch() -> None:
    while True:
        time.sleep(0.2)
        for name in ("idle", "open", "after"):
            if os.path.exists(f"{_path}.{name}.request"):
                tracemalloc.take_snapshot().dump(f"{_path}.{name}.snapshot")
                os.remove(f"{_path}.{name}.request")


threading.Thread(target=_watch, daemon=True).start()
