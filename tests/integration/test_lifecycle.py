"""Each endpoint over HTTP against the real database: what it returns and what it stores."""

import re
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from service.main import create_app
from tests.support.factories import ApiUser, TaskFactory
from tests.support.live import serving

pytestmark = pytest.mark.both_routes

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TASK_FIELDS = {"id", "user_id", "title", "completed", "created_at", "updated_at"}


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


def assert_is_task(task: dict[str, Any], owner: ApiUser) -> None:
    assert set(task) == TASK_FIELDS
    assert task["user_id"] == owner.sub
    assert isinstance(task["completed"], bool)
    assert RFC3339_UTC.match(task["created_at"])
    assert RFC3339_UTC.match(task["updated_at"])


def test_create_returns_the_task_and_its_location(api: httpx.Client, alice: ApiUser) -> None:
    response = api.post("/api/tasks", json={"title": "  Buy milk \n"}, headers=alice.headers)

    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    task = response.json()
    assert_is_task(task, alice)
    assert task["title"] == "Buy milk"  # surrounding whitespace trimmed
    assert task["completed"] is False
    assert task["created_at"] == task["updated_at"]
    assert response.headers["location"] == f"/api/tasks/{task['id']}"
    assert api.get(response.headers["location"], headers=alice.headers).json() == task


def test_get_returns_the_stored_task(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    response = api.get(f"/api/tasks/{alice_task['id']}", headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == alice_task


def test_put_replaces_title_and_state(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    response = api.put(
        f"/api/tasks/{alice_task['id']}",
        json={"title": "Replaced", "completed": True},
        headers=alice.headers,
    )
    assert response.status_code == 200
    task = response.json()
    assert_is_task(task, alice)
    assert (task["title"], task["completed"]) == ("Replaced", True)
    assert task["created_at"] == alice_task["created_at"]
    assert _moment(task["updated_at"]) > _moment(alice_task["updated_at"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"title": "Renamed"}, {"title": "Renamed", "completed": False}),
        ({"completed": True}, {"completed": True}),
        ({"title": " Both ", "completed": True}, {"title": "Both", "completed": True}),
    ],
    ids=["title only", "completed only", "both"],
)
def test_patch_changes_only_the_given_fields(
    api: httpx.Client,
    alice: ApiUser,
    alice_task: dict[str, Any],
    change: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    response = api.patch(f"/api/tasks/{alice_task['id']}", json=change, headers=alice.headers)
    assert response.status_code == 200
    task = response.json()
    assert task == {**alice_task, **expected, "updated_at": task["updated_at"]}
    assert _moment(task["updated_at"]) > _moment(alice_task["updated_at"])


def test_toggle_flips_completion_and_reports_the_new_state(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    url = f"/api/tasks/{alice_task['id']}"
    first = api.patch(f"{url}/complete", headers=alice.headers)
    assert (first.status_code, first.json()) == (200, {"success": True, "completed": True})
    assert api.get(url, headers=alice.headers).json()["completed"] is True

    second = api.patch(f"{url}/complete", headers=alice.headers)
    assert second.json() == {"success": True, "completed": False}
    assert api.get(url, headers=alice.headers).json()["completed"] is False


def test_toggle_refuses_a_body_rather_than_ignore_it(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    # A client that sends {"completed": false} means something the toggle does not do: it is
    # told so, and the task does not flip.
    response = api.patch(
        f"/api/tasks/{alice_task['id']}/complete",
        json={"completed": False},
        headers=alice.headers,
    )
    assert response.status_code == 400
    assert api.get(f"/api/tasks/{alice_task['id']}", headers=alice.headers).json() == alice_task


def test_delete_removes_the_task(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    url = f"/api/tasks/{alice_task['id']}"
    response = api.delete(url, headers=alice.headers)
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert api.get(url, headers=alice.headers).status_code == 404
    assert api.delete(url, headers=alice.headers).status_code == 404
    assert api.get("/api/tasks", headers=alice.headers).json()["tasks"] == []


def test_updated_at_strictly_increases_and_created_at_never_changes(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    url = f"/api/tasks/{alice_task['id']}"
    seen = [alice_task["updated_at"]]
    for step in range(10):
        api.patch(f"{url}/complete", headers=alice.headers)
        api.patch(url, json={"title": f"step {step}"}, headers=alice.headers)
        task = api.put(url, json={"title": "same", "completed": False}, headers=alice.headers)
        assert task.json()["created_at"] == alice_task["created_at"]
        seen.append(task.json()["updated_at"])
    moments = [_moment(value) for value in seen]
    assert moments == sorted(moments)
    assert len(set(moments)) == len(moments)


def test_updated_at_increases_even_when_the_clock_has_not(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any], db_engine: Engine
) -> None:
    # Put the stored updated_at an hour ahead: a change now happens "before" it on the clock,
    # as two changes within one microsecond would. It must still move forward.
    with db_engine.begin() as connection:
        future = connection.execute(
            text(
                "UPDATE tasks SET updated_at = updated_at + interval '1 hour' "
                "WHERE id = :id RETURNING updated_at"
            ),
            {"id": alice_task["id"]},
        ).scalar_one()
    url = f"/api/tasks/{alice_task['id']}"

    toggled = api.patch(f"{url}/complete", headers=alice.headers)
    after_toggle = _moment(api.get(url, headers=alice.headers).json()["updated_at"])
    patched = _moment(
        api.patch(url, json={"title": "t"}, headers=alice.headers).json()["updated_at"]
    )

    assert toggled.status_code == 200
    assert after_toggle > future
    assert patched > after_toggle


@pytest.mark.parametrize(
    ("title", "stored"),
    [
        ("x" * 500, "x" * 500),
        ("  " + "y" * 500 + "\t", "y" * 500),
        ("😀" * 500, "😀" * 500),  # 500 characters, 2000 bytes
        ("\u00a0nbsp and ideographic space\u3000", "nbsp and ideographic space"),
        ("inner   spaces,  kept", "inner   spaces,  kept"),
    ],
    ids=["500 chars", "500 after trimming", "500 emoji", "unicode whitespace", "inner space"],
)
def test_titles_up_to_500_characters_after_trimming_are_stored(
    api: httpx.Client, alice: ApiUser, title: str, stored: str
) -> None:
    response = api.post("/api/tasks", json={"title": title}, headers=alice.headers)
    assert response.status_code == 201
    assert response.json()["title"] == stored


def test_data_persists_across_a_new_app_instance(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any], settings: Any
) -> None:
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as fresh:
        response = fresh.get(f"/api/tasks/{alice_task['id']}", headers=alice.headers)
    assert response.json() == alice_task


def test_a_users_first_write_creates_its_user_row(
    api: httpx.Client, alice: ApiUser, db_engine: Engine
) -> None:
    def user_rows() -> int:
        with db_engine.connect() as connection:
            query = text("SELECT count(*) FROM users WHERE id = :id")
            return int(connection.execute(query, {"id": alice.sub}).scalar_one())

    api.get("/api/tasks", headers=alice.headers)
    assert user_rows() == 0  # reads create nothing
    TaskFactory.create(api=api, owner=alice)
    TaskFactory.create(api=api, owner=alice)
    assert user_rows() == 1


def test_health_and_readiness(api: httpx.Client) -> None:
    assert (api.get("/healthz").status_code, api.get("/healthz").json()) == (200, {"status": "ok"})
    assert (api.get("/readyz").status_code, api.get("/readyz").json()) == (200, {"status": "ok"})
