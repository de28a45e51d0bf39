"""Budgets that hold under concurrency: reservations and spend in Redis.

Before a call the engine reserves the request's worst-case cost against every
budget that applies (atomically, in one Lua script: all fit or none is
taken); after the call it settles the reservation to the actual cost. Spend
and outstanding reservations are integers of the money quantum (1e-10 USD), so
Redis adds them exactly. A reservation is a lease: if the process holding it
dies, the next reservation against that budget releases it after it expires.

Hard budgets refuse what does not fit; soft budgets only count (alerts read
their spend). `spend()` reads a budget's current-period spend at any moment.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.money import MONEY_QUANTUM

LEASE_SECONDS = 600  # longer than any request deadline and most streams
KEY = "sb:budget:{id}:{period}"


def to_units(amount: Decimal) -> int:
    return int((amount / MONEY_QUANTUM).to_integral_value())


def from_units(units: int) -> Decimal:
    return Decimal(units) * MONEY_QUANTUM


# The ledger column a budget of each scope counts (global counts every row).
LEDGER_FIELD_BY_SCOPE = {"key": "client_key_name", "route": "route", "provider": "provider"}


@dataclass(frozen=True)
class BudgetInfo:
    """A budget as the request path needs it (built into the routing table)."""

    id: int
    label: str  # "global monthly", "route summary daily", ...
    scope: str
    scope_ref: str
    period: str  # monthly | daily
    amount_usd: Decimal
    hard: bool
    degrade_at_pct: int | None = None  # from here on the cheapest candidate goes first

    def period_key(self, now: datetime) -> str:
        return _period_key(self.period, now.year, now.month, now.day)

    def period_start(self, now: datetime) -> datetime:
        if self.period == "daily":
            return datetime(now.year, now.month, now.day, tzinfo=UTC)
        return datetime(now.year, now.month, 1, tzinfo=UTC)

    def period_end(self, now: datetime) -> datetime:
        return _period_end(self.period, now.year, now.month, now.day)

    def key(self, now: datetime) -> str:
        return KEY.format(id=self.id, period=self.period_key(now))

    @functools.cached_property
    def limit_units(self) -> int:
        """The amount in the units Redis counts in (asked on every request: kept)."""
        return to_units(self.amount_usd)

    def applies_to(self, key_name: str, route: str, provider: str | None = None) -> bool:
        if self.scope == "global":
            return True
        if self.scope == "key":
            return self.scope_ref == key_name
        if self.scope == "route":
            return self.scope_ref == route
        return provider is not None and self.scope_ref == provider


# Every request asks these of every budget that applies; a period has one answer (perf).
@functools.lru_cache(maxsize=64)
def _period_key(period: str, year: int, month: int, day: int) -> str:
    return f"{year:04d}-{month:02d}" if period == "monthly" else f"{year:04d}-{month:02d}-{day:02d}"


@functools.lru_cache(maxsize=64)
def _period_end(period: str, year: int, month: int, day: int) -> datetime:
    if period == "daily":
        return datetime(year, month, day, tzinfo=UTC) + timedelta(days=1)
    last = calendar.monthrange(year, month)[1]
    return datetime(year, month, last, tzinfo=UTC) + timedelta(days=1)


# What the budget scripts below share. A budget's reservations are held in its `:held`
# hash (holder -> units) and expire by its `:leases` sorted set (holder -> expiry).
HOLDS = """
-- Release the holds whose holder died without settling.
local function release_expired(key, now)
  local expired = redis.call('ZRANGEBYSCORE', key .. ':leases', '-inf', now)
  for _, id in ipairs(expired) do
    local held = tonumber(redis.call('HGET', key .. ':held', id) or '0')
    -- Lua's -0 reaches Redis as "-0", which HINCRBY rejects before Redis 7.2.
    if held > 0 then redis.call('HINCRBY', key, 'reserved', -held) end
    redis.call('HDEL', key .. ':held', id)
    redis.call('ZREM', key .. ':leases', id)
  end
end
-- Release up to `units` of one holder's hold; what was released.
local function release(key, id, units)
  local held = tonumber(redis.call('HGET', key .. ':held', id) or '0')
  local back = math.min(held, units)
  if back <= 0 then return 0 end
  redis.call('HINCRBY', key, 'reserved', -back)
  if held - back > 0 then
    redis.call('HINCRBY', key .. ':held', id, -back)
  else
    redis.call('HDEL', key .. ':held', id)
    redis.call('ZREM', key .. ':leases', id)
  end
  return back
end
local function keep(key, ttl)
  redis.call('EXPIRE', key, ttl)
  redis.call('EXPIRE', key .. ':held', ttl)
  redis.call('EXPIRE', key .. ':leases', ttl)
end
"""

# KEYS: one budget hash per budget. ARGV: request id, now, lease expiry, key TTL,
# then for each budget: limit units (-1 for a soft budget), amount units.
# Returns 0 when every hard budget fits (and reserves on all), else the 1-based
# index of the first budget that does not fit (and reserves nothing).
RESERVE = (
    HOLDS
    + """
local request, now, expiry, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
for i, key in ipairs(KEYS) do
  release_expired(key, now)
end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 + i * 2])
  local amount = tonumber(ARGV[4 + i * 2])
  if limit >= 0 then
    local spent = tonumber(redis.call('HGET', key, 'spent') or '0')
    local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
    if spent + reserved + amount > limit then return i end
  end
end
for i, key in ipairs(KEYS) do
  local amount = tonumber(ARGV[4 + i * 2])
  redis.call('HINCRBY', key, 'reserved', amount)
  redis.call('HSET', key .. ':held', request, amount)
  redis.call('ZADD', key .. ':leases', expiry, request)
  keep(key, ttl)
end
return 0
"""
)

# KEYS: the same budget hashes. ARGV: request id, actual cost units, key TTL seconds.
# The engine settles each reservation once. A lease that expired (and was
# released by a later reservation) leaves nothing to release: the actual cost
# is still added, so a long stream is charged in full.
SETTLE = (
    HOLDS
    + """
local request, actual, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for _, key in ipairs(KEYS) do
  local held = tonumber(redis.call('HGET', key .. ':held', request) or '0')
  if held > 0 then redis.call('HINCRBY', key, 'reserved', -held) end
  redis.call('HINCRBY', key, 'spent', actual)
  redis.call('HDEL', key .. ':held', request)
  redis.call('ZREM', key .. ':leases', request)
  keep(key, ttl)
end
return 0
"""
)

# A gateway process's allowance on one budget (routing.allowances): headroom reserved
# under the allowance's id, like a request's reservation, topped up to its size by each
# grant. What it holds after the grant is at most 1/`headroom` of what the budget has
# left: the amount asked for, shrunk as far as needed, and refused (nothing taken) when
# that is less than the fewest worth holding or than what it holds already.
# KEYS: the budget hash. ARGV: allowance id, now, its expiry, key TTL, limit units,
# units to hold, headroom, the fewest units worth holding, the units it holds now.
# Returns {1 granted or 0 refused, units taken}.
GRANT = (
    HOLDS
    + """
local id, now, expiry, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local limit, amount, room = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local fewest, held, key = tonumber(ARGV[8]), tonumber(ARGV[9]), KEYS[1]
release_expired(key, now)
local spent = tonumber(redis.call('HGET', key, 'spent') or '0')
local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
local total = math.min(amount, math.floor((limit - spent - reserved) / room))
if total < fewest or total < held then return {0, 0} end
local take = total - held
if take > 0 then
  redis.call('HINCRBY', key, 'reserved', take)
  redis.call('HINCRBY', key .. ':held', id, take)
end
redis.call('ZADD', key .. ':leases', expiry, id)
keep(key, ttl)
return {1, take}
"""
)

# Settle a request admitted from allowances. KEYS: the budget hashes that apply.
# ARGV: actual cost units, key TTL, then per key: the allowance id ('' for a soft budget,
# which holds nothing) and the units the request took from it (its worst case). The
# request's worst case leaves the allowance's hold (and `reserved`); its cost goes to
# `spent`. An allowance that expired meanwhile holds nothing: the cost is still added.
SETTLE_ALLOWANCE = (
    HOLDS
    + """
local actual, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local id, took = ARGV[1 + i * 2], tonumber(ARGV[2 + i * 2])
  if id ~= '' then release(key, id, took) end
  redis.call('HINCRBY', key, 'spent', actual)
  keep(key, ttl)
end
return 0
"""
)

# Hand back what an allowance did not use. KEYS: the budget hash. ARGV: allowance id,
# units. What its requests in flight took stays held until they settle.
GIVE_BACK = (
    HOLDS
    + """
return release(KEYS[1], ARGV[1], tonumber(ARGV[2]))
"""
)

RESERVE_SHA = hashlib.sha1(RESERVE.encode()).hexdigest()
SETTLE_SHA = hashlib.sha1(SETTLE.encode()).hexdigest()
GRANT_SHA = hashlib.sha1(GRANT.encode()).hexdigest()
SETTLE_ALLOWANCE_SHA = hashlib.sha1(SETTLE_ALLOWANCE.encode()).hexdigest()
GIVE_BACK_SHA = hashlib.sha1(GIVE_BACK.encode()).hexdigest()
SCRIPTS = {
    RESERVE_SHA: RESERVE,
    SETTLE_SHA: SETTLE,
    GRANT_SHA: GRANT,
    SETTLE_ALLOWANCE_SHA: SETTLE_ALLOWANCE,
    GIVE_BACK_SHA: GIVE_BACK,
}


@dataclass(frozen=True)
class Reservation:
    request_id: str
    keys: tuple[str, ...]
    budgets: tuple[BudgetInfo, ...]
    ttl_seconds: int

    @classmethod
    def of(cls, budgets: list[BudgetInfo], request_id: str, now: datetime) -> Reservation:
        """A reservation on ``budgets``, not taken yet (`reserve_args` takes it)."""
        # Keys outlive their period by a month, for reports and reconciliation.
        ttl = int((max(b.period_end(now) for b in budgets) - now).total_seconds()) + 31 * 86400
        return cls(request_id, tuple(b.key(now) for b in budgets), tuple(budgets), ttl)

    def reserve_args(self, amount: Decimal, now: datetime) -> list[Any]:
        """The EVALSHA arguments that reserve ``amount`` on every budget, or refuse."""
        units = to_units(amount)
        per_budget: list[Any] = []
        for budget in self.budgets:
            per_budget += [budget.limit_units if budget.hard else -1, units]
        stamp = now.timestamp()
        return [
            RESERVE_SHA,
            len(self.keys),
            *self.keys,
            self.request_id,
            stamp,
            stamp + LEASE_SECONDS,
            self.ttl_seconds,
            *per_budget,
        ]

    def settle_args(self, actual: Decimal) -> list[Any]:
        units = to_units(actual)
        return [SETTLE_SHA, len(self.keys), *self.keys, self.request_id, units, self.ttl_seconds]


@dataclass(frozen=True)
class AllowanceReservation(Reservation):
    """A reservation taken from this process's allowances (routing.allowances), not from
    Redis: ``taken`` is, per budget key, the allowance id ('' for a soft budget) and the
    units taken from it. Settling releases them and adds the cost, as `SETTLE` does."""

    taken: tuple[tuple[str, int], ...] = ()

    def settle_args(self, actual: Decimal) -> list[Any]:
        pairs = [value for pair in self.taken for value in pair]
        return [
            SETTLE_ALLOWANCE_SHA,
            len(self.keys),
            *self.keys,
            to_units(actual),
            self.ttl_seconds,
            *pairs,
        ]


def reserve_args(
    budgets: list[BudgetInfo], request_id: str, amount: Decimal, now: datetime
) -> tuple[Reservation, list[Any]]:
    """The reservation and the EVALSHA arguments that take it."""
    reservation = Reservation.of(budgets, request_id, now)
    return reservation, reservation.reserve_args(amount, now)


def current_spend(redis: Any, budget: BudgetInfo, now: datetime) -> tuple[Decimal, Decimal]:
    """(spent, reserved by requests in flight) in the budget's current period, as every
    gateway sees it now. The headroom the gateways' allowances hold is neither: any
    request may still use it (`reserved_split`)."""
    spent = redis.hget(budget.key(now), "spent")
    in_flight, _ = reserved_split(redis, budget, now)
    return from_units(int(spent or 0)), in_flight


# A gateway process's allowance holds its headroom under an id with this prefix; a request
# holds its reservation under its request id.
ALLOWANCE_ID_PREFIX = "a:"


def reserved_split(redis: Any, budget: BudgetInfo, now: datetime) -> tuple[Decimal, Decimal]:
    """What the budget's `reserved` is made of: (held by requests in flight, held by the
    gateways' allowances, unused or taken by requests in flight)."""
    held = redis.hgetall(f"{budget.key(now)}:held")
    by_requests = by_allowances = 0
    for holder, units in held.items():
        name = holder.decode() if isinstance(holder, bytes) else holder
        if name.startswith(ALLOWANCE_ID_PREFIX):
            by_allowances += int(units)
        else:
            by_requests += int(units)
    return from_units(by_requests), from_units(by_allowances)
