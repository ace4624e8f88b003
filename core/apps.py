from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Shared plumbing: roles, embedded Redis, health, the worker and dev-stack commands."""

    name = "core"
    verbose_name = "Leadflow core"
