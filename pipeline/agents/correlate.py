"""Placeholder: filled by its issue."""

from __future__ import annotations

from pipeline.app import Pipeline


def register(p: Pipeline) -> None:
    return None
