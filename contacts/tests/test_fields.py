from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from hypothesis import given
from hypothesis import strategies as st

from contacts.imports.rows import check_email
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


@given(st.one_of(st.emails(), st.text(alphabet="abcAB.-_+@é\"\\ 0ｂ\u00ad", max_size=30)))
def test_what_the_import_stores_passes_the_contact_email_field(raw: str) -> None:
    # The import's email check is the canonical rule (contacts/tests/test_email_canonical.py has
    # its properties); whatever it accepts, the model's EmailField accepts too.
    try:
        email = check_email(raw)
    except ValueError:
        return
    validate_email(email)  # must not raise
    assert len(email) <= 254
