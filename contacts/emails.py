"""Email address normalisation: the one rule every write path uses."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import validate_email


def normalize_email(raw: str) -> str:
    """Trim and lower-case the whole address (local part and domain, as one rule).

    RFC 5321 allows case-sensitive local parts, but no mainstream provider uses them and
    treating `Ann@x.com` and `ann@x.com` as two people is the classic duplicate-lead bug.
    Raises ValidationError for anything that is not a valid address.
    """
    email = (raw or "").strip().lower()
    if not email:
        raise ValidationError("email is empty", code="empty")
    validate_email(email)
    return email
