"""The fallback drill against the provider simulator, in process, and its evidence."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from checklist.actions import request_fallback_drill, run_fallback_drill
from checklist.models import EvidenceResult, FallbackDrill
from routing.models import Provider, ProviderCredential
from tests.servers import SimulatorHandle


@pytest.fixture
def staging(demo: SimulatorHandle) -> SimulatorHandle:
    """The demo (credentials in every environment), with timeouts short enough for a test."""
    Provider.objects.update(read_timeout=0.5, connect_timeout=0.5)
    return demo


def test_the_drill_passes_every_scenario_on_the_staging_providers(staging) -> None:  # type: ignore[no-untyped-def]
    out = StringIO()
    staging.fault(provider="aimlapi", model="gpt-4o-outage", mode="error", status=503)

    call_command("fallback_drill", stdout=out)

    drill = FallbackDrill.objects.get()
    assert drill.status == "passed" and drill.environment == "staging"
    assert drill.route == "summary"  # fallback-demo's first hop is down on purpose
    names = [s["name"] for s in drill.scenarios]
    assert names == [
        "nothing fails",
        "aimlapi fails", "openai fails", "google fails", "anthropic fails",
        "all but aimlapi fail", "all but openai fail", "all but google fail",
        "all but anthropic fail",
        "aimlapi times out",
        "429 storm on aimlapi (20 requests at once)",
    ]  # fmt: skip
    by_name = {s["name"]: s for s in drill.scenarios}
    assert by_name["aimlapi fails"]["answered_by"] == ["openai"]
    assert by_name["all but anthropic fail"]["answered_by"] == ["anthropic"]
    assert by_name["aimlapi times out"]["attempts"][-1] == "openai: ok"
    assert by_name["429 storm on aimlapi (20 requests at once)"]["answered_by"] == ["openai"] * 20
    assert "Fallback drill passed on route summary: 11 of 11" in out.getvalue()
    # The result is evidence at once; the simulator is left as it was found.
    assert EvidenceResult.objects.get(key="fallback_drill").status == "pass"
    faults = staging.control("GET", "/_control/faults")["faults"]
    assert [(f["provider"], f["model"]) for f in faults] == [("aimlapi", "gpt-4o-outage")]


def test_a_drill_fails_when_staging_cannot_reach_a_provider(staging) -> None:  # type: ignore[no-untyped-def]
    ProviderCredential.objects.filter(provider__name="aimlapi", environment="staging").delete()

    with pytest.raises(CommandError, match="Fallback drill failed"):
        call_command("fallback_drill", stdout=StringIO())

    drill = FallbackDrill.objects.get()
    failed = {s["name"]: s["detail"] for s in drill.scenarios if not s["ok"]}
    assert failed["nothing fails"] == "1 of 1 answered by openai, expected aimlapi"
    assert "all but aimlapi fail" in failed
    assert EvidenceResult.objects.get(key="fallback_drill").status == "fail"


@pytest.mark.django_db
def test_the_drill_refuses_providers_that_are_not_the_simulator() -> None:
    from tests.factories import load_demo_config

    load_demo_config("http://127.0.0.1:9")
    Provider.objects.filter(name="openai").update(base_url="https://api.openai.com/v1")

    with pytest.raises(CommandError, match="runs only against the simulator"):
        call_command("fallback_drill")
    assert FallbackDrill.objects.get().status == "error"
    assert EvidenceResult.objects.get(key="fallback_drill").status == "fail"


@pytest.mark.django_db
def test_the_button_queues_a_drill_that_a_worker_runs_once(
    django_capture_on_commit_callbacks,  # type: ignore[no-untyped-def]
) -> None:
    import django_rq

    with django_capture_on_commit_callbacks(execute=True):  # jobs are queued on commit
        drill = request_fallback_drill(None)

    queue = django_rq.get_queue("default")
    job = queue.jobs[0]
    assert job.func_name == "checklist.jobs.run_fallback_drill" and job.args == (drill.pk,)
    FallbackDrill.objects.filter(pk=drill.pk).update(status="running")
    assert run_fallback_drill(drill) is False  # another worker has it
