"""`GET /metrics`: Prometheus text, off by default, and only for `Bearer <METRICS_TOKEN>`.

After a lifecycle the counters have moved by exactly what was done: requests by route
template, method and status, their latency, tasks created, database errors by kind, JWKS
fetches. With two worker processes a scrape, whichever worker answers it, counts both.
"""

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.main import create_app
from tests.support.apps import make_settings
from tests.support.databases import as_service
from tests.support.factories import UserFactory
from tests.support.keys import JWKS_AUDIENCE, JWKS_ISSUER, JwksServer, claims, new_key
from tests.support.live import service_process, serving
from tests.support.tokens import SECRET, bearer

METRICS_TOKEN = "metrics-token-" + "m" * 32
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def measured(service_database_url: str) -> Iterator[httpx.Client]:
    settings = make_settings(service_database_url, metrics_token=METRICS_TOKEN)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_metrics_are_off_unless_a_token_is_configured(api: httpx.Client) -> None:
    response = api.get("/metrics", headers=SCRAPER)
    assert response.status_code == 404


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}, "a user's token"],
    ids=["none", "wrong token", "no scheme", "a user's token"],
)
def test_metrics_answer_only_the_metrics_token(
    measured: httpx.Client, headers: dict[str, str] | str
) -> None:
    sent = UserFactory.create().headers if isinstance(headers, str) else headers
    response = measured.get("/metrics", headers=sent)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_a_weak_metrics_token_stops_the_service(service_database_url: str) -> None:
    from service.config import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match="METRICS_TOKEN is 5 bytes"):
        create_app(make_settings(service_database_url, metrics_token="short"))


def test_a_lifecycle_moves_the_counters_by_what_was_done(measured: httpx.Client) -> None:
    before = _samples(measured.get("/metrics", headers=SCRAPER).text)
    user = UserFactory.create()
    created = [
        measured.post("/api/tasks", json={"title": f"t{i}"}, headers=user.headers).json()
        for i in range(3)
    ]
    measured.get("/api/tasks", headers=user.headers)
    measured.patch(f"/api/tasks/{created[0]['id']}/complete", headers=user.headers)
    measured.delete(f"/api/tasks/{created[1]['id']}", headers=user.headers)
    measured.get(f"/api/tasks/{created[1]['id']}", headers=user.headers)  # 404 now
    measured.get("/api/tasks")  # 401

    response = measured.get("/metrics", headers=SCRAPER)
    after = _samples(response.text)

    assert response.headers["content-type"].startswith("text/plain")

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    requests = "tasks_api_requests_total"
    assert moved(requests, route="/api/tasks", method="POST", status="201") == 3
    assert moved(requests, route="/api/tasks", method="GET", status="200") == 1
    assert moved(requests, route="/api/tasks", method="GET", status="401") == 1
    assert moved(requests, route="/api/tasks/{id}/complete", method="PATCH", status="200") == 1
    assert moved(requests, route="/api/tasks/{id}", method="DELETE", status="200") == 1
    assert moved(requests, route="/api/tasks/{id}", method="GET", status="404") == 1
    histogram = "tasks_api_request_duration_seconds_count"
    assert moved(histogram, route="/api/tasks", method="POST") == 3
    assert moved("tasks_api_tasks_created_total") == 3
    # Every connection was back in the pool when the scrape was answered; nobody waits.
    assert _value(after, "tasks_api_db_pool_connections", state="in_use") == 0
    assert _value(after, "tasks_api_db_pool_connections", state="waiting") == 0
    assert ("tasks_api_db_pool_connections", (("state", "in_use"),)) in after


def test_database_errors_are_counted_by_kind() -> None:
    settings = make_settings(
        "postgresql://postgres@127.0.0.1:1/nowhere", metrics_token=METRICS_TOKEN
    )
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        statuses = [client.get("/readyz").status_code]
        time.sleep(1.1)  # past the readiness result's second
        statuses.append(client.get("/readyz").status_code)
        user = UserFactory.create()
        statuses.append(client.get("/api/tasks", headers=user.headers).status_code)
        samples = _samples(client.get("/metrics", headers=SCRAPER).text)

    assert statuses == [503, 503, 503]
    assert _value(samples, "tasks_api_db_errors_total", kind="OperationalError") == 3


def test_jwks_fetches_are_counted_by_outcome(service_database_url: str) -> None:
    key = new_key("EdDSA")
    with JwksServer().running() as jwks:
        jwks.publish(key)
        settings = make_settings(
            service_database_url,
            metrics_token=METRICS_TOKEN,
            jwt_jwks_url=jwks.url,
            jwt_issuer=JWKS_ISSUER,
            jwt_audience=JWKS_AUDIENCE,
            jwks_min_refresh_seconds=0,
        )
        with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
            assert client.get("/api/tasks", headers=bearer(key.sign(claims()))).status_code == 200
            jwks.up = False
            unknown = key.sign(claims(), kid="another-kid")
            assert client.get("/api/tasks", headers=bearer(unknown)).status_code == 503
            samples = _samples(client.get("/metrics", headers=SCRAPER).text)

    assert _value(samples, "tasks_api_jwks_fetches_total", outcome="ok") == 1
    assert _value(samples, "tasks_api_jwks_fetches_total", outcome="failed") == 1


def test_with_two_workers_every_scrape_counts_both(database_url: str) -> None:
    env = {
        "DATABASE_URL": as_service(database_url),
        "JWT_SECRET": SECRET,
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    with service_process("--workers", "2", "--no-migrate", env=env) as service:
        user = UserFactory.create()
        for index in range(20):
            # A new connection each time, so that both workers take some.
            response = httpx.post(
                f"{service.base_url}/api/tasks", json={"title": f"w{index}"}, headers=user.headers
            )
            assert response.status_code == 201
        scrapes = [
            _samples(httpx.get(f"{service.base_url}/metrics", headers=SCRAPER).text)
            for _ in range(6)
        ]
    created = {_value(samples, "tasks_api_tasks_created_total") for samples in scrapes}
    assert created == {20.0}
