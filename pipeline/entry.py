"""The ``taskpulse`` command's entry point: with only the SDK installed (``pip install
taskpulse``, no ``worker`` extra) it says what to install instead of a traceback."""

from __future__ import annotations

import importlib.util
import sys

#: what the command cannot start without (the ``worker`` extra)
NEEDED = ("typer", "rich", "pydantic_settings", "faust", "clickhouse_connect")


def main() -> None:
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"the taskpulse command needs the pipeline's dependencies (missing: {', '.join(missing)}): "
                 "pip install 'taskpulse[worker]'  (the SDK alone, `from taskpulse import Tracker`, needs "
                 "none of them)")  # fmt: skip
    from pipeline.cli import main as cli_main

    cli_main()
