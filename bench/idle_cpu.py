"""What an idle chatrelay burns: CPU per second with no request, after a warm-up run.

    .venv/bin/python bench/idle_cpu.py [--seconds 20] [--systems chatrelay,chatrelay:src=PATH]

Started as bench/compare.py starts it (stored answers, quotas, metrics, an API key; the mock
upstream beside it), warmed up with a few answers, then left alone. Whatever runs on a timer
shows here: uvicorn's main loop, the instance heartbeat, the answer flusher, the limits' lease
renewals. At C=1 this is spread over only ~50 chunks a second, so it is part of that figure.
"""

from __future__ import annotations

import argparse
import time

from compare import warm_up
from systems import start_chatrelay, start_mock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--systems", default="chatrelay", help="chatrelay[:NAME+NAME], ...")
    args = parser.parse_args()
    mock = start_mock()
    try:
        for name in args.systems.split(","):
            experiments = name.split(":", 1)[1].replace("+", ",") if ":" in name else ""
            system = start_chatrelay(mock, prelude=experiments, name=name)
            try:
                warm_up(system, mock)
                time.sleep(2)  # the warm-up's answers stored, its connections idle
                before = system.cpu()
                time.sleep(args.seconds)
                used = system.cpu() - before
                per_second = used / args.seconds * 1000
                print(f"{name} ({system.version}): idle, {per_second:.2f} ms of CPU a second")
            finally:
                system.stop()
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
