"""The price table of ``TASKPULSE_PRICES`` (``pipeline.core.cost``): read from the file the
setting names, or taken inline.  The only file read of the cost feature; a table that
cannot be read stops the worker at start with a message that names the setting."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.cost import PriceTable, PriceTableError, parse_prices
from pipeline.errors import ConfigError


def load_prices(value: str) -> PriceTable:
    """The table ``value`` names (a path) or holds (inline JSON / YAML)."""
    text = value.strip()
    where = "TASKPULSE_PRICES"
    inline = text.startswith("{") or "\n" in text or "models" in text
    if text and not inline:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(f"TASKPULSE_PRICES: no file {path} (give a YAML/JSON file, or the table inline)")
        text, where = path.read_text(encoding="utf-8"), f"TASKPULSE_PRICES file {path}"
    try:
        return parse_prices(text)
    except PriceTableError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
