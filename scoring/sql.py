"""SQL fragments shared by the scoring services and selectors: effective (decayed) points per vendor.

An entry's effective points are `points * 0.5 ** (age_days / half_life_days)` (entries without a
half-life never decay). PostgreSQL has POWER natively; on SQLite Django registers POWER (and the
other math functions) on every connection it opens, so the same expression runs on both. The
exponent is clamped to [0, 60]: an entry from the future does not grow, and 0.5 ** 60 times any
realistic points rounds to 0 without risking a floating-point underflow error.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection

MAX_HALF_LIVES = 60


def now_param(now: dt.datetime) -> Any:
    """`now` as the database stores datetimes (SQLite: naive UTC text; PostgreSQL: timestamptz)."""
    return connection.ops.adapt_datetimefield_value(now)


def effective_points_sql(alias: str = "e") -> str:
    """Expression for one entry's effective points; takes one parameter: now_param(now)."""
    if connection.vendor == "postgresql":
        age_days = f"EXTRACT(EPOCH FROM (CAST(%s AS timestamptz) - {alias}.created_at)) / 86400.0"
        ratio = f"CAST({age_days} AS double precision) / {alias}.half_life_days"
        half_lives = f"LEAST(GREATEST({ratio}, 0), {MAX_HALF_LIVES})"
    else:
        age_days = f"(julianday(%s) - julianday({alias}.created_at))"
        half_lives = f"MIN(MAX({age_days} / {alias}.half_life_days, 0), {MAX_HALF_LIVES})"
    return (
        f"(CASE WHEN {alias}.half_life_days IS NULL THEN {alias}.points "
        f"ELSE {alias}.points * POWER(0.5, {half_lives}) END)"
    )


def rounded_sql(expression: str) -> str:
    """Round half away from zero to an integer on both vendors (PostgreSQL's float ROUND is half-even)."""
    if connection.vendor == "postgresql":
        return f"CAST(ROUND(CAST({expression} AS numeric)) AS integer)"
    return f"CAST(ROUND({expression}) AS INTEGER)"


def epoch_bucket_sql(column: str) -> str:
    """Fixed window number of a datetime column: floor(seconds since 1970 / %s). One parameter: seconds."""
    if connection.vendor == "postgresql":
        return f"FLOOR(EXTRACT(EPOCH FROM {column}) / %s)"
    return f"CAST((julianday({column}) - 2440587.5) * 86400.0 / %s AS INTEGER)"
