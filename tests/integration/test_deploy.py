"""The production deployment files are valid for the real tools that read them.

- ``docker-compose config`` accepts docker-compose.yml with the variables of .env.example,
  and refuses it when a secret is missing (no secret has a default);
- ``promtool`` accepts deploy/prometheus/prometheus.yml and every rule file, and the
  alert and recording rules pass their unit tests;
- Grafana's provisioning names the datasources the dashboards use, and the dashboard
  JSON files are what ``python -m pipeline.dashboards`` generates (every panel's query is
  run against real data in test_exporter.py);
- ``amtool`` accepts deploy/alertmanager/alertmanager.yml;
- the ClickHouse cluster DDL in deploy/README.md is the shipped schema with replicated
  engines, and runs, with ``taskpulse migrate`` and the worker's watermark queries, on a
  local one-shard cluster (chDB).

No Docker engine is needed: ``docker-compose config`` only validates.  The tools come from
Debian packages that .ci/run installs; a missing tool fails the test with the package to
install (never a skip).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.schema import ddl_statements
from pipeline.dashboards import dashboards, render
from pipeline.roles import ROLE_MODULES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS_RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"
PROMETHEUS_RULES = ROOT / "deploy" / "prometheus" / "rules"
GRAFANA = ROOT / "deploy" / "grafana"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
README = ROOT / "deploy" / "README.md"

TIMEOUT_S = 120
#: tool → the Debian package that ships it
PACKAGES = {"docker-compose": "docker-compose", "promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = PACKAGES[name]
        pytest.fail(
            f"`{name}` is not on PATH: install the Debian package `{package}` "
            f"(apt-get install -y {package}; .ci/run does it in CI)",
            pytrace=False,
        )
    return path


def _run(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(argv)}` did not finish within {timeout}s", pytrace=False)


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


# --------------------------------------------------------------------------- compose


def _env_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example: not KEY=VALUE: {line!r}"
        out[key.strip()] = value.strip().strip("'\"")
    return out


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """Only what docker-compose needs plus ``extra``: no variable leaks in from the shell."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL") if k in os.environ}
    return {**keep, **extra}


def _compose(args: list[str], env: dict[str, str], env_file: Path) -> subprocess.CompletedProcess[str]:
    # --env-file: read the given file instead of a developer's ./.env
    argv = [_tool("docker-compose"), "--env-file", str(env_file), "-f", str(COMPOSE)]
    return _run([*argv, "--project-directory", str(ROOT), *args], env=_clean_env(env))


def _compose_text() -> str:
    """docker-compose.yml without comment lines and escaped dollars (not interpolated)."""
    lines = COMPOSE.read_text().replace("$$", "").splitlines()
    return "\n".join(ln for ln in lines if not ln.lstrip().startswith("#"))


def _compose_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", _compose_text()))


def test_compose_config_is_valid_with_env_example() -> None:
    proc = _compose(["config", "-q"], _env_example(), ENV_EXAMPLE)
    assert proc.returncode == 0, f"docker-compose config -q refused docker-compose.yml:\n{_output(proc)}"


def test_compose_defines_the_stack() -> None:
    services = _compose(["config", "--services"], _env_example(), ENV_EXAMPLE)
    volumes = _compose(["config", "--volumes"], _env_example(), ENV_EXAMPLE)
    assert services.returncode == 0, _output(services)
    assert volumes.returncode == 0, _output(volumes)
    assert set(services.stdout.split()) == {
        "kafka", "clickhouse", "migrate", "worker", "alerting", "metrics", "api", "prometheus", "alertmanager",
        "grafana",
    }  # fmt: skip
    assert {"kafka-data", "clickhouse-data", "prometheus-data", "grafana-data"} <= set(volumes.stdout.split())


SECRETS = ["CLICKHOUSE_ADMIN_PASSWORD", "CLICKHOUSE_WRITER_PASSWORD", "CLICKHOUSE_READER_PASSWORD",
           "GRAFANA_ADMIN_PASSWORD"]  # fmt: skip


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_start_without_each_secret(tmp_path: Path, secret: str) -> None:
    env = {k: v for k, v in _env_example().items() if k != secret}
    env_file = tmp_path / "partial.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    proc = _compose(["config", "-q"], env, env_file)
    assert proc.returncode != 0, f"docker-compose.yml starts without {secret}"
    assert secret in proc.stderr + proc.stdout, _output(proc)


def test_secrets_have_no_default() -> None:
    text = _compose_text()
    for name, op in re.findall(r"\$\{(\w*(?:PASSWORD|SECRET|TOKEN)\w*)(:?[-?+]|\})", text):
        assert op == ":?", f"${{{name}}} in docker-compose.yml must use ${{{name}:?message}}"


def test_env_example_lists_exactly_the_compose_variables() -> None:
    used, listed = _compose_variables(), set(_env_example())
    assert not used - listed, f"used by docker-compose.yml, missing from .env.example: {used - listed}"
    assert not listed - used, f"in .env.example, unused by docker-compose.yml: {listed - used}"


def _resolved() -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it (anchors, merges, variables)."""
    proc = _compose(["config"], _env_example(), ENV_EXAMPLE)
    assert proc.returncode == 0, _output(proc)
    return yaml.safe_load(proc.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("service", ["worker", "metrics", "api"])
def test_role_services_can_be_scaled(service: str) -> None:
    """``--scale worker=N`` / ``--scale metrics=N`` need no fixed container name and no
    published host port."""
    spec = _resolved()["services"][service]
    assert not set(spec) & {"container_name", "ports", "hostname"}, spec
    assert "healthcheck" in spec and spec.get("expose") == ["6066"]


def test_every_role_runs_in_exactly_one_service() -> None:
    services = _resolved()["services"]
    roles: dict[str, str] = {}
    for name, spec in services.items():
        value = (spec.get("environment") or {}).get("TASKPULSE_ROLES")
        if spec.get("command") == ["worker"]:
            assert value, f"service {name} runs a worker without TASKPULSE_ROLES (it would run every role)"
        for role in (value or "").split(","):
            if role:
                assert role not in roles, f"role {role} in both {roles[role]} and {name}"
                roles[role] = name
    assert set(roles) == set(ROLE_MODULES), roles
    assert roles["metrics"] == "metrics" and roles["alerts"] == "alerting"
    mounts = " ".join(str(v) for v in services["alerting"].get("volumes", []))
    assert "deploy/alerts" in mounts, "the alerting service must mount deploy/alerts (its rules file)"


def test_grafana_service_provisions_datasources_and_dashboards() -> None:
    grafana = _resolved()["services"]["grafana"]
    mounts = " ".join(str(v) for v in grafana["volumes"])
    assert "deploy/grafana/provisioning" in mounts and "deploy/grafana/dashboards" in mounts, mounts
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "taskpulse.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert any(f"deploy/grafana/dashboards:{path}" in str(v) for v in grafana["volumes"]), (path, mounts)


# --------------------------------------------------------------------------- Grafana


def _datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "taskpulse.yml").read_text())
    return {d["uid"]: d for d in doc["datasources"]}


def test_grafana_datasources_prometheus_and_clickhouse_plugin() -> None:
    ds = _datasources()
    assert ds["prometheus"]["type"] == "prometheus"
    assert ds["prometheus"]["url"] == "http://prometheus:9090"
    chd = ds["clickhouse"]
    assert chd["type"] == "grafana-clickhouse-datasource"  # the official plugin
    assert chd["jsonData"]["defaultDatabase"] == "taskpulse"
    assert chd["jsonData"]["username"] == "${CLICKHOUSE_READER_USER}"
    assert chd["secureJsonData"]["password"] == "${CLICKHOUSE_READER_PASSWORD}", "no literal password in git"


def test_dashboards_are_generated_and_use_the_provisioned_datasources() -> None:
    uids = set(_datasources())
    expected = dashboards()
    on_disk = {p.name for p in (GRAFANA / "dashboards").glob("*.json")}
    assert on_disk == set(expected), "run `python -m pipeline.dashboards`"
    for name, model in expected.items():
        assert (GRAFANA / "dashboards" / name).read_text() == render(model), (
            f"deploy/grafana/dashboards/{name} is stale: run `python -m pipeline.dashboards`"
        )
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in model["panels"]:
            for t in panel.get("targets", []):
                assert t["datasource"]["uid"] in uids, (name, panel["title"], t["datasource"])
    live = " ".join(p["title"] for p in expected["taskpulse-live.json"]["panels"])
    for title in ("Active tasks", "Online agents", "Completion rate", "Avg response time", "Queued", "Executing",
                  "Reviewing", "Agent grid", "Events/s", "Agent utilization heatmap", "Consumer lag",
                  "DLQ", "ClickHouse write latency"):  # seed 000's layout  # fmt: skip
        assert title in live, title


# --------------------------------------------------------------------------- Prometheus


def test_promtool_accepts_prometheus_config(tmp_path: Path) -> None:
    # A copy next to its rules and a token file where compose mounts the secret: promtool
    # checks that credentials_file exists.
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_CONFIG.parent, copy)
    (copy / "secrets").mkdir(exist_ok=True)
    (copy / "secrets" / "taskpulse_metrics_token").write_text("test-token\n")
    proc = _run([_tool("promtool"), "check", "config", str(copy / PROMETHEUS_CONFIG.name)])
    assert proc.returncode == 0, f"promtool check config failed:\n{_output(proc)}"
    assert "rule files found" in proc.stdout + proc.stderr, _output(proc)


def test_promtool_accepts_every_rule_file() -> None:
    files = sorted(PROMETHEUS_RULES.glob("*.yml"))
    assert len(files) >= 2, files
    proc = _run([_tool("promtool"), "check", "rules", *map(str, files)])
    assert proc.returncode == 0, f"promtool check rules failed:\n{_output(proc)}"


def test_prometheus_scrapes_every_taskpulse_service() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "taskpulse")
    names = {n for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert names == {"worker", "alerting", "metrics"}, names
    assert names <= set(_resolved()["services"])


def test_prometheus_alert_rules_pass_their_unit_tests() -> None:
    tests = sorted(PROMETHEUS_RULE_TESTS.glob("*.test.yml"))
    assert tests, f"no rule tests under {PROMETHEUS_RULE_TESTS}"
    proc = _run([_tool("promtool"), "test", "rules", *map(str, tests)])
    assert proc.returncode == 0, f"promtool test rules failed:\n{_output(proc)}"


# --------------------------------------------------------------------------- Alertmanager


def test_amtool_accepts_alertmanager_config() -> None:
    proc = _run([_tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])
    assert proc.returncode == 0, f"amtool check-config failed:\n{_output(proc)}"


# --------------------------------------------------------------------------- README DDL


def _readme_sql() -> list[str]:
    """Every SQL statement of deploy/README.md's ```sql blocks, comments removed."""
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), re.DOTALL)
    statements = []
    for block in blocks:
        code = "\n".join(ln for ln in block.splitlines() if not ln.lstrip().startswith("--"))
        statements += [s.strip() for s in re.split(r";\s*(?:\n|$)", code) if s.strip()]
    return statements


def _cluster_statement(table: str) -> str:
    for stmt in _readme_sql():
        if stmt.startswith(f"CREATE TABLE IF NOT EXISTS taskpulse.{table}_local "):
            return stmt
    raise AssertionError(f"deploy/README.md has no cluster DDL for taskpulse.{table}_local")


def _single_node(stmt: str) -> str:
    """The README cluster statement as the single-server statement it mirrors."""
    stmt = stmt.replace(" ON CLUSTER '{cluster}'", "")
    stmt = re.sub(r"Replicated(\w*MergeTree)\('[^']*', '\{replica\}'\)", r"\1", stmt)
    stmt = re.sub(r"Replicated(\w*MergeTree)\('[^']*', '\{replica\}', ", r"\1(", stmt)  # engine arguments
    return re.sub(r"\btaskpulse\.(\w+)_local\b", r"taskpulse.\1", stmt)


def _normalized(sql: str) -> str:
    return " ".join(sql.split())


@pytest.mark.parametrize("table", ["events", "rollups", "dlq", "tasks", "task_executions", "agent_status"])
def test_readme_cluster_ddl_mirrors_the_schema(table: str) -> None:
    shipped = [s for s in ddl_statements("taskpulse") if f"TABLE IF NOT EXISTS taskpulse.{table}\n" in s]
    assert len(shipped) == 1, f"pipeline/core/schema.py has no CREATE TABLE taskpulse.{table}"
    readme = _single_node(_cluster_statement(table))
    assert _normalized(readme) == _normalized(shipped[0]), (
        f"deploy/README.md's cluster DDL for {table}_local no longer matches pipeline/core/schema.py; "
        f"update the README (same columns, indexes, projection, ORDER BY, TTL).\n"
        f"README (as single-node):\n{readme}\n\nddl.py:\n{shipped[0]}"
    )


_CLUSTER_CHECK = textwrap.dedent(
    """
    import json, re, sys
    from datetime import UTC, datetime
    statements, cluster_ddl, conn = json.loads(sys.stdin.read())
    try:
        import chdb  # noqa: F401
    except ImportError:
        sys.exit("chdb is not installed: pip install -e '.[worker,embedded]'")
    import clickhouse_connect

    _real = clickhouse_connect.get_client
    clickhouse_connect.get_client = lambda **kw: _real(interface="chdb", path=conn)
    from pipeline.sinks.clickhouse import ClickHouseStore

    store = ClickHouseStore("chdb:///unused", "taskpulse")
    for stmt in statements:  # syntax of every README statement
        store.rows("SELECT formatQuery({q:String})", {"q": stmt})
    for stmt in cluster_ddl:  # Keeper-less stand-in: plain engines, no ON CLUSTER
        stmt = stmt.replace(" ON CLUSTER '{cluster}'", "")
        stmt = re.sub(r"Replicated(\\w*MergeTree)\\('[^']*', '\\{replica\\}'\\)", r"\\1", stmt)
        stmt = re.sub(r"Replicated(\\w*MergeTree)\\('[^']*', '\\{replica\\}', ", r"\\1(", stmt)
        store.command(stmt)
    store.migrate()
    engines = dict(store.rows(
        "SELECT name, engine FROM system.tables WHERE database = 'taskpulse'"))
    store.client.set_client_setting("distributed_foreground_insert", 1)
    t, now = "taskpulse.events.task", datetime.now(UTC).replace(microsecond=0)
    store.insert("events", [["e1", now, t, 3, 40, 0], ["e2", now, t, 3, 41, 0]],
                 ["id", "event_time", "src_topic", "src_partition", "src_offset", "src_index"])
    store.insert("dlq", [[now, "bad", t, 1, 7, 0]],
                 ["received_at", "reason", "src_topic", "src_partition", "src_offset",
                  "src_index"])
    store.insert("rollups", [["1m", now.replace(second=0), 2, {f"{t}:3": 41}]],
                 ["granularity", "window_start", "count", "src_offsets"])
    marks = {k: {f"{tp[0]}:{tp[1]}": o for tp, o in v.items()}
             for k, v in store.watermarks().items()}
    stats = store.rows("SELECT sum(count) FROM taskpulse.rollup_stats")
    print(json.dumps({"engines": engines, "watermarks": marks, "rollup_count": stats[0][0]}))
    """
)

_CLUSTER_CONFIG = """<clickhouse>
  <tcp_port>9000</tcp_port>
  <remote_servers>
    <local_cluster>
      <shard>
        <internal_replication>true</internal_replication>
        <replica><host>localhost</host><port>9000</port></replica>
      </shard>
    </local_cluster>
  </remote_servers>
  <macros><cluster>local_cluster</cluster><shard>01</shard><replica>r1</replica></macros>
</clickhouse>
"""


def test_readme_cluster_ddl_runs_with_migrate_and_watermarks(tmp_path: Path) -> None:
    """The README's cluster schema on a one-shard cluster of one local chDB engine:
    ``taskpulse migrate`` keeps the Distributed tables, and inserts and watermark reads
    go through them."""
    config = tmp_path / "config.xml"
    config.write_text(_CLUSTER_CONFIG)
    conn = f"file:{tmp_path / 'data'}?config-file={config}"
    statements = _readme_sql()
    cluster_ddl = [
        s for s in statements
        if s.startswith(("CREATE DATABASE", "CREATE TABLE")) and "ON CLUSTER" in s
    ]  # fmt: skip
    assert len(cluster_ddl) == 13, cluster_ddl
    proc = subprocess.run(
        [sys.executable, "-c", _CLUSTER_CHECK],
        input=json.dumps([statements, cluster_ddl, conn]),
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"the README cluster DDL failed on chDB:\n{_output(proc)}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    engines = result["engines"]
    assert {engines[t] for t in ("events", "rollups", "dlq", "tasks", "task_executions", "agent_status")} == {
        "Distributed"
    }, engines
    assert engines["tasks_local"] == "ReplacingMergeTree"
    assert engines["events_local"] == "MergeTree"
    assert engines["rollups_local"] == "AggregatingMergeTree"
    assert result["watermarks"] == {
        "events": {"taskpulse.events.task:3": 41},
        "dlq": {"taskpulse.events.task:1": 7},
        "rollups": {"taskpulse.events.task:3": 41},
    }
    assert result["rollup_count"] == 2


def test_the_api_binds_every_interface_only_with_tokens_and_prometheus_sends_one() -> None:
    services = _resolved()["services"]
    for name in ("worker", "alerting", "metrics"):
        env = services[name]["environment"]
        assert env["TASKPULSE_API_HOST"] == "0.0.0.0"
        assert env["TASKPULSE_API_TOKEN"] and env["TASKPULSE_API_METRICS_TOKEN"], name
        assert "TASKPULSE_API_TOKEN" in " ".join(services[name]["healthcheck"]["test"])
    jobs = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    job = next(j for j in jobs if j["job_name"] == "taskpulse")
    token_file = "/etc/prometheus/" + job["authorization"]["credentials_file"]
    entrypoint = " ".join(services["prometheus"]["entrypoint"])
    assert f"> {token_file}" in entrypoint and "TASKPULSE_METRICS_TOKEN" in entrypoint
    assert services["prometheus"]["environment"]["TASKPULSE_METRICS_TOKEN"]


@pytest.mark.parametrize("service", ["migrate", "worker", "alerting", "metrics", "api"])
def test_every_setting_reaches_the_taskpulse_services_and_parses(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-compose passes each TASKPULSE_* of .env (pipeline/envfile.py) and Settings reads
    what it resolves to; the webhook URL only reaches the alerting service."""
    from pipeline.envfile import COMPOSE_SETS, NOT_PASSED, env_name
    from pipeline.settings import Settings

    env = {k: str(v) for k, v in (_resolved()["services"][service].get("environment") or {}).items()}
    expected = {env_name(f) for f in Settings.model_fields if f not in NOT_PASSED and f not in COMPOSE_SETS}
    assert not expected - set(env), f"{service} lacks {sorted(expected - set(env))}: run `taskpulse schemas`"
    assert ("TASKPULSE_ALERT_WEBHOOK_URL" in env) == (service == "alerting")
    for key in [k for k in os.environ if k.startswith("TASKPULSE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    Settings()
