"""Every periodic job, declared in one place.

`manage.py rqcron project.cron` loads this file; `make run` and production
workers start it. Jobs are named by dotted path so that `project` imports none
of the apps.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string
from rq import cron

PERIODIC_JOBS: list[tuple[str, int]] = [
    # (job, every N seconds)
    ("routing.jobs.probe_deployments", settings.SWITCHBOARD["PROBE_SECONDS"]),
    ("routing.jobs.purge_probe_results", 3600),
    ("billing.jobs.drain_ledger", 2),
    ("billing.jobs.drain_samples", 5),
    ("routing.jobs.persist_breaker_transitions", 5),
    ("routing.jobs.persist_key_usage", 60),
    ("routing.jobs.alert_overdue_credentials", 3600),
    ("routing.jobs.check_anomalies", 300),
    ("project.jobs.deliver_alerts", 10),
    ("project.jobs.escalate_incidents", 30),
    ("billing.jobs.check_budgets", 30),
    ("billing.jobs.reconcile_spend", 300),
    ("billing.jobs.check_spend_anomaly", 300),
    ("billing.jobs.check_forecasts", 900),
    ("billing.jobs.purge_expired_samples", 3600),
    ("routing.batches.jobs.resume_stalled_batches", 60),
    ("routing.batches.jobs.purge_expired_batches", 3600),
    ("checklist.jobs.evaluate_evidence", 600),
    ("checklist.jobs.thin_evidence_history", 86400),
    ("routing.experiments.jobs.evaluate_rollouts", 60),
    ("routing.quality.jobs.publish_deployment_quality", 60),
]

for dotted_path, seconds in PERIODIC_JOBS:
    cron.register(import_string(dotted_path), queue_name="default", interval=seconds)
