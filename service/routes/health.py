"""Probes for load balancers and orchestrators; no authentication."""

import asyncio
import time
from dataclasses import dataclass, field

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from service.deps import ProbeDatabaseDep
from service.errors import ServiceUnavailable
from service.responses import json_response
from service.state import StateDep

router = APIRouter(tags=["operations"])

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


@router.get("/healthz", operation_id="getHealth")
async def health() -> Response:
    """200 while the process runs."""
    return json_response({"status": "ok"})


@router.get("/readyz", operation_id="getReadiness")
async def readiness(state: StateDep, db: ProbeDatabaseDep) -> Response:
    """200 when the database answered within the last second; otherwise a 503 problem."""
    last = state.readiness
    if not last.fresh():
        async with last.lock:
            if not last.fresh():  # whoever waited finds the check just made
                ready = False
                try:
                    await db.one_or_none(text("SELECT 1"))
                    ready = True
                finally:
                    # A failure is remembered too; this call raises it as the 503 it maps to.
                    last.ready, last.checked_at = ready, time.monotonic()
    if not last.ready:
        raise ServiceUnavailable
    return json_response({"status": "ok"})
