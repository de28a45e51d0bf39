"""Batch jobs: up to 10,000 chat requests of one client key, run by a worker at low priority.

`submit_batch()` stores a batch whose requests `check_requests()` has passed,
every one of them, and queues it on the "batch" RQ queue. A worker that
listens to that queue alone runs `run_batch()`, so nothing on the "default"
queue (ledger draining, alerts) waits behind a batch, and requests from
services never do: they do not go through RQ at all. The job sends at most
SWITCHBOARD_BATCH_CONCURRENCY requests at a time through the same engine as
`/v1/chat/completions` (`EnhancedHybridAIClient`), as the batch's key, so the
key's environment, model list and budgets apply and every item is billed like
a live request.

Billing once: each attempt at an item has a request id made of the batch's
code, the item's index and the attempt number, so a job that dies and runs
again repeats an attempt under the same id, and the ledger (unique on request
id) keeps one row of it. A new attempt, after a whole request failed with 503
or 429, is a new id: its predecessor's ledger row is a failure, which costs
nothing.

A job runs for SWITCHBOARD_BATCH_SLICE_SECONDS, then queues the rest as a new
job (behind other batches), well inside RQ's timeout. One job at a time runs a
batch (a Redis lock its heartbeat keeps alive); `resume_stalled_batches`
(project/cron.py) queues again a batch whose job died.

`checks.py` reads a submission and checks every request, `actions.py` stores
and cancels batches, `jobs.py` runs, resumes and purges them.
"""

QUEUE = "batch"
MAX_ITEMS = 10_000
