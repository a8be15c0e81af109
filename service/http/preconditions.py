"""Conditional requests (RFC 9110 section 13): entity tags, If-Match and If-None-Match.

A resource's strong ETag names its version: the moment of its last change, which strictly
increases with every change (`"` + microseconds since the epoch in hex + `"`). An If-Match
therefore turns into the versions a write may apply to, compared by the database in the same
statement as the write; a tag the service did not issue, and any weak tag (RFC 9110 section
13.1.1: If-Match compares strongly), matches nothing.
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.datastructures import Headers

from service.http.problems import InvalidInput, PreconditionRequired

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# `*`, or a list of entity tags: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 /
# %x23-7E (no obs-text), elements separated by a comma and optional spaces or tabs. The
# contract's If-Match and If-None-Match patterns say the same.
_TAG = r'(?:W/)?"[\x21\x23-\x7e]*"'
_TAGS = re.compile(rf"\*|{_TAG}(?:[ \t]*,[ \t]*{_TAG})*")
_ONE_TAG = re.compile(_TAG)
_ISSUED = re.compile(r'"([0-9a-f]{1,16})"')


def version_tag(version: datetime) -> str:
    """The strong ETag of a resource last changed at `version`."""
    return f'"{(version - _EPOCH) // _MICROSECOND:x}"'


def page_tag(parts: bytes) -> str:
    """A weak ETag for a representation built from `parts` (a listing's page)."""
    return 'W/"' + hashlib.blake2b(parts, digest_size=12).hexdigest() + '"'


@dataclass(frozen=True, slots=True)
class EntityTags:
    """An If-Match or If-None-Match field: `*`, or a list of entity tags."""

    any: bool
    tags: tuple[str, ...]

    def versions(self) -> list[datetime]:
        """The versions its strong tags name (If-Match's strong comparison)."""
        found = []
        for tag in self.tags:
            if issued := _ISSUED.fullmatch(tag):
                micros = int(issued.group(1), 16)
                if micros <= (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND:
                    found.append(_EPOCH + micros * _MICROSECOND)
        return found

    def matches_weakly(self, current: str) -> bool:
        """If-None-Match's weak comparison with the current ETag: opaque tags equal, W/ aside."""
        if self.any:
            return True
        opaque = current.removeprefix("W/")
        return any(tag.removeprefix("W/") == opaque for tag in self.tags)


def entity_tags(headers: Headers, name: str) -> EntityTags | None:
    """The field `name` (If-Match, If-None-Match) parsed, or None when absent; a 400 naming it
    when it is neither `*` nor a list of entity tags."""
    lines = headers.getlist(name)
    if not lines:
        return None
    value = ", ".join(line.strip(" \t") for line in lines)
    # As long as the head's bound (HTTP_MAX_HEADER_BYTES) lets it be; matched in linear time.
    if not _TAGS.fullmatch(value):
        raise InvalidInput(
            f"{name} must be * or a list of entity tags, each in double quotes "
            '("…" or W/"…"), separated by commas.'
        )
    tags = _ONE_TAG.findall(value)
    if value == "*":
        return EntityTags(any=True, tags=())
    return EntityTags(any=False, tags=tuple(tags))


def write_preconditions(headers: Headers, *, required: bool) -> EntityTags | None:
    """A write's If-Match: None for an unconditional write; 428 when REQUIRE_IF_MATCH is set
    and it is missing (RFC 6585)."""
    if_match = entity_tags(headers, "If-Match")
    if if_match is None and required:
        raise PreconditionRequired
    return if_match
