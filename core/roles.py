"""The four roles, as Django groups, and the permissions each one holds.

This table is the single source of truth: a data migration applies it, `manage.py
sync_roles` re-applies it, and every later app adds its permissions here (plus a
migration that calls `sync_roles`). Permissions not listed are removed from the group.
"""

from __future__ import annotations

from typing import Any

MARKETER = "Marketer"
APPROVER = "Approver"
SALES = "Sales"
OPS = "Ops"
# django-rq's queue dashboard (both of its URL prefixes): Ops and superusers only.
QUEUES_PERMISSION = "django_rq.admin"

def _crud(model: str) -> list[str]:
    app, name = model.split(".")
    return [f"{app}.{action}_{name}" for action in ("view", "add", "change", "delete")]


_MARKETER_PERMS = [
    *_crud("contacts.contact"),
    *_crud("contacts.customfield"),
    *_crud("contacts.tag"),
    *_crud("contacts.contactlist"),
    # Imports are created and started, never edited or deleted: their counts are history.
    "contacts.view_importjob",
    "contacts.add_importjob",
    *_crud("contacts.segment"),
    *_crud("contacts.leadroutingrule"),  # who gets a lead when it becomes an MQL (contacts/owners.py)
    "contacts.view_event",
    *_crud("scoring.scoringrule"),
    *_crud("scoring.gradeband"),
    "scoring.view_scoreentry",
    "scoring.view_recomputejob",
    "scoring.add_recomputejob",
    "scoring.view_leads",
    # Consent (issue 20): topics and signup forms are built; the history and opt-ins are records.
    *_crud("consent.topic"), *_crud("consent.signupform"), "consent.view_consentrecord",
    "consent.view_optinrequest", "consent.view_topicsubscription",
]

# Email delivery (campaigns): templates, senders, the outbox and suppressions.
_CAMPAIGNS_MARKETER: list[str] = [
    *_crud("campaigns.emailtemplate"), "campaigns.view_senderprofile", "campaigns.view_message",
    "campaigns.view_suppression",
]
_CAMPAIGNS_SALES: list[str] = []
# Ops runs delivery: sender profiles (rates, backends), retries, the suppression list.
_CAMPAIGNS_OPS: list[str] = [
    *_crud("campaigns.senderprofile"), "campaigns.view_message", "campaigns.retry_message",
    "campaigns.view_emailtemplate", *_crud("campaigns.suppression"),
    # What the bounce mailboxes held, unparsed mails with their reason (campaigns/bounce_mailbox.py).
    "campaigns.view_bouncemailboxitem",
]
# CRM sync (automation.crm, app label "crm"): connections, the sync queue and its log.
_CRM_MARKETER: list[str] = ["crm.sync_crmconnection", *(f"crm.view_{m}" for m in ("crmconnection", "crmsyncitem", "crmsyncerror", "crmsynclog"))]  # noqa: E501
_CRM_SALES: list[str] = ["crm.view_crmsyncitem", "crm.view_crmsynclog"]
_CRM_OPS: list[str] = [*_crud("crm.crmconnection"), *(p for p in _CRM_MARKETER if p != "crm.view_crmconnection")]

# Workflows (automation): marketers build drafts and stage them; approvers also promote.
_AUTOMATION_MARKETER: list[str] = ["automation.view_workflow", "automation.add_workflow", "automation.change_workflow", "automation.view_workflowversion", "automation.add_workflowversion", "automation.view_enrollment", "automation.view_steprun", "automation.view_webhookdelivery"]  # noqa: E501
_AUTOMATION_APPROVER: list[str] = ["automation.promote_workflow"]
_AUTOMATION_OPS: list[str] = [*(f"automation.view_{m}" for m in ("workflow", "workflowversion", "enrollment", "steprun", "webhookdelivery")), "automation.change_webhookdelivery"]  # noqa: E501

# Broadcasts (issue 21): marketers build, test, approve (up to BROADCAST_APPROVAL_THRESHOLD contacts)
# and send them; above the threshold only an Approver approves; Ops watches them.
_BROADCASTS_MARKETER: list[str] = [*_crud("broadcasts.broadcast")]
_BROADCASTS_APPROVER: list[str] = ["broadcasts.approve_broadcast"]
_BROADCASTS_OPS: list[str] = ["broadcasts.view_broadcast"]

ROLE_PERMISSIONS: dict[str, list[str]] = {
    # Builds and edits: contacts, segments, scoring rules, templates, workflow drafts.
    MARKETER: [*_MARKETER_PERMS, *_CAMPAIGNS_MARKETER, *_CRM_MARKETER, *_AUTOMATION_MARKETER,
               *_BROADCASTS_MARKETER],
    # A marketer who may also promote workflow versions to production (added with workflows).
    APPROVER: [*_MARKETER_PERMS, *_CAMPAIGNS_MARKETER, *_CRM_MARKETER, *_AUTOMATION_MARKETER,
               *_AUTOMATION_APPROVER, *_BROADCASTS_MARKETER, *_BROADCASTS_APPROVER],
    # Read-only: ranked leads and why they score.
    SALES: ["contacts.view_contact", "contacts.view_tag", "contacts.view_contactlist", "contacts.view_event",
            "contacts.view_segment", "scoring.view_scoreentry", "scoring.view_leads",
            *_CAMPAIGNS_SALES, *_CRM_SALES],
    # Watches queues, failures and delivery; reads contacts to follow a failure to its row.
    OPS: ["contacts.view_contact", "contacts.view_importjob", "core.view_heartbeat", "core.view_auditentry",
          "contacts.view_event", "contacts.view_segment", "scoring.view_recomputejob",
          # Integrations are ops' to run: API keys for the event API.
          *_crud("contacts.apikey"), QUEUES_PERMISSION, *_CAMPAIGNS_OPS, *_CRM_OPS,
          # The operations page and the global kill switches.
          "core.view_operations", "core.view_switch", "core.change_switch", "core.view_incident",
          *_AUTOMATION_OPS, *_BROADCASTS_OPS,
          # Login lockouts (django-axes): see who is locked out and clear a lockout by deleting it.
          "axes.view_accessattempt", "axes.delete_accessattempt", "axes.view_accessfailurelog",
          "axes.view_accesslog"],
}


def sync_roles(apps: Any = None, *, verbosity: int = 0, strict: bool = True) -> None:
    """Create the groups and set each one's permissions exactly to ROLE_PERMISSIONS.

    Works inside a migration (pass its `apps`, strict=False: an early migration skips the
    permissions of models a later migration creates, and that one re-applies the table) and at
    run time (apps=None, strict: a name that does not exist is a typo). Permissions are
    normally created after migrate; we create them first so a fresh database gets its roles
    in the same `migrate` run.
    """
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    registry = apps or global_apps
    for app_config in registry.get_app_configs():
        # Migration-state app configs have models_module=None, which create_permissions
        # reads as "no models"; mark them for the call and restore afterwards.
        stub = getattr(app_config, "models_module", None) is None
        if stub:
            app_config.models_module = True
        create_permissions(app_config, apps=registry, verbosity=verbosity)
        if stub:
            app_config.models_module = None

    Group = registry.get_model("auth", "Group")
    Permission = registry.get_model("auth", "Permission")
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for name in names:
            app_label, codename = name.split(".", 1)
            perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if perm is None:
                if strict:
                    raise LookupError(f"role {role}: permission {name} does not exist")
                continue
            wanted.append(perm)
        group.permissions.set(wanted)


def migrate_roles(apps: Any, schema_editor: Any) -> None:
    """RunPython entry for migrations that (re)apply the table (see core/migrations)."""
    sync_roles(apps, strict=False)
