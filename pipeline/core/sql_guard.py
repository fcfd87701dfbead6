"""Which analyst queries may run: the check of a query's syntax tree.  Pure.

The engine parses the query (``parseQueryToJSON``; ``EXPLAIN AST`` text for the statements
it cannot serialise); this module walks the tree and refuses, with a reason:

- any statement but SELECT (UNION / INTERSECT / EXCEPT), SHOW, DESCRIBE, EXISTS, EXPLAIN;
- a table function outside a short allow list (deny by default: ``file``, ``url``, ``s3``,
  ``remote``, ``executable``, ``input``, ``mysql``, … and whatever a new version adds);
- a function that reads files or external sources (``file()``, ``dictGet*``, …) or any
  table function's name used elsewhere (``x IN url(…)``);
- a ``system`` table outside a short allow list (``system.processes`` shows other sessions'
  queries, ``system.disks`` the data path…): catalogue tables (tables, columns, parts, …) only;
- ``INTO OUTFILE``, a ``SETTINGS`` clause (the limits are the server's, not the query's)
  and ``FORMAT`` (the client chooses the format).

This is the first layer.  The second is the engine's own: analyst queries run on a
session that is ``readonly=1`` with time, row and byte limits, which refuses writes, DDL,
``SET`` and every setting change whatever the text of the query.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

#: Table functions an analyst may use: generated data and sub-queries only.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "values", "generate_series", "generateseries", "generaterandom", "view", "null",
     "primes"}
)  # fmt: skip

#: Scalar functions that read files, dictionaries (external sources) or models on disk.
DENIED_FUNCTIONS = frozenset({"file", "catboostevaluate", "getserversetting", "getmacro"})
DENIED_FUNCTION_PREFIXES = ("dictget", "dicthas", "dictisin", "naivebayes")

#: ``system`` tables an analyst may read: the catalogue and generated data; the others show
#: other sessions' queries, users, paths, stack traces or server settings.
ALLOWED_SYSTEM_TABLES = frozenset(
    {"one", "numbers", "numbers_mt", "zeros", "zeros_mt", "databases", "tables", "columns", "parts",
     "parts_columns", "functions", "table_functions", "data_type_families", "formats", "time_zones"}
)  # fmt: skip

#: Names of both a scalar function and a table function that are harmless as scalars.
SCALAR_NAMESAKES = frozenset({"format"})

_SELECTS = frozenset({"SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery"})
_JSON_STATEMENTS = _SELECTS | {"ShowTablesQuery", "ExplainQuery"}
_TEXT_STATEMENTS = frozenset({"DescribeQuery", "ShowCreateTableQuery", "ExistsTableQuery", "ShowTables"})

#: parseQueryToJSON's answer for statements it cannot serialise (then EXPLAIN AST is used).
NOT_SERIALIZABLE = "does not support JSON serialization"


class QueryRefused(ValueError):
    """The query is not allowed; the message says why and what is allowed."""


#: The table functions this server knows (anything not allowed is refused by name, as a
#: table function or elsewhere).
TABLE_FUNCTIONS_QUERY = "SELECT lower(name) FROM system.table_functions"


def ast_json_query(sql: str) -> tuple[str, dict[str, Any]]:
    """The query that parses ``sql`` into the JSON tree ``check_json_ast`` reads."""
    return "SELECT parseQueryToJSON({q:String})", {"q": sql}


def explain_ast_query(sql: str) -> str:
    """The ``EXPLAIN AST`` text of ``sql`` for ``check_ast_text`` (statements the JSON form
    cannot serialise); the statement is the analyst's query itself, so it cannot be a
    parameter: it is parsed, never run."""
    return f"EXPLAIN AST {sql}"


def _refuse(reason: str) -> QueryRefused:
    return QueryRefused(f"query refused: {reason}")


def _nodes(node: Any, key: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every dict in the tree with the key it hangs from."""
    if isinstance(node, dict):
        yield key, node
        for k, v in node.items():
            yield from _nodes(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _nodes(v, key)


def _function_refusal(name: str, as_table: bool, table_functions: frozenset[str]) -> str | None:
    low = name.lower()
    if as_table:
        if low in ALLOWED_TABLE_FUNCTIONS:
            return None
        return (
            f"table function {name}() is not allowed (it can reach files, processes or the network); "
            f"allowed: {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}"
        )
    if low in DENIED_FUNCTIONS or low.startswith(DENIED_FUNCTION_PREFIXES):
        return f"function {name}() is not allowed (it reads files or external sources)"
    if low in table_functions and low not in ALLOWED_TABLE_FUNCTIONS and low not in SCALAR_NAMESAKES:
        return f"table function {name}() is not allowed (it can reach files, processes or the network)"
    return None


def _system_table_refusal(parts: Any) -> str | None:
    if not isinstance(parts, list) or len(parts) != 2 or str(parts[0]).lower() != "system":
        return None
    if str(parts[1]).lower() in ALLOWED_SYSTEM_TABLES:
        return None
    return (
        f"system.{parts[1]} is not readable here (it can show other sessions' queries, users, paths or "
        f"server settings); system tables allowed: {', '.join(sorted(ALLOWED_SYSTEM_TABLES))}"
    )


def check_json_ast(ast_json: str, table_functions: frozenset[str] = frozenset()) -> None:
    """Raise ``QueryRefused`` unless the query (``parseQueryToJSON``'s output) may run.
    ``table_functions``: the engine's table function names, lower case."""
    tree = json.loads(ast_json)
    kind = str(tree.get("type", ""))
    if kind not in _JSON_STATEMENTS:
        raise _refuse(f"only SELECT, SHOW, DESCRIBE, EXISTS and EXPLAIN run here (this is a {_statement(kind)})")
    if kind == "ExplainQuery" and str((tree.get("query") or {}).get("type", "")) not in _SELECTS:
        raise _refuse("EXPLAIN is allowed for SELECT queries only")
    for key, node in _nodes(tree):
        if key == "out_file" or node.get("is_into_outfile_with_stdout"):
            raise _refuse("INTO OUTFILE writes a file; it is not allowed")
        if key == "settings_ast" or node.get("type") == "SetQuery":
            raise _refuse(
                "a SETTINGS clause is not allowed: analyst queries run with the server's limits "
                "(TASKPULSE_SQL_MAX_EXECUTION_S, TASKPULSE_SQL_MAX_RESULT_ROWS, TASKPULSE_SQL_MAX_RESULT_BYTES)"
            )
        if key == "format_ast":
            raise _refuse("a FORMAT clause is not allowed (choose the output with --format)")
        if node.get("type") in ("TableIdentifier", "Identifier"):
            reason = _system_table_refusal(node.get("name_parts"))
            if reason:
                raise _refuse(reason)
        if node.get("type") == "Function":
            reason = _function_refusal(str(node.get("name", "")), key == "table_function", table_functions)
            if reason:
                raise _refuse(reason)


_AST_LINE = re.compile(r"^(?P<indent> *)(?P<type>\w+)(?: (?P<rest>.*?))?(?: \(children \d+\))?$")


def check_ast_text(explain_lines: list[str], table_functions: frozenset[str] = frozenset()) -> None:
    """The check for statements ``parseQueryToJSON`` cannot serialise (DESCRIBE, SHOW CREATE,
    EXISTS), from ``EXPLAIN AST`` lines: the statement kind, and no function at all."""
    parsed = [m for line in explain_lines if (m := _AST_LINE.match(line.rstrip()))]
    if not parsed:
        raise _refuse("the query could not be checked")
    kind = parsed[0].group("type")
    if kind not in _TEXT_STATEMENTS:
        raise _refuse(f"only SELECT, SHOW, DESCRIBE, EXISTS and EXPLAIN run here (this is a {_statement(kind)})")
    for m in parsed[1:]:
        if m.group("type") == "Function":
            name = (m.group("rest") or "").split(" ")[0]
            reason = _function_refusal(name, True, table_functions)
            if reason:
                raise _refuse(reason)


def _statement(kind: str) -> str:
    """``InsertQuery`` → ``INSERT``-ish words for the refusal message."""
    words = re.sub(r"(Query|Table)$", "", kind) or "statement"
    return re.sub(r"(?<!^)([A-Z])", r" \1", words).upper() + " statement"


__all__ = [
    "ALLOWED_SYSTEM_TABLES", "ALLOWED_TABLE_FUNCTIONS", "NOT_SERIALIZABLE", "QueryRefused", "check_ast_text",
    "check_json_ast",
]  # fmt: skip
