"""`manage.py workflows export|import|promote|rollback|check|dependencies`: keep workflows in git,
promote from CI, and check capacity and dependencies there first."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from automation import services
from automation.definition import DefinitionError
from automation.models import Workflow


class Command(BaseCommand):
    help = "Export, import, promote and roll back workflows (see docs/workflows.md)"

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="print a file with workflows (all, or KEY...)")
        export.add_argument("keys", nargs="*")
        export.add_argument("--state", choices=["draft", "staging", "production", "archived"],
                            help="export the version in this state (default: the newest)")
        export.add_argument("--format", choices=["yaml", "json"], default="yaml")
        imp = sub.add_parser("import", help="import a YAML/JSON file as new drafts (or staging)")
        imp.add_argument("file", help="path, or - for stdin")
        imp.add_argument("--to", choices=["draft", "staging"], default="draft")
        for name in ("promote", "rollback"):
            p = sub.add_parser(name, help=f"{name} a workflow (needs automation.promote_workflow)")
            p.add_argument("key")
            p.add_argument("--migrate", action="store_true",
                           help="move in-flight enrollments to the new version (steps matched by id)")
        sub.choices["promote"].add_argument(
            "--acknowledge-capacity", action="store_true",
            help="promote even though the capacity check finds limits the version would pass (audited)")
        for name, what in (("check", "the capacity check as JSON; exit status 1 when a limit would be passed"),
                           ("dependencies", "the dependency map as JSON (no KEY: the whole system)")):
            p = sub.add_parser(name, help=what)
            p.add_argument("key", nargs="?" if name == "dependencies" else None)
            p.add_argument("--state", choices=["draft", "staging", "production", "archived"],
                           help="the version in this state (default: staging, else production)")
        for p in sub.choices.values():
            p.add_argument("--as", dest="username", default="",
                           help="user the action is recorded for (promote/rollback need their permission)")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            getattr(self, f"_{opts['action']}")(opts)
        except (ValidationError, DefinitionError, PermissionDenied) as exc:
            messages = exc.messages if isinstance(exc, ValidationError) else [str(exc)]
            raise CommandError("\n".join(messages)) from exc

    def _actor(self, opts: dict[str, Any]) -> Any:
        if not opts["username"]:
            return "cli"
        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"no user {opts['username']!r}")
        return user

    def _export(self, opts: dict[str, Any]) -> None:
        self.stdout.write(services.workflows_export(keys=opts["keys"], state=opts["state"], fmt=opts["format"]),
                          ending="")

    def _import(self, opts: dict[str, Any]) -> None:
        text = sys.stdin.read() if opts["file"] == "-" else Path(opts["file"]).read_text(encoding="utf-8")
        result = services.workflow_import(text=text, actor=self._actor(opts), to=opts["to"])
        for v in result.versions:
            self.stdout.write(f"created {v}")
        for v in result.unchanged:
            self.stdout.write(f"unchanged {v}")

    def _workflow(self, key: str) -> Workflow:
        workflow = Workflow.objects.filter(key=key).first()
        if workflow is None:
            raise CommandError(f"no workflow {key!r}")
        return workflow

    def _promote(self, opts: dict[str, Any]) -> None:
        actor = self._cli_approver(opts)
        version = services.workflow_promote(workflow=self._workflow(opts["key"]), actor=actor, migrate=opts["migrate"],
                                            acknowledge_capacity=opts["acknowledge_capacity"])
        self.stdout.write(f"promoted {version}")

    def _rollback(self, opts: dict[str, Any]) -> None:
        actor = self._cli_approver(opts)
        version = services.workflow_rollback(workflow=self._workflow(opts["key"]), actor=actor, migrate=opts["migrate"])
        self.stdout.write(f"rolled back to {version}")

    def _version(self, opts: dict[str, Any]) -> Any:
        workflow = self._workflow(opts["key"])
        states = [opts["state"]] if opts["state"] else ["staging", "production"]
        for state in states:
            version = workflow.versions.filter(state=state).order_by("-number").first()
            if version is not None:
                return version
        raise CommandError(f"workflow {opts['key']!r} has no {' or '.join(states)} version")

    def _check(self, opts: dict[str, Any]) -> None:
        from automation.capacity import capacity_check

        report = capacity_check(version=self._version(opts))
        self.stdout.write(json.dumps(report.as_dict(), indent=2))
        if report.over:
            raise CommandError(f"over: {', '.join(report.over)}", returncode=1)

    def _dependencies(self, opts: dict[str, Any]) -> None:
        from automation.dependencies import system_dependencies, version_dependencies_json

        data = version_dependencies_json(version=self._version(opts)) if opts["key"] else system_dependencies()
        self.stdout.write(json.dumps(data, indent=2))

    def _cli_approver(self, opts: dict[str, Any]) -> Any:
        """With --as, that user's permission decides; without, shell access to manage.py is the
        authority (CI), recorded as a system actor that holds every permission."""
        return self._actor(opts)
