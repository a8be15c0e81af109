"""Who is calling: a verified bearer JWT and nothing else.

The identity never comes from a path, query or body, and a request that fails here never
reaches a handler: the task router attaches `authenticate` to every route it holds.
"""

import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request

from service.config import Settings
from service.errors import NotAuthenticated

# Non-UUID subjects map to uuid5(uuid5(USER_NAMESPACE, iss), sub); the README documents this
# so a client can compute its own user id.
USER_NAMESPACE = uuid.UUID("dcbfd48b-7501-46b4-8af1-4fb6abbd9bb6")
# Larger tokens are refused before any parsing or signature work.
MAX_TOKEN_CHARS = 8192
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


class TokenVerifier:
    """HS256 verification with the algorithm pinned and `exp` and `sub` required."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.secret_bytes()
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds

    def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise _invalid("The token is too large.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
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
            raise _invalid("The token is invalid.") from None
        subject = claims["sub"]
        issuer = claims.get("iss", "")
        if not isinstance(subject, str) or not subject.strip() or not isinstance(issuer, str):
            raise _invalid("The token is invalid.")
        return Principal(user_id=user_id_for(issuer, subject), subject=subject, issuer=issuer)

    def issue(self, subject: str, ttl_seconds: int, now: int) -> str:
        """A token this verifier accepts; for `tasks-api token` and for trying the API."""
        claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
        if self._issuer is not None:
            claims["iss"] = self._issuer
        if self._audience is not None:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._key, algorithm="HS256")


def _invalid(detail: str) -> NotAuthenticated:
    return NotAuthenticated(detail, token_presented=True)


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


# async: verification is pure CPU work, so it runs on the event loop without a thread hop.
async def authenticate(request: Request) -> Principal:
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(bearer_token(request))


CurrentUser = Annotated[Principal, Depends(authenticate)]
