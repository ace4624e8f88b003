"""Email addresses in one canonical form: the rule every write path and every suppression lookup uses.

Two spellings that reach the same mailbox must be one contact and one suppression key, or an
unsubscribed person is mailed again through a look-alike (fullwidth letters, a soft hyphen or
zero-width space the eye cannot see, an upper-case or Unicode spelling of the domain).

The canonical form is pure ASCII:
- NFKC first (fullwidth and other compatibility forms become the plain letters they look like;
  email-validator applies only NFC, so we do this ourselves);
- invisible and format characters (Unicode Cf: soft hyphen, zero-width space/joiner, word joiner,
  BOM, bidi controls), control characters, and whitespace inside the address are refused, naming
  the character and its position: their meaning is ambiguous (some mail systems drop them, IDNA
  maps the soft hyphen to nothing), so we never guess;
- the whole address lower-cased (the project's rule since the start: `Ann@x.com` and `ann@x.com`
  are one person; RFC 5321 allows case-sensitive local parts, no mainstream provider uses them);
- a non-ASCII local part is refused (as Django's validator always did: sending it needs SMTPUTF8);
- the domain in its IDNA A-label form (`bücher.de`, `BÜCHER.de` and `xn--bcher-kva.de` are one
  domain; the ASCII form is also what SMTP carries without SMTPUTF8);
- syntax by email-validator (https://github.com/JoshData/python-email-validator), no DNS lookups.

Pure-ASCII addresses already in that form (nearly all of them) take a regex fast path: the CSV
import checks a million rows, and only the rare other address pays for NFKC and the library.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import idna
from django import forms
from django.core.exceptions import ValidationError
from email_validator import EmailNotValidError
from email_validator import validate_email as _library_validate

MAX_LENGTH = 254  # RFC 5321 path limit (and Contact.email's max_length)

# Canonical ASCII addresses: dot-atom local part and a hostname, all lower case. A subset of what
# email-validator accepts unchanged; the rest goes to the library: an address with "--" (Punycode
# "xn--" labels, which must decode, and the R-LDH labels it refuses) and the RFC 6761 special-use
# top-level names it refuses (".test" is allowed: test_environment below; QA and staging recipients
# use it). Lookarounds rather than backtracking: this runs once per imported row. A property test
# checks that the library returns every match unchanged.
_CANONICAL_ASCII = re.compile(
    r"[-!#$%&'*+/=?^_`{}|~0-9a-z]+(?:\.[-!#$%&'*+/=?^_`{}|~0-9a-z]+)*"
    r"@(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*"
    r"\.(?!(?:arpa|invalid|local|localhost|onion)\Z)(?!-)[a-z-]{1,63}(?<!-)"
)

_KIND = {"Cf": "an invisible formatting character", "Cc": "a control character", "Cs": "a surrogate",
         "Co": "a private-use character", "Cn": "an unassigned character", "Zs": "whitespace",
         "Zl": "a line separator", "Zp": "a paragraph separator"}


class InvalidEmail(ValueError):
    """An address the canonical rule refuses; the message says why (and names any bad character)."""


def email_canonical(raw: str) -> str:
    """The canonical form of `raw` (see the module docstring), or InvalidEmail saying why not."""
    email = raw.strip()
    if not email:
        raise InvalidEmail("email is empty")
    if email.isascii():
        if len(email) > MAX_LENGTH:
            raise InvalidEmail(f"longer than {MAX_LENGTH} characters")
        email = email.lower()
        if "--" not in email and _CANONICAL_ASCII.fullmatch(email) is not None:
            return email  # already canonical: nearly every address, without NFKC or the library
    elif len(email) > 4 * MAX_LENGTH:  # NFKC may shorten it, but not a cell of junk
        raise InvalidEmail(f"longer than {MAX_LENGTH} characters")
    else:
        _refuse_hidden(email, "")
        email = unicodedata.normalize("NFKC", email).lower()
    _refuse_hidden(email, "after Unicode NFKC normalisation ")
    return _library_canonical(email)


def _refuse_hidden(email: str, stage: str) -> None:
    for position, char in enumerate(email, 1):
        category = unicodedata.category(char)
        if category[0] in "CZ":
            name = unicodedata.name(char, "")
            label = f"U+{ord(char):04X}" + (f" {name}" if name else "")
            raise InvalidEmail(f"{stage}contains {_KIND.get(category, 'a hidden character')} ({label}) at "
                               f"position {position}; retype the address without it")


def _library_canonical(email: str) -> str:
    try:
        # No DNS (an import must not wait on resolvers); no SMTPUTF8 local parts, quoted local parts
        # or IP literals: each would be a second spelling of a mailbox, or one we cannot send to.
        # test_environment only lets the reserved ".test" domain through (and would skip DNS).
        result = _library_validate(email, check_deliverability=False, allow_smtputf8=False,
                                   test_environment=True)
    except EmailNotValidError as exc:
        raise InvalidEmail(f"not a valid email address: {_reason(exc)}") from None
    domain = result.domain
    if not domain.isascii():
        # The A-label re-encoded from the Unicode form, so every spelling of an IDN domain (even an
        # A-label with odd case inside) gets the one encoding.
        try:
            domain = idna.encode(domain).decode("ascii")
        except idna.IDNAError as exc:  # pragma: no cover - the library checked this round trip
            raise InvalidEmail(f"not a valid email address: the domain is not valid IDNA ({exc})") from None
    canonical = f"{(result.ascii_local_part or '').lower()}@{domain.lower()}"
    if len(canonical) > MAX_LENGTH:
        raise InvalidEmail(f"longer than {MAX_LENGTH} characters")
    return canonical


def _reason(exc: EmailNotValidError) -> str:
    """The library's sentence as a clause: "it must have exactly one @-sign"."""
    text = str(exc).removeprefix("The email address is not valid. ").rstrip(".")
    return text[:1].lower() + text[1:]


def normalize_email(raw: str) -> str:
    """email_canonical for callers that speak Django validation (models, forms, services)."""
    try:
        return email_canonical(raw or "")
    except InvalidEmail as exc:
        raise ValidationError(str(exc), code="invalid") from None


def suppression_key(raw: str) -> str:
    """What the suppression list keys on: the canonical form. An address the rule refuses (a
    bounce report or an old contact row from before it) still gets a stable key, its NFKC
    lower-cased form, so recording its bounce, complaint or erasure never fails; delivery never
    sends to such an address anyway (campaigns.delivery: "invalid_address")."""
    try:
        return email_canonical(raw or "")
    except InvalidEmail:
        return unicodedata.normalize("NFKC", (raw or "").strip()).lower()


def suppression_hash(raw: str) -> str:
    """SHA-256 of the suppression key: what stays on the list after an erasure."""
    return hashlib.sha256(suppression_key(raw).encode("utf-8")).hexdigest()


class CanonicalEmailField(forms.CharField):
    """A form field that stores the canonical form (admin forms): a look-alike spelling becomes
    the address it looks like, so the unique check finds the existing contact."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("max_length", MAX_LENGTH * 4)  # the raw input may shrink under NFKC
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def to_python(self, value: object) -> str:
        text = super().to_python(value)
        return normalize_email(text) if text else ""
