"""Circuit breakers, one per deployment, kept in Redis so every gateway process agrees.

A breaker opens after N consecutive failures, or when the failure rate within
the current window passes a threshold over a minimum volume, or at once on a
permanent failure (bad key, no credit, unknown model). After a cool-down one
process wins the right to a trial call (half-open); success closes it, failure
opens it again. Every transition is atomic (a Lua script) and is appended to a
Redis list that a worker copies into `BreakerEvent` rows for the admin.

Health probes (routing/health.py) report through the same script
(`Breakers.record_probe`): a good probe takes the trial of a cooled-down breaker
and closes it, a failed one keeps an open breaker open; a probe never opens a
closed breaker.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from project.resp import AsyncRedis as Redis
from routing import live

KEY = "sb:breaker:{}"
TRANSITIONS_KEY = "sb:breaker:transitions"
TRIAL_LEASE_SECONDS = 30


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Policy:
    consecutive_failures: int
    failure_rate: float
    min_volume: int
    window_seconds: int
    cooldown_seconds: float
    read_cache_seconds: float = 0.5

    @classmethod
    def from_settings(cls) -> Policy:
        from django.conf import settings

        conf = settings.SWITCHBOARD
        return cls(
            consecutive_failures=conf["BREAKER_CONSECUTIVE_FAILURES"],
            failure_rate=conf["BREAKER_FAILURE_RATE"],
            min_volume=conf["BREAKER_MIN_VOLUME"],
            window_seconds=conf["BREAKER_WINDOW_SECONDS"],
            cooldown_seconds=conf["BREAKER_COOLDOWN_SECONDS"],
            read_cache_seconds=conf.get("BREAKER_READ_CACHE_SECONDS", 0.5),
        )


@dataclass(frozen=True)
class Reading:
    state: State
    opened_at: float

    def cooled_down(self, policy: Policy, now: float) -> bool:
        return now - self.opened_at >= policy.cooldown_seconds


CLOSED = Reading(State.CLOSED, 0.0)

# KEYS: breaker hash, transitions list, and (optional) the deployment's live hash.
# ARGV: deployment id, outcome (ok|fail|fatal), now, consecutive threshold, failure
# rate, min volume, window seconds, reason (of a failure, or of a close when not
# empty), and when the call started; with the live hash, `record_live`'s latency ms,
# failed, alpha and ttl (routing.live: one script call records both).
RECORD_BREAKER = """
local h, log = KEYS[1], KEYS[2]
local id, outcome, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local threshold, rate = tonumber(ARGV[4]), tonumber(ARGV[5])
local min_volume, window = tonumber(ARGV[6]), tonumber(ARGV[7])
local state = redis.call('HGET', h, 'state') or 'closed'
local win_start = tonumber(redis.call('HGET', h, 'win_start') or '0')
if now - win_start >= window then
  redis.call('HSET', h, 'win_start', now, 'win_total', 0, 'win_fail', 0)
end
local total = redis.call('HINCRBY', h, 'win_total', 1)
local function move(to, reason)
  redis.call('HSET', h, 'state', to)
  if to == 'open' then redis.call('HSET', h, 'opened_at', now) end
  if to == 'closed' then
    -- The failures that opened it must not count against the recovered provider.
    redis.call('HSET', h, 'win_start', now, 'win_total', 0, 'win_fail', 0)
  end
  redis.call('RPUSH', log, cjson.encode({deployment_id=tonumber(id), from_state=state,
    to_state=to, reason=reason, at=now}))
  state = to
end
if outcome == 'ok' then
  redis.call('HSET', h, 'failures', 0)
  local opened = tonumber(redis.call('HGET', h, 'opened_at') or '0')
  -- A call that started before the breaker opened says nothing about recovery.
  if state ~= 'closed' and tonumber(ARGV[9]) >= opened then
    move('closed', ARGV[8] ~= '' and ARGV[8] or 'a call succeeded')
  end
  return state
end
local failures = redis.call('HINCRBY', h, 'failures', 1)
local failed = redis.call('HINCRBY', h, 'win_fail', 1)
if state == 'open' then
  redis.call('HSET', h, 'opened_at', now)
elseif state == 'half_open' then
  move('open', 'trial call failed: ' .. ARGV[8])
elseif outcome == 'fatal' then
  move('open', ARGV[8])
elseif failures >= threshold then
  move('open', failures .. ' consecutive failures: ' .. ARGV[8])
elseif total >= min_volume and failed / total >= rate then
  move('open', string.format('%d of %d calls failed: %s', failed, total, ARGV[8]))
end
return state
"""
RECORD = (
    live.RECORD_FUNCTION
    + "local function record_breaker()\n"
    + RECORD_BREAKER
    + "end\n"
    + "local state = record_breaker()\n"
    + "if KEYS[3] then\n"
    + "  record_live(KEYS[3], tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]),\n"
    + "    tonumber(ARGV[13]))\n"
    + "end\n"
    + "return state\n"
)

# KEYS: breaker hash, transitions list. ARGV: deployment id, now, cooldown, lease.
# Returns 'trial' to exactly one caller once an open breaker has cooled down.
ACQUIRE_TRIAL = """
local h, log = KEYS[1], KEYS[2]
local now, cooldown, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HGET', h, 'state') or 'closed'
if state == 'closed' then return 'closed' end
if state == 'open' then
  local opened = tonumber(redis.call('HGET', h, 'opened_at') or '0')
  if now - opened < cooldown then return 'open' end
  redis.call('HSET', h, 'state', 'half_open', 'trial_until', now + lease)
  redis.call('RPUSH', log, cjson.encode({deployment_id=tonumber(ARGV[1]), from_state='open',
    to_state='half_open', reason='cool-down over; one trial call', at=now}))
  return 'trial'
end
-- half-open: a trial is in flight; a new one only if that one never reported back
local until_ = tonumber(redis.call('HGET', h, 'trial_until') or '0')
if now < until_ then return 'half_open' end
redis.call('HSET', h, 'trial_until', now + lease)
return 'trial'
"""


class Breakers:
    """The breakers of all deployments, as one Redis client sees them.

    Scripts run by EVALSHA inside pipelines shared with the ledger write, so a
    warm request pays one round trip for both; redis-py's Script objects would
    add a SCRIPT EXISTS round trip to every pipeline.
    """

    def __init__(self, redis: Redis, policy: Policy, extra_scripts: tuple[str, ...] = ()) -> None:
        self.redis = redis
        self.policy = policy
        # Other scripts run through the same pipelines (budget reservations), reloaded with ours.
        self.extra_scripts = extra_scripts
        self.record_sha = sha1(RECORD)
        self.acquire_sha = sha1(ACQUIRE_TRIAL)
        # Readings younger than policy.read_cache_seconds are served from memory:
        # a breaker another process opens is seen here at most that late; this
        # process's own failures drop the entry, so it sees its own openings at once.
        self._cache: dict[int, tuple[float, Reading]] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def load_scripts(self) -> None:
        for script in (RECORD, ACQUIRE_TRIAL, *self.extra_scripts):
            await self.redis.script_load(script)

    async def read(self, deployment_ids: list[int]) -> dict[int, Reading]:
        now = time.monotonic()
        readings: dict[int, Reading] = {}
        stale = []
        for deployment_id in deployment_ids:
            hit = self._cache.get(deployment_id)
            if hit is not None and now - hit[0] < self.policy.read_cache_seconds:
                readings[deployment_id] = hit[1]
            else:
                stale.append(deployment_id)
        if not stale:
            return readings
        pipe = self.redis.pipeline(transaction=False)
        for deployment_id in stale:
            pipe.hmget(KEY.format(deployment_id), "state", "opened_at")
        rows = await pipe.execute()
        for deployment_id, (state, opened_at) in zip(stale, rows, strict=True):
            if state is None or state == b"closed":
                reading = CLOSED
            else:
                reading = Reading(State(state.decode()), float(opened_at or 0))
            readings[deployment_id] = reading
            self._cache[deployment_id] = (now, reading)
        return readings

    def known_closed(self, deployment_id: int) -> bool:
        """Whether this process's latest reading of the breaker (`read`, before the call)
        found it closed. A success then only adds to its counts and to the live numbers,
        so its record may wait a moment: if another process opened the breaker since,
        the success of a call that started before that does not close it (`RECORD`)."""
        hit = self._cache.get(deployment_id)
        return hit is not None and hit[1] is CLOSED

    async def acquire_trial(self, deployment_id: int) -> bool:
        self._cache.pop(deployment_id, None)
        result = await self.evalsha(
            self.acquire_sha,
            2,
            KEY.format(deployment_id),
            TRANSITIONS_KEY,
            deployment_id,
            time.time(),
            self.policy.cooldown_seconds,
            TRIAL_LEASE_SECONDS,
        )
        # 'closed': another process closed it since our reading; it is usable.
        return bool(result in (b"trial", "trial", b"closed", "closed"))

    def queue_record(
        self,
        pipe: Any,
        deployment_id: int,
        outcome: str,
        reason: str = "",
        started_at: float | None = None,
        with_live: bool = False,
        latency_ms: int | None = None,
    ) -> None:
        """Add one call's outcome (ok, fail or fatal) to ``pipe``; ``started_at`` is epoch time.

        ``with_live``: record it in the deployment's live numbers too (routing.live), with
        ``latency_ms`` (None: none measured), in the same script call.
        """
        cached = self._cache.get(deployment_id)
        if outcome != "ok" or (cached is not None and cached[1] is not CLOSED):
            self._cache.pop(deployment_id, None)  # the state may change: read it again next time
        args = self._record_args(deployment_id, outcome, reason, started_at)
        if with_live:
            tail = live.record_tail(deployment_id, latency_ms, outcome != "ok")
            args = (args[0], 3, *args[2:4], tail[0], *args[4:], *tail[1:])
        pipe.evalsha(*args)

    def _record_args(
        self, deployment_id: int, outcome: str, reason: str, started_at: float | None
    ) -> tuple[Any, ...]:
        policy = self.policy
        return (
            self.record_sha,
            2,
            KEY.format(deployment_id),
            TRANSITIONS_KEY,
            deployment_id,
            outcome,
            time.time(),
            policy.consecutive_failures,
            policy.failure_rate,
            policy.min_volume,
            policy.window_seconds,
            reason[:150],
            started_at if started_at is not None else time.time(),
        )

    async def record(
        self, deployment_id: int, outcome: str, reason: str = "", started_at: float | None = None
    ) -> None:
        await self.run(
            lambda pipe: self.queue_record(pipe, deployment_id, outcome, reason, started_at)
        )

    async def record_probe(
        self, deployment_id: int, outcome: str | None, reason: str, started_at: float
    ) -> State:
        """A health probe's outcome (ok, fail, fatal; None when the provider is not at fault).

        A probe never opens a closed breaker: that is for live traffic's failures,
        counted against the policy. A successful probe closes an open breaker whose
        cool-down is over, taking the trial call as a live request would (half-open,
        then closed); a failed one keeps an open breaker open, its cool-down starting
        again, and opens a half-open one. Both go through the RECORD script, so the
        transitions are atomic and logged like any other. Returns the state it leaves.

        A probe's failure that races a live success closing the breaker counts as
        one failure of the closed breaker, which it was.
        """
        self._cache.pop(deployment_id, None)
        key = KEY.format(deployment_id)
        raw = await self.redis.hget(key, "state")
        state = State(_text(raw)) if raw else State.CLOSED
        if state is State.CLOSED or outcome is None:
            return state
        if outcome == "ok":
            trial = _text(
                await self.evalsha(
                    self.acquire_sha,
                    2,
                    key,
                    TRANSITIONS_KEY,
                    deployment_id,
                    time.time(),
                    self.policy.cooldown_seconds,
                    TRIAL_LEASE_SECONDS,
                )
            )
            if trial in ("open", "closed"):  # still cooling down, or closed meanwhile
                return State(trial)
        result = await self.evalsha(*self._record_args(deployment_id, outcome, reason, started_at))
        return State(_text(result))

    async def evalsha(self, *args: Any) -> Any:
        """One EVALSHA of any known script, loading the scripts if Redis lost them."""
        try:
            return await self.redis.execute_command("EVALSHA", *args)
        except NoScriptError:
            await self.load_scripts()
            return await self.redis.execute_command("EVALSHA", *args)

    async def run(self, build: Any) -> list[Any]:
        """Execute a pipeline built by ``build(pipe)``; reload scripts once if Redis lost them.

        Only the script calls are repeated after a reload: the other commands of
        the pipeline (the ledger append) already ran and must not run twice.
        """
        pipe = self.redis.pipeline(transaction=False)
        build(pipe)
        commands = list(pipe.command_stack)  # execute() clears the stack
        results = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            await self.load_scripts()
            retry = self.redis.pipeline(transaction=False)
            for index in missing:
                args, options = commands[index]
                retry.execute_command(*args, **options)
            for index, result in zip(missing, await retry.execute(), strict=True):
                results[index] = result
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise errors[0]
        return list(results)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def decode_transition(raw: bytes) -> dict[str, Any]:
    return dict(orjson.loads(raw))
