"""Isolation, proved by a model: several users issue random sequences of every operation,
including on each other's task ids, and after every step each user's view through the API
equals a plain in-memory model of that user's own tasks. Any leak, or any write that lands
on another user's task, makes the views and the model disagree (tests/isolation_model.py).
"""

import httpx

from tests.support.isolation_model import run_isolation_model


def test_users_only_ever_see_and_change_their_own_tasks(api: httpx.Client) -> None:
    run_isolation_model(api)
