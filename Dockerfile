# One image for web, worker and scheduler (docker-compose.yml picks the command).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VAR_DIR=/app/var

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
# Static files are collected at build time; whitenoise serves them with far-future caching. media is
# created here for the app user: compose mounts a shared volume on it, which Docker fills from it.
RUN DEBUG=false SECRET_KEY=build-only-collectstatic-key python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 leadflow && mkdir -p /app/var/media && chown -R leadflow /app/var
USER leadflow
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000"]
