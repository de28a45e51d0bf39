"""Settings, read from the environment through django-environ.

`.env.example` lists every variable. Without DATABASE_URL and REDIS_URL the
project runs on SQLite and an embedded Redis, so `make run` needs no services.
"""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from project.logs import logging_config, uvicorn_access_log_wanted
from project.redis import resolve_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

ENVIRONMENT = env.str("SWITCHBOARD_ENV", default="development")
PRODUCTION = ENVIRONMENT == "production"
DEBUG = env.bool("DEBUG", default=not PRODUCTION)

if PRODUCTION:
    # Production refuses to start without its secrets rather than run on a default.
    SECRET_KEY = env.str("SECRET_KEY")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
    SWITCHBOARD_ENCRYPTION_KEYS = env.list("SWITCHBOARD_ENCRYPTION_KEYS")
else:
    SWITCHBOARD_ENCRYPTION_KEYS = env.list("SWITCHBOARD_ENCRYPTION_KEYS", default=[])
    SECRET_KEY = env.str("SECRET_KEY", default="dev-only-not-secret-switchboard")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_rq",
    "axes",
    "auditlog",  # who changed which configuration row (project/auditing.py)
    "project",  # the alert outbox (project/README.md)
    "billing",
    "routing",
    "checklist",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication: stamps each audit log entry with the signed-in user.
    "auditlog.middleware.AuditlogMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it sees the outcome of every login attempt.
    "axes.middleware.AxesMiddleware",
]
# First: every log line of a request through Django carries its request id (project/logs.py).
MIDDLEWARE.insert(0, "project.logs.RequestIdMiddleware")

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out user before checking
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling against password guessing: five failures lock the username and
# address pair out for an hour.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

ROOT_URLCONF = "project.urls"
# The stakeholders' pages (/checklist/) sign in here; the admin keeps its own login.
LOGIN_URL = "checklist:login"
LOGIN_REDIRECT_URL = "checklist:index"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

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

DATABASES = {
    # Production names its database; a development machine defaults to SQLite.
    "default": env.db("DATABASE_URL")
    if PRODUCTION
    else env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'switchboard.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that gateway processes started by tests see the test data.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Production names its Redis; a development machine shares an embedded one.
REDIS_URL = (
    env.str("REDIS_URL")
    if PRODUCTION
    else resolve_url(env.str("REDIS_URL", default=""), VAR_DIR / "redis.db")
)
# "batch" has workers of its own (routing/batches/), so that periodic jobs on
# "default" (ledger draining, alerts) never wait behind a batch of 10,000 requests.
RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 300},
    "batch": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600},
}

if PRODUCTION:
    # Behind TLS: cookies only over HTTPS, HSTS, no sniffing; the proxy says the scheme.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
    # /healthz answers load balancers over plain HTTP on the private network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Every API view is called with a client key and needs the scope it names in
# `required_scope`; one that names none is closed (routing/auth.py).
REST_FRAMEWORK = {
    "EXCEPTION_HANDLER": "project.errors.drf_exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": ["routing.auth.ClientKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["routing.auth.HasScope"],
}

# Logs (project/logs.py, docs/observability.md): one JSON object per line in production,
# text for people on a development machine; every line carries its request id, and
# secrets are redacted before any handler writes them.
SWITCHBOARD_LOG_FORMAT = env.str("SWITCHBOARD_LOG_FORMAT", default="") or (
    "json" if PRODUCTION else "text"
)
if SWITCHBOARD_LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("SWITCHBOARD_LOG_FORMAT must be json or text.")
LOGGING = logging_config(
    SWITCHBOARD_LOG_FORMAT,
    env.str("LOG_LEVEL", default="INFO"),
    request_log=env.bool("SWITCHBOARD_REQUEST_LOG", default=False),
    access_log=uvicorn_access_log_wanted(),
)

# /metrics (routing/metrics.py): open to these addresses or networks, and to any
# address that sends SWITCHBOARD_METRICS_TOKEN as a bearer token. Several gateway
# processes add up their metrics through PROMETHEUS_MULTIPROC_DIR (docs/observability.md).
SWITCHBOARD_METRICS_TOKEN = env.str("SWITCHBOARD_METRICS_TOKEN", default="")
SWITCHBOARD_METRICS_ALLOW = env.list("SWITCHBOARD_METRICS_ALLOW", default=["127.0.0.1", "::1"])
# Unset: each process shows its own metrics. Set (runstack sets var/metrics and empties it
# at start; production empties it before starting the gateway processes): they add up.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
else:
    # prometheus_client goes multiprocess when the variable exists at all, even empty.
    env.ENVIRON.pop("PROMETHEUS_MULTIPROC_DIR", None)
# The monitoring dashboard and the latency anomaly job (routing/monitoring.py): percentiles
# are computed over at most MAX_ROWS ledger rows of a period (an even sample beyond that).
# A provider's last ANOMALY_WINDOW_MINUTES are compared with the BASELINE_HOURS before
# them; it alerts when its p95 is LATENCY_FACTOR times the baseline's (and at least
# MIN_P95_MS), or its error rate ERROR_RATE_POINTS percentage points above the
# baseline's (and at least ERROR_RATE_MIN_PCT), over at least MIN_REQUESTS requests.
SWITCHBOARD_MONITORING = {
    "MAX_ROWS": env.int("SWITCHBOARD_MONITORING_MAX_ROWS", default=50_000),
    "ANOMALY_WINDOW_MINUTES": env.int("SWITCHBOARD_ANOMALY_WINDOW_MINUTES", default=15),
    "ANOMALY_BASELINE_HOURS": env.int("SWITCHBOARD_ANOMALY_BASELINE_HOURS", default=24),
    "ANOMALY_MIN_REQUESTS": env.int("SWITCHBOARD_ANOMALY_MIN_REQUESTS", default=20),
    "ANOMALY_LATENCY_FACTOR": env.float("SWITCHBOARD_ANOMALY_LATENCY_FACTOR", default=2.0),
    "ANOMALY_MIN_P95_MS": env.int("SWITCHBOARD_ANOMALY_MIN_P95_MS", default=1000),
    "ANOMALY_ERROR_RATE_POINTS": env.float("SWITCHBOARD_ANOMALY_ERROR_RATE_POINTS", default=10.0),
    "ANOMALY_ERROR_RATE_MIN_PCT": env.float("SWITCHBOARD_ANOMALY_ERROR_RATE_MIN_PCT", default=5.0),
}

# Gateway tunables. Every value can be overridden per provider or route later;
# these are the defaults a fresh install runs with.
SWITCHBOARD = {
    # How often a gateway process asks Redis whether the routing table changed.
    "TABLE_CHECK_SECONDS": env.float("SWITCHBOARD_TABLE_CHECK_SECONDS", default=1.0),
    # One deadline for a whole client request, across every retry and fallback.
    "REQUEST_DEADLINE_SECONDS": env.float("SWITCHBOARD_REQUEST_DEADLINE_SECONDS", default=60.0),
    "RETRIES_PER_PROVIDER": env.int("SWITCHBOARD_RETRIES_PER_PROVIDER", default=1),
    "BACKOFF_BASE_SECONDS": env.float("SWITCHBOARD_BACKOFF_BASE_SECONDS", default=0.1),
    "BACKOFF_CAP_SECONDS": env.float("SWITCHBOARD_BACKOFF_CAP_SECONDS", default=2.0),
    # A Retry-After longer than this sends the request to the next provider instead.
    "RETRY_AFTER_CAP_SECONDS": env.float("SWITCHBOARD_RETRY_AFTER_CAP_SECONDS", default=2.0),
    "BREAKER_CONSECUTIVE_FAILURES": env.int("SWITCHBOARD_BREAKER_FAILURES", default=5),
    "BREAKER_FAILURE_RATE": env.float("SWITCHBOARD_BREAKER_FAILURE_RATE", default=0.5),
    "BREAKER_MIN_VOLUME": env.int("SWITCHBOARD_BREAKER_MIN_VOLUME", default=20),
    "BREAKER_WINDOW_SECONDS": env.int("SWITCHBOARD_BREAKER_WINDOW_SECONDS", default=60),
    "BREAKER_COOLDOWN_SECONDS": env.float("SWITCHBOARD_BREAKER_COOLDOWN_SECONDS", default=30.0),
    # How long a gateway process trusts its last reading of a breaker (0 = ask Redis every time).
    "BREAKER_READ_CACHE_SECONDS": env.float("SWITCHBOARD_BREAKER_READ_CACHE_SECONDS", default=0.5),
    # Which HTTP transport the upstream client uses: "aiohttp" or "httpx" (see bench/RESULTS.md).
    "UPSTREAM_TRANSPORT": env.str("SWITCHBOARD_UPSTREAM_TRANSPORT", default="httptools"),
    # The key audit calls a client key older than this overdue for rotation (0: never).
    "CLIENT_KEY_ROTATION_DAYS": env.int("SWITCHBOARD_CLIENT_KEY_ROTATION_DAYS", default=90),
    # Content samples (billing/README.md): the share of answered requests whose prompt and
    # completion are kept, redacted (0, the default, keeps none), and for how many days.
    "SAMPLE_RATE": env.float("SWITCHBOARD_SAMPLE_RATE", default=0.0),
    "SAMPLE_RETENTION_DAYS": env.int("SWITCHBOARD_SAMPLE_RETENTION_DAYS", default=30),
    # Health probes (routing/README.md#health-probes): a one-token completion to every
    # enabled deployment every PROBE_SECONDS, with the production key. A deployment is down
    # after DOWN_AFTER failed probes in a row and back after UP_AFTER good ones; degraded
    # with a failure among its last WINDOW probes, a median latency above SLOW_MS, or a
    # breaker not closed. Results are kept RETENTION_DAYS (the status page shows 30 days).
    "PROBE_SECONDS": env.int("SWITCHBOARD_PROBE_SECONDS", default=30),
    "PROBE_TIMEOUT_SECONDS": env.float("SWITCHBOARD_PROBE_TIMEOUT_SECONDS", default=10.0),
    "PROBE_DOWN_AFTER": env.int("SWITCHBOARD_PROBE_DOWN_AFTER", default=3),
    "PROBE_UP_AFTER": env.int("SWITCHBOARD_PROBE_UP_AFTER", default=2),
    "PROBE_WINDOW": env.int("SWITCHBOARD_PROBE_WINDOW", default=10),
    "PROBE_SLOW_MS": env.int("SWITCHBOARD_PROBE_SLOW_MS", default=5000),
    "PROBE_RETENTION_DAYS": env.int("SWITCHBOARD_PROBE_RETENTION_DAYS", default=35),
    # Rate limits (routing/limits.py): a concurrency slot whose request never gave it back
    # (its process died) is free after this long; a provider quota with less than this
    # share left sends its deployment after the route's other candidates.
    "RATE_LIMIT_SLOT_LEASE_SECONDS": env.float(
        "SWITCHBOARD_RATE_LIMIT_SLOT_LEASE_SECONDS", default=120.0
    ),
    "UPSTREAM_QUOTA_RESERVE": env.float("SWITCHBOARD_UPSTREAM_QUOTA_RESERVE", default=0.05),
    # Allowances (routing/allowances.py, docs/allowances.md): each gateway process admits
    # from slices of the keys' limits and the hard budgets, taken ahead for this many
    # seconds (0: every request is admitted in Redis), and only while a limit has
    # HEADROOM times the slice left; nearer the limit, each request is admitted exactly.
    "ALLOWANCE_SECONDS": env.float("SWITCHBOARD_ALLOWANCE_SECONDS", default=1.0),
    "ALLOWANCE_HEADROOM": env.int("SWITCHBOARD_ALLOWANCE_HEADROOM", default=20),
    # The response cache and single-flight (routing/cache.py, routing/singleflight.py).
    "CACHE_ENABLED": env.bool("SWITCHBOARD_CACHE_ENABLED", default=True),
    "CACHE_TTL_SECONDS": env.float("SWITCHBOARD_CACHE_TTL_SECONDS", default=3600.0),
    "CACHE_MAX_ENTRIES": env.int("SWITCHBOARD_CACHE_MAX_ENTRIES", default=10_000),
    "CACHE_MAX_ENTRY_BYTES": env.int("SWITCHBOARD_CACHE_MAX_ENTRY_BYTES", default=262_144),
    "SINGLE_FLIGHT_ENABLED": env.bool("SWITCHBOARD_SINGLE_FLIGHT_ENABLED", default=True),
    "SINGLE_FLIGHT_LOCK_SECONDS": env.float("SWITCHBOARD_SINGLE_FLIGHT_LOCK_SECONDS", default=5.0),
    # Experiments and rollouts (routing/README.md#experiments-and-rollouts): the significance
    # level of the per-metric tests; the sliding window the rollback triggers read each minute.
    "EXPERIMENT_ALPHA": env.float("SWITCHBOARD_EXPERIMENT_ALPHA", default=0.05),
    "ROLLOUT_WINDOW_SECONDS": env.int("SWITCHBOARD_ROLLOUT_WINDOW_SECONDS", default=300),
    # Context detection (routing/README.md#the-routing-context): the languages served (ISO
    # 639-1, comma-separated; empty: any), the default of organisations that name none;
    # a detected meeting type less certain than this is "other".
    "LANGUAGES": tuple(
        code.strip().lower() for code in env.list("SWITCHBOARD_LANGUAGES", default=[]) if code
    ),
    "MEETING_TYPE_MIN_CONFIDENCE": env.float(
        "SWITCHBOARD_MEETING_TYPE_MIN_CONFIDENCE", default=0.5
    ),
}
if SWITCHBOARD["ALLOWANCE_SECONDS"] < 0 or SWITCHBOARD["ALLOWANCE_HEADROOM"] < 2:
    raise ImproperlyConfigured(
        "SWITCHBOARD_ALLOWANCE_SECONDS must be at least 0 and SWITCHBOARD_ALLOWANCE_HEADROOM "
        "at least 2."
    )
if not 0.0 <= SWITCHBOARD["SAMPLE_RATE"] <= 1.0:
    raise ImproperlyConfigured("SWITCHBOARD_SAMPLE_RATE must be between 0 and 1.")
if SWITCHBOARD["SAMPLE_RETENTION_DAYS"] < 1:
    raise ImproperlyConfigured("SWITCHBOARD_SAMPLE_RETENTION_DAYS must be at least 1.")
if SWITCHBOARD["PROBE_SECONDS"] < 1:
    raise ImproperlyConfigured("SWITCHBOARD_PROBE_SECONDS must be at least 1.")
if SWITCHBOARD["PROBE_RETENTION_DAYS"] < 31:
    raise ImproperlyConfigured("SWITCHBOARD_PROBE_RETENTION_DAYS must be at least 31.")
if not 1 <= SWITCHBOARD["PROBE_DOWN_AFTER"] <= SWITCHBOARD["PROBE_WINDOW"]:
    raise ImproperlyConfigured("SWITCHBOARD_PROBE_DOWN_AFTER must be from 1 to PROBE_WINDOW.")
if not 1 <= SWITCHBOARD["PROBE_UP_AFTER"] <= SWITCHBOARD["PROBE_WINDOW"]:
    raise ImproperlyConfigured("SWITCHBOARD_PROBE_UP_AFTER must be from 1 to PROBE_WINDOW.")

# The alert outbox (project/README.md). Delivery attempts back off by this schedule
# (seconds after the 1st, 2nd, ... failed attempt; the last value repeats), and an
# alert still failing after MAX_ATTEMPTS is marked failed.
SWITCHBOARD_ALERT_BACKOFF_SECONDS = env.list(
    "SWITCHBOARD_ALERT_BACKOFF_SECONDS", cast=int, default=[30, 120, 600, 3600]
)
SWITCHBOARD_ALERT_MAX_ATTEMPTS = env.int("SWITCHBOARD_ALERT_MAX_ATTEMPTS", default=5)
# An alert 'delivering' for longer than this lost its worker; another one takes it over.
SWITCHBOARD_ALERT_CLAIM_TIMEOUT_SECONDS = env.int(
    "SWITCHBOARD_ALERT_CLAIM_TIMEOUT_SECONDS", default=600
)
SWITCHBOARD_ALERT_TIMEOUT = env.float("SWITCHBOARD_ALERT_TIMEOUT_SECONDS", default=10.0)
# The one function that POSTs webhook JSON: routing.http owns every HTTP client,
# and project imports no app, so it is named here and imported when first used.
SWITCHBOARD_ALERT_HTTP = "routing.http.post_json_sync"
# Where people open the admin: incident alerts link to the incident and its runbook.
SWITCHBOARD_BASE_URL = env.str("SWITCHBOARD_BASE_URL", default="http://127.0.0.1:8000")

# Quality (routing/quality): the share of positive feedback a model, route or arm should reach.
SWITCHBOARD_SATISFACTION_TARGET = env.float("SWITCHBOARD_SATISFACTION_TARGET", default=0.90)
# Each deployment's rolling quality, published every minute for quality-based routing.
SWITCHBOARD_QUALITY_WINDOW_MINUTES = env.int("SWITCHBOARD_QUALITY_WINDOW_MINUTES", default=60)
SWITCHBOARD_QUALITY_FEEDBACK_DAYS = env.int("SWITCHBOARD_QUALITY_FEEDBACK_DAYS", default=7)
SWITCHBOARD_QUALITY_MIN_SAMPLES = env.int("SWITCHBOARD_QUALITY_MIN_SAMPLES", default=5)
# The optional LLM judge: off unless a share of answers is given, and a route to judge with.
SWITCHBOARD_JUDGE_RATE = env.float("SWITCHBOARD_JUDGE_RATE", default=0.0)
SWITCHBOARD_JUDGE_ROUTE = env.str("SWITCHBOARD_JUDGE_ROUTE", default="")
if not 0.0 <= SWITCHBOARD_JUDGE_RATE <= 1.0 or not 0.0 <= SWITCHBOARD_SATISFACTION_TARGET <= 1.0:
    raise ImproperlyConfigured("SWITCHBOARD_JUDGE_RATE and _SATISFACTION_TARGET are from 0 to 1.")

# Batch jobs (routing/README.md): requests in flight at once per batch job, how long a
# job runs before it queues the rest behind other batches, attempts per request (a
# whole request that failed with 503 or 429 is sent again), and the largest body.
SWITCHBOARD_BATCH_CONCURRENCY = env.int("SWITCHBOARD_BATCH_CONCURRENCY", default=8)
SWITCHBOARD_BATCH_SLICE_SECONDS = env.float("SWITCHBOARD_BATCH_SLICE_SECONDS", default=240.0)
SWITCHBOARD_BATCH_ITEM_ATTEMPTS = env.int("SWITCHBOARD_BATCH_ITEM_ATTEMPTS", default=3)
SWITCHBOARD_BATCH_MAX_BYTES = env.int("SWITCHBOARD_BATCH_MAX_BYTES", default=50 * 1024 * 1024)
# A batch's requests and answers are content: deleted this many days after it finishes.
SWITCHBOARD_BATCH_RETENTION_DAYS = env.int("SWITCHBOARD_BATCH_RETENTION_DAYS", default=30)
if SWITCHBOARD_BATCH_CONCURRENCY < 1 or SWITCHBOARD_BATCH_ITEM_ATTEMPTS < 1:
    raise ImproperlyConfigured(
        "SWITCHBOARD_BATCH_CONCURRENCY and SWITCHBOARD_BATCH_ITEM_ATTEMPTS must be at least 1."
    )
if SWITCHBOARD_BATCH_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("SWITCHBOARD_BATCH_RETENTION_DAYS must be at least 1.")

# Alert email, through Django 6.1's MAILERS (the EMAIL_* settings are deprecated; the
# variables keep their familiar names). Development prints mail to the console; the
# test runner swaps every mailer for the in-memory one.
_mail_backend = env.str("EMAIL_BACKEND", default="") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend"
)
_smtp_options = {
    "host": env.str("EMAIL_HOST", default="localhost"),
    "port": env.int("EMAIL_PORT", default=25),
    "username": env.str("EMAIL_HOST_USER", default=""),
    "password": env.str("EMAIL_HOST_PASSWORD", default=""),
    "use_tls": env.bool("EMAIL_USE_TLS", default=False),
    # A mail server that never answers must not hold a delivery worker forever.
    "timeout": env.int("EMAIL_TIMEOUT", default=10),
}
MAILERS = {
    "default": {
        "BACKEND": _mail_backend,
        "OPTIONS": _smtp_options if _mail_backend.endswith(".smtp.EmailBackend") else {},
    }
}
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="switchboard@localhost")

# The audit log of configuration changes (project/auditing.py says which models and
# fields). Changes are kept as JSON with their native types, not as repr strings.
AUDITLOG_STORE_JSON_CHANGES = True
