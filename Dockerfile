# Greenlight application image: web, worker, scheduler, proxysync and HAProxy all run from it
# (docker-compose.yml and deploy/ start each with its own command).
#
# It runs as uid 10001 and with a read-only root filesystem: nothing it runs writes outside
# /tmp (scratch), HAProxy's folder (GREENLIGHT_HAPROXY_CONFIG, GREENLIGHT_HAPROXY_MASTER_SOCKET)
# and the scheduler's --schedule file, which the manifests give it as emptyDir volumes.
# Python writes no bytecode at run time: /app's is compiled here.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python \
    PYTHONPATH=/app \
    GREENLIGHT_VAR_DIR=/var/lib/greenlight

# proxysync validates every rendered configuration with `haproxy -c` and signals the
# HAProxy master over its socket; the load balancer's HAProxy runs from this image too.
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY dashboard ./dashboard
COPY deployer ./deployer
COPY scaling ./scaling
COPY localcluster ./localcluster
COPY launcher ./launcher
# The dependencies (and the packages, which PYTHONPATH=/app shadows: every process, the
# `celery` script too, imports /app's code, whose templates and static files sit beside it).
RUN pip install --no-cache-dir .
COPY manage.py ./
COPY templates ./templates
COPY static ./static
# Static files are collected into the var dir's staticfiles/, which whitenoise serves;
# everything here stays root's and read-only to the user the processes run as.
RUN python -m compileall -q /app \
    && SECRET_KEY=build-only python manage.py collectstatic --noinput -v 0 \
    && groupadd --system --gid 10001 greenlight \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/greenlight greenlight \
    && chown greenlight:greenlight /var/lib/greenlight
# Numeric, so that a cluster's runAsNonRoot can tell that it is not root.
USER 10001:10001
EXPOSE 8000 8080
# daphne, with webhook secrets redacted from its access log.
CMD ["python", "-m", "dashboard.webserver", "-b", "0.0.0.0", "-p", "8000", "dashboard.asgi:application"]
