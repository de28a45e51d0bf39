"""`rollouts:` and `experiments:` in the configuration file: in, out, and refused."""

from __future__ import annotations

import re

import pytest
import yaml

from routing.actions import export_config, import_config
from routing.config import ConfigError, parse
from routing.models import Experiment, Rollout
from tests.factories import load_demo_config

pytestmark = pytest.mark.django_db

BASE = """
providers:
  aimlapi: {protocol: openai, base_url: "http://127.0.0.1:9/aimlapi/v1", api_key_env: X}
  openai: {protocol: openai, base_url: "http://127.0.0.1:9/openai/v1", api_key_env: X}
models:
  - {provider: aimlapi, name: gpt-4o-mini, input_usd_per_mtok: "0.06", output_usd_per_mtok: "0.24"}
  - {provider: openai, name: gpt-4o-mini, input_usd_per_mtok: "0.15", output_usd_per_mtok: "0.6"}
routes:
  summary: [aimlapi/gpt-4o-mini, openai/gpt-4o-mini]
  direct: [openai/gpt-4o-mini]
"""

ARMS = """
rollouts:
  summary:
    legacy_route: direct
    phases: [0, 10, 100]
    status: running
    percent: 10
    thresholds: {availability_pct: "98.5", latency_factor: "3", min_requests: 50}
experiments:
  summary-models:
    route: summary
    metric: cost
    variants:
      - {name: aimlapi, weight: 70, deployment: aimlapi/gpt-4o-mini}
      - {name: short, weight: 30, parameters: {max_tokens: 200}}
"""


def test_the_demo_has_a_draft_rollout_of_summary() -> None:
    load_demo_config("http://127.0.0.1:9")

    rollout = Rollout.objects.get()
    assert rollout.route.name == "summary" and rollout.status == "draft"
    assert rollout.legacy_chain[0] == "openai/gpt-4o-mini" and rollout.phases == [0, 25, 50, 100]


def test_rollouts_and_experiments_import_and_export_the_same() -> None:
    report = import_config(parse(BASE + ARMS))

    assert report["rollout created"] == 1 and report["experiment created"] == 1
    rollout = Rollout.objects.get()
    assert (rollout.status, rollout.percent, rollout.legacy_route.name) == ("running", 10, "direct")
    assert str(rollout.min_availability_pct) == "98.50" and rollout.min_requests == 50
    experiment = Experiment.objects.get()
    assert experiment.metric == "cost" and experiment.status == "draft"
    assert [(v.name, v.kind, v.weight) for v in experiment.variants.all()] == [
        ("aimlapi", "deployment", 70),
        ("short", "parameters", 30),
    ]

    exported = yaml.safe_dump(export_config())
    again = import_config(parse(exported))
    assert again["rollout unchanged"] == 1 and again["experiment unchanged"] == 1


def test_importing_again_never_moves_a_rollout_that_was_rolled_back() -> None:
    from routing.experiments.actions import roll_back

    import_config(parse(BASE + ARMS))
    roll_back(Rollout.objects.get(), "drill")

    import_config(parse(BASE + ARMS))

    rollout = Rollout.objects.get()
    assert (rollout.status, rollout.percent) == ("rolled_back", 0)


def test_a_running_experiments_variants_cannot_change_from_the_file() -> None:
    from routing.experiments.actions import start_experiment

    import_config(parse(BASE + ARMS))
    start_experiment(Experiment.objects.get())

    with pytest.raises(ConfigError, match="only while it is a draft"):
        import_config(parse(BASE + ARMS.replace("weight: 70", "weight: 60")))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("rollouts:\n  nowhere: {legacy: [openai/gpt-4o-mini]}\n", "is not a route in this file"),
        ("rollouts:\n  summary: {phases: [0, 50]}\n", "give legacy (a chain) or legacy_route"),
        (
            "rollouts:\n  summary: {legacy: [openai/gpt-5]}\n",
            "'openai/gpt-5' is not listed under models",
        ),
        (
            "rollouts:\n  summary: {legacy: [openai/gpt-4o-mini], phases: [50, 0]}\n",
            "must rise",
        ),
        (
            "rollouts:\n  summary: {legacy: [openai/gpt-4o-mini], percent: 30}\n",
            "must be a phase",
        ),
        (
            "experiments:\n  e: {route: summary, variants: [{name: a, deployment: x/y}]}\n",
            "'x/y' is not a model",
        ),
        ("experiments:\n  e: {route: summary}\n", "variants: is required"),
        (
            "experiments:\n  e: {route: summary, variants: [{name: a, parameters: {top_p: 3}}]}\n",
            "'top_p' must be a number between 0 and 1.",
        ),
    ],
)
def test_a_bad_section_is_refused_naming_its_line(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        parse(BASE + section)
    assert refused.value.line is not None
