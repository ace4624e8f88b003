"""In a real browser: the lead page's facts sit beside their own labels (issue 19).

The old floated <dt>/<dd> list drifted: Django admin gives each <dt> a 4px top margin, so after
five rows the labels sat one row below their values ("Grade: Subscriber", "Score: —").
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import admin_login, make_user
from core import roles
from core.testing.scores import score_set
from scoring.tests.factories import bands, contact

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_each_lead_fact_is_on_the_same_line_as_its_label(page: Any) -> None:
    make_user("rep", roles.SALES)
    bands()
    lead = contact(email="ann@acme.example", company="Acme", job_title="CTO", lifecycle_stage="subscriber")
    score_set(lead, 70, "A")

    admin_login(page, "rep", "pw-rep")
    page.goto(f"/leads/{lead.pk}/")
    for label, value_id, text in (("Score", "lead-score", "70"), ("Grade", "lead-grade", "A"),
                                  ("Stage", "lead-stage", "Subscriber")):
        value = page.locator(f"#{value_id}")
        assert value.inner_text() == text
        label_box = page.locator(".lead-facts th", has_text=label).first.bounding_box()
        value_box = value.bounding_box()
        assert label_box is not None
        assert value_box is not None
        # Same row: the label's vertical middle lies within the value's box.
        middle = label_box["y"] + label_box["height"] / 2
        assert value_box["y"] <= middle <= value_box["y"] + value_box["height"], label
