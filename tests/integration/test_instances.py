"""Several instances on one database: concurrent starts migrate safely, and the concurrency
guarantees hold across processes."""

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.databases import as_service, fresh_database_on, head_revision, service_env
from tests.support.live import RunningService, service_process
from tests.support.pooler import pgbouncer
from tests.support.tokens import SECRET, bearer, mint

pytestmark = pytest.mark.both_routes


@pytest.fixture(scope="session")
def two_instances(database_url: str, route: str) -> Iterator[tuple[str, list[RunningService]]]:
    """Two `tasks-api serve` processes (one of them with two workers), started at the same
    moment on an empty database, so both migrate at once; straight to it or through PgBouncer
    in transaction mode."""
    with fresh_database_on(database_url) as url, ExitStack() as stack:
        rendered = url.render_as_string(hide_password=False)
        # Migrations as the owner, straight to the database (Neon's direct endpoint); requests
        # as the service's role, directly or through the pooler.
        env = {**service_env(rendered), "JWT_SECRET": SECRET}
        if route == "pgbouncer":
            env["DATABASE_URL"] = stack.enter_context(pgbouncer(as_service(rendered)))
        services = [
            stack.enter_context(service_process(env=env)),
            stack.enter_context(service_process("--workers", "2", env=env)),
        ]
        yield rendered, services


def test_concurrent_starts_migrate_once(two_instances: tuple[str, list[RunningService]]) -> None:
    url, services = two_instances
    assert all(httpx.get(f"{s.base_url}/readyz").status_code == 200 for s in services)
    engine = create_engine(url)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()
    assert [row[0] for row in versions] == [head_revision()]


def _spread(services: list[RunningService], count: int, call: object) -> list[httpx.Response]:
    bases = itertools.cycle(service.base_url for service in services)
    targets = [next(bases) for _ in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(call, targets))  # type: ignore[arg-type]


def test_40_toggles_spread_over_both_instances_lose_nothing(
    two_instances: tuple[str, list[RunningService]],
) -> None:
    _, services = two_instances
    headers = bearer(mint())
    task = httpx.post(
        f"{services[0].base_url}/api/tasks", json={"title": "shared"}, headers=headers
    ).json()

    responses = _spread(
        services,
        40,
        lambda base: httpx.patch(f"{base}/api/tasks/{task['id']}/complete", headers=headers),
    )

    states = [response.json()["completed"] for response in responses]
    assert states.count(True) == states.count(False) == 20
    final = httpx.get(f"{services[1].base_url}/api/tasks/{task['id']}", headers=headers)
    assert final.json()["completed"] is False


def test_32_first_requests_of_a_new_user_spread_over_both_instances_succeed(
    two_instances: tuple[str, list[RunningService]],
) -> None:
    _url, services = two_instances
    sub = "brand-new-user-on-two-instances"
    headers = bearer(mint(sub))

    responses = _spread(
        services,
        32,
        lambda base: httpx.post(f"{base}/api/tasks", json={"title": "race"}, headers=headers),
    )

    assert [response.status_code for response in responses] == [201] * 32
    listed = httpx.get(
        f"{services[0].base_url}/api/tasks", params={"limit": 200}, headers=headers
    ).json()
    assert len(listed["tasks"]) == 32
    assert len({task["user_id"] for task in listed["tasks"]}) == 1
