"""docker-compose.yml is not run here (no Docker engine), so we check it by parsing."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    words = shlex.split(command) if isinstance(command, str) else list(command)
    if words[:2] == ["sh", "-c"]:
        # "a && exec b": check each simple command of the shell line
        return [w for w in shlex.split(words[2].replace("&&", " ; ")) if w != "exec"]
    return words


def split_commands(words: list[str]) -> list[list[str]]:
    commands: list[list[str]] = []
    current: list[str] = []
    for word in words:
        if word == ";":
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [c for c in [*commands, current] if c]


def test_compose_has_the_whole_stack() -> None:
    assert {"postgres", "redis", "web", "worker", "scheduler", "mail"} <= set(SERVICES)


@pytest.mark.parametrize("name", ["web", "worker", "scheduler"])
def test_app_service_commands_exist_in_the_project(name: str) -> None:
    # given the command line of an app service
    commands = split_commands(command_words(SERVICES[name]))
    assert commands, f"{name} has no command"
    for argv in commands:
        # then every manage.py subcommand is one Django knows, and gunicorn's app imports
        if argv[:2] == ["python", "manage.py"]:
            assert (ROOT / "manage.py").is_file()
            assert argv[2] in get_commands(), f"{name}: manage.py {argv[2]} does not exist"
        elif argv[0] == "gunicorn":
            module, _, attr = argv[1].partition(":")
            assert hasattr(importlib.import_module(module), attr or "application")
        else:
            pytest.fail(f"{name}: unexpected command {argv}")


def test_web_migrates_before_serving() -> None:
    commands = split_commands(command_words(SERVICES["web"]))
    assert commands[0][:3] == ["python", "manage.py", "migrate"]
    assert commands[-1][0] == "gunicorn"


def test_worker_is_scalable() -> None:
    worker = SERVICES["worker"]
    # `--scale worker=N` fails with a fixed container name or a published host port
    assert "container_name" not in worker
    assert "ports" not in worker


@pytest.mark.parametrize("name", ["web", "worker", "scheduler"])
def test_app_services_use_postgres_and_redis(name: str) -> None:
    env = SERVICES[name]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://")
    assert "@postgres:" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["DEBUG"] == "false"
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), "compose must refuse to start without SECRET_KEY"
    assert (ROOT / SERVICES[name]["build"] / "Dockerfile").is_file()


def test_tracing_is_an_optional_profile_wired_by_the_otlp_endpoint() -> None:
    # given the tracing services: only with `--profile tracing`, so a plain `up` starts neither
    tracing = {name for name, service in SERVICES.items() if "tracing" in service.get("profiles", [])}
    assert tracing == {"otel-collector", "jaeger"}
    assert all("profiles" not in SERVICES[name] for name in ("web", "worker", "scheduler"))
    # then the app services trace only when OTEL_EXPORTER_OTLP_ENDPOINT is set (empty by default: off)
    for name in ("web", "worker", "scheduler"):
        assert SERVICES[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}"
    # and the collector's mounted configuration exists, listens where the comment says
    # (http://otel-collector:4318) and forwards every trace to the jaeger service
    collector = SERVICES["otel-collector"]
    mount = next(v for v in collector["volumes"] if v.endswith(":/etc/otelcol/config.yaml:ro"))
    config = yaml.safe_load((ROOT / mount.split(":")[0]).read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert [config["exporters"][e]["endpoint"] for e in pipeline["exporters"]] == ["jaeger:4317"]
    assert set(pipeline["processors"]) <= set(config["processors"])
    assert collector["depends_on"] == ["jaeger"]
    assert SERVICES["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert any(str(p).endswith(":16686") for p in SERVICES["jaeger"]["ports"])


def test_replica_is_an_optional_profile_streaming_from_postgres() -> None:
    # given the replica service: only with `--profile replica`, so a plain `up` does not start it
    replicas = {name for name, service in SERVICES.items() if "replica" in service.get("profiles", [])}
    assert replicas == {"postgres-replica"}
    replica = SERVICES["postgres-replica"]
    assert replica["image"] == SERVICES["postgres"]["image"]  # a physical standby needs the same major version
    # then on first start it copies the primary as a streaming standby, and afterwards serves reads
    script = replica["command"][2]
    assert replica["command"][:2] == ["sh", "-c"]
    basebackup = next(line.split() for line in script.splitlines() if "pg_basebackup" in line)
    assert basebackup[basebackup.index("-h") + 1] == "postgres"
    assert "-R" in basebackup  # primary_conninfo and standby.signal
    assert basebackup[basebackup.index("-X") + 1] == "stream"
    assert "hot_standby=on" in script
    assert replica["user"] == "postgres"  # PostgreSQL refuses to run as root
    assert replica["environment"]["PGDATA"].startswith("/var/lib/postgresql/data/")
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    volume = replica["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"]
    assert volume not in {v.split(":")[0] for v in SERVICES["postgres"]["volumes"]}
    # and the primary lets replication connections in (the image's pg_hba.conf has none from other hosts)
    mount = next(v for v in SERVICES["postgres"]["volumes"] if "/docker-entrypoint-initdb.d/" in v)
    hba_line = (ROOT / mount.split(":")[0]).read_text().strip().splitlines()[-1]
    assert hba_line.startswith('echo "host replication ')
    assert hba_line.endswith('>> "$PGDATA/pg_hba.conf"')
    # and the app uses it only when DATABASE_REPLICA_URL is set (empty by default: no replica)
    for name in ("web", "worker", "scheduler"):
        assert SERVICES[name]["environment"]["DATABASE_REPLICA_URL"] == "${DATABASE_REPLICA_URL:-}"


def image_var_dir() -> str:
    """VAR_DIR in the containers: the Dockerfile's ENV (compose does not override it)."""
    match = re.search(r"\bVAR_DIR=(\S+)", (ROOT / "Dockerfile").read_text())
    assert match, "the Dockerfile sets VAR_DIR"
    return match.group(1).rstrip("\\")


def named_volume_at(service: dict[str, Any], target: str) -> str | None:
    for mount in service.get("volumes", []):
        source, _, rest = str(mount).partition(":")
        if rest.split(":")[0] == target and source in COMPOSE["volumes"]:
            return source
    return None


def serves_imports(service: dict[str, Any]) -> bool:
    """`manage.py worker` with no queue named serves every queue, `imports` included."""
    from core.management.commands.worker import QUEUE_PRIORITY

    for argv in split_commands(command_words(service)):
        if argv[:3] == ["python", "manage.py", "worker"]:
            queues = [w for w in argv[3:] if not w.startswith("-")] or list(QUEUE_PRIORITY)
            return "imports" in queues
    return False


def test_services_running_imports_share_web_media_volume() -> None:
    # given where web stores an uploaded CSV (MEDIA_ROOT = VAR_DIR/media)
    var_dir = image_var_dir()
    assert all("VAR_DIR" not in SERVICES[name]["environment"] for name in ("web", "worker", "scheduler"))
    media = named_volume_at(SERVICES["web"], f"{var_dir}/media")
    assert media, "web must keep uploads on a named volume"
    # then every service that runs import jobs mounts the same volume there (reads the CSV, writes
    # the error report web serves)
    runners = [name for name, service in SERVICES.items() if serves_imports(service)]
    assert "worker" in runners
    for name in runners:
        assert named_volume_at(SERVICES[name], f"{var_dir}/media") == media, name
    # and nothing else under VAR_DIR is shared: temp files stay per process, static stays the image's
    var = PurePosixPath(var_dir)
    for name in ("web", "worker", "scheduler"):
        for mount in SERVICES[name].get("volumes", []):
            target = PurePosixPath(str(mount).split(":")[1])
            if var.is_relative_to(target) or target.is_relative_to(var):
                assert target == var / "media", f"{name} mounts {target}: only {var}/media is shared"
    # and the image creates media for the app user: Docker fills a new volume from it, owner included
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)[-1]
    assert f"mkdir -p {var_dir}/media" in dockerfile
    assert f"chown -R {user} {var_dir}" in dockerfile
