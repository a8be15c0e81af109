"""Real signed tokens for the tests: nothing in the suite bypasses token verification."""

import base64
import hashlib
import hmac
import time
import uuid
import warnings
from typing import Any

import jwt
import jwt.warnings

# The secret every test app is configured with (48 bytes; the service requires at least 32).
SECRET = "tests-only-secret-0123456789abcdef0123456789abcd"
# The namespace the README documents for subjects that are not UUIDs.
USER_NAMESPACE = uuid.UUID("dcbfd48b-7501-46b4-8af1-4fb6abbd9bb6")

_DROP = object()


def mint(
    sub: Any = None,
    *,
    secret: str = SECRET,
    algorithm: str = "HS256",
    lifetime: int = 300,
    **claims: Any,
) -> str:
    """A token as an auth server would issue it; pass `exp=DROP` (etc.) to leave a claim out."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": str(uuid.uuid4()) if sub is None else sub,
        "iat": now,
        "exp": now + lifetime,
        **claims,
    }
    payload = {key: value for key, value in payload.items() if value is not _DROP}
    with warnings.catch_warnings():
        # Some tests sign deliberately unusual tokens (HS512 with a short key, for one).
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm=algorithm)


DROP = _DROP


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expected_user_id(sub: str, iss: str = "") -> str:
    """The user id the README promises for a subject: itself if a UUID, else a UUIDv5."""
    try:
        return str(uuid.UUID(sub)) if len(sub) == 36 else _derived(iss, sub)
    except ValueError:
        return _derived(iss, sub)


def _derived(iss: str, sub: str) -> str:
    return str(uuid.uuid5(uuid.uuid5(USER_NAMESPACE, iss), sub))


def sign_json(payload: str, header: str = '{"alg":"HS256","typ":"JWT"}') -> str:
    """An HS256 token over exactly this JSON text, validly signed with SECRET.

    For claims no JSON library would write: repeated names, a lone-surrogate escape, numbers
    beyond a double. The signature is right, so only the service's reading of the text can
    refuse it.
    """

    def segment(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{segment(header.encode())}.{segment(payload.encode())}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{segment(signature)}"
