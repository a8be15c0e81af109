"""Rule: the user is the token's subject, mapped to a user id the README documents.

A `sub` that is a UUID is the user id. Any other `sub` (Better Auth issues 32-character random
strings) is `uuid5(uuid5(NAMESPACE, iss), sub)`, with a missing `iss` counting as "".
"""

from typing import Any

import httpx
import pytest

from tests.support.tokens import bearer, expected_user_id, mint


def _created_by(api: httpx.Client, token: str) -> str:
    response = api.post("/api/tasks", json={"title": "who am I"}, headers=bearer(token))
    assert response.status_code == 201
    return str(response.json()["user_id"])


def test_uuid_subject_is_the_user_id(api: httpx.Client) -> None:
    sub = "6f1c1f7e-2b1a-4f6e-9d36-0c9a0b5c9e11"
    assert _created_by(api, mint(sub)) == sub


def test_uppercase_uuid_subject_is_the_same_user(api: httpx.Client) -> None:
    sub = "6f1c1f7e-2b1a-4f6e-9d36-0c9a0b5c9e12"
    assert _created_by(api, mint(sub.upper())) == sub


@pytest.mark.parametrize(
    ("sub", "iss"),
    [
        ("Qm8kN3tZb7VxR2pL9sYc4WfH6gJd1aEu", "https://auth.example.com"),
        ("Qm8kN3tZb7VxR2pL9sYc4WfH6gJd1aEu", None),
        ("google-oauth2|1234567890", "https://issuer.example.org/"),
        ("6f1c1f7e2b1a4f6e9d360c9a0b5c9e11", None),  # hex, but not the canonical UUID form
    ],
)
def test_other_subjects_map_to_the_documented_uuid5(
    api: httpx.Client, sub: str, iss: str | None
) -> None:
    claims: dict[str, Any] = {} if iss is None else {"iss": iss}
    assert _created_by(api, mint(sub, **claims)) == expected_user_id(sub, iss or "")


def test_same_subject_from_two_issuers_is_two_users(api: httpx.Client) -> None:
    sub = "same-subject-elsewhere"
    first = _created_by(api, mint(sub, iss="https://one.example"))
    second = _created_by(api, mint(sub, iss="https://two.example"))
    assert first != second


def test_the_same_user_sees_the_same_tasks_with_every_fresh_token(api: httpx.Client) -> None:
    sub = "returning-user-with-a-new-token"
    created = api.post("/api/tasks", json={"title": "t"}, headers=bearer(mint(sub))).json()
    listed = api.get("/api/tasks", headers=bearer(mint(sub))).json()["tasks"]
    assert [task["id"] for task in listed] == [created["id"]]
