"""Rate limits that hold across every gateway process: token buckets in Redis.

A client key may have a requests-per-minute rate with a burst allowance, a
tokens-per-minute rate and a number of concurrent requests; a deployment may
have requests and tokens per minute, to stay under its provider's quota. Each
check is one Lua script that reads the buckets, refuses or takes from all of
them at once, and answers with what is left, so any number of processes agree
and a refused request takes nothing. Time is Redis's own (`TIME`), so clock skew
between gateway hosts does not matter.

A bucket holds up to its capacity and refills continuously: the requests
bucket holds ``rpm + burst`` and refills ``rpm`` a minute, so a quiet key may
send ``rpm + burst`` requests at once and then ``rpm`` a minute. A request
takes one request and its estimated tokens (prompt size plus ``max_tokens``);
its end corrects the estimate to the tokens actually used, so the token level
may go below zero and later requests wait for it. A concurrency slot is a lease
(a sorted-set member scored by its expiry): it is released in the pipeline
that writes the usage entry, and a crashed process's slots expire.

Providers' own rate-limit answers (`Adapter.quota`) are read too: a deployment
whose quota is nearly spent is marked in Redis until the provider says it
resets, and the engine tries it after the route's other candidates.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from project.errors import ApiError
from project.resp import AsyncRedis as Redis
from routing.providers.base import Quota
from routing.schema import ChatRequest
from routing.table import DeploymentInfo, KeyInfo

# A token bucket's arithmetic, shared by the scripts below: `now` (Redis's own clock,
# in ms), a bucket's level refilled since it was stored, how long until it is full, and
# storing a level.
BUCKETS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function level(key, capacity, per_ms)
  local v = redis.call('HMGET', key, 'level', 'at')
  if not v[1] then return capacity end
  return math.min(capacity, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * per_ms)
end
local function full_in(lvl, capacity, per_ms)
  if per_ms <= 0 or lvl >= capacity then return 0 end
  return math.ceil((capacity - lvl) / per_ms)
end
local function store(key, lvl, capacity, per_ms)
  redis.call('HSET', key, 'level', lvl, 'at', now)
  -- A full bucket is the same as no key at all.
  redis.call('PEXPIRE', key, full_in(lvl, capacity, per_ms) + 1000)
end
"""

# KEYS: the requests bucket, the tokens bucket, the concurrency slots (sorted set).
# ARGV: rpm, burst, tpm, tokens this request takes, max concurrent (0: no such
# limit), request id, slot lease ms.
# Returns {refused ('' or requests|tokens|concurrency), ms to wait, requests left,
# ms until the requests bucket is full, tokens left, ms until the tokens bucket is
# full, slots in use}.
CHECK = (
    BUCKETS
    + """
local rpm, burst, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cost, slots = tonumber(ARGV[4]), tonumber(ARGV[5])
local rcap, rrate, trate = rpm + burst, rpm / 60000, tpm / 60000
local rlevel = rpm > 0 and level(KEYS[1], rcap, rrate) or 0
local tlevel = tpm > 0 and level(KEYS[2], tpm, trate) or 0
local active = 0
if slots > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  active = redis.call('ZCARD', KEYS[3])
end
-- A request larger than the whole bucket waits for a full one, then overdraws it.
local need = math.min(cost, tpm)
local refused, wait = '', 0
if rpm > 0 and rlevel < 1 then
  refused, wait = 'requests', math.ceil((1 - rlevel) / rrate)
elseif tpm > 0 and tlevel < need then
  refused, wait = 'tokens', math.ceil((need - tlevel) / trate)
elseif slots > 0 and active >= slots then
  refused, wait = 'concurrency', 1000
end
if refused == '' then
  if rpm > 0 then
    rlevel = rlevel - 1
    store(KEYS[1], rlevel, rcap, rrate)
  end
  if tpm > 0 then
    tlevel = tlevel - cost
    store(KEYS[2], tlevel, tpm, trate)
  end
  if slots > 0 then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[7]), ARGV[6])
    redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[7]))
    active = active + 1
  end
end
return {refused, wait, math.floor(rlevel), full_in(rlevel, rcap, rrate),
  math.floor(tlevel), full_in(tlevel, tpm, trate), active}
"""
)

# KEYS: the tokens bucket, the concurrency slots. ARGV: tpm, tokens to give back
# (the estimate minus what was used; negative takes more), request id.
SETTLE = (
    BUCKETS
    + """
local tpm, back = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
if tpm <= 0 or back == 0 then return 0 end
local per_ms = tpm / 60000
store(KEYS[1], math.min(tpm, level(KEYS[1], tpm, per_ms) + back), tpm, per_ms)
return 0
"""
)

# A gateway process's allowance (routing.allowances): a slice of a key's limits, topped
# up to its size by each grant. What the allowance holds after the grant is at most
# 1/`headroom` of what each limit has left: the slice asked for, shrunk as far as
# needed, and refused (nothing taken) when that is fewer requests (or tokens) than the
# fewest worth holding or less than the allowance holds already. New slots are granted
# only while `headroom` times as many are free.
# KEYS: the requests bucket, the tokens bucket, the concurrency slots.
# ARGV: rpm, burst, tpm, max concurrent, the slice's requests (0: none asked), its
# tokens, slots the allowance holds after this call, slots it holds now, headroom,
# allowance id, slot lease ms, slots key ms, the fewest tokens worth holding, the fewest
# requests, the requests the allowance holds now, its tokens now (below 0: a debt).
# Returns {1 granted or 0 refused, requests left, ms until the requests bucket is full,
# tokens left, ms until the tokens bucket is full, requests taken, tokens taken}.
GRANT = (
    BUCKETS
    + """
local rpm, burst, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local slots, want_n, want_tok = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local want, have, room = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local fewest, fewest_requests = tonumber(ARGV[13]), tonumber(ARGV[14])
local held_n, held_tok = tonumber(ARGV[15]), tonumber(ARGV[16])
local rcap, rrate, trate = rpm + burst, rpm / 60000, tpm / 60000
local rlevel = rpm > 0 and level(KEYS[1], rcap, rrate) or 0
local tlevel = tpm > 0 and level(KEYS[2], tpm, trate) or 0
local granted, n, tok = 1, 0, 0
if rpm > 0 and want_n > 0 then
  local total = math.min(want_n, math.floor(rlevel / room))
  if total < fewest_requests or total < held_n then granted = 0 else n = total - held_n end
end
if tpm > 0 and want_tok > 0 then
  local total = math.min(want_tok, math.floor(tlevel / room))
  if total < fewest or total < held_tok then granted = 0 else tok = total - held_tok end
end
if slots > 0 and want > have then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if slots - redis.call('ZCARD', KEYS[3]) < room * (want - have) then granted = 0 end
end
if granted == 0 then n, tok = 0, 0 end
if granted == 1 then
  if n > 0 then
    rlevel = rlevel - n
    store(KEYS[1], rlevel, rcap, rrate)
  end
  if tok ~= 0 then
    tlevel = tlevel - tok
    store(KEYS[2], tlevel, tpm, trate)
  end
  if slots > 0 and want > 0 then
    -- One member per slot held, all scored by the allowance's expiry: renewing moves it.
    local members = {}
    for i = 1, want do
      members[#members + 1] = now + tonumber(ARGV[11])
      members[#members + 1] = ARGV[10] .. ':' .. i
    end
    redis.call('ZADD', KEYS[3], unpack(members))
    redis.call('PEXPIRE', KEYS[3], math.max(redis.call('PTTL', KEYS[3]), tonumber(ARGV[12])))
  end
end
return {granted, math.floor(rlevel), full_in(rlevel, rcap, rrate),
  math.floor(tlevel), full_in(tlevel, tpm, trate), n, tok}
"""
)

# Hand back what an allowance did not use (tokens below 0: what its requests used beyond
# their estimates). KEYS: the three keys of GRANT. ARGV: rpm, burst, tpm, requests,
# tokens, allowance id, slots held (all are freed).
GIVE_BACK = (
    BUCKETS
    + """
local rpm, burst, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
-- A negative amount is a debt: an allowance's requests used more tokens than estimated.
local function give(key, amount, capacity, per_ms)
  if amount == 0 or per_ms <= 0 then return end
  store(key, math.min(capacity, level(key, capacity, per_ms) + amount), capacity, per_ms)
end
give(KEYS[1], tonumber(ARGV[4]), rpm + burst, rpm / 60000)
give(KEYS[2], tonumber(ARGV[5]), tpm, tpm / 60000)
for i = 1, tonumber(ARGV[7]) do redis.call('ZREM', KEYS[3], ARGV[6] .. ':' .. i) end
return 0
"""
)

CHECK_SHA = hashlib.sha1(CHECK.encode()).hexdigest()
SETTLE_SHA = hashlib.sha1(SETTLE.encode()).hexdigest()
GRANT_SHA = hashlib.sha1(GRANT.encode()).hexdigest()
GIVE_BACK_SHA = hashlib.sha1(GIVE_BACK.encode()).hexdigest()
SCRIPTS = {CHECK_SHA: CHECK, SETTLE_SHA: SETTLE, GRANT_SHA: GRANT, GIVE_BACK_SHA: GIVE_BACK}

# Output tokens assumed for a request that sets no max_tokens; its end corrects it.
ESTIMATED_OUTPUT_TOKENS = 256
# Chat formats charge a few tokens a message for role markers.
TOKENS_PER_MESSAGE = 4
# A provider's quota, nearly spent, sends its deployment last for at most this long.
MAX_DEPRIORITISED_SECONDS = 60.0
# How long after an upstream 429 that names no reset time.
DEFAULT_DEPRIORITISED_SECONDS = 5.0
QUOTA_KEY = "sb:quota:{deployment}:{credential}"


def estimate_tokens(request: ChatRequest) -> int:
    """Tokens a request is assumed to use before it is answered (about 4 characters a token)."""
    prompt = request.prompt_chars() // 4 + TOKENS_PER_MESSAGE * len(request.messages)
    return prompt + (request.max_output_tokens or ESTIMATED_OUTPUT_TOKENS)


@dataclass(frozen=True)
class Verdict:
    """One check's answer: refused or not, and what is left, for the x-ratelimit headers."""

    refused: str  # '' when admitted; else requests, tokens or concurrency
    wait_seconds: float
    requests_limit: int
    requests_remaining: int
    requests_reset_seconds: float
    tokens_limit: int
    tokens_remaining: int
    tokens_reset_seconds: float

    @classmethod
    def read(cls, reply: list[Any], requests_limit: int, tokens_limit: int) -> Verdict:
        refused = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0] or "")
        return cls(
            refused=refused,
            wait_seconds=int(reply[1]) / 1000,
            requests_limit=requests_limit,
            requests_remaining=max(0, int(reply[2])),
            requests_reset_seconds=int(reply[3]) / 1000,
            tokens_limit=tokens_limit,
            tokens_remaining=max(0, int(reply[4])),
            tokens_reset_seconds=int(reply[5]) / 1000,
        )

    def headers(self) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers for the limits that exist."""
        headers = {}
        if self.requests_limit:
            headers["x-ratelimit-limit-requests"] = str(self.requests_limit)
            headers["x-ratelimit-remaining-requests"] = str(self.requests_remaining)
            headers["x-ratelimit-reset-requests"] = go_duration(self.requests_reset_seconds)
        if self.tokens_limit:
            headers["x-ratelimit-limit-tokens"] = str(self.tokens_limit)
            headers["x-ratelimit-remaining-tokens"] = str(self.tokens_remaining)
            headers["x-ratelimit-reset-tokens"] = go_duration(self.tokens_reset_seconds)
        return headers


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes its resets: ``12ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


@dataclass(frozen=True)
class RateLimited(ApiError):
    """A 429 with `Retry-After`, `retry-after-ms` and the `x-ratelimit-*` headers."""

    limit_headers: tuple[tuple[str, str], ...] = ()

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if self.retry_after is not None:
            # Rounded up: a client that comes back after Retry-After must find room.
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
            headers["retry-after-ms"] = str(max(1, math.ceil(self.retry_after * 1000)))
        headers.update(self.limit_headers)
        return headers


@dataclass
class Lease:
    """What an admitted request holds until its end: tokens to correct, a slot to free."""

    request_id: str
    tokens_key: str
    slots_key: str
    tpm: int
    estimated_tokens: int
    # Admitted from this process's allowance (routing.allowances): its end is settled
    # there, in memory, given the tokens used (its slot is the allowance's, and the
    # tokens' correction goes back into it). False: the allowance has lapsed meanwhile,
    # so `settle_args` must go to Redis.
    settle_locally: Callable[[int], bool] | None = None

    def settle_args(self, used_tokens: int) -> list[Any]:
        back = self.estimated_tokens - used_tokens if self.tpm else 0
        return [SETTLE_SHA, 2, self.tokens_key, self.slots_key, self.tpm, back, self.request_id]

    def release_args(self) -> list[Any]:
        """Free the slot only: the tokens taken stay taken."""
        return [SETTLE_SHA, 2, self.tokens_key, self.slots_key, 0, 0, self.request_id]


@dataclass
class Admission:
    """A key's admission: its lease (None when the key has no limits) and the headers to send.

    ``also`` and ``before``: the replies of the scripts that rode in the admission's
    round trip, if any (`Limiter.admit_key`).
    """

    lease: Lease | None = None
    verdict: Verdict | None = None
    also: Any = None
    before: Any = None

    def headers(self) -> dict[str, str]:
        return self.verdict.headers() if self.verdict is not None else {}


def key_buckets(key: KeyInfo) -> tuple[str, str, str]:
    return key_buckets_of(key.id)


def key_buckets_of(key_id: int) -> tuple[str, str, str]:
    # One hash tag per key: its three keys live on one Redis Cluster slot.
    tag = f"sb:rl:{{k{key_id}}}"
    return f"{tag}:requests", f"{tag}:tokens", f"{tag}:slots"


def deployment_buckets(deployment: DeploymentInfo) -> tuple[str, str, str]:
    tag = deployment_tag(deployment.id, deployment.credential_id)
    return f"{tag}:requests", f"{tag}:tokens", f"{tag}:slots"


def deployment_tag(deployment_id: int, credential_id: int | None) -> str:
    # Per credential: a provider's quota belongs to the account whose key is sent.
    return f"sb:rl:{{d{deployment_id}c{credential_id or 0}}}"


def nearly_spent(quota: Quota | None, reserve: float) -> float | None:
    """Seconds to send a deployment last, if its provider's quota is nearly spent; else None."""
    if quota is None:
        return None
    waits = []
    for limit, left, reset in (
        (quota.requests_limit, quota.requests_remaining, quota.requests_reset),
        (quota.tokens_limit, quota.tokens_remaining, quota.tokens_reset),
    ):
        if left is None:
            continue
        floor = reserve * limit if limit else 0.0
        if left <= floor or left <= 0:
            waits.append(DEFAULT_DEPRIORITISED_SECONDS if reset is None else reset)
    if not waits:
        return None
    wait = min(max(waits), MAX_DEPRIORITISED_SECONDS)
    return wait if wait > 0 else None


@dataclass
class Limiter:
    """The rate limits as one gateway process checks them; scripts run through ``evalsha``."""

    redis: Redis
    evalsha: Any  # Breakers.evalsha: one EVALSHA, reloading the scripts if Redis lost them
    slot_lease_seconds: float = 120.0
    quota_reserve: float = 0.05
    read_cache_seconds: float = 0.5
    # Breakers.run: a pipeline, reloading the scripts if Redis lost them
    run_pipeline: Any = None
    # (deployment id, credential id) -> (when read, monotonic; marked until, epoch or 0)
    _marks: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)

    async def admit_key(
        self,
        key: KeyInfo,
        request_id: str,
        tokens: int,
        also: tuple[list[Any], list[Any]] | None = None,
        before: list[Any] | None = None,
        admitted: Admission | None = None,
    ) -> Admission:
        """Take from the key's buckets and a slot, or raise a 429 naming the limit.

        Other scripts ride in the same round trip (perf, issue 9). ``before``: EVALSHA
        arguments run first, a read (the ranking's live numbers); its reply is
        ``Admission.before``. ``also`` is (EVALSHA arguments, the EVALSHA arguments that
        undo them): the budget reservation, run right after the check; its reply is
        ``Admission.also``. If the key is refused, a reservation the script took is
        handed back before the 429 is raised (for that moment a concurrent request sees
        the budget a little fuller than it is). ``admitted``: the key's admission, already
        taken from this process's allowance (routing.allowances): no check is made.
        """
        limited = bool(key.rpm or key.tpm or key.max_concurrent) and admitted is None
        commands = [] if before is None else [before]
        if limited:
            requests_key, tokens_key, slots_key = key_buckets(key)
            commands.append(
                self._check_args(
                    (requests_key, tokens_key, slots_key),
                    key.rpm,
                    key.burst if key.rpm else 0,
                    key.tpm,
                    tokens,
                    key.max_concurrent,
                    request_id,
                )
            )
        if also is not None:
            commands.append(also[0])
        if not commands:
            return admitted or Admission()
        if len(commands) == 1:
            replies = [await self.evalsha(*commands[0])]
        else:

            def build(pipe: Any) -> None:
                for args in commands:
                    pipe.execute_command("EVALSHA", *args)

            replies = await self.run_pipeline(build)
        read = replies.pop(0) if before is not None else None
        extra: Any = replies[-1] if also is not None else None
        if not limited:
            if admitted is not None:
                return Admission(admitted.lease, admitted.verdict, extra, read)
            return Admission(also=extra, before=read)
        verdict = Verdict.read(replies[0], key.rpm + (key.burst if key.rpm else 0), key.tpm)
        if verdict.refused:
            if also is not None and int(extra) == 0:
                await self.evalsha(*also[1])
            raise refusal(verdict, key)
        lease = Lease(request_id, tokens_key, slots_key, key.tpm, tokens)
        return Admission(lease, verdict, extra, read)

    async def admit_deployment(
        self, deployment: DeploymentInfo, request_id: str, tokens: int
    ) -> tuple[Lease | None, Verdict | None]:
        """Take from a deployment's buckets and, when it has a cap, a concurrency slot
        (routing.live counts them): (its lease, None), or (None, the refusal)."""
        if not (deployment.rpm or deployment.tpm or deployment.max_concurrency):
            return None, None  # nothing to count: no round trip
        keys = deployment_buckets(deployment)
        verdict = await self._check(
            keys,
            deployment.rpm,
            0,
            deployment.tpm,
            tokens,
            deployment.max_concurrency,
            request_id,
        )
        if verdict.refused:
            return None, verdict
        return Lease(request_id, keys[1], keys[2], deployment.tpm, tokens), None

    async def _check(
        self,
        keys: tuple[str, str, str],
        rpm: int,
        burst: int,
        tpm: int,
        tokens: int,
        slots: int,
        request_id: str,
    ) -> Verdict:
        reply = await self.evalsha(
            *self._check_args(keys, rpm, burst, tpm, tokens, slots, request_id)
        )
        return Verdict.read(reply, rpm + burst, tpm)

    def _check_args(
        self,
        keys: tuple[str, str, str],
        rpm: int,
        burst: int,
        tpm: int,
        tokens: int,
        slots: int,
        request_id: str,
    ) -> list[Any]:
        return [
            CHECK_SHA,
            3,
            *keys,
            rpm,
            burst,
            tpm,
            tokens,
            slots,
            request_id,
            int(self.slot_lease_seconds * 1000),
        ]

    # -- the providers' own quotas ------------------------------------------------

    async def deprioritised(self, chain: tuple[DeploymentInfo, ...]) -> set[int]:
        """The ids of the chain's deployments whose provider quota is nearly spent."""
        now = time.monotonic()
        wall = time.time()
        marked: set[int] = set()
        stale = []
        for deployment in chain:
            mark = (deployment.id, deployment.credential_id or 0)
            cached = self._marks.get(mark)
            if cached is not None and now - cached[0] < self.read_cache_seconds:
                if cached[1] > wall:
                    marked.add(deployment.id)
            else:
                stale.append(deployment)
        if stale:
            values = await self.redis.mget([quota_key(d) for d in stale])
            for deployment, value in zip(stale, values, strict=True):
                until = float(value) if value else 0.0
                self._marks[(deployment.id, deployment.credential_id or 0)] = (now, until)
                if until > wall:
                    marked.add(deployment.id)
        return marked

    async def observe(self, deployment: DeploymentInfo, quota: Quota | None) -> None:
        """Read a provider's answer about its quota; mark or unmark the deployment."""
        wait = nearly_spent(quota, self.quota_reserve)
        mark = (deployment.id, deployment.credential_id or 0)
        if wait is not None:
            until = time.time() + wait
            await self.redis.set(quota_key(deployment), f"{until:.3f}", px=max(1, int(wait * 1000)))
            self._marks[mark] = (time.monotonic(), until)
        elif quota is not None:
            cached = self._marks.get(mark)
            if cached is not None and cached[1] > time.time():
                # Served while marked (every other candidate failed) and says it has room again.
                await self.redis.delete(quota_key(deployment))
                self._marks[mark] = (time.monotonic(), 0.0)

    def forget(self) -> None:
        self._marks.clear()


def quota_key(deployment: DeploymentInfo) -> str:
    return QUOTA_KEY.format(deployment=deployment.id, credential=deployment.credential_id or 0)


LIMIT_NAMES = {
    "requests": "requests per minute",
    "tokens": "tokens per minute",
    "concurrency": "concurrent requests",
}


def refusal(verdict: Verdict, key: KeyInfo) -> RateLimited:
    """The 429 for a key over one of its limits."""
    if verdict.refused == "concurrency":
        message = (
            f"This key may have {key.max_concurrent} requests in flight at once; wait for one "
            "to finish."
        )
        code = "concurrency_limit_exceeded"
    elif verdict.refused == "tokens":
        message = (
            f"This key's limit of {key.tpm} tokens per minute is reached; try again in "
            f"{verdict.wait_seconds:.1f} s."
        )
        code = "rate_limit_exceeded"
    else:
        burst = f" (plus a burst of {key.burst})" if key.burst else ""
        message = (
            f"This key's limit of {key.rpm} requests per minute{burst} is reached; try again "
            f"in {verdict.wait_seconds:.1f} s."
        )
        code = "rate_limit_exceeded"
    return RateLimited(
        429,
        message,
        code,
        retry_after=verdict.wait_seconds,
        limit_headers=tuple(verdict.headers().items()),
    )
