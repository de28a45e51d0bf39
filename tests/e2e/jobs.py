"""A job for tests/e2e/test_scale_out.py: it counts its own runs in Redis."""

from __future__ import annotations

import time

from rq import get_current_job

from project.redis import sync_client


def count_run(number: int) -> str:
    """Count one run of job ``number``; returns the name of the worker that ran it."""
    job = get_current_job()
    assert job is not None
    sync_client().incr(f"sb:test:runs:{number}")
    time.sleep(0.05)  # long enough that one worker cannot take every job
    return str(job.worker_name)
