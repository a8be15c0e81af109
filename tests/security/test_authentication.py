"""Rule: every operation of the contract needs a valid bearer JWT, and nothing else counts.

A request without one is answered 401 with `WWW-Authenticate: Bearer` before anything else
about it is looked at, and it changes nothing.
"""

import base64
import time
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import Engine, text

from tests.factories import ApiUser
from tests.operations import SECURED_OPERATIONS, Operation
from tests.tokens import DROP, SECRET, mint

NOW = int(time.time())


def _tampered() -> str:
    header, payload, signature = mint("someone").split(".")
    forged = base64.urlsafe_b64encode(b'{"sub":"admin","exp":9999999999}').rstrip(b"=")
    return f"{header}.{forged.decode()}.{signature}"


def _unsigned() -> str:
    return jwt.encode({"sub": "someone", "exp": NOW + 300}, key=None, algorithm="none")


# What an attacker or a broken client may send, and whether it presents a token at all.
BAD_CREDENTIALS: dict[str, tuple[dict[str, str], bool]] = {
    "no Authorization header": ({}, False),
    "empty Authorization header": ({"Authorization": ""}, False),
    "Bearer with no token": ({"Authorization": "Bearer"}, False),
    "Basic credentials": ({"Authorization": "Basic dXNlcjpwYXNz"}, False),
    "token without a scheme": ({"Authorization": mint()}, False),
    "not a JWT": ({"Authorization": "Bearer not-a-jwt"}, True),
    "signed with another secret": ({"Authorization": f"Bearer {mint(secret='x' * 48)}"}, True),
    "alg none, unsigned": ({"Authorization": f"Bearer {_unsigned()}"}, True),
    "alg HS512 instead of HS256": ({"Authorization": f"Bearer {mint(algorithm='HS512')}"}, True),
    "payload tampered after signing": ({"Authorization": f"Bearer {_tampered()}"}, True),
    "expired a minute ago": ({"Authorization": f"Bearer {mint(exp=NOW - 60)}"}, True),
    "no exp claim": ({"Authorization": f"Bearer {mint(exp=DROP)}"}, True),
    "no sub claim": ({"Authorization": f"Bearer {mint(sub=DROP)}"}, True),
    "empty sub": ({"Authorization": f"Bearer {mint(sub='')}"}, True),
    "blank sub": ({"Authorization": f"Bearer {mint(sub='   ')}"}, True),
    "numeric sub": ({"Authorization": f"Bearer {mint(sub=42)}"}, True),
    "not valid for another minute (nbf)": ({"Authorization": f"Bearer {mint(nbf=NOW + 60)}"}, True),
    "token over 8 KiB": ({"Authorization": f"Bearer {mint(padding='x' * 9000)}"}, True),
}


def _task_count(db_engine: Engine) -> int:
    with db_engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM tasks")).scalar_one())


def _send(api: httpx.Client, op: Operation, task_id: str, **kwargs: Any) -> httpx.Response:
    return api.request(op.method, op.url(task_id), json=op.example_body, **kwargs)


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS, ids=str)
@pytest.mark.parametrize("op", SECURED_OPERATIONS, ids=str)
def test_request_without_valid_token_is_401_and_changes_nothing(
    api: httpx.Client,
    alice: ApiUser,
    alice_task: dict[str, Any],
    db_engine: Engine,
    op: Operation,
    credentials: str,
) -> None:
    headers, token_presented = BAD_CREDENTIALS[credentials]
    tasks_before = _task_count(db_engine)

    response = _send(api, op, alice_task["id"], headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    assert ('error="invalid_token"' in challenge) == token_presented
    # Alice's task and the number of tasks are exactly as before.
    assert api.get(f"/api/tasks/{alice_task['id']}", headers=alice.headers).json() == alice_task
    assert _task_count(db_engine) == tasks_before


@pytest.mark.parametrize("op", SECURED_OPERATIONS, ids=str)
def test_authentication_is_checked_before_anything_else_about_the_request(
    api: httpx.Client, op: Operation
) -> None:
    # A non-UUID id, an invalid query and an invalid body: still 401, not 404 or 400.
    response = api.request(
        op.method,
        op.url("not-a-uuid") + "?limit=0&completed=maybe",
        content=b"{not json",
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 401


@pytest.mark.parametrize("op", SECURED_OPERATIONS, ids=str)
def test_tokens_in_query_strings_or_cookies_are_ignored(
    base_url: str, alice_task: dict[str, Any], op: Operation
) -> None:
    token = mint()
    with httpx.Client(base_url=base_url, cookies={"token": token, "access_token": token}) as c:
        url = op.url(alice_task["id"]) + f"?access_token={token}&token={token}"
        response = c.request(op.method, url, json=op.example_body)
    assert response.status_code == 401


def test_two_authorization_headers_are_refused(api: httpx.Client, alice: ApiUser) -> None:
    headers = [("Authorization", f"Bearer {alice.token}"), ("Authorization", "Bearer other")]
    assert api.get("/api/tasks", headers=headers).status_code == 401


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(api: httpx.Client, scheme: str) -> None:
    response = api.get("/api/tasks", headers={"Authorization": f"{scheme} {mint()}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        ({"exp": NOW - 2}, True),  # within the 5 s default leeway for clock skew
        ({"exp": NOW - 60}, False),
        ({"nbf": NOW + 2}, True),
        ({"nbf": NOW + 60}, False),
        ({"nbf": NOW - 10}, True),
    ],
    ids=["expired 2s ago", "expired 60s ago", "nbf in 2s", "nbf in 60s", "nbf passed"],
)
def test_time_claims_are_honoured_with_small_leeway(
    api: httpx.Client, claims: dict[str, int], accepted: bool
) -> None:
    response = api.get("/api/tasks", headers={"Authorization": f"Bearer {mint(**claims)}"})
    assert response.status_code == (200 if accepted else 401)


def test_token_with_aud_is_accepted_when_no_audience_is_configured(api: httpx.Client) -> None:
    # Auth libraries always set `aud`; without JWT_AUDIENCE the service does not check it.
    token = mint(aud="https://app.example.com", iss="https://auth.example.com")
    assert api.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_secret_is_the_one_configured(api: httpx.Client) -> None:
    good = api.get("/api/tasks", headers={"Authorization": f"Bearer {mint(secret=SECRET)}"})
    bad = api.get("/api/tasks", headers={"Authorization": f"Bearer {mint(secret=SECRET + 'x')}"})
    assert (good.status_code, bad.status_code) == (200, 401)
