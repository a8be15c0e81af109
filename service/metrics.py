"""Prometheus metrics, off unless METRICS_TOKEN is set (then `GET /metrics` with that token,
served by service.http.operations).

What is counted: requests by route template, method and status, and their latency; database
connections in use and requests waiting for one; database errors by kind; JWKS fetches and
failures; requests refused by each rate limit policy, and rate limit storage errors; what each
resource created. With several worker processes (`serve --workers N`),
every worker writes its values to files in PROMETHEUS_MULTIPROC_DIR (which `serve` creates)
and a scrape, answered by any worker, adds them all up (prometheus-client's multiprocess mode).

Disabled, nothing is recorded and no request pays for it: `Metrics.off()` does nothing.
"""

import os
from typing import Any

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Request latency buckets, in seconds: the API answers in milliseconds, and gives up at the
# request's database budget (4 s by default).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The service's metrics, or (`Metrics.off()`) a stand-in that records nothing."""

    def __init__(self, token: bytes | None) -> None:
        self.token = token
        self.enabled = token is not None
        if not self.enabled:
            return
        # Imported only when metrics are on: the module decides at import whether values live
        # in memory or, with PROMETHEUS_MULTIPROC_DIR set, in files shared across workers.
        from prometheus_client import (  # noqa: PLC0415
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
        )

        # A registry per app, so that several apps in one process (the tests) do not collide.
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "tasks_api_requests",
            "Requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "tasks_api_request_duration_seconds",
            "Time from a request's arrival to its answer, by route template and method.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.pool = Gauge(
            "tasks_api_db_pool_connections",
            "Database connections checked out (in_use), and requests waiting for one.",
            ["state"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.database_errors = Counter(
            "tasks_api_db_errors",
            "Requests answered 503 or 500 because of the database, by kind.",
            ["kind"],
            registry=registry,
        )
        self.jwks = Counter(
            "tasks_api_jwks_fetches",
            "JWKS fetches, by outcome (ok or failed).",
            ["outcome"],
            registry=registry,
        )
        self.refused = Counter(
            "tasks_api_rate_limited",
            "Requests refused with 429, by rate limit policy (user or address).",
            ["policy"],
            registry=registry,
        )
        self.limiter_errors = Counter(
            "tasks_api_rate_limit_storage_errors",
            "Rate limit storage calls that failed or timed out (the request was let through).",
            registry=registry,
        )
        # Each resource's creations, registered on first use: tasks_api_<resource>_created.
        self._created: dict[str, Any] = {}
        self._in_use = self.pool.labels("in_use")
        self._waiting = self.pool.labels("waiting")

    @classmethod
    def off(cls) -> "Metrics":
        return cls(None)

    # --- recording (each a no-op when disabled) ----------------------------------------------

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        if self.enabled:
            self.requests.labels(route, method, str(status)).inc()
            self.latency.labels(route, method).observe(seconds)

    def waiting_for_connection(self, change: int) -> None:
        if self.enabled:
            self._waiting.inc(change)

    def connection_in_use(self, change: int) -> None:
        if self.enabled:
            self._in_use.inc(change)

    def database_error(self, kind: str) -> None:
        if self.enabled:
            self.database_errors.labels(kind).inc()

    def jwks_fetch(self, ok: bool) -> None:
        if self.enabled:
            self.jwks.labels("ok" if ok else "failed").inc()

    def rate_limited(self, policy: str) -> None:
        if self.enabled:
            self.refused.labels(policy).inc()

    def rate_limit_storage_error(self) -> None:
        if self.enabled:
            self.limiter_errors.inc()

    def created(self, resource: str) -> None:
        """One `resource` (a resource package's name: "tasks") was created."""
        if not self.enabled:
            return
        counter = self._created.get(resource)
        if counter is None:
            from prometheus_client import Counter  # noqa: PLC0415

            counter = Counter(
                f"tasks_api_{resource}_created",
                f"{resource.capitalize()} created.",
                registry=self.registry,
            )
            self._created[resource] = counter
        counter.inc()

    # --- scraping --------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import (  # noqa: PLC0415
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            generate_latest,
        )
        from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

        registry: Any = self.registry
        if os.environ.get(MULTIPROCESS_DIR):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
