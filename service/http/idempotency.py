"""The Idempotency-Key header (draft-ietf-httpapi-idempotency-key-header-06) at the edge.

A key is 1 to 255 visible ASCII characters other than `"`, `\\` and `,`, sent bare (`abc`) or
as the draft's quoted string (`"abc"`); both spellings are one key. Anything else, or two
Idempotency-Key fields, is a 400, and a 400 is never stored: the corrected request may use
the same key. A request is identified by its method, route, the resource its path names and
its body as validated (so `{"title": " a"}` and `{"title":"a"}` are one request).
"""

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.responses import Response

from service.data.access import RequestDatabase
from service.data.idempotency import Claim, Idempotent, KeyReused, Outcome, Row
from service.http.problems import InvalidInput, Problem

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_KEY = re.compile(r'"?([\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]{1,255})"?')


class KeyReusedForAnotherRequest(Problem):
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    title = "Unprocessable Content"  # RFC 9110's name for 422
    detail = (
        "This Idempotency-Key was used for a different request; use a new key for a new request."
    )


def idempotency_key(headers: Headers) -> str | None:
    """The request's key, or None when it sent none."""
    values = headers.getlist(HEADER)
    if not values:
        return None
    value = values[0].strip() if len(values) == 1 else ""
    match = _KEY.fullmatch(value)
    # The quotes come in pairs: "abc" or abc, never "abc or abc".
    if match is None or value.startswith('"') != value.endswith('"') or value == '"':
        raise InvalidInput(
            f"{HEADER} must be one value of 1 to 255 visible ASCII characters other than "
            '" \\ and , (bare, or in double quotes).'
        )
    return match.group(1)


def claim_for(
    key: str, ttl_seconds: float, *, method: str, route: str, item: str, body: Any
) -> Claim:
    """The claim a request makes with its key: what identifies the request, hashed."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    fingerprint = Claim.fingerprint_of(method.encode(), route.encode(), item.encode(), canonical)
    return Claim(key=key, fingerprint=fingerprint, ttl_seconds=ttl_seconds)


async def answer_once(
    db: RequestDatabase,
    claim: Claim,
    write: Idempotent,
    parameters: dict[str, Any],
    *,
    respond: Callable[[list[Row]], Outcome],
    replay: Callable[[list[Row]], Outcome] | None = None,
) -> Response:
    """The write's answer (`respond`, from the rows it returned), or the answer to the request
    that used the key first (`replay`, from the rows stored then; `respond` by default)."""
    try:
        outcome, replayed = await db.once(write, parameters, claim, respond, replay or respond)
    except KeyReused:
        raise KeyReusedForAnotherRequest from None
    return outcome_response(outcome, replayed=replayed)


def outcome_response(outcome: Outcome, *, replayed: bool = False) -> Response:
    """A write's outcome as the response: the same bytes the first time and on a replay."""
    headers = {}
    if outcome.location is not None:
        headers["Location"] = outcome.location
    if outcome.etag is not None:
        headers["ETag"] = outcome.etag
    if replayed:
        headers[REPLAYED] = "true"
    return Response(
        outcome.body, status_code=outcome.status, headers=headers, media_type="application/json"
    )
