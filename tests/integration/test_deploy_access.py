"""Least privilege in server mode, checked statically: the ClickHouse users file that
docker-compose.yml mounts (deploy/clickhouse/users.d/taskpulse.xml), the services' ClickHouse
URLs and users, and Grafana's datasource.

The users and grants cannot run here: there is no ClickHouse server, and chDB (in-process)
has no access control to log in with (``CREATE USER`` is refused).  So the file is parsed
and checked, each GRANT is parsed by the ClickHouse engine itself (chDB's
``formatQuery``), and the grants are compared with what the shipped schema needs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from pipeline.core.schema import ddl_statements, ttl_targets
from tests.integration.test_deploy import ENV_EXAMPLE, GRAFANA, ROOT, _env_example, _resolved

pytestmark = pytest.mark.integration

USERS_FILE = ROOT / "deploy" / "clickhouse" / "users.d" / "taskpulse.xml"
WRITER, READER = "taskpulse_writer", "taskpulse_reader"
PRIVATE_NETWORKS = {"127.0.0.1", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"}
#: privileges neither user may hold: destroying data, leaving the database, reaching files,
#: hosts or processes, managing access, server administration
FORBIDDEN = {
    "ALL", "DROP", "DROP TABLE", "DROP DATABASE", "TRUNCATE", "ALTER", "ALTER TABLE", "ALTER DELETE",
    "ALTER UPDATE", "ACCESS MANAGEMENT", "CREATE USER", "ROLE ADMIN", "SYSTEM", "SOURCES", "FILE", "URL",
    "REMOTE", "S3", "INTROSPECTION", "KILL QUERY", "dictGet", "CREATE DICTIONARY", "CREATE TEMPORARY TABLE",
}  # fmt: skip


def _users() -> ET.Element:
    return ET.parse(USERS_FILE).getroot()  # noqa: S314 - our own file


def _user(name: str) -> ET.Element:
    user = _users().find(f"users/{name}")
    assert user is not None, f"{USERS_FILE.name} defines no user {name}"
    return user


def _grants(name: str) -> list[tuple[set[str], str]]:
    """Each GRANT of a user as (privileges, ON target)."""
    out = []
    for q in _user(name).findall("grants/query"):
        m = re.fullmatch(r"GRANT (.+) ON (\S+)", " ".join((q.text or "").split()))
        assert m, f"{name}: not a plain GRANT … ON …: {q.text!r}"
        out.append(({p.strip() for p in m.group(1).split(",")}, m.group(2)))
    return out


def _profile(name: str) -> ET.Element:
    profile = _users().find(f"profiles/{name}")
    assert profile is not None, f"no profile {name}"
    return profile


def test_users_are_exactly_admin_writer_and_reader() -> None:
    assert {u.tag for u in _users().find("users") or []} == {"default", WRITER, READER}


@pytest.mark.parametrize("name", ["default", WRITER, READER])
def test_passwords_come_from_the_environment_never_from_the_file(name: str) -> None:
    user = _user(name)
    password = user.find("password")
    assert password is not None and password.get("from_env"), f"{name}: <password from_env=…/> expected"
    assert not (password.text or "").strip(), f"{name}: a literal password in git"
    for tag in ("password_sha256_hex", "password_double_sha1_hex", "no_password"):
        assert user.find(tag) is None, f"{name}: <{tag}> in git"


def test_password_variables_reach_the_clickhouse_container() -> None:
    env = _resolved()["services"]["clickhouse"]["environment"]
    wanted = {p.get("from_env") for p in _users().iter("password")}
    assert wanted <= set(env), f"from_env variables the clickhouse service does not set: {wanted - set(env)}"
    assert all(env[v] for v in wanted)
    assert env.get("CLICKHOUSE_SKIP_USER_SETUP") == "1", "the image's own set-up opens `default` to the network"
    assert "CLICKHOUSE_USER" not in env and "CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT" not in env


def test_default_user_is_reachable_from_inside_the_container_only() -> None:
    networks = _user("default").find("networks")
    assert networks is not None and networks.get("replace") == "replace", "must replace the stock ::/0"
    assert {ip.text for ip in networks} == {"127.0.0.1", "::1"}
    assert _user("default").find("access_management") is None


@pytest.mark.parametrize("name", [WRITER, READER])
def test_service_users_accept_loopback_and_private_networks_only(name: str) -> None:
    networks = _user(name).find("networks")
    assert networks is not None
    assert {ip.text for ip in networks} == PRIVATE_NETWORKS
    assert not [n for n in networks if n.tag != "ip"], "host / host_regexp entries widen the networks"


def test_writer_can_create_the_schema_and_write_nothing_else() -> None:
    grants = _grants(WRITER)
    on_db = set().union(*(privs for privs, target in grants if target == "taskpulse.*"))
    global_ = set().union(*(privs for privs, target in grants if target == "*.*"))
    # the Null-engine twins (_probe_*, no data) are replaced at every migration
    assert [privs for privs, target in grants if target == "taskpulse._probe_*"] == [{"DROP TABLE"}]
    assert {target for _, target in grants} == {"taskpulse.*", "*.*", "taskpulse._probe_*"}
    assert global_ == {"CREATE FUNCTION"}, "the only global privilege: the schema's SQL functions"
    assert {"INSERT", "SELECT"} <= on_db
    assert not (on_db | global_) & FORBIDDEN, (on_db | global_) & FORBIDDEN
    # every kind of statement the shipped schema runs is granted: every migration step, the
    # TTL changes of the retention settings, the record of each step
    assert _privileges_needed() <= on_db | global_, _privileges_needed() - (on_db | global_)
    assert "INSERT" in on_db, "migrate records each step in taskpulse.schema_migrations"
    assert _user(WRITER).findtext("profile") == WRITER


#: statement → the privilege it needs (ClickHouse's names)
_KINDS = [
    (r"CREATE DATABASE", "CREATE DATABASE"), (r"CREATE (?:OR REPLACE )?TABLE", "CREATE TABLE"),
    (r"CREATE (?:OR REPLACE )?VIEW", "CREATE VIEW"), (r"CREATE FUNCTION", "CREATE FUNCTION"),
    (r"ALTER TABLE \S+ ADD COLUMN", "ALTER ADD COLUMN"),
    (r"ALTER TABLE \S+ (?:ADD|DROP) PROJECTION", "ALTER PROJECTION"),
    (r"ALTER TABLE \S+ MODIFY TTL", "ALTER TTL"),
    (r"ALTER TABLE \S+ MODIFY SETTING", "ALTER SETTINGS"),
]  # fmt: skip


def _privileges_needed() -> set[str]:
    """The privileges the shipped schema's statements need, each statement matched to one."""
    ttl = [f"ALTER TABLE taskpulse.{t} MODIFY TTL {e}" for t, e in ttl_targets().items()]
    statements = [*ddl_statements("taskpulse"), *ttl]
    needed = set()
    for stmt in statements:
        kinds = [priv for pattern, priv in _KINDS if re.match(rf"\s*{pattern}\b", stmt)]
        assert kinds, f"a schema statement of a kind this test does not know: {stmt[:120]!r}"
        needed.add(kinds[0])
    return needed


def test_reader_selects_taskpulse_only_with_readonly_and_limits() -> None:
    assert _grants(READER) == [({"SELECT"}, "taskpulse.*")]
    profile_name = _user(READER).findtext("profile")
    assert profile_name == "taskpulse_readonly"
    profile = _profile(profile_name)
    assert profile.findtext("readonly") == "1", "readonly = 2 would let the reader change settings"
    assert profile.findtext("allow_ddl") == "0"
    limits = {c.tag: c.text for c in profile if c.tag != "constraints"}
    for name in ("max_execution_time", "max_result_rows", "max_result_bytes", "max_memory_usage", "max_rows_to_read"):
        assert int(limits[name] or 0) > 0, f"{name} must be a positive limit"
    constraints = profile.find("constraints")
    assert constraints is not None
    assert constraints.find("readonly") is None and constraints.find("allow_ddl") is None
    for c in constraints:
        if c.tag in limits and c.tag.startswith("max_"):
            maximum = c.findtext("max")
            assert maximum is not None, f"{c.tag} is changeable without a maximum"
            assert int(maximum) >= int(limits[c.tag] or 0), f"{c.tag}: the default exceeds its own maximum"
        assert c.tag in limits, f"constraint on {c.tag}, which the profile does not set"


def test_every_grant_parses_in_clickhouse() -> None:
    """ClickHouse's own parser (chDB's formatQuery) accepts each GRANT (``TO`` added: in a users
    file the user is implied)."""
    queries = [q.text for name in (WRITER, READER) for q in _user(name).findall("grants/query")]
    code = (
        "import json, sys, chdb\n"
        "for q in json.loads(sys.stdin.read()):\n"
        "    chdb.query('SELECT formatQuery(' + repr(q + ' TO someone') + ')')\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(queries), capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


# --------------------------------------------------------------------------- compose and Grafana


def _clickhouse_users(services: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(service, variable) → the ClickHouse user a service connects as."""
    out = {}
    for name, spec in services.items():
        for key, value in (spec.get("environment") or {}).items():
            if re.fullmatch(r"TASKPULSE_CLICKHOUSE(_READ)?_URL", key):
                out[(name, key)] = urlparse(str(value)).username or "default"
            elif key.endswith("_USER") and "CLICKHOUSE" in key:
                out[(name, key)] = str(value)
    return out


def test_no_service_uses_the_default_user() -> None:
    services = _resolved()["services"]
    users = _clickhouse_users(services)
    assert users, "no service connects to ClickHouse?"
    assert "default" not in users.values(), {k: v for k, v in users.items() if v == "default"}
    for (service, key), user in users.items():
        if key == "TASKPULSE_CLICKHOUSE_URL":
            assert user == WRITER, (service, user)
        else:
            assert user == READER, (service, key, user)
    taskpulse = [n for n, s in services.items() if s.get("command") in (["worker"], ["migrate"])]
    for name in taskpulse:
        env = services[name]["environment"]
        assert env["TASKPULSE_CLICKHOUSE_READ_URL"] and env["TASKPULSE_CLICKHOUSE_READ_PASSWORD"], name
        assert env["TASKPULSE_CLICKHOUSE_PASSWORD"] != env["TASKPULSE_CLICKHOUSE_READ_PASSWORD"], name


def test_compose_mounts_the_users_file_read_only() -> None:
    mounts = [str(v) for v in _resolved()["services"]["clickhouse"]["volumes"]]
    text = " ".join(mounts)
    assert "deploy/clickhouse/users.d/taskpulse.xml" in text and "/etc/clickhouse-server/users.d/taskpulse.xml" in text
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert any(str(v).startswith("./deploy/clickhouse/users.d/") and str(v).endswith(":ro")
               for v in raw["services"]["clickhouse"]["volumes"])  # fmt: skip


def test_grafana_reads_as_the_reader() -> None:
    env = _resolved()["services"]["grafana"]["environment"]
    assert env["CLICKHOUSE_READER_USER"] == READER
    assert env["CLICKHOUSE_READER_PASSWORD"] == _env_example()["CLICKHOUSE_READER_PASSWORD"]
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "taskpulse.yml").read_text())
    (ch,) = [d for d in doc["datasources"] if d["uid"] == "clickhouse"]
    assert ch["jsonData"]["username"] == "${CLICKHOUSE_READER_USER}"


def test_no_default_user_anywhere_in_the_shipped_configuration() -> None:
    for path in [ROOT / "docker-compose.yml", ENV_EXAMPLE, *Path(GRAFANA / "provisioning").rglob("*.yml")]:
        text = path.read_text()
        assert not re.search(r"//default[@:]|CLICKHOUSE_USER:\s*default", text), f"{path}: connects as default"
