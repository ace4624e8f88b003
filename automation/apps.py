from django.apps import AppConfig


class AutomationConfig(AppConfig):
    """Versioned workflows, enrollments and CRM connectors (issues: workflows, CRM sync)."""

    name = "automation"

    def ready(self) -> None:
        # Admins of templates, senders, segments and CRM connections warn before deleting or pausing
        # what a production version needs (core.dependents; automation sits above those apps).
        from automation.dependencies import dependents_warning
        from core.dependents import dependents_register

        dependents_register(dependents_warning)
        # A send_email step's `utm` option tags its email's links (campaigns/utm.py).
        from automation.utm import workflow_step_utm
        from campaigns.utm import utm_resolver_register

        utm_resolver_register(workflow_step_utm)
