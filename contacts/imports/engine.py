"""The import pipeline, independent of where it runs (RQ job, CLI, benchmark).

read + validate (streaming, constant memory) -> stage (COPY / executemany into a TEMP table)
-> one transaction: create fields/tag/list, dedupe, UPDATE existing, INSERT new, link, finalize.
Counts are computed in that transaction, so they are either all there or not at all.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from contacts.fields import FieldSpec, load_specs
from contacts.imports import parallel
from contacts.imports.block import Block, BlockValidator, block_rows, copy_text, email_hashes
from contacts.imports.mapping import ATTR_PREFIX, resolve_mapping, suggest_mapping
from contacts.imports.reader import CsvSource, ImportFileError, detect_format
from contacts.imports.rows import RowValidator
from contacts.imports.staging import Stager
from contacts.models import Contact, ContactList, CustomField, ImportJob, Tag
from core import tracing
from core.utils import spreadsheet_safe

CHUNK_ROWS = 20_000
PROGRESS_SECONDS = 1.0  # the job's progress and heartbeat, well inside IMPORT_STALE_SECONDS
ProgressFn = Callable[[int, int], None]  # (percent, rows read); may raise to abort


@dataclass
class ImportOptions:
    mapping: dict[str, str] | None = None  # None: use the suggested mapping
    on_existing: str = ImportJob.OnExisting.UPDATE
    create_fields: bool = False
    tag: str = ""
    list_name: str = ""
    encoding: str = ""
    delimiter: str = ""
    dry_run: bool = False
    source_name: str = "import"
    # The file's consent basis for rows without consent (issue 20; consent/imports.py): "" (none),
    # "granted" (with the stated source and date as proof) or "confirm" (a double opt-in email).
    consent_basis: str = ""
    consent_basis_source: str = ""
    consent_basis_at: str = ""
    max_bytes: int = field(default_factory=lambda: int(settings.IMPORT_MAX_BYTES))


@dataclass
class ImportResult:
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: int = 0
    duplicates: int = 0
    encoding: str = ""
    delimiter: str = ""
    mapping: dict[str, str] = field(default_factory=dict)
    created_fields: list[str] = field(default_factory=list)
    dry_run: bool = False
    phase_seconds: dict[str, float] = field(default_factory=dict)  # read_and_stage, merge
    workers: int = 0  # processes that parsed and validated the file besides this one (0: read here)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ErrorReport:
    HEADER = ("line", "column", "value", "reason")

    def __init__(self, path: Path) -> None:
        self.path = path
        # utf-8-sig: with the BOM, Excel on Windows shows accented values right.
        self._fh: TextIO = open(path, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115  closed by close()
        self._writer = csv.writer(self._fh)
        self._writer.writerow(self.HEADER)
        self.lines = 0

    def add(self, line: int, column: str, value: str, reason: str) -> None:
        # The report is opened in spreadsheets: formula-like cells are neutralised.
        self._writer.writerow((line, spreadsheet_safe(column), spreadsheet_safe(value[:500]), reason))
        self.lines += 1

    def close(self) -> None:
        self._fh.close()


def _specs_with_new(specs: dict[str, FieldSpec], keys: list[str]) -> dict[str, FieldSpec]:
    return {**specs, **{k: FieldSpec(k, CustomField.Type.TEXT, [], False) for k in keys}}


def run_import(
    path: Path,
    options: ImportOptions,
    *,
    report_path: Path,
    progress: ProgressFn | None = None,
    finalize: Callable[[ImportResult], None] | None = None,
) -> ImportResult:
    """Import `path`. Raises ImportFileError (nothing changed) for a file that cannot be imported.

    `finalize` runs inside the merge transaction with the counts: raising there rolls the whole
    import back (the job service uses it to record counts atomically, exactly once).
    """
    size = path.stat().st_size
    if size > options.max_bytes:
        raise ImportFileError(
            f"The file is {size / 1e6:.1f} MB; the limit is {options.max_bytes / 1e6:.0f} MB (IMPORT_MAX_BYTES)."
        )
    if options.on_existing not in ImportJob.OnExisting.values:
        raise ImportFileError(f"on_existing must be one of {', '.join(ImportJob.OnExisting.values)}")
    fmt = detect_format(path, encoding=options.encoding, delimiter=options.delimiter)
    result = ImportResult(encoding=fmt.encoding, delimiter=fmt.delimiter, dry_run=options.dry_run)
    report = ErrorReport(report_path)
    stager = Stager()
    try:
        with CsvSource(path, fmt) as source:
            specs = load_specs()
            mapping = options.mapping if options.mapping is not None else suggest_mapping(
                source.header, specs, create_fields=options.create_fields
            )
            plan, to_create = resolve_mapping(mapping, source.header, specs, create_fields=options.create_fields)
            result.mapping = dict(mapping)
            result.created_fields = to_create
            specs = _specs_with_new(specs, to_create)
            validator = BlockValidator(
                RowValidator(plan, source.header, specs, consent_source=f"import: {options.source_name}"), specs)
            stager.create(validator.copy_columns)
            started = time.perf_counter()
            staged = False
            if parallel.usable(path, fmt, size):
                try:
                    _stage_parallel(path, source, validator, stager, report, result, progress)
                    staged = True
                    result.workers = parallel.workers()
                except parallel.Unsplittable:
                    # Stray quotes: start again with the one-process reader (nothing was merged yet).
                    report.close()
                    report = ErrorReport(report_path)
                    result.rows_read = result.rejected = 0
                    stager.drop()
                    stager = Stager()
                    stager.create(validator.copy_columns)
            if not staged:
                _stage_rows(source, validator, stager, report, result, progress)
            result.phase_seconds["read_and_stage"] = round(time.perf_counter() - started, 3)
            tracing.record_phase("import.read_and_stage", time.perf_counter() - started, rows=result.rows_read,
                                 rejected=result.rejected)
        fields = _merged_fields(plan)
        started = time.perf_counter()
        with transaction.atomic():
            _merge(stager, options, result, report, fields)
            result.phase_seconds["merge"] = round(time.perf_counter() - started, 3)
            tracing.record_phase("import.merge", time.perf_counter() - started)
            report.close()  # complete on disk before finalize stores it
            if progress:
                progress(99, result.rows_read)
            if finalize:
                finalize(result)
            if options.dry_run:
                transaction.set_rollback(True)
    finally:
        report.close()
        stager.drop()
    return result


def _stage_rows(source: CsvSource, validator: BlockValidator, stager: Stager, report: ErrorReport,
                result: ImportResult, progress: ProgressFn | None) -> None:
    lines: list[int] = []
    records: list[list[str]] = []
    next_progress = time.monotonic() + PROGRESS_SECONDS
    for line, cells in source.rows():
        lines.append(line)
        records.append(cells)
        if len(records) >= CHUNK_ROWS:
            _stage_block(validator.validate(lines, records), validator, stager, report, result)
            lines, records = [], []
            if progress and time.monotonic() >= next_progress:
                stager.finish()  # the progress update needs the connection the COPY holds
                progress(min(90, int(90 * source.bytes_read / max(source.size, 1))), result.rows_read)
                next_progress = time.monotonic() + PROGRESS_SECONDS
    _stage_block(validator.validate(lines, records), validator, stager, report, result)
    stager.finish()
    if progress:
        progress(90, result.rows_read)


def _stage_block(block: Block, validator: BlockValidator, stager: Stager, report: ErrorReport,
                 result: ImportResult) -> None:
    result.rows_read += block.rows_read
    result.rejected += block.rows_read - block.staged
    for line, (column, value, reason) in block.errors:
        report.add(line, column, value, reason)
    stager.write_prepared(copy_data=copy_text(block, validator.copy_columns) if stager.pg else b"",
                          rows=[] if stager.pg else block_rows(block), count=block.staged,
                          email_hashes=email_hashes(block).tobytes())


def _stage_parallel(path: Path, source: CsvSource, validator: BlockValidator, stager: Stager, report: ErrorReport,
                    result: ImportResult, progress: ProgressFn | None) -> None:
    """Like _stage_rows, with the parsing and validation done by one process per core."""
    next_progress = time.monotonic() + PROGRESS_SECONDS
    for chunk, reached in parallel.results(path, source.format, source.header_lines, validator, pg=stager.pg):
        result.rows_read += chunk.rows_read
        result.rejected += chunk.rows_read - chunk.staged
        for line, (column, value, reason) in chunk.errors:
            report.add(line, column, value, reason)
        stager.write_prepared(copy_data=chunk.copy_data, rows=chunk.rows, count=chunk.staged,
                              email_hashes=chunk.email_hashes)
        if progress and time.monotonic() >= next_progress:
            stager.finish()  # the progress update needs the connection the COPY holds
            progress(min(90, int(90 * reached / max(source.size, 1))), result.rows_read)
            next_progress = time.monotonic() + PROGRESS_SECONDS
    stager.finish()
    if progress:
        progress(90, result.rows_read)


def _merged_fields(plan: list[tuple[int, str]]) -> list[str]:
    fields = {target for _, target in plan if not target.startswith(ATTR_PREFIX)}
    if any(target.startswith(ATTR_PREFIX) for _, target in plan):
        fields.add("attributes")
    if "consent_status" in fields:
        fields |= {"consent_source", "consent_at"}  # filled in from the import when not given
    return sorted(fields)


def _merge(stager: Stager, options: ImportOptions, result: ImportResult, report: ErrorReport,
           fields: list[str]) -> None:
    for key in result.created_fields:
        CustomField.objects.get_or_create(key=key, defaults={"label": key.replace("_", " ").capitalize()})
    stager.tune_session()
    final = stager.dedupe()
    result.duplicates = stager.staged - final
    if result.duplicates:
        for line, email, winner in stager.superseded():
            report.add(line, "email", email, f"duplicate in file: line {winner} has the same email and wins")
    now = timezone.now()
    if options.on_existing != ImportJob.OnExisting.SKIP:
        result.updated = stager.update_existing(
            fields, fill_empty=options.on_existing == ImportJob.OnExisting.FILL_EMPTY, now=now
        )
    if options.on_existing != ImportJob.OnExisting.SKIP and result.updated == final:
        result.created = 0  # every email matched a contact (a re-import): no anti-join over them all
    else:
        result.created = stager.insert_new(now)
    # Existing contacts left alone (skip mode), or created by someone else while we merged.
    result.skipped = final - result.created - result.updated
    if options.tag:
        tag, _ = Tag.objects.get_or_create(name=options.tag)
        stager.link_all(Contact.tags.through._meta.db_table, "tag_id", tag.pk)
    if options.list_name:
        contact_list, _ = ContactList.objects.get_or_create(name=options.list_name)
        stager.link_all(Contact.lists.through._meta.db_table, "contactlist_id", contact_list.pk)
