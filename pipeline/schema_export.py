"""Export what is generated from the models: JSON Schemas (schemas/*.json) and the DDL."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.schema import ddl_text
from pipeline.events import PAYLOADS, Envelope, NormalizedEvent, Rejected, TaskExecution


def generated_files() -> dict[str, str]:
    """Relative path → content of every generated schema file."""
    files: dict[str, str] = {}

    def dump(schema: dict[str, object]) -> str:
        return json.dumps(schema, indent=2, sort_keys=True) + "\n"

    files["envelope.schema.json"] = dump(Envelope.model_json_schema())
    files["normalized.schema.json"] = dump(NormalizedEvent.model_json_schema())
    files["dlq.schema.json"] = dump(Rejected.model_json_schema(mode="serialization"))
    files["lifecycle.schema.json"] = dump(TaskExecution.model_json_schema())
    for event_type, model in sorted(PAYLOADS.items()):
        schema = model.model_json_schema()
        schema["title"] = f"{event_type} current_state"
        files[f"events/{event_type}.schema.json"] = dump(schema)
    files["clickhouse.sql"] = ddl_text()
    return files


def write_schemas(root: Path) -> list[Path]:
    written = []
    for rel, content in generated_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
