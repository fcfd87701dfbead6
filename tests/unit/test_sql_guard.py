"""The analyst query check on real parse trees (the shapes chDB's parseQueryToJSON and
EXPLAIN AST give; the integration tests run the same queries through the engine)."""

from __future__ import annotations

import json

import pytest

from pipeline.core.sql_guard import QueryRefused, check_ast_text, check_json_ast

TABLE_FUNCTIONS = frozenset({"file", "url", "s3", "remote", "numbers", "format", "executable", "merge", "view"})


def _select(**extra: object) -> dict[str, object]:
    return {"type": "SelectWithUnionQuery", "list_of_selects": {"type": "ExpressionList", "children": [
        {"type": "SelectQuery", **extra}]}}  # fmt: skip


def _table_function(name: str) -> dict[str, object]:
    return {"type": "TablesInSelectQuery", "children": [{"type": "TablesInSelectQueryElement", "table_expression": {
        "type": "TableExpression", "table_function": {"type": "Function", "name": name}}}]}  # fmt: skip


def check(tree: dict[str, object]) -> None:
    check_json_ast(json.dumps(tree), TABLE_FUNCTIONS)


def test_plain_selects_and_allowed_table_functions_pass() -> None:
    check(_select(tables=_table_function("numbers")))
    check(_select(select={"type": "Function", "name": "format"}))  # the scalar format() is harmless
    check({"type": "ShowTablesQuery"})


@pytest.mark.parametrize("name", ["file", "FILE", "url", "s3", "remote", "executable", "merge", "brandNewLake"])
def test_table_functions_outside_the_allow_list_are_refused(name: str) -> None:
    with pytest.raises(QueryRefused, match=f"table function {name}\\(\\) is not allowed"):
        check(_select(tables=_table_function(name)))


@pytest.mark.parametrize("name", ["file", "dictGet", "dictGetString", "url"])
def test_functions_that_read_outside_are_refused_anywhere(name: str) -> None:
    where = {"type": "Function", "name": "in", "arguments": {"type": "ExpressionList", "children": [
        {"type": "Identifier", "name": "a"}, {"type": "Function", "name": name}]}}  # fmt: skip
    with pytest.raises(QueryRefused, match=f"{name}\\(\\) is not allowed"):
        check(_select(where=where))


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"type": "InsertQuery"}, "this is a INSERT statement"),
        ({"type": "CreateQuery"}, "CREATE statement"),
        ({"type": "ExplainQuery", "query": {"type": "InsertQuery"}}, "EXPLAIN is allowed for SELECT queries only"),
        ({**_select(), "out_file": {"type": "Literal"}}, "INTO OUTFILE"),
        ({**_select(), "settings_ast": {"type": "SetQuery", "changes": []}}, "SETTINGS clause is not allowed"),
        ({**_select(), "format_ast": {"type": "Identifier", "name": "CSV"}}, "FORMAT clause"),
    ],
)
def test_other_statements_and_clauses_are_refused(tree: dict[str, object], message: str) -> None:
    with pytest.raises(QueryRefused, match=message):
        check(tree)


def test_describe_is_checked_from_explain_ast() -> None:
    check_ast_text(["DescribeQuery (children 2)", " TableExpression (children 1)", "  TableIdentifier t.x"])
    with pytest.raises(QueryRefused, match="table function file"):
        check_ast_text(["DescribeQuery (children 2)", " TableExpression (children 1)", "  Function file (children 1)"])
    with pytest.raises(QueryRefused, match="SYSTEM statement"):
        check_ast_text(["SystemQuery"])


def _from_table(*parts: str) -> dict[str, object]:
    return {"type": "TablesInSelectQuery", "children": [{"type": "TablesInSelectQueryElement", "table_expression": {
        "type": "TableExpression", "database_and_table_name": {"type": "TableIdentifier", "name": ".".join(parts),
                                                               "name_parts": list(parts)}}}]}  # fmt: skip


@pytest.mark.parametrize("table", ["processes", "users", "disks", "stack_trace", "server_settings", "query_log"])
def test_system_tables_that_leak_are_refused(table: str) -> None:
    with pytest.raises(QueryRefused, match=f"system.{table} is not readable here"):
        check(_select(tables=_from_table("system", table)))
    # also as the right side of IN (an Identifier, not a TableIdentifier)
    with pytest.raises(QueryRefused, match=f"system.{table} is not readable here"):
        check(_select(where={"type": "Function", "name": "in", "arguments": {"type": "ExpressionList", "children": [
            {"type": "Literal"}, {"type": "Identifier", "name": f"system.{table}", "name_parts": ["system", table]}]}}))


@pytest.mark.parametrize("table", ["tables", "columns", "parts", "one", "numbers"])
def test_catalogue_system_tables_and_taskpulse_tables_pass(table: str) -> None:
    check(_select(tables=_from_table("system", table)))
    check(_select(tables=_from_table("taskpulse", "events")))
    check(_select(tables=_from_table("events")))
