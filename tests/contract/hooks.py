"""Schemathesis hooks shared by the pytest run and the CLI campaign (SCHEMATHESIS_HOOKS).

One adjustment, for one parameter: a cursor is valid only exactly as the service issued it to
that user (it is sealed with AES-GCM), so a random string of the declared shape is rightly a
400, which positive-data checks would read as a rejected valid request. Positive cases
therefore only send cursors the service actually handed out (as the contract's `nextPage`
link does); negative cases keep whatever was generated.
"""

from typing import Any

import schemathesis

ISSUED_CURSORS: set[str] = set()


def drop_cursors_not_issued(case: Any, issued: set[str]) -> None:
    cursor = (case.query or {}).get("cursor")
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if cursor is not None and positive and cursor not in issued:
        del case.query["cursor"]


def remember_cursor(response: Any, issued: set[str]) -> None:
    if response.status_code == 200 and "next_cursor" in response.text:
        cursor = response.json().get("next_cursor")
        if cursor:
            issued.add(cursor)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    drop_cursors_not_issued(case, ISSUED_CURSORS)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    remember_cursor(response, ISSUED_CURSORS)
