"""Concurrency against the live uvicorn server: atomic toggles and racing first writes."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.support.factories import ApiUser

pytestmark = pytest.mark.both_routes


def _in_parallel(count: int, request: Any) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: request(), range(count)))


def test_40_concurrent_toggles_end_as_40_sequential_toggles(
    base_url: str, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    url = f"{base_url}/api/tasks/{alice_task['id']}/complete"

    def toggle() -> httpx.Response:
        return httpx.patch(url, headers=alice.headers, timeout=30)

    responses = _in_parallel(40, toggle)

    assert {response.status_code for response in responses} == {200}
    states = [response.json()["completed"] for response in responses]
    # Each toggle saw a distinct state: half of them ended on True, half on False.
    assert states.count(True) == states.count(False) == 20
    final = httpx.get(f"{base_url}/api/tasks/{alice_task['id']}", headers=alice.headers)
    assert final.json()["completed"] is False  # an even number of flips from False


def test_32_parallel_first_requests_of_a_new_user_all_succeed(
    base_url: str, alice: ApiUser, db_engine: Engine
) -> None:
    def create() -> httpx.Response:
        return httpx.post(
            f"{base_url}/api/tasks", json={"title": "race"}, headers=alice.headers, timeout=30
        )

    responses = _in_parallel(32, create)

    assert [response.status_code for response in responses] == [201] * 32
    with db_engine.connect() as connection:
        users = connection.execute(
            text("SELECT count(*) FROM users WHERE id = :id"), {"id": alice.sub}
        ).scalar_one()
        tasks = connection.execute(
            text("SELECT count(*) FROM tasks WHERE user_id = :id"), {"id": alice.sub}
        ).scalar_one()
    assert (users, tasks) == (1, 32)
