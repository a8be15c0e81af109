"""What the app holds for its lifetime: one typed object, built by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from service.auth import TokenVerifier
    from service.config import Settings
    from service.db import Database
    from service.metrics import Metrics
    from service.pagination import CursorCodec
    from service.routes.health import Readiness


@dataclass(frozen=True, slots=True)
class State:
    settings: Settings
    database: Database
    verifier: TokenVerifier
    cursors: CursorCodec
    readiness: Readiness
    metrics: Metrics


def state_of(connection: HTTPConnection) -> State:
    """The app's State, which the lifespan hands every request (Starlette's lifespan state)."""
    state: State = connection.state.app
    return state


async def _state(request: Request) -> State:
    return state_of(request)


StateDep = Annotated[State, Depends(_state)]
