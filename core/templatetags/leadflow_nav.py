"""{% role_pages as pages %}: the pages the current user may use (core/navigation.py)."""

from __future__ import annotations

from typing import Any

from django import template

from core.navigation import Page, pages_for

register = template.Library()


@register.simple_tag(takes_context=True)
def role_pages(context: Any) -> list[Page]:
    request = context.get("request")
    return pages_for(request.user) if request is not None else []
