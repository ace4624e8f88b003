"""Migration tests on existing data: move the schema to a migration and back (one harness for all)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(targets: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def applied_models():  # noqa: ANN201  the historical apps of what is applied now
    return MigrationExecutor(connection)._create_project_state(with_applied_migrations=True).apps  # type: ignore[attr-defined]


@pytest.fixture
def back_and_forth() -> Iterator[None]:
    try:
        yield
    finally:  # whatever happened, the next tests get the current schema
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
