from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Shared plumbing: roles, embedded Redis, health, the worker and dev-stack commands."""

    name = "core"
    verbose_name = "Leadflow core"

    def ready(self) -> None:
        from core import checks  # noqa: F401  registers the deployment checks
