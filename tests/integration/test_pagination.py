"""Listing: keyset pagination, oldest first by (created_at, id), with opaque cursors."""

from typing import Any

import httpx
import pytest

from tests.support.factories import ApiUser, TaskFactory, UserFactory


def walk(api: httpx.Client, user: ApiUser, **params: Any) -> list[dict[str, Any]]:
    """Every task, page by page, following next_cursor until it is null."""
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/tasks", params=query, headers=user.headers)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["tasks"]) <= int(params.get("limit", 50))
        seen.extend(body["tasks"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


@pytest.fixture(scope="module")
def many_tasks(api: httpx.Client) -> tuple[ApiUser, list[dict[str, Any]]]:
    user = UserFactory.create()
    tasks = [TaskFactory.create(api=api, owner=user) for _ in range(130)]
    for task in tasks[::3]:
        api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers)
    return user, tasks


def _order(task: dict[str, Any]) -> tuple[str, str]:
    return task["created_at"], task["id"]


@pytest.mark.parametrize("limit", [1, 7, 50, 200])
def test_walking_the_pages_returns_every_task_exactly_once_in_order(
    api: httpx.Client, many_tasks: tuple[ApiUser, list[dict[str, Any]]], limit: int
) -> None:
    user, created = many_tasks
    seen = walk(api, user, limit=limit)
    assert [task["id"] for task in seen] == [task["id"] for task in sorted(created, key=_order)]


def test_default_page_is_50(
    api: httpx.Client, many_tasks: tuple[ApiUser, list[dict[str, Any]]]
) -> None:
    user, _ = many_tasks
    body = api.get("/api/tasks", headers=user.headers).json()
    assert len(body["tasks"]) == 50
    assert body["next_cursor"] is not None


@pytest.mark.parametrize("completed", [True, False])
def test_filtered_walk_returns_exactly_the_tasks_in_that_state(
    api: httpx.Client, many_tasks: tuple[ApiUser, list[dict[str, Any]]], completed: bool
) -> None:
    user, created = many_tasks
    expected = [t["id"] for i, t in enumerate(created) if (i % 3 == 0) == completed]
    seen = walk(api, user, limit=9, completed=str(completed).lower())
    assert [task["id"] for task in seen] == expected
    assert {task["completed"] for task in seen} == {completed}


def test_tasks_created_while_paging_are_not_duplicated_or_skipped(
    api: httpx.Client, alice: ApiUser
) -> None:
    first = [TaskFactory.create(api=api, owner=alice)["id"] for _ in range(6)]
    page = api.get("/api/tasks", params={"limit": 3}, headers=alice.headers).json()
    later = TaskFactory.create(api=api, owner=alice)["id"]
    api.delete(f"/api/tasks/{first[4]}", headers=alice.headers)

    rest: list[str] = []
    cursor = page["next_cursor"]
    while cursor:
        body = api.get(
            "/api/tasks", params={"limit": 3, "cursor": cursor}, headers=alice.headers
        ).json()
        rest.extend(task["id"] for task in body["tasks"])
        cursor = body["next_cursor"]

    assert [t["id"] for t in page["tasks"]] + rest == [*first[:4], first[5], later]


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "A" * 54,
        "%%%",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "x" * 201,
    ],
)
def test_a_cursor_that_does_not_parse_is_400(
    api: httpx.Client, alice: ApiUser, cursor: str
) -> None:
    response = api.get("/api/tasks", params={"cursor": cursor}, headers=alice.headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["parameter"] == "cursor"


def test_a_tampered_cursor_is_400(
    api: httpx.Client, many_tasks: tuple[ApiUser, list[dict[str, Any]]]
) -> None:
    user, _ = many_tasks
    cursor = api.get("/api/tasks?limit=2", headers=user.headers).json()["next_cursor"]
    flipped = cursor[:5] + ("A" if cursor[5] != "A" else "B") + cursor[6:]
    response = api.get("/api/tasks", params={"cursor": flipped}, headers=user.headers)
    assert response.status_code == 400


def test_an_empty_list_has_no_cursor(api: httpx.Client, alice: ApiUser) -> None:
    body = api.get("/api/tasks", headers=alice.headers).json()
    assert body == {"tasks": [], "next_cursor": None}
