"""The response cache: answers to deterministic requests, kept in Redis for a while.

A request is cacheable when it is deterministic (``temperature`` 0) or asks for
it (``metadata.cache: "true"``); ``metadata.cache: "false"`` opts out. Its key
is the SHA-256 of a canonical JSON of the normalised request (route, messages,
parameters, routing context) and its scope, the client key (or, for in-process
callers, the environment), so one key never sees another's answers.

An entry is the answer's metadata (one JSON line) and the OpenAI body exactly
as first sent. Entries expire after ``CACHE_TTL_SECONDS``; an index (a sorted
set by last use) bounds their number to ``CACHE_MAX_ENTRIES``, the least
recently used going first. Purging (admin actions, ``manage.py purge_cache``)
finds entries by their key's shape: ``sb:cache:<scope>:<route digest>:<digest>``.

A streamed request is answered from the same entry as a stream, and a stream
that ends well fills the cache as a whole answer would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from redis import Redis as SyncRedis

from project.errors import ApiError
from routing.providers.base import Usage
from routing.schema import END_USER_KEYS, NUMERIC_RANGES, ChatRequest

PREFIX = "sb:cache:"
INDEX_KEY = "sb:cache-index"  # outside PREFIX, so a purge pattern never matches it
# The metadata key a client uses to ask for caching ("true") or refuse it ("false").
OPT = "cache"
YES = frozenset({"true", "1", "yes", "on"})
NO = frozenset({"false", "0", "no", "off"})
# Parameters that do not change the answer, left out of the key.
IGNORED_PARAMS = frozenset({"user"})

# KEYS: the entry, the index. ARGV: the value, TTL ms, most entries.
# Entries the index drops are deleted here, so this script names keys it was not
# given: it needs a single Redis server, not a cluster.
PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, most = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
-- Unused for a whole TTL: certainly expired.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local over = redis.call('ZCARD', KEYS[2]) - most
if over > 0 then
  for _, key in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    redis.call('DEL', key)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
return over
"""
PUT_SHA = hashlib.sha1(PUT.encode()).hexdigest()
SCRIPTS = {PUT_SHA: PUT}


@dataclass(frozen=True)
class CacheSettings:
    enabled: bool = True
    ttl_seconds: float = 3600.0
    max_entries: int = 10_000
    max_entry_bytes: int = 256 * 1024
    single_flight: bool = True
    lock_seconds: float = 5.0  # a leader's lock, renewed while it works

    @classmethod
    def from_settings(cls) -> CacheSettings:
        from django.conf import settings

        conf = settings.SWITCHBOARD
        return cls(
            enabled=conf.get("CACHE_ENABLED", True),
            ttl_seconds=conf.get("CACHE_TTL_SECONDS", 3600.0),
            max_entries=conf.get("CACHE_MAX_ENTRIES", 10_000),
            max_entry_bytes=conf.get("CACHE_MAX_ENTRY_BYTES", 256 * 1024),
            single_flight=conf.get("SINGLE_FLIGHT_ENABLED", True),
            lock_seconds=conf.get("SINGLE_FLIGHT_LOCK_SECONDS", 5.0),
        )


def wanted(request: ChatRequest) -> bool:
    """Whether this request may be answered from the cache (or by an identical one in flight)."""
    flag = request.metadata.get(OPT, "").strip().lower()
    if flag in NO:
        return False
    if flag in YES:
        return True
    temperature = request.params.get("temperature")
    return temperature is not None and float(temperature) == 0.0


def scope_of(key_id: int | None, environment: str) -> str:
    """Whose answers these are: one client key's, or an environment's in-process callers'."""
    return f"k{key_id}" if key_id is not None else f"env-{environment}"


def route_digest(route: str) -> str:
    # Route and model names may hold ':' or glob characters; the digest keeps a
    # purge pattern exact.
    return hashlib.sha256(route.encode()).hexdigest()[:16]


def fingerprint(route: str, request: ChatRequest) -> str:
    """The SHA-256 of the normalised request: what makes two requests the same."""
    params = {
        name: float(value) if name in NUMERIC_RANGES else value
        for name, value in request.params.items()
        if name not in IGNORED_PARAMS and value is not None
    }
    context = {
        name: value
        for name, value in request.metadata.items()
        if name != OPT and name not in END_USER_KEYS
    }
    messages = [
        {name: value for name, value in message.items() if value is not None}
        for message in request.messages
    ]
    canonical = orjson.dumps(
        {"route": route, "messages": messages, "params": params, "context": context},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    scope: str
    route: str
    digest: str

    @property
    def entry(self) -> str:
        return f"{PREFIX}{self.scope}:{route_digest(self.route)}:{self.digest}"

    @classmethod
    def of(cls, scope: str, route: str, request: ChatRequest) -> CacheKey:
        return cls(scope, route, fingerprint(route, request))


@dataclass(frozen=True)
class Stored:
    """An answer as the cache and single-flight keep it: who made it, and its OpenAI body."""

    body: bytes
    provider: str
    model: str
    deployment_id: int | None
    request_id: str  # the request whose provider call made this answer
    usage: Usage
    finish_reason: str
    text: str = ""

    def encode(self) -> bytes:
        meta = {
            "provider": self.provider,
            "model": self.model,
            "deployment_id": self.deployment_id,
            "request_id": self.request_id,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "finish_reason": self.finish_reason,
        }
        return orjson.dumps(meta) + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> Stored:
        head, _, body = raw.partition(b"\n")
        meta = orjson.loads(head)
        return cls(
            body=body,
            provider=meta["provider"],
            model=meta["model"],
            deployment_id=meta["deployment_id"],
            request_id=meta["request_id"],
            usage=Usage(meta["prompt_tokens"], meta["completion_tokens"], meta["cached_tokens"]),
            finish_reason=meta["finish_reason"],
            text=_text_of(body),
        )


def _text_of(body: bytes) -> str:
    try:
        content = orjson.loads(body)["choices"][0]["message"].get("content")
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""


def put_args(key: CacheKey, stored: Stored, settings: CacheSettings) -> list[Any] | None:
    """The EVALSHA arguments that store an answer; None when it is too large to keep."""
    value = stored.encode()
    if len(value) > settings.max_entry_bytes:
        return None
    ttl_ms = max(1, int(settings.ttl_seconds * 1000))
    return [PUT_SHA, 2, key.entry, INDEX_KEY, value, ttl_ms, settings.max_entries]


def completion_body(
    chunk_id: str, created: int, model: str, text: str, finish_reason: str, usage: Usage
) -> bytes:
    """A stream's answer as the `chat.completion` a non-stream request would have had."""
    return orjson.dumps(
        {
            "id": chunk_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage.as_openai(),
        }
    )


def stream_frames(stored: Stored, include_usage: bool) -> list[bytes]:
    """A stored answer as the SSE frames of a stream, `[DONE]` included."""
    data = orjson.loads(stored.body)
    choice = data["choices"][0]
    message = choice.get("message") or {}
    identity = {
        "id": data.get("id", ""),
        "object": "chat.completion.chunk",
        "created": data.get("created", 0),
        "model": data.get("model", stored.model),
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        payload = {
            **identity,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    frames = [chunk({"role": "assistant", "content": ""})]
    if message.get("content"):
        frames.append(chunk({"content": message["content"]}))
    for index, call in enumerate(message.get("tool_calls") or []):
        frames.append(chunk({"tool_calls": [{"index": index, **call}]}))
    frames.append(chunk({}, choice.get("finish_reason") or stored.finish_reason))
    if include_usage:
        usage = {**identity, "choices": [], "usage": data.get("usage") or stored.usage.as_openai()}
        frames.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames


def encode_error(error: ApiError) -> bytes:
    """A leader's failure, for the requests that waited on it."""
    return b"E" + orjson.dumps(
        {
            "status": error.status,
            "message": error.message,
            "code": error.code,
            "param": error.param,
            "retry_after": error.retry_after,
        }
    )


def decode_outcome(raw: bytes) -> Stored | ApiError:
    if raw.startswith(b"E"):
        data = orjson.loads(raw[1:])
        return ApiError(
            data["status"],
            data["message"],
            data["code"],
            param=data["param"],
            retry_after=data["retry_after"],
        )
    return Stored.decode(raw)


def purge(redis: SyncRedis, route: str | None = None, key_id: int | None = None) -> int:
    """Delete cached answers of one route, one client key, both, or all; returns how many."""
    scope = f"k{key_id}" if key_id is not None else "*"
    digest = route_digest(route) if route is not None else "*"
    deleted = 0
    batch: list[bytes] = []
    for name in redis.scan_iter(match=f"{PREFIX}{scope}:{digest}:*", count=500):
        batch.append(name)
        if len(batch) >= 500:
            deleted += _delete(redis, batch)
            batch = []
    if batch:
        deleted += _delete(redis, batch)
    return deleted


def _delete(redis: SyncRedis, names: list[bytes]) -> int:
    pipe = redis.pipeline(transaction=False)
    pipe.delete(*names)
    pipe.zrem(INDEX_KEY, *names)
    deleted, _ = pipe.execute()
    return int(deleted)
