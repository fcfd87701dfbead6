"""The strict gates run with the suite: the layer contract (import-linter), ruff, mypy and the
duplicate-code check (pylint, configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "argv",
    [
        [str(BIN / "lint-imports")],
        [str(BIN / "ruff"), "check", "pipeline", "taskpulse", "tests", "bench"],
        [str(BIN / "mypy")],
        [str(BIN / "pylint"), "pipeline"],
    ],
    ids=["import-linter", "ruff", "mypy", "duplicate-code"],
)
def test_gate_passes(argv: list[str]) -> None:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
