"""One source of truth for settings: ``Settings`` (pipeline/settings.py), README.md's
Configuration table, ``.env.example`` and docker-compose.yml's settings block agree.

When a setting is added (or renamed), these tests say what to add where."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.envfile import COMPOSE_SETS, NOT_PASSED, compose_block, defaults, env_example, env_name
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FIELDS = list(Settings.model_fields)
ALL_ENV = {env_name(f): f for f in FIELDS}


def _readme_table() -> list[tuple[list[str], str, str]]:
    """(variables, default cell, meaning) of each row of README.md's Configuration table.
    A cell ``TASKPULSE_A_B_C` / `_D`` names TASKPULSE_A_B_C and the setting whose name is
    a prefix of A_B_C followed by _D (TASKPULSE_A_B_D, else TASKPULSE_A_D, else TASKPULSE_D)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `TASKPULSE_"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`(TASKPULSE_[A-Z0-9_]+|_[A-Z0-9_]+)`", cells[0])
        full = names[0]
        out = [full]
        parts = full.removeprefix("TASKPULSE_").split("_")
        for suffix in names[1:]:
            cands = [f"TASKPULSE_{'_'.join(parts[:k])}{suffix}" for k in range(len(parts), -1, -1)]
            cands = [c.replace("TASKPULSE__", "TASKPULSE_") for c in cands]
            out.append(next((c for c in cands if c in ALL_ENV), cands[0]))
        rows.append((out, cells[1] if len(cells) > 1 else "", cells[2] if len(cells) > 2 else ""))
    return rows


def test_every_setting_has_a_description() -> None:
    missing = [f for f, info in Settings.model_fields.items() if not (info.description or "").strip()]
    assert not missing, f"add description=... to these fields in pipeline/settings.py: {missing}"


def test_readme_configuration_table_lists_every_setting_and_no_other() -> None:
    documented = {name for names, _, _ in _readme_table() for name in names}
    missing = sorted(set(ALL_ENV) - documented)
    unknown = sorted(documented - set(ALL_ENV))
    hint = "\n".join(
        f"| `{n}` | `{defaults()[ALL_ENV[n]] or '(empty)'}` | {Settings.model_fields[ALL_ENV[n]].description} |"
        for n in missing
    )
    assert not missing, f"README.md, section Configuration: add a row for each of {missing}, e.g.\n{hint}"
    assert not unknown, f"README.md's Configuration table names variables Settings does not have: {unknown}"


def _plain(cell: str) -> str | None:
    """The value of a default cell that is one backticked literal (else None: prose, units)."""
    m = re.fullmatch(r"`([^`]*)`", cell.strip())
    return m.group(1) if m else None


def test_readme_defaults_match_settings() -> None:
    wrong = []
    for names, default_cell, _ in _readme_table():
        shown = _plain(default_cell)
        if len(names) == 1 and shown is not None and names[0] in ALL_ENV:
            actual = defaults()[ALL_ENV[names[0]]]
            if shown != actual:
                wrong.append(f"{names[0]}: README says `{shown}`, Settings' default is `{actual}`")
    assert not wrong, "README.md, Configuration table: fix the defaults:\n" + "\n".join(wrong)


def test_env_example_is_generated_from_settings() -> None:
    on_disk = (ROOT / ".env.example").read_text()
    assert on_disk == env_example(), ".env.example is stale: run `taskpulse schemas` (pipeline/envfile.py)"
    for field in FIELDS:
        assert re.search(rf"^#? ?{env_name(field)}[=:]", on_disk, re.MULTILINE), field


def test_compose_passes_every_setting_from_env() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert compose_block() in compose, (
        "docker-compose.yml's generated settings block is stale: run `taskpulse schemas` (pipeline/envfile.py)"
    )
    for field in COMPOSE_SETS:
        assert env_name(field) + ":" in compose, f"docker-compose.yml must set {env_name(field)} (COMPOSE_SETS)"
    assert not set(COMPOSE_SETS) & set(NOT_PASSED)
    assert set(COMPOSE_SETS) | set(NOT_PASSED) <= set(FIELDS), "pipeline/envfile.py names a setting that is gone"


def test_the_webhook_and_writer_password_reach_only_the_services_that_need_them() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    anchor = compose.split("x-taskpulse-env:", 1)[1].split("\nx-", 1)[0]
    assert "ALERT_WEBHOOK_URL" not in anchor, "the webhook URL (a secret) belongs to the alerting service only"
    grafana = compose.split("\n  grafana:", 1)[1]
    assert "WRITER_PASSWORD" not in grafana and "taskpulse_reader" in grafana


@pytest.mark.parametrize("line", [ln for ln in env_example().splitlines() if ln.startswith("TASKPULSE_")])
def test_every_env_example_value_is_a_valid_setting(line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name, _, value = line.partition("=")
    if name not in ALL_ENV:
        return  # compose-only names (TASKPULSE_IMAGE, TASKPULSE_METRICS_TOKEN)
    monkeypatch.setenv(name, value)
    Settings()
