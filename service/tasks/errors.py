"""The tasks resource's own problems."""

from http import HTTPStatus

from service.http.problems import NotFound, Problem


class TaskNotFound(NotFound):
    """Missing, another user's, or not a task id at all: one answer for all three."""

    detail = "Task not found."


class TaskLimitReached(Problem):
    status = HTTPStatus.CONFLICT
    type = "tag:secure-tasks-api,2026:task-limit-reached"
    title = "Task limit reached"
