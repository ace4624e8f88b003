"""Template revisions: every saved content of a template is an immutable EmailTemplateRevision.

A template's own fields (subject, html, text, kind, topic) are its working copy: what the admin edits,
previews and test sends show. What a workflow sends is the revision its version pins, so an edit
reaches production only when a version pinning the new revision is promoted (automation).
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from campaigns.models import EmailTemplate, EmailTemplateRevision, template_content_hash
from core.audit import audit_record


def _content_hash(template: EmailTemplate) -> str:
    return template_content_hash(kind=template.kind, subject=template.subject, html=template.html,
                                 text=template.text, topic_id=template.topic_id)


def _user(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None


def template_revision_current(*, template: EmailTemplate, actor: Any = None, source: str = "") -> EmailTemplateRevision:
    """The revision holding the template's current fields, made when there is none (same content,
    same revision: the content hash is unique per template)."""
    digest = _content_hash(template)
    found = EmailTemplateRevision.objects.filter(template=template, content_hash=digest).first()
    if found is not None:
        return found
    with transaction.atomic():
        # The row lock orders concurrent writers, so numbers are consecutive and never collide.
        EmailTemplate.objects.select_for_update().filter(pk=template.pk).first()
        found = EmailTemplateRevision.objects.filter(template=template, content_hash=digest).first()
        if found is not None:
            return found
        number = (template.revisions.aggregate(n=Max("number"))["n"] or 0) + 1
        try:
            with transaction.atomic():
                revision = EmailTemplateRevision.objects.create(
                    template=template, number=number, kind=template.kind, subject=template.subject,
                    html=template.html, text=template.text, topic_id=template.topic_id, content_hash=digest,
                    created_by=_user(actor),
                    source=source[:50])
        except IntegrityError:  # SQLite has no row locks: a concurrent writer made it first
            return EmailTemplateRevision.objects.get(template=template, content_hash=digest)
    audit_record(actor=actor, action="template.revised", target=revision,
                 data={"template": template.key, "number": number, "source": source})
    return revision


@transaction.atomic
def template_save(*, template: EmailTemplate, actor: Any, source: str) -> EmailTemplateRevision:
    """Validate and save the template's fields (its working copy) and return their revision. Nothing
    that is already sending changes: workflow versions keep the revisions they pin."""
    template.full_clean()
    template.save()
    return template_revision_current(template=template, actor=actor, source=source)


def revision_latest(*, template: EmailTemplate) -> EmailTemplateRevision | None:
    return template.revisions.order_by("-number").first()
