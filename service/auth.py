"""Who is calling: a verified bearer JWT and nothing else.

The identity never comes from a path, query or body, and a request that fails here never
reaches a handler: the task router attaches `authenticate` to every route it holds.

Two verifiers may be configured: HS256 with a shared secret, and a JWKS for asymmetric
issuers. Each token goes to exactly one, chosen by its header, and each verifier accepts only
its own algorithms, so an HMAC token can never be checked against a public key.
"""

import re
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request

from service.config import ConfigError, Settings
from service.errors import NotAuthenticated, ServiceUnavailable
from service.jwks import JwksCache, KeysUnavailable
from service.state import state_of

# Non-UUID subjects map to uuid5(uuid5(USER_NAMESPACE, iss), sub); the README documents this
# so a client can compute its own user id.
USER_NAMESPACE = uuid.UUID("dcbfd48b-7501-46b4-8af1-4fb6abbd9bb6")
# Larger tokens are refused before any parsing or signature work.
MAX_TOKEN_CHARS = 8192
ASYMMETRIC_ALGORITHMS = frozenset({"EdDSA", "ES256", "RS256", "PS256"})
# Checking a signature is the largest CPU cost of a request, and a client sends the same token
# for every request until it expires. A verified token is remembered for this long at most
# (never past its `exp`), so a key dropped from the JWKS stops working within that time too.
VERIFIED_TOKEN_SECONDS = 30
VERIFIED_TOKEN_ENTRIES = 10_000
_CANONICAL_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    subject: str
    issuer: str


def user_id_for(issuer: str, subject: str) -> uuid.UUID:
    """A `sub` in canonical UUID form is the user id; any other maps to a stable UUIDv5."""
    if _CANONICAL_UUID.match(subject):
        return uuid.UUID(subject)
    return uuid.uuid5(uuid.uuid5(USER_NAMESPACE, issuer), subject)


def _invalid(detail: str = "The token is invalid.") -> NotAuthenticated:
    return NotAuthenticated(detail, token_presented=True)


class TokenVerifier:
    """Verifies signature and claims; `exp` and `sub` required, `nbf` honoured."""

    def __init__(self, settings: Settings) -> None:
        self._hs256_key = settings.hs256_key()
        self._jwks = (
            JwksCache(
                settings.jwt_jwks_url,
                ttl=settings.jwks_cache_seconds,
                min_refresh=settings.jwks_min_refresh_seconds,
                timeout=settings.jwks_fetch_timeout_seconds,
            )
            if settings.jwt_jwks_url
            else None
        )
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        # token -> (principal, monotonic deadline); only ever holds tokens that verified.
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise _invalid("The token is too large.")
        remembered = self._verified.get(token)
        if remembered is not None and time.monotonic() < remembered[1]:
            return remembered[0]
        principal, expires_at = await self._verify(token)
        lifetime = min(VERIFIED_TOKEN_SECONDS, expires_at + self._leeway - time.time())
        if len(self._verified) >= VERIFIED_TOKEN_ENTRIES:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[token] = (principal, time.monotonic() + lifetime)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid() from None
        # No JWS extension is understood here, so a token that demands one is refused
        # (RFC 7515 section 4.1.11). `jku`, `x5u` and `jwk` are simply never looked at.
        if "crit" in header:
            raise _invalid()
        key, algorithm = await self._key_for(header)
        claims = self._decode(token, key, algorithm)
        subject = claims["sub"]
        issuer = claims.get("iss", "")
        if not isinstance(subject, str) or not subject.strip() or not isinstance(issuer, str):
            raise _invalid()
        principal = Principal(user_id=user_id_for(issuer, subject), subject=subject, issuer=issuer)
        return principal, float(claims["exp"])

    async def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        algorithm = header.get("alg")
        if algorithm == "HS256" and self._hs256_key is not None:
            return self._hs256_key, algorithm
        if algorithm in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise _invalid()
            try:
                found = await self._jwks.key_for(kid)
            except KeysUnavailable:
                raise ServiceUnavailable("The token issuer's keys are unavailable.") from None
            # The key decides the algorithm; the header may only agree with it.
            if found is None or algorithm not in found.algorithms:
                raise _invalid()
            return found.key, algorithm
        raise _invalid()

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={
                    "require": ["exp", "sub"],
                    # Auth libraries always set `aud`; without JWT_AUDIENCE it is not checked,
                    # where PyJWT would otherwise reject every token that carries one.
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("The token has expired.") from None
        except jwt.PyJWTError:
            raise _invalid() from None
        return claims


def issue_token(settings: Settings, subject: str, ttl_seconds: int, now: int) -> str:
    """An HS256 token the service accepts; for `tasks-api token` and for trying the API."""
    key = settings.hs256_key()
    if key is None:
        raise ConfigError("tasks-api token signs HS256 tokens and needs JWT_SECRET.")
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if settings.jwt_issuer is not None:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience is not None:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, key, algorithm="HS256")


def bearer_token(request: Request) -> str:
    """The token from the single `Authorization: Bearer` header; query and cookies never count."""
    headers = request.headers.getlist("authorization")
    if not headers:
        raise NotAuthenticated("A bearer token is required.", token_presented=False)
    if len(headers) > 1:
        raise _invalid("Send exactly one Authorization header.")
    scheme, _, token = headers[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated("Use 'Authorization: Bearer <token>'.", token_presented=False)
    return token


# async: verification is CPU work plus, rarely, an async JWKS fetch; no thread hop.
async def authenticate(request: Request) -> Principal:
    principal = await state_of(request).verifier.verify(bearer_token(request))
    request.state.user_id = str(principal.user_id)  # for the access log
    return principal


CurrentUser = Annotated[Principal, Depends(authenticate)]
