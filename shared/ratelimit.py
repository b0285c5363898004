"""Request rate limiting: token buckets in bounded memory, pure (the caller passes the time in).

Every key a client can vary costs memory, so the table is bounded twice: a bucket that has been idle long enough to
refill completely is the same as no bucket and is dropped, and beyond ``max_keys`` the least recently used bucket
is dropped too (under a flood of keys that may forgive some spent tokens, never more than ``burst`` per key).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBuckets:
    """``rate`` requests per second per key on average, bursts of up to ``burst``; at most ``max_keys`` buckets."""

    rate: float
    burst: float
    max_keys: int = 100_000
    # key -> (tokens, at), least recently used first
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.max_keys < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_keys >= 1")

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``: 0 when allowed, else the seconds until a token is available."""
        return self.take_all((key,), now)

    def take_all(self, keys: Iterable[str], now: float, create: Iterable[bool] | None = None) -> float:
        """Spend one token of every key, or none when one of them is empty (then: seconds until all have one).

        ``create`` (parallel to ``keys``): False for a key whose bucket is consulted only if it exists, so that
        names a client can make up (any tenant, for a token that grants ``*``) never create buckets.
        """
        keys = list(keys)
        creates = list(create) if create is not None else [True] * len(keys)
        self._expire(now)
        levels: list[tuple[str, float]] = []
        wait = 0.0
        for key, may_create in zip(keys, creates, strict=True):
            stored = self._buckets.get(key)
            if stored is None and not may_create:
                continue
            tokens, at = stored if stored is not None else (self.burst, now)
            tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
            levels.append((key, tokens))
            if tokens < 1:
                wait = max(wait, (1 - tokens) / self.rate)
        for key, tokens in levels:
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
            self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def _expire(self, now: float) -> None:
        """Drop buckets, least recently used first, that have refilled completely since their last use."""
        while self._buckets:
            key, (tokens, at) = next(iter(self._buckets.items()))
            if tokens + (now - at) * self.rate < self.burst:
                break
            del self._buckets[key]
