"""Rule: no input of any shape is a server error, and every input has exactly one reading.

A token with a valid signature but claims of the wrong JSON type or an insane range is a 401,
not a 500 and not accepted. JSON, in bodies and in tokens, is I-JSON (RFC 7493): a repeated
member name is refused rather than read as its last value, which a first-wins proxy would
read differently. A task is named by the canonical UUID form only, and an encoded slash in a
path is never a separator. What a problem echoes back is bounded. The property tests at the
end sign random claim sets and send random queries and bodies: the answer is never a 5xx.
"""

import json
import socket
import time
import urllib.parse
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.tasks.titles import clean_title
from tests.support.factories import ApiUser
from tests.support.live import service_process
from tests.support.operations import SECURED_OPERATIONS, Operation
from tests.support.resources import create_item, read_item
from tests.support.tokens import SECRET, bearer, mint, sign_json

NOW = int(time.time())
# A day: these tokens are built when the module is imported, and must not expire before the
# (long) suite reaches them.
LATER = NOW + 86_400


def _claims(**fields: str) -> str:
    """A payload as JSON text: each value is written exactly as given."""
    defaults = {"sub": json.dumps(str(uuid.uuid4())), "iat": str(NOW), "exp": str(LATER)}
    merged = {**defaults, **fields}
    return "{" + ",".join(f'"{name}":{value}' for name, value in merged.items()) + "}"


# --- Claims: the right JSON type and a sane range, or 401 ------------------------------------

BAD_CLAIMS = {
    "exp as a string": _claims(exp=f'"{LATER}"'),
    "exp beyond a double": _claims(exp="1e400"),
    "exp beyond any date": _claims(exp="1e300"),
    "exp with thousands of digits": _claims(exp="9" * 5000),
    "exp negative": _claims(exp="-1"),
    "exp true": _claims(exp="true"),
    "exp null": _claims(exp="null"),
    "exp a list": _claims(exp=f"[{LATER}]"),
    "exp NaN": _claims(exp="NaN"),
    "nbf as a string": _claims(nbf=f'"{NOW}"'),
    "iat an object": _claims(iat="{}"),
    "iat in the future": _claims(iat=str(NOW + 3600)),
    "sub a lone surrogate": _claims(sub='"\\ud800"'),
    "sub a number": _claims(sub="12345"),
    "sub null": _claims(sub="null"),
    "sub blank": _claims(sub='"   "'),
    "sub a UUID and a newline": _claims(sub=json.dumps(str(uuid.uuid4()) + "\n")),
    "iss a lone surrogate": _claims(iss='"\\udfff"'),
    "iss a number": _claims(iss="7"),
    "aud a number": _claims(aud="7"),
    "aud a list holding a number": _claims(aud='["x", 7]'),
    "aud an empty list": _claims(aud="[]"),
    "jti a number": _claims(jti="7"),
    "payload a list": "[1, 2]",
    "payload a string": '"sub"',
}
# A repeated claim: a first-wins reader sees another user, or a token that never expires.
BAD_CLAIMS["sub repeated"] = (
    f'{{"sub":"{uuid.uuid4()}","sub":"{uuid.uuid4()}","iat":{NOW},"exp":{LATER}}}'
)
BAD_CLAIMS["exp repeated, the last one expired"] = (
    f'{{"sub":"{uuid.uuid4()}","exp":{LATER},"exp":{NOW - 3600}}}'
)


@pytest.mark.parametrize("payload", BAD_CLAIMS.values(), ids=BAD_CLAIMS.keys())
def test_a_signed_token_with_malformed_claims_is_a_401(api: httpx.Client, payload: str) -> None:
    response = api.get("/api/tasks", headers=bearer(sign_json(payload)))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


BAD_HEADERS = {
    "alg repeated, none last": '{"alg":"HS256","alg":"none","typ":"JWT"}',
    "alg repeated, HS256 last": '{"alg":"none","alg":"HS256","typ":"JWT"}',
    "header a list": '["HS256"]',
    "header not JSON": "{alg:HS256}",
    "kid a lone surrogate": '{"alg":"HS256","kid":"\\ud800"}',
    "alg a list": '{"alg":["HS256"],"typ":"JWT"}',
    "alg an object": '{"alg":{"name":"HS256"}}',
    "alg a number": '{"alg":256}',
    "alg null": '{"alg":null}',
    "kid a list, for a JWKS algorithm": '{"alg":"RS256","kid":["a"]}',
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_a_token_header_that_is_not_i_json_is_a_401(api: httpx.Client, header: str) -> None:
    token = sign_json(_claims(), header=header)
    response = api.get("/api/tasks", headers=bearer(token))
    if "kid" in header:  # valid I-JSON text; kid is simply not used for HS256
        assert response.status_code in (200, 401)
    else:
        assert response.status_code == 401


def test_well_formed_claims_written_as_raw_json_are_accepted(api: httpx.Client) -> None:
    # The control for the table above: the same construction, with every claim well formed
    # (a fractional exp is a valid NumericDate).
    payload = _claims(exp=f"{LATER}.5", nbf=str(NOW - 10), iss='"issuer"', aud='["a", "b"]')
    assert api.get("/api/tasks", headers=bearer(sign_json(payload))).status_code == 200


# --- Query strings, bodies, paths --------------------------------------------------------------


@pytest.mark.parametrize("limit", ["9" * 5000, "0" * 4000 + "5", "1" + "0" * 400, "٣", "²"])
def test_a_limit_of_any_length_or_digit_set_is_a_400(
    api: httpx.Client, alice: ApiUser, limit: str
) -> None:
    response = api.get("/api/tasks", params={"limit": limit}, headers=alice.headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["parameter"] == "limit"


@pytest.mark.parametrize(
    "body",
    [
        b'{"title":"a","title":"b"}',
        b'{"title":5,"title":"b"}',
        b'{"title":"b","completed":true,"completed":false}',
        b'{"title":"a","extra":{"x":1,"x":2}}',
    ],
    ids=["same type", "different types", "completed twice", "nested object"],
)
@pytest.mark.parametrize(
    "op", [op for op in SECURED_OPERATIONS if op.example_body is not None], ids=str
)
def test_a_body_that_repeats_a_member_name_is_a_400(
    api: httpx.Client,
    alice: ApiUser,
    alice_task: dict[str, Any],
    op: Operation,
    body: bytes,
) -> None:
    headers = {**alice.headers, "Content-Type": "application/json"}
    response = api.request(op.method, op.url(alice_task["id"]), content=body, headers=headers)
    assert response.status_code == 400
    assert "repeats a member name" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [b'{"title":"\\ud800"}', b'{"title":"a","\\udfff":1}', b'{"title":1e400}', b"[" * 5000],
    ids=["lone surrogate", "lone surrogate as a name", "beyond a double", "deep nesting"],
)
def test_json_that_is_not_i_json_is_a_400(api: httpx.Client, alice: ApiUser, body: bytes) -> None:
    headers = {**alice.headers, "Content-Type": "application/json"}
    assert api.post("/api/tasks", content=body, headers=headers).status_code == 400


def _other_spellings(task_id: str) -> list[str]:
    plain = task_id.replace("-", "")
    return [
        f"urn:uuid:{task_id}",
        f"{{{task_id}}}",
        plain,
        plain.upper(),
        f"{plain[:8]}-{plain[8:20]}-{plain[20:]}",  # hyphens in the wrong places
        f"{task_id}%0A",  # a trailing newline
        f"%20{task_id}",
        f"{task_id}%00",
    ]


@pytest.mark.parametrize("op", [op for op in SECURED_OPERATIONS if op.takes_id], ids=str)
def test_only_the_canonical_uuid_form_names_an_item(
    api: httpx.Client, alice: ApiUser, op: Operation
) -> None:
    item = create_item(api, op.resource, alice)
    missing = api.request(
        op.method, op.url(str(uuid.uuid4())), json=op.example_body, headers=alice.headers
    )
    for spelling in _other_spellings(item["id"]):
        response = api.request(
            op.method, op.url(spelling), json=op.example_body, headers=alice.headers
        )
        assert response.status_code == 404, spelling
        assert response.json()["detail"] == missing.json()["detail"]
    # Upper case is still the canonical form (RFC 9562 section 4: any case on input).
    upper = read_item(api, op.resource, item["id"].upper(), alice)
    assert upper.status_code == 200


@pytest.mark.parametrize("slash", ["%2F", "%2f"])
def test_an_encoded_slash_is_never_a_path_separator(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any], slash: str
) -> None:
    task = f"/api/tasks/{alice_task['id']}"
    # Routed, if at all, as PATCH /api/tasks/{id} with the id "<id>%2Fcomplete": no task.
    toggled = api.patch(f"{task}{slash}complete", json={"completed": True}, headers=alice.headers)
    assert toggled.status_code == 404
    assert api.get(task, headers=alice.headers).json()["completed"] is False
    assert api.get(f"/api{slash}tasks", headers=alice.headers).status_code == 404
    assert api.get(f"/api/tasks{slash}", headers=alice.headers).status_code == 404


def test_an_unknown_parameter_is_echoed_cut_short(api: httpx.Client, alice: ApiUser) -> None:
    name = "x" * 5000
    response = api.get(f"/api/tasks?{name}=1", headers=alice.headers)
    assert response.status_code == 400
    echoed = response.json()["errors"][0]["parameter"]
    assert len(echoed) <= 64
    assert echoed.endswith("…")
    assert len(response.content) < 1000


def test_an_unknown_body_member_is_echoed_cut_short(api: httpx.Client, alice: ApiUser) -> None:
    body = {"title": "a", "y" * 50_000: 1}
    response = api.post("/api/tasks", json=body, headers=alice.headers)
    assert response.status_code == 400
    assert all(len(error["pointer"]) <= 64 for error in response.json()["errors"])
    assert len(response.content) < 1000


def test_a_problem_lists_at_most_twenty_errors(api: httpx.Client, alice: ApiUser) -> None:
    query = "&".join(f"p{index}=1" for index in range(500))
    response = api.get(f"/api/tasks?{query}", headers=alice.headers)
    assert response.status_code == 400
    assert len(response.json()["errors"]) == 20
    body = {f"k{index}": 1 for index in range(500)}
    response = api.post("/api/tasks", json={"title": "a", **body}, headers=alice.headers)
    assert len(response.json()["errors"]) == 20


# --- A client that goes away is not a server error ---------------------------------------------


def test_a_client_that_leaves_halfway_through_its_body_is_not_a_server_error(
    service_database_url: str,
) -> None:
    env = {"DATABASE_URL": service_database_url, "JWT_SECRET": SECRET}
    with service_process("--no-migrate", env=env, log_level="info") as service:
        port = int(service.base_url.rsplit(":", 1)[1])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(
                    b"POST /api/tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer " + mint().encode() + b"\r\n"
                    b"Content-Length: 100\r\n\r\n" + b'{"title": "half'
                )
                time.sleep(0.2)
        time.sleep(0.5)
        log = service.output()

    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("path") == "/api/tasks"]
    assert [line["status"] for line in requests] == [499, 499, 499]
    assert "Traceback" not in log
    assert not [line for line in lines if line["level"] in ("error", "critical")]


# --- Property tests: never a 5xx ----------------------------------------------------------------

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["\ud800", "a\udfffb", str(uuid.uuid4()) + "\n", "", " "]),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_registered = st.sampled_from(["sub", "exp", "nbf", "iat", "iss", "aud", "jti"])
_claim_sets = st.dictionaries(
    st.one_of(_registered, st.text(max_size=10)), _json_values, max_size=8
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(claim_set=_claim_sets, base=st.booleans())
def test_no_signed_claim_set_is_a_server_error(
    api: httpx.Client, claim_set: dict[str, Any], base: bool
) -> None:
    # Half the examples start from a valid claim set, so the odd claim is the only fault.
    claims = ({"sub": str(uuid.uuid4()), "exp": LATER} if base else {}) | claim_set
    payload = json.dumps(claims)  # ensure_ascii: lone surrogates become \ud800 escapes
    response = api.get("/api/tasks", headers=bearer(sign_json(payload)))
    assert response.status_code in (200, 401), payload


_header_sets = st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "cty", "crit", "jku", "x5u", "jwk", "b64", "zip"]),
    st.one_of(_json_values, st.sampled_from(["HS256", "RS256", "EdDSA", "none", "JWT"])),
    max_size=5,
)


@FUZZ
@given(header=_header_sets)
def test_no_token_header_is_a_server_error(api: httpx.Client, header: dict[str, Any]) -> None:
    # A valid payload and a valid HS256 signature over whatever header is drawn.
    payload = json.dumps({"sub": str(uuid.uuid4()), "exp": LATER})
    token = sign_json(payload, header=json.dumps(header))
    response = api.get("/api/tasks", headers=bearer(token))
    assert response.status_code in (200, 401), header


_query_text = st.text(st.characters(codec="utf-8"), max_size=30)


@FUZZ
@given(
    pairs=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(["limit", "cursor", "completed"]), _query_text), _query_text
        ),
        max_size=6,
    )
)
def test_no_query_string_is_a_server_error(
    api: httpx.Client, alice: ApiUser, pairs: list[tuple[str, str]]
) -> None:
    query = urllib.parse.urlencode(pairs)
    response = api.get(f"/api/tasks?{query}", headers=alice.headers)
    assert response.status_code in (200, 400), query


_bodies = st.one_of(
    st.binary(max_size=200),
    _json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(
        st.sampled_from(["title", "completed", "id", "user_id"]), _json_values, max_size=3
    ).map(lambda value: json.dumps(value).encode()),
)


@FUZZ
@given(body=_bodies, method=st.sampled_from(["POST", "PUT", "PATCH"]))
def test_no_body_is_a_server_error(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any], body: bytes, method: str
) -> None:
    url = "/api/tasks" if method == "POST" else f"/api/tasks/{alice_task['id']}"
    headers = {**alice.headers, "Content-Type": "application/json"}
    response = api.request(method, url, content=body, headers=headers)
    assert response.status_code in (200, 201, 400), (body, response.text)


# --- Titles: something visible, one spelling ------------------------------------------------


@pytest.mark.parametrize(
    "title",
    [
        *("\u200b", " \u200b\u200c\u200d ", "\u2060\u2063", "\u3164", "\ufe0f", "\u00ad"),
        *("\u115f", "\u2800", "\u2800\u2800 \u3164"),
        # Beyond the Basic Multilingual Plane: shorthand format controls, musical formatting
        # controls, the variation selectors supplement and the rest of U+E0000-U+E0FFF.
        *("\U0001bca0", "\U0001bca3", "\U0001d173", "\U0001d17a \U0001d173"),
        *("\U000e0100", "\U000e01ef", "\U000e0fff", "\U000e0080"),
    ],
    ids=repr,
)
def test_a_title_with_nothing_visible_is_refused(
    api: httpx.Client, alice: ApiUser, title: str
) -> None:
    response = api.post("/api/tasks", json={"title": title}, headers=alice.headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["pointer"] == "#/title"


# Every Default_Ignorable_Code_Point of Unicode (DerivedCoreProperties.txt), as ranges.
DEFAULT_IGNORABLE = [
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
]  # fmt: skip


def test_no_default_ignorable_character_alone_or_in_company_is_a_title() -> None:
    for first, last in DEFAULT_IGNORABLE:
        for code in range(first, last + 1):
            # Refused as invisible, as a control, or (U+FEFF, which trim removes) as empty.
            with pytest.raises(ValueError, match=r"visible|control|1 to 500"):
                clean_title(chr(code) * 3)


@pytest.mark.parametrize(
    "title",
    ["hidden\U000e0041\U000e0042 text", "\U000e0001a", "a\U000e007f", "flag\U000e0067\U000e007f"],
    ids=repr,
)
def test_a_tag_character_anywhere_in_a_title_is_refused(
    api: httpx.Client, alice: ApiUser, title: str
) -> None:
    response = api.post("/api/tasks", json={"title": title}, headers=alice.headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["pointer"] == "#/title"
    assert api.get("/api/tasks", headers=alice.headers).json()["tasks"] == []


def test_visible_text_beside_invisible_characters_beyond_the_bmp_is_a_title(
    api: httpx.Client, alice: ApiUser
) -> None:
    # Emoji with a variation selector, and text beside musical formatting controls.
    for title in ("\u2764\ufe0f", "a\U0001d173", "\U0001f600\U000e0100"):
        response = api.post("/api/tasks", json={"title": title}, headers=alice.headers)
        assert response.status_code == 201, title


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("Cafe\u0301", "Caf\u00e9"),
        ("\u212b ngstr\u00f6m", "\u00c5 ngstr\u00f6m"),
        ("a\u200bb", "a\u200bb"),
    ],
    ids=["combining accent", "angstrom sign", "already NFC"],
)
def test_titles_are_stored_in_nfc(
    api: httpx.Client, alice: ApiUser, sent: str, stored: str
) -> None:
    created = api.post("/api/tasks", json={"title": sent}, headers=alice.headers).json()
    assert created["title"] == stored
    replaced = api.put(
        f"/api/tasks/{created['id']}",
        json={"title": sent, "completed": True},
        headers=alice.headers,
    )
    assert replaced.json()["title"] == stored
    assert api.get(f"/api/tasks/{created['id']}", headers=alice.headers).json()["title"] == stored
