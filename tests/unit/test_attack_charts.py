"""Attack: names from the events (agents, task types) as chart text in the HTML report."""

from __future__ import annotations

import html

import pytest

from pipeline import charts

#: agent names any producer may send: a mathtext pair matplotlib cannot parse, a price, markup,
#: and a leading underscore (matplotlib's "leave me out of the legend")
NAMES = ["a^$_$", "cost $5 or $6", "<script>alert(1)</script>", "_bot"]


@pytest.mark.parametrize("name", NAMES)
def test_an_agent_name_is_drawn_as_it_is_written(name: str) -> None:
    # an agent named "a^$_$" made matplotlib raise (mathtext) and failed every report
    for svg in (
        charts.bars("Success rate per agent", [name, "b"], [0.5, 1.0], percent=True),
        charts.reliability_diagram({name: [(0.7, 0.5, 3)], "b": [(0.2, 0.4, 2)]}),
        charts.time_series("Tasks", [0, 3_600_000], {name: [1.0, 2.0], "b": [2.0, 1.0]}),
    ):  # fmt: skip
        assert html.escape(name, quote=False) in svg, svg[-3000:]
        assert "<script>" not in svg
