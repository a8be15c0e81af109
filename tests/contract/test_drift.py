"""Drift detection: the contract and the implementation are compared in both directions, so
a contract change the app does not follow, or an app change the contract does not declare,
fails here."""

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator, validate
from pydantic import BaseModel

from service.main import create_app
from service.tasks.listing import CURSOR_MAX_CHARS, LIMIT_DEFAULT, LIMIT_MAX, LIST_PARAMETERS
from service.tasks.schemas import TaskCreate, TaskReplace, TaskUpdate
from tests.support.apps import make_settings
from tests.support.factories import UserFactory
from tests.support.live import serving
from tests.support.operations import CONTRACT, Operation, contract_operations, resolve
from tests.support.resources import create_item

COMPONENTS = CONTRACT["components"]


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    # The schema is checked inside the whole document, so its $refs resolve.
    validate(
        instance,
        {**schema, "components": COMPONENTS},
        cls=OAS31Validator,
        format_checker=OAS31Validator.FORMAT_CHECKER,
    )


@pytest.mark.parametrize("name", sorted(COMPONENTS["schemas"]))
def test_every_schema_has_examples_that_validate(name: str) -> None:
    schema = COMPONENTS["schemas"][name]
    assert schema.get("examples"), f"{name} has no examples"
    for example in schema["examples"]:
        _validate(example, {"$ref": f"#/components/schemas/{name}"})


@pytest.mark.parametrize(
    ("schema_name", "model"),
    [("TaskCreate", TaskCreate), ("TaskReplace", TaskReplace), ("TaskUpdate", TaskUpdate)],
)
def test_request_bodies_are_the_ones_the_app_validates(
    schema_name: str, model: type[BaseModel]
) -> None:
    declared = COMPONENTS["schemas"][schema_name]
    generated = model.model_json_schema()
    assert set(declared["properties"]) == set(generated["properties"])
    assert set(declared.get("required", [])) == set(generated.get("required", []))
    assert declared["additionalProperties"] is False
    assert generated["additionalProperties"] is False
    if "completed" in declared["properties"]:
        assert declared["properties"]["completed"] == {"type": "boolean"}
        completed = generated["properties"]["completed"]
        types = {option["type"] for option in completed.get("anyOf", [completed])}
        assert types - {"null"} == {"boolean"}  # null: "may be left out" in the model


def test_list_parameters_are_the_ones_the_app_parses() -> None:
    declared = {
        resolve(p)["name"]: resolve(p)["schema"]
        for p in CONTRACT["paths"]["/api/tasks"]["get"]["parameters"]
        if resolve(p)["in"] == "query"
    }
    assert set(declared) == LIST_PARAMETERS
    limit = declared["limit"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, LIMIT_MAX, LIMIT_DEFAULT)
    assert declared["cursor"]["maxLength"] == CURSOR_MAX_CHARS
    assert declared["completed"] == {"type": "boolean"}


def conform(op: Operation, response: httpx.Response) -> None:
    """The response is declared for this operation, with its media type, schema and headers."""
    responses = CONTRACT["paths"][op.path][op.method.lower()]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{op} answered an undeclared {status}: {response.text}"
    declared = resolve(responses[status])
    if "content" not in declared:  # 304: no body at all
        assert response.content == b"", f"{op} {status} answered a body"
    else:
        media_type = response.headers["content-type"].split(";")[0]
        assert media_type in declared["content"], f"{op} {status} answered {media_type}"
        _validate(response.json(), declared["content"][media_type]["schema"])
    for name, reference in declared.get("headers", {}).items():
        header = resolve(reference)
        if header.get("required"):
            assert name.lower() in response.headers, f"{op} {status} lacks {name}"
        pattern = resolve(header.get("schema", {})).get("pattern")
        if pattern is not None and name.lower() in response.headers:
            value = response.headers[name]
            assert re.search(pattern, value), f"{op} {status}: {name}: {value!r} vs {pattern}"


@pytest.fixture(scope="module")
def unreachable_database_api() -> Iterator[httpx.Client]:
    settings = make_settings("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.fixture(scope="module")
def strict_api(service_database_url: str) -> Iterator[httpx.Client]:
    """A service that requires If-Match on every change."""
    settings = make_settings(service_database_url, require_if_match=True)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.fixture(scope="module")
def one_task_each_api(service_database_url: str) -> Iterator[httpx.Client]:
    """A service that allows each user one task, so a second create meets the limit."""
    settings = make_settings(service_database_url, tasks_per_user_max=1)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.fixture(scope="module")
def one_request_each_api(service_database_url: str) -> Iterator[httpx.Client]:
    """A service that allows each user, and each address without a token, one request a day."""
    settings = make_settings(
        service_database_url,
        rate_limit_user_requests=1,
        rate_limit_user_window_seconds=86_400,
    )
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


def _provoke(
    op: Operation,
    api: httpx.Client,
    down: httpx.Client,
    limited: httpx.Client,
    strict: httpx.Client,
    counted: httpx.Client,
) -> list[httpx.Response]:
    """Requests meant to draw every status an operation can answer (500 aside)."""
    user = UserFactory.create()
    item_id = create_item(api, op.resource, user)["id"] if op.takes_id else ""
    url = op.url(item_id)
    body = op.example_body
    headers = user.headers
    responses = [api.request(op.method, url, json=body, headers=headers)]
    if "If-None-Match" in op.header_parameters:
        etag = responses[0].headers["etag"]
        responses.append(api.request(op.method, url, headers={**headers, "If-None-Match": etag}))
    if "If-Match" in op.header_parameters:  # on an item of its own: the first may be gone
        stale = {**headers, "If-Match": '"0"'}
        fresh = op.url(create_item(api, op.resource, user)["id"])
        responses.append(api.request(op.method, fresh, json=body, headers=stale))
        responses.append(strict.request(op.method, url, json=body, headers=headers))
    if "Idempotency-Key" in op.header_parameters:
        keyed = {**headers, "Idempotency-Key": f"drift-{uuid.uuid4()}"}
        other = create_item(api, op.resource, user)["id"] if op.takes_id else ""
        other_body = None if body is None else {k: f"{v} again" for k, v in body.items()}
        responses.append(api.request(op.method, url, json=body, headers=keyed))
        # The same key with another request: another item, or another body.
        responses.append(api.request(op.method, op.url(other), json=other_body, headers=keyed))
    if op.secured:
        responses += [
            api.request(op.method, url, json=body),
            api.request(op.method, f"{url}?unknown=1", json=body, headers=headers),
            down.request(op.method, url, json=body, headers=headers),
        ]
    else:
        responses.append(down.request(op.method, url))
    if op.takes_id:
        responses.append(api.request(op.method, op.url(), json=body, headers=headers))
    if op.operation_id == "createTask":
        responses += [limited.post(url, json=body, headers=headers) for _ in range(2)]
    if op.secured:  # the user's one request, then one too many
        responses += [counted.request(op.method, url, json=body, headers=headers) for _ in range(2)]
    if op.secured:  # any operation under /api reads a body, to refuse one over 64 KiB
        big = b"[" + b" " * 70_000 + b"]"
        typed = {**headers, "Content-Type": "application/json"}
        responses.append(api.request(op.method, url, content=big, headers=typed))
    if body is not None:
        responses += [
            api.request(op.method, url, json={"unexpected": True}, headers=headers),
            api.request(
                op.method,
                url,
                content=b"title=x",
                headers={**headers, "Content-Type": "text/plain"},
            ),
        ]
    return responses


@pytest.mark.parametrize("op", contract_operations(), ids=str)
def test_every_status_declared_is_produced_and_every_status_produced_is_declared(
    api: httpx.Client,
    unreachable_database_api: httpx.Client,
    one_task_each_api: httpx.Client,
    strict_api: httpx.Client,
    one_request_each_api: httpx.Client,
    op: Operation,
) -> None:
    responses = _provoke(
        op, api, unreachable_database_api, one_task_each_api, strict_api, one_request_each_api
    )

    for response in responses:
        conform(op, response)
    produced = {str(response.status_code) for response in responses}
    declared = set(CONTRACT["paths"][op.path][op.method.lower()]["responses"]) - {"500"}
    assert produced == declared
