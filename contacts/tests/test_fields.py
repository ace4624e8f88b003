from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from hypothesis import given
from hypothesis import strategies as st

from contacts.imports.rows import FAST_EMAIL, check_email
from contacts.models import CustomField
from contacts.services import contact_upsert


@pytest.fixture
def fields(db: None) -> None:
    CustomField.objects.create(key="plan", label="Plan", field_type="choice", choices=["free", "team"])
    CustomField.objects.create(key="seats", label="Seats", field_type="number")
    CustomField.objects.create(key="region", label="Region", required=True)


def test_attributes_are_coerced_on_every_write(fields: None) -> None:
    contact, _ = contact_upsert(email="a@x.example", attributes={"plan": "TEAM", "seats": "7", "region": "EMEA"})
    assert contact.attributes == {"plan": "team", "seats": 7, "region": "EMEA"}


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"colour": "red", "region": "EMEA"}, "colour: unknown custom field"),
        ({"plan": "gold", "region": "EMEA"}, "plan: not one of: free, team"),
        ({"seats": "many", "region": "EMEA"}, "seats: 'many' is not a number"),
        ({"seats": True, "region": "EMEA"}, "seats: expected a number"),
        ({"plan": "free"}, "region: required"),
        (["not", "a", "dict"], "must be an object"),
    ],
)
def test_bad_attributes_are_rejected_with_the_field_named(fields: None, attributes: object, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        contact_upsert(email="a@x.example", attributes=attributes)
    assert message in " ".join(err.value.message_dict["attributes"])


def test_required_fields_apply_to_new_contacts_only(fields: None) -> None:
    contact_upsert(email="a@x.example", attributes={"region": "EMEA"})
    contact, created = contact_upsert(email="a@x.example", first_name="Ann", attributes={"plan": "free"})
    assert not created
    assert contact.attributes == {"plan": "free"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"key": "plan", "field_type": "choice", "choices": []}, "choices"),
        ({"key": "plan", "field_type": "text", "choices": ["a"]}, "choices"),
        ({"key": "email", "field_type": "text"}, "key"),
        ({"key": "Bad Key", "field_type": "text"}, "key"),
    ],
)
def test_custom_field_definitions_are_validated(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        CustomField(label="X", **kwargs).full_clean()
    assert field in err.value.message_dict


@given(st.emails())
def test_the_fast_email_check_never_accepts_what_django_rejects(email: str) -> None:
    lowered = email.lower()
    if FAST_EMAIL.fullmatch(lowered):
        validate_email(lowered)  # must not raise


@given(st.text(alphabet="abcAB.-_+@é\"\\ 0", max_size=30))
def test_check_email_agrees_with_django(raw: str) -> None:
    email = raw.strip().lower()
    try:
        validate_email(email)
        django_ok = bool(email) and len(email) <= 254
    except ValidationError:
        django_ok = False
    try:
        check_email(raw)
        ours = True
    except ValueError:
        ours = False
    assert ours == django_ok
