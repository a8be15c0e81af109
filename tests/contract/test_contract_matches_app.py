"""The contract and the app describe the same API, and the app serves the contract itself."""

import re
import unicodedata
from typing import Any

import httpx
from fastapi.openapi.utils import get_openapi
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from service.main import create_app
from service.tasks.titles import TITLE_MAX_CHARS, TITLE_WHITESPACE, clean_title
from tests.support.operations import CONTRACT, contract_operations


def test_the_contract_is_valid_openapi_3_1() -> None:
    assert CONTRACT["openapi"].startswith("3.1")
    validate(CONTRACT)


def test_every_app_route_is_in_the_contract_and_every_operation_is_served(
    settings: Any,
) -> None:
    app = create_app(settings)
    # FastAPI's own view of the routes it serves (the schema it would have generated).
    generated = get_openapi(title="app", version="0", routes=app.routes)
    served = {
        (method.upper(), path, operation["operationId"])
        for path, item in generated["paths"].items()
        for method, operation in item.items()
    }
    declared = {(op.method, op.path, op.operation_id) for op in contract_operations()}
    assert served == declared


def test_operation_ids_are_unique() -> None:
    ids = [op.operation_id for op in contract_operations()]
    assert len(ids) == len(set(ids))


def test_openapi_json_is_the_hand_written_contract(api: httpx.Client) -> None:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == CONTRACT


def test_docs_render_the_contract(api: httpx.Client) -> None:
    response = api.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    start = re.search(r'src="([^"]*start\.js)"', response.text)
    assert start is not None
    assert '"/openapi.json"' in api.get(start.group(1)).text


def _accepted_by_contract(title: str) -> bool:
    pattern = CONTRACT["components"]["schemas"]["Title"]["pattern"]
    return re.search(pattern, title) is not None


def _accepted_by_service(title: str) -> bool:
    try:
        clean_title(title)
    except ValueError:
        return False
    return True


_title_text = st.text(
    alphabet=st.one_of(
        # Whitespace, controls, invisible characters and letters that NFC composes.
        st.sampled_from(
            TITLE_WHITESPACE
            + "\x00\x1c\x85ab\u200b\u2060\u3164\ufe0f\u0301e\u2800"
            + "\U0001bca0\U0001d173\U000e0001\U000e0041\U000e0080\U000e0100\U000e0fff"
        ),
        st.characters(codec="utf-8"),
    ),
    max_size=520,
)


@settings(max_examples=400, derandomize=True)
@given(
    title=st.one_of(_title_text, st.builds(lambda n, c: c * n, st.integers(495, 505), _title_text))
)
def test_contract_title_pattern_and_service_agree(title: str) -> None:
    assume(not _lengthens_past_the_limit_under_nfc(title))
    assert _accepted_by_contract(title) == _accepted_by_service(title)


def _lengthens_past_the_limit_under_nfc(title: str) -> bool:
    trimmed = title.strip(TITLE_WHITESPACE)
    return len(trimmed) <= TITLE_MAX_CHARS < len(unicodedata.normalize("NFC", trimmed))


def test_the_one_documented_difference_is_a_title_that_nfc_lengthens_past_the_limit() -> None:
    # The contract's Title description says so: U+0958 is two code points in NFC.
    title = "\u0958" * TITLE_MAX_CHARS
    assert _lengthens_past_the_limit_under_nfc(title)
    assert _accepted_by_contract(title)
    assert not _accepted_by_service(title)


def test_title_boundaries_agree() -> None:
    for title in [
        *("a", " a ", "a" * 500, " " + "a" * 500 + " ", "a" * 501, "", " ", "a\x00"),
        *("\u200b", " \u200b\u2060 ", "\u3164", "a\u200b", "e\u0301", "\ufe0f\u00ad"),
        *("\U0001d173", "a\U0001d173", "\U000e0041", "a\U000e0041", "\U000e0100", "\u2800"),
    ]:
        assert _accepted_by_contract(title) == _accepted_by_service(title), repr(title)
