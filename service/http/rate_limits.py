"""Rate limits: requests per verified user, and requests without a valid token per address.

A gateway in front can count by address but cannot verify this service's tokens, so the
service counts per user itself (OWASP API4). Two policies, each a setting, each off at 0:

- `user`: every `/api` request of a verified user, RATE_LIMIT_USER_REQUESTS per
  RATE_LIMIT_USER_WINDOW_SECONDS;
- `address`: every `/api` request that presents no valid token (each 401), per client address
  (service.http.client_address), RATE_LIMIT_ADDRESS_REQUESTS per
  RATE_LIMIT_ADDRESS_WINDOW_SECONDS, so token guessing and anonymous floods slow down too.

The counting is the `limits` package's sliding window counter: two counters per
key (this window's and the last), the last weighted by how much of it still overlaps the
sliding window. Memory per key is constant, whatever the limit (a moving window keeps one
entry per request), and there is no burst of twice the limit at a window's edge (a fixed
window's flaw); the price is an approximation while the last window's requests still count.

Storage: RATE_LIMIT_STORAGE_URL, in this process's memory by default (each worker process then
counts on its own: N workers allow N times the budget; service.http.rate_limit_memory), or
`redis://…` (Redis or Valkey), which every instance and worker shares (limits' own scripts,
the requests of one moment in one round trip: service.http.rate_limit_redis). Every storage
call is bounded by RATE_LIMIT_STORAGE_TIMEOUT_MS; when the storage fails or is slow, requests
are let through (fail open: the database keeps its own bounds) without the RateLimit headers,
the outage is logged once and counted in /metrics, and the storage is tried again a second
later.

Addresses are counted in a fixed number of buckets (an IPv6 client counts by its /64), so the
memory the address policy holds stays bounded whatever the number of addresses.
"""

import hashlib
import hmac
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from limits import RateLimitItem, RateLimitItemPerSecond

from service.config import Settings
from service.http.client_address import IPAddress, bucket_of
from service.http.rate_limit_memory import SweptMemoryStorage
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.http.rate_limit_redis import RedisCounters

log = logging.getLogger(__name__)

# The address policy's buckets: its keys, however many addresses call.
ADDRESS_BUCKETS = 65_536
# Counter names remembered at most; past it, forgotten at once and made again.
KEPT_COUNTER_NAMES = 16_384
# After a storage failure, requests skip the limiter for this long before it is tried again.
OUTAGE_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    requests: int
    window_seconds: int

    @property
    def item(self) -> RateLimitItem:
        return RateLimitItemPerSecond(self.requests, self.window_seconds)

    @property
    def header(self) -> str:
        """RateLimit-Policy (draft-ietf-httpapi-ratelimit-headers-10), a Structured Field."""
        return f'"{self.name}";q={self.requests};w={self.window_seconds}'


class Verdict(NamedTuple):
    """What a policy says of a request: whether it may go on, and the fields to answer with.
    (A tuple: a frozen dataclass costs a microsecond more to make, on every request.)"""

    allowed: bool
    headers: dict[str, str]


class RateLimits:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._metrics = metrics
        self.user = _policy(
            "user", settings.rate_limit_user_requests, settings.rate_limit_user_window_seconds
        )
        self.address = _policy(
            "address",
            settings.rate_limit_address_requests,
            settings.rate_limit_address_window_seconds,
        )
        self._items = {
            policy.name: policy.item for policy in (self.user, self.address) if policy is not None
        }
        # Each key's counter name, limits' `key_for`, remembered (it costs 3 µs to make).
        self._counters: dict[tuple[str, str], str] = {}
        self._memory = SweptMemoryStorage()
        self._redis: RedisCounters | None = None
        if not settings.rate_limit_storage_url.startswith("memory://"):
            # Imported only for Redis: redis-py 8 imports OpenTelemetry's SDK (for metrics of
            # its own) when it is installed, which a service without tracing should not load.
            from service.http.rate_limit_redis import redis_counters  # noqa: PLC0415

            self._redis = redis_counters(
                settings.rate_limit_storage_url,
                settings.rate_limit_storage_timeout_ms / 1000,
                settings.rate_limit_key_prefix,
            )
        self._bucket_key = hmac.digest(
            settings.cursor_key(), b"rate limit address buckets", "sha256"
        )
        self._skip_until = 0.0  # while the storage is out: monotonic time of the next try
        self._out = False

    async def close(self) -> None:
        await self._memory.close()
        if self._redis is not None:
            await self._redis.close()

    async def count_user(self, user_id: str) -> Verdict | None:
        """Count a verified user's request; None when the policy is off or cannot say."""
        if self.user is None:
            return None
        return await self._count(self.user, f"user/{user_id}")

    async def count_address(self, address: IPAddress | None) -> Verdict | None:
        """Count a request that presented no valid token, against its address's bucket."""
        if self.address is None:
            return None
        return await self._count(self.address, self.address_key(address))

    def address_key(self, address: IPAddress | None) -> str:
        """The address policy's key: one of ADDRESS_BUCKETS, whatever the number of addresses
        (an IPv6 client by its /64). Two addresses may share a bucket; the hash is keyed (by
        a key every instance derives from the same secret), so no one can pick addresses
        that land in someone else's."""
        digest = hashlib.blake2b(
            bucket_of(address).encode(), key=self._bucket_key, digest_size=4
        ).digest()
        return f"address/{int.from_bytes(digest, 'big') % ADDRESS_BUCKETS}"

    async def _count(self, policy: Policy, key: str) -> Verdict | None:
        if self._out and time.monotonic() < self._skip_until:
            return None  # the storage failed a moment ago: let through without asking
        item = self._items[policy.name]
        counter = self._counters.get((policy.name, key))
        if counter is None:
            if len(self._counters) >= KEPT_COUNTER_NAMES:
                self._counters.clear()
            counter = self._counters[policy.name, key] = item.key_for(key)
        try:
            if self._redis is None:  # this process's memory: nothing to wait for
                allowed, window = self._memory.count(counter, item.amount, policy.window_seconds)
            else:  # one round trip, shared with the requests asking with it, bounded by it
                allowed, window = await self._redis.hit(counter, item.amount, policy.window_seconds)
        # Any storage failure (a refused connection, a timeout, a script error) lets it through.
        except Exception as error:
            self._storage_failed(error)
            return None
        if self._out:
            self._out = False
            log.warning("rate limits are on again: the storage answers")
        remaining, wait = _quota(policy, window)
        headers = {
            "RateLimit-Policy": policy.header,
            "RateLimit": f'"{policy.name}";r={remaining};t={_whole_seconds(wait)}',
        }
        if not allowed:
            # The same wait: the first moment the sliding window lets a request through again.
            headers["Retry-After"] = str(max(1, _whole_seconds(wait)))
            self._metrics.rate_limited(policy.name)
        return Verdict(allowed=allowed, headers=headers)

    def _storage_failed(self, error: Exception) -> None:
        self._metrics.rate_limit_storage_error()
        self._skip_until = time.monotonic() + OUTAGE_RETRY_SECONDS
        if not self._out:
            self._out = True
            log.warning(
                "rate limits are off: the storage (RATE_LIMIT_STORAGE_URL) failed: %s; "
                "requests are let through until it answers again",
                type(error).__name__ if isinstance(error, TimeoutError) else error,
            )


def _quota(policy: Policy, window: tuple[int, float, int, float]) -> tuple[int, float]:
    """What is left (`r`), and the seconds until more is (`t`; draft-10 defines `t` so for
    sliding windows: "until additional quota is made available"), from the two counters.

    `limits` counts a request when `floor(w) < q`, where `w`, the weighted count, is the last
    window's count weighted by how much of it the sliding window still covers, plus this
    window's: w = last * last_ttl / window + this. So `r = q - floor(w)`, and more is
    available once `w` drops below `floor(w)` (below `q` while nothing is). Until this window
    ends (`this_ttl - window` from now; `last_ttl` is the same moment) `w` falls as the last
    window's weight does; after, this window's count becomes the last one's and falls from
    there, over a whole window. Later requests only add to `w`, so the wait computed now is
    never too early: Retry-After never sends a client back before it can succeed.
    (limits' own WindowStats.reset_time is when the first counter moves, which can be before
    any request is allowed.)
    """
    last, last_ttl, this, this_ttl = window
    span = policy.window_seconds
    weighted = last * last_ttl / span + this
    remaining = max(0, policy.requests - math.floor(weighted))
    target = min(math.floor(weighted), policy.requests)  # w must get below this
    if target <= 0:
        return remaining, 0.0  # the whole quota is there
    if this < target:  # within this window, as the last one's weight falls
        return remaining, last_ttl - (target - this) * span / last
    until_shift = max(0.0, this_ttl - span)
    return remaining, until_shift + span * (this - target) / this


def _whole_seconds(wait: float) -> int:
    """Seconds as a client counts them: the first whole second *past* `wait` (w must fall
    strictly below its mark), so a client that waits that long is not early."""
    return 0 if wait <= 0 else math.floor(wait) + 1


def _policy(name: str, requests: int, window_seconds: int) -> Policy | None:
    return Policy(name, requests, window_seconds) if requests > 0 else None
