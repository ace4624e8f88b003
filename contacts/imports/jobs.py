"""ImportJob lifecycle: create -> queue -> run (claimed, heartbeating) -> completed | failed,
plus the sweeper that re-queues imports whose worker died and the admin's preview."""

from __future__ import annotations

import logging
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F, Q
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from consent.imports import consent_import_record, import_marketing_reach
from contacts.fields import load_specs
from contacts.imports.engine import ImportOptions, ImportResult, _specs_with_new, run_import
from contacts.imports.mapping import resolve_mapping, suggest_mapping
from contacts.imports.reader import CsvSource, ImportFileError, detect_format
from contacts.imports.rows import STAGE_COLUMNS, RowValidator
from contacts.models import Contact, ContactList, ImportJob, Tag
from core.queues import get_queue

log = logging.getLogger(__name__)
Status = ImportJob.Status
MAX_ATTEMPTS = 3
IMPORT_JOB_TIMEOUT = 6 * 3600


class ImportSuperseded(Exception):
    """Another attempt owns this job now (the sweeper re-queued it); this one must stop."""


def _log_entry(message: str) -> dict[str, str]:
    return {"at": timezone.now().isoformat(timespec="seconds"), "message": message}


def import_job_create(
    *, upload: UploadedFile, created_by: User | None, on_existing: str, tag_name: str,
    add_to_list: ContactList | None, create_fields: bool, encoding: str, delimiter: str,
    consent_basis: dict[str, str] | None = None,
) -> ImportJob:
    """Store an uploaded file as a pending import, waiting for its column mapping."""
    name = Path(upload.name or "import.csv").name[:255]
    with transaction.atomic():
        tag = Tag.objects.get_or_create(name=tag_name)[0] if tag_name else None
        job = ImportJob(
            file=upload, original_name=name, file_size=upload.size or 0, created_by=created_by,
            on_existing=on_existing, tag=tag, add_to_list=add_to_list, create_fields=create_fields,
            encoding=encoding, delimiter=delimiter, status=Status.PENDING, consent_basis=consent_basis or {},
            log=[_log_entry(f"uploaded {name} ({filesizeformat(upload.size or 0)})")],
        )
        job.full_clean()
        job.save()
    return job


def import_job_start(*, job: ImportJob, mapping: dict[str, str] | None = None) -> None:
    """Save the chosen mapping (None: the suggested one) and queue a pending import.

    ValueError if it is not pending (started twice, or already finished).
    """
    with transaction.atomic():
        changes: dict[str, Any] = {"status": Status.QUEUED, "heartbeat_at": timezone.now(), "message": ""}
        if mapping is not None:
            changes["mapping"] = mapping
        if ImportJob.objects.filter(pk=job.pk, status=Status.PENDING).update(**changes) != 1:
            raise ValueError("This import has already been started.")
        _enqueue(job.pk, job.attempts, "started")
    job.refresh_from_db()


def import_job_fail(*, job: ImportJob, message: str) -> None:
    """A pending import whose file cannot be read fails with the reason the marketer sees."""
    _fail(ImportJob.objects.filter(pk=job.pk, status=Status.PENDING), job.pk, message)
    job.refresh_from_db()


def _enqueue(job_id: int, attempts: int, note: str) -> None:
    """Hand a QUEUED job to the `imports` workers; the RQ job leaves when the transaction commits."""
    _append_log(job_id, note)
    get_queue("imports").enqueue(
        "contacts.tasks.import_run", job_id, job_timeout=IMPORT_JOB_TIMEOUT, job_id=f"import-{job_id}-{attempts}",
    )


def _append_log(job_id: int, message: str) -> None:
    job = ImportJob.objects.only("log").get(pk=job_id)
    ImportJob.objects.filter(pk=job_id).update(log=[*job.log, _log_entry(message)][-50:])


def options_for(job: ImportJob) -> ImportOptions:
    return ImportOptions(
        mapping=job.mapping or None,
        on_existing=job.on_existing,
        create_fields=job.create_fields,
        tag=job.tag.name if job.tag else "",
        list_name=job.add_to_list.name if job.add_to_list else "",
        encoding=job.encoding,
        delimiter=job.delimiter,
        source_name=job.original_name,
        consent_basis=(job.consent_basis or {}).get("basis", ""),
        consent_basis_source=(job.consent_basis or {}).get("source", ""),
        consent_basis_at=(job.consent_basis or {}).get("at", ""),
    )


def import_job_run(*, job_id: int) -> None:
    """Run a queued import. Safe to call twice: only the caller that claims it runs it."""
    now = timezone.now()
    claimed = ImportJob.objects.filter(pk=job_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1, progress=0,
    )
    if claimed != 1:
        log.info("import %s: not queued any more, nothing to do", job_id)
        return
    job = ImportJob.objects.select_related("tag", "add_to_list").get(pk=job_id)
    mine = ImportJob.objects.filter(pk=job_id, status=Status.RUNNING, attempts=job.attempts)
    _append_log(job_id, f"attempt {job.attempts} started")

    def progress(percent: int, rows: int) -> None:
        if mine.update(progress=percent, rows_read=rows, heartbeat_at=timezone.now()) != 1:
            raise ImportSuperseded

    def finalize(result: ImportResult) -> None:
        report_name = _store_report(job, report_path)
        summary = (f"{result.created} created, {result.updated} updated, {result.skipped} skipped, "
                   f"{result.rejected} rejected, {result.duplicates} duplicates")
        done = mine.update(
            status=Status.COMPLETED, progress=100, rows_read=result.rows_read, created=result.created,
            updated=result.updated, skipped=result.skipped, rejected=result.rejected,
            duplicates=result.duplicates, error_report=report_name, finished_at=timezone.now(),
            message=summary, mapping=result.mapping, encoding=result.encoding, delimiter=result.delimiter,
        )
        if done != 1:
            raise ImportSuperseded  # rolls the merge back: the other attempt's counts stand
        basis = job.consent_basis or {}
        consent_import_record(since=job.started_at, job_id=job_id, source_name=job.original_name,  # issue 20
                              basis=basis.get("basis", ""), basis_source=basis.get("source", ""),
                              basis_at=basis.get("at", ""))
        _append_log(job_id, f"completed: {summary}")
        if result.created or result.updated:
            # Imported contacts reach fit scoring and segments set-based, after this commits.
            get_queue("default").enqueue("contacts.tasks.import_followup", job_id, job_timeout=IMPORT_JOB_TIMEOUT)

    tmp_dir = Path(settings.VAR_DIR) / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".csv", delete=False) as tmp:
        report_path = Path(tmp.name)
    try:
        run_import(Path(job.file.path), options_for(job), report_path=report_path, progress=progress,
                   finalize=finalize)
    except ImportSuperseded:
        log.warning("import %s: attempt %s superseded by a newer attempt", job_id, job.attempts)
    except ImportFileError as exc:
        _fail(mine, job_id, str(exc))
    except Exception as exc:
        _fail(mine, job_id, f"Unexpected error ({type(exc).__name__}): {exc}. Nothing was imported.")
        raise
    finally:
        report_path.unlink(missing_ok=True)


def import_job_record_completed(*, path: Path, options: ImportOptions, result: ImportResult,
                                started_at: Any) -> ImportJob:
    """A command-line import, recorded like the admin's (called inside its merge transaction, so the
    row exists exactly when the contacts do): the import list shows it, and `import_followup`
    (CRM sync of the contacts written since `started_at`) works on it the same way."""
    summary = (f"{result.created} created, {result.updated} updated, {result.skipped} skipped, "
               f"{result.rejected} rejected, {result.duplicates} duplicates")
    now = timezone.now()
    job = ImportJob(
        original_name=path.name[:255], file_size=path.stat().st_size, on_existing=options.on_existing,
        create_fields=options.create_fields, encoding=result.encoding, delimiter=result.delimiter,
        mapping=result.mapping, status=Status.COMPLETED, progress=100, rows_read=result.rows_read,
        created=result.created, updated=result.updated, skipped=result.skipped, rejected=result.rejected,
        duplicates=result.duplicates, attempts=1, started_at=started_at, heartbeat_at=now, finished_at=now,
        message=summary, log=[_log_entry(f"imported from the command line: {path.name}"),
                              _log_entry(f"completed: {summary}")],
    )
    job.tag = Tag.objects.get_or_create(name=options.tag)[0] if options.tag else None
    job.add_to_list = ContactList.objects.get_or_create(name=options.list_name)[0] if options.list_name else None
    # No stored upload (the file stays where it is on the server): `file` is empty, so no full_clean().
    job.save()
    consent_import_record(since=started_at, job_id=job.pk, source_name=path.name,  # the history (issue 20)
                          basis=options.consent_basis, basis_source=options.consent_basis_source,
                          basis_at=options.consent_basis_at)
    return job


def import_followup(*, job_id: int) -> None:
    """After an import: imported contacts reach fit scoring and segments."""
    from contacts.pipeline import contacts_rescan_all

    contacts_rescan_all()
    _append_log(job_id, "fit scores and segments updated")
    from automation.crm.services import crm_contacts_imported  # CRM sync of the imported contacts
    crm_contacts_imported(job_id=job_id)


def _fail(mine: Any, job_id: int, message: str) -> None:
    if mine.update(status=Status.FAILED, message=message, finished_at=timezone.now()) == 1:
        _append_log(job_id, f"failed: {message}")


def _store_report(job: ImportJob, report_path: Path) -> str:
    with open(report_path, "rb") as fh:
        return default_storage.save(f"imports/reports/import-{job.pk}-errors.csv", File(fh))


def import_sweep() -> int:
    """Re-queue imports whose worker went silent (killed, or Redis lost the job); fail after 3 tries."""
    cutoff = timezone.now() - timedelta(seconds=settings.IMPORT_STALE_SECONDS)
    stale = ImportJob.objects.filter(Q(status=Status.RUNNING) | Q(status=Status.QUEUED), heartbeat_at__lt=cutoff)
    count = 0
    for job in stale.only("pk", "status", "attempts", "heartbeat_at"):
        if job.attempts >= MAX_ATTEMPTS:
            if ImportJob.objects.filter(pk=job.pk, status=job.status, attempts=job.attempts).update(
                status=Status.FAILED, finished_at=timezone.now(),
                message=f"The import stopped {job.attempts} times without finishing (worker killed or out of "
                        "memory?). Nothing was imported; start it again after checking the workers.",
            ):
                _append_log(job.pk, "failed: too many interrupted attempts")
            continue
        with transaction.atomic():
            # Conditional on what we saw: a worker that wakes up meanwhile keeps the job.
            if ImportJob.objects.filter(pk=job.pk, status=job.status, attempts=job.attempts,
                                        heartbeat_at=job.heartbeat_at).update(
                    status=Status.QUEUED, heartbeat_at=timezone.now()) != 1:
                continue
            _enqueue(job.pk, job.attempts, f"re-queued: no sign of life since {job.heartbeat_at:%H:%M:%S}")
            count += 1
    return count


def import_preview(*, path: Path, mapping: dict[str, str] | None, create_fields: bool, encoding: str = "",
                   delimiter: str = "", limit: int = 20, on_existing: str = ImportJob.OnExisting.UPDATE,
                   consent_basis: str = "") -> dict[str, Any]:
    """What the first rows would do (create, update, reject, duplicate), changing nothing, and how
    many of the whole file's contacts will be able to receive marketing email (issue 20)."""
    fmt = detect_format(path, encoding=encoding, delimiter=delimiter)
    specs = load_specs()
    with CsvSource(path, fmt) as source:
        header = source.header
        suggested = suggest_mapping(header, specs, create_fields=create_fields)
        used = mapping if mapping is not None else suggested
        plan, to_create = resolve_mapping(used, header, specs, create_fields=create_fields)
        validator = RowValidator(plan, header, _specs_with_new(specs, to_create), consent_source="preview")
        email_at, consent_at = STAGE_COLUMNS.index("email"), STAGE_COLUMNS.index("consent_status")
        sample: list[tuple[int, list[str]]] = []
        # The marketing figure is the whole file's: one pass through the import's own validator,
        # the last valid row of each address winning as in the merge (staging.py dedupe).
        final: dict[str, str | None] = {}
        for item in source.rows():
            if len(sample) < limit:
                sample.append(item)
            staged, _ = validator.validate(*item)
            if staged is not None:
                final[staged[email_at]] = staged[consent_at]
    checked = [(line, cells, *validator.validate(line, cells)) for line, cells in sample]
    emails = [staged[email_at] for _, _, staged, _ in checked if staged]
    existing = set(Contact.objects.filter(email__in=emails).values_list("email", flat=True))
    last_line = {staged[email_at]: line for line, _, staged, _ in checked if staged}
    rows = []
    for line, cells, staged, errors in checked:
        if staged is None:
            outcome, reasons = "reject", [f"{c or 'row'}: {r}" for c, _, r in errors]
        elif last_line[staged[email_at]] != line:
            outcome, reasons = "duplicate", [f"line {last_line[staged[email_at]]} has the same email and wins"]
        else:
            outcome, reasons = ("update" if staged[email_at] in existing else "create"), []
        rows.append({"line": line, "cells": cells[: len(header)], "outcome": outcome, "reasons": reasons})
    marketing = import_marketing_reach(final=final, on_existing=on_existing, basis=consent_basis)  # issue 20
    return {"encoding": fmt.encoding, "delimiter": fmt.delimiter, "header": header, "suggested": suggested,
            "mapping": used, "new_fields": to_create, "rows": rows, "marketing": marketing}
