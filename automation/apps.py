from django.apps import AppConfig


class AutomationConfig(AppConfig):
    """Versioned workflows, enrollments and CRM connectors (issues: workflows, CRM sync)."""

    name = "automation"
