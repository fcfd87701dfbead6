"""Attacks on the decoder's promise that it never raises, for any bytes: values that make
Python itself refuse (an integer string beyond ``sys.get_int_max_str_digits``) in the fields
that place an event (``timestamp``) and in the descriptive ones it still reads (``deadline``)."""

from __future__ import annotations

import time

import orjson
import pytest

from pipeline.core.ingest.decode import Decoder
from pipeline.core.tasks.correlation import deadline_ms
from pipeline.core.timestamps import TimestampError, to_epoch_ms
from pipeline.events import NormalizedEvent, Rejected, RejectReason


def _event(**over: object) -> bytes:
    doc = {"id": "e1", "timestamp": "2025-06-01T00:00:00Z", "event_type": "task.created",
           "entity_type": "task", "entity_id": "t1", "current_state": {"task_type": "x"}}  # fmt: skip
    doc.update(over)
    return orjson.dumps(doc)


@pytest.mark.parametrize("digits", [4301, 5000, 100_000])
def test_a_timestamp_of_too_many_digits_is_a_bad_timestamp_not_an_exception(digits: int) -> None:
    out = Decoder().decode("t", 0, 0, _event(timestamp="9" * digits), int(time.time() * 1000))
    assert len(out) == 1 and isinstance(out[0], Rejected)
    assert out[0].reason == RejectReason.bad_timestamp


@pytest.mark.parametrize("value", ["9" * 5000, " " + "1" * 4400 + " ", "0" * 4400 + "1700000000"])
def test_to_epoch_ms_raises_only_timestamp_error(value: str) -> None:
    with pytest.raises(TimestampError):
        to_epoch_ms(value)


def test_a_deadline_of_too_many_digits_is_kept_and_ignored() -> None:
    out = Decoder().decode(
        "t", 0, 0, _event(current_state={"task_type": "x", "deadline": "9" * 5000}), int(time.time() * 1000)
    )
    assert len(out) == 1 and isinstance(out[0], NormalizedEvent), out


def test_deadline_ms_of_too_many_digits_is_none() -> None:
    class View:
        deadline_raw = "9" * 5000

    assert deadline_ms(View()) is None  # type: ignore[arg-type]
