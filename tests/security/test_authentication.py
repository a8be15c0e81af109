"""Rule: every operation of the contract needs a valid bearer JWT, and nothing else counts.

A request without one is answered 401 with `WWW-Authenticate: Bearer` before anything else
about it is looked at, and it changes nothing.
"""

import base64
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import Engine, text

from tests.factories import ApiUser
from tests.operations import SECURED_OPERATIONS, Operation
from tests.tokens import DROP, SECRET, mint


def _now() -> int:
    return int(time.time())


def _tampered() -> str:
    header, _, signature = mint("someone").split(".")
    forged = base64.urlsafe_b64encode(b'{"sub":"admin","exp":9999999999}').rstrip(b"=")
    return f"{header}.{forged.decode()}.{signature}"


def _unsigned() -> str:
    return jwt.encode({"sub": "someone", "exp": _now() + 300}, key=None, algorithm="none")


def _bearer(make_token: Callable[[], str]) -> Callable[[], dict[str, str]]:
    return lambda: {"Authorization": f"Bearer {make_token()}"}


# What an attacker or a broken client may send (built when the test runs, so time-based
# cases stay what they say), and whether it presents a token at all.
BAD_CREDENTIALS: dict[str, tuple[Callable[[], dict[str, str]], bool]] = {
    "no Authorization header": (dict, False),
    "empty Authorization header": (lambda: {"Authorization": ""}, False),
    "Bearer with no token": (lambda: {"Authorization": "Bearer"}, False),
    "Basic credentials": (lambda: {"Authorization": "Basic dXNlcjpwYXNz"}, False),
    "token without a scheme": (lambda: {"Authorization": mint()}, False),
    "not a JWT": (_bearer(lambda: "not-a-jwt"), True),
    "signed with another secret": (_bearer(lambda: mint(secret="x" * 48)), True),
    "alg none, unsigned": (_bearer(_unsigned), True),
    "alg HS512 instead of HS256": (_bearer(lambda: mint(algorithm="HS512")), True),
    "payload tampered after signing": (_bearer(_tampered), True),
    "expired a minute ago": (_bearer(lambda: mint(exp=_now() - 60)), True),
    "no exp claim": (_bearer(lambda: mint(exp=DROP)), True),
    "no sub claim": (_bearer(lambda: mint(sub=DROP)), True),
    "empty sub": (_bearer(lambda: mint(sub="")), True),
    "blank sub": (_bearer(lambda: mint(sub="   ")), True),
    "numeric sub": (_bearer(lambda: mint(sub=42)), True),
    "not valid for another minute (nbf)": (_bearer(lambda: mint(nbf=_now() + 60)), True),
    "token over 8 KiB": (_bearer(lambda: mint(padding="x" * 9000)), True),
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
    make_headers, token_presented = BAD_CREDENTIALS[credentials]
    tasks_before = _task_count(db_engine)

    response = _send(api, op, alice_task["id"], headers=make_headers())

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
    ("claim", "offset", "accepted"),
    [
        ("exp", -2, True),  # within the 5 s default leeway for clock skew
        ("exp", -60, False),
        ("nbf", 2, True),
        ("nbf", 60, False),
        ("nbf", -10, True),
    ],
    ids=["expired 2s ago", "expired 60s ago", "nbf in 2s", "nbf in 60s", "nbf passed"],
)
def test_time_claims_are_honoured_with_small_leeway(
    api: httpx.Client, claim: str, offset: int, accepted: bool
) -> None:
    token = mint(**{claim: _now() + offset})
    response = api.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == (200 if accepted else 401)


def test_token_with_aud_is_accepted_when_no_audience_is_configured(api: httpx.Client) -> None:
    # Auth libraries always set `aud`; without JWT_AUDIENCE the service does not check it.
    token = mint(aud="https://app.example.com", iss="https://auth.example.com")
    assert api.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_secret_is_the_one_configured(api: httpx.Client) -> None:
    good = api.get("/api/tasks", headers={"Authorization": f"Bearer {mint(secret=SECRET)}"})
    bad = api.get("/api/tasks", headers={"Authorization": f"Bearer {mint(secret=SECRET + 'x')}"})
    assert (good.status_code, bad.status_code) == (200, 401)
