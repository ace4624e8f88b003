"""Each role's home page and navigation (issue 19), and the 403 page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from automation.models import Workflow, WorkflowVersion
from campaigns.models import Message, MessageStatus, SenderProfile
from contacts.models import Contact, ImportJob, Segment
from core.navigation import PAGES, pages_for

pytestmark = pytest.mark.django_db
ROLES = ("marketer", "approver", "sales", "ops", "admin", "outsider")


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(("role", "home"), [("sales", "/leads/"), ("ops", "/admin/operations/")])
def test_sales_and_ops_land_on_their_own_page(role_users: dict[str, User], role: str, home: str) -> None:
    response = client_for(role_users[role]).get("/admin/")
    assert response.status_code == 302
    assert response["Location"] == home
    assert client_for(role_users[role]).get("/admin/?all=1").status_code == 200  # the plain index stays


@pytest.mark.parametrize("role", ["marketer", "approver"])
def test_marketers_land_on_a_dashboard(role_users: dict[str, User], role: str) -> None:
    ImportJob.objects.create(file="imports/leads.csv", original_name="webinar-leads.csv", status="completed",
                             created=12)
    Segment.objects.create(name="Hot leads", definition={"all": []}, member_count=42)
    live = Workflow.objects.create(key="welcome", name="Welcome series")
    WorkflowVersion.objects.create(workflow=live, number=1, definition={"steps": []}, state="production")
    Workflow.objects.create(key="nurture", name="Nurture", paused=True)
    sender = SenderProfile.objects.create(name="Main", from_email="news@leadflow.test", email_url="smtp://127.0.0.1:1")
    contact = Contact.objects.create(email="ann@example.com")
    now = timezone.now()
    for n, status in enumerate([MessageStatus.SENT, MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.QUEUED]):
        Message.objects.create(contact=contact, sender=sender, idempotency_key=f"m{n}", status=status,
                               sent_at=now if status == MessageStatus.SENT else None)

    page = client_for(role_users[role]).get("/admin/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="dashboard"' in html
    assert "webinar-leads.csv" in html
    assert "Hot leads" in html
    assert '<td class="num segment-count">42</td>' in html
    assert "Welcome series" in html
    assert "Live" in html
    assert "Paused" in html
    assert '<strong class="count" data-count="sent">2</strong>' in html
    assert '<strong class="count" data-count="failed">1</strong>' in html
    assert '<strong class="count" data-count="queued">1</strong>' in html


@pytest.mark.parametrize("role", ROLES)
def test_the_navigation_lists_exactly_the_pages_the_role_may_open(role_users: dict[str, User], role: str) -> None:
    user = role_users[role]
    client = client_for(user)
    offered = {page.key for page in pages_for(user)}
    for page in PAGES:
        status = client.get(page.url, follow=True).status_code
        assert (status == 200) is (page.key in offered), f"{role}: {page.key} answers {status}"
    # ... and it is on every admin page they see.
    home = client.get("/admin/", follow=True).content.decode()
    for page in pages_for(user):
        assert f'data-page="{page.key}"' in home


def test_my_leads_lists_the_leads_the_sales_user_owns(role_users: dict[str, User]) -> None:
    rep = role_users["sales"]
    Contact.objects.create(email="mine@example.com", owner=rep)
    Contact.objects.create(email="theirs@example.com", owner=role_users["marketer"])
    page = client_for(rep).get("/leads/?owner=me").content.decode()
    assert "mine@example.com" in page
    assert "theirs@example.com" not in page


def test_the_403_page_says_what_was_refused_and_where_to_go(role_users: dict[str, User]) -> None:
    response = client_for(role_users["marketer"]).get("/admin/operations/")
    assert response.status_code == 403
    html = response.content.decode()
    assert 'id="site-name"' in html  # the admin's look, not a bare "403 Forbidden"
    assert "You do not have access to this page" in html
    assert "/admin/operations/" in html
    assert "with the role <strong>Marketer</strong>" in html
    assert 'href="/admin/"' in html
    assert 'data-page="segments"' in html  # their own pages, to go on from here

    outsider = client_for(role_users["outsider"]).get("/admin/contacts/contact/")
    assert outsider.status_code == 403
    assert "with no role yet" in outsider.content.decode()


def test_ops_reaches_every_model_it_may_see_from_all_pages(role_users: dict[str, User]) -> None:
    client = client_for(role_users["ops"])
    operations = client.get("/admin/operations/").content.decode()
    assert 'href="/admin/?all=1" data-page="all"' in operations
    index = client.get("/admin/?all=1").content.decode()
    assert 'href="/admin/campaigns/senderprofile/"' in index
    assert 'href="/admin/campaigns/suppression/"' in index
