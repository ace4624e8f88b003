"""Row validation: one CSV row -> one staged tuple, or the reasons it is rejected."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.utils import timezone

from contacts.emails import email_canonical
from contacts.fields import FieldSpec
from contacts.imports.mapping import ATTR_PREFIX
from contacts.models import ConsentStatus, Contact, LifecycleStage

# Staging columns, in order. None in a staged cell means "not given": it never overwrites.
STAGE_COLUMNS = (
    "line", "email", "first_name", "last_name", "company", "job_title", "phone", "country",
    "lifecycle_stage", "consent_status", "consent_source", "consent_at", "is_test", "attributes",
)
TEXT_FIELDS = ("first_name", "last_name", "company", "job_title", "phone", "consent_source")
MAX_LENGTH: dict[str, int] = {
    name: int(getattr(Contact._meta.get_field(name), "max_length", 0)) for name in (*TEXT_FIELDS, "email")
}
COUNTRY = re.compile(r"[A-Z]{2}")
STAGES = {**{v: v for v in LifecycleStage.values}, **{str(label).casefold(): v for v, label in LifecycleStage.choices}}
CONSENTS = {
    **{v: v for v in ConsentStatus.values},
    **{str(label).casefold(): v for v, label in ConsentStatus.choices},
    "yes": ConsentStatus.GRANTED, "true": ConsentStatus.GRANTED, "opted in": ConsentStatus.GRANTED,
    "no": ConsentStatus.WITHDRAWN, "false": ConsentStatus.WITHDRAWN, "opted out": ConsentStatus.WITHDRAWN,
}
BOOLS = {"true": True, "yes": True, "1": True, "y": True, "false": False, "no": False, "0": False, "n": False}

RowError = tuple[str, str, str]  # (column, value, reason)


# The canonical address (contacts/emails.py: one rule for every write path, so a look-alike
# spelling merges with its contact or is refused). Pure-ASCII canonical addresses, nearly every
# row, take its regex fast path; its InvalidEmail is a ValueError naming the reason.
check_email = email_canonical


_quote = json.encoder.encode_basestring  # C-accelerated JSON string quoting


def encode_attributes(attributes: dict[str, Any]) -> str:
    """JSON for the flat str/number/bool values converters return; 3x json.dumps' speed here."""
    parts = []
    for key, value in attributes.items():
        if isinstance(value, str):
            encoded = _quote(value)
        elif value is True or value is False:
            encoded = "true" if value else "false"
        else:
            encoded = repr(value)  # int or finite float: JSON-compatible
        parts.append(f"{_quote(key)}:{encoded}")
    return "{" + ",".join(parts) + "}"


class RowValidator:
    """Compiled once per import: each mapped column gets its slot and converter, so the
    per-row loop does no lookups by name (this loop runs a million times per file)."""

    def __init__(self, plan: Sequence[tuple[int, str]], header: Sequence[str], specs: Mapping[str, FieldSpec],
                 *, consent_source: str) -> None:
        self.header = list(header)
        self.width = len(header)
        self.consent_source = consent_source
        self.now = timezone.now()
        slots = {name: i for i, name in enumerate(STAGE_COLUMNS)}
        self.consent_slots = (slots["consent_status"], slots["consent_source"], slots["consent_at"])
        self.attr_slot = slots["attributes"]
        # (column index, slot or -1 for an attribute, converter, header name, attribute key, required,
        # max length of a plain text field checked in the loop itself, or 0: most cells are text, and
        # a call per cell was a sixth of the loop)
        self.compiled: list[tuple[int, int, Callable[[str], Any], str, str, bool, int]] = []
        for index, target in plan:
            if target.startswith(ATTR_PREFIX):
                spec = specs[target[len(ATTR_PREFIX):]]
                self.compiled.append((index, -1, spec.text_converter(), self.header[index], spec.key, spec.required,
                                      0))
            else:
                required = target == "email"
                limit = MAX_LENGTH[target] if target in TEXT_FIELDS else 0
                self.compiled.append((index, slots[target], self._converter(target), self.header[index], "",
                                      required, limit))

    def validate(self, line: int, cells: list[str]) -> tuple[tuple[Any, ...] | None, list[RowError]]:
        count = len(cells)
        if count > self.width and any(c.strip() for c in cells[self.width:]):
            return None, [("", "|".join(cells[self.width:])[:200],
                           f"row has {count} values but the header has {self.width} columns")]
        out: list[Any] = [None] * len(STAGE_COLUMNS)
        out[0] = line
        attributes: dict[str, Any] | None = None
        errors: list[RowError] = []
        for index, slot, convert, column, key, required, limit in self.compiled:
            raw = cells[index].strip() if index < count else ""
            if not raw:
                if required:
                    errors.append((column, raw, "email is empty" if slot == 1 else "required"))
                continue
            if limit:
                if len(raw) > limit:
                    errors.append((column, raw, f"longer than {limit} characters"))
                else:
                    out[slot] = raw
                continue
            try:
                value = convert(raw)
            except ValueError as exc:
                errors.append((column, raw, str(exc)))
                continue
            if slot < 0:
                if attributes is None:
                    attributes = {}
                attributes[key] = value
            else:
                out[slot] = value
        if errors:
            return None, errors
        status_slot, source_slot, at_slot = self.consent_slots
        if out[status_slot] is not None and out[status_slot] != ConsentStatus.UNKNOWN:
            if out[source_slot] is None:
                out[source_slot] = self.consent_source
            if out[at_slot] is None:
                out[at_slot] = self.now
        if attributes:
            out[self.attr_slot] = encode_attributes(attributes)
        return tuple(out), []

    @staticmethod
    def _converter(target: str) -> Callable[[str], Any]:
        if target == "email":
            return check_email
        if target in TEXT_FIELDS:
            limit = MAX_LENGTH[target]

            def text(raw: str) -> str:
                if len(raw) > limit:
                    raise ValueError(f"longer than {limit} characters")
                return raw

            return text
        return {"country": _country, "lifecycle_stage": _stage, "consent_status": _consent,
                "consent_at": _moment, "is_test": _flag}[target]


def _country(raw: str) -> str:
    code = raw.upper()
    if not COUNTRY.fullmatch(code):
        raise ValueError("not a 2-letter ISO country code")
    return code


def _stage(raw: str) -> str:
    stage = STAGES.get(raw.casefold())
    if stage is None:
        raise ValueError(f"unknown stage (use one of {', '.join(LifecycleStage.values)})")
    return stage


def _consent(raw: str) -> str:
    consent = CONSENTS.get(raw.casefold())
    if consent is None:
        raise ValueError(f"unknown consent (use one of {', '.join(ConsentStatus.values)})")
    return consent


def _moment(raw: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError("not an ISO date/time (e.g. 2026-03-01 14:00)") from None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, dt.UTC)


def _flag(raw: str) -> bool:
    flag = BOOLS.get(raw.casefold())
    if flag is None:
        raise ValueError("not yes/no")
    return flag
