"""Rule: a create or a toggle retried with its Idempotency-Key changes nothing more.

The first request with a key runs, and the key is stored in PostgreSQL by the write's own
statement, with the rows the write returned; a retry with the same key and the same request
gets the same answer again (the same bytes, rendered from those rows), with
`Idempotent-Replayed: true`, on any instance. Keys belong to the user; the same key with
another request is a 422; only successes are stored; keys expire. Keys stored by 1.2.0 (the
rendered answer) are still replayed.
"""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from service.http.idempotency import claim_for
from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import ApiUser, TaskFactory, UserFactory
from tests.support.live import serving


def _create(api: httpx.Client, user: ApiUser, key: str, title: str = "buy milk") -> httpx.Response:
    return api.post(
        "/api/tasks", json={"title": title}, headers={**user.headers, "Idempotency-Key": key}
    )


def _titles(api: httpx.Client, user: ApiUser) -> list[str]:
    tasks = api.get("/api/tasks", params={"limit": 200}, headers=user.headers).json()["tasks"]
    return [task["title"] for task in tasks]


def _key() -> str:
    return f"key-{uuid.uuid4()}"


# --- Creates -------------------------------------------------------------------------------------


def test_a_create_retried_with_its_key_gets_the_same_answer_and_creates_nothing(
    api: httpx.Client, alice: ApiUser
) -> None:
    key = _key()
    first = _create(api, alice, key)
    retried = _create(api, alice, key)

    assert first.status_code == retried.status_code == 201
    assert retried.content == first.content
    for header in ("location", "etag", "content-type"):
        assert retried.headers[header] == first.headers[header]
    assert "idempotent-replayed" not in first.headers
    assert retried.headers["idempotent-replayed"] == "true"
    assert _titles(api, alice) == ["buy milk"]


def test_the_quoted_and_the_bare_spelling_are_one_key(api: httpx.Client, alice: ApiUser) -> None:
    key = _key()
    first = _create(api, alice, key)
    retried = _create(api, alice, f'"{key}"')
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.json() == first.json()


def test_the_same_request_means_the_same_validated_body(api: httpx.Client, alice: ApiUser) -> None:
    key = _key()
    _create(api, alice, key, title="buy milk")
    # Trimmed and normalised, it is the same title: a retry, not another request.
    assert _create(api, alice, key, title="  buy milk ").headers["idempotent-replayed"] == "true"
    assert _titles(api, alice) == ["buy milk"]


@pytest.mark.both_routes
def test_fifty_concurrent_creates_with_one_key_make_one_task(service_database_url: str) -> None:
    alice, key = UserFactory.create(), _key()
    with serving(create_app(make_settings(service_database_url))) as url:

        def create(_: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=30) as client:
                return _create(client, alice, key)

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(create, range(50)))
        with httpx.Client(base_url=url) as api:
            titles = _titles(api, alice)

    assert [answer.status_code for answer in answers] == [201] * 50
    assert len({answer.content for answer in answers}) == 1
    assert sum("idempotent-replayed" not in answer.headers for answer in answers) == 1
    assert titles == ["buy milk"]


def test_the_same_key_with_another_request_is_422_and_changes_nothing(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    key = _key()
    _create(api, alice, key, title="one")
    other_body = _create(api, alice, key, title="two")
    other_route = api.patch(
        f"/api/tasks/{alice_task['id']}/complete",
        headers={**alice.headers, "Idempotency-Key": key},
    )
    for refused in (other_body, other_route):
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"
    assert sorted(_titles(api, alice)) == sorted(["one", alice_task["title"]])
    assert api.get(f"/api/tasks/{alice_task['id']}", headers=alice.headers).json() == alice_task


@pytest.mark.both_routes
def test_one_key_from_two_users_is_two_keys(service_database_url: str) -> None:
    alice, bob, key = UserFactory.create(), UserFactory.create(), _key()
    with (
        serving(create_app(make_settings(service_database_url))) as url,
        httpx.Client(base_url=url) as api,
    ):
        for_alice = _create(api, alice, key, title="alice's")
        for_bob = _create(api, bob, key, title="bob's")
        assert for_alice.status_code == for_bob.status_code == 201
        assert "idempotent-replayed" not in for_bob.headers
        assert _titles(api, alice) == ["alice's"]
        assert _titles(api, bob) == ["bob's"]


@pytest.mark.parametrize(
    "key",
    ["", "a" * 256, "has space", "é", "a,b", 'a"b', "a\\b", '"unclosed', 'unopened"', '""'],
    ids=repr,
)
def test_a_malformed_key_is_400_and_is_not_spent(
    api: httpx.Client, alice: ApiUser, key: str
) -> None:
    headers = [(name.encode(), value.encode()) for name, value in alice.headers.items()]
    refused = api.post(
        "/api/tasks", json={"title": "t"}, headers=[*headers, (b"Idempotency-Key", key.encode())]
    )
    assert refused.status_code == 400
    assert "Idempotency-Key" in refused.json()["detail"]
    assert _titles(api, alice) == []


def test_two_key_fields_are_400(api: httpx.Client, alice: ApiUser) -> None:
    headers = [*alice.headers.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "a")]
    refused = api.post("/api/tasks", json={"title": "t"}, headers=headers)
    assert refused.status_code == 400


def test_a_request_refused_as_invalid_stores_nothing_so_its_correction_can_use_the_key(
    api: httpx.Client, alice: ApiUser
) -> None:
    key = _key()
    assert _create(api, alice, key, title="").status_code == 400
    corrected = _create(api, alice, key, title="now valid")
    assert corrected.status_code == 201
    assert "idempotent-replayed" not in corrected.headers


def test_a_failure_is_not_stored_so_a_retry_runs_again(service_database_url: str) -> None:
    alice = UserFactory.create()
    settings = make_settings(service_database_url, tasks_per_user_max=1)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as api:
        first = TaskFactory.create(api=api, owner=alice)
        key = _key()
        assert _create(api, alice, key).status_code == 409  # at the limit: nothing written
        api.delete(f"/api/tasks/{first['id']}", headers=alice.headers)
        retried = _create(api, alice, key)
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers


@pytest.mark.both_routes
def test_a_key_expires_after_its_time_to_live(service_database_url: str) -> None:
    alice, key = UserFactory.create(), _key()
    settings = make_settings(service_database_url, idempotency_key_ttl_seconds=1)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as api:
        first = _create(api, alice, key)
        assert _create(api, alice, key).headers["idempotent-replayed"] == "true"
        time.sleep(1.2)
        later = _create(api, alice, key)
        assert later.status_code == 201
        assert "idempotent-replayed" not in later.headers
        assert later.json()["id"] != first.json()["id"]
        assert _titles(api, alice) == ["buy milk", "buy milk"]


# --- Toggles -------------------------------------------------------------------------------------


@pytest.mark.both_routes
def test_a_toggle_retried_with_its_key_flips_once(service_database_url: str) -> None:
    alice = UserFactory.create()
    with (
        serving(create_app(make_settings(service_database_url))) as url,
        httpx.Client(base_url=url) as api,
    ):
        task = TaskFactory.create(api=api, owner=alice)
        path = f"/api/tasks/{task['id']}"
        headers = {**alice.headers, "Idempotency-Key": _key()}
        answers = [api.patch(f"{path}/complete", headers=headers) for _ in range(3)]
        after = api.get(path, headers=alice.headers)

    assert [answer.json() for answer in answers] == [{"success": True, "completed": True}] * 3
    assert [answer.headers.get("idempotent-replayed") for answer in answers] == [
        None,
        "true",
        "true",
    ]
    assert after.json()["completed"] is True
    assert answers[0].headers["etag"] == after.headers["etag"]


def test_a_toggle_with_a_key_and_a_stale_if_match_is_412_and_not_stored(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    path = f"/api/tasks/{alice_task['id']}"
    stale = api.get(path, headers=alice.headers).headers["etag"]
    api.patch(path, json={"title": "changed"}, headers=alice.headers)
    key = _key()
    headers = {**alice.headers, "Idempotency-Key": key, "If-Match": stale}
    assert api.patch(f"{path}/complete", headers=headers).status_code == 412
    current = api.get(path, headers=alice.headers).headers["etag"]
    retried = api.patch(f"{path}/complete", headers={**headers, "If-Match": current})
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers


def test_a_toggle_of_a_foreign_task_with_a_key_is_the_same_404_as_a_missing_one(
    api: httpx.Client, bob: ApiUser, alice_task: dict[str, Any]
) -> None:
    headers = {**bob.headers, "Idempotency-Key": _key(), "X-Request-ID": "probe"}
    foreign = api.patch(f"/api/tasks/{alice_task['id']}/complete", headers=headers)
    missing = api.patch(f"/api/tasks/{uuid.uuid4()}/complete", headers=headers)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content


# --- Storage -------------------------------------------------------------------------------------


@pytest.fixture
def expired_keys_of_other_users(db_engine: Engine) -> list[uuid.UUID]:
    users = [uuid.uuid4() for _ in range(3)]
    with db_engine.begin() as connection:
        for user in users:
            connection.execute(
                text(
                    "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, "
                    "expires_at) VALUES (:user, 'old', '', 201, '', now() - interval '1 hour')"
                ),
                {"user": user},
            )
    return users


def test_requests_with_keys_purge_every_users_expired_keys_within_a_second(
    api: httpx.Client,
    alice: ApiUser,
    db_engine: Engine,
    expired_keys_of_other_users: list[uuid.UUID],
) -> None:
    time.sleep(1.1)  # a process purges at most once a second while few keys are waiting
    _create(api, alice, _key())
    with db_engine.connect() as connection:
        left = connection.execute(
            text("SELECT count(*) FROM idempotency_keys WHERE user_id = ANY(:users)"),
            {"users": expired_keys_of_other_users},
        ).scalar_one()
    assert left == 0


def test_the_key_is_stored_with_the_rows_its_write_returned_and_expires(
    api: httpx.Client, alice: ApiUser, db_engine: Engine
) -> None:
    key = _key()
    created = _create(api, alice, key)
    with db_engine.connect() as connection:
        written, lifetime = connection.execute(
            text(
                "SELECT written, expires_at - created_at "
                "FROM idempotency_keys WHERE user_id = :user AND key = :key"
            ),
            {"user": alice.sub, "key": key},
        ).one()
    [row] = written
    task = created.json()
    assert (row["id"], row["title"], row["completed"]) == (task["id"], "buy milk", False)
    assert 86_399 <= lifetime.total_seconds() <= 86_401


def test_a_key_stored_by_1_2_0_is_replayed_as_it_was_stored(
    api: httpx.Client, alice: ApiUser, db_engine: Engine
) -> None:
    # 1.2.0 stored the rendered answer; the fingerprint is the same request's.
    key = _key()
    claim = claim_for(key, 60, method="POST", route="/api/tasks", item="", body={"title": "x"})
    stored = b'{"id":"00000000-0000-4000-8000-000000000001","title":"x"}'
    with db_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, location, "
                "etag, expires_at) VALUES (:user, :key, :fingerprint, 201, :body, :location, "
                "'\"1\"', now() + interval '1 hour')"
            ),
            {
                "user": alice.sub,
                "key": key,
                "fingerprint": claim.fingerprint,
                "body": stored,
                "location": "/api/tasks/00000000-0000-4000-8000-000000000001",
            },
        )

    replayed = _create(api, alice, key, title="x")

    assert replayed.status_code == 201
    assert replayed.content == stored
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.headers["etag"] == '"1"'
    assert _titles(api, alice) == []
