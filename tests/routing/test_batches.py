"""Batch jobs: submitted through the API, run by a real RQ worker on real Redis
against the simulator, each item billed once through the ledger."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from billing.models import UsageRecord
from routing.actions import revoke_client_key
from routing.batches import QUEUE, actions, jobs
from routing.management.commands.submit_batch import ProgressBar
from routing.models import Batch, BatchItem, ClientKey, hash_key
from tests.factories import drain_ledger, make_client_key
from tests.servers import SimulatorHandle


def run_batch_worker() -> None:
    """A real RQ worker on the "batch" queue, in this process, until the queue is empty."""
    import django_rq
    from rq import SimpleWorker

    queue = django_rq.get_queue(QUEUE)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def batch_key(name: str = "notes-batch") -> str:
    return make_client_key(name=name, scopes=["batches"])


def ask(n: int) -> dict[str, Any]:
    return {"model": "summary", "messages": [{"role": "user", "content": f"Summarise call {n}."}]}


def submit(raw_key: str, body: Any, content_type: str = "application/json", query: str = "") -> Any:
    data = body if isinstance(body, (bytes, str)) else orjson.dumps(body)
    return Client().post(
        f"/api/v1/batches{query}",
        data,
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Bearer {raw_key}",
    )


def get(raw_key: str, path: str) -> Any:
    return Client().get(f"/api/v1/batches{path}", HTTP_AUTHORIZATION=f"Bearer {raw_key}")


def results(raw_key: str, code: str, query: str = "") -> list[dict[str, Any]]:
    response = get(raw_key, f"/{code}/results{query}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/jsonl"
    return [orjson.loads(line) for line in response.content.splitlines()]


def ok_records_by_index(batch: Batch) -> Counter[int]:
    """How many answered (billable) ledger rows each item of the batch has."""
    drain_ledger()
    prefix = f"batch-{batch.code.hex}-"
    rows = UsageRecord.objects.filter(request_id__startswith=prefix, status=UsageRecord.Status.OK)
    return Counter(
        int(rid.removeprefix(prefix).split("-")[0])
        for rid in rows.values_list("request_id", flat=True)
    )


def jobs_waiting() -> int:
    import django_rq

    return django_rq.get_queue(QUEUE).count


# -- submission ------------------------------------------------------------------------


def test_a_list_of_good_requests_becomes_a_queued_batch(demo: SimulatorHandle) -> None:
    raw = batch_key()

    response = submit(raw, [ask(1), ask(2), {**ask(3), "custom_id": "third"}])

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert body["total"] == 3
    assert body["counts"] == {
        "pending": 3,
        "running": 0,
        "answered": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert body["percent"] == 0.0
    batch = Batch.objects.get(code=body["code"])
    assert batch.client_key == ClientKey.objects.get(key_hash=hash_key(raw))
    assert list(batch.items.values_list("index", "custom_id")) == [(0, ""), (1, ""), (2, "third")]
    assert jobs_waiting() == 1
    assert demo.count("aimlapi") == 0  # nothing is sent until a worker runs it


def test_jsonl_takes_plain_requests_and_openai_batch_lines_and_a_route(
    demo: SimulatorHandle,
) -> None:
    raw = batch_key()
    openai_line = {
        "custom_id": "req-2",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": ask(2),
    }
    body = b"\n".join(
        [orjson.dumps({**ask(1), "custom_id": "req-1"}), b"", orjson.dumps(openai_line), b""]
    )

    response = submit(raw, body, "application/x-ndjson", "?route=google/gemini-2.0-flash")

    assert response.status_code == 201, response.content
    batch = Batch.objects.get(code=response.json()["code"])
    assert batch.route == "google/gemini-2.0-flash"
    assert [(i.custom_id, i.request) for i in batch.items.all()] == [
        ("req-1", ask(1)),
        ("req-2", ask(2)),
    ]


def test_one_bad_line_refuses_the_whole_batch_naming_every_bad_line(
    demo: SimulatorHandle,
) -> None:
    raw = batch_key()
    lines = [
        orjson.dumps(ask(1)),
        orjson.dumps({"model": "summary"}),
        b"{not json",
        orjson.dumps({**ask(4), "model": "no-such-route"}),
        orjson.dumps({**ask(5), "stream": True}),
        orjson.dumps({**ask(6), "custom_id": "x"}),
        orjson.dumps({**ask(7), "custom_id": "x"}),
    ]

    response = submit(raw, b"\n".join(lines), "application/jsonl")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_batch"
    assert error["message"].startswith("5 request(s) of the batch are invalid: line 2: ")
    assert [(e["line"], e["param"]) for e in error["lines"]] == [
        (2, "messages"),
        (3, None),
        (4, "model"),
        (5, "stream"),
        (7, "custom_id"),
    ]
    assert "not valid JSON" in error["lines"][1]["message"]
    assert "'no-such-route'" in error["lines"][2]["message"]
    assert "line 6" in error["lines"][4]["message"]
    assert not Batch.objects.exists()
    assert jobs_waiting() == 0


def test_a_route_the_key_cannot_reach_refuses_the_batch(demo: SimulatorHandle) -> None:
    response = submit(batch_key(), {"requests": [ask(1)], "route": "nowhere"})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "route"
    assert not Batch.objects.exists()


def test_more_than_ten_thousand_requests_is_too_large(demo: SimulatorHandle) -> None:
    tiny = {"model": "summary", "messages": [{"role": "user", "content": "x"}]}

    response = submit(batch_key(), [tiny] * 10_001)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "batch_too_large"
    assert not Batch.objects.exists()


def test_an_empty_batch_or_a_body_of_another_shape_is_refused(demo: SimulatorHandle) -> None:
    raw = batch_key()

    assert submit(raw, []).json()["error"]["code"] == "empty_batch"
    assert submit(raw, {"messages": []}).json()["error"]["param"] == "requests"
    assert submit(raw, b"", "application/jsonl").json()["error"]["code"] == "empty_batch"


# -- running ---------------------------------------------------------------------------


def test_a_1000_item_batch_completes_through_10_percent_transient_failures_billing_each_answer_once(
    demo: SimulatorHandle, settings: Settings
) -> None:
    settings.SWITCHBOARD_BATCH_CONCURRENCY = 20
    # Every 100th request asks for a model its provider refuses: it fails, with the reason.
    demo.fault(provider="aimlapi", model="gpt-4o-outage", mode="error", status=400)
    demo.fault(provider="*", mode="error", status=500, rate=0.1, seed=6)
    requests = [
        {**ask(n), "model": "aimlapi/gpt-4o-outage"} if n % 100 == 99 else ask(n)
        for n in range(1000)
    ]
    raw = batch_key()
    code = submit(raw, requests).json()["code"]

    started = time.monotonic()
    run_batch_worker()
    elapsed = time.monotonic() - started

    batch = Batch.objects.get(code=code)
    assert batch.status == Batch.Status.COMPLETED
    assert batch.finished_at is not None
    progress = get(raw, f"/{code}").json()
    assert progress["counts"] == {
        "pending": 0,
        "running": 0,
        "answered": 990,
        "failed": 10,
        "cancelled": 0,
    }
    assert progress["percent"] == 100.0
    lines = results(raw, code)
    assert [line["index"] for line in lines] == list(range(1000))
    for line in lines:
        if line["index"] % 100 == 99:
            assert line["status"] == "failed"
            assert line["error"]["code"] and line["error"]["message"]
            assert line["error"]["status"] == 400
        else:
            assert line["status"] == "answered", line
            assert line["response"]["choices"][0]["message"]["content"]
    # The simulator really did fail calls, and the engine retried them.
    calls = sum(demo.count(p) for p in ("aimlapi", "openai", "google", "anthropic"))
    assert calls > 1050
    # One billable ledger row per answered item, and none for the failed ones.
    billed = ok_records_by_index(batch)
    assert set(billed.values()) == {1}
    assert sorted(billed) == [n for n in range(1000) if n % 100 != 99]
    print(f"\n1,000-item batch: {elapsed:.1f} s with concurrency 20, {calls} upstream calls")


def test_a_request_that_fails_whole_with_503_is_sent_again_under_a_new_request_id(
    demo: SimulatorHandle,
) -> None:
    # Both tries at each of the four providers fail: the engine gives up with 503.
    demo.fault(provider="*", mode="error", status=503, times=8)
    raw = batch_key()
    code = submit(raw, [ask(1)]).json()["code"]

    run_batch_worker()

    [line] = results(raw, code)
    assert line["status"] == "answered"
    assert line["attempts"] == 2
    assert line["request_id"] == f"batch-{Batch.objects.get().code.hex}-0-2"
    drain_ledger()
    assert dict(
        UsageRecord.objects.filter(request_id__startswith="batch-").values_list(
            "request_id", "status"
        )
    ) == {line["request_id"][:-1] + "1": "error", line["request_id"]: "ok"}


def test_a_route_override_sends_every_request_there(demo: SimulatorHandle) -> None:
    raw = batch_key()
    code = submit(raw, {"requests": [ask(1), ask(2)], "route": "google/gemini-2.0-flash"}).json()[
        "code"
    ]

    run_batch_worker()

    assert [line["status"] for line in results(raw, code)] == ["answered", "answered"]
    assert demo.count("google") == 2
    assert demo.count("aimlapi") == 0


def test_cancelling_a_queued_batch_sends_nothing(demo: SimulatorHandle) -> None:
    raw = batch_key()
    code = submit(raw, [ask(n) for n in range(20)]).json()["code"]

    response = Client().post(f"/api/v1/batches/{code}/cancel", HTTP_AUTHORIZATION=f"Bearer {raw}")
    run_batch_worker()

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["counts"]["cancelled"] == 20
    assert Batch.objects.get().finished_at is not None
    assert demo.count("aimlapi") == 0
    again = Client().post(f"/api/v1/batches/{code}/cancel", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "batch_finished"


def test_cancelling_a_running_batch_lets_requests_in_flight_finish_and_starts_no_more(
    demo: SimulatorHandle, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SWITCHBOARD_BATCH_CONCURRENCY = 4
    raw = batch_key()
    code = submit(raw, [ask(n) for n in range(200)]).json()["code"]
    record = jobs.record_outcomes
    started_before_cancel: list[int] = []

    def cancel_after_ten(outcomes: list[Any]) -> None:
        settled = BatchItem.objects.filter(status__in=["answered", "failed"]).count()
        if not started_before_cancel and settled + len(outcomes) >= 10:
            started_before_cancel.append(BatchItem.objects.exclude(status="pending").count())
            actions.cancel_batch(Batch.objects.get(code=code))
        record(outcomes)

    monkeypatch.setattr(jobs, "record_outcomes", cancel_after_ten)
    run_batch_worker()

    batch = Batch.objects.get(code=code)
    counts = Batch.objects.filter(pk=batch.pk).item_counts()[batch.pk]
    assert batch.status == Batch.Status.CANCELLED
    assert batch.finished_at is not None
    assert counts["pending"] == counts["running"] == counts["failed"] == 0
    # Every item started before the cancellation finished, and none started after it.
    assert counts["answered"] == started_before_cancel[0] < 20
    assert counts["cancelled"] == 200 - counts["answered"]
    assert demo.count("aimlapi") == counts["answered"]
    assert set(ok_records_by_index(batch).values()) == {1}
    assert sum(ok_records_by_index(batch).values()) == counts["answered"]


def test_a_crashed_job_resumes_where_it_stopped_billing_no_item_twice(
    demo: SimulatorHandle, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SWITCHBOARD_BATCH_CONCURRENCY = 10
    raw = batch_key()
    code = submit(raw, [ask(n) for n in range(200)]).json()["code"]
    record = jobs.record_outcomes

    def die_at_the_fiftieth(outcomes: list[Any]) -> None:
        # The worker dies after the engine billed these requests and before their items
        # say so: the worst moment.
        if BatchItem.objects.filter(status="answered").count() + len(outcomes) >= 50:
            raise RuntimeError("the worker died")
        record(outcomes)

    monkeypatch.setattr(jobs, "record_outcomes", die_at_the_fiftieth)
    run_batch_worker()

    batch = Batch.objects.get(code=code)
    counts = Batch.objects.filter(pk=batch.pk).item_counts()[batch.pk]
    assert batch.status == Batch.Status.RUNNING
    # It stopped midway. The one that died, and others in flight with it whose
    # writes the crash cut off, were answered and billed but are left running.
    assert counts["pending"] > 0
    assert counts["running"] >= 1
    answered_before = counts["answered"]
    sent_before = demo.count("aimlapi")

    monkeypatch.setattr(jobs, "record_outcomes", record)
    assert jobs.resume_stalled_batches() == 1
    assert jobs.resume_stalled_batches() == 0  # queued already: not twice
    run_batch_worker()

    batch.refresh_from_db()
    assert batch.status == Batch.Status.COMPLETED
    assert [line["status"] for line in results(raw, code)] == ["answered"] * 200
    billed = ok_records_by_index(batch)
    assert sorted(billed) == list(range(200))
    assert set(billed.values()) == {1}
    # Everything not recorded as answered was sent (again, for those left running); the
    # answered ones were not.
    assert demo.count("aimlapi") - sent_before == 200 - answered_before


def test_a_batch_whose_key_is_revoked_fails_without_sending_the_rest(
    demo: SimulatorHandle,
) -> None:
    raw = batch_key()
    code = submit(raw, [ask(n) for n in range(5)]).json()["code"]
    revoke_client_key(ClientKey.objects.get(key_hash=hash_key(raw)))

    run_batch_worker()

    batch = Batch.objects.get(code=code)
    assert batch.status == Batch.Status.FAILED
    assert "revoked" in batch.error
    assert set(batch.items.values_list("status", flat=True)) == {"failed"}
    assert {item.error["code"] for item in batch.items.all()} == {"invalid_api_key"}
    assert demo.count("aimlapi") == 0


def test_a_second_job_for_a_running_batch_leaves_it_to_the_first(demo: SimulatorHandle) -> None:
    raw = batch_key()
    submit(raw, [ask(1)])
    batch = Batch.objects.get()
    lock = jobs.sync_client().lock(jobs.lock_key(batch.pk), timeout=60)
    assert lock.acquire(blocking=False)
    try:
        assert jobs.run_batch(batch.pk) == "another job is running this batch"
        assert jobs.resume_stalled_batches() == 0
    finally:
        lock.release()
    assert BatchItem.objects.get().status == "pending"


# -- who sees what ---------------------------------------------------------------------


def test_a_key_sees_only_its_own_batches(demo: SimulatorHandle) -> None:
    mine, theirs = batch_key("mine"), batch_key("theirs")
    code = submit(theirs, [ask(1)]).json()["code"]
    submit(mine, [ask(2)])

    assert get(mine, f"/{code}").status_code == 404
    assert get(mine, f"/{code}").json()["error"]["code"] == "batch_not_found"
    assert get(mine, f"/{code}/results").status_code == 404
    cancel = Client().post(f"/api/v1/batches/{code}/cancel", HTTP_AUTHORIZATION=f"Bearer {mine}")
    assert cancel.status_code == 404
    assert [b["code"] for b in get(mine, "").json()["data"]] != [code]
    assert len(get(mine, "").json()["data"]) == 1
    assert [b["code"] for b in get(theirs, "").json()["data"]] == [code]
    assert Batch.objects.get(code=code).status == "queued"


def test_results_can_be_narrowed_by_status_and_paged(demo: SimulatorHandle) -> None:
    demo.fault(provider="aimlapi", model="gpt-4o-outage", mode="error", status=400)
    raw = batch_key()
    requests = [ask(0), {**ask(1), "model": "aimlapi/gpt-4o-outage"}, ask(2), ask(3)]
    code = submit(raw, requests).json()["code"]
    run_batch_worker()

    assert [line["index"] for line in results(raw, code, "?status=failed")] == [1]
    assert [line["index"] for line in results(raw, code, "?offset=1&limit=2")] == [1, 2]
    assert get(raw, f"/{code}/results?status=lost").status_code == 400


# -- the command -----------------------------------------------------------------------


def write_jsonl(tmp_path: Path, requests: list[dict[str, Any]]) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in requests) + b"\n")
    return path


def test_submit_batch_waits_and_shows_progress_lines_off_a_terminal(
    demo: SimulatorHandle, tmp_path: Path
) -> None:
    batch_key("nightly")
    path = write_jsonl(tmp_path, [ask(n) for n in range(30)])
    out, err = StringIO(), StringIO()
    failure: list[BaseException] = []

    def command() -> None:
        try:
            call_command(
                "submit_batch",
                str(path),
                "--key-name",
                "nightly",
                "--wait",
                "--interval",
                "0.05",
                stdout=out,
                stderr=err,
            )
        except BaseException as exc:
            failure.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=command)
    thread.start()
    deadline = time.monotonic() + 10
    while not err.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)  # until the command has submitted and drawn its first line
    run_batch_worker()
    thread.join(timeout=30)

    assert not failure
    code = Batch.objects.get().code
    assert out.getvalue().splitlines() == [
        f"Submitted batch {code}: 30 requests.",
        f"Batch {code} completed: 30 answered, 0 failed, 0 cancelled.",
        f"Results: GET /api/v1/batches/{code}/results",
    ]
    lines = err.getvalue().splitlines()
    assert lines[0] == f"[{'-' * 30}]  0/30   0.0%  answered 0  failed 0  cancelled 0"
    assert lines[-1] == f"[{'#' * 30}] 30/30 100.0%  answered 30  failed 0  cancelled 0"
    assert "\r" not in err.getvalue()


def test_the_progress_bar_redraws_one_line_on_a_terminal() -> None:
    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    bar = ProgressBar(terminal, 4)
    for answered in range(5):
        bar.show(
            {
                "pending": 4 - answered,
                "running": 0,
                "answered": answered,
                "failed": 0,
                "cancelled": 0,
            }
        )
    bar.end()

    drawn = terminal.getvalue()
    assert drawn.count("\r") == 5
    assert drawn.count("\n") == 1 and drawn.endswith("\n")
    assert "\r[###############---------------] 2/4  50.0%" in drawn


def test_submit_batch_refuses_a_bad_file_and_submits_nothing(
    demo: SimulatorHandle, tmp_path: Path
) -> None:
    batch_key("nightly")
    path = write_jsonl(tmp_path, [ask(1), {"model": "summary"}])

    with pytest.raises(CommandError) as refused:
        call_command("submit_batch", str(path), "--key-name", "nightly")

    assert "1 line(s) are invalid; nothing was submitted." in str(refused.value)
    assert "line 2: 'messages' is required" in str(refused.value)
    assert not Batch.objects.exists()


def test_submit_batch_needs_a_key_with_the_batches_scope(
    demo: SimulatorHandle, tmp_path: Path
) -> None:
    make_client_key(name="chat-only", scopes=["chat"])
    path = write_jsonl(tmp_path, [ask(1)])

    with pytest.raises(CommandError, match="lacks the 'batches' scope"):
        call_command("submit_batch", str(path), "--key-name", "chat-only")
    with pytest.raises(CommandError, match="No active client key is named 'nobody'"):
        call_command("submit_batch", str(path), "--key-name", "nobody")


def test_batches_take_turns_one_slice_each(demo: SimulatorHandle, settings: Settings) -> None:
    # A slice this short starts one round of requests (here one): each job then queues the
    # rest behind the others.
    settings.SWITCHBOARD_BATCH_SLICE_SECONDS = 0
    settings.SWITCHBOARD_BATCH_CONCURRENCY = 1
    raw = batch_key()
    first = submit(raw, [ask(n) for n in range(3)]).json()["code"]
    second = submit(raw, [ask(n) for n in range(3)]).json()["code"]

    run_batch_worker()

    order = [
        (str(item.batch.code), item.index)
        for item in BatchItem.objects.select_related("batch").order_by("finished_at")
    ]
    assert order == [
        (first, 0),
        (second, 0),
        (first, 1),
        (second, 1),
        (first, 2),
        (second, 2),
    ]
    assert set(Batch.objects.values_list("status", flat=True)) == {"completed"}


def test_finished_batches_are_deleted_after_the_retention_period(demo: SimulatorHandle) -> None:
    raw = batch_key()
    old, recent, running = (submit(raw, [ask(n)]).json()["code"] for n in range(3))
    long_ago = timezone.now() - timedelta(days=31)
    Batch.objects.filter(code__in=[old, recent]).update(status="completed")
    Batch.objects.filter(code=old).update(finished_at=long_ago)
    Batch.objects.filter(code=recent).update(finished_at=timezone.now() - timedelta(days=29))
    Batch.objects.filter(code=running).update(status="running", created=long_ago)

    assert jobs.purge_expired_batches() == 1

    assert sorted(str(code) for code in Batch.objects.values_list("code", flat=True)) == sorted(
        [recent, running]
    )
    assert BatchItem.objects.count() == 2


def test_a_jsonl_file_posted_to_the_live_server_becomes_a_batch(
    gateway: str, demo: SimulatorHandle
) -> None:
    raw = batch_key()
    body = b"\n".join(orjson.dumps(ask(n)) for n in range(500))
    request = urllib.request.Request(
        f"{gateway}/api/v1/batches?route=summary",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/jsonl"},
    )

    # Straight to the local server, whatever proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        created = orjson.loads(response.read())

    assert response.status == 201
    assert (created["total"], created["route"]) == (500, "summary")
    assert BatchItem.objects.filter(batch__code=created["code"]).count() == 500
