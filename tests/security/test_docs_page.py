"""Rule: `/docs`, on the API's own origin, runs only what the service itself serves.

Swagger UI comes from a pinned Python package installed with the service, not from a CDN:
the page works offline, every file it references is served by the service, no other origin
appears in it, and a strict Content-Security-Policy (no third-party origin, no inline
script, no framing) and `Referrer-Policy: no-referrer` protect it. A real browser (Debian's
`chromium`, headless) renders the contract's operations from it.
"""

import re
import shutil
import subprocess
from html.parser import HTMLParser

import httpx
import pytest


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name):
                self.urls.append(str(found[name]))
        self._in_script_without_src = tag == "script" and not found.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script_without_src and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script_without_src = False


def _directives(policy: str) -> dict[str, list[str]]:
    parts = (directive.split() for directive in policy.split(";") if directive.strip())
    return {name: values for name, *values in parts}


def test_every_file_the_page_references_is_served_by_the_service(api: httpx.Client) -> None:
    page = api.get("/docs")
    references = _References()
    references.feed(page.text)

    assert page.status_code == 200
    assert len(references.urls) >= 3  # stylesheet, icon, Swagger UI, its start-up script
    assert references.inline_scripts == 0
    for url in references.urls:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        asset = api.get(url)
        assert asset.status_code == 200, url
        assert asset.content
    assert not re.search(r"(https?:)?//[a-z0-9.-]+", page.text, re.IGNORECASE)


def test_the_start_up_script_loads_the_served_contract(api: httpx.Client) -> None:
    page = api.get("/docs").text
    start = next(url for url in re.findall(r'src="([^"]+)"', page) if url.endswith("start.js"))
    script = api.get(start).text
    assert '"/openapi.json"' in script
    assert "validatorUrl: null" in script  # the badge would send the contract elsewhere
    assert not re.search(r"https?://", script)


def test_the_page_has_a_strict_content_security_policy(api: httpx.Client) -> None:
    headers = api.get("/docs").headers
    policy = _directives(headers["content-security-policy"])

    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    for values in policy.values():
        for value in values:
            assert value in ("'self'", "'none'", "data:"), value
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"


def test_the_swagger_ui_files_come_from_the_pinned_package(api: httpx.Client) -> None:
    page = api.get("/docs").text
    bundle = next(url for url in re.findall(r'src="([^"]+)"', page) if "bundle" in url)
    assert "/5.31.0/" in bundle
    served = api.get(bundle)
    assert served.headers["content-type"].startswith("text/javascript")
    assert len(served.content) > 1_000_000


def test_a_headless_browser_renders_the_contract_from_the_page(base_url: str) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs a headless browser: install the Debian package `chromium`")
    rendered = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{base_url}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # The operation summaries appear only once Swagger UI ran and loaded /openapi.json.
    assert "Create a task" in rendered.stdout, rendered.stderr[-2000:]
    assert "List the user" in rendered.stdout or "listTasks" in rendered.stdout
    assert "Content Security Policy" not in rendered.stderr
