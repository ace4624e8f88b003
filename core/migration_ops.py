"""Migration operations for big tables.

Dropping or adding an index with Django's operations holds an ACCESS EXCLUSIVE lock on the table
for the whole build, and changing a foreign key's db_index even drops and re-validates the
constraint (every row). On the contacts, events and ledger tables (millions of rows) that stops
ingest and scoring for the duration of a deploy. `OnPostgres` keeps Django's operations for the
state and for other databases, and on PostgreSQL runs hand-written statements instead (CREATE /
DROP INDEX CONCURRENTLY: the migration must say `atomic = False`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.migrations.operations.base import Operation
from django.db.migrations.operations.special import SeparateDatabaseAndState


class OnPostgres(SeparateDatabaseAndState):
    def __init__(self, operations: Sequence[Operation], forward_sql: Sequence[str],
                 backward_sql: Sequence[str]) -> None:
        super().__init__(database_operations=list(operations), state_operations=list(operations))
        self.forward_sql, self.backward_sql = list(forward_sql), list(backward_sql)

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (self.__class__.__qualname__, [], {"operations": self.state_operations,
                                                  "forward_sql": self.forward_sql,
                                                  "backward_sql": self.backward_sql})

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        for sql in self.forward_sql:
            schema_editor.execute(sql)
        return None

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        for sql in self.backward_sql:
            schema_editor.execute(sql)
        return None

    def describe(self) -> str:
        return "Django's operations; on PostgreSQL the same schema change without long locks"
