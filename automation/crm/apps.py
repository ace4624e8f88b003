from django.apps import AppConfig


class CrmConfig(AppConfig):
    """CRM connectors and the sync queue; its own app (label "crm") so its migrations stand alone."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "automation.crm"
    label = "crm"
    verbose_name = "CRM sync"
