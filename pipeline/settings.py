"""The one frozen settings object: environment variables with the prefix ``TASKPULSE_``.

Built once (in the CLI), then passed down as plain arguments.  Empty URLs mean
"embedded": the Tansu broker child process and the in-process chDB engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of taskpulse, with defaults that work without configuration."""

    model_config = SettingsConfigDict(env_prefix="TASKPULSE_", frozen=True, extra="ignore")

    data_dir: Path = Field(Path(".taskpulse"), description="Where the embedded stack keeps its data.")
    kafka_url: str = Field(
        "", description="kafka://host:port[,host:port]; empty starts the embedded Tansu broker."
    )
    clickhouse_url: str = Field(
        "",
        description="http(s)://user:pass@host:8123 or chdb:///path; empty uses chDB in data_dir.",
    )
    clickhouse_password: SecretStr = Field(SecretStr(""), description="Overrides the URL password.")
    clickhouse_database: str = "taskpulse"

    partitions: int = Field(4, ge=1, description="Partitions for topics taskpulse creates.")
    topic_retention_ms: int = Field(6 * 3600 * 1000, description="retention.ms of created topics.")
    topic_retention_bytes: int = Field(
        512 * 1024 * 1024, description="retention.bytes per partition of created topics."
    )

    consumer_group: str = Field("taskpulse", description="Kafka consumer group (Faust app id).")
    ingest_engine: Literal["faust", "direct"] = Field(
        "faust",
        description="faust: a Faust agent reads the raw topics; direct: a plain aiokafka loop "
        "in the same worker (same guarantees, no per-message Faust cost).",
    )
    batch_max: int = Field(500, ge=1, description="Max Kafka messages per processing batch.")
    batch_events: int = Field(
        20_000, ge=100, description="Direct engine: target events per batch (messages adapt)."
    )
    batch_within_s: float = Field(0.25, gt=0, description="Max wait to fill a batch.")
    commit_interval_s: float = Field(1.0, gt=0, description="How often acked offsets are committed.")
    session_timeout_s: float = Field(10.0, gt=0)

    insert_max_rows: int = Field(
        200_000,
        ge=1,
        le=1_000_000,
        description="Max rows per ClickHouse INSERT: a bigger batch is written in several, split at "
        "Kafka-message boundaries, so each INSERT stays one atomic part (the server's "
        "min_insert_block_size_rows is 1,048,449).  Only a single message bigger than this goes alone.",
    )
    insert_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Max bytes (normalized JSON) per ClickHouse INSERT, split like insert_max_rows "
        "(the server's min_insert_block_size_bytes is 256 MiB).",
    )
    rollup_max_dimension_values: int = Field(
        1000,
        ge=1,
        description="Distinct agents, and distinct task types, per rollup window (each granularity); "
        "later ones fold into `other` (totals stay exact) and count in "
        "taskpulse_rollup_dimension_folded_total.",
    )
    rollup_cap_windows: int = Field(
        512, ge=8, description="Windows whose distinct dimension values are tracked for the cap (oldest dropped)."
    )
    max_message_bytes: int = Field(1024 * 1024, description="Larger raw messages go to the DLQ.")
    max_future_skew_s: float = Field(
        300.0, description="Events timestamped further ahead of now are rejected."
    )
    dedup_capacity: int = Field(
        1_000_000, ge=1000, description="Event ids remembered for duplicate detection."
    )
    sketch_relative_accuracy: float = Field(0.005, ge=0.001, lt=0.05)

    api_host: str = "127.0.0.1"
    api_port: int = Field(6066, description="Worker HTTP API: /metrics, /api/status, /api/sql.")
    api_url: str = Field("", description="Where `taskpulse sql` finds a running worker.")

    roles: str = Field(
        "ingest,correlate,alerts,metrics",
        description="Comma-separated roles this worker runs: ingest, correlate, alerts, metrics.",
    )
    log_level: str = "WARNING"

    # --- correlation (task lifecycle, agent availability) --------------------------------
    reorder_window_s: float = Field(
        2.0, ge=0, description="Events of one task are put in event-time order within this window."
    )
    abandon_after_s: float = Field(
        3600.0, gt=0, description="A started task silent for this long is closed as ABANDONED."
    )
    abandon_after_by_type: dict[str, float] = Field(
        default_factory=dict, description='Per task type overrides, JSON: {"research": 7200}'
    )
    agent_offline_after_s: float = Field(
        90.0, gt=0, description="An agent with no heartbeat for this long is offline."
    )
    group_keys: str = Field(
        "group,correlation_id",
        description="Fields (current_state, then metadata) that name a task's group; first non-empty wins.",
    )

    # --- alerting ----------------------------------------------------------------------
    alert_rules: Path = Field(
        Path("deploy/alerts/rules.yml"), description="Alert rules YAML (relative to the working directory)."
    )
    alert_max_groups: int = Field(
        100,
        ge=1,
        description="Alert groups (group_by label sets) per rule and evaluation; the rest fold into one "
        "`other` group (its worst value) and count in taskpulse_alert_groups_folded_total.",
    )
    alert_interval_s: float = Field(10.0, gt=0, description="How often the alert rules are evaluated.")
    alertmanager_url: str = Field(
        "", description="Prometheus Alertmanager base URL (http://host:9093); empty: not used."
    )
    alertmanager_resend_s: float = Field(
        60.0, gt=0, description="Firing alerts are re-sent to Alertmanager this often; each stays active "
        "there for 4 periods (at least 2 min) unless re-sent or resolved."
    )
    alert_webhook_url: SecretStr = Field(SecretStr(""), description="JSON webhook for alerts; empty: not used.")
    alert_webhook_format: Literal["json", "slack"] = Field(
        "json", description="json: taskpulse's alert object; slack: a Slack incoming-webhook payload."
    )
    alert_notify_timeout_s: float = Field(5.0, gt=0, description="Timeout of one notification request.")
    alert_retry_for_s: float = Field(
        600.0, gt=0, description="A failing notification is retried with backoff for this long, then dropped."
    )

    # --- metrics exporter ----------------------------------------------------------------
    metrics_max_agents: int = Field(
        50, ge=1, description="Agents that get their own label value; later ones share `other`."
    )
    metrics_max_task_types: int = Field(
        25, ge=1, description="Task types that get their own label value; later ones share `other`."
    )
    metrics_max_tracked_tasks: int = Field(
        100_000, ge=100, description="Open tasks whose state the metrics role remembers (oldest dropped)."
    )
    metrics_dedup_capacity: int = Field(
        200_000, ge=1000, description="Normalized event ids the metrics role remembers to count duplicates once."
    )
    metrics_port: int = Field(
        0, ge=0, description="0: /metrics on the API port only; else also a plain /metrics server on this port."
    )

    def masked(self) -> dict[str, Any]:
        """The settings as a dict for logging, secrets and URL passwords masked."""
        out = self.model_dump(mode="json")
        out["clickhouse_password"] = "***" if self.clickhouse_password.get_secret_value() else ""
        out["alert_webhook_url"] = "***" if self.alert_webhook_url.get_secret_value() else ""
        for key in ("kafka_url", "clickhouse_url", "alertmanager_url"):
            out[key] = mask_url(out[key])
        return out

    @property
    def role_list(self) -> list[str]:
        return [r.strip() for r in self.roles.split(",") if r.strip()]

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_url

    @property
    def effective_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def effective_clickhouse_url(self) -> str:
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


def kafka_bootstrap(kafka_url: str) -> str:
    """``kafka://a:9092,b:9092`` (or a bare ``host:port`` list) → Kafka bootstrap servers."""
    return ",".join(p.removeprefix("kafka://") for p in kafka_url.split(",") if p)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and error messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
