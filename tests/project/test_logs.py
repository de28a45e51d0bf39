"""Structured logs: JSON lines, the request id on every line of a request, no secrets or prompts."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import openai
import orjson
import pytest
from django.test import Client

from project.logs import JsonFormatter, RedactSecrets, RequestIdFilter, bind_request_id, redact
from tests.servers import SimulatorHandle

PROMPT = "Summarise: the zebra-kumquat merger closes on Tuesday."


class Captured:
    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.threads: list[int] = []

    def lines(self) -> list[dict]:
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Every record at DEBUG and above, through the production handler's formatter and filters."""
    found = Captured()
    handler = logging.StreamHandler(found.stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactSecrets())

    class Thread(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.thread_ident = record.thread  # type: ignore[attr-defined]
            return True

    handler.addFilter(Thread())
    root = logging.getLogger()
    requests_log = logging.getLogger("routing.requests")
    old_level, old_requests = root.level, requests_log.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    requests_log.setLevel(logging.INFO)
    try:
        yield found
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        requests_log.setLevel(old_requests)


def test_a_line_is_one_json_object_with_the_request_id_and_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    token = bind_request_id("req-123")
    try:
        logger.warning("drained %d entries", 3, extra={"queue": "ledger"})
    finally:
        logger.removeHandler(handler)
        from project.logs import request_id_var

        request_id_var.reset(token)

    [line] = stream.getvalue().splitlines()
    data = orjson.loads(line)
    assert data["message"] == "drained 3 entries"
    assert data["level"] == "WARNING" and data["logger"] == "tests.logs"
    assert data["request_id"] == "req-123" and data["queue"] == "ledger"
    assert data["timestamp"].endswith("+00:00")


SECRETS = {
    "bearer": ("Authorization: Bearer sb-prod-7f3k2j1h0g9f8d7s", "sb-prod-7f3k2j1h0g9f8d7s"),
    "openai key": ("key sk-proj-Abc123Def456Ghi789", "sk-proj-Abc123Def456Ghi789"),
    "anthropic key": ("sk-ant-api03-zyx987wvu654", "sk-ant-api03-zyx987wvu654"),
    "client key": ("revoked sb-dev-q1w2e3r4t5y6u7i8", "sb-dev-q1w2e3r4t5y6u7i8"),
    "fernet": (
        "stored gAAAAABnExampleFernetTokenPayload0123456789abcdef==",
        "gAAAAABnExampleFernetTokenPayload0123456789abcdef",
    ),
    "google key": ("GET /v1beta?key=AIzaSyD-0123456789abcdefghijklmnopq", "AIzaSyD-0123456789"),
}


@pytest.mark.parametrize("text,secret", SECRETS.values(), ids=SECRETS.keys())
def test_the_filter_redacts_secrets_wherever_they_appear_in_a_record(
    text: str, secret: str
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("tests.secrets")
    logger.addHandler(handler)
    try:
        logger.error(text)
        logger.error("upstream said %s", text)
        logger.error("extra", extra={"detail": text})
        try:
            raise RuntimeError(text)
        except RuntimeError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(handler)

    output = stream.getvalue()
    assert len(output.splitlines()) >= 4
    assert secret not in output
    assert "redacted" in output


def test_ordinary_text_is_left_alone() -> None:
    text = "a bearer of good news asked for 12 tokens; skip-list sk-1 and key=short"
    assert redact(text) == text


def test_every_line_logged_during_a_request_carries_its_id_and_never_the_prompt(
    openai_client: openai.OpenAI, demo: SimulatorHandle, captured: Captured
) -> None:
    demo.fault(provider="aimlapi", mode="error", status=503)  # a fallback: more to log
    test_thread = threading.get_ident()

    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=[{"role": "user", "content": PROMPT}]
    )

    request_id = raw.headers["x-switchboard-request-id"]
    served = [line for line in captured.lines() if line["thread_ident"] != test_thread]
    assert any(line["logger"] == "routing.requests" for line in served), served
    # The server's lines of this request: everything its event loop logged while it ran.
    during = [line for line in served if line["logger"].startswith(("routing", "billing"))]
    assert during and all(line["request_id"] == request_id for line in during), during
    # The test's own client logs what it sends at DEBUG (this thread); the gateway never does.
    assert all(
        "zebra-kumquat" not in orjson.dumps(line).decode()
        for line in captured.lines()
        if line["thread_ident"] != test_thread
    )


@pytest.mark.django_db
def test_a_request_through_django_logs_under_the_id_it_answers_with(captured: Captured) -> None:
    response = Client().get("/api/v1/usage")  # no key: 401, logged by django.request

    assert response.status_code == 401
    logged = [line for line in captured.lines() if line["logger"] == "django.request"]
    assert logged and {line["request_id"] for line in logged} == {response["X-Request-Id"]}


def log_from_a_job() -> str:
    logging.getLogger("tests.jobs").warning("a job is running")
    return "done"


def test_a_line_logged_in_an_rq_job_carries_the_job_id(captured: Captured) -> None:
    from rq import Queue

    from project.redis import sync_client

    job = Queue("default", connection=sync_client(), is_async=False).enqueue(log_from_a_job)

    [line] = [line for line in captured.lines() if line["logger"] == "tests.jobs"]
    assert line["request_id"] == job.id


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("flags", "access_lines"),
    [(("--log-level", "info"), 1), (("--log-level", "info", "--no-access-log"), 0)],
    ids=["default", "no-access-log"],
)
def test_uvicorn_writes_an_access_line_per_request_unless_started_with_no_access_log(
    tmp_path, flags: tuple[str, ...], access_lines: int
) -> None:
    """Django's logging is configured after uvicorn's: it must not switch the flag off."""
    import os
    import urllib.error
    import urllib.request

    from django.conf import settings

    from tests.conftest import database_url
    from tests.servers import start_gateway_processes

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
    }
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as output:
        [(url, process)] = start_gateway_processes(1, env, flags=flags, output=output)
        try:
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{url}/v1/models", timeout=5)
            refused.value.close()
            assert refused.value.code == 401
        finally:
            process.terminate()
            process.wait(timeout=10)
    printed = log_path.read_text()
    assert printed.count("GET /v1/models HTTP/1.1") == access_lines, printed
