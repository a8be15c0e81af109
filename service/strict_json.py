"""JSON as I-JSON (RFC 7493): one reading of a document, whoever parses it.

Request bodies and the header and payload of every token go through `loads`. It refuses what
parsers disagree about, so no proxy, validator or client library in front of the service can
read a document one way while the service reads it another:

- a member name repeated in an object (`{"title": "a", "title": "b"}`): first-wins and
  last-wins parsers would see different values;
- text that is not UTF-8, or a `\\ud800` escape with no partner (not a Unicode string);
- numbers beyond a double (`1e400`), `NaN` and `Infinity`, and nesting deeper than 1,024.
"""

import json
from typing import Any

import orjson


class NotIJson(ValueError):
    """The text is not an I-JSON document; the message says why, without echoing it."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise NotIJson("an object repeats a member name")
    return document


def loads(text: bytes | str) -> Any:
    try:
        # orjson is strict about everything above except repeated names: it refuses invalid
        # UTF-8, lone surrogates, non-finite numbers and deep nesting, and is fast.
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise NotIJson("not valid JSON") from None
    if isinstance(document, dict | list):
        try:
            # A second, slower reading only to see every member name; it cannot fail where
            # orjson succeeded, except on a repeated name.
            json.loads(text, object_pairs_hook=_refuse_duplicates)
        except NotIJson:
            raise
        except (ValueError, RecursionError):
            raise NotIJson("not valid JSON") from None
    return document
