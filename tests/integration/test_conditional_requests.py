"""Rule: no lost updates, by HTTP's own means (RFC 9110 sections 8.8.3 and 13).

Every response that carries one task has a strong ETag for the task's current version.
If-Match makes a change conditional, decided in the same statement as the write: of two
writers holding one ETag, exactly one succeeds and the other gets 412. A missing or another
user's task is a 404 whatever the precondition. If-None-Match on reads is a 304.
"""

import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import ApiUser, TaskFactory, UserFactory
from tests.support.live import serving

STRONG = re.compile(r'"[0-9a-f]{1,16}"')
WEAK = re.compile(r'W/"[0-9a-f]{24}"')

# The conditional writes: method, path under the task, body.
WRITES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "replace": ("PUT", "", {"title": "replaced", "completed": True}),
    "update": ("PATCH", "", {"title": "updated"}),
    "toggle": ("PATCH", "/complete", None),
    "delete": ("DELETE", "", None),
}


def _write(
    api: httpx.Client, user: ApiUser, task_id: str, name: str, **headers: str
) -> httpx.Response:
    method, suffix, body = WRITES[name]
    return api.request(
        method, f"/api/tasks/{task_id}{suffix}", json=body, headers={**user.headers, **headers}
    )


def _etag(api: httpx.Client, user: ApiUser, task_id: str) -> str:
    response = api.get(f"/api/tasks/{task_id}", headers=user.headers)
    assert response.status_code == 200
    etag: str = response.headers["etag"]
    return etag


# --- ETags ---------------------------------------------------------------------------------------


def test_every_response_that_carries_one_task_has_its_strong_etag(
    api: httpx.Client, alice: ApiUser
) -> None:
    created = api.post("/api/tasks", json={"title": "t"}, headers=alice.headers)
    path = f"/api/tasks/{created.json()['id']}"
    answers = [
        created,
        api.get(path, headers=alice.headers),
        api.put(path, json={"title": "r", "completed": False}, headers=alice.headers),
        api.patch(path, json={"title": "p"}, headers=alice.headers),
        api.patch(f"{path}/complete", headers=alice.headers),
    ]
    for answer in answers:
        assert answer.status_code in (200, 201)
        assert STRONG.fullmatch(answer.headers["etag"]), answer.headers["etag"]
    # Each change leaves a new version, and answers with the ETag a read then gives.
    tags = [answer.headers["etag"] for answer in answers]
    assert len(set(tags[1:])) == len(tags[1:])
    assert tags[0] == tags[1]  # read before any change: the version the create left
    assert tags[-1] == _etag(api, alice, created.json()["id"])


def test_the_etag_changes_with_every_change_and_only_with_a_change(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    first = _etag(api, alice, alice_task["id"])
    assert _etag(api, alice, alice_task["id"]) == first  # same version, same tag
    seen = {first}
    for _ in range(4):  # back and forth: the same fields again, but a new version each time
        toggled = _write(api, alice, alice_task["id"], "toggle")
        assert toggled.headers["etag"] not in seen
        seen.add(toggled.headers["etag"])


# --- If-Match ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WRITES)
def test_if_match_with_the_current_etag_changes_the_task(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any], name: str
) -> None:
    current = _etag(api, alice, alice_task["id"])
    response = _write(api, alice, alice_task["id"], name, **{"If-Match": current})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("name", WRITES)
@pytest.mark.parametrize(
    "stale",
    ["stale", "weak", "unknown"],
)
def test_if_match_naming_no_current_version_is_412_and_changes_nothing(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any], name: str, stale: str
) -> None:
    current = _etag(api, alice, alice_task["id"])
    offered = {
        # The version before a change someone else made.
        "stale": current,
        # A weak tag never matches If-Match (RFC 9110 section 13.1.1), even the current one.
        "weak": f"W/{current}",
        "unknown": '"not-one-of-ours", "1"',
    }[stale]
    if stale == "stale":
        _write(api, alice, alice_task["id"], "update")
    before = api.get(f"/api/tasks/{alice_task['id']}", headers=alice.headers).json()

    response = _write(api, alice, alice_task["id"], name, **{"If-Match": offered})

    assert response.status_code == 412, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert api.get(f"/api/tasks/{alice_task['id']}", headers=alice.headers).json() == before


@pytest.mark.parametrize("name", WRITES)
def test_if_match_star_or_a_list_with_the_current_etag_matches(
    api: httpx.Client, alice: ApiUser, name: str
) -> None:
    for offered in ("*", '"0", {current}, W/"x"'):
        task = TaskFactory.create(api=api, owner=alice)
        current = _etag(api, alice, task["id"])
        value = offered.format(current=current)
        assert _write(api, alice, task["id"], name, **{"If-Match": value}).status_code == 200


@pytest.mark.parametrize("name", WRITES)
def test_a_precondition_never_tells_a_foreign_task_from_a_missing_one(
    api: httpx.Client, alice: ApiUser, bob: ApiUser, alice_task: dict[str, Any], name: str
) -> None:
    current = _etag(api, alice, alice_task["id"])
    for offered in (current, '"1"', "*"):
        headers = {"If-Match": offered, "X-Request-ID": "probe"}
        foreign = _write(api, bob, alice_task["id"], name, **headers)
        missing = _write(api, bob, str(uuid.uuid4()), name, **headers)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.content == missing.content
    assert _etag(api, alice, alice_task["id"]) == current  # Alice's task is untouched


@pytest.mark.parametrize("value", ["abc", '"unclosed', '"a" junk', "W/abc", '"a" "b"'])
def test_a_malformed_if_match_is_400(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any], value: str
) -> None:
    response = _write(api, alice, alice_task["id"], "update", **{"If-Match": value})
    assert response.status_code == 400
    assert "If-Match" in response.json()["detail"]


@pytest.mark.both_routes
def test_of_writers_holding_one_etag_exactly_one_succeeds(service_database_url: str) -> None:
    alice = UserFactory.create()
    with serving(create_app(make_settings(service_database_url))) as url:
        with httpx.Client(base_url=url) as api:
            task = TaskFactory.create(api=api, owner=alice)
            etag = _etag(api, alice, task["id"])

        def edit(number: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=30) as client:
                return client.patch(
                    f"/api/tasks/{task['id']}",
                    json={"title": f"edit {number}"},
                    headers={**alice.headers, "If-Match": etag},
                )

        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(edit, range(12)))
        with httpx.Client(base_url=url) as api:
            final = api.get(f"/api/tasks/{task['id']}", headers=alice.headers).json()

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [412] * 11
    (winner,) = [answer for answer in answers if answer.status_code == 200]
    assert final == winner.json()


# --- If-None-Match -------------------------------------------------------------------------------


def test_if_none_match_on_a_task_is_304_with_its_etag_and_no_body(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    path = f"/api/tasks/{alice_task['id']}"
    etag = _etag(api, alice, alice_task["id"])
    for offered in (etag, f"W/{etag}", f'"0", {etag}', "*"):  # compared weakly
        response = api.get(path, headers={**alice.headers, "If-None-Match": offered})
        assert response.status_code == 304, offered
        assert response.headers["etag"] == etag
        assert response.content == b""
    api.patch(path, json={"title": "changed"}, headers=alice.headers)
    changed = api.get(path, headers={**alice.headers, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag


def test_if_none_match_never_tells_a_foreign_task_from_a_missing_one(
    api: httpx.Client, alice: ApiUser, bob: ApiUser, alice_task: dict[str, Any]
) -> None:
    etag = _etag(api, alice, alice_task["id"])
    headers = {**bob.headers, "If-None-Match": etag, "X-Request-ID": "probe"}
    foreign = api.get(f"/api/tasks/{alice_task['id']}", headers=headers)
    missing = api.get(f"/api/tasks/{uuid.uuid4()}", headers=headers)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content


@pytest.fixture
def listing(api: httpx.Client) -> tuple[ApiUser, Callable[..., httpx.Response]]:
    user = UserFactory.create()

    def page(**params: Any) -> httpx.Response:
        etag = params.pop("if_none_match", None)
        headers = {**user.headers, **({"If-None-Match": etag} if etag else {})}
        return api.get("/api/tasks", params=params, headers=headers)

    return user, page


def test_a_page_has_a_weak_etag_and_answers_304_while_it_is_unchanged(
    api: httpx.Client, listing: tuple[ApiUser, Callable[..., httpx.Response]]
) -> None:
    user, page = listing
    for _ in range(3):
        TaskFactory.create(api=api, owner=user)
    first = page(limit=2)
    etag = first.headers["etag"]
    assert WEAK.fullmatch(etag)
    assert page(limit=2).headers["etag"] == etag
    again = page(limit=2, if_none_match=etag)
    assert again.status_code == 304
    assert again.headers["etag"] == etag
    assert again.content == b""


def test_any_change_that_alters_a_page_changes_its_etag_and_no_other_does(
    api: httpx.Client, listing: tuple[ApiUser, Callable[..., httpx.Response]], bob: ApiUser
) -> None:
    user, page = listing
    tasks = [TaskFactory.create(api=api, owner=user) for _ in range(3)]
    etags: set[str] = set()

    def still(etag: str) -> bool:
        return page(limit=2, if_none_match=etag).status_code == 304

    etag = page(limit=2).headers["etag"]
    # Not on the page: another user's task, and the user's own third task edited (the page
    # shows the first two and that there is more).
    TaskFactory.create(api=api, owner=bob)
    api.patch(f"/api/tasks/{tasks[2]['id']}", json={"title": "later"}, headers=user.headers)
    assert still(etag)
    etags.add(etag)
    for change in (
        lambda: api.patch(f"/api/tasks/{tasks[0]['id']}/complete", headers=user.headers),
        lambda: api.delete(f"/api/tasks/{tasks[1]['id']}", headers=user.headers),
        lambda: api.delete(f"/api/tasks/{tasks[2]['id']}", headers=user.headers),  # no more
        lambda: TaskFactory.create(api=api, owner=user),  # fills the page again
    ):
        change()
        assert not still(etag)
        etag = page(limit=2).headers["etag"]
        assert etag not in etags
        etags.add(etag)


def test_each_query_has_its_own_page_etag(
    api: httpx.Client, listing: tuple[ApiUser, Callable[..., httpx.Response]]
) -> None:
    user, page = listing
    for _ in range(3):
        TaskFactory.create(api=api, owner=user)
    first = page(limit=1)
    second = page(limit=1, cursor=first.json()["next_cursor"])
    tags = {
        first.headers["etag"],
        second.headers["etag"],
        page(limit=2).headers["etag"],
        page(limit=1, completed="false").headers["etag"],
    }
    # The filter is part of the query, even where it selects the same tasks.
    assert len(tags) == 4
    again = page(limit=1, cursor=first.json()["next_cursor"])  # a new cursor, same position
    assert again.headers["etag"] == second.headers["etag"]


# --- REQUIRE_IF_MATCH ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(service_database_url: str) -> Iterator[httpx.Client]:
    settings = make_settings(service_database_url, require_if_match=True)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.mark.parametrize("name", WRITES)
def test_with_require_if_match_a_change_without_it_is_428(
    strict: httpx.Client, alice: ApiUser, bob: ApiUser, name: str
) -> None:
    task = TaskFactory.create(api=strict, owner=alice)
    refused = _write(strict, alice, task["id"], name)
    assert refused.status_code == 428
    assert refused.headers["content-type"] == "application/problem+json"
    # Before the lookup: a foreign task and a missing one are the same 428.
    headers = {"X-Request-ID": "probe"}
    assert (
        _write(strict, bob, task["id"], name, **headers).content
        == _write(strict, bob, str(uuid.uuid4()), name, **headers).content
    )
    etag = _etag(strict, alice, task["id"])
    assert _write(strict, alice, task["id"], name, **{"If-Match": etag}).status_code == 200


def test_with_require_if_match_reads_and_creates_need_none(
    strict: httpx.Client, alice: ApiUser
) -> None:
    created = strict.post("/api/tasks", json={"title": "t"}, headers=alice.headers)
    assert created.status_code == 201
    assert strict.get(f"/api/tasks/{created.json()['id']}", headers=alice.headers).is_success
    assert strict.get("/api/tasks", headers=alice.headers).is_success
