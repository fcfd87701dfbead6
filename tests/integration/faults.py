"""Test-only fault injection at the ClickHouse client boundary.

chDB runs in-process and cannot "go down", so the worker under test is started through
this module: while the file named by TASKPULSE_TEST_CH_FAULT exists, every call of the
clickhouse-connect client raises the client's own connection error (OperationalError),
exactly what a real unreachable server produces.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def install() -> None:
    from clickhouse_connect.driver import client as ch_client
    from clickhouse_connect.driver.exceptions import OperationalError

    flag = os.environ["TASKPULSE_TEST_CH_FAULT"]

    def wrap(name: str) -> None:
        original = getattr(ch_client.Client, name)

        def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
            if os.path.exists(flag):
                raise OperationalError(
                    "Error HTTPConnectionPool(host='clickhouse', port=8123): "
                    "Max retries exceeded (Connection refused) [injected by test]"
                )
            return original(self, *args, **kwargs)

        setattr(ch_client.Client, name, failing)

    for name in ("insert", "query", "command"):
        wrap(name)


if __name__ == "__main__":
    install()
    from pipeline.cli import main

    sys.argv = ["taskpulse", *sys.argv[1:]]
    main()
