"""The attack catalogue: every known way to present a forged, altered, stale or misplaced
credential, each tried on every operation of the contract, each answered 401 with the data
unchanged afterwards.

The service under attack is hardened the way a production deployment is: HS256 (JWT_SECRET)
*and* a JWKS with Ed25519 and RSA keys, with JWT_ISSUER and JWT_AUDIENCE enforced. Every
attack token is otherwise valid, so each one tests exactly the flaw it names.

docs/SECURITY.md lists these attacks by name; a test below keeps the two in step.
"""

import base64
import hashlib
import hmac
import json
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, text

from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import ApiUser, UserFactory
from tests.support.keys import JwksServer, SigningKey, new_key
from tests.support.live import serving
from tests.support.operations import SECURED_OPERATIONS, Operation
from tests.support.tokens import SECRET

ISSUER = "https://auth.example.com"
AUDIENCE = "https://tasks.example.com"
SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "SECURITY.md"


@dataclass
class Keys:
    eddsa: SigningKey
    rsa: SigningKey
    attacker: SigningKey  # a key the service has never published
    attacker_jwks: JwksServer  # serves the attacker's key; must never be asked for it


@dataclass
class Attempt:
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    token_presented: bool = True


def _claims(**changes: Any) -> dict[str, Any]:
    """Claims that would be accepted; each attack changes exactly one thing."""
    now = int(time.time())
    claims = {"sub": "victim-subject", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    return {k: v for k, v in {**claims, **changes}.items() if v is not None}


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _hs256(claims: dict[str, Any], secret: str | bytes = SECRET, **header: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=header or None)


def _hmac_under_header(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HMAC-SHA256 signature under whatever header an attacker chooses."""
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _public_pem(key: SigningKey) -> bytes:
    pem: bytes = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def _bearer(token: str) -> Attempt:
    return Attempt(headers={"Authorization": f"Bearer {token}"})


def _tampered(keys: Keys) -> str:
    header, _, signature = keys.eddsa.sign(_claims()).split(".")
    return f"{header}.{_b64(_claims(sub='someone-else'))}.{signature}"


# Each attack builds its request when the test runs, so time-based cases stay what they say.
ATTACKS: dict[str, Callable[[Keys], Attempt]] = {
    # The signature algorithm
    "alg none, unsigned": lambda k: _bearer(
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    ),
    "alg none, with a signature part": lambda k: _bearer(
        f"{_b64({'alg': 'none'})}.{_b64(_claims())}.{_b64(b'signature')}"
    ),
    "HS256 signature under an RS256 header": lambda k: _bearer(
        _hmac_under_header({"alg": "RS256", "kid": k.rsa.kid}, _claims(), SECRET.encode())
    ),
    "HS256 signature under an EdDSA header": lambda k: _bearer(
        _hmac_under_header({"alg": "EdDSA", "kid": k.eddsa.kid}, _claims(), SECRET.encode())
    ),
    "public RSA key used as the HMAC secret": lambda k: _bearer(
        _hmac_under_header({"alg": "HS256", "kid": k.rsa.kid}, _claims(), _public_pem(k.rsa))
    ),
    "public Ed25519 key used as the HMAC secret": lambda k: _bearer(
        _hmac_under_header({"alg": "HS256"}, _claims(), _public_pem(k.eddsa))
    ),
    "HS512 with the right secret": lambda k: _bearer(
        _hmac_under_header({"alg": "HS512"}, _claims(), SECRET.encode())
    ),
    # Headers that ask the verifier to do more, or to trust the token's own key
    "unknown crit header": lambda k: _bearer(k.eddsa.sign(_claims(), crit=["exp2"], exp2=1)),
    "jku pointing at the attacker's JWKS": lambda k: _bearer(
        k.attacker.sign(_claims(), jku=k.attacker_jwks.url)
    ),
    "x5u pointing at the attacker's certificate": lambda k: _bearer(
        k.attacker.sign(_claims(), x5u=k.attacker_jwks.url + "/cert.pem")
    ),
    "embedded jwk of the attacker's key": lambda k: _bearer(
        k.attacker.sign(_claims(), jwk=k.attacker.public_jwk)
    ),
    "attacker's key under the victim key's kid": lambda k: _bearer(
        k.attacker.sign(_claims(), kid=k.eddsa.kid)
    ),
    "kid with path traversal": lambda k: _bearer(
        k.attacker.sign(_claims(), kid="../../../../etc/passwd")
    ),
    "kid with SQL": lambda k: _bearer(k.attacker.sign(_claims(), kid="x' OR '1'='1'; --")),
    # Claims
    "expired": lambda k: _bearer(k.eddsa.sign(_claims(exp=int(time.time()) - 60))),
    "not yet valid (nbf)": lambda k: _bearer(k.eddsa.sign(_claims(nbf=int(time.time()) + 60))),
    "missing exp": lambda k: _bearer(k.eddsa.sign(_claims(exp=None))),
    "missing sub": lambda k: _bearer(k.eddsa.sign(_claims(sub=None))),
    "empty sub": lambda k: _bearer(k.eddsa.sign(_claims(sub=""))),
    "wrong iss": lambda k: _bearer(k.eddsa.sign(_claims(iss="https://evil.example"))),
    "missing iss": lambda k: _bearer(k.eddsa.sign(_claims(iss=None))),
    "wrong aud": lambda k: _bearer(k.eddsa.sign(_claims(aud="https://other.example"))),
    "missing aud": lambda k: _bearer(k.eddsa.sign(_claims(aud=None))),
    # The token as a string
    "payload tampered after signing": lambda k: _bearer(_tampered(k)),
    "signed with the wrong secret": lambda k: _bearer(_hs256(_claims(), "y" * 48)),
    "signed with an unpublished key": lambda k: _bearer(k.attacker.sign(_claims())),
    "truncated": lambda k: _bearer(k.eddsa.sign(_claims())[:-10]),
    "malformed": lambda k: _bearer("not.a.jwt"),
    "two segments": lambda k: _bearer(".".join(k.eddsa.sign(_claims()).split(".")[:2])),
    "over 8 KiB": lambda k: _bearer(k.eddsa.sign(_claims(padding="x" * 9000))),
    # Where and how the token travels
    "no Authorization header": lambda k: Attempt(token_presented=False),
    "empty Authorization header": lambda k: Attempt({"Authorization": ""}, token_presented=False),
    "wrong scheme": lambda k: Attempt(
        {"Authorization": f"Basic {_b64(b'user:pass')}"}, token_presented=False
    ),
    "token without a scheme": lambda k: Attempt(
        {"Authorization": _hs256(_claims())}, token_presented=False
    ),
    "token in the query string": lambda k: Attempt(
        params={"access_token": _hs256(_claims())}, token_presented=False
    ),
    "token in a cookie": lambda k: Attempt(
        cookies={"access_token": _hs256(_claims()), "token": _hs256(_claims())},
        token_presented=False,
    ),
}
# Sent as two real header lines; httpx needs a list of pairs for that.
DUPLICATED_HEADER = "duplicated Authorization header"


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    attacker_jwks = JwksServer()
    attacker = new_key("EdDSA")
    attacker_jwks.publish(attacker)
    with attacker_jwks.running():
        yield Keys(new_key("EdDSA"), new_key("RS256"), attacker, attacker_jwks)


@pytest.fixture(scope="module")
def hardened(service_database_url: str, keys: Keys) -> Iterator[httpx.Client]:
    """The service with every verifier on and iss/aud enforced."""
    with JwksServer().running() as jwks:
        jwks.publish(keys.eddsa, keys.rsa)
        settings = make_settings(
            service_database_url,
            jwt_jwks_url=jwks.url,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
        )
        with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
            yield client


@pytest.fixture
def victim(hardened: httpx.Client, keys: Keys) -> tuple[ApiUser, dict[str, Any]]:
    """A user with a task, authenticated the legitimate way."""
    user = UserFactory.create()
    token = keys.eddsa.sign(_claims(sub=user.sub))
    victim = ApiUser(sub=user.sub, token=token)
    created = hardened.post("/api/tasks", json={"title": "do not touch"}, headers=victim.headers)
    assert created.status_code == 201
    return victim, created.json()


def _database_fingerprint(db_engine: Engine) -> tuple[Any, ...]:
    with db_engine.connect() as connection:
        return tuple(
            connection.execute(
                text("SELECT count(*), max(updated_at), count(DISTINCT user_id) FROM tasks")
            ).one()
        )


def _send(api: httpx.Client, op: Operation, task_id: str, attempt: Attempt) -> httpx.Response:
    with httpx.Client(base_url=str(api.base_url), cookies=attempt.cookies) as client:
        return client.request(
            op.method,
            op.url(task_id),
            json=op.example_body,
            headers=attempt.headers,
            params=attempt.params,
        )


@pytest.mark.parametrize("attack", ATTACKS, ids=str)
@pytest.mark.parametrize("op", SECURED_OPERATIONS, ids=str)
def test_attack_is_refused_on_every_operation(
    hardened: httpx.Client,
    keys: Keys,
    victim: tuple[ApiUser, dict[str, Any]],
    db_engine: Engine,
    op: Operation,
    attack: str,
) -> None:
    user, task = victim
    before = _database_fingerprint(db_engine)
    attempt = ATTACKS[attack](keys)

    response = _send(hardened, op, task["id"], attempt)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    assert ('error="invalid_token"' in challenge) == attempt.token_presented
    assert _database_fingerprint(db_engine) == before
    assert hardened.get(f"/api/tasks/{task['id']}", headers=user.headers).json() == task


@pytest.mark.parametrize("op", SECURED_OPERATIONS, ids=str)
def test_duplicated_authorization_header_is_refused_on_every_operation(
    hardened: httpx.Client, victim: tuple[ApiUser, dict[str, Any]], op: Operation
) -> None:
    user, task = victim
    headers = [("Authorization", user.headers["Authorization"]), ("Authorization", "Bearer x")]
    response = hardened.request(
        op.method, op.url(task["id"]), json=op.example_body, headers=headers
    )
    assert response.status_code == 401
    assert hardened.get(f"/api/tasks/{task['id']}", headers=user.headers).json() == task


def test_the_legitimate_token_works(
    hardened: httpx.Client, victim: tuple[ApiUser, dict[str, Any]]
) -> None:
    # The control for every row above: the same claims, signed properly, are accepted.
    user, task = victim
    assert hardened.get(f"/api/tasks/{task['id']}", headers=user.headers).status_code == 200


def test_urls_in_token_headers_are_never_fetched(hardened: httpx.Client, keys: Keys) -> None:
    for attack in (
        "jku pointing at the attacker's JWKS",
        "x5u pointing at the attacker's certificate",
    ):
        attempt = ATTACKS[attack](keys)
        assert hardened.get("/api/tasks", headers=attempt.headers).status_code == 401
    assert keys.attacker_jwks.requests == []


def test_oversized_tokens_are_refused_quickly(hardened: httpx.Client, keys: Keys) -> None:
    attempt = ATTACKS["over 8 KiB"](keys)
    durations = []
    for _ in range(20):
        started = time.perf_counter()
        assert hardened.get("/api/tasks", headers=attempt.headers).status_code == 401
        durations.append(time.perf_counter() - started)
    assert statistics.median(durations) < 0.05


def test_security_doc_lists_exactly_these_attacks() -> None:
    documented = set(re.findall(r"^\| `([^`]+)` \|", SECURITY_DOC.read_text(), re.MULTILINE))
    assert documented == {*ATTACKS, DUPLICATED_HEADER}
