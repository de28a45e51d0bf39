"""What each deployment is doing right now, shared by every gateway process through Redis.

- Rolling latency and error rate: an exponentially weighted moving average
  (EWMA, weight ``ALPHA`` for the newest call; the first calls count fully
  until there are ``1 / ALPHA`` of them), kept in the hash ``sb:live:d<id>``.
  A success's latency is its attempt's (a stream's, to its first payload);
  failures the provider is to blame for raise the error rate and leave the
  latency alone. The breaker's record script writes it (`Breakers.queue_record`
  with ``with_live``), in the pipeline of the usage entry (`Engine._commit`) or
  of the failure, so it costs no extra round trip and no script call of its own. A deployment
  without traffic for ``STALE_SECONDS`` forgets its numbers (the hash expires).
- In flight: the concurrency slots of `routing.limits` (a sorted set of leases
  per deployment and credential, scored by expiry), which the engine takes
  for every candidate with a ``max_concurrency`` that it calls (uncapped ones
  are not counted, which saves their request a round trip). The cap is the
  slots', so a full deployment is refused atomically and the request spills
  over to the next candidate; a dead process's slots expire with their lease.
- Quality: `sb:quality:deployments` (written by the quality scorer), 0-100.

`read` fetches all of it for a request's candidates with one script call: one
round trip per request.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from routing.limits import deployment_buckets
from routing.table import DeploymentInfo

KEY = "sb:live:d{}"
QUALITY_KEY = "sb:quality:deployments"
ALPHA = 0.2
STALE_SECONDS = 900

# One call's outcome, as a Lua function: the breaker's RECORD script ends with it
# (routing.breaker), so the usage entry's pipeline carries one script for both.
# key: the deployment's live hash; lat: latency ms (-1: none); failed: 0/1.
RECORD_FUNCTION = """
local function record_live(key, lat, failed, alpha, ttl)
  local v = redis.call('HMGET', key, 'lat', 'err', 'n', 'ln')
  local n, ln = tonumber(v[3] or '0'), tonumber(v[4] or '0')
  local err = tonumber(v[2] or '0')
  local a = math.max(alpha, 1 / (n + 1))
  err = err + a * (failed - err)
  if lat >= 0 then
    local b = math.max(alpha, 1 / (ln + 1))
    local l = tonumber(v[1] or '0')
    if ln == 0 then l = lat else l = l + b * (lat - l) end
    redis.call('HSET', key, 'err', err, 'n', n + 1, 'lat', l, 'ln', ln + 1)
  else
    redis.call('HSET', key, 'err', err, 'n', n + 1)
  end
  redis.call('EXPIRE', key, ttl)
end
"""

# One command for everything a ranking reads, answered as one string: without
# hiredis, redis-py parses each element of a reply with its own awaits, so a
# nested reply of thirty elements costs more than the round trip itself.
# KEYS: the quality hash, then per deployment its live hash and its slots, then the
# budget hashes. ARGV: now ms, the number of deployments, then their ids.
# Returns "lat,err,n,ln,in flight,quality" per deployment, then each budget's spent,
# joined by ";".
READ = """
local now, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 1, count do
  local v = redis.call('HMGET', KEYS[2 * i], 'lat', 'err', 'n', 'ln')
  local busy = redis.call('ZCOUNT', KEYS[2 * i + 1], now, '+inf')
  local q = redis.call('HGET', KEYS[1], ARGV[2 + i])
  out[#out + 1] = table.concat({v[1] or '', v[2] or '', v[3] or '', v[4] or '', busy, q or ''}, ',')
end
for j = 2 * count + 2, #KEYS do
  out[#out + 1] = redis.call('HGET', KEYS[j], 'spent') or '0'
end
return table.concat(out, ';')
"""
READ_SHA = hashlib.sha1(READ.encode()).hexdigest()
SCRIPTS = {READ_SHA: READ}


def record_tail(deployment_id: int, latency_ms: int | None, failed: bool) -> list[Any]:
    """The live hash and `record_live`'s arguments after it, as the breaker's RECORD script
    takes them (KEYS[3], ARGV[10:13])."""
    return [
        KEY.format(deployment_id),
        -1 if latency_ms is None else latency_ms,
        int(failed),
        ALPHA,
        STALE_SECONDS,
    ]


@dataclass(frozen=True)
class Live:
    """One deployment's shared numbers, as read for one request."""

    latency_ms: float | None = None  # None: no call measured lately
    error_rate: float = 0.0
    calls: int = 0
    in_flight: int = 0
    quality: Decimal | None = None  # None: no information (neutral)

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": round(self.latency_ms) if self.latency_ms is not None else None,
            "error_rate": round(self.error_rate, 3),
            "calls": self.calls,
            "in_flight": self.in_flight,
            "quality": str(self.quality) if self.quality is not None else None,
        }


@dataclass(frozen=True)
class Snapshot:
    deployments: dict[int, Live]
    # Of the budgets that apply: the highest share spent (0..1), and which budget.
    budget_pressure: float = 0.0
    pressing_budget: str = ""
    degraded_by: str = ""  # a budget past its degrade point, if any


def read_args(
    chain: Sequence[DeploymentInfo],
    budget_keys: Sequence[tuple[str, Decimal, str, int | None]] = (),
) -> list[Any]:
    """The EVALSHA arguments of the READ script: live numbers of ``chain`` and the spend of
    ``budget_keys`` ((redis key, amount, label, degrade %)); `parse` reads the reply."""
    keys = [QUALITY_KEY]
    for deployment in chain:
        keys += [KEY.format(deployment.id), deployment_buckets(deployment)[2]]
    keys += [key for key, _, _, _ in budget_keys]
    return [
        READ_SHA,
        len(keys),
        *keys,
        int(time.time() * 1000),
        len(chain),
        *(d.id for d in chain),
    ]


def parse(
    reply: Any,
    chain: Sequence[DeploymentInfo],
    budget_keys: Sequence[tuple[str, Decimal, str, int | None]] = (),
) -> Snapshot:
    """The Snapshot in the READ script's reply to `read_args`."""
    from billing.budgets import from_units

    parts = (reply.decode() if isinstance(reply, bytes) else str(reply)).split(";")
    found: dict[int, Live] = {}
    for deployment, row in zip(chain, parts, strict=False):
        lat, err, calls, latency_calls, in_flight, quality = row.split(",")
        found[deployment.id] = Live(
            latency_ms=float(lat) if lat and int(latency_calls or 0) else None,
            error_rate=float(err or 0),
            calls=int(calls or 0),
            in_flight=int(in_flight or 0),
            quality=parse_quality(quality or None),
        )
    pressure, pressing, degraded = 0.0, "", ""
    for (_, amount, label, degrade_at), spent in zip(
        budget_keys, parts[len(chain) :] if budget_keys else [], strict=True
    ):
        used = from_units(int(spent or 0))
        share = float(used / amount) if amount > 0 else 1.0
        if share > pressure:
            pressure, pressing = share, label
        if degrade_at and not degraded and used * 100 >= amount * degrade_at:
            degraded = label
    return Snapshot(found, min(pressure, 1.0), pressing, degraded)


def parse_quality(raw: bytes | str | None) -> Decimal | None:
    if raw is None:
        return None
    try:
        value = Decimal(raw.decode() if isinstance(raw, bytes) else raw)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def read_sync(redis: Any, deployment_id: int, slot_keys: Sequence[str]) -> dict[str, Any]:
    """One deployment's numbers for the admin (sync Redis), in-flight summed over credentials."""
    pipe = redis.pipeline(transaction=False)
    pipe.hmget(KEY.format(deployment_id), "lat", "err", "n", "ln")
    now_ms = int(time.time() * 1000)
    for key in slot_keys:
        pipe.zcount(key, now_ms, "+inf")
    pipe.hget(QUALITY_KEY, str(deployment_id))
    replies = pipe.execute()
    lat, err, calls, latency_calls = replies[0]
    return {
        "latency_ms": round(float(lat)) if lat is not None and int(latency_calls or 0) else None,
        "error_rate": float(err or 0),
        "calls": int(calls or 0),
        "in_flight": sum(int(n or 0) for n in replies[1:-1]),
        "quality": parse_quality(replies[-1]),
    }
