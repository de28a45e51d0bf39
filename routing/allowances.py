"""Allowances: slices of the shared limits that one gateway process admits from in memory.

A request with the production features on is admitted against its key's rate limits
and reserves its worst-case cost on every hard budget that applies, atomically in
Redis (`routing.limits`, `billing.budgets`). Done per request, that is a round trip
before the provider is even called. An allowance takes a slice of the same shared
state ahead of time, in one script call, and lets this process admit from it without
a round trip (perf, issue 9; the design and its measurements: docs/allowances.md):

- a key's allowance holds ``n`` requests of its requests bucket, ``n`` times the mean
  estimate of its tokens bucket, and a few of its concurrency slots (sorted-set
  members scored by the allowance's expiry, renewed while it lives);
- a budget's allowance holds headroom, reserved in Redis under the allowance's id
  exactly as a request's reservation is, so a dead process's hold expires as theirs do.

What a slice takes is gone from Redis until it is used or handed back, so the limits
hold across processes: a process can only be stricter than the exact check, never
looser. A slice is at most a ``headroom``-th (1/20) of what each limit has left, and at
least ``min_requests`` (8) requests' worth, so allowances exist only while a limit has
room for 160 requests or more, and shrink as it nears. Below that, and whenever an
allowance cannot cover a request, the request is admitted exactly, in its own round
trip, as before. So a small limit (``rpm: 60``, a $1 budget) is enforced to the request.

An allowance is renewed in the background when half of it is used or half of its life
(``seconds``, 1 s) has passed; when it lapses, what it did not use is handed back.
Settling a request is unchanged in cost (it rides in the usage entry's pipeline): its
tokens are corrected and its budget cost added in Redis directly. The slice size follows
this process's own request rate (a lapse's worth, within bounds).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing import budgets as budget_scripts
from billing.budgets import ALLOWANCE_ID_PREFIX, AllowanceReservation, Reservation, to_units
from routing import limits
from routing.table import KeyInfo

log = logging.getLogger(__name__)

# A slice's members in a key's concurrency set live this many allowance lifetimes
# unless renewed: a dead process's slots are free again after three seconds.
SLOT_LIVES = 3
# An allowance is not renewed past this age: a fresh one, under a new id, takes its place.
# So what an unsettled request left in a budget's hold expires with the old id's lease
# (billing.budgets.LEASE_SECONDS), even under traffic that never lets an allowance lapse.
ROTATE_SECONDS = 300.0


@dataclass(frozen=True)
class AllowanceSettings:
    seconds: float = 1.0  # an allowance's life; 0 turns allowances off
    headroom: int = 20  # a slice is granted while the limit has this many slices left
    min_requests: int = 8
    max_requests: int = 2048
    max_slots: int = 64
    ticket_seconds: float = 120.0  # a request that never ends stops holding a slot

    @property
    def enabled(self) -> bool:
        return self.seconds > 0


@dataclass
class _Allowance:
    id: str
    expires: float = 0.0  # monotonic; nothing is admitted from it after this
    born: float = field(default_factory=time.monotonic)
    granted_at: float = 0.0
    renewing: asyncio.Task[None] | None = None
    refused_until: float = 0.0  # no grant is asked for before this
    # This process's demand: admissions since the last grant, and since when.
    seen: int = 0
    since: float = field(default_factory=time.monotonic)

    def slice(self, settings: AllowanceSettings, now: float) -> int:
        """How many requests the next grant takes: about a lifetime of this demand."""
        rate = self.seen / max(now - self.since, 0.05)
        return max(
            settings.min_requests, min(settings.max_requests, math.ceil(rate * settings.seconds))
        )

    def wants_renewal(
        self, size: int, left: float, now: float, settings: AllowanceSettings
    ) -> bool:
        if self.renewing is not None or now < self.refused_until:
            return False
        if now - self.born > ROTATE_SECONDS:
            return False  # let it lapse: the next request starts a fresh one
        return left < size / 2 or now >= self.granted_at + settings.seconds / 2


@dataclass
class KeyAllowance(_Allowance):
    key_id: int = 0
    limits: tuple[int, int, int, int] = (0, 0, 0, 0)  # rpm, burst, tpm, max concurrent
    requests: int = 0
    tokens: int = 0
    size: int = 0  # requests per grant
    mean_tokens: float = 0.0
    slots: int = 0  # members this allowance holds in the key's concurrency set
    tickets: dict[str, float] = field(default_factory=dict)  # request id -> gives up at
    view: tuple[int, int, int, int] = (0, 0, 0, 0)  # Redis's answer to the last grant

    def settle(self, request_id: str, estimated: int, used: int) -> bool:
        """End a request admitted from this allowance: free its slot and correct its tokens
        in memory (handed back with the rest). False once it has lapsed: its unused part
        went back to Redis already, so the correction must go there too."""
        self.tickets.pop(request_id, None)
        if time.monotonic() >= self.expires:
            return False
        if self.limits[2]:
            self.tokens += estimated - used
        return True

    def in_flight(self, now: float) -> int:
        stale = [request for request, until in self.tickets.items() if until < now]
        for request in stale:
            del self.tickets[request]
        return len(self.tickets)


@dataclass
class BudgetAllowance(_Allowance):
    key: str = ""
    limit: int = 0  # units
    units: int = 0
    size: int = 0  # units per grant


class Allowances:
    """This process's allowances, for one event loop (see `routing.client.current_engine`)."""

    def __init__(self, evalsha: Any, settings: AllowanceSettings | None = None) -> None:
        self.evalsha = evalsha
        self.settings = settings or AllowanceSettings()
        self._keys: dict[tuple[int, tuple[int, int, int, int]], KeyAllowance] = {}
        self._budgets: dict[tuple[str, int], BudgetAllowance] = {}
        self._janitor: asyncio.Task[None] | None = None
        self._generation = 0
        self._count = 0
        # Ids unique to this instance: there is one per event loop, and processes may fork.
        self._token = secrets.token_hex(6)

    # -- a key's rate limits -------------------------------------------------------

    def admit_key(self, key: KeyInfo, request_id: str, tokens: int) -> limits.Admission | None:
        """The request admitted from the key's allowance, or None: admit it exactly.

        A key with no limits needs no allowance: its Admission is empty."""
        if not (key.rpm or key.tpm or key.max_concurrent):
            return limits.Admission()
        burst = key.burst if key.rpm else 0
        if not self.settings.enabled or self._too_small(key.rpm + burst, key.max_concurrent):
            return None
        shape = (key.rpm, burst, key.tpm, key.max_concurrent)
        now = time.monotonic()
        allowance = self._keys.get((key.id, shape))
        if allowance is None:
            allowance = self._keys[(key.id, shape)] = KeyAllowance(
                id=self._new_id(f"k{key.id}"),
                key_id=key.id,
                limits=shape,
                mean_tokens=float(tokens),
            )
        allowance.seen += 1
        allowance.mean_tokens += (tokens - allowance.mean_tokens) / 8
        covered = (
            now < allowance.expires
            and (not key.rpm or allowance.requests >= 1)
            and (not key.tpm or allowance.tokens >= tokens)
            and (not key.max_concurrent or allowance.in_flight(now) < allowance.slots)
        )
        if not covered:
            left = 0.0
        elif key.rpm:
            left = allowance.requests
        elif key.tpm:
            left = allowance.tokens / max(allowance.mean_tokens, 1)
        else:  # concurrency only: renewed for its life, or when its slots are all busy
            left = math.inf
        if allowance.wants_renewal(allowance.size, left, now, self.settings):
            self._spawn(allowance, functools.partial(self._grant_key, allowance))
        if not covered:
            return None
        allowance.requests -= 1 if key.rpm else 0
        allowance.tokens -= tokens if key.tpm else 0
        tokens_key, slots_key = limits.key_buckets(key)[1:]
        if key.max_concurrent:
            allowance.tickets[request_id] = now + self.settings.ticket_seconds
        settle = functools.partial(allowance.settle, request_id, tokens)
        lease = limits.Lease(request_id, tokens_key, slots_key, key.tpm, tokens, settle)
        left_requests, requests_reset, left_tokens, tokens_reset = allowance.view
        verdict = limits.Verdict(
            refused="",
            wait_seconds=0.0,
            requests_limit=key.rpm + burst,
            requests_remaining=max(0, left_requests + allowance.requests),
            requests_reset_seconds=requests_reset / 1000,
            tokens_limit=key.tpm,
            tokens_remaining=max(0, left_tokens + allowance.tokens),
            tokens_reset_seconds=tokens_reset / 1000,
        )
        return limits.Admission(lease, verdict)

    async def _grant_key(self, allowance: KeyAllowance) -> None:
        settings, now = self.settings, time.monotonic()
        rpm, _, tpm, max_concurrent = allowance.limits
        size = allowance.slice(settings, now)
        slots = 0
        if max_concurrent:
            slots = max(2, min(settings.max_slots, 2 * allowance.in_flight(now) + 2))
            slots = max(slots, allowance.slots)  # members are only ever added while it lives
        reply = await self._key_grant(
            allowance,
            requests=size if rpm else 0,
            tokens=math.ceil(size * allowance.mean_tokens) if tpm else 0,
            slots=slots,
        )
        now = time.monotonic()
        if not int(reply[0]):
            allowance.refused_until = now + settings.seconds
            return
        allowance.requests += int(reply[5])
        allowance.tokens += int(reply[6])
        allowance.slots = slots
        allowance.size = size
        allowance.view = (int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]))
        allowance.granted_at, allowance.expires = now, now + settings.seconds
        allowance.seen, allowance.since = 0, now

    async def _key_grant(
        self, allowance: KeyAllowance, requests: int, tokens: int, slots: int
    ) -> list[Any]:
        """One GRANT for ``allowance``: top it up to ``requests`` and ``tokens`` (0: ask for
        none) and hold ``slots`` members, their expiry renewed."""
        settings = self.settings
        rpm, burst, tpm, max_concurrent = allowance.limits
        return list(
            await self.evalsha(
                limits.GRANT_SHA,
                3,
                *limits.key_buckets_of(allowance.key_id),
                rpm,
                burst,
                tpm,
                max_concurrent,
                requests,
                tokens,
                slots,
                allowance.slots,
                settings.headroom,
                allowance.id,
                int(SLOT_LIVES * settings.seconds * 1000),
                int(settings.ticket_seconds * 1000),
                math.ceil(allowance.mean_tokens * settings.min_requests) if tokens else 0,
                settings.min_requests if requests else 0,
                # What it holds now: the grant tops it up to one slice, never more.
                max(0, allowance.requests),
                allowance.tokens,
            )
        )

    # -- budgets -------------------------------------------------------------------

    def reserve(self, planned: Reservation, worst: Decimal) -> AllowanceReservation | None:
        """``planned``'s reservation taken from this process's budget allowances, or None:
        reserve it exactly. Soft budgets only count: they need no allowance."""
        if not self.settings.enabled:
            return None
        units = to_units(worst)
        now = time.monotonic()
        found: list[BudgetAllowance | None] = []
        covered = True
        for budget, key in zip(planned.budgets, planned.keys, strict=True):
            if not budget.hard:
                found.append(None)
                continue
            limit = budget.limit_units
            if limit < self.settings.headroom * self.settings.min_requests * max(1, units):
                return None  # too small a budget to hold a slice of: reserve exactly
            allowance = self._budgets.get((key, limit))
            if allowance is None:
                allowance = self._budgets[(key, limit)] = BudgetAllowance(
                    id=self._new_id(f"b{budget.id}"), key=key, limit=limit
                )
            allowance.seen += 1
            enough = now < allowance.expires and allowance.units >= units
            left = allowance.units / max(units, 1) if enough else 0
            if allowance.wants_renewal(allowance.size, left, now, self.settings):
                grant = functools.partial(self._grant_budget, allowance, units, planned.ttl_seconds)
                self._spawn(allowance, grant)
            covered = covered and enough
            found.append(allowance)
        if not covered:
            return None
        taken = []
        for allowance in found:
            if allowance is None:
                taken.append(("", 0))
            else:
                allowance.units -= units
                taken.append((allowance.id, units))
        return AllowanceReservation(
            planned.request_id, planned.keys, planned.budgets, planned.ttl_seconds, tuple(taken)
        )

    async def _grant_budget(self, allowance: BudgetAllowance, units: int, ttl: int) -> None:
        settings, now = self.settings, time.monotonic()
        size = allowance.slice(settings, now)
        amount = max(1, units) * size
        wall = time.time()
        granted, taken = await self.evalsha(
            budget_scripts.GRANT_SHA,
            1,
            allowance.key,
            allowance.id,
            wall,
            wall + budget_scripts.LEASE_SECONDS,
            ttl,
            allowance.limit,
            amount,
            settings.headroom,
            max(1, units) * settings.min_requests,
            max(0, allowance.units),  # topped up to one slice: never more is held
        )
        now = time.monotonic()
        if not int(granted):
            allowance.refused_until = now + settings.seconds
            return
        allowance.units += int(taken)
        allowance.size = size
        allowance.granted_at, allowance.expires = now, now + settings.seconds
        allowance.seen, allowance.since = 0, now

    # -- lapse, hand back ------------------------------------------------------------

    async def _tidy(self) -> None:
        """Every half-life: hand back what lapsed allowances did not use; keep the slots of
        requests still in flight."""
        generation = self._generation
        while (self._keys or self._budgets) and generation == self._generation:
            await asyncio.sleep(self.settings.seconds / 2)
            if generation != self._generation:
                return
            try:
                await self.hand_back(lapsed_only=True)
            except Exception:  # Redis away: the slices expire on their own
                log.warning("could not hand back lapsed allowances", exc_info=True)

    async def hand_back(self, lapsed_only: bool = False) -> None:
        """Give Redis back what the allowances hold and did not use (all of them, at
        shutdown; with ``lapsed_only``, those past their life)."""
        now = time.monotonic()
        for entry, allowance in list(self._keys.items()):
            if lapsed_only and (now < allowance.expires or allowance.renewing is not None):
                continue
            if allowance.in_flight(now) and lapsed_only:
                # Its requests in flight keep their slots: renew the members' expiry only.
                if allowance.requests or allowance.tokens:
                    await self._give_back_key(allowance, slots=0)
                await self._key_grant(allowance, requests=0, tokens=0, slots=allowance.slots)
                continue
            holds = allowance.requests or allowance.tokens or allowance.slots
            if lapsed_only and now < allowance.refused_until and not holds:
                continue  # nothing held; kept so that it is not asked for again at once
            # Out of the table before the round trip: a request meanwhile starts a new one,
            # and no grant can land on this one.
            if self._keys.get(entry) is allowance:
                del self._keys[entry]
            await self._give_back_key(allowance, slots=allowance.slots)
        for spot, budget in list(self._budgets.items()):
            if lapsed_only and (now < budget.expires or budget.renewing is not None):
                continue
            if lapsed_only and now < budget.refused_until and budget.units <= 0:
                continue
            if self._budgets.get(spot) is budget:
                del self._budgets[spot]
            if budget.units > 0:
                units, budget.units = budget.units, 0
                await self.evalsha(budget_scripts.GIVE_BACK_SHA, 1, budget.key, budget.id, units)

    async def _give_back_key(self, allowance: KeyAllowance, slots: int) -> None:
        rpm, burst, tpm, _ = allowance.limits
        requests, tokens = allowance.requests, allowance.tokens
        allowance.requests = allowance.tokens = 0
        allowance.expires = 0.0
        await self.evalsha(
            limits.GIVE_BACK_SHA,
            3,
            *limits.key_buckets_of(allowance.key_id),
            rpm,
            burst,
            tpm,
            max(0, requests),
            tokens,  # below 0 when its requests used more than they were thought to
            allowance.id,
            slots,
        )
        allowance.slots -= slots

    def _renewals(self) -> list[asyncio.Task[None]]:
        return [a.renewing for a in [*self._keys.values(), *self._budgets.values()] if a.renewing]

    async def granted(self) -> None:
        """Wait for the grants under way."""
        await asyncio.gather(*self._renewals(), return_exceptions=True)

    async def close(self) -> None:
        """Stop renewing and hand everything back (the server's shutdown)."""
        self._generation += 1  # no grant starts from now on
        tasks = self._renewals()
        if tasks:
            # A grant under way may have taken its slice already: wait for its answer, so
            # that what it took is handed back too.
            _, late = await asyncio.wait(tasks, timeout=2.0)
            for task in late:
                task.cancel()
        for allowance in [*self._keys.values(), *self._budgets.values()]:
            allowance.renewing = None
        try:
            await self.hand_back()
        except Exception:
            log.warning("could not hand back the allowances at shutdown", exc_info=True)

    def forget(self) -> None:
        """Drop every allowance without handing anything back (Redis was reset)."""
        self._generation += 1
        self._keys, self._budgets = {}, {}
        self._janitor = None

    # -- helpers -------------------------------------------------------------------

    def _too_small(self, requests: int, slots: int) -> bool:
        """A limit that could never hold a slice: asking for one would only cost a trip."""
        room, fewest = self.settings.headroom, self.settings.min_requests
        return (0 < requests < room * fewest) or (0 < slots < room * 2)

    def _new_id(self, what: str) -> str:
        self._count += 1
        return f"{ALLOWANCE_ID_PREFIX}{self._token}:{what}:{self._count}"

    def _spawn(self, allowance: _Allowance, grant: Callable[[], Awaitable[None]]) -> None:
        """Run ``grant()`` in the background as ``allowance``'s one renewal."""
        generation = self._generation

        async def run() -> None:
            try:
                if generation == self._generation:  # else Redis was reset: ask for nothing
                    await grant()
            except Exception:  # the exact path admits meanwhile
                log.warning("an allowance grant failed", exc_info=True)
                allowance.refused_until = time.monotonic() + self.settings.seconds
            finally:
                allowance.renewing = None

        loop = asyncio.get_running_loop()
        allowance.renewing = loop.create_task(run())
        if self._janitor is None or self._janitor.done():
            self._janitor = loop.create_task(self._tidy())
