"""Routes for operators: probes for load balancers and orchestrators (no authentication), and
`GET /metrics` when METRICS_TOKEN turns it on (answered to that token only)."""

import hmac
import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.http.context import context_of
from service.http.problems import NotAuthenticated, ServiceUnavailable
from service.http.responses import json_response
from service.metrics import Metrics

router = APIRouter(tags=["operations"])


@router.get("/healthz", operation_id="getHealth")
async def health() -> Response:
    """200 while the process runs."""
    return json_response({"status": "ok"})


@router.get("/readyz", operation_id="getReadiness")
async def readiness(request: Request) -> Response:
    """200 when the database answered within the last second; otherwise a 503 problem."""
    context = context_of(request)
    last = context.app.readiness
    if not last.fresh():
        async with last.lock:
            if not last.fresh():  # whoever waited finds the check just made
                ready = False
                try:
                    # On nobody's behalf: it reaches no user's rows.
                    database = context.app.database.for_request(context.arrived_at, None)
                    await database.first("SELECT 1")
                    ready = True
                finally:
                    # A failure is remembered too; this call raises it as the 503 it maps to.
                    last.ready, last.checked_at = ready, time.monotonic()
    if not last.ready:
        raise ServiceUnavailable
    return json_response({"status": "ok"})


def metrics_router(metrics: Metrics) -> APIRouter:
    """`GET /metrics`, answered only to `Authorization: Bearer <METRICS_TOKEN>`."""
    routes = APIRouter(include_in_schema=False)
    expected = b"Bearer " + (metrics.token or b"")

    @routes.get("/metrics")
    async def scrape(request: Request) -> Response:
        offered = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(offered, expected):
            raise NotAuthenticated("Metrics need the METRICS_TOKEN.", token_presented=False)
        body, media_type = metrics.exposition()
        return Response(body, media_type=media_type)

    return routes
