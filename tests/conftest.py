"""Shared fixtures: a real PostgreSQL, the app served over real HTTP, users with real tokens."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine

from service.config import Settings
from service.data.admin import migrate
from service.main import create_app
from service.schema import metadata
from tests.support.apps import make_settings
from tests.support.databases import (
    SERVICE_ROLE,
    as_service,
    choose_backend,
    describe_backend,
    provision,
)
from tests.support.factories import ApiUser, TaskFactory, UserFactory
from tests.support.live import serving
from tests.support.pooler import pgbouncer

_BACKEND = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_BACKEND] = choose_backend()


# How the service reaches PostgreSQL. Tests marked `both_routes` run once each way; the rest
# go direct.
ROUTES = ("direct", "pgbouncer")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_routes"):
        metafunc.parametrize("route", ROUTES, indirect=True, scope="session")


def pytest_report_header(config: pytest.Config) -> str:
    return describe_backend(config.stash[_BACKEND])


@pytest.fixture(scope="session")
def database_url(pytestconfig: pytest.Config) -> Iterator[str]:
    """A migrated, otherwise empty database for this run, as its admin (a superuser: for
    setting up and checking, never for serving)."""
    with provision(pytestconfig.stash[_BACKEND]) as url:
        rendered = url.render_as_string(hide_password=False)
        migrate(rendered, metadata, grant_to=SERVICE_ROLE)
        yield rendered


@pytest.fixture(scope="session")
def db_engine(database_url: str) -> Iterator[Engine]:
    """Direct access, for checking what the API stored; never used to set up API state."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def route(request: pytest.FixtureRequest) -> str:
    """`direct`, or `pgbouncer` (transaction mode) for tests marked `both_routes`."""
    route: str = getattr(request, "param", "direct")
    return route


@pytest.fixture(scope="session")
def pooled_database_url(database_url: str) -> Iterator[str]:
    """The test database as the service's role, through PgBouncer in transaction mode
    (skips without pgbouncer)."""
    with pgbouncer(as_service(database_url)) as url:
        yield url


@pytest.fixture(scope="session")
def service_database_url(route: str, database_url: str, request: pytest.FixtureRequest) -> str:
    """What the served app is configured with: the database as the service's role (no
    superuser, no BYPASSRLS, only the grants migrations give it), directly or through
    PgBouncer."""
    if route == "pgbouncer":
        url: str = request.getfixturevalue("pooled_database_url")
        return url
    return as_service(database_url)


@pytest.fixture(scope="session")
def settings(service_database_url: str) -> Settings:
    return make_settings(service_database_url)


@pytest.fixture(scope="session")
def base_url(settings: Settings) -> Iterator[str]:
    """The service, served by uvicorn on a loopback port for the whole run."""
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="session")
def api(base_url: str) -> Iterator[httpx.Client]:
    """An HTTP client for the service; it sends no credentials unless a test passes them."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


@pytest.fixture
def alice() -> ApiUser:
    return UserFactory.create()


@pytest.fixture
def bob() -> ApiUser:
    return UserFactory.create()


@pytest.fixture
def alice_task(api: httpx.Client, alice: ApiUser) -> dict[str, Any]:
    return TaskFactory.create(api=api, owner=alice)
