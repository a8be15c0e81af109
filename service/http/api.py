"""The `/api` parent router, and the one guard that admits every request under it.

A resource's router (prefix `API_PREFIX` + its collection) is included into `api_router()` and
carries no guard of its own, so no route under `/api` can be left open by forgetting one
(tests/security walk every route the app registers). The guard checks, in this order:

1. the body is within its bound (413), read before anything else looks at the request;
2. the bearer token verifies (401), before any other check can tell anything apart;
3. the rate limit (429, service.http.rate_limits): a verified user's request counts against
   the user, any other (every 401, and a 413 without a valid token) against the client's
   address; a request over the limit is refused whatever else is wrong with it;
4. the query names only parameters the contract declares for the operation, and an operation
   that takes no body got none (400).

Everything else (the body's and the query's contents, the resource lookup) comes after, in the
handler. A handler receives all of it as one `Caller`: the verified user, the database as that
user, and the app's state.
"""

from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from service.auth.jwks import KeysUnavailable
from service.auth.tokens import InvalidToken, NoToken, Principal, bearer_token
from service.data.access import RequestDatabase
from service.http.client_address import client_address
from service.http.context import RequestContext, context_of
from service.http.input import parse_json, read_body, refuse_a_body, refuse_unknown_parameters
from service.http.problems import (
    BodyTooLarge,
    NotAuthenticated,
    ServiceUnavailable,
    TooManyRequests,
)
from service.http.rate_limits import Verdict
from service.http.state import State

API_PREFIX = "/api"
M = TypeVar("M", bound=BaseModel)
_NO_PARAMETERS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling and what the request may use: the database acts as `user` only."""

    user: Principal
    db: RequestDatabase
    app: State
    context: RequestContext


async def admit(request: Request) -> Caller:
    """The guard of every `/api` route (see the module's docstring for the order)."""
    context = context_of(request)
    try:
        context.body = await read_body(request)
    except BodyTooLarge:
        # Counted too, or an oversized body would be a way around the address policy.
        with suppress(NotAuthenticated, ServiceUnavailable):
            await _authenticate_and_count(context, request)
        raise
    user = await _authenticate_and_count(context, request)
    context.user_id = user.user_id
    operation_id = getattr(request.scope.get("route"), "operation_id", None) or ""
    declared = context.app.query_parameters.get(operation_id, _NO_PARAMETERS)
    refuse_unknown_parameters(request.query_params, declared)
    if operation_id not in context.app.takes_body:
        refuse_a_body(context.body)
    database = context.app.database.for_request(context.arrived_at, user.user_id)
    return Caller(user=user, db=database, app=context.app, context=context)


async def _authenticate_and_count(context: RequestContext, request: Request) -> Principal:
    """The verified user, counted against the user policy; a request without a valid token is
    counted against its address's, then refused. Over either limit: 429."""
    app = context.app
    try:
        user = await _authenticate(app, request)
    except NotAuthenticated:
        address = client_address(request.scope, app.settings.trusted_proxies)
        _enforce(context, await app.rate_limits.count_address(address))
        raise
    _enforce(context, await app.rate_limits.count_user(str(user.user_id)))
    return user


def _enforce(context: RequestContext, verdict: Verdict | None) -> None:
    if verdict is None:  # the policy is off, or its storage cannot say (let through)
        return
    # The answer carries the policy's fields, whatever it turns out to be (the envelope).
    context.rate_limit_headers = verdict.headers
    if not verdict.allowed:
        raise TooManyRequests


async def _authenticate(app: State, request: Request) -> Principal:
    try:
        return await app.verifier.verify(bearer_token(request.headers.getlist("authorization")))
    except NoToken as missing:
        raise NotAuthenticated(str(missing), token_presented=False) from None
    except InvalidToken as invalid:
        raise NotAuthenticated(invalid.detail, token_presented=True) from None
    except KeysUnavailable:
        raise ServiceUnavailable("The token issuer's keys are unavailable.") from None


# FastAPI runs a dependency once per request: the router's guard and a handler's CallerDep
# are one call.
CallerDep = Annotated[Caller, Depends(admit)]


def json_body(model: type[M]) -> Callable[[Request, Caller], Awaitable[M]]:
    """A dependency: the body the guard read, as `model` (after the guard, by construction)."""

    async def parse(request: Request, caller: CallerDep) -> M:
        headers = request.headers
        return parse_json(
            caller.context.body,
            headers.get("content-type", ""),
            headers.get("content-encoding", ""),
            model,
        )

    return parse


def api_router() -> APIRouter:
    """A fresh `/api` parent router, carrying the guard; resource routers are included into it.

    The prefix is each resource router's own (`API_PREFIX` + its collection), not this
    router's: FastAPI includes routers lazily, and a route knows only its own router's prefix,
    which is the path template the access log and the metrics name."""
    return APIRouter(dependencies=[Depends(admit)])
