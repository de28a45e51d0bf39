"""Content samples: an opt-in, redacted copy of some prompts and their completions.

Off by default: SWITCHBOARD_SAMPLE_RATE is 0, and then no prompt or completion
leaves the gateway process. With a rate above 0 the gateway keeps that share of
answered requests, unless a request says `metadata.store_sample = "false"`; a
request can only opt out, never force storage on. A sample is redacted
(`billing.redaction`) before it is queued, appended to a Redis list in the same
round trip as the request's usage entry, drained to `ContentSample` by a worker,
and deleted after SWITCHBOARD_SAMPLE_RETENTION_DAYS.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.utils import timezone
from redis import Redis

from billing.ledger import TEXT_LIMITS, Queue, UsageEntry
from billing.models import ContentSample
from billing.redaction import redact, redact_json

SAMPLES_KEY = "sb:samples"
SAMPLES_DEAD_KEY = "sb:samples:dead"
SAMPLES_LOCK_KEY = "sb:samples:drain-lock"

OPT_OUT = {"false", "0", "no", "off"}
# Message parts that cannot be redacted (images, audio, files) are never kept.
TEXT_PARTS = {"text"}


@dataclass
class SampleEntry:
    request_id: str
    created: datetime
    status: str
    end_user: str = ""
    route: str = ""
    provider: str = ""
    model: str = ""
    streamed: bool = False
    messages: list[Any] = field(default_factory=list)
    completion: str = ""

    def encode(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def decode(cls, raw: bytes) -> SampleEntry:
        data = orjson.loads(raw)
        data["created"] = datetime.fromisoformat(data["created"])
        return cls(**data)


def wanted(rate: float, metadata: Mapping[str, str]) -> bool:
    """Whether to keep this request's content: by the configured rate, unless it opts out."""
    if rate <= 0 or metadata.get("store_sample", "").strip().lower() in OPT_OUT:
        return False
    return random.random() < rate


def sample(entry: UsageEntry, messages: list[Any], completion: str) -> SampleEntry:
    """The redacted sample of an answered request, labelled like its usage entry."""
    return SampleEntry(
        request_id=entry.request_id,
        created=entry.created,
        status=entry.status,
        end_user=entry.end_user,
        route=entry.route,
        provider=entry.provider,
        model=entry.model,
        streamed=entry.streamed,
        messages=[redact_json(_text_only(message)) for message in messages],
        completion=redact(completion),
    )


def _text_only(message: Any) -> Any:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return message
    parts = [
        part if part.get("type") in TEXT_PARTS else {"type": part.get("type"), "omitted": True}
        for part in content
    ]
    return {**message, "content": parts}


def _row(raw: bytes) -> ContentSample:
    fields = asdict(SampleEntry.decode(raw))
    for name in ("request_id", "route", "provider", "model", "status", "end_user"):
        fields[name] = str(fields[name])[: TEXT_LIMITS[name]]
    return ContentSample(**fields)


SAMPLES = Queue(SAMPLES_KEY, SAMPLES_DEAD_KEY, SAMPLES_LOCK_KEY, ContentSample, _row)


def drain(redis: Redis, batch_size: int = 200) -> int:
    """Move every queued sample into the database; returns how many were moved."""
    return SAMPLES.drain(redis, batch_size)


def purge_expired(now: datetime | None = None) -> int:
    """Delete the samples older than the retention period; returns how many."""
    days = settings.SWITCHBOARD["SAMPLE_RETENTION_DAYS"]
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted, _ = ContentSample.objects.filter(created__lt=cutoff).delete()
    return deleted
