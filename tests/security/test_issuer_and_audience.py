"""Rule: with JWT_ISSUER and JWT_AUDIENCE set, tokens must carry exactly those values."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.main import create_app
from tests.support.apps import make_settings
from tests.support.live import serving
from tests.support.tokens import DROP, bearer, mint

ISSUER = "https://auth.example.com"
AUDIENCE = "https://tasks.example.com"


@pytest.fixture(scope="module")
def strict_api(service_database_url: str) -> Iterator[httpx.Client]:
    settings = make_settings(service_database_url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"iss": ISSUER, "aud": AUDIENCE}, 200),
        ({"iss": ISSUER, "aud": [AUDIENCE, "https://other.example"]}, 200),
        ({"iss": "https://evil.example", "aud": AUDIENCE}, 401),
        ({"iss": DROP, "aud": AUDIENCE}, 401),
        ({"iss": ISSUER, "aud": "https://other.example"}, 401),
        ({"iss": ISSUER, "aud": DROP}, 401),
    ],
    ids=["both right", "audience in a list", "wrong iss", "no iss", "wrong aud", "no aud"],
)
def test_issuer_and_audience_are_enforced_when_configured(
    strict_api: httpx.Client, claims: dict[str, Any], status: int
) -> None:
    response = strict_api.get("/api/tasks", headers=bearer(mint(**claims)))
    assert response.status_code == status
