"""Log lines about rows carry the rows' correlation ids: one shared id becomes the line's own,
mixed ids are listed with their rows, and per-row work runs under its row's id."""

from __future__ import annotations

import json
import logging

from core.logs import (
    CorrelationFilter,
    JsonFormatter,
    contact_causes,
    correlation_for_contact,
    correlation_id,
    correlation_scope,
    current_correlation_id,
    rows_extra,
)


def line(message: str, **extra: object) -> dict[str, object]:
    """What the production handler writes for logger.info(message, extra=extra)."""
    record = logging.getLogger("test").makeRecord("test", logging.INFO, __file__, 1, message, (), None, extra=extra)
    CorrelationFilter().filter(record)
    return json.loads(JsonFormatter().format(record))


def test_rows_sharing_one_id_make_it_the_lines_id_over_the_requests() -> None:
    token = correlation_id.set("the-job")
    try:
        logged = line("messages queued", **rows_extra("message_ids", [(1, "req-a"), (2, "req-a")]))
    finally:
        correlation_id.reset(token)
    assert logged["correlation_id"] == "req-a"
    assert logged["message_ids"] == [1, 2]
    assert "correlation_ids" not in logged


def test_rows_of_several_ids_are_listed_under_each_and_the_line_keeps_the_jobs_id() -> None:
    token = correlation_id.set("the-job")
    try:
        logged = line("events processed", **rows_extra("event_ids", [(1, "req-a"), (2, "req-b"), (3, "req-a"),
                                                                     (4, "")]))
    finally:
        correlation_id.reset(token)
    assert logged["correlation_id"] == "the-job"
    assert logged["correlation_ids"] == {"req-a": [1, 3], "req-b": [2], "": [4]}
    assert logged["event_ids"] == [1, 3, 2, 4]  # grouped by correlation id


def test_rows_without_an_id_invent_none() -> None:
    extra = rows_extra("event_ids", [(1, ""), (2, "")])
    assert "correlation_id" not in extra
    assert extra["correlation_ids"] == {"": [1, 2]}
    assert rows_extra("event_ids", []) == {"event_ids": []}


def test_a_rows_scope_sets_the_id_for_its_lines_and_restores_the_outer_one() -> None:
    token = correlation_id.set("the-request")
    try:
        with correlation_scope("enrollment-cid"):
            assert current_correlation_id() == "enrollment-cid"
            assert line("step failed")["correlation_id"] == "enrollment-cid"
        with correlation_scope(""):  # a row without an id leaves the outer one
            assert current_correlation_id() == "the-request"
        assert current_correlation_id() == "the-request"
    finally:
        correlation_id.reset(token)
    assert current_correlation_id() == ""  # no request, no job


def test_batch_work_names_each_contacts_cause_and_falls_back_to_the_current_id() -> None:
    with correlation_scope("the-job"):
        with contact_causes({7: "event-of-7"}):
            assert correlation_for_contact(7) == "event-of-7"
            assert correlation_for_contact(8) == "the-job"
        assert correlation_for_contact(7) == "the-job"


def test_an_explicit_id_on_one_line_wins_over_the_request() -> None:
    token = correlation_id.set("the-request")
    try:
        assert line("delivery failure", correlation_id="message-cid")["correlation_id"] == "message-cid"
        assert line("delivery failure", correlation_id="")["correlation_id"] == "the-request"
    finally:
        correlation_id.reset(token)
