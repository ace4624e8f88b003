"""Look-alike spellings of one address are one contact and one suppression key, through every
write path, and none of them gets mail once the address unsubscribed (issue 14, item 4)."""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import re
import unicodedata
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.validators import validate_email
from django.test import Client
from hypothesis import example, given, settings
from hypothesis import strategies as st

from campaigns import tracking
from campaigns.delivery import delivery_run_batch
from campaigns.models import Message, MessageStatus, Suppression, SuppressionReason
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_template
from contacts.apikeys import api_key_create
from contacts.emails import _CANONICAL_ASCII, InvalidEmail, _library_canonical, email_canonical
from contacts.imports.engine import ImportOptions, run_import
from contacts.models import ConsentStatus, Contact, Event
from contacts.services import contact_erase, contact_upsert
from core.queues import get_connection

BOB = "bob@example.com"
# (id, spelling of bob@example.com, None: the same contact | what the refusal names)
SPELLINGS: list[tuple[str, str, str | None]] = [
    ("upper-case", "BOB@EXAMPLE.COM", None),
    ("upper-case-domain", "bob@Example.COM", None),
    ("fullwidth", "ｂｏｂ@ｅｘａｍｐｌｅ.ｃｏｍ", None),
    ("fullwidth-domain", "bob@ｅｘａｍｐｌｅ.ｃｏｍ", None),
    ("fullwidth-at-and-dot", "bob＠example．com", None),
    ("ideographic-full-stop", "bob@example。com", None),
    ("script-capital-b", "\u212cob@example.com", None),
    ("mathematical-bold", "\U0001d41b\U0001d428\U0001d41b@example.com", None),
    ("padded", " \u00a0bob@example.com\u3000\t", None),
    ("soft-hyphen-domain", "bob@exam\u00adple.com", "U+00AD SOFT HYPHEN"),
    ("soft-hyphen-local", "b\u00adob@example.com", "U+00AD SOFT HYPHEN"),
    ("zero-width-space", "bob\u200b@example.com", "U+200B ZERO WIDTH SPACE"),
    ("zero-width-non-joiner", "bob@exa\u200cmple.com", "U+200C ZERO WIDTH NON-JOINER"),
    ("zero-width-joiner", "bo\u200db@example.com", "U+200D ZERO WIDTH JOINER"),
    ("word-joiner", "bob@example.com\u2060", "U+2060 WORD JOINER"),
    ("bom", "\ufeffbob@example.com", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("bidi-override", "bob@\u202eexample.com", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("no-break-space-inside", "bob\u00a0@example.com", "U+00A0 NO-BREAK SPACE"),
    ("control-character", "bob@exa\u0007mple.com", "U+0007"),
    ("space-inside", "bob @example.com", "U+0020 SPACE"),
]
BUCHER = "bob@xn--bcher-kva.de"
IDN_SPELLINGS = ["bob@bücher.de", "bob@bu\u0308cher.de", "bob@BÜCHER.DE", "bob@XN--BCHER-KVA.DE", "BOB@ｂüｃｈｅｒ.de"]


def ids(table: list[tuple[str, str, str | None]]) -> list[str]:
    return [row[0] for row in table]


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()


# --- The rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "raw", "refusal"), SPELLINGS, ids=ids(SPELLINGS))
def test_each_spelling_is_the_canonical_address_or_refused_naming_the_character(name: str, raw: str,
                                                                              refusal: str | None) -> None:
    if refusal is None:
        assert email_canonical(raw) == BOB
    else:
        with pytest.raises(InvalidEmail, match=re.escape(refusal)):
            email_canonical(raw)


@pytest.mark.parametrize("raw", IDN_SPELLINGS)
def test_every_spelling_of_an_idn_domain_is_its_a_label(raw: str) -> None:
    assert email_canonical(raw) == BUCHER


@pytest.mark.parametrize("raw", ["bücher@example.com", "bu\u0308cher@example.com", "\"bob\"@example.com",
                                 "bob@[192.0.2.1]", "bob@host.local"])
def test_addresses_with_a_second_spelling_or_no_way_to_send_are_refused(raw: str) -> None:
    # non-ASCII local parts (precomposed or combining: both refused alike), quoted local parts
    # ("bob" is bob), IP literals, special-use domains
    with pytest.raises(InvalidEmail, match="not a valid email address"):
        email_canonical(raw)


# Addresses built from pieces that look alike, so the properties meet the interesting cases.
PIECES = ["b", "o", "B", "ｂ", "ℬ", "k", "\u212a", "s", "ſ", "ß", "ü", "u\u0308", "ﬁ", ".", "-", "+", "_",
          "\u00ad", "\u200b", "\u200d", "\ufeff", "\u202e", " ", "\u00a0", "\u3000", "x", "n", "0", "İ", "\u0307"]
HOSTS = ["example.com", "EXAMPLE.com", "ｅｘａｍｐｌｅ.ｃｏｍ", "example。com", "bücher.de", "bu\u0308cher.de",
         "xn--bcher-kva.de", "XN--BCHER-KVA.de", "exam\u00adple.com", "leadflow.test", "a--b.com", "x.local"]
addresses = st.one_of(
    st.builds(lambda local, host: f"{''.join(local)}@{host}",
              st.lists(st.sampled_from(PIECES), min_size=1, max_size=8), st.sampled_from(HOSTS)),
    st.lists(st.sampled_from([*PIECES, "@", "＠", "．"]), max_size=20).map("".join),
    st.emails(),
)


@given(addresses)
@example("bob@example.com")
@example("ｂｏｂ@ｅｘａｍｐｌｅ.ｃｏｍ")
def test_canonical_form_is_idempotent_ascii_and_valid_for_django(raw: str) -> None:
    try:
        canonical = email_canonical(raw)
    except InvalidEmail:
        return
    assert email_canonical(canonical) == canonical
    assert canonical.isascii()
    assert canonical == canonical.lower()
    assert len(canonical) <= 254
    validate_email(canonical)  # what the model's EmailField checks


@given(addresses)
def test_nfkc_equivalent_spellings_have_one_canonical_form_or_are_refused(raw: str) -> None:
    results = set()
    for form in ("NFC", "NFD", "NFKC", "NFKD"):
        try:
            results.add(email_canonical(unicodedata.normalize(form, raw)))
        except InvalidEmail:
            pass
    assert len(results) <= 1


@settings(max_examples=300)
@given(st.from_regex(_CANONICAL_ASCII, fullmatch=True))
def test_the_ascii_fast_path_agrees_with_email_validator(email: str) -> None:
    # What the import's fast path passes unchanged, the library's path returns unchanged.
    if len(email) <= 254 and "--" not in email:  # the fast path's other two conditions
        assert _library_canonical(email) == email


# --- Write paths -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_csv_import_merges_look_alikes_into_the_contact_or_refuses_them_by_line(tmp_path: Path) -> None:
    contact_upsert(email=BOB, first_name="Bob")
    lines = ["Email,First Name"] + [f"{raw},{name}" for name, raw, _ in SPELLINGS]
    path = tmp_path / "lookalikes.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = tmp_path / "report.csv"
    result = run_import(path, ImportOptions(), report_path=report)

    assert list(Contact.objects.values_list("email", flat=True)) == [BOB]
    refused = [name for name, _, refusal in SPELLINGS if refusal]
    assert (result.updated, result.created, result.rejected) == (1, 0, len(refused))
    with open(report, newline="", encoding="utf-8-sig") as fh:
        rows = {row["line"]: row for row in csv.DictReader(fh)}
    for line, (_name, _raw, refusal) in enumerate(SPELLINGS, start=2):
        if refusal:
            assert rows[str(line)]["column"] == "Email"
            assert refusal in rows[str(line)]["reason"]
        else:
            assert "same email" in rows.get(str(line), {"reason": "same email (the last line wins)"})["reason"]


@pytest.mark.django_db
def test_csv_import_stores_the_a_label_of_an_idn_domain(tmp_path: Path) -> None:
    path = tmp_path / "idn.csv"
    path.write_text("Email\n" + "\n".join(IDN_SPELLINGS) + "\n", encoding="utf-8")
    result = run_import(path, ImportOptions(), report_path=tmp_path / "r.csv")
    assert (result.created, result.duplicates) == (1, len(IDN_SPELLINGS) - 1)
    assert list(Contact.objects.values_list("email", flat=True)) == [BUCHER]


def full_key(name: str) -> str:
    """A key that may call every endpoint (keys are scoped; a new key only sends events)."""
    kwargs: dict[str, Any] = {}
    if "scopes" in inspect.signature(api_key_create).parameters:
        from contacts import models

        kwargs["scopes"] = list(models.ApiScope.values)
    return api_key_create(name=name, **kwargs)[1]


def api_post(raw_key: str, path: str, body: Any) -> Any:
    return Client().post(f"/api/v1/{path}", json.dumps(body), content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {raw_key}")


@pytest.mark.django_db
def test_contacts_and_events_api_never_make_a_second_contact_for_a_look_alike() -> None:
    raw_key = full_key("website")
    contact_upsert(email=BOB)
    items = [{"email": raw, "first_name": name} for name, raw, _ in SPELLINGS]
    body = api_post(raw_key, "contacts", {"contacts": items}).json()
    refused = {i for i, (_, _, refusal) in enumerate(SPELLINGS) if refusal}
    assert {e["index"] for e in body["errors"]} == refused
    for error in body["errors"]:
        assert SPELLINGS[error["index"]][2] in error["message"]
    assert (body["created"], body["updated"]) == (0, len(SPELLINGS) - len(refused))

    events = [{"email": raw, "type": "page.viewed", "idempotency_key": f"k-{name}"} for name, raw, _ in SPELLINGS]
    body = api_post(raw_key, "events", {"events": events}).json()
    assert {e["index"] for e in body["errors"]} == refused
    assert all(SPELLINGS[e["index"]][2] in e["message"] for e in body["errors"])
    assert list(Contact.objects.values_list("email", flat=True)) == [BOB]
    assert set(Event.objects.values_list("contact__email", flat=True)) == {BOB}


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "raw", "refusal"), SPELLINGS, ids=ids(SPELLINGS))
def test_admin_add_form_finds_the_existing_contact_or_refuses(role_users: dict[str, User], name: str, raw: str,
                                                             refusal: str | None) -> None:
    Contact.objects.create(email=BOB)
    client = Client()
    client.force_login(role_users["marketer"])
    response = client.post("/admin/contacts/contact/add/", {
        "email": raw, "lifecycle_stage": "lead", "consent_status": "unknown", "attributes": "{}",
        "consent_at_0": "", "consent_at_1": "",
    })
    assert response.status_code == 200  # the form again, with the error
    page = response.content.decode()
    assert (refusal or "Contact with this Email already exists") in page
    assert Contact.objects.count() == 1


# --- Suppression and delivery ----------------------------------------------------------------------


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


@pytest.mark.django_db
def test_no_spelling_of_an_unsubscribed_address_gets_mail(sender: Any, sink: Any) -> None:
    # given bob, mailed once, who unsubscribes with the link in that email
    template = make_template()
    bob = contact_upsert(email=BOB, consent_status=ConsentStatus.GRANTED, consent_source="form")[0]
    messages_queue(template=template, items=[QueueItem(bob.pk, "first")])
    delivery_run_batch(sender=sender)
    assert [r.rcpt_tos for r in sink.received] == [[BOB]]
    assert Client().post(path_of(tracking.unsubscribe_url(Message.objects.get().pk))).status_code == 200
    assert Suppression.objects.get().email == BOB

    # when every spelling comes back with fresh consent through the API and a CSV import ...
    raw_key = full_key("website")
    api_post(raw_key, "contacts", {"contacts": [
        {"email": raw, "consent_status": "granted", "consent_source": "form"} for _, raw, _ in SPELLINGS]})
    # ... and as rows written before the canonical rule (the look-alikes the old code let in)
    legacy = ["bob@ｅｘａｍｐｌｅ.ｃｏｍ", "bob@exam\u00adple.com", "bob@example.com\u200b", "bob@example.com\ufeff"]
    Contact.objects.bulk_create([Contact(email=e, consent_status=ConsentStatus.GRANTED) for e in legacy],
                                ignore_conflicts=True)
    queued = [QueueItem(pk, f"again:{pk}") for pk in Contact.objects.values_list("pk", flat=True)]
    messages_queue(template=template, items=queued)
    delivery_run_batch(sender=sender)

    # then nothing more reached the SMTP server, and each message says why
    assert len(sink.received) == 1
    outcomes = dict(Message.objects.exclude(idempotency_key="first").values_list("contact__email", "reason"))
    assert outcomes == {BOB: "unsubscribed", "bob@ｅｘａｍｐｌｅ.ｃｏｍ": "unsubscribed",
                        "bob@exam\u00adple.com": "invalid_address", "bob@example.com\u200b": "invalid_address",
                        "bob@example.com\ufeff": "invalid_address"}
    assert set(Message.objects.exclude(idempotency_key="first").values_list("status", flat=True)) == {
        MessageStatus.SUPPRESSED}


@pytest.mark.django_db
def test_a_legacy_look_alike_row_is_sent_to_the_canonical_address(sender: Any, sink: Any) -> None:
    Contact.objects.bulk_create([Contact(email="ann@ｅｘａｍｐｌｅ.ｃｏｍ", consent_status=ConsentStatus.GRANTED)])
    messages_queue(template=make_template(), items=[QueueItem(Contact.objects.get().pk, "one")])
    delivery_run_batch(sender=sender)
    assert [r.rcpt_tos for r in sink.received] == [["ann@example.com"]]
    assert Message.objects.get().to_email == "ann@example.com"


@pytest.mark.django_db
def test_an_erasure_keeps_the_hash_of_the_canonical_address_and_it_stops_a_look_alike(sender: Any, sink: Any) -> None:
    carol = contact_upsert(email="Carol@Example.com")[0]
    contact_erase(contact=carol, actor=None)
    entry = Suppression.objects.get()
    assert (entry.email, entry.reason) == ("", SuppressionReason.ERASED)
    assert entry.email_hash == hashlib.sha256(b"carol@example.com").hexdigest()

    again = contact_upsert(email="ＣＡＲＯＬ@ｅｘａｍｐｌｅ.ｃｏｍ")[0]
    messages_queue(template=make_template(kind="transactional"), items=[QueueItem(again.pk, "receipt")])
    delivery_run_batch(sender=sender)
    assert sink.received == []
    assert Message.objects.get().reason == SuppressionReason.ERASED


@pytest.mark.django_db
def test_a_bounce_reported_for_a_look_alike_suppresses_the_canonical_address() -> None:
    raw_key = full_key("esp")
    response = api_post(raw_key, "bounces", {"bounces": [{"email": "BOB@ｅｘａｍｐｌｅ.ｃｏｍ", "type": "hard"}]})
    assert response.status_code == 202
    assert list(Suppression.objects.values_list("email", "reason")) == [(BOB, SuppressionReason.HARD_BOUNCE)]


@pytest.mark.django_db
def test_the_suppression_admin_stores_the_canonical_address(role_users: dict[str, User]) -> None:
    client = Client()
    client.force_login(role_users["ops"])
    form = {"email": "ｂｏｂ@EXAMPLE.com", "reason": "manual", "detail": "", "source": ""}
    assert client.post("/admin/campaigns/suppression/add/", form).status_code == 302
    assert list(Suppression.objects.values_list("email", flat=True)) == [BOB]
    again = client.post("/admin/campaigns/suppression/add/", {**form, "email": "BOB@example.com"})
    assert "already on the suppression list" in again.content.decode()
    refused = client.post("/admin/campaigns/suppression/add/", {**form, "email": "bob@exam\u00adple.com"})
    assert "U+00AD SOFT HYPHEN" in refused.content.decode()
    assert Suppression.objects.count() == 1


# --- Existing data -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_audit_command_reports_collisions_and_rewrites_only_free_rows() -> None:
    Contact.objects.bulk_create([Contact(email=e) for e in
                                 [BOB, "bob@ｅｘａｍｐｌｅ.ｃｏｍ", "ann@bücher.de", "eve@exam\u00adple.com"]])
    out = StringIO()
    call_command("contacts_email_audit", stdout=out)
    report = out.getvalue()
    assert "collision: contact" in report
    assert "'bob@ｅｘａｍｐｌｅ.ｃｏｍ'" in report
    assert "would become 'ann@xn--bcher-kva.de'" in report
    assert "U+00AD SOFT HYPHEN" in report
    assert report.strip().endswith("fixed=0 collision=1 refused=1 rewritable=1")

    call_command("contacts_email_audit", "--fix", stdout=StringIO())
    assert set(Contact.objects.values_list("email", flat=True)) == {
        BOB, "bob@ｅｘａｍｐｌｅ.ｃｏｍ", "ann@xn--bcher-kva.de", "eve@exam\u00adple.com"}  # never merged
