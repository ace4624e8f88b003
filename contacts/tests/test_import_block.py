"""Column-wise validation (contacts/imports/block.py) decides every row as RowValidator does (issue 23).

The block validator is the import's fast path; RowValidator is the reference it must agree with:
same staged values, same errors in the same order, same rows counted, for any mix of odd cells.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contacts.fields import FieldSpec
from contacts.imports.block import BlockValidator, block_rows, copy_text
from contacts.imports.rows import RowError, RowValidator

HEADER = ["Email", "First", "Country", "Stage", "Consent", "Consent at", "Test", "Plan", "Employees", "Note",
          "Birthday", "Member", "Unmapped"]
PLAN = [(0, "email"), (1, "first_name"), (2, "country"), (3, "lifecycle_stage"), (4, "consent_status"),
        (5, "consent_at"), (6, "is_test"), (7, "attributes.plan"), (8, "attributes.employees"),
        (9, "attributes.note"), (10, "attributes.birthday"), (11, "attributes.member")]
SPECS = {
    "plan": FieldSpec("plan", "choice", ["Free", "Team"], False),
    "employees": FieldSpec("employees", "number", [], False),
    "note": FieldSpec("note", "text", [], False),
    "birthday": FieldSpec("birthday", "date", [], False),
    "member": FieldSpec("member", "bool", [], True),  # required: an empty cell rejects the row
}
# Cells that meet every branch of the fast checks and their fallbacks.
CELLS = [
    "", " ", "ann@x.example", " Ann@X.Example ", "a--b@x.example", "ann@xn--bcher-kva.example", "ann@bücher.de",
    "\u212aelvin@x.example", "zoë@x.example", "bad@", "a" * 250 + "@x.example", "ann@x.localhost",
    "Ann", "A\\nn", "tab\there", "new\nline", "cr\rhere", "x" * 151, "x" * 2001, "\\N",
    "de", "DE", "ß", "Deutschland", "lead", "Customer", "nope", "granted", "Yes", "unknown", "no",
    "2026-03-01 14:00", "2026-03-01T14:00:00+02:00", "soon", "true", "n", "maybe",
    "free", "TEAM", "enterprise", "42", "007", "-3", "2.5", "1_000", "\u00b2", "\u0663", "1e400",
    "2026-02-30", "2026-12-24", "on", "off", '"quoted"', "=SUM(A1)",
]
cell = st.sampled_from(CELLS)
row = st.one_of(
    st.lists(cell, min_size=len(HEADER), max_size=len(HEADER)),  # the regular row, most often
    st.lists(cell, min_size=0, max_size=len(HEADER) + 2),  # short, long, blank
)


def row_by_row(validator: RowValidator, slots: list[int], lines: list[int],
               rows: list[list[str]]) -> tuple[int, list[tuple[Any, ...]], list[tuple[int, RowError]]]:
    """What the import did before issue 23: every row through RowValidator (CsvSource skips blanks)."""
    rows_read = 0
    staged: list[tuple[Any, ...]] = []
    errors: list[tuple[int, RowError]] = []
    for line, cells in zip(lines, rows, strict=True):
        if not cells or not any(c.strip() for c in cells):
            continue
        rows_read += 1
        out, row_errors = validator.validate(line, cells)
        if out is None:
            errors.extend((line, error) for error in row_errors)
        else:
            staged.append(tuple(out[slot] for slot in slots))
    return rows_read, staged, errors


@settings(max_examples=300, deadline=None)
@given(st.lists(row, max_size=30))
@example([["ann@x.example", "Ann", "de", "lead", "yes", "", "no", "team", "42", "hi", "2026-12-24", "on", ""]] * 3)
@example([[" Ann@X.Example "] + [""] * 10 + ["off", ""], [], [""] * 13])
def test_block_validation_stages_and_rejects_exactly_as_row_validation(rows: list[list[str]]) -> None:
    validator = RowValidator(PLAN, HEADER, SPECS, consent_source="import: test.csv")
    block_validator = BlockValidator(validator, SPECS)
    lines = [10 + 2 * i for i in range(len(rows))]
    expected_read, expected_staged, expected_errors = row_by_row(validator, block_validator.copy_slots, lines, rows)
    block = block_validator.validate(lines, rows)
    assert block.rows_read == expected_read
    assert block.errors == expected_errors
    assert sorted(block_rows(block)) == sorted(expected_staged)
    assert block.staged == len(expected_staged)


def test_only_the_columns_a_file_can_fill_are_staged() -> None:
    validator = RowValidator([(0, "email"), (2, "attributes.plan")], ["Email", "Name", "Plan"], SPECS,
                             consent_source="import: test.csv")
    assert BlockValidator(validator, SPECS).copy_columns == ["line", "email", "attributes"]
    with_consent = RowValidator([(0, "email"), (1, "consent_status")], ["Email", "Consent"], {},
                                consent_source="import: test.csv")
    assert BlockValidator(with_consent).copy_columns == ["line", "email", "consent_status", "consent_source",
                                                          "consent_at"]


@pytest.mark.postgres_only
@pytest.mark.django_db
def test_copy_text_is_read_by_postgresql_as_psycopgs_own_copy_rows() -> None:
    # given a block with every kind of value and every character COPY text format escapes
    validator = RowValidator(PLAN, HEADER, SPECS, consent_source="import: test.csv")
    block_validator = BlockValidator(validator, SPECS)
    rows = [["ann@x.example", "A\\nn\ttab", "de", "lead", "yes", "", "no", "team", "42", 'say "hi"\\', "2026-12-24",
             "on", ""],
            ["bob@x.example", "new\nline\rcr", "", "", "", "", "", "", "", "\\N", "", "off", ""],
            ["cy@x.example", "\\N", "", "", "granted", "2026-03-01 14:00", "yes", "", "7", "", "", "y", ""]]
    block = block_validator.validate([2, 3, 4], rows)
    assert block.staged == 3
    columns = ", ".join(block_validator.copy_columns)
    types = {"line": "bigint", "consent_at": "timestamptz", "is_test": "boolean", "attributes": "jsonb"}
    definition = ", ".join(f"{c} {types.get(c, 'text')}" for c in block_validator.copy_columns)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE ours ({definition})")
        cursor.execute(f"CREATE TEMP TABLE theirs ({definition})")
        # when one table is loaded from our COPY text and the other by psycopg's write_row
        with cursor.cursor.copy(f"COPY ours ({columns}) FROM STDIN") as copy:
            copy.write(copy_text(block, block_validator.copy_columns))
        with cursor.cursor.copy(f"COPY theirs ({columns}) FROM STDIN") as copy:
            for staged in block_rows(block):
                copy.write_row(staged)
        # then they hold the same values
        cursor.execute("(SELECT * FROM ours EXCEPT SELECT * FROM theirs) UNION ALL "
                       "(SELECT * FROM theirs EXCEPT SELECT * FROM ours)")
        assert cursor.fetchall() == []
        cursor.execute("SELECT first_name, attributes->>'note' FROM ours ORDER BY line")
        assert cursor.fetchall() == [("A\\nn\ttab", 'say "hi"\\'), ("new\nline\rcr", "\\N"), ("\\N", None)]
