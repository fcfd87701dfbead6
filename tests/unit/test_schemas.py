"""The committed schemas/ directory is exactly what the models generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.events import PAYLOADS
from pipeline.schema_export import generated_files

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
FIX = "run `make schemas` (or `taskpulse schemas`) and commit the result"

GENERATED = generated_files()


def on_disk() -> dict[str, str]:
    return {p.relative_to(SCHEMAS).as_posix(): p.read_text() for p in sorted(SCHEMAS.rglob("*")) if p.is_file()}


def test_schemas_directory_exists() -> None:
    assert SCHEMAS.is_dir(), f"{SCHEMAS} is missing: {FIX}"


def test_no_schema_file_is_missing_or_left_over() -> None:
    files = on_disk() if SCHEMAS.is_dir() else {}
    missing = sorted(set(GENERATED) - set(files))
    stale = sorted(set(files) - set(GENERATED))
    assert not missing, f"schemas/ lacks {missing}: {FIX}"
    assert not stale, f"schemas/ has files the models no longer generate {stale}: {FIX}"


@pytest.mark.parametrize("rel", sorted(GENERATED))
def test_schema_file_is_current(rel: str) -> None:
    path = SCHEMAS / rel
    assert path.is_file(), f"schemas/{rel} is missing: {FIX}"
    assert path.read_text() == GENERATED[rel], f"schemas/{rel} is stale: {FIX}"


@pytest.mark.parametrize("event_type", sorted(PAYLOADS))
def test_every_event_type_has_a_schema(event_type: str) -> None:
    rel = f"events/{event_type}.schema.json"
    assert rel in GENERATED
    path = SCHEMAS / rel
    assert path.is_file(), f"schemas/{rel} is missing: {FIX}"
    schema = json.loads(path.read_text())
    assert schema["title"] == f"{event_type} current_state"
    assert schema["type"] == "object"
    # the payload model's fields are all described, required ones marked required
    model = PAYLOADS[event_type]
    assert set(schema.get("properties", {})) == set(model.model_fields)
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    assert set(schema.get("required", [])) == required


def test_no_schema_for_an_unknown_event_type() -> None:
    event_files = {rel for rel in GENERATED if rel.startswith("events/")}
    assert event_files == {f"events/{et}.schema.json" for et in PAYLOADS}


def test_envelope_schema_describes_the_envelope() -> None:
    schema = json.loads(GENERATED["envelope.schema.json"])
    assert set(schema["required"]) == {"id", "timestamp", "event_type", "entity_type", "entity_id"}
    assert "current_state" in schema["properties"]
