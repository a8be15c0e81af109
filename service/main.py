"""The application factory."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import docs
from service.auth import TokenVerifier
from service.config import Settings, get_settings
from service.contract import load_contract
from service.db import Database
from service.errors import EXCEPTION_HANDLERS, AnswerUnhandledErrors
from service.metrics import Metrics
from service.metrics import router as metrics_router
from service.middleware import ProblemCORSMiddleware, RequestContext
from service.pagination import CursorCodec
from service.routes import health, tasks
from service.state import State


def _settle_garbage_collector() -> None:
    """Take what start-up built out of the garbage collector's sight, and collect less often.

    Requests free almost everything by reference counting; the cyclic collector only adds
    pauses, and its full collections walk every object the app holds (modules, the contract,
    SQLAlchemy's metadata and statement cache). Those pauses were most of the service's p99
    latency under load (docs/PERFORMANCE.md): freezing start-up's objects and raising the
    first threshold took p99 at 32 connections from about 4x to about 1.3x the median.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; refuses (ConfigError) to build one without a strong secret."""
    settings = settings or get_settings()
    # Built here, not in the lifespan, so a bad setting fails before a port is bound. None of
    # it does I/O: connections are opened on first use.
    metrics = Metrics(settings.metrics_key())
    state = State(
        settings=settings,
        database=Database.from_settings(settings, metrics),
        verifier=TokenVerifier(settings, metrics),
        cursors=CursorCodec(settings.cursor_key()),
        readiness=health.Readiness(),
        metrics=metrics,
    )
    contract = load_contract()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, State]]:
        _settle_garbage_collector()
        # Starlette gives each request a copy of this mapping as `request.state`.
        yield {"app": state}
        await state.database.engine.dispose()

    app = FastAPI(
        title=contract["info"]["title"],
        version=contract["info"]["version"],
        docs_url=None,  # service.docs serves /docs itself, with no third-party origin
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
        # /api/tasks/ is not a route: answer 404, not a redirect to a route.
        redirect_slashes=False,
        exception_handlers=EXCEPTION_HANDLERS,
    )

    def openapi() -> dict[str, Any]:
        return contract

    # /openapi.json and /docs show the hand-written contract, the source of truth.
    app.openapi = openapi  # type: ignore[method-assign]
    # Added innermost first: RequestContext wraps everything, so every response, errors
    # included, carries the request id, the security headers and (for allowed origins) CORS.
    app.add_middleware(AnswerUnhandledErrors)
    if settings.cors_origins:
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=settings.cors_origins,
            # Bearer tokens travel in a header, never in cookies: no credentialed requests.
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Location", "Retry-After", "WWW-Authenticate", "X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(RequestContext, metrics=metrics)
    app.include_router(tasks.router)
    app.include_router(health.router)
    app.include_router(docs.router)
    if metrics.enabled:
        app.include_router(metrics_router(metrics))
    return app
