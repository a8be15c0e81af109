"""Probes for load balancers and orchestrators; no authentication."""

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from service.db import SessionDep
from service.responses import json_response

router = APIRouter(tags=["operations"])


@router.get("/healthz", operation_id="getHealth")
async def health() -> Any:
    """200 while the process runs."""
    return json_response({"status": "ok"})


@router.get("/readyz", operation_id="getReadiness")
def readiness(session: SessionDep) -> Any:
    """200 when the database answers; a database error becomes a 503 problem."""
    session.execute(text("SELECT 1"))
    return json_response({"status": "ok"})
