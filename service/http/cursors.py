"""Opaque keyset cursors, sealed for the user they were issued to.

A cursor is the (created_at, id) of the last task on a page, encrypted and authenticated with
AES-GCM under a key derived from CURSOR_SECRET (or JWT_SECRET), with the user's id as
associated data. It reveals nothing, cannot be forged or altered, and is a 400 for anyone but
the user it was issued to.
"""

import base64
import binascii
import hashlib
import hmac
import os
import struct
import uuid
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.http.problems import InvalidInput

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_POSITION = struct.Struct(">q16s")  # microseconds since the epoch, task id
_NONCE_BYTES = 12


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        # A key of its own, so cursors and token signatures can never be confused.
        key = hmac.new(secret, b"secure-tasks-api/cursor/v2", hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def encode(self, user_id: uuid.UUID, created_at: datetime, task_id: uuid.UUID) -> str:
        micros = (created_at - _EPOCH) // timedelta(microseconds=1)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, _POSITION.pack(micros, task_id.bytes), user_id.bytes)
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def decode(self, user_id: uuid.UUID, cursor: str) -> tuple[datetime, uuid.UUID]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            position = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], user_id.bytes)
            micros, task_id = _POSITION.unpack(position)
        except (binascii.Error, ValueError, InvalidTag, struct.error):
            raise InvalidInput(
                errors=[{"parameter": "cursor", "detail": "is not a cursor from this API"}]
            ) from None
        return _EPOCH + timedelta(microseconds=micros), uuid.UUID(bytes=task_id)
