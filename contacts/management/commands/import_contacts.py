"""Import contacts from a CSV file, synchronously (the admin's path queues the same engine)."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from consent.imports import consent_basis_check
from contacts.imports.engine import ImportOptions, ImportResult, run_import
from contacts.imports.jobs import import_followup, import_job_record_completed
from contacts.imports.reader import ImportFileError
from contacts.models import ImportJob


class Command(BaseCommand):
    help = "Import contacts from a CSV file (UTF-8 or Windows-1252; comma, semicolon or tab separated)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--mapping", help='JSON object {"CSV header": "field"} or a path to a JSON file; '
                                              'fields: email, first_name, ..., attributes.<key>, "" to ignore')
        parser.add_argument("--on-existing", choices=ImportJob.OnExisting.values, default="update")
        parser.add_argument("--tag", default="", help="tag every contact in the file")
        parser.add_argument("--list", dest="list_name", default="", help="add every contact to this static list")
        parser.add_argument("--create-fields", action="store_true",
                            help="create text custom fields for unknown columns")
        parser.add_argument("--encoding", default="", help="e.g. utf-8, cp1252 (default: detect)")
        parser.add_argument("--delimiter", default="", help="one of , ; tab | (default: detect)")
        parser.add_argument("--dry-run", action="store_true", help="validate and count, change nothing")
        parser.add_argument("--consent-basis", choices=["granted", "confirm"], default="",
                            help="rows without consent: granted (with --consent-source) or confirm "
                                 "(a double opt-in email each)")
        parser.add_argument("--consent-source", default="",
                            help="with --consent-basis granted: where consent was given")
        parser.add_argument("--consent-date", default="", help="with --consent-basis granted: when (YYYY-MM-DD)")
        parser.add_argument("--report", type=Path, help="where to write the error report CSV")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--no-followup", action="store_true",
                            help="do not update fit scores, segments and CRM sync afterwards (run it later)")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        report = options["report"] or Path(settings.VAR_DIR) / "tmp" / f"{path.stem}-errors.csv"
        report.parent.mkdir(parents=True, exist_ok=True)
        delimiter = "\t" if options["delimiter"] in ("tab", "\\t") else options["delimiter"]
        opts = ImportOptions(
            mapping=_mapping(options["mapping"]), on_existing=options["on_existing"], tag=options["tag"],
            list_name=options["list_name"], create_fields=options["create_fields"], encoding=options["encoding"],
            delimiter=delimiter, dry_run=options["dry_run"], source_name=path.name,
            consent_basis=options["consent_basis"], consent_basis_source=options["consent_source"],
            consent_basis_at=options["consent_date"],
        )
        try:
            consent_basis_check(basis=opts.consent_basis, source=opts.consent_basis_source, at=opts.consent_basis_at)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        started_at = timezone.now()
        job_ids: list[int] = []

        def record(result: ImportResult) -> None:
            if not opts.dry_run:
                job_ids.append(import_job_record_completed(path=path, options=opts, result=result,
                                                           started_at=started_at).pk)

        started = time.perf_counter()
        try:
            result = run_import(path, opts, report_path=report, finalize=record)
        except ImportFileError as exc:
            if options["json"]:
                self.stdout.write(json.dumps({"error": str(exc)}))
            raise CommandError(str(exc)) from None
        seconds = time.perf_counter() - started
        peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        # The largest parallel reader (each forked from this process: most of its pages are shared).
        worker_rss_mb = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1) \
            if result.workers else None
        followup_seconds = None
        if job_ids and (result.created or result.updated) and not options["no_followup"]:
            # What the admin's import queues after it commits (fit scores, segments, CRM sync):
            # run here, so contacts imported from the shell do not wait for an unrelated change.
            followup_started = time.perf_counter()
            import_followup(job_id=job_ids[0])
            followup_seconds = round(time.perf_counter() - followup_started, 3)
        data = {**result.as_dict(), "error_report": str(report), "seconds": round(seconds, 3),
                "rows_per_second": round(result.rows_read / seconds) if seconds else None,
                "peak_rss_mb": peak_rss_mb, "worker_peak_rss_mb": worker_rss_mb,
                "import_job": job_ids[0] if job_ids else None, "followup_seconds": followup_seconds}
        if options["json"]:
            self.stdout.write(json.dumps(data))
            return
        verb = "Would import" if opts.dry_run else "Imported"
        self.stdout.write(
            f"{verb} {path.name}: {result.created} created, {result.updated} updated, {result.skipped} skipped, "
            f"{result.rejected} rejected, {result.duplicates} duplicates in file ({result.rows_read} rows, "
            f"{seconds:.1f}s, {result.encoding}, delimiter {result.delimiter!r})"
        )
        if result.rejected or result.duplicates:
            self.stdout.write(f"Error report: {report}")
        if followup_seconds is not None:
            self.stdout.write(f"Fit scores and segments updated, CRM sync queued ({followup_seconds:.1f}s).")


def _mapping(raw: str | None) -> dict[str, str] | None:
    if not raw:
        return None
    text = Path(raw).read_text() if Path(raw).is_file() else raw
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--mapping is not valid JSON: {exc}") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str | None)
                                                for k, v in mapping.items()):
        raise CommandError('--mapping must be a JSON object of "CSV header": "field" strings')
    return {k: v or "" for k, v in mapping.items()}
