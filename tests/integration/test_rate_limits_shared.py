"""Rate limits shared by every instance, through the real Redis; and what happens when Redis
is gone or slow.

- Two instances, and one instance's two worker processes, draw one user's requests from one
  budget: exactly the limit gets through, whichever instance answers.
- The window slides: a client that waits `Retry-After` seconds gets through again.
- Redis stopped in the middle of the load, or answering too slowly: requests are let through
  (fail open), answered within the storage's deadline, never a 5xx; the outage is logged once
  and counted in /metrics; when Redis answers again, limits are back on by themselves.
"""

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.http.rate_limit_redis import redis_counters
from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import UserFactory
from tests.support.live import RunningService, service_process, serving
from tests.support.proxy import StallingProxy
from tests.support.rate_limits import (
    key_prefix,
    private_redis,
    quota_of,
    retry_after,
    shared_redis,
)
from tests.support.tokens import SECRET

LIMIT = 10
METRICS_TOKEN = "metrics-token-" + "m" * 32
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}
# What a request may take while the limiter's storage is out: the storage's own deadline
# (50 ms by default) and the request itself, with room for a noisy machine.
ANSWERED_WITHIN = 2.0


def _redis_settings(database_url: str, redis_url: str, prefix: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "rate_limit_storage_url": redis_url,
        "rate_limit_key_prefix": prefix,
        "rate_limit_user_requests": LIMIT,
        "rate_limit_user_window_seconds": 3600,
        **overrides,
    }
    return make_settings(database_url, **values)


def _service_env(database_url: str, redis_url: str, prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "RATE_LIMIT_STORAGE_URL": redis_url,
        "RATE_LIMIT_KEY_PREFIX": prefix,
        "RATE_LIMIT_USER_REQUESTS": str(LIMIT),
        "RATE_LIMIT_USER_WINDOW_SECONDS": "3600",
        "METRICS_TOKEN": METRICS_TOKEN,
    }


def test_two_instances_draw_one_users_requests_from_one_budget(service_database_url: str) -> None:
    redis_url, prefix = shared_redis(), key_prefix()
    user = UserFactory.create()
    with ExitStack() as stack:
        urls = [
            stack.enter_context(
                serving(create_app(_redis_settings(service_database_url, redis_url, prefix)))
            )
            for _ in range(2)
        ]
        answers = [
            httpx.get(f"{urls[n % 2]}/api/tasks", headers=user.headers, timeout=30)
            for n in range(2 * LIMIT)
        ]

    assert [a.status_code for a in answers] == [200] * LIMIT + [429] * LIMIT
    remaining = [q.remaining for a in answers if (q := quota_of(a))]
    assert remaining == [*range(LIMIT - 1, -1, -1), *[0] * LIMIT]


def test_the_workers_of_one_instance_share_the_budget_too(service_database_url: str) -> None:
    redis_url, prefix = shared_redis(), key_prefix()
    user = UserFactory.create()
    env = _service_env(service_database_url, redis_url, prefix)
    with service_process("--no-migrate", "--workers", "2", env=env) as service:
        # A new connection each time, so that both workers answer some.
        answers = [
            httpx.get(f"{service.base_url}/api/tasks", headers=user.headers, timeout=30)
            for _ in range(3 * LIMIT)
        ]
        scraped = httpx.get(f"{service.base_url}/metrics", headers=SCRAPER, timeout=30).text

    assert [a.status_code for a in answers].count(200) == LIMIT
    assert [a.status_code for a in answers].count(429) == 2 * LIMIT
    assert _sample(scraped, "tasks_api_rate_limited_total", policy="user") == 2 * LIMIT


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_a_client_that_waits_retry_after_gets_through_again(
    service_database_url: str, storage: str
) -> None:
    redis_url = shared_redis() if storage == "redis" else "memory://"
    settings = _redis_settings(
        service_database_url,
        redis_url,
        key_prefix(),
        rate_limit_user_requests=3,
        rate_limit_user_window_seconds=2,
    )
    user = UserFactory.create()
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as api:
        while True:  # until a refusal: the window may slide while the budget is spent
            refused = api.get("/api/tasks", headers=user.headers)
            if refused.status_code == 429:
                break
        wait = retry_after(refused)
        assert 1 <= wait <= 2 * 2 + 1  # within two windows: the last one ages out over one
        time.sleep(wait)

        again = api.get("/api/tasks", headers=user.headers)

    assert again.status_code == 200
    quota = quota_of(again)
    assert quota is not None
    assert quota.remaining >= 0


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def _timed_get(url: str, headers: dict[str, str]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(url, headers=headers, timeout=30)
    return response, time.monotonic() - started


def _load(service: RunningService, seconds: float) -> list[tuple[httpx.Response, float]]:
    """Requests from 4 clients (each its own user, within the limit) for `seconds`."""
    users = [UserFactory.create() for _ in range(4)]
    deadline = time.monotonic() + seconds

    def client(headers: dict[str, str]) -> list[tuple[httpx.Response, float]]:
        answers = []
        while time.monotonic() < deadline:
            answers.append(_timed_get(f"{service.base_url}/api/tasks", headers))
        return answers

    with ThreadPoolExecutor(4) as pool:
        return [answer for got in pool.map(client, [u.headers for u in users]) for answer in got]


def _outage_lines(service: RunningService) -> list[str]:
    return re.findall(r"rate limits are (?:off|on again)[^\n]*", service.output())


@pytest.fixture
def redis_to_stop(service_database_url: str) -> Iterator[tuple[Any, RunningService]]:
    with private_redis() as redis_server:
        env = _service_env(service_database_url, redis_server.url, key_prefix())
        env["RATE_LIMIT_USER_REQUESTS"] = "100000"
        with service_process("--no-migrate", env=env) as service:
            yield redis_server, service


def test_redis_stopped_mid_load_lets_requests_through_then_limits_come_back(
    redis_to_stop: tuple[Any, RunningService],
) -> None:
    redis_server, service = redis_to_stop
    with ThreadPoolExecutor(1) as background:
        load = background.submit(_load, service, 4.0)
        time.sleep(1.0)
        redis_server.stop()
        answers = load.result()
        scraped = httpx.get(f"{service.base_url}/metrics", headers=SCRAPER, timeout=30).text

        assert answers
        assert {a.status_code for a, _ in answers} == {200}
        assert max(took for _, took in answers) < ANSWERED_WITHIN
        # Before the outage the answers carried the fields; during it, none did.
        assert quota_of(answers[0][0]) is not None
        assert quota_of(answers[-1][0]) is None
        assert _sample(scraped, "tasks_api_rate_limit_storage_errors_total") >= 1
        [logged] = _outage_lines(service)  # once, however many requests saw the outage
        assert "rate limits are off" in logged

        redis_server.start()  # same port: the service finds it again by itself
        user = UserFactory.create()
        deadline = time.monotonic() + 10
        while (
            quota_of(again := _timed_get(f"{service.base_url}/api/tasks", user.headers)[0]) is None
        ):
            assert time.monotonic() < deadline, "limits did not come back"
            time.sleep(0.2)
        assert again.status_code == 200
        assert "rate limits are on again" in _outage_lines(service)[-1]


def test_a_redis_that_stops_answering_costs_each_request_at_most_its_deadline(
    service_database_url: str,
) -> None:
    redis_url = shared_redis()
    with StallingProxy(redis_url).running() as proxy:
        env = _service_env(
            service_database_url, proxy.url.render_as_string(hide_password=False), key_prefix()
        )
        with service_process("--no-migrate", env=env) as service:
            user = UserFactory.create()
            counted, _ = _timed_get(f"{service.base_url}/api/tasks", user.headers)
            proxy.stall()
            answers = [_timed_get(f"{service.base_url}/api/tasks", user.headers) for _ in range(20)]
            scraped = httpx.get(f"{service.base_url}/metrics", headers=SCRAPER, timeout=30).text
            logged = _outage_lines(service)
            proxy.resume()

    assert quota_of(counted) is not None
    assert {a.status_code for a, _ in answers} == {200}
    assert all(quota_of(a) is None for a, _ in answers)
    assert max(took for _, took in answers) < ANSWERED_WITHIN
    assert _sample(scraped, "tasks_api_rate_limit_storage_errors_total") >= 1
    assert len(logged) == 1
    assert "rate limits are off" in logged[0]


def test_a_count_queued_behind_a_stalled_one_is_answered_within_its_own_deadline() -> None:
    """The counts asked while a round trip is under way go in the next one. When Redis stalls,
    each caller still has its answer (a TimeoutError, and the request is let through) by its
    own deadline: not one whole deadline after the round trip it queued behind."""
    timeout = 0.5

    async def scenario(url: str, proxy: StallingProxy) -> list[float]:
        counters = redis_counters(url, timeout, key_prefix())
        loop = asyncio.get_running_loop()
        try:
            await counters.hit("before", 5, 100)  # connected, and the script loaded
            proxy.stall()

            async def timed_out_after(delay: float) -> float:
                await asyncio.sleep(delay)
                asked = loop.time()
                with pytest.raises(TimeoutError):
                    await counters.hit(f"asked after {delay}", 5, 100)
                return loop.time() - asked

            asked = asyncio.gather(*(timed_out_after(d) for d in (0, 0.2, 0.4)))
            return list(await asyncio.wait_for(asked, 10))  # never answered: fails here
        finally:
            await counters.close()

    with StallingProxy(shared_redis()).running() as proxy:
        url = proxy.url.render_as_string(hide_password=False)
        took = asyncio.run(scenario(url, proxy))

    assert max(took) < timeout + 0.15, took
