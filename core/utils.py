"""Small helpers shared across apps (one place, not copied per app)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from itertools import islice
from typing import Any, TypeVar

T = TypeVar("T")

# A spreadsheet runs a cell that starts like a formula (CSV injection); these start one. OWASP
# "CSV Injection" (= + - @ tab CR) and ASVS 5.0 1.2.10 (also NUL), plus LF (a cell may begin on a
# new line, then the formula) and the fullwidth forms some spreadsheet locales read as = + - @.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\0", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def spreadsheet_safe(value: Any) -> str:
    """The cell as text a spreadsheet shows as text: a leading ' before anything formula-like.

    Every CSV and XLSX export goes through this (lead export, import error report, the contact
    admin's export). Numbers stay as they are: a negative number is not a formula.
    """
    if value is None:
        return ""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items (the last may be shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
