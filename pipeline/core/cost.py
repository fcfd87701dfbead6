"""What a task cost: the usage an event reports (``metrics.cost`` in a currency, or token
counts by model) and the price table that turns tokens into money.  A shared core module
(the tasks domain sums usage per task, the analytics domain reads the sums).  Pure: the
price table arrives as text (``TASKPULSE_PRICES``: inline JSON / YAML, or the contents of
the file it names, read by the caller).

Accepted usage shapes in an event's ``metrics`` (any combination; several events of a task
add up, each event id counted once by the task's history):

- ``{"cost": 0.012, "currency": "USD"}`` (``cost_currency`` also accepted; no currency: the
  price table's);
- ``{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 300}`` (``prompt_tokens`` /
  ``completion_tokens`` also accepted; ``tokens`` / ``total_tokens`` alone count as input);
- ``{"tokens": {"gpt-4o": {"input": 1200, "output": 300}, "claude": 500}}`` (per model: a
  number is input tokens).

An event that reports ``cost`` is taken at its word (its tokens are not priced again).

Price table::

    currency: USD
    models:
      gpt-4o: {input_per_1m: 2.5, output_per_1m: 10}
      claude-sonnet: {input_per_1m: 3, output_per_1m: 15}

(``input_per_1k`` / ``output_per_1k`` also accepted).  Tokens of a model missing from the
table have no price: they are counted (``unpriced_tokens``), never guessed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

#: usage of one event or one task: ``cost`` reported in ``currency``, tokens per model [in, out]
Usage = dict[str, Any]


@dataclass(frozen=True)
class ModelPrice:
    """Currency units per token, input and output."""

    input: float
    output: float


@dataclass(frozen=True)
class PriceTable:
    currency: str = "USD"
    models: dict[str, ModelPrice] = field(default_factory=dict)

    def price(self, model: str, tokens_in: int, tokens_out: int) -> float | None:
        """The cost of these tokens, or None when the model has no price."""
        p = self.models.get(model)
        if p is None:
            return None
        return tokens_in * p.input + tokens_out * p.output


class PriceTableError(ValueError):
    """The price table cannot be read; the message names the entry and the expected form."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        f = float(value)
        return f if math.isfinite(f) and f >= 0 else None
    if isinstance(value, str):
        try:
            return _number(float(value))
        except ValueError:
            return None
    return None


def _per_token(entry: dict[str, Any], side: str, model: str) -> float:
    for unit, scale in (("1m", 1e-6), ("1k", 1e-3)):
        key = f"{side}_per_{unit}"
        if key in entry:
            v = _number(entry[key])
            if v is None:
                raise PriceTableError(f"price table: models.{model}.{key} must be a number ≥ 0, got {entry[key]!r}")
            return v * scale
    return 0.0


def parse_prices(text: str) -> PriceTable:
    """The price table in ``text`` (JSON or YAML); an empty text is an empty table."""
    if not text.strip():
        return PriceTable()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PriceTableError(f"price table: not JSON or YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise PriceTableError("price table: expected a mapping with 'currency' and 'models'")
    models = doc.get("models") or {}
    if not isinstance(models, dict):
        raise PriceTableError("price table: 'models' must map a model name to {input_per_1m, output_per_1m}")
    out: dict[str, ModelPrice] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise PriceTableError(
                f"price table: models.{name} must be a mapping such as {{input_per_1m: 2.5, output_per_1m: 10}}"
            )
        out[str(name)] = ModelPrice(_per_token(entry, "input", str(name)), _per_token(entry, "output", str(name)))
    return PriceTable(str(doc.get("currency") or "USD"), out)


def _count(value: Any) -> int:
    n = _number(value)
    return int(n) if n is not None else 0


#: the keys ``usage_of`` reads a usage from (the currency and model only qualify them)
_USAGE_KEYS = frozenset({"cost", "input_tokens", "prompt_tokens", "output_tokens", "completion_tokens", "tokens",
                         "total_tokens"})  # fmt: skip


def usage_of(metrics: dict[str, Any] | None) -> Usage:
    """The usage one event's ``metrics`` reports (empty: none), compact: ``{"cost": float,
    "cur": str, "tok": {model: [in, out]}}``."""
    if not metrics or _USAGE_KEYS.isdisjoint(metrics):
        return {}
    out: Usage = {}
    cost = _number(metrics.get("cost"))
    if cost is not None:
        out["cost"] = cost
        cur = metrics.get("currency") or metrics.get("cost_currency")
        if isinstance(cur, str) and cur:
            out["cur"] = cur[:16]
    tok: dict[str, list[int]] = {}
    model = metrics.get("model")
    tin = _count(metrics.get("input_tokens", metrics.get("prompt_tokens")))
    tout = _count(metrics.get("output_tokens", metrics.get("completion_tokens")))
    if not tin and not tout and not isinstance(metrics.get("tokens"), dict):
        tin = _count(metrics.get("tokens", metrics.get("total_tokens")))
    if tin or tout:
        tok[str(model or "")[:128]] = [tin, tout]
    per_model = metrics.get("tokens")
    if isinstance(per_model, dict):
        for m, v in list(per_model.items())[:64]:
            if isinstance(v, dict):
                pair = [_count(v.get("input", v.get("prompt"))), _count(v.get("output", v.get("completion")))]
            else:
                pair = [_count(v), 0]
            if pair[0] or pair[1]:
                prev = tok.setdefault(str(m)[:128], [0, 0])
                prev[0] += pair[0]
                prev[1] += pair[1]
    if tok:
        out["tok"] = tok
    return out


@dataclass
class TaskCost:
    """The cost of a task (None: no event reported any usage), its currency, its tokens and
    the tokens no price covered."""

    cost: float | None = None
    currency: str = ""
    tokens: int = 0
    unpriced_tokens: int = 0


def task_cost(usages: list[Usage], prices: PriceTable | None) -> TaskCost:
    """Sum the usage of a task's events (each event once), pricing the tokens of events that
    report no cost with ``prices``."""
    table = prices or PriceTable()
    out = TaskCost()
    for u in usages:
        tok = u.get("tok") or {}
        out.tokens += sum(a + b for a, b in tok.values())
        if "cost" in u:
            out.cost = (out.cost or 0.0) + float(u["cost"])
            out.currency = out.currency or str(u.get("cur") or table.currency)
            continue
        for model, (a, b) in tok.items():
            priced = table.price(model, a, b)
            if priced is None:
                out.unpriced_tokens += a + b
            else:
                out.cost = (out.cost or 0.0) + priced
                out.currency = out.currency or table.currency
    return out


def prices_json(table: PriceTable) -> str:
    """The table as JSON (per 1M tokens), for logs and docs."""
    return json.dumps({"currency": table.currency, "models": {
        m: {"input_per_1m": p.input * 1e6, "output_per_1m": p.output * 1e6} for m, p in table.models.items()}})
