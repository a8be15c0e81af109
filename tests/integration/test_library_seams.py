"""Rule: where the service overrides a library that offers no public hook, the names it relies
on are checked here, so an upgrade that moves one fails loudly, naming it, instead of quietly
switching off a bound.

Two modules do this, and only they (ruff's SLF001 and TID251 say so for the rest):
service/http/server.py (uvicorn's httptools protocol: the receipt deadline, the header limit,
the connection bound) and service/http/cors.py (Starlette's CORS preflight answer). Each
library is pinned to the minor version these were written against (pyproject.toml).
"""

import asyncio
import hashlib
import inspect
import logging

import pytest
import starlette
import uvicorn
from starlette.middleware.cors import CORSMiddleware
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from service.http.cors import ProblemCORSMiddleware
from service.http.server import BoundedHttpProtocol

# What service/http/server.py overrides or calls on uvicorn's protocol.
PROTOCOL_METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_message_complete",
    "on_response_complete",
    "send_400_response",
    "_unset_keepalive_if_required",
    "_unsupported_upgrade_warning",
)
# What it reads on a protocol instance, once constructed.
PROTOCOL_ATTRIBUTES = ("parser", "server_state", "connections", "loop", "cycle", "pipeline")
# What it reads and sets on the request/response cycle, to answer a body that broke.
CYCLE_ATTRIBUTES = ("scope", "response_started", "disconnected", "message_event")
# The constructor uvicorn calls, whose parameters the override passes on.
PROTOCOL_PARAMETERS = ["self", "config", "server_state", "app_state", "_loop"]
# service/http/server.py replaces data_received with a copy that counts what arrives: when
# uvicorn changes its own, the copy must be compared with it again.
DATA_RECEIVED_SHA256 = "010a7ae59a5d3b1a5e7326ce246878568629d126a076d8af5ba10cab040fae43"
PREFLIGHT_SHA256 = "286290a83dec72a02db859f14a1e94dc072b4af1af815e3a60430fce408088be"


def _source_sha256(function: object) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()  # type: ignore[arg-type]


def _moved(what: str) -> str:
    return (
        f"uvicorn {uvicorn.__version__}: {what}. service/http/server.py relies on it; review "
        "that module against this uvicorn before raising the pin in pyproject.toml"
    )


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_uvicorn_still_has_each_protocol_method_the_server_module_uses(name: str) -> None:
    assert callable(getattr(HttpToolsProtocol, name, None)), _moved(
        f"HttpToolsProtocol.{name} is gone"
    )
    assert name in BoundedHttpProtocol.__dict__ or name in HttpToolsProtocol.__dict__


def test_uvicorn_still_builds_its_protocol_with_the_same_parameters() -> None:
    parameters = list(inspect.signature(HttpToolsProtocol.__init__).parameters)
    assert parameters == PROTOCOL_PARAMETERS, _moved(f"the constructor takes {parameters}")


def test_uvicorn_protocol_instances_still_have_the_attributes_the_server_module_reads() -> None:
    loop = asyncio.new_event_loop()
    try:
        config = Config(app=lambda *_: None)
        config.load()
        protocol = HttpToolsProtocol(config, ServerState(), {}, loop)
        missing = [name for name in PROTOCOL_ATTRIBUTES if not hasattr(protocol, name)]
    finally:
        loop.close()
    assert missing == [], _moved(f"a protocol has no {', '.join(missing)}")
    assert hasattr(ServerState(), "default_headers"), _moved("ServerState.default_headers is gone")


def test_uvicorn_cycles_still_have_what_the_server_module_reads_and_sets() -> None:
    loop = asyncio.new_event_loop()
    try:
        cycle = RequestResponseCycle(
            scope={},  # type: ignore[typeddict-item]
            transport=None,  # type: ignore[arg-type]
            flow=None,  # type: ignore[arg-type]
            logger=logging.getLogger("uvicorn.error"),
            access_logger=logging.getLogger("uvicorn.access"),
            access_log=False,
            default_headers=[],
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=True,
            on_response=lambda: None,
        )
        missing = [name for name in CYCLE_ATTRIBUTES if not hasattr(cycle, name)]
    finally:
        loop.close()
    assert missing == [], _moved(f"a RequestResponseCycle has no {', '.join(missing)}")


def test_uvicorn_data_received_is_the_one_the_copy_was_taken_from() -> None:
    assert _source_sha256(HttpToolsProtocol.data_received) == DATA_RECEIVED_SHA256, _moved(
        "HttpToolsProtocol.data_received changed; compare it with BoundedHttpProtocol's copy, "
        "then record its new sha256 here"
    )


def test_starlette_still_answers_preflights_through_the_overridden_method() -> None:
    assert "preflight_response" in ProblemCORSMiddleware.__dict__
    signature = list(inspect.signature(CORSMiddleware.preflight_response).parameters)
    message = (
        f"starlette {starlette.__version__}: CORSMiddleware.preflight_response changed; "
        "service/http/cors.py overrides it: review it, then record the new sha256 here"
    )
    assert signature == ["self", "request_headers"], message
    assert _source_sha256(CORSMiddleware.preflight_response) == PREFLIGHT_SHA256, message
