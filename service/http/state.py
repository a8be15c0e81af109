"""What the app holds for its lifetime: one typed object, built by `create_app`."""

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from service.auth.tokens import TokenVerifier
from service.config import Settings
from service.data.access import Database
from service.http.cursors import CursorCodec
from service.http.rate_limits import RateLimits
from service.metrics import Metrics
from service.tracing import Tracing

# Anyone can call /readyz; a flood of calls costs one database round trip per second, not
# one each, so it cannot slow the users' requests down.
READINESS_SECONDS = 1.0


@dataclass(slots=True)
class Readiness:
    """The last readiness check's outcome; concurrent probes share one check."""

    checked_at: float = -float("inf")
    ready: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def fresh(self) -> bool:
        return time.monotonic() - self.checked_at < READINESS_SECONDS


@dataclass(frozen=True, slots=True)
class State:
    settings: Settings
    database: Database
    verifier: TokenVerifier
    cursors: CursorCodec
    metrics: Metrics
    # The query parameters the contract declares, by operationId: any other is a 400.
    query_parameters: Mapping[str, frozenset[str]]
    # The operations whose contract declares a request body; any other must get none.
    takes_body: frozenset[str]
    rate_limits: RateLimits
    # This process's tracing (service.tracing), or None: off.
    tracing: Tracing | None = None
    readiness: Readiness = field(default_factory=Readiness)
