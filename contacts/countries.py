"""Country input to ISO 3166-1 alpha-2, the code a contact stores.

Uses `iso3166` (self-contained ISO 3166-1 tables, https://pypi.org/project/iso3166/): alpha-2,
alpha-3 and numeric codes and the official names. People also type the short names the ISO list
spells differently ("United States", "UK", "Russia", "South Korea"); those are mapped here.
Anything else is refused with the value in the message, so "XX" no longer passes as a country.
"""

from __future__ import annotations

import re
from functools import cache

from django.core.exceptions import ValidationError
from iso3166 import countries

# Common names and codes that are not ISO spellings (lower case, single spaces).
ALIASES = {
    "united states": "US", "america": "US", "u.s.": "US", "u.s.a.": "US", "uk": "GB", "u.k.": "GB",
    "united kingdom": "GB", "great britain": "GB", "britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "northern ireland": "GB", "russia": "RU", "south korea": "KR",
    "north korea": "KP", "iran": "IR", "vietnam": "VN", "syria": "SY", "laos": "LA", "moldova": "MD",
    "tanzania": "TZ", "taiwan": "TW", "bolivia": "BO", "venezuela": "VE", "czech republic": "CZ",
    "czechia": "CZ", "holland": "NL", "the netherlands": "NL", "netherlands": "NL", "ivory coast": "CI",
    "uae": "AE", "macedonia": "MK", "vatican": "VA", "brunei": "BN", "palestine": "PS", "micronesia": "FM",
    "turkey": "TR", "cape verde": "CV", "swaziland": "SZ", "burma": "MM",
}


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip()).casefold()


@cache
def _names() -> dict[str, str]:
    """Official names and their short forms ("Bolivia (Plurinational State of)" -> "bolivia")."""
    names: dict[str, str] = {}
    shorts: dict[str, set[str]] = {}
    for country in countries:
        for name in (country.name, country.apolitical_name):
            names[_key(name)] = country.alpha2
            shorts.setdefault(_key(re.split(r" \(|,", name)[0]), set()).add(country.alpha2)
    # A short form two countries share ("korea") is no answer.
    unique = {short: codes.pop() for short, codes in shorts.items() if len(codes) == 1}
    return {**unique, **names, **ALIASES}


def country_code(raw: str) -> str:
    """The alpha-2 code for `raw` ("" stays ""), or ValidationError naming what was typed."""
    text = (raw or "").strip()
    if not text:
        return ""
    if len(text) in (2, 3) and text.isascii() and text.isalnum():
        try:
            return countries.get(text.upper()).alpha2
        except KeyError:
            pass  # "UK" is no ISO code but a common name
    code = _names().get(_key(text))
    if code is None:
        raise ValidationError(f"Unknown country {text!r}: use an ISO 3166 code (DE, DEU) or a country name "
                              "(Germany).", code="unknown_country")
    return code
