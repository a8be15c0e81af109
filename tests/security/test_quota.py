"""Rule: one user cannot fill the database (OWASP API4:2023, unrestricted resource consumption).

Each user holds at most TASKS_PER_USER_MAX tasks (10,000 unless configured). A create beyond
it is a 409 problem of the contract's `task-limit-reached` type, and nothing is stored. The
check is made by the create statement itself under a lock on the user's row, so concurrent
creates never overshoot, directly or through a transaction-mode pooler. Deleting makes room,
also when rows are deleted outside the API.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import Engine, text

from service.config import Settings
from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import ApiUser, UserFactory
from tests.support.live import serving

LIMIT = 5
LIMIT_TYPE = "tag:secure-tasks-api,2026:task-limit-reached"


@pytest.fixture(scope="module")
def limited(service_database_url: str) -> Iterator[httpx.Client]:
    settings = make_settings(service_database_url, tasks_per_user_max=LIMIT)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def _create(api: httpx.Client, user: ApiUser, title: str = "t") -> httpx.Response:
    return api.post("/api/tasks", json={"title": title}, headers=user.headers)


def _count(api: httpx.Client, user: ApiUser) -> int:
    return len(api.get("/api/tasks", params={"limit": 200}, headers=user.headers).json()["tasks"])


def test_the_default_limit_is_ten_thousand_tasks() -> None:
    assert Settings(database_url="postgresql://nowhere/db").tasks_per_user_max == 10_000


def test_a_create_beyond_the_limit_is_a_409_of_the_contract_type_and_stores_nothing(
    limited: httpx.Client, alice: ApiUser
) -> None:
    assert [_create(limited, alice).status_code for _ in range(LIMIT)] == [201] * LIMIT

    refused = _create(limited, alice, "one too many")

    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == LIMIT_TYPE
    assert problem["status"] == 409
    assert str(LIMIT) in problem["detail"]
    assert "location" not in refused.headers
    assert _count(limited, alice) == LIMIT


def test_the_limit_is_per_user(limited: httpx.Client, alice: ApiUser, bob: ApiUser) -> None:
    for _ in range(LIMIT):
        _create(limited, alice)
    assert _create(limited, alice).status_code == 409
    assert _create(limited, bob).status_code == 201


def test_deleting_a_task_makes_room_for_another(limited: httpx.Client, alice: ApiUser) -> None:
    ids = [_create(limited, alice).json()["id"] for _ in range(LIMIT)]
    assert _create(limited, alice).status_code == 409
    assert limited.delete(f"/api/tasks/{ids[0]}", headers=alice.headers).status_code == 200
    assert _create(limited, alice).status_code == 201
    assert _create(limited, alice).status_code == 409


def test_rows_deleted_outside_the_api_make_room_too(
    limited: httpx.Client, alice: ApiUser, db_engine: Engine
) -> None:
    for _ in range(LIMIT):
        _create(limited, alice)
    with db_engine.begin() as connection:  # an operator, as the tables' owner
        connection.execute(text("DELETE FROM tasks WHERE user_id = :id"), {"id": alice.sub})
    assert [_create(limited, alice).status_code for _ in range(LIMIT + 1)] == [201] * LIMIT + [409]


@pytest.mark.both_routes
def test_concurrent_creates_never_overshoot_the_limit(service_database_url: str) -> None:
    settings = make_settings(service_database_url, tasks_per_user_max=LIMIT)
    with serving(create_app(settings)) as url:
        for _ in range(3):  # a brand-new user each round: the first creates race to make it
            user = UserFactory.create()

            def create(_: int, user: ApiUser = user) -> int:
                response = httpx.post(
                    f"{url}/api/tasks", json={"title": "race"}, headers=user.headers, timeout=30
                )
                return response.status_code

            with ThreadPoolExecutor(max_workers=24) as pool:
                statuses = list(pool.map(create, range(24)))

            with httpx.Client(base_url=url) as client:
                stored = _count(client, user)
            assert sorted(statuses) == [201] * LIMIT + [409] * (24 - LIMIT)
            assert stored == LIMIT


def test_the_users_task_count_always_equals_their_rows(
    limited: httpx.Client, alice: ApiUser, db_engine: Engine
) -> None:
    ids = [_create(limited, alice).json()["id"] for _ in range(3)]
    limited.delete(f"/api/tasks/{ids[1]}", headers=alice.headers)
    limited.patch(f"/api/tasks/{ids[0]}", json={"title": "renamed"}, headers=alice.headers)
    with db_engine.connect() as connection:
        counted, rows = connection.execute(
            text(
                "SELECT task_count, (SELECT count(*) FROM tasks WHERE user_id = users.id) "
                "FROM users WHERE id = :id"
            ),
            {"id": alice.sub},
        ).one()
    assert counted == rows == 2
