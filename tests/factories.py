"""Test data: users with real tokens, and tasks created through the API itself."""

import uuid
from dataclasses import dataclass
from typing import Any

import factory
import httpx

from tests.tokens import bearer, mint


@dataclass(frozen=True)
class ApiUser:
    sub: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


class UserFactory(factory.Factory[ApiUser]):
    """A user nobody else in the run shares, so tests never see each other's data."""

    class Meta:
        model = ApiUser

    sub = factory.LazyFunction(lambda: str(uuid.uuid4()))
    token = factory.LazyAttribute(lambda user: mint(user.sub))


class TaskFactory(factory.Factory[dict[str, Any]]):
    """`TaskFactory.create(api=client, owner=user)` creates a task through POST /api/tasks."""

    class Meta:
        model = dict

    title = factory.Faker("sentence", nb_words=4)

    @classmethod
    def _create(
        cls, model_class: type, *, api: httpx.Client, owner: ApiUser, **fields: Any
    ) -> dict[str, Any]:
        response = api.post("/api/tasks", json=fields, headers=owner.headers)
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task
