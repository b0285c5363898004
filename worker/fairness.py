"""Sharing the fleet between tenants: how a claim is split, and the per-tenant fire-rate limit.

While the fleet keeps up, oldest-first claiming (``schedule_claim_due``) serves every tenant as soon as its
schedules are due. Under a backlog (the last claim was full) a worker claims with ``schedule_claim_due_fair``
every FAIR_EVERY_SEC, which gives a share of the batch to recently due rows, every tenant's first turn before
anyone's second. This module holds those figures and the optional per-tenant rate (TENANT_FIRE_RATE). Pure:
the caller passes the time in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Besides the `limit` oldest due rows, a claim looks at this share of `limit` most recently due rows: enough
# for a quiet tenant's schedule behind another's burst to get into the next batch, little enough that the
# extra candidates (locked, then released unchanged) cost next to nothing.
FRESH_SHARE = 0.1


# Under a backlog, a worker claims fairly (schedule_claim_due_fair) at most this often: that statement costs about
# twice the plain one, and a quiet tenant's schedule then waits at most this long behind another's burst.
FAIR_EVERY_SEC = 0.05


def fresh_candidates(limit: int) -> int:
    return max(1, int(limit * FRESH_SHARE)) if limit > 1 else 0


@dataclass(slots=True)
class FireRates:
    """At most ``rate`` fires per second per tenant on average, bursts of one second's worth.

    Fires are counted after the claim that made them, so one claim may overdraw a tenant's bucket; the tenant
    is then left out of claims until the bucket is positive again, which keeps the average. Buckets that have
    refilled are forgotten, so memory is bounded by the tenants firing right now.
    """

    rate: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # tenant -> (tokens, at)

    def spend(self, fires: Counter[str], now: float) -> None:
        if self.rate <= 0:
            return
        for tenant, count in fires.items():
            self._buckets[tenant] = (self._tokens(tenant, now) - count, now)

    def throttled(self, now: float) -> list[str]:
        """Tenants over their rate: leave them out of the next claim."""
        if not self._buckets:
            return []
        out = []
        for tenant in list(self._buckets):
            tokens = self._tokens(tenant, now)
            if tokens >= self.rate:
                del self._buckets[tenant]
            elif tokens < 0:
                out.append(tenant)
        return out

    def _tokens(self, tenant: str, now: float) -> float:
        tokens, at = self._buckets.get(tenant, (self.rate, now))
        return min(self.rate, tokens + (now - at) * self.rate)
