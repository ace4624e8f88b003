"""WSGI entry point (gunicorn config.wsgi)."""

import os

import django
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django.setup(set_prefix=False)
from core import tracing  # noqa: E402  (needs settings loaded)

tracing.setup("web")  # before the handler loads the middleware: tracing adds Django's own
application = get_wsgi_application()

from core.queues import ensure_redis  # noqa: E402  (needs settings loaded)

ensure_redis()
