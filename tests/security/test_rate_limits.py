"""Rule: no caller can send requests without bound (OWASP API4:2023, unrestricted resource
consumption), and no client can pick whose budget it spends.

Two policies, both on by default, each a setting:

- `"user"`: every `/api` request of a verified user counts against that user (600 per 60 s by
  default), whatever it turns out to be (a 200, a 404, a 400);
- `"address"`: every `/api` request without a valid token (every 401, and an oversized body
  without one) counts against the client's address (60 per 60 s), so guessing tokens and
  anonymous floods slow down too. A verified user is never refused for what others sent
  from the same address.

Over the limit the answer is a 429 problem, whatever else is wrong with the request, with
`Retry-After` (seconds; a client that waits that long is not refused again for this limit).
Every answer the guard counted carries `RateLimit-Policy` and `RateLimit`
(draft-ietf-httpapi-ratelimit-headers-10) as Structured Fields. The probes, the docs and the
contract are outside `/api` and outside both policies.

The client's address is the socket's peer. `X-Forwarded-For` and `Forwarded` count only when
the peer is one of TRUSTED_PROXIES, and then only as far as the rightmost address no trusted
proxy wrote: anything a client writes to the left of that is ignored.

Counting is shared by every instance through Redis: tests/integration/test_rate_limits_shared.py.
"""

import asyncio
import ipaddress
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from service.config import Settings
from service.http import rate_limit_memory
from service.http.client_address import IPNetwork, client_address
from service.http.rate_limit_memory import SweptMemoryStorage
from service.http.rate_limits import ADDRESS_BUCKETS, KEPT_COUNTER_NAMES, RateLimits
from service.main import create_app
from service.metrics import Metrics
from tests.support.apps import make_settings
from tests.support.factories import ApiUser, UserFactory
from tests.support.live import RunningService, service_process, serving
from tests.support.operations import SECURED_OPERATIONS, Operation
from tests.support.rate_limits import Quota, quota_of, retry_after
from tests.support.tokens import SECRET, bearer, mint

USER_LIMIT = 5
ADDRESS_LIMIT = 3
# A day: the in-memory counters' windows are aligned to the clock, and a test that ran across
# a window's end would see part of its count fall away. (The window's own rules are tested
# with short windows in tests/integration/test_rate_limits_shared.py.)
WINDOW = 86_400
MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def limited(service_database_url: str) -> Iterator[httpx.Client]:
    """The app with small limits, fresh for each test (its address budget starts full)."""
    settings = make_settings(
        service_database_url,
        rate_limit_user_requests=USER_LIMIT,
        rate_limit_user_window_seconds=WINDOW,
        rate_limit_address_requests=ADDRESS_LIMIT,
        rate_limit_address_window_seconds=WINDOW,
        cors_origins=["https://app.example"],
    )
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def _list(api: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return api.get("/api/tasks", headers=headers)


def _use_up(api: httpx.Client, headers: dict[str, str], times: int) -> list[httpx.Response]:
    return [_list(api, headers) for _ in range(times)]


def assert_refused(response: httpx.Response, policy: str, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 429
    assert problem["title"] == "Too Many Requests"
    assert 1 <= retry_after(response) <= 2 * WINDOW
    assert quota_of(response) == Quota(policy, limit, WINDOW, 0, retry_after(response))


# --- On by default ---------------------------------------------------------------------------


def test_both_policies_are_on_by_default_with_generous_limits() -> None:
    defaults = Settings(database_url="postgresql://nowhere/db")
    assert (defaults.rate_limit_user_requests, defaults.rate_limit_user_window_seconds) == (
        600,
        60,
    )
    assert (defaults.rate_limit_address_requests, defaults.rate_limit_address_window_seconds) == (
        60,
        60,
    )
    assert defaults.trusted_proxies == []


# --- Per verified user -----------------------------------------------------------------------


def test_each_answer_to_a_user_says_the_policy_and_what_is_left(
    limited: httpx.Client, alice: ApiUser
) -> None:
    answers = _use_up(limited, alice.headers, USER_LIMIT)

    assert [a.status_code for a in answers] == [200] * USER_LIMIT
    quotas = [quota_of(a) for a in answers]
    assert [q.remaining for q in quotas if q] == [4, 3, 2, 1, 0]
    for quota in quotas:
        assert quota is not None
        assert (quota.policy, quota.limit, quota.window) == ("user", USER_LIMIT, WINDOW)
        assert 0 < quota.reset <= WINDOW
    assert answers[0].headers["RateLimit-Policy"] == f'"user";q={USER_LIMIT};w={WINDOW}'


def test_a_user_over_the_limit_gets_a_429_problem_with_retry_after(
    limited: httpx.Client, alice: ApiUser
) -> None:
    _use_up(limited, alice.headers, USER_LIMIT)

    assert_refused(_list(limited, alice.headers), "user", USER_LIMIT)


def test_a_refused_request_changes_nothing(
    limited: httpx.Client, alice: ApiUser, db_engine: Engine
) -> None:
    _use_up(limited, alice.headers, USER_LIMIT)

    refused = limited.post("/api/tasks", json={"title": "one too many"}, headers=alice.headers)

    assert_refused(refused, "user", USER_LIMIT)
    with db_engine.connect() as connection:
        stored = connection.execute(
            text("SELECT count(*) FROM tasks WHERE title = 'one too many'")
        ).scalar_one()
    assert stored == 0


def test_every_request_of_a_user_counts_whatever_its_answer(
    limited: httpx.Client, alice: ApiUser
) -> None:
    answers = [
        limited.get(f"/api/tasks/{MISSING}", headers=alice.headers),  # 404
        limited.get("/api/tasks", params={"limit": "-1"}, headers=alice.headers),  # 400
        limited.post("/api/tasks", json={"title": ""}, headers=alice.headers),  # 400
        limited.post("/api/tasks", content=b"x" * 70_000, headers=alice.headers),  # 413
        limited.delete(f"/api/tasks/{MISSING}", headers=alice.headers),  # 404
    ]

    assert [a.status_code for a in answers] == [404, 400, 400, 413, 404]
    assert [q.remaining for a in answers if (q := quota_of(a))] == [4, 3, 2, 1, 0]
    assert_refused(_list(limited, alice.headers), "user", USER_LIMIT)


def test_over_the_limit_the_429_comes_before_any_other_answer(
    limited: httpx.Client, alice: ApiUser
) -> None:
    _use_up(limited, alice.headers, USER_LIMIT)

    for response in (
        limited.get(f"/api/tasks/{MISSING}", headers=alice.headers),
        limited.post("/api/tasks", json={"title": ""}, headers=alice.headers),
        limited.post("/api/tasks", content=b"x" * 70_000, headers=alice.headers),
        limited.get("/api/tasks", params={"unknown": "1"}, headers=alice.headers),
    ):
        assert_refused(response, "user", USER_LIMIT)


def test_each_user_has_a_budget_of_their_own(
    limited: httpx.Client, alice: ApiUser, bob: ApiUser
) -> None:
    _use_up(limited, alice.headers, USER_LIMIT + 2)

    answer = _list(limited, bob.headers)

    assert answer.status_code == 200
    quota = quota_of(answer)
    assert quota is not None
    assert (quota.policy, quota.remaining) == ("user", USER_LIMIT - 1)


def test_a_new_token_for_the_same_user_draws_on_the_same_budget(limited: httpx.Client) -> None:
    sub = UserFactory.create().sub
    _use_up(limited, bearer(mint(sub)), USER_LIMIT)

    assert_refused(_list(limited, bearer(mint(sub, lifetime=600))), "user", USER_LIMIT)


# --- Per address, for requests without a valid token ---------------------------------------


WITHOUT_A_VALID_TOKEN: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer not-a-token"},
    bearer(mint(secret="another-secret-0123456789abcdef0123456789abcdef")),
    bearer(mint(lifetime=-120)),
]


def test_every_401_counts_against_the_address(limited: httpx.Client) -> None:
    answers = [_list(limited, headers) for headers in WITHOUT_A_VALID_TOKEN[:ADDRESS_LIMIT]]

    assert [a.status_code for a in answers] == [401] * ADDRESS_LIMIT
    quotas = [quota_of(a) for a in answers]
    assert [q.remaining for q in quotas if q] == [2, 1, 0]
    assert all(q is not None and (q.policy, q.limit) == ("address", 3) for q in quotas)
    assert_refused(_list(limited, WITHOUT_A_VALID_TOKEN[3]), "address", ADDRESS_LIMIT)


def test_an_address_over_the_limit_is_refused_on_every_operation(limited: httpx.Client) -> None:
    _use_up(limited, {}, ADDRESS_LIMIT)

    for operation in SECURED_OPERATIONS:
        response = limited.request(operation.method, operation.url(), json=operation.example_body)
        assert_refused(response, "address", ADDRESS_LIMIT)


def test_an_oversized_body_without_a_token_counts_against_the_address(
    limited: httpx.Client,
) -> None:
    answers = [limited.post("/api/tasks", content=b"x" * 70_000) for _ in range(ADDRESS_LIMIT + 1)]

    assert [a.status_code for a in answers[:ADDRESS_LIMIT]] == [413] * ADDRESS_LIMIT
    assert [q.policy for a in answers[:ADDRESS_LIMIT] if (q := quota_of(a))] == ["address"] * 3
    assert_refused(answers[-1], "address", ADDRESS_LIMIT)


def test_a_user_is_not_refused_for_the_anonymous_requests_of_their_address(
    limited: httpx.Client, alice: ApiUser
) -> None:
    _use_up(limited, {}, ADDRESS_LIMIT + 5)

    answer = _list(limited, alice.headers)

    assert answer.status_code == 200
    quota = quota_of(answer)
    assert quota is not None
    assert quota.policy == "user"


def test_probes_docs_and_the_contract_are_outside_both_policies(
    limited: httpx.Client, alice: ApiUser
) -> None:
    _use_up(limited, {}, ADDRESS_LIMIT + 1)
    _use_up(limited, alice.headers, USER_LIMIT + 1)

    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        for headers in ({}, alice.headers):
            answer = limited.get(path, headers=headers)
            assert answer.status_code == 200, path
            assert quota_of(answer) is None, path


# --- The fields, on every answer ----------------------------------------------------------


def _requests_of(operation: Operation, user: ApiUser) -> list[dict[str, Any]]:
    """The operation as a client sends it, and as a careless or hostile one does."""
    good = {"json": operation.example_body, "headers": user.headers}
    return [
        good,
        {"json": operation.example_body},  # 401
        {"json": operation.example_body, "headers": bearer("x.y.z")},  # 401
        {"content": b"x" * 70_000, "headers": user.headers},  # 413
        {"json": operation.example_body, "headers": user.headers, "params": {"x": "1"}},  # 400
    ]


@pytest.mark.parametrize("operation", SECURED_OPERATIONS, ids=str)
def test_every_answer_of_every_operation_carries_both_fields_as_structured_fields(
    service_database_url: str, operation: Operation
) -> None:
    settings = make_settings(
        service_database_url, rate_limit_user_requests=100, rate_limit_address_requests=100
    )
    user = UserFactory.create()
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as api:
        task = api.post("/api/tasks", json={"title": "t"}, headers=user.headers).json()
        for request in _requests_of(operation, user):
            answer = api.request(operation.method, operation.url(task["id"]), **request)
            quota = quota_of(answer)  # parses both fields, or fails
            assert quota is not None, (operation, answer.status_code)
            assert quota.policy == ("user" if answer.status_code != 401 else "address")


def test_browsers_may_read_the_fields(limited: httpx.Client, alice: ApiUser) -> None:
    answer = limited.get("/api/tasks", headers={**alice.headers, "Origin": "https://app.example"})

    exposed = {
        name.strip().lower() for name in answer.headers["access-control-expose-headers"].split(",")
    }
    assert {"ratelimit", "ratelimit-policy", "retry-after"} <= exposed


# --- Whose address -------------------------------------------------------------------------


@contextmanager
def _address_limited(database_url: str, **settings: str) -> Iterator[RunningService]:
    """`tasks-api serve` as deployed, with uvicorn's own options and a small address limit."""
    env = {
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "RATE_LIMIT_ADDRESS_REQUESTS": str(ADDRESS_LIMIT),
        "RATE_LIMIT_ADDRESS_WINDOW_SECONDS": str(WINDOW),
        **settings,
    }
    with service_process("--no-migrate", env=env) as service:
        yield service


@pytest.fixture
def served_alone(service_database_url: str) -> Iterator[RunningService]:
    """No trusted proxy."""
    with _address_limited(service_database_url) as service:
        yield service


def test_without_trusted_proxies_forwarding_fields_do_not_change_the_bucket(
    served_alone: RunningService,
) -> None:
    spoofed = [
        {"X-Forwarded-For": "203.0.113.1"},
        {"X-Forwarded-For": "198.51.100.2, 203.0.113.2"},
        {"Forwarded": "for=203.0.113.3"},
        {"X-Real-IP": "203.0.113.4", "X-Forwarded-For": "::1"},
    ]
    with httpx.Client(base_url=served_alone.base_url, timeout=30) as api:
        answers = [_list(api, headers) for headers in spoofed]

    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert [q.remaining for a in answers if (q := quota_of(a))] == [2, 1, 0, 0]


@pytest.fixture
def served_behind_a_proxy(service_database_url: str) -> Iterator[RunningService]:
    """As deployed behind a proxy on this host: TRUSTED_PROXIES names it."""
    with _address_limited(service_database_url, TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8") as service:
        yield service


def test_behind_a_trusted_proxy_each_client_address_has_its_own_bucket(
    served_behind_a_proxy: RunningService,
) -> None:
    with httpx.Client(base_url=served_behind_a_proxy.base_url, timeout=30) as api:
        first = _use_up(api, {"X-Forwarded-For": "203.0.113.7"}, ADDRESS_LIMIT + 1)
        other = _list(api, {"X-Forwarded-For": "203.0.113.8"})

    assert [a.status_code for a in first] == [401] * ADDRESS_LIMIT + [429]
    assert other.status_code == 401
    quota = quota_of(other)
    assert quota is not None
    assert (quota.policy, quota.remaining) == ("address", ADDRESS_LIMIT - 1)


def test_what_a_client_writes_left_of_its_address_does_not_change_the_bucket(
    served_behind_a_proxy: RunningService,
) -> None:
    # The client sent its own X-Forwarded-For; the trusted proxies appended the address
    # they saw (203.0.113.9) and their own (10.1.2.3): only that address counts.
    with httpx.Client(base_url=served_behind_a_proxy.base_url, timeout=30) as api:
        answers = [
            _list(api, {"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.9, 10.1.2.3"})
            for n in range(ADDRESS_LIMIT)
        ]
        answers.append(_list(api, {"Forwarded": 'for="[2001:db8::1]", for=203.0.113.9'}))

    assert [a.status_code for a in answers] == [401] * ADDRESS_LIMIT + [429]


# A request as the app sees it: the socket's peer and the fields the proxies wrote.
def _scope(peer: str, *fields: tuple[str, str]) -> dict[str, Any]:
    headers = [(name.lower().encode(), value.encode()) for name, value in fields]
    return {"type": "http", "client": (peer, 50000), "headers": headers}


TRUSTED: list[IPNetwork] = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]


@pytest.mark.parametrize(
    ("peer", "fields", "trusted", "client"),
    [
        ("192.0.2.1", [("X-Forwarded-For", "203.0.113.1")], [], "192.0.2.1"),
        ("10.0.0.1", [("X-Forwarded-For", "203.0.113.1")], [], "10.0.0.1"),
        ("192.0.2.1", [("X-Forwarded-For", "203.0.113.1")], TRUSTED, "192.0.2.1"),
        ("10.0.0.1", [("X-Forwarded-For", "203.0.113.1")], TRUSTED, "203.0.113.1"),
        (
            "10.0.0.1",
            [("X-Forwarded-For", "1.1.1.1, 203.0.113.1, 10.2.2.2")],
            TRUSTED,
            "203.0.113.1",
        ),
        (
            "10.0.0.1",
            [("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "203.0.113.1")],
            TRUSTED,
            "203.0.113.1",
        ),
        (
            "10.0.0.1",
            [("Forwarded", 'for=1.1.1.1, for="203.0.113.1:4711"')],
            TRUSTED,
            "203.0.113.1",
        ),
        ("10.0.0.1", [("Forwarded", 'for="[2001:db8::7]:80";proto=https')], TRUSTED, "2001:db8::7"),
        (
            "10.0.0.1",
            [("Forwarded", "for=203.0.113.1"), ("X-Forwarded-For", "1.1.1.1")],
            TRUSTED,
            "203.0.113.1",
        ),
        ("10.0.0.1", [("X-Forwarded-For", "10.3.3.3")], TRUSTED, "10.3.3.3"),
        ("10.0.0.1", [("X-Forwarded-For", "unknown, 10.3.3.3")], TRUSTED, "10.3.3.3"),
        ("10.0.0.1", [("X-Forwarded-For", "203.0.113.1, garbage")], TRUSTED, "10.0.0.1"),
        ("10.0.0.1", [], TRUSTED, "10.0.0.1"),
        ("::1", [("X-Forwarded-For", "2001:db8::9")], TRUSTED, "2001:db8::9"),
    ],
)
def test_the_client_is_the_rightmost_address_no_trusted_proxy_wrote(
    peer: str, fields: list[tuple[str, str]], trusted: list[IPNetwork], client: str
) -> None:
    assert client_address(_scope(peer, *fields), trusted) == ipaddress.ip_address(client)


def _address_key(settings: Settings) -> Any:
    return RateLimits(settings, Metrics.off()).address_key


def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_itself(settings: Settings) -> None:
    address_key = _address_key(settings)
    same = [ipaddress.ip_address(a) for a in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9")]
    other = ipaddress.ip_address("2001:db8:1:3::1")

    assert address_key(same[0]) == address_key(same[1]) != address_key(other)
    mapped = ipaddress.ip_address("::ffff:203.0.113.5")
    assert address_key(mapped) == address_key(ipaddress.ip_address("203.0.113.5"))


def test_any_number_of_addresses_counts_in_a_bounded_number_of_buckets(
    settings: Settings,
) -> None:
    address_key = _address_key(settings)
    rng = random.Random(18)
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(100_000)
    ]
    addresses += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(100_000)]

    keys = {address_key(address) for address in addresses}

    assert len(keys) <= ADDRESS_BUCKETS
    assert len(keys) > ADDRESS_BUCKETS * 0.9  # spread, not piled into a few


def test_which_addresses_share_a_bucket_depends_on_a_secret(settings: Settings) -> None:
    other = make_settings(settings.database_url or "", jwt_secret="z" * 48)
    addresses = [ipaddress.IPv4Address(n) for n in range(1_000, 1_100)]

    ours, theirs = _address_key(settings), _address_key(other)

    assert [ours(a) for a in addresses] != [theirs(a) for a in addresses]


# --- Bounded memory, bounded time ------------------------------------------------------------


def test_counters_of_past_windows_are_dropped_so_memory_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In memory, each counter lives two windows: after that it is dropped, whether or not its
    user or address comes back."""
    monkeypatch.setattr(rate_limit_memory, "SWEEP_SECONDS", 0.0)
    monkeypatch.setattr(rate_limit_memory, "SWEEP_SLICE", 100)

    async def scenario() -> None:
        storage = SweptMemoryStorage()
        for n in range(2_000):
            assert storage.count(f"address/{n}", 10, 1)[0]
        assert storage.counters() == 2_000
        await asyncio.sleep(2.1)  # two windows of 1 s: every counter has expired

        storage.count("address/late", 10, 1)  # any count starts a sweep when one is due
        for _ in range(2_000 // 100 + 5):  # the sweep yields after each slice
            await asyncio.sleep(0)

        assert storage.counters() == 1
        await storage.close()

    asyncio.run(scenario())


def test_the_names_of_the_counters_of_any_number_of_users_take_bounded_memory(
    settings: Settings,
) -> None:
    """Each user's counter name is remembered (it is made on every request otherwise), up to a
    bound: past it, the names are forgotten and made again, and the counting goes on."""
    on = make_settings(settings.database_url or "", rate_limit_user_requests=600)
    limits = RateLimits(on, Metrics.off())

    async def scenario() -> None:
        for n in range(KEPT_COUNTER_NAMES + 1_000):
            verdict = await limits.count_user(f"user-{n}")
            assert verdict is not None
            assert verdict.allowed
            assert len(limits._counters) <= KEPT_COUNTER_NAMES
        again = await limits.count_user("user-0")  # its name was forgotten, its count was not
        assert again is not None
        quota = quota_of(httpx.Response(200, headers=again.headers))
        assert quota is not None
        assert quota.remaining == 600 - 2
        await limits.close()

    asyncio.run(scenario())


def test_a_count_never_walks_the_counters_held() -> None:
    """With every address bucket in use, a count is as cheap as with one: no walk over the
    counters follows it (limits' own in-memory storage started one after nearly every count,
    milliseconds each at this size)."""

    async def scenario() -> None:
        storage = SweptMemoryStorage()
        for n in range(ADDRESS_BUCKETS):
            storage.count(f"address/{n}", 10, 60)
        before = asyncio.all_tasks()

        assert storage.count("address/0", 10, 60)[0]

        assert asyncio.all_tasks() == before
        await storage.close()

    asyncio.run(scenario())
