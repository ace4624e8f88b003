"""The import engine against files that contain every oddity marketers' files have."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from contacts.imports import parallel
from contacts.imports.engine import ImportOptions, ImportResult, run_import
from contacts.imports.reader import ImportFileError
from contacts.models import Contact, ContactList, CustomField, Tag
from contacts.tests.csvfiles import write_csv

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["one process", "parallel"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the one-process reader and with the parallel one (issue 23), the
    latter cutting the file into chunks of a few bytes so that a boundary meets every oddity."""
    if request.param == "parallel":
        if parallel.workers() < 2:
            pytest.skip("the parallel reader needs two cores")
        monkeypatch.setattr(parallel, "MIN_FILE_BYTES", 0)
        monkeypatch.setattr(parallel, "CHUNK_BYTES", 7)
    return str(request.param)


def run(path: Path, tmp_path: Path, **options: Any) -> tuple[ImportResult, list[dict[str, str]]]:
    report = tmp_path / "report.csv"
    result = run_import(path, ImportOptions(**options), report_path=report)
    with open(report, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    total = result.created + result.updated + result.skipped + result.rejected + result.duplicates
    assert total == result.rows_read, "every row is counted exactly once"
    return result, rows


def emails() -> set[str]:
    return set(Contact.objects.values_list("email", flat=True))


@pytest.mark.parametrize("bom", [False, True])
def test_utf8_with_and_without_bom(tmp_path: Path, bom: bool) -> None:
    path = write_csv(tmp_path, "Email,First Name\nzoe@x.example,Zoë\n", bom=bom)
    result, _ = run(path, tmp_path)
    assert result.encoding == ("utf-8-sig" if bom else "utf-8")
    assert result.mapping == {"Email": "email", "First Name": "first_name"}  # BOM not glued to the header
    assert Contact.objects.get().first_name == "Zoë"


@pytest.mark.parametrize(
    ("encoding", "name", "detected"),
    [("latin-1", "José Müller", "cp1252"), ("cp1252", "“Smart” €uro", "cp1252")],
)
def test_windows_1252_and_latin1_files_are_detected(tmp_path: Path, encoding: str, name: str, detected: str) -> None:
    path = write_csv(tmp_path, f"email;name\nj@x.example;{name}\n", encoding=encoding)
    result, _ = run(path, tmp_path, mapping={"email": "email", "name": "first_name"})
    assert result.encoding == detected
    assert Contact.objects.get().first_name == name


def test_bytes_undefined_in_cp1252_fall_back_to_latin1(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_bytes(b"email,company\na@x.example,Caf\xe9\x81\n")
    result, _ = run(path, tmp_path)
    assert result.encoding == "latin-1"
    assert Contact.objects.get().company == "Café\x81"


def test_chosen_encoding_wins_over_detection(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "email,company\na@x.example,Caf\u00e9\n", encoding="latin-1")
    run(path, tmp_path, encoding="latin-1")
    assert Contact.objects.get().company == "Café"


@pytest.mark.parametrize(("delimiter", "name"), [(",", "comma"), (";", "semicolon"), ("\t", "tab")])
def test_delimiters_are_sniffed(tmp_path: Path, delimiter: str, name: str) -> None:
    text = delimiter.join(["Email Address", "Company", "Job Title"]) + "\n"
    text += delimiter.join(["a@x.example", "Acme, Inc.", "CTO"]) + "\n"
    if delimiter == ",":
        text = 'Email Address,Company,Job Title\na@x.example,"Acme, Inc.",CTO\n'
    result, _ = run(write_csv(tmp_path, text), tmp_path)
    assert result.delimiter == delimiter
    contact = Contact.objects.get()
    assert (contact.company, contact.job_title) == ("Acme, Inc.", "CTO")


def test_quoted_newlines_blank_lines_and_trailing_columns(tmp_path: Path) -> None:
    text = (
        "email,company,job_title,\r\n"          # trailing delimiter in the header
        "\r\n"
        'a@x.example,"Line one\nLine two",CTO,\r\n'  # quoted newline, trailing empty column
        ",,,\r\n"                                # a row of empty cells
        "\r\n"
        "b@x.example,Globex\r\n"                 # short row: missing cells are empty
        "bad-address,Initech,CEO\r\n"            # line 8
    )
    result, report = run(write_csv(tmp_path, text), tmp_path)
    assert (result.rows_read, result.created, result.rejected) == (3, 2, 1)
    assert Contact.objects.get(email="a@x.example").company == "Line one\nLine two"
    assert Contact.objects.get(email="b@x.example").job_title == ""
    assert report == [{"line": "8", "column": "email", "value": "bad-address",
                       "reason": "not a valid email address: an email address must have an @-sign"}]


def test_a_row_with_more_values_than_columns_is_rejected_not_misaligned(tmp_path: Path) -> None:
    text = "email,company\na@x.example,Acme,Oops extra\nb@x.example,Globex\n"
    result, report = run(write_csv(tmp_path, text), tmp_path)
    assert emails() == {"b@x.example"}
    assert report[0]["line"] == "2"
    assert "3 values but the header has 2 columns" in report[0]["reason"]
    assert result.rejected == 1


def test_emails_are_normalised_and_invalid_ones_reported(tmp_path: Path) -> None:
    text = "E-mail\n  Ann@Example.COM \nnot-an-email\n\nx@\n"
    result, report = run(write_csv(tmp_path, text), tmp_path)
    assert emails() == {"ann@example.com"}
    assert [(r["line"], r["column"], r["value"]) for r in report] == [
        ("3", "E-mail", "not-an-email"), ("5", "E-mail", "x@")]
    assert result.rejected == 2


def test_an_empty_email_cell_is_rejected(tmp_path: Path) -> None:
    _, report = run(write_csv(tmp_path, "email,first_name\n,Ann\n"), tmp_path)
    assert report == [{"line": "2", "column": "email", "value": "", "reason": "email is empty"}]


def test_duplicates_in_the_file_last_row_wins_and_are_reported(tmp_path: Path) -> None:
    text = "email,first_name,company\nann@x.example,Ann,Acme\nbob@x.example,Bob,\nANN@x.example,Annie,Globex\n"
    result, report = run(write_csv(tmp_path, text), tmp_path)
    assert (result.created, result.duplicates) == (2, 1)
    ann = Contact.objects.get(email="ann@x.example")
    assert (ann.first_name, ann.company) == ("Annie", "Globex")
    assert report == [{"line": "2", "column": "email", "value": "ann@x.example",
                       "reason": "duplicate in file: line 4 has the same email and wins"}]


@pytest.fixture
def existing() -> Contact:
    return Contact.objects.create(email="ann@x.example", first_name="Ann", company="", job_title="CTO",
                                  attributes={})


def test_on_existing_update_overwrites_with_non_empty_values_only(tmp_path: Path, existing: Contact) -> None:
    text = "email,first_name,company,job_title\nann@x.example,Annie,Acme,\nnew@x.example,New,,\n"
    result, _ = run(write_csv(tmp_path, text), tmp_path, on_existing="update")
    assert (result.created, result.updated, result.skipped) == (1, 1, 0)
    existing.refresh_from_db()
    assert (existing.first_name, existing.company, existing.job_title) == ("Annie", "Acme", "CTO")


def test_on_existing_skip_leaves_existing_contacts_alone(tmp_path: Path, existing: Contact) -> None:
    text = "email,first_name,company\nann@x.example,Annie,Acme\nnew@x.example,New,\n"
    result, _ = run(write_csv(tmp_path, text), tmp_path, on_existing="skip")
    assert (result.created, result.updated, result.skipped) == (1, 0, 1)
    existing.refresh_from_db()
    assert (existing.first_name, existing.company) == ("Ann", "")


def test_on_existing_fill_empty_only_fills_blanks(tmp_path: Path, existing: Contact) -> None:
    text = "email,first_name,company\nann@x.example,Annie,Acme\n"
    result, _ = run(write_csv(tmp_path, text), tmp_path, on_existing="fill-empty")
    assert result.updated == 1
    existing.refresh_from_db()
    assert (existing.first_name, existing.company) == ("Ann", "Acme")


def test_attributes_merge_per_mode(tmp_path: Path) -> None:
    CustomField.objects.create(key="plan", label="Plan")
    CustomField.objects.create(key="seats", label="Seats", field_type="number")
    contact = Contact.objects.create(email="a@x.example", attributes={"plan": "free", "seats": 3})
    path = write_csv(tmp_path, "email,plan\na@x.example,team\n")
    run(path, tmp_path, on_existing="fill-empty")
    contact.refresh_from_db()
    assert contact.attributes == {"plan": "free", "seats": 3}
    run(path, tmp_path, on_existing="update")
    contact.refresh_from_db()
    assert contact.attributes == {"plan": "team", "seats": 3}


def test_custom_fields_are_typed_and_validated(tmp_path: Path) -> None:
    CustomField.objects.create(key="plan", label="Plan", field_type="choice", choices=["free", "team"])
    CustomField.objects.create(key="seats", label="Seats", field_type="number")
    CustomField.objects.create(key="renewal", label="Renewal", field_type="date")
    CustomField.objects.create(key="vip", label="VIP", field_type="bool")
    CustomField.objects.create(key="region", label="Region", required=True)
    text = (
        "email,plan,seats,renewal,vip,region\n"
        "a@x.example,TEAM,12,2027-01-31,yes,EMEA\n"
        "b@x.example,gold,1.5,31/01/2027,maybe,\n"
    )
    result, report = run(write_csv(tmp_path, text), tmp_path)
    assert Contact.objects.get().attributes == {"plan": "team", "seats": 12, "renewal": "2027-01-31", "vip": True,
                                                "region": "EMEA"}
    reasons = {r["column"]: r["reason"] for r in report}
    assert reasons["plan"] == "not one of: free, team"
    assert "is not a date" in reasons["renewal"]
    assert "is not yes/no" in reasons["vip"]
    assert reasons["region"] == "required"
    assert "seats" not in reasons  # 1.5 is a fine number
    assert result.rejected == 1
    assert len(report) == 4


def test_unknown_columns_become_text_fields_only_when_allowed(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "email,Favourite Colour\na@x.example,blue\n")
    result, _ = run(path, tmp_path)
    assert result.mapping["Favourite Colour"] == ""
    assert not CustomField.objects.exists()
    result, _ = run(path, tmp_path, create_fields=True)
    assert result.created_fields == ["favourite_colour"]
    assert CustomField.objects.get().field_type == "text"
    assert Contact.objects.get().attributes == {"favourite_colour": "blue"}


def test_tag_and_list_are_applied_to_everyone_in_the_file(tmp_path: Path, existing: Contact) -> None:
    path = write_csv(tmp_path, "email\nann@x.example\nnew@x.example\n")
    run(path, tmp_path, tag="webinar-2026", list_name="Webinar attendees")
    tag, contact_list = Tag.objects.get(), ContactList.objects.get()
    assert set(tag.contacts.values_list("email", flat=True)) == {"ann@x.example", "new@x.example"}
    assert contact_list.contacts.count() == 2
    run(path, tmp_path, tag="webinar-2026")  # again: no duplicate links, no error
    assert tag.contacts.count() == 2


def test_consent_columns_record_source_and_time(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "email,consent\na@x.example,yes\nb@x.example,opted out\n", name="fair.csv")
    run(path, tmp_path, source_name="fair.csv")
    a, b = Contact.objects.get(email="a@x.example"), Contact.objects.get(email="b@x.example")
    assert (a.consent_status, a.consent_source) == ("granted", "import: fair.csv")
    assert a.consent_at is not None
    assert b.consent_status == "withdrawn"


def test_dry_run_counts_but_changes_nothing(tmp_path: Path, existing: Contact) -> None:
    path = write_csv(tmp_path, "email,first_name,Colour\nann@x.example,Annie,red\nnew@x.example,New,blue\nbad,X,\n")
    result, report = run(path, tmp_path, dry_run=True, create_fields=True, tag="t")
    assert (result.created, result.updated, result.rejected) == (1, 1, 1)
    assert len(report) == 1
    assert emails() == {"ann@x.example"}
    existing.refresh_from_db()
    assert existing.first_name == "Ann"
    assert not CustomField.objects.exists()
    assert not Tag.objects.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook"),
        (b"", "empty"),
        (b"%PDF-1.7 binary", "PDF"),
        (b"name,company\nAnn,Acme\n", "no column is mapped to email"),
        (b"email,email\na@x.example,b@x.example\n", "twice"),
        (b'email,company\na@x.example,"never closed\n' + b"x" * (1024 * 1024 + 10) + b"\n", "not valid CSV"),
    ],
)
def test_unreadable_files_fail_with_a_clear_message_and_change_nothing(
    tmp_path: Path, existing: Contact, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=message):
        run_import(path, ImportOptions(), report_path=tmp_path / "r.csv")
    assert emails() == {"ann@x.example"}


def test_a_bad_byte_late_in_a_file_with_a_chosen_encoding_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    path.write_bytes(b"email\n" + b"".join(f"u{i}@x.example\n".encode() for i in range(5)) + b"caf\xe9@x.example\n")
    with pytest.raises(ImportFileError, match="Line 7: bytes that are not utf-8"):
        run_import(path, ImportOptions(encoding="utf-8"), report_path=tmp_path / "r.csv")
    assert not Contact.objects.exists()


def test_files_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "email\n" + "a@x.example\n" * 100)
    with pytest.raises(ImportFileError, match="the limit is"):
        run_import(path, ImportOptions(max_bytes=100), report_path=tmp_path / "r.csv")
    assert not Contact.objects.exists()


def test_a_mapping_naming_a_missing_column_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "email\na@x.example\n")
    with pytest.raises(ImportFileError, match="'Mail' is not in the file's header"):
        run_import(path, ImportOptions(mapping={"Mail": "email"}), report_path=tmp_path / "r.csv")


def test_report_cells_that_look_like_formulas_are_escaped(tmp_path: Path) -> None:
    _, report = run(write_csv(tmp_path, 'email\n"=HYPERLINK(""http://evil.example"")"\n'), tmp_path)
    assert report[0]["value"].startswith("'=")


def test_cli_prints_one_json_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path, "Email;Company\na@x.example;Acme\nbroken;X\na@x.example;Acme 2\n")
    call_command("import_contacts", str(path), "--json", "--tag", "cli", "--on-existing", "update",
                 "--report", str(tmp_path / "rep.csv"))
    data = json.loads(capsys.readouterr().out)
    assert {k: data[k] for k in ("created", "updated", "skipped", "rejected", "duplicates")} == {
        "created": 1, "updated": 0, "skipped": 0, "rejected": 1, "duplicates": 1}
    assert data["error_report"] == str(tmp_path / "rep.csv")
    assert Contact.objects.get().company == "Acme 2"


def test_cli_mapping_and_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path, "Mail,Org\na@x.example,Acme\n")
    mapping = '{"Mail": "email", "Org": "company"}'
    call_command("import_contacts", str(path), "--json", "--dry-run", "--mapping", mapping)
    data = json.loads(capsys.readouterr().out)
    assert data["created"] == 1
    assert data["dry_run"] is True
    assert not Contact.objects.exists()


def test_cli_import_runs_the_admin_imports_followup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18: fit scores, segments (and CRM sync) must not wait after a command-line import."""
    from contacts.models import ImportJob, Segment, SegmentMembership
    from scoring.models import ScoringRule

    # given a fit rule and a segment on country
    ScoringRule.objects.create(name="Germany", kind="fit", points=7,
                               conditions={"field": "country", "op": "eq", "value": "DE"})
    segment = Segment.objects.create(name="Germans", definition={"field": "country", "op": "eq", "value": "DE"})
    path = write_csv(tmp_path, "email,country\nhans@x.example,DE\nann@x.example,GB\n")
    # when the file is imported from the shell
    call_command("import_contacts", str(path), "--json", "--report", str(tmp_path / "rep.csv"))
    data = json.loads(capsys.readouterr().out)
    # then scores and segments are up to date when the command returns
    assert Contact.objects.get(email="hans@x.example").score == 7
    assert Contact.objects.get(email="ann@x.example").score == 0
    assert list(SegmentMembership.objects.filter(segment=segment).values_list("contact__email", flat=True)) == [
        "hans@x.example"]
    # and the import is recorded like the admin's, with the follow-up in its log
    job = ImportJob.objects.get(pk=data["import_job"])
    assert (job.status, job.created, job.rows_read, job.original_name) == ("completed", 2, 2, path.name)
    assert job.log[-1]["message"] == "fit scores and segments updated"


def test_cli_dry_run_records_no_import_and_runs_no_followup(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from contacts.models import ImportJob

    call_command("import_contacts", str(write_csv(tmp_path, "email\na@x.example\n")), "--json", "--dry-run")
    data = json.loads(capsys.readouterr().out)
    assert (data["import_job"], data["followup_seconds"]) == (None, None)
    assert not ImportJob.objects.exists()


def test_stray_quotes_and_quoted_newlines_read_as_the_csv_module_reads_them(tmp_path: Path, reader: str) -> None:
    # a quote inside an unquoted cell is a literal quote; the parallel reader cannot cut such a
    # file safely and reads it again in one process (same result, same line numbers)
    path = write_csv(tmp_path, 'email,company\na@x.example,Ac"me\n"b@x.example","multi\nline"\nbad,"x"\n'
                               'c@x.example,"O""Brien"\n')
    result, report = run(path, tmp_path)
    assert (result.rows_read, result.created, result.rejected) == (4, 3, 1)
    assert Contact.objects.get(email="a@x.example").company == 'Ac"me'
    assert Contact.objects.get(email="b@x.example").company == "multi\nline"
    assert Contact.objects.get(email="c@x.example").company == 'O"Brien'
    assert [row["line"] for row in report] == ["5"]
