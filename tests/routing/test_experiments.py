"""A/B experiments through the gateway: arms, significance, promoting the winner."""

from __future__ import annotations

import openai
import pytest

from billing.models import UsageRecord
from routing.experiments.actions import Refused, promote_variant, start_experiment, stop_experiment
from routing.experiments.stats import experiment_results
from routing.models import Deployment, Experiment, Route, Variant
from tests.factories import chat, drain_ledger
from tests.servers import SimulatorHandle


def deployment(label: str) -> Deployment:
    provider, model = label.split("/")
    return Deployment.objects.get(provider__name=provider, name=model)


def make_experiment(*variants: tuple[str, dict[str, object]], start: bool = True) -> Experiment:
    experiment = Experiment.objects.create(name="models", route=Route.objects.get(name="summary"))
    for position, (name, fields) in enumerate(variants):
        Variant.objects.create(experiment=experiment, name=name, position=position, **fields)
    if start:
        start_experiment(experiment)
    return experiment


def two_deployments() -> Experiment:
    return make_experiment(
        ("aimlapi", {"kind": "deployment", "deployment": deployment("aimlapi/gpt-4o-mini")}),
        ("openai", {"kind": "deployment", "deployment": deployment("openai/gpt-4o-mini")}),
    )


def ask(client: openai.OpenAI, user: str) -> str:
    raw = client.chat.completions.with_raw_response.create(model="summary", user=user, **chat())
    return raw.headers["x-switchboard-provider"]


def test_each_user_gets_one_variant_and_the_records_name_it(openai_client: openai.OpenAI) -> None:
    two_deployments()
    first = {f"u{n}": ask(openai_client, f"u{n}") for n in range(30)}

    assert {f"u{n}": ask(openai_client, f"u{n}") for n in range(30)} == first
    assert set(first.values()) == {"aimlapi", "openai"}
    drain_ledger()
    for record in UsageRecord.objects.all():
        assert record.experiment == "models"
        assert record.arm == first[record.end_user]
        assert record.decision["experiment"]["arm"] == record.arm


def test_a_slower_arm_reaches_significance_on_latency(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    experiment = two_deployments()
    demo.fault(provider="openai", mode="slow", delay_ms=120)
    for n in range(50):
        ask(openai_client, f"user-{n}")
    drain_ledger()

    results = experiment_results(experiment)

    assert [a.name for a in results.arms] == ["aimlapi", "openai"]
    assert all(a.requests >= 10 for a in results.arms)
    latency = next(c for c in results.comparisons if c.metric == "latency")
    assert latency.significant and latency.verdict.startswith("openai is slower, p=")
    errors = next(c for c in results.comparisons if c.metric == "error_rate")
    assert not errors.significant
    assert results.arms[1].latency_p50 is not None and results.arms[1].latency_p50 >= 120


def test_a_parameters_arm_sets_its_parameters_on_the_request(
    openai_client: openai.OpenAI,
) -> None:
    make_experiment(
        ("control", {"kind": "parameters"}),
        ("short", {"kind": "parameters", "parameters": {"max_tokens": 7}}),
    )
    for n in range(20):
        ask(openai_client, f"u{n}")
    drain_ledger()

    short = UsageRecord.objects.filter(arm="short")
    assert short.exists() and UsageRecord.objects.filter(arm="control").exists()
    assert all(r.decision["experiment"]["parameters"] == {"max_tokens": 7} for r in short)


def test_promoting_a_deployment_variant_puts_it_first_on_the_route(
    openai_client: openai.OpenAI,
) -> None:
    experiment = two_deployments()
    winner = experiment.variants.get(name="openai")

    outcome = promote_variant(experiment, winner)

    assert outcome == "openai/gpt-4o-mini now heads summary's chain"
    experiment.refresh_from_db()
    assert experiment.status == "promoted" and experiment.winner == winner
    assert [str(d) for d in Route.objects.get(name="summary").chain()][:2] == [
        "openai/gpt-4o-mini",
        "aimlapi/gpt-4o-mini",
    ]
    assert ask(openai_client, "anyone") == "openai"
    drain_ledger()
    assert UsageRecord.objects.get().experiment == ""  # no longer an experiment


def test_a_promoted_parameters_variant_applies_to_every_request(
    openai_client: openai.OpenAI,
) -> None:
    experiment = make_experiment(
        ("control", {"kind": "parameters"}),
        ("short", {"kind": "parameters", "parameters": {"max_tokens": 7}}),
    )
    promote_variant(experiment, experiment.variants.get(name="short"))
    for n in range(5):
        ask(openai_client, f"u{n}")
    drain_ledger()

    for record in UsageRecord.objects.all():
        assert record.decision["experiment"] == {
            "name": "models",
            "arm": "short",
            "promoted": True,
            "parameters": {"max_tokens": 7},
        }


def test_start_and_stop_follow_the_status(demo: SimulatorHandle) -> None:
    experiment = make_experiment(("a", {}), start=False)
    start_experiment(experiment)
    with pytest.raises(Refused, match="only a draft starts"):
        start_experiment(experiment)
    stop_experiment(experiment)
    experiment.refresh_from_db()
    assert experiment.status == "stopped" and experiment.stopped_at is not None
    with pytest.raises(Refused, match="is not running"):
        stop_experiment(experiment)
