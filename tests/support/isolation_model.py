"""The isolation model: a state machine in which several users issue random sequences of
every operation, including on each other's task ids, and after every step each user's view
through the API must equal a plain in-memory model of that user's own tasks. Any leak, or any
write that lands on another user's task, makes the views and the model disagree.
"""

import uuid
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from tests.support.factories import ApiUser, UserFactory

USERS = 3
# Short titles from a small alphabet: collisions between users are likely, which is the point.
titles = st.text(alphabet="ab ", min_size=1, max_size=6).filter(lambda t: t.strip())


class Isolation(RuleBasedStateMachine):
    """`api` is set by the test below before the machine runs."""

    api: httpx.Client
    task_ids = Bundle("task_ids")

    def __init__(self) -> None:
        super().__init__()
        self.users: list[ApiUser] = [UserFactory.create() for _ in range(USERS)]
        # The model: for each user, their tasks by id, exactly as the API last returned them.
        self.model: list[dict[str, dict[str, Any]]] = [{} for _ in range(USERS)]

    def _owner(self, task_id: str) -> int | None:
        return next((i for i, tasks in enumerate(self.model) if task_id in tasks), None)

    def _call(self, user: int, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.api.request(method, url, headers=self.users[user].headers, **kwargs)

    def _expect_changed_or_missing(
        self, user: int, task_id: str, response: httpx.Response, expected: dict[str, Any]
    ) -> None:
        if task_id in self.model[user]:
            assert response.status_code == 200, response.text
            task = response.json()
            before = self.model[user][task_id]
            assert {**before, **expected, "updated_at": task["updated_at"]} == task
            assert task["updated_at"] > before["updated_at"]
            self.model[user][task_id] = task
        else:
            assert response.status_code == 404

    @rule(target=task_ids, user=st.integers(0, USERS - 1), title=titles)
    def create(self, user: int, title: str) -> str:
        response = self._call(user, "POST", "/api/tasks", json={"title": title})
        assert response.status_code == 201
        task = response.json()
        assert task["title"] == title.strip()
        assert task["user_id"] == self.users[user].sub
        self.model[user][task["id"]] = task
        return str(task["id"])

    @rule(target=task_ids)
    def a_random_id(self) -> str:
        return str(uuid.uuid4())

    @rule(user=st.integers(0, USERS - 1), task_id=task_ids)
    def read(self, user: int, task_id: str) -> None:
        response = self._call(user, "GET", f"/api/tasks/{task_id}")
        if task_id in self.model[user]:
            assert response.json() == self.model[user][task_id]
        else:
            assert response.status_code == 404

    @rule(user=st.integers(0, USERS - 1), task_id=task_ids, title=titles, done=st.booleans())
    def replace(self, user: int, task_id: str, title: str, done: bool) -> None:
        body = {"title": title, "completed": done}
        response = self._call(user, "PUT", f"/api/tasks/{task_id}", json=body)
        self._expect_changed_or_missing(
            user, task_id, response, {"title": title.strip(), "completed": done}
        )

    @rule(
        user=st.integers(0, USERS - 1),
        task_id=task_ids,
        change=st.fixed_dictionaries({}, optional={"title": titles, "completed": st.booleans()}),
    )
    def patch(self, user: int, task_id: str, change: dict[str, Any]) -> None:
        response = self._call(user, "PATCH", f"/api/tasks/{task_id}", json=change)
        if not change:
            assert response.status_code == 400
            return
        expected = {**change, **({"title": change["title"].strip()} if "title" in change else {})}
        self._expect_changed_or_missing(user, task_id, response, expected)

    @rule(user=st.integers(0, USERS - 1), task_id=task_ids)
    def toggle(self, user: int, task_id: str) -> None:
        response = self._call(user, "PATCH", f"/api/tasks/{task_id}/complete")
        if task_id in self.model[user]:
            flipped = not self.model[user][task_id]["completed"]
            assert response.json() == {"success": True, "completed": flipped}
            self.model[user][task_id] = self._call(user, "GET", f"/api/tasks/{task_id}").json()
        else:
            assert response.status_code == 404

    @rule(user=st.integers(0, USERS - 1), task_id=task_ids)
    def delete(self, user: int, task_id: str) -> None:
        response = self._call(user, "DELETE", f"/api/tasks/{task_id}")
        if task_id in self.model[user]:
            assert response.json() == {"success": True}
            del self.model[user][task_id]
        else:
            assert response.status_code == 404

    @rule(
        user=st.integers(0, USERS - 1),
        limit=st.integers(1, 4),
        done=st.sampled_from([None, True, False]),
    )
    def list_pages(self, user: int, limit: int, done: bool | None) -> None:
        params: dict[str, Any] = {"limit": limit}
        if done is not None:
            params["completed"] = str(done).lower()
        seen: list[dict[str, Any]] = []
        while True:
            page = self._call(user, "GET", "/api/tasks", params=params).json()
            seen.extend(page["tasks"])
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        expected = [t for t in self.model[user].values() if done is None or t["completed"] == done]
        assert seen == sorted(expected, key=lambda t: (t["created_at"], t["id"]))

    @invariant()
    def every_view_equals_its_model(self) -> None:
        for user in range(USERS):
            listed = self._call(user, "GET", "/api/tasks", params={"limit": 200}).json()["tasks"]
            assert {task["id"]: task for task in listed} == self.model[user]


def run_isolation_model(api: httpx.Client, *, examples: int = 25, steps: int = 25) -> None:
    """Run the machine against the service behind `api`; raises on the first disagreement."""
    Isolation.api = api
    Isolation.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    Isolation.TestCase().runTest()
