# Greenlight application image: web, worker, scheduler and proxysync all run from it.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python \
    GREENLIGHT_VAR_DIR=/var/lib/greenlight

# proxysync validates every rendered configuration with `haproxy -c` and signals the
# HAProxy master over its socket, so the image carries the haproxy binary too.
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY dashboard ./dashboard
COPY deployer ./deployer
COPY scaling ./scaling
COPY localcluster ./localcluster
RUN pip install --no-cache-dir .
COPY manage.py ./
COPY templates ./templates
COPY static ./static
RUN SECRET_KEY=build-only python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home /var/lib/greenlight greenlight \
    && mkdir -p /var/lib/greenlight && chown greenlight /var/lib/greenlight
USER greenlight
EXPOSE 8000
# daphne, with webhook secrets redacted from its access log.
CMD ["python", "-m", "dashboard.webserver", "-b", "0.0.0.0", "-p", "8000", "dashboard.asgi:application"]
