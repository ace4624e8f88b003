"""Custom field values: one coercion rule per type, used by every write path
(admin form, services, API, imports) so `attributes` always holds clean, typed JSON."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ValidationError

from contacts.models import CustomField

TRUE_WORDS = {"true", "yes", "y", "1", "on"}
FALSE_WORDS = {"false", "no", "n", "0", "off"}
MAX_TEXT = 2000


class FieldSpec:
    """What coercion needs of a CustomField, detached from the ORM (imports load them once)."""

    __slots__ = ("key", "field_type", "choices", "required", "_choice_map")

    def __init__(self, key: str, field_type: str, choices: list[str], required: bool) -> None:
        self.key = key
        self.field_type = field_type
        self.choices = choices
        self.required = required
        self._choice_map = {c.casefold(): c for c in choices}

    def text_converter(self) -> Callable[[str], Any]:
        """A converter for stripped, non-empty CSV cells: same results as `coerce`, fewer branches."""
        kind = self.field_type
        if kind == CustomField.Type.CHOICE:
            choices, allowed = self._choice_map, ", ".join(self.choices)

            def choice(raw: str) -> str:
                value = choices.get(raw.casefold())
                if value is None:
                    raise ValueError(f"not one of: {allowed}")
                return value

            return choice
        if kind == CustomField.Type.NUMBER:

            def number(raw: str) -> int | float:
                if raw.isdigit():
                    return int(raw)
                return _number(raw)

            return number
        return self.coerce

    @classmethod
    def of(cls, field: CustomField) -> FieldSpec:
        return cls(field.key, field.field_type, list(field.choices or []), field.required)

    def coerce(self, value: Any) -> Any:
        """Return the stored form of `value`, or raise ValueError with a reason a marketer reads."""
        kind = self.field_type
        if isinstance(value, str):
            value = value.strip()
        if kind == CustomField.Type.TEXT:
            if isinstance(value, dict | list):
                raise ValueError("expected text")
            text = str(value)
            if len(text) > MAX_TEXT:
                raise ValueError(f"text longer than {MAX_TEXT} characters")
            return text
        if kind == CustomField.Type.NUMBER:
            return _number(value)
        if kind == CustomField.Type.DATE:
            return _date(value)
        if kind == CustomField.Type.BOOL:
            return _bool(value)
        if kind == CustomField.Type.CHOICE:
            choice = self._choice_map.get(str(value).casefold())
            if choice is None:
                raise ValueError(f"not one of: {', '.join(self.choices)}")
            return choice
        raise ValueError(f"unknown field type {kind!r}")


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        number = value
    else:
        text = str(value).replace("_", "x")  # int()/float() accept 1_000; a marketer's file should not
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError("number must be finite")
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _date(value: Any) -> str:
    text = str(value)
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text).isoformat()
        return dt.datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        raise ValueError(f"{value!r} is not a date (use YYYY-MM-DD)") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{value!r} is not yes/no")


def load_specs() -> dict[str, FieldSpec]:
    return {f.key: FieldSpec.of(f) for f in CustomField.objects.all()}


def validate_attributes(
    attributes: Any, *, creating: bool, specs: Mapping[str, FieldSpec] | None = None
) -> dict[str, Any]:
    """Coerce every value to its field's type; unknown keys and missing required fields are errors."""
    if attributes in (None, ""):
        attributes = {}
    if not isinstance(attributes, dict):
        raise ValidationError({"attributes": "must be an object of custom field values"})
    specs = load_specs() if specs is None else specs
    cleaned: dict[str, Any] = {}
    errors: list[str] = []
    for key, value in attributes.items():
        spec = specs.get(key)
        if spec is None:
            errors.append(f"{key}: unknown custom field")
            continue
        if value is None or value == "":
            continue  # empty means "no value"; it is not stored
        try:
            cleaned[key] = spec.coerce(value)
        except ValueError as exc:
            errors.append(f"{key}: {exc}")
    if creating:
        errors += [f"{key}: required" for key, spec in specs.items() if spec.required and key not in cleaned]
    if errors:
        raise ValidationError({"attributes": errors})
    return cleaned
