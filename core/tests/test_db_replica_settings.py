"""DATABASE_REPLICA_URL and DATABASE_REPLICA_MAX_LAG fail loudly, naming the variable; a good pair
adds the `replica` alias as a test mirror of the primary (config/settings.py, issue 22)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.tests.test_settings import manage

pytestmark = pytest.mark.slow
PRIMARY = "postgres://leadflow@db.example:5432/leadflow"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_REPLICA_URL": PRIMARY}, "DATABASE_REPLICA_URL is set but DATABASE_URL is SQLite"),
        ({"DATABASE_URL": PRIMARY, "DATABASE_REPLICA_URL": "sqlite:///replica.db"},
         "DATABASE_REPLICA_URL must be a postgres:// URL"),
        ({"DATABASE_URL": PRIMARY, "DATABASE_REPLICA_URL": "mysql://u@h/db"}, "DATABASE_REPLICA_URL='mysql://u@h/db'"),
        ({"DATABASE_URL": PRIMARY, "DATABASE_REPLICA_URL": "postgres://u@h:5432/"}, "DATABASE_REPLICA_URL="),
        ({"DATABASE_REPLICA_MAX_LAG": "soon"}, "DATABASE_REPLICA_MAX_LAG='soon' is not an integer"),
        ({"DATABASE_REPLICA_MAX_LAG": "-1"}, "DATABASE_REPLICA_MAX_LAG=-1 must be >= 0"),
    ],
)
def test_bad_replica_settings_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = manage("check", env={"DEBUG": "true", **env}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_a_replica_url_adds_a_mirrored_alias(tmp_path: Path) -> None:
    show = ("import json; from django.conf import settings as s; r = s.DATABASES['replica']; "
            "print(json.dumps([r['HOST'], r['TEST']['MIRROR'], r['OPTIONS'], r['CONN_HEALTH_CHECKS'], "
            "s.DATABASE_REPLICA_MAX_LAG, s.DATABASE_ROUTERS]))")
    result = manage("shell", "-c", show, env={"DEBUG": "true", "DATABASE_URL": PRIMARY,
                                             "DATABASE_REPLICA_URL": "postgres://leadflow@standby.example:5432/leadflow",
                                             "DATABASE_REPLICA_MAX_LAG": "10"}, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    host, mirror, options, health_checks, max_lag, routers = json.loads(result.stdout.strip().splitlines()[-1])
    assert host == "standby.example"
    assert mirror == "default"  # the test runner never creates or migrates a database on it
    assert options["connect_timeout"] == 2
    assert health_checks is True
    assert max_lag == 10
    assert routers == ["config.db_router.ReplicaRouter"]
