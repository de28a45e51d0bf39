"""Single-flight: identical requests in flight at once make one provider call.

It works across gateway processes through Redis, for the requests the cache
would keep (`routing.cache.wanted`), and uses the cache's key.

One script looks the request up: a cached answer is a hit; otherwise the first
request takes a lock (``SET NX`` with a short TTL) and leads, and the others
follow. The leader's process renews the lock while the leader works. At its end
the leader writes its outcome, the answer or the error, to a result key named
after itself. It frees the lock in the same pipeline that writes its usage
entry.

A follower polls for that result until its own deadline. One poller per flight
and process serves all of that process's followers. If the lock goes away with
no result, the followers look the request up again: one of them leads, or finds
the answer in the cache. The lock can go away because the leader's process died
(its TTL ran out) or because the leader gave up (its client left, its stream
was cut).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from project.errors import ApiError
from project.resp import AsyncRedis as Redis
from routing.cache import INDEX_KEY, CacheKey, CacheSettings, Stored, decode_outcome

LOCK = "sb:flight:{scope}:{digest}"
RESULT = "sb:flight:{scope}:{digest}:{leader}"
RESULT_SECONDS = 60  # followers read it within their deadline; the cache keeps it longer
LONGEST_LEAD_SECONDS = 900  # a leader never renews its lock for longer than this

# KEYS: the cache entry, the cache index, the lock. ARGV: request id, lock ms, use
# the cache (1/0), take the lock (1/0).
# Returns {'hit', entry}, {'lead'}, {'follow', leader id} or {'none'}.
LOOKUP = """
if ARGV[3] == '1' then
  local hit = redis.call('GET', KEYS[1])
  if hit then
    local t = redis.call('TIME')
    redis.call('ZADD', KEYS[2], 'XX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
      KEYS[1])
    return {'hit', hit}
  end
end
if ARGV[4] ~= '1' then return {'none'} end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'lead'} end
return {'follow', redis.call('GET', KEYS[3])}
"""

# KEYS: the result, the lock. ARGV: the leader's id.
# Returns {'done', outcome}, {'wait'} while the leader holds the lock, or {'gone'}.
POLL = """
local outcome = redis.call('GET', KEYS[1])
if outcome then return {'done', outcome} end
if redis.call('GET', KEYS[2]) == ARGV[1] then return {'wait'} end
return {'gone'}
"""

# KEYS: the lock. ARGV: the leader's id, lock ms. 1 if still held and renewed.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: the lock, the result. ARGV: the leader's id, the outcome ('' if none), result ms.
RELEASE = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


LOOKUP_SHA, POLL_SHA, RENEW_SHA, RELEASE_SHA = map(_sha, (LOOKUP, POLL, RENEW, RELEASE))
SCRIPTS = {_sha(s): s for s in (LOOKUP, POLL, RENEW, RELEASE)}


@dataclass
class Flight:
    """One request's place in single-flight: leading (with its lock's renewal) or following."""

    key: CacheKey
    request_id: str
    leader_id: str = ""
    renewal: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def leading(self) -> bool:
        return self.leader_id == self.request_id

    @property
    def lock(self) -> str:
        return LOCK.format(scope=self.key.scope, digest=self.key.digest)

    def result_key(self, leader_id: str | None = None) -> str:
        return RESULT.format(
            scope=self.key.scope, digest=self.key.digest, leader=leader_id or self.leader_id
        )

    def release_args(self, outcome: bytes = b"") -> list[Any]:
        """EVALSHA arguments that free the lock, leaving ``outcome`` for the followers."""
        self.stop_renewing()
        return [
            RELEASE_SHA,
            2,
            self.lock,
            self.result_key(),
            self.request_id,
            outcome,
            RESULT_SECONDS * 1000,
        ]

    def stop_renewing(self) -> None:
        if self.renewal is not None:
            self.renewal.cancel()
            self.renewal = None


@dataclass(frozen=True)
class Hit:
    stored: Stored


@dataclass
class _Watch:
    task: asyncio.Task[bytes | None]
    waiters: int = 0


class FollowerTimeout(Exception):
    """The follower's deadline passed while the leader was still working."""


@dataclass
class SingleFlight:
    redis: Redis
    evalsha: Any  # Breakers.evalsha: reloads the scripts if Redis lost them
    settings: CacheSettings
    _watches: dict[str, _Watch] = field(default_factory=dict)

    async def lookup(self, key: CacheKey, request_id: str) -> Hit | Flight | None:
        """A cached answer, this request's flight (leading or following), or None (neither on)."""
        use_cache, fly = self.settings.enabled, self.settings.single_flight
        if not (use_cache or fly):
            return None
        flight = Flight(key, request_id)
        reply = await self.evalsha(
            LOOKUP_SHA,
            3,
            key.entry,
            INDEX_KEY,
            flight.lock,
            request_id,
            int(self.settings.lock_seconds * 1000),
            int(use_cache),
            int(fly),
        )
        verb = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if verb == "hit":
            return Hit(Stored.decode(reply[1]))
        if verb == "none":
            return None
        if verb == "lead":
            flight.leader_id = request_id
            flight.renewal = asyncio.create_task(self._renew(flight))
            return flight
        flight.leader_id = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        return flight

    async def _renew(self, flight: Flight) -> None:
        """Keep the lock while the leader works, so a live leader is never taken over."""
        interval = self.settings.lock_seconds / 3
        ends = time.monotonic() + LONGEST_LEAD_SECONDS
        lock_ms = int(self.settings.lock_seconds * 1000)
        while time.monotonic() < ends:
            await asyncio.sleep(interval)
            try:
                held = await self.evalsha(RENEW_SHA, 1, flight.lock, flight.request_id, lock_ms)
            except Exception:
                continue  # Redis unreachable for a moment: the next renewal may work
            if not held:
                return

    async def follow(self, flight: Flight, deadline: float) -> Stored | ApiError | Hit | Flight:
        """Wait for the leader's outcome until ``deadline`` (monotonic).

        Returns the leader's answer or error; or, when the leader went away
        without one, this request's new place: a cache hit, or a flight it may lead.
        Raises FollowerTimeout at the deadline.
        """
        while True:
            raw = await self._wait(flight, deadline)
            if raw is not None:
                return decode_outcome(raw)
            found = await self.lookup(flight.key, flight.request_id)
            if found is None:  # switched off meanwhile
                raise FollowerTimeout
            if isinstance(found, Hit) or found.leading:
                return found
            flight = found

    async def _wait(self, flight: Flight, deadline: float) -> bytes | None:
        name = flight.result_key()
        watch = self._watches.get(name)
        if watch is None or watch.task.done():
            watch = _Watch(asyncio.create_task(self._poll(flight)))
            self._watches[name] = watch
        watch.waiters += 1
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FollowerTimeout
            try:
                return await asyncio.wait_for(asyncio.shield(watch.task), remaining)
            except TimeoutError:
                raise FollowerTimeout from None
        finally:
            watch.waiters -= 1
            if watch.waiters == 0:
                if self._watches.get(name) is watch:
                    del self._watches[name]
                if not watch.task.done():
                    watch.task.cancel()

    async def _poll(self, flight: Flight) -> bytes | None:
        """The outcome once it is there; None if the leader let go of the lock without one."""
        pause = 0.005
        while True:
            reply = await self.evalsha(
                POLL_SHA, 2, flight.result_key(), flight.lock, flight.leader_id
            )
            verb = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
            if verb == "done":
                return bytes(reply[1])
            if verb == "gone":
                return None
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.05)

    def forget(self) -> None:
        for watch in self._watches.values():
            watch.task.cancel()
        self._watches.clear()


async def abandon(flight: Flight | None, evalsha: Any) -> None:
    """A leader that will not finish lets go at once, so its followers need not wait for the TTL."""
    if flight is None or not flight.leading:
        return
    with contextlib.suppress(Exception):
        await evalsha(*flight.release_args())
