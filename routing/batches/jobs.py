"""The RQ jobs of batches: running one (a slice at a time), resuming stalled ones,
deleting expired ones. Each takes primary keys, re-reads state and is safe to run twice."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections, transaction
from django.db.models import CharField, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone
from redis.exceptions import LockError
from redis.lock import Lock

from billing.ledger import LEDGER
from billing.models import UsageRecord
from project.errors import ApiError
from project.redis import sync_client
from routing.batches import QUEUE
from routing.client import EnhancedHybridAIClient, close_engine, current_engine
from routing.engine import Caller
from routing.models import Batch, BatchItem
from routing.schema import validate_chat_body
from routing.table import KeyInfo

log = logging.getLogger(__name__)

# A runner's lock lives this long unless its heartbeat extends it; a batch whose
# lock has lapsed has no live runner, and the resumer queues it again.
LOCK_SECONDS = 60
HEARTBEAT_SECONDS = 15
# Pending items read per query.
CHUNK = 200
# A whole request that failed with one of these is tried again after its Retry-After,
# if that is at most RETRY_WAIT_CAP seconds (a spent budget's reset is not waited for).
RETRY_STATUSES = (429, 503)
RETRY_WAIT_CAP = 60.0


def lock_key(batch_id: int) -> str:
    return f"sb:batch:{batch_id}:runner"


def job_key(batch_id: int) -> str:
    return f"sb:batch:{batch_id}:job"


def request_id_for(batch: Batch, index: int, attempt: int) -> str:
    return f"batch-{batch.code.hex}-{index}-{attempt}"


def fail_batch(batch_id: int, code: str, message: str) -> None:
    """The batch cannot go on (its key was revoked, say): it and every pending item fail."""
    now = timezone.now()
    with transaction.atomic():
        failed = Batch.objects.filter(pk=batch_id, status__in=Batch.UNFINISHED).update(
            status=Batch.Status.FAILED, error=message[:300], finished_at=now
        )
        if failed:
            BatchItem.objects.filter(batch_id=batch_id, status=BatchItem.Status.PENDING).update(
                status=BatchItem.Status.FAILED,
                error={"code": code, "message": message, "status": 401},
                finished_at=now,
            )


# -- queueing ----------------------------------------------------------------------------


def enqueue_batch(batch_id: int) -> None:
    import django_rq

    timeout = int(
        settings.SWITCHBOARD_BATCH_SLICE_SECONDS
        + 2 * settings.SWITCHBOARD["REQUEST_DEADLINE_SECONDS"]
        + RETRY_WAIT_CAP
    )
    job = django_rq.get_queue(QUEUE).enqueue(run_batch, batch_id, job_timeout=timeout)
    # What the resumer checks before it queues the batch again.
    sync_client().set(job_key(batch_id), job.id, ex=7 * 24 * 3600)


def resume_stalled_batches() -> int:
    """Queue again every unfinished batch that no job is running or waiting to run.

    A periodic job (project/cron.py): a worker that died mid-batch left its
    lock to lapse, so its batch carries on here, from its unfinished items.
    """
    import django_rq
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    redis = sync_client()
    connection = django_rq.get_connection(QUEUE)
    waiting = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)
    resumed = 0
    for batch_id in Batch.objects.unfinished().values_list("id", flat=True):
        if redis.exists(lock_key(batch_id)):
            continue  # a live runner holds it
        job_id = redis.get(job_key(batch_id))
        if isinstance(job_id, bytes):
            try:
                if Job.fetch(job_id.decode(), connection=connection).get_status() in waiting:
                    continue
            except NoSuchJobError:
                pass
        enqueue_batch(batch_id)
        resumed += 1
    return resumed


def purge_expired_batches() -> int:
    """Delete batches finished more than SWITCHBOARD_BATCH_RETENTION_DAYS ago, with their
    requests and answers (a periodic job): the ledger keeps what they cost."""
    cutoff = timezone.now() - timedelta(days=settings.SWITCHBOARD_BATCH_RETENTION_DAYS)
    expired = Batch.objects.filter(status__in=Batch.FINISHED, finished_at__lt=cutoff)
    with transaction.atomic():
        BatchItem.objects.filter(batch__in=expired).delete()
        deleted, _ = expired.delete()
    return deleted


# -- running -----------------------------------------------------------------------------


def run_batch(batch_id: int) -> str:
    """RQ job: run the batch's unfinished items for one slice, then queue the rest.

    Safe to run twice: a second job finds the lock held and leaves; a job after
    a crash retries the items the dead one left running under their request
    ids, so the ledger keeps one row of each attempt.
    """
    redis = sync_client()
    # Not thread-local: the heartbeat extends it from a thread of its own.
    lock = redis.lock(lock_key(batch_id), timeout=LOCK_SECONDS, thread_local=False)
    if not lock.acquire(blocking=False):
        return "another job is running this batch"
    try:
        more = asyncio.run(_run_slice(batch_id, lock))
        if more:
            enqueue_batch(batch_id)  # behind other batches' jobs, before the lock goes
        return "queued the rest" if more else "finished"
    finally:
        with suppress(LockError):  # it lapsed: the resumer may have handed the batch on
            lock.release()


async def _run_slice(batch_id: int, lock: Lock) -> bool:
    try:
        batch = await Batch.objects.select_related("client_key").filter(pk=batch_id).afirst()
        if batch is None:
            return False  # deleted
        runner = Runner(batch, stop_at=time.monotonic() + settings.SWITCHBOARD_BATCH_SLICE_SECONDS)
        heartbeat = asyncio.create_task(runner.keep_alive(lock))
        try:
            return await runner.run()
        finally:
            heartbeat.cancel()
            with suppress(asyncio.CancelledError):
                await heartbeat
    finally:
        await close_engine()
        # The ORM's calls ran on asgiref's one thread; its connection must not outlive the job.
        await sync_to_async(connections.close_all)()


@dataclass
class Outcome:
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    retry_after: float | None = None  # set when another attempt may succeed
    status: str = ""  # the item's status, when not simply answered or failed

    def item_status(self) -> str:
        if self.status:
            return self.status
        return BatchItem.Status.ANSWERED if self.error is None else BatchItem.Status.FAILED


# A pending item as the runner reads it: (id, index, request).
Row = tuple[int, int, dict[str, Any]]


@dataclass
class Runner:
    """One job's run of one batch. Database writes go through asgiref's one thread,
    many items at a time: claims take every free slot at once, and outcomes that
    settle while one write runs go into the next."""

    batch: Batch
    stop_at: float
    client: EnhancedHybridAIClient = field(default_factory=EnhancedHybridAIClient)
    stopped: bool = False
    settled: list[tuple[int, Outcome]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None

    async def run(self) -> bool:
        """Run until every item is settled, the slice ends or the batch stops; True if
        pending items are left for the next slice."""
        batch = self.batch
        if batch.status == Batch.Status.QUEUED:
            await Batch.objects.filter(pk=batch.pk, status=Batch.Status.QUEUED).aupdate(
                status=Batch.Status.RUNNING, started_at=timezone.now()
            )
            await batch.arefresh_from_db(fields=["status"])
        orphans = [
            row
            async for row in batch.items.filter(status=BatchItem.Status.RUNNING).values_list(
                "id", "index", "request", "attempts", "request_id"
            )
        ]
        if batch.status != Batch.Status.RUNNING:
            await sync_to_async(record_outcomes)([(row[0], ABANDONED) for row in orphans])
            return await self.finish()
        semaphore = asyncio.Semaphore(settings.SWITCHBOARD_BATCH_CONCURRENCY)
        async with asyncio.TaskGroup() as tasks:
            for item_id, index, request, attempts, resumed_id in await self.triage(orphans):
                await semaphore.acquire()
                tasks.create_task(
                    self.run_item(tasks, semaphore, item_id, index, request, attempts, resumed_id)
                )
            await self.dispatch(tasks, semaphore)
        return await self.finish()

    async def dispatch(self, tasks: asyncio.TaskGroup, semaphore: asyncio.Semaphore) -> None:
        """Start pending items in order, as many as there are free slots, until none is
        left, the batch stops or the slice ends."""
        started = 0
        async with aclosing(self.pending()) as chunks:
            async for chunk in chunks:
                while chunk:
                    free = await take_free_slots(semaphore)
                    # Every slice starts one round at least, so that each job moves the batch on.
                    if self.stopped or (started and time.monotonic() >= self.stop_at):
                        release(semaphore, free)
                        return
                    rows, chunk = chunk[:free], chunk[free:]
                    claimed = await self.claim(rows)
                    release(semaphore, free - len(claimed))
                    for item_id, index, request in claimed:
                        tasks.create_task(
                            self.run_item(tasks, semaphore, item_id, index, request, 1)
                        )
                    started += len(claimed)

    async def pending(self) -> AsyncGenerator[list[Row]]:
        """The pending items in order, a chunk at a time; stops when the batch stops."""
        after = -1
        while not self.stopped:
            chunk: list[Row] = [
                row
                async for row in BatchItem.objects.filter(
                    batch_id=self.batch.pk, status=BatchItem.Status.PENDING, index__gt=after
                )
                .order_by("index")
                .values_list("id", "index", "request")[:CHUNK]
            ]
            if not chunk:
                return
            after = chunk[-1][1]
            yield chunk

    async def claim(self, rows: list[Row]) -> list[Row]:
        """Take pending items for their first attempt; those a cancellation took first are
        left out, and stop the run."""
        claimed = await sync_to_async(claim_items)(self.batch, [row[0] for row in rows])
        if len(claimed) < len(rows):
            status = (
                await Batch.objects.filter(pk=self.batch.pk).values_list("status", flat=True).aget()
            )
            self.stopped = status != Batch.Status.RUNNING
        return [row for row in rows if row[0] in claimed]

    async def keep_alive(self, lock: Lock) -> None:
        """Extend the runner's lock while it runs. If it lapsed anyway (a worker starved
        for a minute), another job may own the batch now: this one starts nothing more."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await asyncio.to_thread(lock.extend, LOCK_SECONDS, True)
            except LockError:
                log.warning("batch %s: the runner lost its lock; stopping", self.batch.code)
                self.stopped = True
                return

    async def key(self) -> KeyInfo | None:
        """The batch's key as the gateway knows it now, or None (and the batch fails) if
        it was revoked or has expired."""
        table = await current_engine().table()
        key = table.keys.get(self.batch.client_key.key_hash)
        if key is not None and (key.expires_at is None or time.time() < key.expires_at):
            return key
        if not self.stopped:
            self.stopped = True
            await sync_to_async(fail_batch)(
                self.batch.pk,
                "invalid_api_key",
                f"The batch's client key '{self.batch.client_key.name}' was revoked or has "
                "expired, so its remaining requests were not sent.",
            )
        return None

    async def run_item(
        self,
        tasks: asyncio.TaskGroup,
        semaphore: asyncio.Semaphore,
        item_id: int,
        index: int,
        request: dict[str, Any],
        attempt: int,
        resumed_id: str = "",
    ) -> None:
        """Send one item, retrying it whole after a 503 or 429, and hand its outcome over."""
        try:
            while True:
                request_id = resumed_id or request_id_for(self.batch, index, attempt)
                resumed_id = ""
                outcome = await self.send(request, request_id)
                if (
                    outcome.retry_after is None
                    or attempt >= settings.SWITCHBOARD_BATCH_ITEM_ATTEMPTS
                ):
                    break
                await asyncio.sleep(outcome.retry_after)
                attempt += 1
                await BatchItem.objects.filter(pk=item_id, status=BatchItem.Status.RUNNING).aupdate(
                    attempts=attempt, request_id=request_id_for(self.batch, index, attempt)
                )
            self.settle(tasks, item_id, outcome)
        finally:
            semaphore.release()

    def settle(self, tasks: asyncio.TaskGroup, item_id: int, outcome: Outcome) -> None:
        """Queue an outcome for the writer, starting it if it is idle. A write that fails
        fails the task group, so the job stops as if the worker had died."""
        self.settled.append((item_id, outcome))
        if self.writer is None or self.writer.done():
            self.writer = tasks.create_task(self.write())

    async def write(self) -> None:
        while self.settled:
            outcomes, self.settled = self.settled, []
            await sync_to_async(record_outcomes)(outcomes)

    async def send(self, body: dict[str, Any], request_id: str) -> Outcome:
        key = await self.key()
        if key is None:
            return Outcome(
                error={
                    "code": "invalid_api_key",
                    "message": "The batch's client key was revoked or has expired.",
                    "status": 401,
                }
            )
        model = self.batch.route or body["model"]
        try:
            request = validate_chat_body({**body, "model": model, "stream": False})
            answer = await self.client.run(request, Caller(key=key, request_id=request_id))
        except ApiError as error:
            retry = None
            if error.status in RETRY_STATUSES and (error.retry_after or 0) <= RETRY_WAIT_CAP:
                retry = error.retry_after or 1.0
            failure = {"code": error.code, "message": error.message, "status": error.status}
            return Outcome(error=failure, retry_after=retry)
        except Exception as exc:  # one item's surprise must not stop the other 9,999
            log.exception("batch %s: request %s failed unexpectedly", self.batch.code, request_id)
            failure = {"code": "internal_error", "message": type(exc).__name__, "status": 500}
            return Outcome(error=failure)
        return Outcome(response=orjson.loads(answer.completion.body))

    async def triage(self, orphans: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Items a dead job left running, and how to go on with each.

        Its last attempt may have reached the ledger. Answered, or never
        recorded: sent again under the same request id, so that the ledger keeps
        one row of it (the provider may be paid twice; the key is billed once).
        Recorded as failed: its next attempt, under a new id.
        """
        if not orphans:
            return []
        recorded = await sync_to_async(ledger_statuses)([row[4] for row in orphans])
        plan = []
        exhausted = []
        for item_id, index, request, attempts, request_id in orphans:
            status = recorded.get(request_id)
            if status is None or status == UsageRecord.Status.OK:
                plan.append((item_id, index, request, attempts, request_id))
            elif attempts < settings.SWITCHBOARD_BATCH_ITEM_ATTEMPTS:
                await BatchItem.objects.filter(pk=item_id).aupdate(
                    attempts=attempts + 1,
                    request_id=request_id_for(self.batch, index, attempts + 1),
                )
                plan.append((item_id, index, request, attempts + 1, ""))
            else:
                exhausted.append((item_id, INTERRUPTED))
        await sync_to_async(record_outcomes)(exhausted)
        return plan

    async def finish(self) -> bool:
        """Complete the batch if nothing is left; True if pending items remain."""
        left = self.batch.items.filter(
            status__in=[BatchItem.Status.PENDING, BatchItem.Status.RUNNING]
        )
        if await left.aexists():
            return not self.stopped
        now = timezone.now()
        await Batch.objects.filter(pk=self.batch.pk, status=Batch.Status.RUNNING).aupdate(
            status=Batch.Status.COMPLETED, finished_at=now
        )
        await Batch.objects.filter(pk=self.batch.pk, finished_at__isnull=True).aupdate(
            finished_at=now
        )
        return False


# Outcomes of items a dead job left running, when they are not sent again.
INTERRUPTED = Outcome(
    error={
        "code": "interrupted",
        "message": "The worker stopped while this request was being sent; its last attempt "
        "had failed.",
        "status": 503,
    }
)
ABANDONED = Outcome(
    error={
        "code": "interrupted",
        "message": "The worker stopped while this request was being sent, and the batch was "
        "stopped before it could be sent again.",
        "status": 503,
    },
    status=BatchItem.Status.CANCELLED,
)


async def take_free_slots(semaphore: asyncio.Semaphore) -> int:
    """Wait for one free slot, then take every other free one too."""
    await semaphore.acquire()
    taken = 1
    while not semaphore.locked():
        await semaphore.acquire()  # free: returns at once
        taken += 1
    return taken


def release(semaphore: asyncio.Semaphore, slots: int) -> None:
    for _ in range(slots):
        semaphore.release()


def claim_items(batch: Batch, ids: list[int]) -> set[int]:
    """Take pending items for their first attempt, in one conditional UPDATE, so that a
    cancellation wins or loses each item whole. Returns the ids taken."""
    with transaction.atomic():
        taken = BatchItem.objects.filter(pk__in=ids, status=BatchItem.Status.PENDING).update(
            status=BatchItem.Status.RUNNING,
            attempts=1,
            # request_id_for(batch, index, 1), computed by the database for every row at once.
            request_id=Concat(
                Value(f"batch-{batch.code.hex}-"), Cast("index", CharField()), Value("-1")
            ),
        )
        if taken == len(ids):
            return set(ids)
        return set(
            BatchItem.objects.filter(
                pk__in=ids, status=BatchItem.Status.RUNNING, attempts=1
            ).values_list("pk", flat=True)
        )


def record_outcomes(outcomes: list[tuple[int, Outcome]]) -> None:
    """Store settled items' outcomes, in one transaction."""
    now = timezone.now()
    with transaction.atomic():
        for item_id, outcome in outcomes:
            BatchItem.objects.filter(pk=item_id, status=BatchItem.Status.RUNNING).update(
                status=outcome.item_status(),
                response=outcome.response,
                error=outcome.error,
                finished_at=now,
            )


def ledger_statuses(request_ids: list[str]) -> dict[str, str]:
    """What the ledger recorded for these request ids, once everything queued has reached it."""
    redis = sync_client()
    with LEDGER.held(redis) as lock:
        LEDGER.drain_held(redis, lock)
    return dict(
        UsageRecord.objects.filter(request_id__in=request_ids).values_list("request_id", "status")
    )
