"""Typed views of Redis replies: the client decodes responses to str, but its type hints
say `bytes | str | ...`; these narrow them in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def opt_text(value: object) -> str | None:
    return None if value is None else text(value)


def texts(values: Iterable[object]) -> list[str]:
    return [text(v) for v in values]


def text_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def fields(mapping: Mapping[str, str]) -> dict[Any, Any]:
    """A str mapping as HSET's `mapping=` is annotated to take."""
    return dict(mapping)
