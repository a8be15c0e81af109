"""The routes' database access, bound to the request: its deadline and, under /api, its user."""

import time
from typing import Annotated

from fastapi import Depends, Request

from service.auth import CurrentUser
from service.db import RequestDatabase
from service.state import state_of


def _arrived_at(request: Request) -> float:
    # RequestContext stamps each request's arrival; a request that bypassed it starts now.
    arrived_at: float = request.scope.get("state", {}).get("arrived_at") or time.monotonic()
    return arrived_at


async def user_database(request: Request, user: CurrentUser) -> RequestDatabase:
    """The signed-in user's access: row-level security lets it reach that user's rows only."""
    return state_of(request).database.for_request(_arrived_at(request), user.user_id)


async def probe_database(request: Request) -> RequestDatabase:
    """Access on nobody's behalf, for probes: it reaches no user's rows."""
    return state_of(request).database.for_request(_arrived_at(request), None)


DatabaseDep = Annotated[RequestDatabase, Depends(user_database)]
ProbeDatabaseDep = Annotated[RequestDatabase, Depends(probe_database)]
