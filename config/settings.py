"""gpufleet settings: everything comes from the environment through ``config.env``.

Embedded default (no variables set): SQLite in WAL mode under ``var/``, the Django-Q2
ORM broker and an in-process channel layer fed by the database event relay.
Cluster: ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL`` (channels-redis, Redis broker).
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONE, SELF, UNSAFE_INLINE

from config.env import (
    parse_bool,
    parse_bytes,
    parse_checked_list,
    parse_choice,
    parse_fraction,
    parse_header_name,
    parse_int,
    parse_list,
    parse_port_range,
    parse_seconds,
    parse_str,
)
from inventory.proxies import check_proxy_entry
from models_app.fetch_guard import check_allow_entry

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(parse_str("GPUFLEET_STATE_DIR", str(BASE_DIR / "var")))
STATE_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    configured = parse_str("SECRET_KEY", "")
    if configured:
        return configured
    key_file = STATE_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = parse_bool("GPUFLEET_DEBUG", False)
ALLOWED_HOSTS = parse_list("GPUFLEET_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = parse_list("GPUFLEET_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "channels",
    "django_q",
    "axes",
    "csp",
    "core",
    "inventory",
    "models_app",
    "scheduling",
    "gateway",
    "agent",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "inventory.throttle.BadTokenThrottleMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "inventory:overview"
LOGOUT_REDIRECT_URL = "login"

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
                "inventory.context_processors.maintenance",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------

SQLITE_PATH = STATE_DIR / "gpufleet.sqlite3"
DATABASE_URL = parse_str("DATABASE_URL", f"sqlite:///{SQLITE_PATH}")


# Long-running sync processes (agent, worker) keep their connection between ticks and
# tasks (the Procfile sets 60 s for them); the ASGI web process must not (Django: use 0
# under ASGI).
CONN_MAX_AGE = parse_int("GPUFLEET_DB_CONN_MAX_AGE", 0, minimum=0, maximum=3600)


def _database(url: str) -> dict[str, Any]:
    config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=CONN_MAX_AGE))
    # A connection that broke (a database restart) is replaced at the next request or
    # task instead of failing it.
    config["CONN_HEALTH_CHECKS"] = True
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = {
            # WAL lets the agent, the worker and the web process read while one writes.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    return config


DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
IS_SQLITE = DATABASES["default"]["ENGINE"].endswith("sqlite3")

# --- live updates and background work ---------------------------------------------------

REDIS_URL = parse_str("REDIS_URL", "")
NODE_NAME = parse_str("GPUFLEET_NODE_NAME", socket.gethostname().split(".")[0])
# This node's worker serves the queue named after the node: node-bound work (downloads,
# backends) is routed with async_task(..., cluster=<node name>). Django-Q reads the name
# from the environment when its app loads, which is after these settings.
os.environ.setdefault("Q_CLUSTER_NAME", NODE_NAME)


def _redis_connections(retry_class: Any) -> dict[str, Any]:
    """Connections that ride out a Redis restart: a pooled connection that died with the
    old server is found (PING after 10 s idle) and the command retried on a new one, with
    backoff; a connect that hangs gives up after 5 s. redis-py 8 drops idle connections
    every 5 s unless socket_timeout is None."""
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    return {
        "socket_timeout": None,
        "socket_connect_timeout": 5,
        "health_check_interval": 10,
        "retry": retry_class(ExponentialBackoff(cap=2.0, base=0.2), 4),
        "retry_on_error": [RedisConnectionError],
    }


if REDIS_URL:
    from redis.asyncio.retry import Retry as AsyncRetry

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, **_redis_connections(AsyncRetry)}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

Q_TIMEOUT = int(parse_seconds("GPUFLEET_TASK_TIMEOUT", 6 * 3600))
Q_CLUSTER: dict[str, Any] = {
    "name": "gpufleet",
    "workers": parse_int("GPUFLEET_WORKERS", 2, minimum=1, maximum=64),
    "timeout": Q_TIMEOUT,
    "retry": Q_TIMEOUT + 600,
    "max_attempts": 1,
    "catch_up": False,
    "label": "Tasks",
    # Each node's qcluster runs under its node name (Q_CLUSTER_NAME) so node-bound tasks
    # can be routed with async_task(..., cluster=<node name>).
    "ALT_CLUSTERS": {NODE_NAME: {}},
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    # How often workers look for new tasks in the ORM broker: a backend start or a download
    # waits for it (Redis delivers at once). 10 small SELECTs a second on SQLite.
    Q_CLUSTER["poll"] = 0.1

# --- gpufleet -------------------------------------------------------------------------

GPUFLEET_NODE_ADDRESS = parse_str("GPUFLEET_NODE_ADDRESS", "127.0.0.1")
GPUFLEET_GPU_PROBE = parse_choice(
    "GPUFLEET_GPU_PROBE", "auto", ("auto", "nvml", "simulated", "none")
)
GPUFLEET_SIMULATED_GPUS = parse_str("GPUFLEET_SIMULATED_GPUS", "")
GPUFLEET_SAMPLE_INTERVAL = parse_seconds("GPUFLEET_SAMPLE_INTERVAL", 1.0)
GPUFLEET_HEARTBEAT_TIMEOUT = parse_seconds("GPUFLEET_HEARTBEAT_TIMEOUT", 15.0)
GPUFLEET_RESERVED_DEFAULT = parse_bytes("GPUFLEET_RESERVED_DEFAULT", 1024**3)
GPUFLEET_TEMPERATURE_ALERT_C = parse_int("GPUFLEET_TEMPERATURE_ALERT_C", 85, minimum=30)
GPUFLEET_STORAGE_ROOTS = parse_list("GPUFLEET_STORAGE_ROOTS", [str(STATE_DIR / "models")])
# A download that made no progress for this long has lost its worker: the agent requeues it.
GPUFLEET_DOWNLOAD_STALL_AFTER = parse_seconds("GPUFLEET_DOWNLOAD_STALL_AFTER", 30.0)
GPUFLEET_EVENT_POLL = parse_seconds("GPUFLEET_EVENT_POLL", 0.2)
# Deployments: kept free beyond each estimate, ports of backends, restarts, OOM warnings.
GPUFLEET_PLACEMENT_MARGIN = parse_bytes("GPUFLEET_PLACEMENT_MARGIN", 256 * 1024**2)
# ... for a model whose architecture has no exact graph (its estimate is an upper bound
# that has not been checked on a GPU): twice the margin by default.
GPUFLEET_PLACEMENT_MARGIN_INEXACT = parse_bytes(
    "GPUFLEET_PLACEMENT_MARGIN_INEXACT", 2 * GPUFLEET_PLACEMENT_MARGIN
)
GPUFLEET_BACKEND_PORTS = parse_port_range("GPUFLEET_BACKEND_PORTS", (39000, 39999))
GPUFLEET_BACKEND_START_TIMEOUT = parse_seconds("GPUFLEET_BACKEND_START_TIMEOUT", 600.0)
GPUFLEET_RESTART_BACKOFF = parse_seconds("GPUFLEET_RESTART_BACKOFF", 2.0)
GPUFLEET_RESTART_BACKOFF_MAX = parse_seconds("GPUFLEET_RESTART_BACKOFF_MAX", 300.0)
GPUFLEET_OOM_WARN = parse_fraction("GPUFLEET_OOM_WARN", 0.9)
# Failover and drain (scheduling.replacing): a node offline for longer than this has its
# instances replaced on other nodes; a node is drained this long before a maintenance
# window starts.
GPUFLEET_FAILOVER_AFTER = parse_seconds("GPUFLEET_FAILOVER_AFTER", 60.0)
GPUFLEET_DRAIN_BEFORE = parse_seconds("GPUFLEET_DRAIN_BEFORE", 600.0)
# An instance counts as idle for eviction once the gateway saw no request for this long
# (the gateway marks instances with requests in flight every 2 s).
GPUFLEET_EVICT_IDLE_AFTER = parse_seconds("GPUFLEET_EVICT_IDLE_AFTER", 10.0)
# Gateway: the largest request body /v1 reads (more: 413).
GPUFLEET_GATEWAY_MAX_BODY = parse_bytes("GPUFLEET_GATEWAY_MAX_BODY", 16 * 1024**2)
GPUFLEET_LOG_DIR = Path(parse_str("GPUFLEET_LOG_DIR", str(STATE_DIR / "backends")))
GPUFLEET_RAW_RETENTION = parse_seconds("GPUFLEET_RAW_RETENTION", 15 * 60)
GPUFLEET_MINUTE_RETENTION = parse_seconds("GPUFLEET_MINUTE_RETENTION", 2 * 86400)
GPUFLEET_QUARTER_RETENTION = parse_seconds("GPUFLEET_QUARTER_RETENTION", 35 * 86400)
# Networks (CIDRs) and host names that URLs given by people may reach although they are
# not public (loopback, private, link-local …): a lab mirror, say. See models_app.fetch_guard.
GPUFLEET_FETCH_ALLOW = parse_checked_list("GPUFLEET_FETCH_ALLOW", [], check_allow_entry)

# --- logins, HTTPS, content security policy ------------------------------------------------

# django-axes locks a login out per account and, separately, per client address after
# GPUFLEET_LOGIN_FAILURES failures within the cool-off, for the cool-off (the login page
# and the admin's). Its backend must come first: it refuses a locked-out login before the
# password is even checked. Failures are logged (logger "axes").
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = True
AXES_FAILURE_LIMIT = parse_int("GPUFLEET_LOGIN_FAILURES", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=parse_seconds("GPUFLEET_LOGIN_COOLOFF", 15 * 60))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_LOCKOUT_CALLABLE = "inventory.views.lockout.locked_out"
# The failure log names the address (for a firewall), not the username typed (which is
# sometimes a password typed into the wrong field).
AXES_SENSITIVE_PARAMETERS = ["username"]
# Reverse proxies (networks or addresses) whose X-Forwarded-For is believed; none by
# default, and then the header is ignored. The lockout above, the bad-token throttle below
# and their logs all take the client's address from ``inventory.proxies.client_ip``.
GPUFLEET_TRUSTED_PROXIES = parse_checked_list("GPUFLEET_TRUSTED_PROXIES", [], check_proxy_entry)
AXES_CLIENT_IP_CALLABLE = "inventory.proxies.client_ip"
# Bad API tokens (REST API and /metrics): this many from one address within the window,
# then 429 with Retry-After until the window ends (``inventory.throttle``).
GPUFLEET_TOKEN_FAILURES = parse_int("GPUFLEET_TOKEN_FAILURES", 20, minimum=1)
GPUFLEET_TOKEN_FAILURE_WINDOW = parse_seconds("GPUFLEET_TOKEN_FAILURE_WINDOW", 5 * 60)

# The counters above must be shared by every web process: Redis in a cluster, else the
# database (its table is made by ``migrate``, see ``InventoryConfig``).
if REDIS_URL:
    from redis.retry import Retry

    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": _redis_connections(Retry),
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "gpufleet_cache",
        }
    }

# HTTPS behind a TLS-terminating proxy: all off on the embedded default (plain HTTP on
# localhost); see README.md for production values.
_PROXY_SSL_HEADER = parse_header_name("GPUFLEET_SECURE_PROXY_SSL_HEADER", "")
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = (_PROXY_SSL_HEADER, "https")
SECURE_SSL_REDIRECT = parse_bool("GPUFLEET_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
SECURE_HSTS_SECONDS = parse_int("GPUFLEET_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = parse_bool("GPUFLEET_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = parse_bool("GPUFLEET_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = parse_bool("GPUFLEET_SECURE_COOKIES", False)

# Scripts, styles and connections (websockets included: CSP3's 'self' matches ws:/wss: of
# the page's own host) only from this site; no inline <script> or <style> elements, no
# eval. Inline style *attributes* are allowed: the meters and memory bars set their
# widths from data in style="width: …%" on every live fragment, and a style attribute
# cannot run code. The API docs (Swagger UI injects its own styles) are left out.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/v1/docs"],
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "style-src-elem": [SELF],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- the rest -------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = parse_str("GPUFLEET_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = STATE_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request when it is missing
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": parse_str("GPUFLEET_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "axes.apps": {"level": "WARNING"},  # its version banner on every command
        # httpx logs every request at INFO, signed download URLs and all.
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},  # huggingface_hub's own client logs under this name
    },
}
