"""The one frozen settings object: environment variables with the prefix ``TASKPULSE_``.

Built once (in the CLI), then passed down as plain arguments.  Empty URLs mean
"embedded": the Tansu broker child process and the in-process chDB engine.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from pipeline.errors import ConfigError


class Settings(BaseSettings):
    """Every knob of taskpulse, with defaults that work without configuration."""

    # env_ignore_empty: `TASKPULSE_X=` (as compose passes an unset .env variable) means the default
    model_config = SettingsConfigDict(env_prefix="TASKPULSE_", frozen=True, extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(Path(".taskpulse"), description="Where the embedded stack keeps its data.")
    kafka_url: str = Field(
        "", description="kafka://host:port[,host:port]; empty starts the embedded Tansu broker."
    )
    clickhouse_url: str = Field(
        "",
        description="http(s)://user:pass@host:8123 or chdb:///path; empty uses chDB in data_dir.",
    )
    clickhouse_password: SecretStr = Field(SecretStr(""), description="Overrides the URL password.")
    clickhouse_database: str = Field("taskpulse", description="The ClickHouse database taskpulse writes and reads.")
    clickhouse_read_url: str = Field(
        "",
        description="Server mode: the URL (with the read-only user) that analyst queries use "
        "(/api/sql, `taskpulse sql`, reports, exports); empty: the same connection as the writes.",
    )
    clickhouse_read_password: SecretStr = Field(
        SecretStr(""), description="Password of the clickhouse_read_url user (overrides its URL password)."
    )
    clickhouse_ca_file: str = Field(
        "",
        description="https:// ClickHouse: CA bundle (PEM) the server certificate is verified against; "
        "empty: the system's CAs.",
    )
    clickhouse_verify: bool = Field(
        True, description="https:// ClickHouse: verify the server certificate and host name (never off in production)."
    )
    clickhouse_client_cert: str = Field("", description="https:// ClickHouse: client certificate (PEM) for mTLS.")
    clickhouse_client_key: str = Field("", description="https:// ClickHouse: the client certificate's key (PEM).")

    # --- Kafka transport security (every consumer, producer, admin client and the SDK) ---
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT (local), SSL (TLS), SASL_SSL (TLS + user/password: managed Kafka)."
    )
    kafka_ssl_cafile: str = Field(
        "", description="CA bundle (PEM) the brokers' certificates are verified against; empty: the system's CAs."
    )
    kafka_ssl_certfile: str = Field("", description="Client certificate (PEM) for brokers that require mTLS.")
    kafka_ssl_keyfile: str = Field("", description="The client certificate's private key (PEM).")
    kafka_ssl_key_password: SecretStr = Field(SecretStr(""), description="Password of an encrypted keyfile.")
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that the broker certificate names the host connected to."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism for SASL_SSL / SASL_PLAINTEXT."
    )
    kafka_sasl_username: str = Field("", description="SASL user name.")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password.")

    partitions: int = Field(4, ge=1, description="Partitions for topics taskpulse creates.")
    topic_retention_ms: int = Field(6 * 3600 * 1000, description="retention.ms of created topics.")
    topic_retention_bytes: int = Field(
        512 * 1024 * 1024, description="retention.bytes per partition of created topics."
    )

    consumer_group: str = Field("taskpulse", description="Kafka consumer group (Faust app id).")
    ingest_engine: Literal["faust", "direct"] = Field(
        "direct",
        description="direct: an aiokafka batch loop hosted in the Faust worker reads the raw topics "
        "(group <group>-ingest); faust: a Faust agent (same guarantees, about 100 us more per Kafka message).",
    )
    batch_max: int = Field(500, ge=1, description="Max Kafka messages per processing batch.")
    batch_events: int = Field(
        20_000, ge=100, description="Direct engine: target events per batch (messages adapt)."
    )
    batch_within_s: float = Field(0.25, gt=0, description="Max wait to fill a batch.")
    commit_interval_s: float = Field(1.0, gt=0, description="How often acked offsets are committed.")
    session_timeout_s: float = Field(
        10.0, gt=0, description="Kafka consumer-group session timeout: a worker silent this long loses its partitions."
    )

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
        300.0, description="Events timestamped further ahead of now are rejected (bad_timestamp)."
    )
    min_event_time: datetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC),
        description="Events timestamped before this are rejected (bad_timestamp); ISO 8601.",
    )
    max_depth: int = Field(
        64, ge=4, le=250, description="Max nesting levels of one event object (too_deep)."
    )
    max_array_elements: int = Field(
        10_000, ge=1, description="Max events in one array message; a longer array is rejected whole "
        "(too_many_elements)."
    )
    max_id_length: int = Field(
        256, ge=16, description="Max characters of an id (id, entity_id, requester/user/task ids, "
        "metadata ids); longer is rejected (out_of_range)."
    )
    max_dimension_length: int = Field(
        128, ge=8, description="agent and task_type values are cut to this many characters (not rejected)."
    )
    dedup_capacity: int = Field(
        1_000_000, ge=1000, description="Event ids remembered for duplicate detection."
    )
    sketch_relative_accuracy: float = Field(
        0.005, ge=0.001, lt=0.05, description="Relative accuracy of the duration sketches (tpQuantile): 0.005 is 0.5 %."
    )

    api_host: str = Field(
        "127.0.0.1", description="Address the HTTP API binds; a non-loopback one needs an API token."
    )
    api_port: int = Field(6066, description="HTTP API port (worker and `taskpulse api`): /metrics, /api/…, /api/v1/….")
    api_url: str = Field("", description="Where `taskpulse sql` finds a running worker.")
    api_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token with the admin role the worker accepts; the CLI sends it to the worker. "
        "Empty and no tokens file: the API is open, allowed on loopback only.",
    )
    api_tokens_file: Path | None = Field(
        None, description="Tokens file: one `name:role:sha256:<hex>` line per token (`taskpulse token create`)."
    )
    api_metrics_token: SecretStr = Field(
        SecretStr(""), description="A reader token named `metrics` for the Prometheus scraper; empty: none."
    )
    api_session_secret: SecretStr = Field(
        SecretStr(""),
        description="Key that signs `taskpulse_session` cookies; give every API process of a deployment (each "
        "`api` replica) the same one. Empty: a random key per process (its sessions end when it restarts).",
    )
    api_session_ttl_s: int = Field(
        43_200, ge=60, description="Lifetime of the `taskpulse_session` cookie `POST /api/v1/session` issues."
    )
    api_ingest_max_bytes: int = Field(
        16 * 1024 * 1024, ge=1024,
        description="HTTP ingest: largest request body, after gzip is undone (larger: 413).",
    )
    api_ingest_max_events: int = Field(
        10_000, ge=1, description="HTTP ingest: most events in one request (more: 413)."
    )
    api_ingest_rate_limit: str = Field(
        "100/second",
        description="HTTP ingest requests each token may send (`N/second`, `N/minute`, several with `;`); "
        "over it: 429 with Retry-After.",
    )

    # --- analyst SQL (/api/sql, taskpulse sql, export, report) ------------------------------
    sql_max_execution_s: float = Field(30.0, gt=0, description="Time limit of one analyst query.")
    sql_max_result_rows: int = Field(
        100_000, ge=1, description="Rows an analyst query may return (more: refused, add a LIMIT)."
    )
    sql_max_result_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Bytes an analyst query may return (uncompressed)."
    )
    sql_max_memory_bytes: int = Field(2 * 1024**3, ge=1024**2, description="Memory one analyst query may use.")
    sql_max_concurrent: int = Field(
        2, ge=1, description="Analyst queries that run at once (each on its own read-only session)."
    )
    sql_max_threads: int = Field(
        0, ge=0, description="Threads one analyst query may use; 0: half the CPU cores (the rest stay for ingest)."
    )

    roles: str = Field(
        "ingest,correlate,alerts,metrics",
        description="Comma-separated roles this worker runs: ingest, correlate, alerts, metrics.",
    )
    log_level: str = Field("WARNING", description="Worker log level: DEBUG, INFO, WARNING or ERROR.")

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
    correlation_memory_mb: int = Field(
        256,
        ge=1,
        description="Memory budget of the correlation state (estimated); beyond it the stalest tasks and "
        "agents (least recently changed) are dropped first and counted (evicted_tasks, evicted_agents).",
    )
    task_expire_after_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="An open task with no event for this long (stream time) is forgotten: tasks that never "
        "start (created, queued, assigned) or stay paused are never abandoned, so this bounds them.",
    )
    task_history_max: int = Field(
        500,
        ge=16,
        description="Events kept per task; beyond it the oldest progress events (else the oldest events) "
        "are dropped, and counted on the record (history_dropped).",
    )
    agent_forget_after_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="An agent with no event for this long (stream time) is forgotten by the correlation "
        "state (its agent_status row stays).",
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
    alert_buffer_max: int = Field(
        100_000, ge=100, description="Alert changes held while the alerts table is unreachable; beyond it the "
        "oldest are dropped and counted (dropped_unwritten_changes).",
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

    # --- schema and retention (applied by `taskpulse migrate`; the worker too at start) ---
    auto_migrate: bool = Field(
        True,
        description="The worker applies pending schema migration steps and TTL changes at start; false: it "
        "refuses to start until `taskpulse migrate` has run. A database ahead of the code is always refused.",
    )
    ttl_events_days: int = Field(30, ge=1, description="Days the `events` table keeps raw events.")
    ttl_rollups_1m_days: int = Field(7, ge=1, description="Days `rollups` keeps 1-minute windows.")
    ttl_rollups_5m_days: int = Field(30, ge=1, description="Days `rollups` keeps 5-minute windows.")
    ttl_rollups_1h_days: int = Field(90, ge=1, description="Days `rollups` keeps 1-hour windows.")
    ttl_rollups_1d_days: int = Field(730, ge=1, description="Days `rollups` keeps 1-day windows.")
    ttl_dlq_days: int = Field(
        30, ge=1, description="Days the `dlq` table keeps rejected input (and `dlq_replays` its replay records)."
    )
    ttl_tasks_days: int = Field(30, ge=1, description="Days `tasks` keeps a task after its last event.")
    ttl_task_executions_days: int = Field(
        730, ge=1, description="Days `task_executions` keeps a finished task's row."
    )
    ttl_alerts_days: int = Field(365, ge=1, description="Days the `alerts` table keeps alert state changes.")
    ttl_audit_days: int = Field(
        365, ge=1, description="Days the `audit` table keeps who queried, exported, replayed or erased what."
    )

    # --- privacy: pseudonyms, redaction, erasure (see README, Privacy) ---
    pii_key: SecretStr = Field(
        SecretStr(""),
        description="Secret key of the HMAC-SHA256 that replaces user ids (user_id, requester_id, requester.id, "
        "metadata.session_id, user entity ids, TASKPULSE_PII_FIELDS) by pseudonyms `pn_…` at ingest; empty: "
        "NOTHING is hashed, raw user ids are stored.",
    )
    pii_key_previous: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated earlier values of TASKPULSE_PII_KEY (after a rotation): export and erase "
        "also match the pseudonyms made with them. Never logged.",
    )
    pii_fields: str = Field(
        "",
        description="More identifier fields to pseudonymise, comma-separated: names at any depth of the states "
        "(customer_id) or dotted paths from the event root (metadata.client.login).",
    )
    redact: bool = Field(
        True,
        description="Replace e-mail addresses, phone and card numbers and credentials in free text (request, "
        "errors, results, messages) by [email] / [phone] / [card] / [token] before storage.",
    )
    redact_fields: str = Field(
        "",
        description="Dotted paths from the event root whose values are replaced whole by [redacted] "
        "(current_state.notes), comma-separated.",
    )
    dlq_keep_original: bool = Field(
        False,
        description="The DLQ keeps rejected input byte for byte (raw ids and e-mails included); false: a "
        "pseudonymised, redacted copy (such entries cannot be replayed).",
    )
    erasure_refresh_s: float = Field(
        30.0, gt=0, description="How often workers re-read the erasure list (`taskpulse privacy erase`)."
    )

    # --- analytics: cost, reports ---
    prices: str = Field(
        "",
        description="Price table that turns the tokens events report into cost: a path to a YAML/JSON file, or the "
        'table inline (JSON/YAML: {"currency": "USD", "models": {"gpt-4o": {"input_per_1m": 2.5, '
        '"output_per_1m": 10}}}); empty: only metrics.cost counts.',
    )
    report_dir: str = Field(
        "", description="Where scheduled reports are written (HTML + markdown); empty: <data dir>/reports."
    )
    report_daily_cron: str = Field("0 6 * * *", description="When the daily report runs (cron, in report_tz); "
                                   "empty: never.")
    report_weekly_cron: str = Field("0 8 * * MON", description="When the weekly report runs (cron); empty: never.")
    report_monthly_cron: str = Field("0 9 1 * *", description="When the monthly report runs (cron); empty: never.")
    report_tz: str = Field("UTC", description="Time zone of the report schedule, month boundaries and shown times.")
    reports_enabled: bool = Field(
        True, description="The leading worker writes the scheduled reports (role alerts); false: only on demand."
    )
    report_webhook_url: SecretStr = Field(
        SecretStr(""), description="POST a JSON summary of each scheduled report here (with the file paths); "
        "empty: not sent."
    )

    # --- taskpulse doctor ---
    doctor_max_lag: int = Field(
        10_000, ge=0,
        description="`taskpulse doctor`: consumer lag (messages) of a role above which it is a problem.",
    )
    doctor_min_free_disk_mb: int = Field(
        1024, ge=0,
        description="`taskpulse doctor`: free space (MiB) of the data directory's disk below which it is a problem.",
    )
    doctor_max_clock_skew_s: float = Field(
        60.0, gt=0,
        description="`taskpulse doctor`: how far the newest event time or the ClickHouse clock may lead this host.",
    )

    def masked(self) -> dict[str, Any]:
        """The settings as a dict for logging, secrets and URL passwords masked."""
        out = self.model_dump(mode="json")
        out["clickhouse_password"] = "***" if self.clickhouse_password.get_secret_value() else ""
        out["alert_webhook_url"] = "***" if self.alert_webhook_url.get_secret_value() else ""
        out["report_webhook_url"] = "***" if self.report_webhook_url.get_secret_value() else ""
        for key in ("clickhouse_read_password", "kafka_ssl_key_password", "kafka_sasl_password",
                    "api_token", "api_metrics_token", "api_session_secret"):
            out[key] = "***" if getattr(self, key).get_secret_value() else ""
        for key in ("kafka_url", "clickhouse_url", "clickhouse_read_url", "alertmanager_url", "api_url"):
            out[key] = redact(out[key])
        return out

    @property
    def effective_report_dir(self) -> Path:
        """Where scheduled reports go: ``report_dir``, else ``<data dir>/reports``."""
        return Path(self.report_dir) if self.report_dir else self.data_dir / "reports"

    @property
    def role_list(self) -> list[str]:
        return [r.strip() for r in self.roles.split(",") if r.strip()]

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_url

    @property
    def api_on_loopback(self) -> bool:
        return is_loopback(self.api_host)

    @property
    def heartbeat_interval_s(self) -> float:
        """Consumer-group heartbeats: a third of the session timeout, at most every 3 s."""
        return min(3.0, self.session_timeout_s / 3)

    @property
    def effective_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def effective_clickhouse_url(self) -> str:
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


def load_settings() -> Settings:
    """``Settings()`` from the environment; an invalid value is a ``ConfigError`` of one line
    per bad variable (its name, the value and what is expected), never a traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_settings_error(exc)) from None
    except SettingsError as exc:  # a JSON-valued setting that is not JSON
        field = re.search(r'field "([a-z_]+)"', str(exc))
        name = f"TASKPULSE_{field.group(1).upper()}" if field else "a TASKPULSE_* variable"
        raise ConfigError(f"invalid setting: {name} is not valid JSON (e.g. '{{\"research\": 7200}}')") from None


def describe_settings_error(exc: ValidationError) -> str:
    """``TASKPULSE_NAME='value': what is wrong`` for each invalid setting."""
    lines = []
    for e in exc.errors(include_url=False):
        name = "TASKPULSE_" + str(e["loc"][0]).upper() if e["loc"] else "TASKPULSE_*"
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f"={str(value)[:60]!r}"
        lines.append(f"{name}{shown}: {e['msg']}")
    return "invalid setting" + ("s" if len(lines) > 1 else "") + ": " + "; ".join(lines)


def kafka_bootstrap(kafka_url: str) -> str:
    """``kafka://a:9092,b:9092`` (or a bare ``host:port`` list) → Kafka bootstrap servers."""
    return ",".join(p.removeprefix("kafka://") for p in kafka_url.split(",") if p)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for 0.0.0.0, names and other addresses."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


#: the password runs to the last ``@`` before the host: one sent unencoded may hold ``@`` itself
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*)(?P<pw>:[^/\s]*)?@")
#: Webhook URLs whose path is the secret (Slack, Discord, Teams, Mattermost, Google Chat, …).
_SECRET_PATH = re.compile(
    r"(?P<keep>https?://[^/\s]+/(?:services|api/webhooks|hooks|webhookb2|webhook|v1/spaces))/[^\s'\"<>)]+",
    re.IGNORECASE,
)
_SECRET_QUERY = re.compile(
    r"(?P<keep>[?&](?:[A-Za-z_-]*(?:token|key|secret|password|passwd|pwd|sig|signature|auth)[A-Za-z_-]*)=)"
    r"[^&\s'\"<>#]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<keep>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


#: Exact secret values of this process (``install_log_redaction``), replaced wherever they appear.
_KNOWN_SECRETS: list[str] = []


def _credentials(m: re.Match[str]) -> str:
    # user:password@ keeps the user; a lone user@ may itself be the token (https://TOKEN@host)
    return f"{m['scheme']}{m['user']}:***@" if m["pw"] else f"{m['scheme']}***@"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with secrets replaced by ``***``: the process's configured secrets (tokens,
    passwords, the webhook URL), URL credentials, webhook paths that are the secret
    (``hooks.slack.com/services/…``), secret-looking query parameters (``?token=…``) and
    bearer tokens.  For every log line, status field and error message."""
    if not text:
        return text
    out = text
    for secret in sorted({*_KNOWN_SECRETS, *secrets}, key=len, reverse=True):
        if len(secret) >= 6:
            out = out.replace(secret, "***")
    out = _URL_CREDENTIALS.sub(_credentials, out)
    out = _SECRET_PATH.sub(lambda m: f"{m['keep']}/***", out)
    out = _SECRET_QUERY.sub(lambda m: f"{m['keep']}***", out)
    return _BEARER.sub(lambda m: f"{m['keep']}***", out)


def url_for_display(url: str) -> str:
    """``scheme://host:port/…``: a URL whose path may be the secret (a webhook), for messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<url>"
    return f"{parts.scheme}://{host}{port}/…" if parts.path.strip("/") or parts.query else f"{parts.scheme}://{host}{port}"


def secret_values(settings: Settings) -> list[str]:
    """The secret strings in ``settings``: tokens, passwords, the webhook URL and its path."""
    out = [
        settings.api_token.get_secret_value(), settings.api_metrics_token.get_secret_value(),
        settings.api_session_secret.get_secret_value(),
        settings.clickhouse_password.get_secret_value(), settings.clickhouse_read_password.get_secret_value(),
        settings.kafka_sasl_password.get_secret_value(), settings.kafka_ssl_key_password.get_secret_value(),
        settings.pii_key.get_secret_value(),
        *settings.pii_key_previous.get_secret_value().split(","),
    ]  # fmt: skip
    for hook in (settings.alert_webhook_url.get_secret_value(), settings.report_webhook_url.get_secret_value()):
        if not hook:
            continue
        out.append(hook)
        try:
            path = urlsplit(hook).path
        except ValueError:
            path = ""
        if len(path.strip("/")) >= 8:
            out.append(path)
    for url in (settings.kafka_url, settings.clickhouse_url, settings.clickhouse_read_url, settings.alertmanager_url):
        with_pw = _URL_CREDENTIALS.search(url)
        if with_pw and with_pw["pw"]:
            out.append(with_pw["pw"][1:])
    return [s.strip() for s in out if s.strip()]


class _RedactedRecord(logging.LogRecord):
    """A log record whose message and traceback pass through ``redact``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.exc_info and self.exc_info[1] is not None:
            self.exc_text = redact("".join(traceback.format_exception(*self.exc_info)).rstrip("\n"))

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        return redact(super().getMessage())


def install_log_redaction(secrets: Iterable[str]) -> None:
    """Redact ``secrets`` (and URL credentials, webhook paths, tokens) in every log record of
    this process, whatever logger or handler writes it."""
    _KNOWN_SECRETS[:] = sorted({s for s in secrets if len(s) >= 6})
    logging.setLogRecordFactory(_RedactedRecord)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (``redact`` for one URL)."""
    return redact(url)
