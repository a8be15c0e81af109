"""The application factory: the one place that knows every layer and every resource."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service.auth.tokens import TokenVerifier
from service.config import Settings, get_settings
from service.data.access import Database
from service.http import docs, operations
from service.http.api import api_router
from service.http.contract import (
    declared_query_parameters,
    load_contract,
    operations_with_a_body,
)
from service.http.cors import ProblemCORSMiddleware
from service.http.cursors import CursorCodec
from service.http.envelope import RequestEnvelope
from service.http.handlers import EXCEPTION_HANDLERS, AnswerUnhandledErrors
from service.http.rate_limits import RateLimits
from service.http.state import State
from service.metrics import Metrics
from service.tasks import routes as tasks
from service.tracing import start_tracing


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; refuses (ConfigError) to build one without a strong secret."""
    settings = settings or get_settings()
    contract = load_contract()
    # Built here, not in the lifespan, so a bad setting fails before a port is bound. None of
    # it does I/O: the pool connects on first use.
    metrics = Metrics(settings.metrics_key())
    # Each worker process runs this, so each has a tracer provider (and export thread) of its
    # own; None when tracing is off, and then nothing of the SDK is imported.
    tracing = start_tracing(settings, contract["info"]["version"])
    state = State(
        settings=settings,
        database=Database.from_settings(
            settings, metrics, None if tracing is None else tracing.recorder
        ),
        verifier=TokenVerifier(settings, metrics, None if tracing is None else tracing.tracer),
        cursors=CursorCodec(settings.cursor_key()),
        metrics=metrics,
        query_parameters=declared_query_parameters(contract),
        takes_body=operations_with_a_body(contract),
        rate_limits=RateLimits(settings, metrics),
        tracing=tracing,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.database.open()
        yield
        await state.database.close()
        await state.rate_limits.close()
        if tracing is not None:
            tracing.shutdown()  # exports what is still queued

    app = FastAPI(
        title=contract["info"]["title"],
        version=contract["info"]["version"],
        docs_url=None,  # service.http.docs serves /docs itself, with no third-party origin
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
        # /api/tasks/ is not a route: answer 404, not a redirect to a route.
        redirect_slashes=False,
        exception_handlers=EXCEPTION_HANDLERS,
        # FastAPI's own OpenTelemetry support stays off, whatever the environment says: the
        # envelope makes the one server span (service.http.tracing), without the query string
        # FastAPI's records, and FastAPI's check for a provider costs every request.
        telemetry={
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        },
    )

    def openapi() -> dict[str, Any]:
        return contract

    # /openapi.json and /docs show the hand-written contract, the source of truth.
    app.openapi = openapi  # type: ignore[method-assign]
    # Added innermost first: the envelope wraps everything, so every response, errors
    # included, carries the request id, the security headers and (for allowed origins) CORS.
    app.add_middleware(AnswerUnhandledErrors)
    if settings.cors_origins:
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=settings.cors_origins,
            # Bearer tokens travel in a header, never in cookies: no credentialed requests.
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Request-ID",
                "If-Match",
                "If-None-Match",
                "Idempotency-Key",
            ],
            expose_headers=[
                "ETag",
                "Location",
                "Idempotent-Replayed",
                "RateLimit",
                "RateLimit-Policy",
                "Retry-After",
                "WWW-Authenticate",
                "X-Request-ID",
            ],
            max_age=600,
        )
    app.add_middleware(RequestEnvelope, state=state)

    # Every resource goes under /api, whose router carries the guard (service.http.api).
    api = api_router()
    api.include_router(tasks.router)
    app.include_router(api)
    app.include_router(operations.router)
    app.include_router(docs.router)
    if metrics.enabled:
        app.include_router(operations.metrics_router(metrics))
    return app


def settle_garbage_collector() -> None:
    """Take what start-up built out of the garbage collector's sight, and collect less often.

    Requests free almost everything by reference counting; the cyclic collector only adds
    pauses, and its full collections walk every object the app holds (modules, the contract,
    the tables' metadata). Those pauses were most of the service's p99 latency under load
    (docs/PERFORMANCE.md): freezing start-up's objects and raising the first threshold took
    p99 at 32 connections from about 4x to about 1.3x the median. Process-wide, so `serve`
    does it, once per worker, and an app a test builds leaves its process alone.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def create_served_app(settings: Settings | None = None) -> FastAPI:
    """The app `tasks-api serve` runs in each worker process, with the process tuned for it."""
    app = create_app(settings)
    settle_garbage_collector()
    return app
