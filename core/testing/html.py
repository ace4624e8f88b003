"""Test helper: one element of a rendered page, by the text that opens it and the first text that
closes it after that (a table by its id up to </table>, a row up to </tr>)."""

from __future__ import annotations


def html_section(page: str, start: str, end: str) -> str:
    """page from `start` up to (not including) the first `end` after it; ValueError if either is missing."""
    begin = page.index(start)
    return page[begin:page.index(end, begin)]
