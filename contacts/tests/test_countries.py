"""Countries are ISO 3166 (issue 19): codes, alpha-3 and common names are stored as alpha-2;
an unknown value ("XX") is refused with a message naming it, in the admin, the API and upserts."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client

from contacts.apikeys import api_key_create
from contacts.countries import country_code
from contacts.models import ApiScope, Contact
from contacts.services import contact_upsert
from core.queues import get_connection

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("typed", "code"), [
    ("US", "US"), ("us", "US"), ("USA", "US"), ("United States", "US"), ("united states of america", "US"),
    ("DEU", "DE"), ("Germany", "DE"), (" de ", "DE"), ("UK", "GB"), ("United Kingdom", "GB"), ("Russia", "RU"),
    ("Bolivia", "BO"), ("840", "US"), ("", ""),
])
def test_country_input_is_stored_as_iso_alpha2(typed: str, code: str) -> None:
    assert country_code(typed) == code


@pytest.mark.parametrize("typed", ["XX", "ZZZ", "Narnia", "Korea"])
def test_unknown_countries_are_refused_by_name(typed: str) -> None:
    with pytest.raises(ValidationError, match=f"Unknown country '{typed}'"):
        country_code(typed)


def test_upsert_takes_alpha3_and_names_and_refuses_unknown_codes() -> None:
    assert contact_upsert(email="ann@example.com", country="USA")[0].country == "US"
    assert contact_upsert(email="bob@example.com", country="Germany")[0].country == "DE"
    with pytest.raises(ValidationError, match="Unknown country 'XX'"):
        contact_upsert(email="cid@example.com", country="XX")
    assert not Contact.objects.filter(email="cid@example.com").exists()


def test_admin_form_accepts_usa_and_refuses_xx(role_users: dict[str, User]) -> None:
    client = Client()
    client.force_login(role_users["marketer"])
    form = {"email": "ann@acme.example", "lifecycle_stage": "lead", "consent_status": "unknown",
            "attributes": "{}", "consent_at_0": "", "consent_at_1": ""}
    refused = client.post("/admin/contacts/contact/add/", {**form, "country": "XX"})
    assert refused.status_code == 200
    assert "Unknown country &#x27;XX&#x27;" in refused.content.decode()
    assert not Contact.objects.exists()
    saved = client.post("/admin/contacts/contact/add/", {**form, "country": "USA"})
    assert saved.status_code == 302
    assert Contact.objects.get().country == "US"


def test_api_item_with_an_unknown_country_is_an_item_error_naming_it() -> None:
    get_connection().flushdb()
    raw = api_key_create(name="crm", scopes=ApiScope.values)[1]
    response = Client().post("/api/v1/contacts", json.dumps({"contacts": [
        {"email": "ann@example.com", "country": "USA"}, {"email": "bob@example.com", "country": "XX"}]}),
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    body = response.json()
    assert body["created"] == 1
    assert [e["index"] for e in body["errors"]] == [1]
    assert "Unknown country 'XX'" in body["errors"][0]["message"]
    assert Contact.objects.get().country == "US"
