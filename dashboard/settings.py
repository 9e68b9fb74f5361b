"""Django settings for Greenlight; every value comes from the environment through launcher.env."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from launcher.env import (
    BASE_DIR,
    env_bool,
    env_int,
    env_list,
    env_optional,
    env_path,
    env_str,
    proxy_ssl_header,
)
from launcher.stack import WORKER_THREADS, StackConfig, secret_key_from_var_dir

STACK = StackConfig.from_env()
VAR_DIR: Path = STACK.var_dir

DEBUG = env_bool("GREENLIGHT_DEBUG", False)

_secret = env_optional("SECRET_KEY") or secret_key_from_var_dir()
if _secret is None:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set; set it in the environment (or use `make run`, "
            "which generates one under the var dir)"
        )
    _secret = "greenlight-insecure-development-key"
SECRET_KEY = _secret

ALLOWED_HOSTS = env_list("GREENLIGHT_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("GREENLIGHT_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "dashboard",
    "deployer",
    "scaling",
    "dashboard.sso",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "dashboard.middleware.body_size_limit",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The request being served, for the IP of audit events recorded below the views.
    "dashboard.audit.service.RequestContext",
    "dashboard.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"

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
                "dashboard.context.links",
                "dashboard.access.nav",
            ],
        },
    },
]


def _database(url: str | None) -> dict[str, object]:
    if url is None:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": STACK.db_path,
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                # The web, worker, scheduler and proxysync processes share this file;
                # WAL lets readers run beside a writer and makes each commit ~10x cheaper.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL must start with postgres:// or postgresql://, got {parsed.scheme}://"
        )
    name = unquote(parsed.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured(
            "DATABASE_URL must name the database, e.g. postgres://user:pass@host:5432/greenlight"
        )
    try:
        port = parsed.port
    except ValueError:
        address = parsed.netloc.rpartition("@")[2]  # never the password
        raise ImproperlyConfigured(
            f"DATABASE_URL's port must be a number from 1 to 65535, got {address}"
        ) from None
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(port or ""),
        "CONN_MAX_AGE": 60,
        # A kept connection the server closed meanwhile (a restart, a failover) is
        # replaced before a request uses it, instead of failing that request.
        "CONN_HEALTH_CHECKS": True,
    }


DATABASES = {"default": _database(env_optional("DATABASE_URL"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Single sign-on (dashboard.sso): OpenID Connect through mozilla-django-oidc when
# GREENLIGHT_OIDC_ISSUER is set; the provider's endpoints come from its discovery document.
OIDC_ISSUER = env_str("GREENLIGHT_OIDC_ISSUER", "").strip().rstrip("/")
OIDC_ENABLED = bool(OIDC_ISSUER)
OIDC_PROVIDER_NAME = env_str("GREENLIGHT_OIDC_NAME", "").strip() or "single sign-on"
OIDC_RP_CLIENT_ID = env_str("GREENLIGHT_OIDC_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = env_str("GREENLIGHT_OIDC_CLIENT_SECRET", "")
OIDC_RP_SCOPES = " ".join(env_str("GREENLIGHT_OIDC_SCOPES", "openid email profile groups").split())
OIDC_GROUPS_CLAIM = env_str("GREENLIGHT_OIDC_GROUPS_CLAIM", "groups").strip()
# Groups named with this prefix follow the group claim; every other group is left alone.
OIDC_GROUP_PREFIX = env_str("GREENLIGHT_OIDC_GROUP_PREFIX", "sso:")
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_TIMEOUT = env_int("GREENLIGHT_OIDC_TIMEOUT", 10, minimum=1, maximum=120)
OIDC_AUTHENTICATION_CALLBACK_URL = "oidc-callback"
LOGIN_REDIRECT_URL_FAILURE = "login"
if OIDC_ENABLED:
    _issuer = urlparse(OIDC_ISSUER)
    if _issuer.scheme not in ("http", "https") or not _issuer.hostname:
        raise ImproperlyConfigured(
            f"GREENLIGHT_OIDC_ISSUER must be an http:// or https:// URL with a host, got "
            f"{OIDC_ISSUER!r}"
        )
    if not OIDC_RP_CLIENT_ID or not OIDC_RP_CLIENT_SECRET:
        raise ImproperlyConfigured(
            "GREENLIGHT_OIDC_ISSUER is set: set GREENLIGHT_OIDC_CLIENT_ID and "
            "GREENLIGHT_OIDC_CLIENT_SECRET too (the client registered at the provider)"
        )
    if "openid" not in OIDC_RP_SCOPES.split():
        raise ImproperlyConfigured(
            f"GREENLIGHT_OIDC_SCOPES must include openid, got {OIDC_RP_SCOPES!r}"
        )
    if not OIDC_GROUPS_CLAIM:
        raise ImproperlyConfigured("GREENLIGHT_OIDC_GROUPS_CLAIM must name a claim")
    if not OIDC_GROUP_PREFIX.strip():
        raise ImproperlyConfigured(
            "GREENLIGHT_OIDC_GROUP_PREFIX must not be empty: only groups with the prefix "
            "follow the provider, so that groups made in Greenlight are kept"
        )
# Username and password sign-in (the demo user's); off, only single sign-on signs in.
LOCAL_LOGIN = env_bool("GREENLIGHT_LOCAL_LOGIN", True)
if not LOCAL_LOGIN and not OIDC_ENABLED:
    raise ImproperlyConfigured(
        "GREENLIGHT_LOCAL_LOGIN=0 leaves no way to sign in: set GREENLIGHT_OIDC_ISSUER too"
    )
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
if OIDC_ENABLED:
    AUTHENTICATION_BACKENDS.append("dashboard.sso.backend.OidcBackend")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
# Files Django writes (collectstatic) take the process's umask instead of a fixed 0644:
# private under `make run` (umask 077), readable by the serving user in the image.
FILE_UPLOAD_PERMISSIONS = None

DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

REDIS_URL = env_str("GREENLIGHT_REDIS_URL", f"redis://127.0.0.1:{STACK.redis_port}/0")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": "greenlight"},
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Every worker runs workflows in threads of one process, however it is started (make run,
# compose, a cluster): a run's worker identity is per process (deployer.heartbeat), and a
# workflow mostly waits, so dozens run side by side.
CELERY_WORKER_POOL = "threads"
CELERY_WORKER_CONCURRENCY = WORKER_THREADS
CELERY_TASK_ALWAYS_EAGER = env_bool("GREENLIGHT_CELERY_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# etcd: the load balancer's configuration store.
ETCD_ENDPOINT = env_str("GREENLIGHT_ETCD_ENDPOINT", f"127.0.0.1:{STACK.etcd_port}")
ETCD_PREFIX = env_str("GREENLIGHT_ETCD_PREFIX", "/greenlight")

# Kubernetes: a kubeconfig (localcluster's by default) or the in-cluster service account.
KUBE_IN_CLUSTER = env_bool("GREENLIGHT_KUBE_IN_CLUSTER", False)
KUBECONFIG = env_path("GREENLIGHT_KUBECONFIG", STACK.kubeconfig)
KUBE_CONTEXT = env_optional("GREENLIGHT_KUBE_CONTEXT")
KUBE_NAMESPACE = env_str("GREENLIGHT_NAMESPACE", "default")

# HAProxy, driven by proxysync.
HAPROXY_BIN = env_str("GREENLIGHT_HAPROXY_BIN", "haproxy")
HAPROXY_CONFIG = env_path("GREENLIGHT_HAPROXY_CONFIG", STACK.haproxy_dir / "haproxy.cfg")
HAPROXY_MASTER_SOCKET = env_path(
    "GREENLIGHT_HAPROXY_MASTER_SOCKET", STACK.haproxy_dir / "master.sock"
)
LB_PORT = STACK.lb_port
# The address HAProxy's frontends bind (and proxysync reads the served revision from):
# loopback for `make run`; docker-compose binds every address of HAProxy's container.
HAPROXY_BIND = env_str("GREENLIGHT_HAPROXY_BIND", "127.0.0.1")
LB_URL = env_str("GREENLIGHT_LB_URL", f"http://127.0.0.1:{STACK.lb_port}")
HAPROXY_STATS_PORT = STACK.haproxy_stats_port
# This load balancer of the fleet: its id under <prefix>/lbs/, where users' traffic enters
# it, and how long its registration outlives a proxysync that stopped refreshing it.
LB_ID = env_str("GREENLIGHT_LB_ID", "lb-0")
if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", LB_ID):
    raise ImproperlyConfigured(
        f"GREENLIGHT_LB_ID must be 1 to 63 letters, digits, '.', '_' or '-' starting with "
        f"a letter or digit, got {LB_ID!r}"
    )
LB_ADDRESS = env_str("GREENLIGHT_LB_ADDRESS", LB_URL).rstrip("/")
_lb_address = urlparse(LB_ADDRESS)
if _lb_address.scheme not in ("http", "https") or not _lb_address.hostname:
    raise ImproperlyConfigured(
        f"GREENLIGHT_LB_ADDRESS must be an http:// or https:// URL with a host, got {LB_ADDRESS!r}"
    )
LB_LEASE_SECONDS = env_int("GREENLIGHT_LB_LEASE_SECONDS", 5, minimum=2, maximum=300)
# Where the worker reads this load balancer's HAProxy counters (its stats page, for the
# guard after the switch, deployer.guard): by default the stats port on the host of
# GREENLIGHT_LB_ADDRESS.
_lb_host = _lb_address.hostname or "127.0.0.1"
LB_STATS_ADDRESS = env_str(
    "GREENLIGHT_LB_STATS_ADDRESS",
    f"http://{f'[{_lb_host}]' if ':' in _lb_host else _lb_host}:{HAPROXY_STATS_PORT}",
).rstrip("/")
_lb_stats_address = urlparse(LB_STATS_ADDRESS)
if _lb_stats_address.scheme not in ("http", "https") or not _lb_stats_address.hostname:
    raise ImproperlyConfigured(
        "GREENLIGHT_LB_STATS_ADDRESS must be an http:// or https:// URL with a host, got "
        f"{LB_STATS_ADDRESS!r}"
    )
# Prometheus, for an app's guard query (deployer.guard); empty: no PromQL guard.
GREENLIGHT_PROMETHEUS_URL = env_str("GREENLIGHT_PROMETHEUS_URL", "").rstrip("/")

WEB_URL = env_str("GREENLIGHT_WEB_URL", f"http://127.0.0.1:{STACK.web_port}")

# The bearer token Prometheus sends to GET /metrics (dashboard.metrics); unset, the
# endpoint is off (404 saying how to turn it on).
METRICS_TOKEN = env_optional("GREENLIGHT_METRICS_TOKEN")
if METRICS_TOKEN is not None and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured(
        "GREENLIGHT_METRICS_TOKEN must be at least 16 characters (a random secret, such as "
        "the output of `openssl rand -hex 32`)"
    )

# Deployments.
MAX_REPLICAS = env_int("GREENLIGHT_MAX_REPLICAS", 100, minimum=1)
HEALTH_DEADLINE_SECONDS = env_int("GREENLIGHT_HEALTH_DEADLINE", 120, minimum=1)
# Where apps may run and which service accounts their pods may use (deployer.validation).
ALLOWED_NAMESPACES = env_list("GREENLIGHT_NAMESPACES", [KUBE_NAMESPACE])
ALLOWED_SERVICE_ACCOUNTS = env_list("GREENLIGHT_SERVICE_ACCOUNTS", ["default"])

# Scaling: the default AWS region, the drain deadline, the schedule tick.
SCALING_AWS_REGION = env_str("GREENLIGHT_AWS_REGION", "us-east-1")
SCALING_DRAIN_DEADLINE_SECONDS = env_int("GREENLIGHT_DRAIN_DEADLINE", 300, minimum=1)
SCALING_TICK_SECONDS = env_int("GREENLIGHT_SCALING_TICK", 30, minimum=1)
# How long a run waits before looking again at a deploy it yields to.
SCALING_WAIT_SECONDS = env_int("GREENLIGHT_SCALING_WAIT", 5, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "scaling-tick": {"task": "scaling.tasks.tick", "schedule": float(SCALING_TICK_SECONDS)},
}

# Notifications (dashboard.notifications): links in messages point at WEB_URL; a failed
# delivery is tried again after NOTIFY_RETRY_SECONDS, doubling, NOTIFY_MAX_ATTEMPTS in all.
NOTIFY_MAX_ATTEMPTS = env_int("GREENLIGHT_NOTIFY_MAX_ATTEMPTS", 5, minimum=1, maximum=20)
NOTIFY_RETRY_SECONDS = env_int("GREENLIGHT_NOTIFY_RETRY_SECONDS", 10, minimum=1, maximum=600)
NOTIFY_TIMEOUT_SECONDS = env_int("GREENLIGHT_NOTIFY_TIMEOUT", 10, minimum=1, maximum=120)
# The sweep sends lost deliveries again and announces configurations a load balancer refused.
CELERY_BEAT_SCHEDULE["notifications-sweep"] = {
    "task": "dashboard.notifications.sweep",
    "schedule": float(env_int("GREENLIGHT_NOTIFY_SWEEP_SECONDS", 15, minimum=1)),
}
# Email notifications go through Django's mail: an SMTP server from the environment.
EMAIL_HOST = env_str("GREENLIGHT_EMAIL_HOST", "127.0.0.1")
EMAIL_PORT = env_int("GREENLIGHT_EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("GREENLIGHT_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_str("GREENLIGHT_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("GREENLIGHT_EMAIL_STARTTLS", False)
EMAIL_USE_SSL = env_bool("GREENLIGHT_EMAIL_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured(
        "Set one of GREENLIGHT_EMAIL_STARTTLS and GREENLIGHT_EMAIL_SSL, not both"
    )
EMAIL_TIMEOUT = NOTIFY_TIMEOUT_SECONDS
DEFAULT_FROM_EMAIL = env_str("GREENLIGHT_EMAIL_FROM", "greenlight@localhost")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        # API tokens (dashboard.tokens): Bearer glt_..., capped by scopes and namespaces.
        "dashboard.tokens.auth.ApiTokenAuthentication",
        # The older one-per-user DRF tokens (Token <key>) act with their user's full rights.
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # A namespace-limited API token lists and finds only its namespaces' objects.
    "DEFAULT_FILTER_BACKENDS": ["dashboard.tokens.scopes.TokenNamespaceFilter"],
    # JSON with a nesting limit: a deeply nested body is a 400, not a RecursionError.
    "DEFAULT_PARSER_CLASSES": [
        "dashboard.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Greenlight API",
    "DESCRIPTION": "Blue-green deployments to Kubernetes and scheduled scaling.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a Kind and a Status; each gets its own schema enum.
    "ENUM_NAME_OVERRIDES": {
        "DeploymentKindEnum": "deployer.models.Deployment.Kind",
        "DeploymentStatusEnum": "deployer.models.Deployment.Status",
        "ScheduleKindEnum": "scaling.models.Schedule.Kind",
        "ScalingRunKindEnum": "scaling.models.ScalingRun.Kind",
        "ScalingRunStatusEnum": "scaling.models.ScalingRun.Status",
        "TokenStateEnum": "dashboard.tokens.models.STATES",
    },
}

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    X_FRAME_OPTIONS = "DENY"

# Serving over HTTPS (README, "Production settings"): cookies only over TLS, HSTS, the
# redirect to https://, and the header a TLS-terminating proxy sets. All off by default,
# since `make run` and docker-compose serve plain HTTP.
SESSION_COOKIE_SECURE = env_bool("GREENLIGHT_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("GREENLIGHT_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("GREENLIGHT_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("GREENLIGHT_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("GREENLIGHT_SSL_REDIRECT", False)
SECURE_PROXY_SSL_HEADER = proxy_ssl_header(
    "GREENLIGHT_PROXY_SSL_HEADER", env_optional("GREENLIGHT_PROXY_SSL_HEADER")
)
# Addresses of the reverse proxies whose X-Forwarded-For the audit trail believes (none by
# default: the client is REMOTE_ADDR).
TRUSTED_PROXIES = env_list("GREENLIGHT_TRUSTED_PROXIES", [])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Django logs the path of 4xx/5xx requests; a Docker Hub hook's path holds its secret.
    "filters": {"redact_secrets": {"()": "dashboard.redaction.RedactSecrets"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("GREENLIGHT_LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's default handlers (a console one when DEBUG) would print unredacted lines.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.db.backends": {"level": "WARNING"},
    },
}
