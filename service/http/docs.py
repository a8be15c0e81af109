"""`/docs`: Swagger UI for the contract, served entirely by the service itself.

The page is on the API's own origin, so it must not run anything the service does not ship.
Swagger UI's files come from a pinned Python package (`swagger-ui-bundle-v2`), installed with
the service, so the page works offline and cannot change under a floating CDN tag. It loads
nothing from another origin, runs no inline script (its start-up code is a file too), and its
Content-Security-Policy says so to the browser, along with `frame-ancestors 'none'` (no
framing, so no clickjacking) and `Referrer-Policy: no-referrer`.
"""

from functools import cache
from importlib.resources.abc import Traversable

import swagger_ui_bundle
from fastapi import APIRouter
from starlette.responses import HTMLResponse, Response

SWAGGER_UI_VERSION = "5.31.0"
ASSETS = f"/docs/assets/{SWAGGER_UI_VERSION}"
_FILES: Traversable = swagger_ui_bundle.swagger_ui_path
_SERVED = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# Swagger UI draws its icons from data: URIs in its stylesheet, and sets element styles from
# script (allowed without 'unsafe-inline'); everything else comes from this origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cross-Origin-Opener-Policy": "same-origin",
}
_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>secure-tasks-api</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{ASSETS}/start.js"></script>
</body>
</html>
"""
# A file, not an inline <script>, so that the policy can forbid inline script.
_START = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // The contract is the source of truth; the validator badge would send it to a third party.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""
# The path carries the version, so a browser may keep a file for as long as it likes.
_ASSET_CACHE = {"Cache-Control": "public, max-age=604800, immutable"}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs_page() -> Response:
    return HTMLResponse(_PAGE, headers=PAGE_HEADERS)


@router.get(f"{ASSETS}/start.js")
async def docs_start() -> Response:
    return Response(_START, media_type="text/javascript; charset=utf-8", headers=_ASSET_CACHE)


@cache
def _content(name: str) -> bytes:
    # Read on first use, not at start-up: most workers never serve the docs (1.7 MB).
    return (_FILES / name).read_bytes()


def _asset_route(name: str, media_type: str) -> None:
    async def asset() -> Response:
        return Response(_content(name), media_type=media_type, headers=_ASSET_CACHE)

    router.add_api_route(f"{ASSETS}/{name}", asset, methods=["GET"])


for _name, _media_type in _SERVED.items():
    _asset_route(_name, _media_type)
