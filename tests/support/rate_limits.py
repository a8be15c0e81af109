"""Rate limits as a client reads them, and the Redis the shared-limit tests count in."""

import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import http_sf
import httpx
import pytest
import redis

from tests.support.live import free_port
from tests.support.operations import resolve

# The machine's Redis (and CI's): the tests count under a key prefix of their own.
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_MISSING = (
    "no Redis answers at 127.0.0.1:6379 (install the Debian package redis-server and start it)"
)


@dataclass(frozen=True)
class Quota:
    """The two RateLimit fields of one answer (draft-ietf-httpapi-ratelimit-headers-10)."""

    policy: str
    limit: int  # q
    window: int  # w
    remaining: int  # r
    reset: int  # t


def _pattern(schema: str) -> re.Pattern[str]:
    return re.compile(resolve({"$ref": f"#/components/schemas/{schema}"})["pattern"])


POLICY_PATTERN = _pattern("RateLimitPolicyField")
FIELD_PATTERN = _pattern("RateLimitField")


def quota_of(response: httpx.Response) -> Quota | None:
    """The answer's quota, or None when it carries no RateLimit fields. Each field must parse
    as the draft's Structured Field (a List of one String item with integer parameters) and
    match the contract's pattern; the two must name the same policy."""
    policy_field = response.headers.get("RateLimit-Policy")
    field = response.headers.get("RateLimit")
    assert (policy_field is None) == (field is None), dict(response.headers)
    if policy_field is None or field is None:
        return None
    assert POLICY_PATTERN.fullmatch(policy_field), policy_field
    assert FIELD_PATTERN.fullmatch(field), field
    name, policy = _member(policy_field)
    same_name, state = _member(field)
    assert same_name == name
    return Quota(name, policy["q"], policy["w"], state["r"], state["t"])


def _member(field: str) -> tuple[str, dict[str, int]]:
    """A List of one member: a String (not a Token: the draft's policy names are sf-strings)
    with integer parameters."""
    parsed = http_sf.parse(field.encode("ascii"), tltype="list")
    assert isinstance(parsed, list), field
    assert len(parsed) == 1, field
    member = parsed[0]
    assert isinstance(member, tuple), field
    name, parameters = member
    assert type(name) is str, f"{name!r} is not a String"
    assert isinstance(parameters, dict), field
    integers = {key: value for key, value in parameters.items() if type(value) is int}
    assert integers == parameters, field
    return name, integers


def retry_after(response: httpx.Response) -> int:
    value = response.headers["Retry-After"]
    assert value.isascii(), value
    assert value.isdigit(), value
    return int(value)


def redis_answers(url: str = REDIS_URL) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def shared_redis() -> str:
    """The machine's Redis (skips, naming the package, where none answers)."""
    if not redis_answers():
        pytest.skip(REDIS_MISSING)
    return REDIS_URL


def key_prefix() -> str:
    """A prefix no other test (or run) counts under."""
    return f"tasks-api-test-{uuid.uuid4().hex}"


@dataclass
class PrivateRedis:
    """A Redis server of the test's own, which it can stop and start again on the same port."""

    port: int
    directory: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        # Nothing kept on disk, as the machine's own Redis.
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", self.directory]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not redis_answers(self.url):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server on a free loopback port (skips without the binary, naming its package)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    with tempfile.TemporaryDirectory() as directory:
        server = PrivateRedis(free_port(), directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()
