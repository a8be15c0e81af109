"""Rule: no user can read, change, delete or even detect another user's tasks.

Every operation that takes an id answers a request for someone else's item exactly as it
answers one for an item that does not exist, and the item stays as it was. The operations come
from the contract, and each is sent an id of the resource it addresses (tests/support/
resources.py), so an operation added to the contract is covered without anyone listing it.
"""

import uuid
from typing import Any

import httpx
import pytest

from tests.support.factories import ApiUser, TaskFactory
from tests.support.operations import ITEM_OPERATIONS, SECURED_OPERATIONS, Operation
from tests.support.resources import create_item, read_item


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in response.headers.items() if k.lower() != "date"}
    return response.status_code, headers, response.content


@pytest.mark.parametrize("op", ITEM_OPERATIONS, ids=str)
def test_foreign_item_is_indistinguishable_from_missing(
    api: httpx.Client, alice: ApiUser, bob: ApiUser, op: Operation
) -> None:
    # An item of the very resource this operation addresses: a 404 for an id of another
    # kind would prove nothing.
    foreign = create_item(api, op.resource, alice)

    def attempt(item_id: str) -> httpx.Response:
        # The same request id for all three, so even that is equal: only `date` may differ.
        headers = {**bob.headers, "X-Request-ID": "probe-1"}
        return api.request(op.method, op.url(item_id), json=op.example_body, headers=headers)

    answered_foreign = attempt(foreign["id"])
    missing = attempt(str(uuid.uuid4()))
    not_a_uuid = attempt("not-a-uuid")

    assert answered_foreign.status_code == 404
    assert answered_foreign.headers["content-type"] == "application/problem+json"
    assert _comparable(answered_foreign) == _comparable(missing) == _comparable(not_a_uuid)
    # The same request from the owner succeeds: the 404 above is ownership, nothing else.
    own = api.request(op.method, op.url(foreign["id"]), json=op.example_body, headers=alice.headers)
    assert own.status_code in (200, 201, 204), own.text


@pytest.mark.parametrize("op", ITEM_OPERATIONS, ids=str)
def test_foreign_item_is_unchanged_after_any_attempt(
    api: httpx.Client, alice: ApiUser, bob: ApiUser, op: Operation
) -> None:
    foreign = create_item(api, op.resource, alice)

    api.request(op.method, op.url(foreign["id"]), json=op.example_body, headers=bob.headers)

    after = read_item(api, op.resource, foreign["id"], alice)
    assert after.status_code == 200
    assert after.json() == foreign


def test_listing_shows_only_the_callers_tasks(
    api: httpx.Client, alice: ApiUser, bob: ApiUser
) -> None:
    alices = {TaskFactory.create(api=api, owner=alice)["id"] for _ in range(3)}
    bobs = {TaskFactory.create(api=api, owner=bob)["id"] for _ in range(2)}

    for user, own in ((alice, alices), (bob, bobs)):
        listed = api.get("/api/tasks", headers=user.headers).json()["tasks"]
        assert {task["id"] for task in listed} == own
        assert {task["user_id"] for task in listed} == {user.sub}  # a UUID sub is the user id


def test_a_cursor_is_useless_to_another_user(
    api: httpx.Client, alice: ApiUser, bob: ApiUser
) -> None:
    for _ in range(3):
        TaskFactory.create(api=api, owner=alice)
    cursor = api.get("/api/tasks?limit=1", headers=alice.headers).json()["next_cursor"]
    assert cursor is not None

    response = api.get("/api/tasks", params={"cursor": cursor}, headers=bob.headers)

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"parameter": "cursor", "detail": "is not a cursor from this API"}
    ]


@pytest.mark.parametrize("field", ["user_id", "id", "created_at", "updated_at", "owner"])
@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("POST", {"title": "mine"}),
        ("PUT", {"title": "mine", "completed": True}),
        ("PATCH", {"title": "mine"}),
    ],
    ids=["create", "replace", "update"],
)
def test_ownership_and_server_fields_in_a_body_are_rejected(
    api: httpx.Client,
    alice: ApiUser,
    alice_task: dict[str, Any],
    bob: ApiUser,
    method: str,
    body: dict[str, Any],
    field: str,
) -> None:
    url = "/api/tasks" if method == "POST" else f"/api/tasks/{alice_task['id']}"
    tasks_before = api.get("/api/tasks", headers=alice.headers).json()
    # Alice trying to plant a field the server owns, e.g. to hand a task to Bob.
    planted = {**body, field: alice_task["id"] if field == "id" else str(uuid.uuid4())}
    if field == "user_id":
        planted[field] = bob.sub

    response = api.request(method, url, json=planted, headers=alice.headers)

    assert response.status_code == 400
    assert {"pointer": f"#/{field}", "detail": "Extra inputs are not permitted"} in response.json()[
        "errors"
    ]
    assert api.get("/api/tasks", headers=alice.headers).json() == tasks_before


@pytest.mark.parametrize("op", SECURED_OPERATIONS, ids=str)
def test_ownership_fields_in_the_query_are_rejected(
    api: httpx.Client, alice_task: dict[str, Any], bob: ApiUser, op: Operation
) -> None:
    # Bob naming Alice as the owner must not look as if it had been honoured.
    response = api.request(
        op.method,
        op.url(alice_task["id"]),
        params={"user_id": alice_task["user_id"]},
        json=op.example_body,
        headers=bob.headers,
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"parameter": "user_id", "detail": "is not a parameter of this operation"}
    ]


def test_location_header_points_at_the_callers_new_task(api: httpx.Client, alice: ApiUser) -> None:
    response = api.post("/api/tasks", json={"title": "x"}, headers=alice.headers)
    assert response.headers["location"] == f"/api/tasks/{response.json()['id']}"
