"""Column mapping: which CSV column feeds which contact field or custom attribute."""

from __future__ import annotations

import re
from collections.abc import Mapping

from contacts.fields import FieldSpec
from contacts.imports.reader import ImportFileError

ATTR_PREFIX = "attributes."
IMPORTABLE_FIELDS = (
    "email", "first_name", "last_name", "company", "job_title", "phone", "country",
    "lifecycle_stage", "consent_status", "consent_source", "consent_at", "is_test",
)
# Normalised header (letters and digits only) -> field. Covers what CRMs, spreadsheets and
# ESPs export in English, plus a few common German/French/Spanish names.
ALIASES: dict[str, str] = {}
for _field, _names in {
    "email": ["email", "e-mail", "emailaddress", "e-mailaddress", "mail", "email1", "primaryemail", "courriel",
              "correo", "correoelectronico", "emailadresse", "workemail", "businessemail"],
    "first_name": ["firstname", "first", "givenname", "forename", "vorname", "prenom", "nombre", "fname"],
    "last_name": ["lastname", "last", "surname", "familyname", "nachname", "nom", "apellido", "lname"],
    "company": ["company", "companyname", "organization", "organisation", "account", "accountname", "firma",
                "entreprise", "empresa", "employer"],
    "job_title": ["jobtitle", "title", "position", "role", "jobrole"],
    "phone": ["phone", "phonenumber", "telephone", "tel", "mobile", "mobilephone", "cell", "telefon"],
    "country": ["country", "countrycode", "land", "pays", "pais"],
    "lifecycle_stage": ["lifecyclestage", "stage", "lifecycle"],
    "consent_status": ["consent", "consentstatus", "optin", "marketingconsent"],
    "consent_source": ["consentsource", "optinsource"],
    "consent_at": ["consentat", "consentdate", "optindate", "consentedat"],
    "is_test": ["istest", "testcontact"],
}.items():
    for _name in _names:
        ALIASES[re.sub(r"[^a-z0-9]", "", _name)] = _field


def normalise_header(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.casefold())


def attribute_key(name: str) -> str:
    """The custom field key a header would become: `Plan Tier` -> `plan_tier`."""
    key = re.sub(r"[^a-z0-9]+", "_", name.casefold()).strip("_")
    if not key or not key[0].isalpha():
        key = f"field_{key}" if key else "field"
    return key[:64]


def suggest_mapping(header: list[str], specs: Mapping[str, FieldSpec], *, create_fields: bool) -> dict[str, str]:
    """First match wins: contact field aliases, then existing custom fields, then (if allowed) a
    new custom field named after the header; otherwise the column is ignored."""
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for name in header:
        norm = normalise_header(name)
        target = ALIASES.get(norm, "")
        if not target:
            key = attribute_key(name)
            target = ATTR_PREFIX + key if (key in specs or create_fields) else ""
        if target in used:
            target = ""
        if target:
            used.add(target)
        mapping[name] = target
    return mapping


def resolve_mapping(
    mapping: Mapping[str, str], header: list[str], specs: Mapping[str, FieldSpec], *, create_fields: bool
) -> tuple[list[tuple[int, str]], list[str]]:
    """Check a mapping against the file's header; return [(column index, target)] and keys to create.

    Raises ImportFileError naming every problem at once.
    """
    errors: list[str] = []
    index = {name: i for i, name in enumerate(header)}
    plan: list[tuple[int, str]] = []
    to_create: list[str] = []
    seen: dict[str, str] = {}
    for column, target in mapping.items():
        if column not in index:
            errors.append(f"mapped column {column!r} is not in the file's header")
            continue
        if not target:
            continue
        if target in seen:
            errors.append(f"columns {seen[target]!r} and {column!r} both map to {target}")
            continue
        seen[target] = column
        if target.startswith(ATTR_PREFIX):
            key = target[len(ATTR_PREFIX):]
            if key not in specs:
                if not create_fields:
                    errors.append(f"column {column!r}: custom field {key!r} does not exist (create it, or allow "
                                  "the import to create fields)")
                    continue
                if attribute_key(key) != key:
                    errors.append(f"column {column!r}: {key!r} is not a valid field key (a-z, 0-9, _)")
                    continue
                to_create.append(key)
        elif target not in IMPORTABLE_FIELDS:
            errors.append(f"column {column!r}: unknown target {target!r}")
            continue
        plan.append((index[column], target))
    if "email" not in seen and not errors:
        errors.append("no column is mapped to email (headers: " + ", ".join(header[:20]) + ")")
    if errors:
        raise ImportFileError("The column mapping has problems: " + "; ".join(errors) + ".")
    return plan, to_create
