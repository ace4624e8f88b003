"""Where each role starts and the pages it may use, for the navigation bar and the home page.

The permissions are the ones each page's view checks (core/roles.py grants them), so the bar never
offers a page that answers 403, and a page a role may use is never missing from it
(core/tests/test_navigation.py walks both ways against test_url_access's table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.urls import reverse

from core.roles import QUEUES_PERMISSION


@dataclass(frozen=True)
class Page:
    key: str
    label: str
    url_name: str
    perm: str | None  # None: every staff user
    query: str = ""

    @property
    def url(self) -> str:
        return reverse(self.url_name) + (f"?{self.query}" if self.query else "")


PAGES = (
    Page("home", "Home", "admin:index", None),
    Page("leads", "Leads", "scoring:lead_list", "scoring.view_leads"),
    Page("my-leads", "My leads", "scoring:lead_list", "scoring.view_leads", query="owner=me"),
    Page("contacts", "Contacts", "admin:contacts_contact_changelist", "contacts.view_contact"),
    Page("import", "Import contacts", "admin:contacts_importjob_add", "contacts.add_importjob"),
    Page("segments", "Segments", "admin:contacts_segment_changelist", "contacts.view_segment"),
    Page("scoring", "Scoring rules", "admin:scoring_scoringrule_changelist", "scoring.view_scoringrule"),
    Page("templates", "Email templates", "admin:campaigns_emailtemplate_changelist", "campaigns.view_emailtemplate"),
    Page("workflows", "Workflows", "admin:automation_workflow_changelist", "automation.view_workflow"),
    Page("outbox", "Outbox", "admin:campaigns_message_changelist", "campaigns.view_message"),
    Page("crm", "CRM sync", "admin:crm_crmsyncitem_changelist", "crm.view_crmsyncitem"),
    Page("operations", "Operations", "operations", "core.view_operations"),
    Page("queues", "Queues", "django_rq:home", QUEUES_PERMISSION),
    Page("api-keys", "API keys", "admin:contacts_apikey_changelist", "contacts.view_apikey"),
    # The admin index of every model the role may see (custom fields, grade bands, senders, ...).
    Page("all", "All pages", "admin:index", None, query="all=1"),
)


def pages_for(user: Any) -> list[Page]:
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return []
    return [page for page in PAGES if page.perm is None or user.has_perm(page.perm)]


def home_url(user: Any) -> str | None:
    """Where a role lands instead of the admin index: Sales on the leads, Ops on the operations
    page; None for marketers (their dashboard is the index), superusers and users with no role."""
    if user.is_superuser:
        return None
    if user.has_perm("contacts.change_contact"):
        return None  # builds: the marketer dashboard
    if user.has_perm("core.view_operations"):
        return reverse("operations")
    if user.has_perm("scoring.view_leads"):
        return reverse("scoring:lead_list")
    return None
