"""Test-only fault injection at the ClickHouse client boundary.

chDB runs in-process and cannot "go down", so the worker under test is started through
this module: while the file named by TASKPULSE_TEST_CH_FAULT exists, every call of the
clickhouse-connect client raises the client's own connection error (OperationalError),
exactly what a real unreachable server produces.

While the file named by TASKPULSE_TEST_CH_STRUCTURAL exists, the real engine is made to
refuse every write for a structural reason: the ``events`` table's ``agent`` column is
renamed (an ALTER run through the client itself) and renamed back once the file is gone.

When the file named by TASKPULSE_TEST_CORRELATE_PUBLISH exists, the correlation role's next
Kafka publish (lifecycle records, emitted events) raises what aiokafka raises when its buffer
stays full (``KafkaTimeoutError``: not an outage the sink retry knows), once; the file is
removed then.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _defining(name: str) -> list[type]:
    """The client classes that define method ``name`` (a subclass may override its base's:
    ``command`` is the backend client's own), so that a patch reaches every call."""
    from clickhouse_connect.driver import _backendclient
    from clickhouse_connect.driver import client as ch_client

    return [c for c in (ch_client.Client, _backendclient.SyncBackendClient) if name in vars(c)]


def install() -> None:
    from clickhouse_connect.driver.exceptions import OperationalError

    flag = os.environ.get("TASKPULSE_TEST_CH_FAULT", "/nonexistent/taskpulse-fault")

    def wrap(cls: type, name: str) -> None:
        original = vars(cls)[name]

        def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
            if os.path.exists(flag):
                raise OperationalError(
                    "Error HTTPConnectionPool(host='clickhouse', port=8123): "
                    "Max retries exceeded (Connection refused) [injected by test]"
                )
            return original(self, *args, **kwargs)

        setattr(cls, name, failing)

    for name in ("insert", "query", "command"):
        for cls in _defining(name):
            wrap(cls, name)
    if os.environ.get("TASKPULSE_TEST_CH_STRUCTURAL"):
        _install_structural(os.environ["TASKPULSE_TEST_CH_STRUCTURAL"])
    if os.environ.get("TASKPULSE_TEST_CORRELATE_PUBLISH"):
        _install_publish_fault(os.environ["TASKPULSE_TEST_CORRELATE_PUBLISH"])


def _install_publish_fault(flag: str) -> None:
    from aiokafka.errors import KafkaTimeoutError

    from pipeline.roles import correlate

    original = correlate._Role._publish

    async def publish(self: Any, messages: Any) -> None:
        if os.path.exists(flag):  # noqa: ASYNC240 - a test's flag file
            os.unlink(flag)
            raise KafkaTimeoutError("Batch for TopicPartition is full [injected by test]")
        await original(self, messages)

    correlate._Role._publish = publish  # type: ignore[method-assign]


def _install_structural(flag: str) -> None:
    [insert_cls] = _defining("insert")
    command_cls = _defining("command")[-1]  # the most derived: the one a call reaches
    original_insert, original_command = vars(insert_cls)["insert"], vars(command_cls)["command"]
    state = {"renamed": False}

    def follow(self: Any) -> None:
        want = os.path.exists(flag)
        if want != state["renamed"]:
            a, b = ("agent", "agent_gone") if want else ("agent_gone", "agent")
            original_command(self, f"ALTER TABLE taskpulse.events RENAME COLUMN {a} TO {b}")
            state["renamed"] = want

    def insert(self: Any, table: str, *args: Any, **kwargs: Any) -> Any:
        follow(self)
        return original_insert(self, table, *args, **kwargs)

    def command(self: Any, cmd: str, *args: Any, **kwargs: Any) -> Any:
        if cmd.startswith("INSERT"):  # the events table's rows go as JSONEachRow lines (a command)
            follow(self)
        return original_command(self, cmd, *args, **kwargs)

    setattr(insert_cls, "insert", insert)  # noqa: B010
    setattr(command_cls, "command", command)  # noqa: B010


if __name__ == "__main__":
    install()
    from pipeline.cli import main

    sys.argv = ["taskpulse", *sys.argv[1:]]
    main()
