"""Settings, all from environment variables with working defaults (README:
Configuration). The tests use ``config.test_settings``, which builds on these.
Importing settings writes nothing to disk."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DASHBOARD_DATA_DIR", BASE_DIR / "var"))


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = envbool("DEBUG", False)
#: Set by config.test_settings: the development key and plain static files.
TESTING = False

_INSECURE_KEY = "django-insecure-development-only-key-change-me"
SECRET_KEY = os.environ.get("SECRET_KEY") or _INSECURE_KEY

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_q",
    "ninja",  # the API docs page's swagger-ui, from local static files (no CDN)
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "dashboard.web.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": False,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.web.context_processors.team",
            ],
            "builtins": ["template_partials.templatetags.partials", "dashboard.web.ui"],
            "loaders": [
                (
                    "template_partials.loader.Loader",
                    [
                        (
                            "django.template.loaders.cached.Loader",
                            [
                                "django.template.loaders.filesystem.Loader",
                                "django.template.loaders.app_directories.Loader",
                            ],
                        )
                    ],
                )
            ],
        },
    }
]

# --- database -------------------------------------------------------------------

if not os.environ.get("DATABASE_URL"):
    # The embedded default's file lives in DATA_DIR: a fresh checkout has none yet.
    DATA_DIR.mkdir(parents=True, exist_ok=True)

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The same backend, with SQLite's real parameter limit (config/sqlite3).
    DATABASES["default"]["ENGINE"] = "config.sqlite3"
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the web server read while a worker writes; IMMEDIATE takes the
        # write lock at BEGIN so two writers queue on the busy timeout instead of
        # failing with "database is locked" halfway through a transaction.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- background work (django-q2) --------------------------------------------------

DASHBOARD_BROKER = os.environ.get("DASHBOARD_BROKER", "orm").strip().lower()
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

#: Seconds one task may run. Task loops stop well before it; httpx timeouts are
#: 30 s; the broker redelivers after Q_RETRY, which must stay above it.
TASK_TIMEOUT = envint("DASHBOARD_TASK_TIMEOUT", 120)
TASK_BUDGET = envint("DASHBOARD_TASK_BUDGET", 50)
#: Seconds a worker's claim on a job (or slot) lasts without a heartbeat; a
#: killed worker's jobs are taken over this long after it died.
DASHBOARD_LEASE_SECONDS = envint("DASHBOARD_LEASE_SECONDS", 60)
#: A sync job with more pending prompts than this is cut into slices that
#: every free worker process works on (dashboard/jobs/slices.py).
DASHBOARD_SLICE_ITEMS = envint("DASHBOARD_SLICE_ITEMS", 500)
#: Seconds to wait for a provider's answer (a Bytez cold run can be slow).
DASHBOARD_HTTP_TIMEOUT = float(envint("DASHBOARD_HTTP_TIMEOUT", 30))
#: The largest answer read from a provider, in MB; a larger one fails the call.
DASHBOARD_MAX_RESPONSE_MB = envint("DASHBOARD_MAX_RESPONSE_MB", 32)
if DASHBOARD_MAX_RESPONSE_MB < 1:
    raise ImproperlyConfigured("DASHBOARD_MAX_RESPONSE_MB must be at least 1.")
DASHBOARD_WORKERS = envint("DASHBOARD_WORKERS", 4)
Q_CLUSTER: dict[str, object] = {
    "name": "dashboard",
    "workers": DASHBOARD_WORKERS,
    # Tasks a cluster takes off the broker ahead of its workers (django-q2's
    # default is workers squared): a busy cluster holding a big job's slice
    # helpers keeps them from the idle workers of another cluster.
    "queue_limit": envint("DASHBOARD_QUEUE_LIMIT", DASHBOARD_WORKERS),
    "timeout": TASK_TIMEOUT,
    "retry": TASK_TIMEOUT + 60,
    "max_attempts": 1,  # the job row keeps its own attempt counter
    "ack_failures": True,
    # Successful task results are not kept (the job rows hold what matters);
    # with a limit, django-q2's monitor re-reads up to that many rows per result.
    "save_limit": -1,
    "catch_up": False,
    "label": "Background tasks",
    "poll": 0.1,
    "log_level": os.environ.get("DASHBOARD_WORKER_LOG_LEVEL", "WARNING"),
}
if DASHBOARD_BROKER == "redis":
    Q_CLUSTER["redis"] = REDIS_URL
elif DASHBOARD_BROKER == "orm":
    Q_CLUSTER["orm"] = "default"
else:
    raise ImproperlyConfigured(
        f"DASHBOARD_BROKER must be 'orm' or 'redis', not {DASHBOARD_BROKER!r}"
    )
if envbool("DASHBOARD_SYNC_TASKS", False):
    Q_CLUSTER["sync"] = True

# --- security ------------------------------------------------------------------------

DASHBOARD_ENCRYPTION_KEYS = envlist("DASHBOARD_ENCRYPTION_KEYS")
DASHBOARD_ALLOWED_PRIVATE_HOSTS = envlist("DASHBOARD_ALLOWED_PRIVATE_HOSTS")
DASHBOARD_HTTPS = envbool("DASHBOARD_HTTPS", False)
#: Proxies (addresses or networks) whose X-Forwarded-For is believed: login
#: throttling keys on the real client behind them, never on the proxy.
DASHBOARD_TRUSTED_PROXIES = envlist("DASHBOARD_TRUSTED_PROXIES")
for _proxy in DASHBOARD_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"DASHBOARD_TRUSTED_PROXIES: {_proxy!r} is not an IP address or network"
        ) from None

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if DASHBOARD_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("DASHBOARD_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

if not DEBUG and SECRET_KEY == _INSECURE_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY (DEBUG is off).")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- i18n, static -----------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- logging -----------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "dashboard.core.logs.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "django_q": {"level": "WARNING"},
    },
}

# --- limits --------------------------------------------------------------------------------

#: As many as the largest batch APIs take (OpenAI's and Together's: 50,000 requests).
MAX_PROMPTS_PER_JOB = envint("DASHBOARD_MAX_PROMPTS", 50_000)
#: The largest request body (a JSON job of 50,000 prompts of 800 characters is
#: about 42 MB); Django refuses bigger ones before reading them (the API: 413).
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DASHBOARD_MAX_BODY_MB", 64) * 1024 * 1024
MAX_PROMPT_CHARS = envint("DASHBOARD_MAX_PROMPT_CHARS", 100_000)
#: Datasets: rows, bytes of an uploaded file, columns (README: Configuration).
MAX_DATASET_ROWS = envint("DASHBOARD_MAX_DATASET_ROWS", 50_000)  # a job's limit
MAX_DATASET_BYTES = envint("DASHBOARD_MAX_DATASET_BYTES", 64 * 1024 * 1024)
MAX_DATASET_COLUMNS = envint("DASHBOARD_MAX_DATASET_COLUMNS", 100)
JOB_DEADLINE_SECONDS = envint("DASHBOARD_JOB_DEADLINE", 6 * 3600)
#: Seconds between two status checks of one remote batch (batch mode).
BATCH_POLL_SECONDS = envint("DASHBOARD_BATCH_POLL_SECONDS", 30)
if BATCH_POLL_SECONDS < 1:
    raise ImproperlyConfigured("DASHBOARD_BATCH_POLL_SECONDS must be at least 1.")

# --- notifications ---------------------------------------------------------------------


def email_settings(url: str) -> dict[str, object]:
    """EMAIL_URL as Django's e-mail settings: ``smtp://user:password@host:587``
    (STARTTLS with ``?tls=1``), ``smtps://…`` (TLS from the start), or
    ``console://`` (printed, the default)."""
    parts = urlsplit(url)
    if parts.scheme == "console":
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
            "EMAIL_HOST": "localhost",
            "EMAIL_PORT": 25,
            "EMAIL_HOST_USER": "",
            "EMAIL_HOST_PASSWORD": "",
            "EMAIL_USE_SSL": False,
            "EMAIL_USE_TLS": False,
        }
    if parts.scheme not in ("smtp", "smtps"):
        raise ImproperlyConfigured(
            f"EMAIL_URL must start with smtp://, smtps:// or console://, not {url!r}"
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"EMAIL_URL has a bad port: {url!r}") from None
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": parts.hostname or "localhost",
        "EMAIL_PORT": port or (465 if parts.scheme == "smtps" else 25),
        "EMAIL_HOST_USER": unquote(parts.username or ""),
        "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
        "EMAIL_USE_SSL": parts.scheme == "smtps",
        "EMAIL_USE_TLS": parts.scheme == "smtp" and query.get("tls", "") in ("1", "true", "yes"),
    }


_EMAIL = email_settings(os.environ.get("EMAIL_URL") or "console://")
EMAIL_BACKEND = _EMAIL["EMAIL_BACKEND"]
EMAIL_HOST = _EMAIL["EMAIL_HOST"]
EMAIL_PORT = _EMAIL["EMAIL_PORT"]
EMAIL_HOST_USER = _EMAIL["EMAIL_HOST_USER"]
EMAIL_HOST_PASSWORD = _EMAIL["EMAIL_HOST_PASSWORD"]
EMAIL_USE_SSL = _EMAIL["EMAIL_USE_SSL"]
EMAIL_USE_TLS = _EMAIL["EMAIL_USE_TLS"]
#: Seconds to wait for the SMTP server (below the task timeout).
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = os.environ.get(
    "DASHBOARD_EMAIL_FROM", "LLM Jobs Dashboard <noreply@localhost>"
)
#: Where the dashboard is reached, for the links in e-mails.
DASHBOARD_BASE_URL = os.environ.get("DASHBOARD_BASE_URL", "http://127.0.0.1:8000")
