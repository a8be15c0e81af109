"""Rule: everything under `/api` is guarded by construction, not by each route remembering to.

The app mounts every resource under one `/api` router that carries the guard (body bound,
then authentication, then the query's names). These tests walk the routes the app really
registers, not a list kept by hand, so a route added by any means is covered the day it
appears, and show that a route added without any guard of its own is guarded all the same.
"""

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from service.config import Settings
from service.http.api import api_router
from service.main import create_app
from tests.support.live import serving
from tests.support.operations import SECURED_OPERATIONS


def _api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route the app registers under /api, however deeply
    its router is included (FastAPI includes routers lazily: app.routes alone holds only the
    included routers)."""
    found = sorted(
        (method, context.path)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and context.path is not None
        and context.path.startswith("/api")
        for method in context.methods or ()
    )
    assert found, "no route found under /api: has FastAPI changed how it lists routes?"
    return found


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


@pytest.fixture(scope="module")
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


def test_the_routes_under_api_are_exactly_the_contracts_secured_operations(app: FastAPI) -> None:
    declared = sorted((op.method, op.path) for op in SECURED_OPERATIONS)
    assert _api_routes(app) == declared


def test_every_route_the_app_registers_under_api_answers_401_without_a_token(
    app: FastAPI, api: httpx.Client
) -> None:
    routes = _api_routes(app)
    assert routes
    for method, path in routes:
        response = api.request(method, _url(path), json={"title": "anything"})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.fixture
def app_with_a_new_resource(settings: Settings) -> Iterator[str]:
    """The app, plus a resource router written with no guard at all, mounted as main.py mounts
    resources."""
    app = create_app(settings)
    unguarded = APIRouter(prefix="/api/projects")

    @unguarded.get("/{id}", operation_id="getProject")
    async def get_project(id: str) -> dict[str, str]:
        return {"id": id, "secret": "nobody should see this"}

    api = api_router()
    api.include_router(unguarded)
    app.include_router(api)
    with serving(app) as url:
        yield url


def test_a_resource_router_without_guards_is_guarded_once_mounted_under_api(
    app_with_a_new_resource: str,
) -> None:
    response = httpx.get(f"{app_with_a_new_resource}/api/projects/{uuid.uuid4()}")
    assert response.status_code == 401
    assert "secret" not in response.text
