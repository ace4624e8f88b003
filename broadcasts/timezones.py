"""A contact's time zone, for broadcasts sent "in each contact's time zone".

Contacts have no time zone field, only a country (ISO 3166-1 alpha-2). A country's zone is the
first one IANA's zone.tab lists for it (shipped with the `tzdata` package), except for countries
spanning several zones, where the zone of most of the population is named below. A contact with
no country, or one zone.tab does not know, gets the sender's time zone. (docs/broadcasts.md)
"""

from __future__ import annotations

import zoneinfo
from functools import cache
from importlib import resources
from pathlib import Path

# Countries with several zones: the zone most of their people live in.
MAIN_ZONE = {
    "US": "America/New_York", "CA": "America/Toronto", "AU": "Australia/Sydney", "BR": "America/Sao_Paulo",
    "RU": "Europe/Moscow", "MX": "America/Mexico_City", "ID": "Asia/Jakarta", "CN": "Asia/Shanghai",
    "KZ": "Asia/Almaty", "AR": "America/Argentina/Buenos_Aires", "CL": "America/Santiago",
    "ES": "Europe/Madrid", "PT": "Europe/Lisbon", "DE": "Europe/Berlin", "NZ": "Pacific/Auckland",
    "UA": "Europe/Kyiv", "CD": "Africa/Kinshasa", "MN": "Asia/Ulaanbaatar", "EC": "America/Guayaquil",
    "MY": "Asia/Kuala_Lumpur", "UZ": "Asia/Tashkent", "GL": "America/Nuuk", "PF": "Pacific/Tahiti",
    "KI": "Pacific/Tarawa", "FM": "Pacific/Pohnpei", "MH": "Pacific/Majuro", "PG": "Pacific/Port_Moresby",
}


@cache
def _zone_table() -> dict[str, str]:
    table: dict[str, str] = {}
    try:
        text = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):  # no tzdata package: the system's copy
        text = Path("/usr/share/zoneinfo/zone.tab").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) >= 3:
            table.setdefault(parts[0].upper(), parts[2].strip())
    return table


def country_zone(country: str, default: str) -> zoneinfo.ZoneInfo:
    """The time zone for a contact in `country` (alpha-2; "" or unknown: `default`)."""
    code = (country or "").strip().upper()
    name = MAIN_ZONE.get(code) or _zone_table().get(code) or default
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo(default)
