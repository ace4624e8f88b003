"""The parallel import reader's own guards (issue 23 review): how it gives up splitting a file."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest

from contacts.imports import parallel
from contacts.imports.engine import ImportOptions, ImportResult, run_import
from contacts.tests.csvfiles import write_csv


def rows(count: int) -> str:
    return "".join(f"p{i}@x.example,Acme {i}\n" for i in range(count))


def read_chunks(path: Path) -> list[bytes]:
    return [chunk for chunk, _, _ in parallel.chunks(path, 0, 0)]


@pytest.mark.parametrize(
    "text",
    [
        # an unquoted inch mark: every later line break has an odd number of quotes before it
        'email,company\na@x.example,24" monitor\n' + rows(400),
        # CR-only line ends after the first lines: no LF to cut at
        "email,company\n" + rows(3) + rows(400).replace("\n", "\r"),
    ],
    ids=["stray quote", "CR line ends"],
)
def test_a_file_with_no_cut_ahead_is_given_up_within_the_carry_bound(tmp_path: Path, text: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # The old reader carried the rest of the file (rescanning it on every read) and only gave up
    # at its end: here it yielded one chunk of the whole 8 KB and never raised.
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 256)
    monkeypatch.setattr(parallel, "MAX_CARRY_BYTES", 512)
    path = write_csv(tmp_path, text)
    yielded: list[int] = []
    with pytest.raises(parallel.Unsplittable):
        yielded.extend(len(chunk) for chunk, _, _ in parallel.chunks(path, 0, 0))  # keeps those before
    assert path.stat().st_size > 8000
    assert all(size <= 256 + 512 for size in yielded), yielded


def test_chunks_of_well_formed_quoted_cells_are_whole_records(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # the incremental quote parity cuts exactly where the csv module ends a record
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 11)
    rng = random.Random(23)
    cells = ["plain", '"multi\nline"', '"O""Brien"', '""', '"a,""b""\r\nc"', "x"]
    text = "".join(",".join(rng.choice(cells) for _ in range(3)) + rng.choice(["\n", "\r\n"]) for _ in range(300))
    path = write_csv(tmp_path, text)
    pieces = read_chunks(path)
    assert b"".join(pieces) == path.read_bytes()
    records = [list(csv.reader(io.StringIO(piece.decode(), newline=""))) for piece in pieces]
    assert [row for piece in records for row in piece] == list(csv.reader(io.StringIO(text, newline="")))


@pytest.mark.django_db
def test_a_big_file_with_a_stray_quote_imports_as_the_one_process_reader_does(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if parallel.workers() < 2:
        pytest.skip("the parallel reader needs two cores")
    path = write_csv(tmp_path, 'email,company\na@x.example,24" monitor\n' + rows(2000) + "bad,x\n" + rows(50))

    def run(*, split: bool) -> tuple[ImportResult, str]:
        monkeypatch.setattr(parallel, "MIN_FILE_BYTES", 0 if split else 1 << 60)
        monkeypatch.setattr(parallel, "CHUNK_BYTES", 512)
        monkeypatch.setattr(parallel, "MAX_CARRY_BYTES", 1024)
        report = tmp_path / f"report-{split}.csv"
        result = run_import(path, ImportOptions(dry_run=True), report_path=report)
        return result, report.read_text(encoding="utf-8-sig")

    one, one_report = run(split=False)
    split, split_report = run(split=True)
    assert split.workers == 0, "fell back to the one-process reader"
    assert (split.rows_read, split.created, split.rejected, split.duplicates) == (
        one.rows_read, one.created, one.rejected, one.duplicates) == (2052, 2001, 1, 50)
    assert split_report == one_report
    assert "2003" in [row["line"] for row in csv.DictReader(io.StringIO(split_report))]  # the bad row
