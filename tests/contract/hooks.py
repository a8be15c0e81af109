"""Schemathesis hooks shared by the pytest run and the CLI campaign (SCHEMATHESIS_HOOKS).

Two adjustments, so that a case labelled positive sends only valid data:

- A cursor is valid only exactly as the service issued it to that user (it is sealed with
  AES-GCM), so a random string of the declared shape is rightly a 400, which positive-data
  checks would read as a rejected valid request. Positive cases therefore only send cursors
  the service actually handed out (as the contract's `nextPage` link does).
- Schemathesis 4.32's coverage phase can send an optional header with a value its declared
  pattern refuses (`If-None-Match: 0`) in a case it labels positive. Such a value is dropped
  from cases labelled positive (the contract's own pattern decides); the headers are
  optional, and invalid values are still sent by the cases labelled negative.

Negative cases keep whatever was generated.
"""

import re
from typing import Any

import schemathesis

from tests.support.operations import CONTRACT

# The optional header parameters the contract declares with a pattern, by name.
_HEADER_PATTERNS = {
    parameter["name"]: re.compile(parameter["schema"]["pattern"])
    for parameter in CONTRACT["components"]["parameters"].values()
    if parameter["in"] == "header" and "pattern" in parameter["schema"]
}

ISSUED_CURSORS: set[str] = set()


def drop_cursors_not_issued(case: Any, issued: set[str]) -> None:
    cursor = (case.query or {}).get("cursor")
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if cursor is not None and positive and cursor not in issued:
        del case.query["cursor"]


def drop_invalid_headers_from_positive_cases(case: Any) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not case.headers:
        return
    for name, pattern in _HEADER_PATTERNS.items():
        value = case.headers.get(name)
        if isinstance(value, str) and not pattern.search(value):
            del case.headers[name]


def remember_cursor(response: Any, issued: set[str]) -> None:
    if response.status_code == 200 and "next_cursor" in response.text:
        cursor = response.json().get("next_cursor")
        if cursor:
            issued.add(cursor)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    drop_cursors_not_issued(case, ISSUED_CURSORS)
    drop_invalid_headers_from_positive_cases(case)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    remember_cursor(response, ISSUED_CURSORS)
