"""One item of each resource the contract names, created through the API for a given user.

Contract-driven tests send each operation's `{id}` an id of the operation's own resource, made
here; a resource the contract names but this module cannot make fails them, so a second
resource cannot pass by answering 404 to ids of another kind.
"""

from collections.abc import Callable
from typing import Any

import httpx

from tests.support.factories import ApiUser, TaskFactory


def _task(api: httpx.Client, owner: ApiUser) -> dict[str, Any]:
    return TaskFactory.create(api=api, owner=owner)


MAKERS: dict[str, Callable[[httpx.Client, ApiUser], dict[str, Any]]] = {"tasks": _task}


def create_item(api: httpx.Client, resource: str, owner: ApiUser) -> dict[str, Any]:
    """A new item of `resource`, owned by `owner`, as the API returned it (with its `id`)."""
    maker = MAKERS.get(resource)
    assert maker is not None, (
        f"the contract has operations on {resource!r}, and tests/support/resources.py "
        "cannot make one: add a maker to MAKERS"
    )
    return maker(api, owner)


def read_item(api: httpx.Client, resource: str, item_id: str, user: ApiUser) -> httpx.Response:
    """GET /api/<resource>/{id}, as `user`."""
    return api.get(f"/api/{resource}/{item_id}", headers=user.headers)
