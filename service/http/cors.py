"""CORS: Starlette's middleware, with a refused preflight answered as a problem document.

Starlette offers no hook for the shape of a refused preflight; `preflight_response` is a method
of its middleware that the documentation does not describe. This module is the one place that
overrides it: Starlette is pinned to the minor version this was written against
(pyproject.toml), and tests/integration/test_library_seams.py fails, naming the method, when
it changes.
"""

from http import HTTPStatus

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from service.http.problems import problem_response


class ProblemCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < HTTPStatus.BAD_REQUEST:
            return response
        # The envelope still adds the request id header.
        detail = "This origin, method or header is not allowed cross-origin."
        return problem_response(response.status_code, detail)
