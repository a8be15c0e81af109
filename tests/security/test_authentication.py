"""Rule: every operation of the contract needs a valid bearer JWT, and nothing else counts.

A request without one is answered 401 with `WWW-Authenticate: Bearer` before anything else
about it is looked at. The full catalogue of bad tokens and headers, run against every
operation, is in test_attacks.py; this module pins the rules around it.
"""

import time
from typing import Any

import httpx
import pytest

from tests.support.factories import ApiUser
from tests.support.operations import SECURED_OPERATIONS, Operation
from tests.support.tokens import SECRET, mint


def _now() -> int:
    return int(time.time())


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
    claims: dict[str, Any] = {claim: _now() + offset}
    token = mint(**claims)
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
