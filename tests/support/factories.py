"""Test data: users with real tokens, and tasks created through the API itself."""

import random
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.tokens import bearer, mint

_WORDS = [
    "buy",
    "milk",
    "call",
    "the",
    "plumber",
    "review",
    "draft",
    "water",
    "plants",
    "book",
    "flights",
    "pay",
    "rent",
    "fix",
    "bike",
    "read",
    "chapter",
    "send",
    "invoice",
    "walk",
    "dog",
    "renew",
    "passport",
]


@dataclass(frozen=True)
class ApiUser:
    sub: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


class UserFactory:
    @staticmethod
    def create() -> ApiUser:
        """A user nobody else in the run shares, so tests never see each other's data."""
        sub = str(uuid.uuid4())
        return ApiUser(sub=sub, token=mint(sub))


class TaskFactory:
    @staticmethod
    def create(*, api: httpx.Client, owner: ApiUser, **fields: Any) -> dict[str, Any]:
        """A task created through POST /api/tasks, as the API returned it."""
        fields.setdefault("title", " ".join(random.choices(_WORDS, k=4)).capitalize())
        response = api.post("/api/tasks", json=fields, headers=owner.headers)
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task
