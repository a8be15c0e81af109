"""Opaque keyset cursors, bound to the user they were issued to.

A cursor carries the (created_at, id) of the last task on a page, plus a MAC over that
position and the user's id. A cursor that was altered, or that another user presents, fails
the MAC and is a 400: it can neither be forged nor replayed across users.
"""

import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from datetime import UTC, datetime, timedelta

from service.errors import InvalidInput

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_POSITION = struct.Struct(">q16s")  # microseconds since the epoch, task id
_MAC_BYTES = 16


class CursorCodec:
    def __init__(self, key: bytes) -> None:
        # A key of its own, derived from the token secret, so cursor MACs and token signatures
        # can never be confused for one another.
        self._key = hmac.new(key, b"secure-tasks-api/cursor/v1", hashlib.sha256).digest()

    def _mac(self, user_id: uuid.UUID, position: bytes) -> bytes:
        digest = hmac.new(self._key, user_id.bytes + position, hashlib.sha256).digest()
        return digest[:_MAC_BYTES]

    def encode(self, user_id: uuid.UUID, created_at: datetime, task_id: uuid.UUID) -> str:
        micros = (created_at - _EPOCH) // timedelta(microseconds=1)
        position = _POSITION.pack(micros, task_id.bytes)
        raw = position + self._mac(user_id, position)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, user_id: uuid.UUID, cursor: str) -> tuple[datetime, uuid.UUID]:
        invalid = InvalidInput(
            errors=[{"parameter": "cursor", "detail": "is not a cursor from this API"}]
        )
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise invalid from None
        position, mac = raw[: _POSITION.size], raw[_POSITION.size :]
        if len(raw) != _POSITION.size + _MAC_BYTES or not hmac.compare_digest(
            mac, self._mac(user_id, position)
        ):
            raise invalid
        micros, task_id = _POSITION.unpack(position)
        return _EPOCH + timedelta(microseconds=micros), uuid.UUID(bytes=task_id)
