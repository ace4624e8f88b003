"""Small helpers shared across apps (one place, not copied per app)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

T = TypeVar("T")

# A spreadsheet runs a cell that starts like a formula (CSV injection); these start one.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> str:
    """The cell as text a spreadsheet shows as text: a leading ' before anything formula-like."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items (the last may be shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
