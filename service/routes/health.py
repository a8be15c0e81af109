"""Probes for load balancers and orchestrators; no authentication."""

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from service.deps import ProbeDatabaseDep
from service.responses import json_response

router = APIRouter(tags=["operations"])


@router.get("/healthz", operation_id="getHealth")
async def health() -> Response:
    """200 while the process runs."""
    return json_response({"status": "ok"})


@router.get("/readyz", operation_id="getReadiness")
async def readiness(db: ProbeDatabaseDep) -> Response:
    """200 when the database answers; a database error becomes a 503 problem."""
    await db.one_or_none(text("SELECT 1"))
    return json_response({"status": "ok"})
