"""Small SQL helpers shared by the segment and scoring services."""

from __future__ import annotations

import json
from collections.abc import Collection

from django.db import connection
from django.db.models.expressions import RawSQL


def id_set(ids: Collection[int]) -> RawSQL:
    """A subquery over these ids with ONE parameter (an array on PostgreSQL, a JSON list on SQLite),
    for `field__in=id_set(ids)`: a batch's thousands of ids as thousands of placeholders cost more
    to build, format and send than the query takes to run, and SQLite limits placeholders."""
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::bigint[])", (list(ids),))  # noqa: S611 (constant SQL)
    return RawSQL("SELECT value FROM json_each(%s)", (json.dumps(list(ids)),))  # noqa: S611


def id_set_sql(ids: Collection[int]) -> tuple[str, list[object]]:
    """id_set for raw SQL: (`SELECT ...` text, its one parameter)."""
    expression = id_set(ids)
    return expression.sql, list(expression.params)
