"""Validating a block of rows column by column (issue 23).

RowValidator's loop (a Python call per cell, a tuple per row) was most of an import's CPU. Here
each mapped column is checked in C-level passes (`map` of str methods, dict lookups, one regex
call per email), and a row goes through `RowValidator.validate` on its own only when a fast check
cannot vouch for it: a short or long row, a blank line, an empty email, a value outside the fast
checks (non-ASCII, too long, unknown choice...). A fast check accepts a cell only where its value is
the one RowValidator's converter returns, so the staged rows, the errors and the counts are those of
the row-by-row path (contacts/tests/test_import_block.py compares the two).

Only the staged columns the file can fill are sent (`Block.columns`): a column no mapping fills
stays NULL in the staging table without a byte on the wire.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Sequence
from itertools import compress
from operator import itemgetter
from typing import Any

from contacts.emails import _CANONICAL_ASCII  # the canonical-ASCII fast path of email_canonical
from contacts.emails import MAX_LENGTH as EMAIL_MAX_LENGTH
from contacts.fields import MAX_TEXT, FieldSpec
from contacts.imports.rows import BOOLS, CONSENTS, COUNTRY, STAGE_COLUMNS, STAGES, RowError, RowValidator, _quote
from contacts.models import ConsentStatus, CustomField

# Lines of canonical addresses: the email regex with its one end-of-text anchor also ending at a line.
_ONE = _CANONICAL_ASCII.pattern.replace(r"\Z", r"(?:\n|\Z)")
assert _ONE.count(r"(?:\n|\Z)") == 1, "contacts.emails changed its canonical regex: adapt _ALL_CANONICAL"
_ALL_CANONICAL = re.compile(rf"(?:{_ONE}\n)*+{_ONE}")
NULL = "\\N"  # COPY text format
_COPY_SPECIAL = ("\\", "\t", "\n", "\r")  # the characters COPY text format needs escaped
# Fast kinds: how a column's cells are checked together (anything else: its converter per cell).
EMAIL, TEXT, LOOKUP, UPPER_CODE, NUMBER, OTHER = range(6)


class Block:
    """A block's outcome: staged values by column (`columns[k]` is `copy_columns[k]`), in file order
    except that rows decided one by one follow the others; errors in file order."""

    __slots__ = ("rows_read", "columns", "errors")

    def __init__(self, rows_read: int, columns: list[list[Any]], errors: list[tuple[int, RowError]]) -> None:
        self.rows_read = rows_read
        self.columns = columns
        self.errors = errors

    @property
    def staged(self) -> int:
        return len(self.columns[0])


class BlockValidator:
    def __init__(self, validator: RowValidator, specs: dict[str, FieldSpec] | None = None) -> None:
        self.rows = validator
        specs = specs or {}
        slot_of = {name: i for i, name in enumerate(STAGE_COLUMNS)}
        # (column index, slot or -1, key, required, fast kind, argument of the kind, converter)
        self.plan: list[tuple[int, int, str, bool, int, Any, Callable[[str], Any]]] = []
        filled = {0, 1}  # line, email
        for index, slot, convert, _column, key, required, limit in validator.compiled:
            kind, arg = self._kind(slot, key, limit, specs, slot_of)
            self.plan.append((index, slot, key, required, kind, arg, convert))
            filled.add(slot if slot >= 0 else slot_of["attributes"])
        status, source, at = validator.consent_slots
        self.fills_consent = status in filled
        if self.fills_consent:
            filled |= {source, at}
        self.copy_slots = sorted(filled)
        self.copy_columns = [STAGE_COLUMNS[slot] for slot in self.copy_slots]

    @staticmethod
    def _kind(slot: int, key: str, limit: int, specs: dict[str, FieldSpec],
              slot_of: dict[str, int]) -> tuple[int, Any]:
        if slot == slot_of["email"]:
            return EMAIL, None
        if limit:
            return TEXT, limit
        if slot == slot_of["country"]:
            return UPPER_CODE, COUNTRY
        if slot == slot_of["lifecycle_stage"]:
            return LOOKUP, STAGES
        if slot == slot_of["consent_status"]:
            return LOOKUP, CONSENTS
        if slot == slot_of["is_test"]:
            return LOOKUP, BOOLS
        spec = specs.get(key) if slot < 0 else None
        if spec is not None:
            if spec.field_type == CustomField.Type.CHOICE:
                return LOOKUP, {c.casefold(): c for c in spec.choices}
            if spec.field_type == CustomField.Type.NUMBER:
                return NUMBER, None
            if spec.field_type == CustomField.Type.TEXT:
                return TEXT, MAX_TEXT
        return OTHER, None

    def validate(self, lines: Sequence[int], rows: Sequence[list[str]]) -> Block:
        """`rows[i]` is the record starting on line `lines[i]` (blank records included: skipped here)."""
        width = self.rows.width
        if set(map(len, rows)) <= {width}:
            regular: Sequence[int] = range(len(rows))
            odd: list[int] = []
            records: Sequence[Sequence[str]] = rows
        else:
            regular = [i for i, cells in enumerate(rows) if len(cells) == width]
            odd = [i for i, cells in enumerate(rows) if len(cells) != width]
            records = [rows[i] for i in regular]
        count = len(records)
        values: list[list[Any] | None] = [None] * len(STAGE_COLUMNS)
        attributes: list[list[str | None]] = []
        suspects: set[int] = set()  # positions in `records`
        for index, slot, key, required, kind, arg, convert in self.plan:
            # itemgetter, not zip(*records): transposing by zip took 20x as long (an iterator per row).
            column, bad = self._column(list(map(itemgetter(index), records)), kind, arg, convert, required)
            suspects.update(bad)
            if slot >= 0:
                values[slot] = column
            else:
                attributes.append(_json_members(_quote(key) + ":", column))
        values[0] = [lines[i] for i in regular] if odd else list(lines)
        if attributes:
            values[self.rows.attr_slot] = _objects(attributes, count)
        if self.fills_consent:
            self._consent_defaults(values, count)
        kept = [values[slot] or [None] * count for slot in self.copy_slots]
        if suspects:
            mask = [1] * count
            for position in suspects:
                mask[position] = 0
            kept = [list(compress(column, mask)) for column in kept]
            odd = sorted([*odd, *(regular[p] for p in suspects)])
        errors: list[tuple[int, RowError]] = []
        rows_read = count - len(suspects)
        for i in odd:
            cells = rows[i]
            if not cells or not any(c.strip() for c in cells):
                continue  # blank line, or a row of empty cells (as CsvSource.rows)
            rows_read += 1
            staged, row_errors = self.rows.validate(lines[i], cells)
            if staged is None:
                errors.extend((lines[i], error) for error in row_errors)
            else:
                for column, slot in zip(kept, self.copy_slots, strict=True):
                    column.append(staged[slot])
        return Block(rows_read, kept, errors)

    @staticmethod
    def _column(cells: Sequence[str], kind: int, arg: Any, convert: Callable[[str], Any],
                required: bool) -> tuple[list[Any], list[int]]:
        """(values, positions whose rows must be decided one by one) of one mapped column."""
        stripped = list(map(str.strip, cells))
        values: list[Any]
        rest: list[int] = []  # non-empty cells the fast check did not vouch for: their converter decides
        if kind == EMAIL:
            # email_canonical's own fast path: ASCII, at most 254 characters, lower-cased, no "--",
            # the canonical regex. Everything else (empty included) is decided by the row path.
            values = list(map(str.lower, stripped))
            joined = "\n".join(values)
            if (joined.isascii() and "--" not in joined and joined.count("\n") == len(values) - 1
                    and max(map(len, values), default=0) <= EMAIL_MAX_LENGTH and _ALL_CANONICAL.fullmatch(joined)):
                return values, []  # one regex call for the whole column: a call per cell cost 4x as much
            return values, [i for i, v in enumerate(values) if not v.isascii() or "--" in v
                            or len(v) > EMAIL_MAX_LENGTH or _CANONICAL_ASCII.fullmatch(v) is None]
        if kind == TEXT:
            values = [s or None for s in stripped] if "" in stripped else stripped
            if max(map(len, stripped), default=0) > arg:
                rest = [i for i, s in enumerate(stripped) if len(s) > arg]
        elif kind == LOOKUP:
            values = list(map(arg.get, map(str.casefold, stripped)))
            if None in values:
                rest = [i for i, v in enumerate(values) if v is None and stripped[i]]
        elif kind == UPPER_CODE:
            values = list(map(str.upper, stripped))
            joined = "\n".join(values)
            if not (joined.count("\n") == len(values) - 1 and _lines_of(arg).fullmatch(joined)):
                values = [None] * len(stripped)
                rest = [i for i, s in enumerate(stripped) if s]
        elif kind == NUMBER and "".join(stripped).isascii():
            if all(map(str.isdigit, stripped)):
                values = list(map(int, stripped))
            else:
                values = [int(s) if s.isdigit() else None for s in stripped]
                rest = [i for i, v in enumerate(values) if v is None and stripped[i]]
        else:
            values = [None] * len(stripped)
            rest = [i for i, s in enumerate(stripped) if s]
        bad: list[int] = []
        for i in rest:
            try:
                values[i] = convert(stripped[i])
            except ValueError:
                bad.append(i)
        if required and "" in stripped:
            bad += [i for i, s in enumerate(stripped) if not s]
        return values, bad

    def _consent_defaults(self, values: list[list[Any] | None], count: int) -> None:
        """As RowValidator: a given consent other than unknown gets the import as source and now as time."""
        status_slot, source_slot, at_slot = self.rows.consent_slots
        status = values[status_slot] or [None] * count
        source = values[source_slot] or [None] * count
        at = values[at_slot] or [None] * count
        given = [s is not None and s != ConsentStatus.UNKNOWN for s in status]
        default_source, now = self.rows.consent_source, self.rows.now
        values[source_slot] = [default_source if g and s is None else s for g, s in zip(given, source, strict=True)]
        values[at_slot] = [now if g and a is None else a for g, a in zip(given, at, strict=True)]


_LINES: dict[str, re.Pattern[str]] = {}


def _lines_of(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """Lines that each fully match `pattern` (one that has no anchors), as one regex: one call per column."""
    if pattern.pattern not in _LINES:
        _LINES[pattern.pattern] = re.compile(rf"(?:{pattern.pattern}\n)*+{pattern.pattern}")
    return _LINES[pattern.pattern]


def _json_members(prefix: str, column: list[Any]) -> list[str | None]:
    """`"key":value` per cell (None for an empty one), as encode_attributes writes them."""
    if None not in column:
        types = set(map(type, column))
        if types == {str}:
            return list(map(prefix.__add__, map(_quote, column)))
        if types == {int}:
            return list(map(prefix.__add__, map(repr, column)))
    return [None if v is None else prefix + _json_value(v) for v in column]


def _json_value(value: Any) -> str:
    if isinstance(value, str):
        return _quote(value)
    if value is True or value is False:
        return "true" if value else "false"
    return repr(value)  # int or finite float (as rows.encode_attributes)


def _objects(parts: list[list[str | None]], count: int) -> list[str | None]:
    """Per row, the JSON object of its attribute parts (None when it has none), as encode_attributes."""
    if not any(None in column for column in parts):
        return ["{" + ",".join(row) + "}" for row in zip(*parts, strict=True)] if parts else [None] * count
    out: list[str | None] = []
    for row in zip(*parts, strict=True):
        given = [part for part in row if part is not None]
        out.append("{" + ",".join(given) + "}" if given else None)
    return out


def copy_text(block: Block, copy_columns: Sequence[str]) -> bytes:
    """The block's staged rows in COPY text format (PostgreSQL), columns as `copy_columns`."""
    if not block.staged:
        return b""
    formatted = [_copy_column(name, column) for name, column in zip(copy_columns, block.columns, strict=True)]
    return ("\n".join(map("\t".join, zip(*formatted, strict=True))) + "\n").encode("utf-8")


def _copy_column(name: str, column: list[Any]) -> list[str]:
    if name in ("line", "email"):
        return list(map(str, column))  # numbers; canonical addresses (no character COPY escapes)
    if name == "is_test":
        return [NULL if v is None else ("t" if v else "f") for v in column]
    if name == "consent_at":
        return [NULL if v is None else v.isoformat() for v in column]
    joined = "".join(column) if None not in column else "".join(filter(None, column))
    if any(special in joined for special in _COPY_SPECIAL):
        column = [None if v is None else _escape(v) for v in column]
    return [NULL if v is None else v for v in column] if None in column else column


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def email_hashes(block: Block) -> array[int]:
    """hash() of each staged email, for the stager's duplicate check."""
    return array("q", map(hash, block.columns[1]))


def block_rows(block: Block) -> list[tuple[Any, ...]]:
    """The staged rows as tuples in `copy_columns` order (SQLite's executemany)."""
    return list(zip(*block.columns, strict=True))
