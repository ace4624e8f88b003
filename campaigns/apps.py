from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    """Email templates, sender profiles, the outbox and delivery (issue: delivery)."""

    name = "campaigns"
